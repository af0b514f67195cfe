"""The data path on real files: probe, cut into pieces, score each chunk (the real scorer, a tiny
model), join by stream copy, check. Every test asserts the result's full list of frame times
against the source's, exactly, not only the count."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import ffmpeg
import numpy as np
import pytest

from scoring.chunk import SEGMENT_NAME, Encoding
from scoring.cli import main as scoring_main
from tests.support import cut_chunks, make_video
from vidstyle.media import audio, joining
from vidstyle.media import probe as media
from vidstyle.media.cutting import Cutter, Geometry
from vidstyle.pipeline.plan import Plan


def run_pipeline(src: Path, tmp: Path, model: Path | str, chunk_frames: int = 20, output_height: int = 0):
    """What the DAG's steps do, without Airflow or storage (the same media functions, the same Plan):
    returns (source info, chunks, result path, check report)."""
    info, index = media.probe(src, max_gop=2 * chunk_frames)
    geometry = Geometry.of(info, output_height)
    folders = tmp / "chunks"

    def emit(i: int, name: str, path: Path) -> None:
        (folders / f"{i}" / "in").mkdir(parents=True, exist_ok=True)
        shutil.move(path, folders / f"{i}" / "in" / name)

    chunks = Cutter(src, info, index, src.name, chunk_frames, geometry,
                    Encoding(frame_rate=info.frame_rate, sar=geometry.sar), tmp / "cut", emit).run()
    for c in chunks:
        args = ["stylize", "--model", str(model), "--input", str(folders / f"{c.index}" / "in"),
                "--output", str(folders / f"{c.index}" / "out"), "--log-every", "60"]
        assert scoring_main(args) == 0, c.label
    plan = Plan.of(info, geometry, chunks)  # the pipeline's own: the origin and the video's offset, as split makes them
    track = None
    if info.audio:
        track = tmp / "audio.m4a"
        audio.extract_audio(src, track, plan.origin)
    segments = joining.segments(chunks, info.pts, info.durations[-1], info.tb, plan.video_offset)
    out = tmp / "result.mp4"
    joining.join(segments, lambda i: folders / f"{i}" / "out" / SEGMENT_NAME, track, out)
    report = joining.check_result([p * info.tb for p in info.pts], (info.pts[-1] + info.durations[-1]) * info.tb,
                                  geometry.size, (Fraction(info.audio.start), Fraction(info.audio.end))
                                  if info.audio else None, out)
    return info, chunks, out, report


def relative_times(path: Path) -> list[Fraction]:
    times, _ = media.video_times(path)
    return [t - times[0] for t in times]


def decoded_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def encode(args: list[str], out: Path) -> Path:
    """ffmpeg as a test-fixture maker (argument list, no shell)."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args, str(out)], check=True, timeout=120)
    return out


def test_ntsc_rate_with_b_frames_comes_back_with_every_timestamp(tmp_path, tiny_model):
    src = encode(["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=30000/1001", "-t", "3", "-c:v", "libx264",
                  "-bf", "3", "-g", "24", "-pix_fmt", "yuv420p"], tmp_path / "ntsc.mp4")
    info, chunks, out, report = run_pipeline(src, tmp_path, tiny_model, chunk_frames=20)
    assert info.mode == "copy" and info.frame_rate == "30000/1001" and info.constant_rate and info.frames == 90
    assert [c.start for c in chunks[1:]] == [24, 48, 72]  # on the keyframes nearest every 20 frames
    assert relative_times(out) == [Fraction(1001 * i, 30000) for i in range(90)]
    assert report["frame_rate"] == "30000/1001" and len(decoded_frames(out)) == 90


def test_variable_frame_rate_timestamps_survive_exactly(tmp_path, tiny_model):
    src = make_video(tmp_path / "vfr.mkv", seconds=2, vfr=True)
    info, _, out, _ = run_pipeline(src, tmp_path, tiny_model, chunk_frames=16)
    deltas = {b - a for a, b in itertools.pairwise(info.pts)}
    assert not info.constant_rate and len(deltas) >= 2  # really variable
    assert relative_times(out) == [(p - info.pts[0]) * info.tb for p in info.pts]


def test_open_gop_frames_shown_before_a_keyframe_come_out_of_the_chunk_before(tmp_path, tiny_model):
    src = encode(["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25", "-t", "4", "-c:v", "libx264", "-bf", "3",
                  "-g", "25", "-x264-params", "open-gop=1:keyint-min=25:scenecut=0", "-pix_fmt", "yuv420p"],
                 tmp_path / "open.mkv")
    info, index = media.probe(src, 40)
    # an open GOP: a keyframe followed in decode order by frames shown before it
    key = index.key_positions[1]
    assert index.shown[key + 1] < index.shown[key]
    _, chunks, out, _ = run_pipeline(src, tmp_path, tiny_model, chunk_frames=20)
    assert len(chunks) > 2 and relative_times(out) == [(p - info.pts[0]) * info.tb for p in info.pts]
    assert len(decoded_frames(out)) == info.frames


def test_a_chunk_cut_inside_a_gop_decodes_from_the_keyframe_before(tmp_path, tiny_model):
    src = encode(["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25", "-t", "3.6", "-c:v", "libx264", "-g", "45",
                  "-x264-params", "scenecut=0", "-pix_fmt", "yuv420p"], tmp_path / "gop45.mp4")
    info, index = media.probe(src, 50)
    chunks_at = [0, 25, 45, 70]  # no keyframe near frame 25: cut there, inside the first GOP
    first, _ = index.decode_range(25, 45)
    assert info.keyframes == [0, 45] and first == 0  # chunk 2's piece starts at the keyframe before it
    _, chunks, out, _ = run_pipeline(src, tmp_path, tiny_model, chunk_frames=25)
    assert [c.start for c in chunks] == chunks_at
    assert relative_times(out) == [Fraction(i, 25) for i in range(90)]
    # the chunk's frames are its own, not the lead-in's: the result matches a one-chunk run
    whole = tmp_path / "whole"
    whole.mkdir()
    _, one, alone, _ = run_pipeline(src, whole, tiny_model, chunk_frames=1000)
    assert len(one) == 1
    diffs = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(decoded_frames(out),
                                                                            decoded_frames(alone), strict=True)]
    assert max(diffs) < 6  # same frames styled alike; only encoder noise differs


def test_a_long_gop_is_still_split_into_chunks_of_about_chunk_frames(tmp_path, tiny_model):
    src = encode(["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=30", "-t", "4", "-c:v", "libx264", "-g", "1000",
                  "-x264-params", "scenecut=0", "-pix_fmt", "yuv420p"], tmp_path / "onekey.mp4")
    info, chunks, out, _ = run_pipeline(src, tmp_path, tiny_model, chunk_frames=25)
    assert info.longest_gop == 120 and info.mode == "transcode" and "120 frames apart" in info.mode_reason
    assert [c.frames for c in chunks] == [25, 25, 25, 25, 20]
    assert relative_times(out) == [Fraction(i, 30) for i in range(120)]


def test_avi_timestamps_in_decode_order_are_put_back_in_display_order(tmp_path, tiny_model):
    mp4 = encode(["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=24", "-t", "2", "-c:v", "libx264", "-bf", "2",
                  "-pix_fmt", "yuv420p"], tmp_path / "b.mp4")
    src = encode(["-i", str(mp4), "-c", "copy"], tmp_path / "b.avi")
    info, _, out, _ = run_pipeline(src, tmp_path, tiny_model, chunk_frames=20)
    assert info.mode == "transcode" and "avi" in info.mode_reason
    assert relative_times(out) == [Fraction(i, 24) for i in range(48)]


def test_odd_sizes_are_scaled_to_even_sides_never_padded(tmp_path):
    src = encode(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-t", "0.2", "-vf", "scale=641:359",
                  "-c:v", "libx264", "-pix_fmt", "yuv444p"], tmp_path / "odd.mp4")
    _, _, out, report = run_pipeline(src, tmp_path, "pop-art", chunk_frames=10)
    assert (report["width"], report["height"]) == (642, 360)
    for frame in decoded_frames(out):
        # a padded edge would be one flat near-black line; a scaled one carries the picture
        for edge in (frame[:, -1], frame[-1, :]):
            assert edge.astype(int).std() > 8 and edge.mean() > 30


def test_scaling_to_an_output_height_keeps_every_frame(tmp_path, tiny_model):
    src = make_video(tmp_path / "s.mp4", size="160x96")
    info, _, _, report = run_pipeline(src, tmp_path, tiny_model, output_height=48)
    assert (report["width"], report["height"]) == (80, 48) and report["frames"] == info.frames


def test_a_phone_video_held_upright_comes_out_upright(tmp_path):
    # Upright, the picture is bright at the top and dark at the bottom; it is stored turned on its
    # side (coded 64x96) with a display matrix telling players to turn it back.
    upright = np.zeros((96, 64, 3), np.uint8)
    upright[:32] = 230
    stored = np.rot90(upright, -1)  # what a phone held upright records
    frames = tmp_path / "frames"
    frames.mkdir()
    from PIL import Image

    for i in range(6):
        Image.fromarray(stored).save(frames / f"{i:03d}.png")
    plain = encode(["-framerate", "25", "-i", str(frames / "%03d.png"), "-c:v", "libx264", "-pix_fmt", "yuv420p"],
                   tmp_path / "plain.mp4")
    src = encode(["-display_rotation:v:0", "90", "-i", str(plain), "-c", "copy"], tmp_path / "phone.mp4") \
        if _ffmpeg_has_display_rotation() else encode(["-i", str(plain), "-c", "copy", "-metadata:s:v:0", "rotate=90"],
                                                         tmp_path / "phone.mp4")
    info, _, out, report = run_pipeline(src, tmp_path, "pop-art", chunk_frames=10)
    assert info.rotation in (90, 270) and (report["width"], report["height"]) == (64, 96)
    luma = decoded_frames(out)[0].astype(float).mean(axis=2)
    assert luma[:32].mean() > luma[-32:].mean() + 40  # bright at the top: upright
    with av.open(str(out)) as c:
        assert not next(c.decode(video=0)).rotation  # and no rotation left for players to apply


def _ffmpeg_has_display_rotation() -> bool:
    return b"display_rotation" in subprocess.run(["ffmpeg", "-h", "full"], capture_output=True).stdout


def test_a_one_frame_video(tmp_path, tiny_model):
    src = encode(["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25", "-frames:v", "1", "-c:v", "libx264"],
                 tmp_path / "one.mp4")
    info, chunks, _, report = run_pipeline(src, tmp_path, tiny_model)
    assert info.frames == 1 and len(chunks) == 1 and report["frames"] == 1
    assert report["duration"] == pytest.approx(0.04, abs=1e-6)


def audio_onset(path: Path) -> float:
    """When a click is first heard, relative to the first video frame, as a player decodes it."""
    times, _ = media.video_times(path)
    with av.open(str(path)) as c:
        for frame in c.decode(audio=0):
            x = np.abs(frame.to_ndarray().astype(float))
            x = x / 32768 if frame.format.name.startswith("s16") else x
            hits = np.nonzero(x.max(axis=0) > 0.3)[0]
            if len(hits):
                return float(frame.time + hits[0] / frame.sample_rate - times[0])
    raise AssertionError("no click")


CLICK = "aevalsrc=if(between(t\\,0.5\\,0.5005)\\,0.9\\,0):s={rate}:d=2"


@pytest.mark.parametrize(("name", "audio_args", "rate"), [
    ("aac.mp4", ["-c:a", "aac"], 48000),
    ("opus.webm", ["-c:a", "libopus"], 48000),
    ("opus.mkv", ["-c:a", "libopus"], 48000),
    ("mp3.mp4", ["-c:a", "libmp3lame"], 44100),
    ("mp3.mkv", ["-c:a", "libmp3lame"], 44100),
    ("pcm.mov", ["-c:a", "pcm_s16le"], 48000),
    ("surround.mp4", ["-c:a", "aac", "-ac", "6"], 48000),
])
def test_audio_is_heard_at_the_same_offset_from_the_first_frame_and_as_long(tmp_path, tiny_model, name,
                                                                             audio_args, rate):
    video = ["-c:v", "libvpx-vp9", "-b:v", "200k"] if name.endswith(".webm") else ["-c:v", "libx264"]
    src = encode(["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=30000/1001", "-f", "lavfi", "-i",
                  CLICK.format(rate=rate), "-t", "2", *video, *audio_args], tmp_path / name)
    info, _, out, report = run_pipeline(src, tmp_path, tiny_model, chunk_frames=25)
    assert abs(audio_onset(out) - audio_onset(src)) <= 0.001
    source_span = Fraction(info.audio.end) - Fraction(info.audio.start)
    assert abs(report["audio"]["duration"] - float(source_span)) <= 0.001
    assert abs(report["audio"]["offset"] - report["audio"]["source_offset"]) <= 0.001
    with av.open(str(out)) as c:
        stream = c.streams.audio[0]
        assert stream.codec_context.channels == (6 if name.startswith("surround") else 1)
        assert stream.codec_context.codec.canonical_name == ("aac" if name.startswith(("aac", "pcm", "surround")) else
                                             "opus" if "opus" in name else "mp3")


def test_the_old_way_of_carrying_audio_put_aac_late(tmp_path):
    """Why audio is no longer copied through Matroska: the MP4 edit list that skips AAC's priming
    is lost there, and the audio comes back ~21 ms late (this test fails if that ever changes)."""
    src = encode(["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25", "-f", "lavfi", "-i", CLICK.format(rate=48000),
                  "-t", "2", "-c:v", "libx264", "-c:a", "aac"], tmp_path / "a.mp4")
    mka = encode(["-i", str(src), "-map", "0:a", "-c", "copy"], tmp_path / "a.mka")
    old = encode(["-i", str(src), "-i", str(mka), "-map", "0:v", "-map", "1:a", "-c", "copy"], tmp_path / "old.mp4")
    assert audio_onset(old) - audio_onset(src) > 0.015


@pytest.mark.parametrize("content", [b"", b"this is not a video at all", b"\x00" * 5000])
def test_garbage_is_a_clear_media_error(tmp_path, content):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(media.MediaError, match="not a readable video|no video stream|no frames"):
        media.probe(bad, 100)


def truncated(src: Path) -> Path:
    cut = src.with_name(f"cut-{src.name}")
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    return cut


def test_a_truncated_video_fails_clearly(tmp_path, tiny_model, capsys):
    # ffmpeg's MP4 keeps its index (moov) at the end: cut in half, the file has none, and the
    # probe refuses it before anything is cut.
    cut = truncated(make_video(tmp_path / "ok.mp4", seconds=2, audio=False))
    with pytest.raises(media.MediaError, match=r"^not a readable video \(InvalidDataError: .*Invalid data found"):
        media.probe(cut, 100)
    # With its index first (+faststart) the half file still reads, its last frames' data gone:
    # the chunk's scorer fails and says which frames and where.
    cut = truncated(encode(["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25", "-t", "2", "-c:v", "libx264",
                            "-pix_fmt", "yuv420p", "-movflags", "+faststart"], tmp_path / "indexed.mp4"))
    [folder] = cut_chunks(cut, tmp_path / "chunks")
    capsys.readouterr()
    code = scoring_main(["stylize", "--model", str(tiny_model), "--input", str(folder), "--output",
                         str(tmp_path / "out")])
    said = capsys.readouterr()
    assert code == 2
    assert re.search(r"error: chunk 1/1, frames 0-\d+: \d+ of \d+ frames did not decode \(first missing: frame "
                     r"\d+, [\d.]+ s\); the video is damaged there", said.out + said.err), said


def test_audio_only_file_is_refused(tmp_path):
    path = tmp_path / "sound.m4a"
    ffmpeg.input("sine", f="lavfi", t=0.5).output(str(path)).run(quiet=True)
    with pytest.raises(media.MediaError, match="no video stream"):
        media.probe(path, 100)


def test_file_names_are_never_shell_interpreted(tmp_path, tiny_model, monkeypatch):
    """A name a shell would act on: ``$(touch pwned)`` would create ``pwned`` in the working
    folder of the process whose shell ran it (this one, or a child started from it). The data
    path opens the file by its name as one argument (PyAV), and the file comes out whole."""
    src = make_video(tmp_path / "plain.mp4", audio=True)
    weird = tmp_path / "it's $(touch pwned) & `touch pwned2`; été 東京.mp4"
    shutil.copy(src, weird)
    cwd = tmp_path / "cwd"  # where a shell started from here would write its marker
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    info, _, out, report = run_pipeline(weird, tmp_path / "work", tiny_model)
    assert report["frames"] == info.frames == 30 and relative_times(out) == relative_times(src)
    assert list(cwd.iterdir()) == []  # no marker: no shell ever saw the name
