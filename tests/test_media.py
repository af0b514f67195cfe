import itertools
import shutil
from fractions import Fraction

import pytest
from conftest import make_video

from vidstyle import media


def roundtrip(src, tmp_path, height=0):
    info = media.probe(src)
    names = media.split_frames(src, tmp_path / "frames", info.frames, height)
    out = tmp_path / "out.mp4"
    media.stitch(tmp_path / "frames", names, info, out)
    return info, names, out


def test_ntsc_rate_keeps_every_frame_and_exact_timing(tmp_path):
    src = make_video(tmp_path / "ntsc.mp4", seconds=2, rate="30000/1001")
    info, names, out = roundtrip(src, tmp_path)
    assert info.frame_rate == "30000/1001" and info.constant_rate and info.frames == 60
    assert names == [f"{i:08d}.png" for i in range(60)]
    back = media.probe(out)
    assert back.frames == 60
    assert Fraction(back.frame_rate) == Fraction(30000, 1001)
    assert back.timestamps == pytest.approx(info.timestamps, abs=1e-4)


def test_variable_frame_rate_timestamps_survive(tmp_path):
    src = make_video(tmp_path / "vfr.mkv", seconds=2, vfr=True)
    info, _, out = roundtrip(src, tmp_path)
    assert not info.constant_rate
    deltas = {round(b - a, 3) for a, b in itertools.pairwise(info.timestamps)}
    assert len(deltas) >= 2  # really variable
    back = media.probe(out)
    assert back.frames == info.frames
    assert back.timestamps == pytest.approx(info.timestamps, abs=2e-3)


def test_audio_is_extracted_and_merged_back_in_sync(tmp_path):
    src = make_video(tmp_path / "a.mp4", seconds=1.5)
    info, _, out = roundtrip(src, tmp_path)
    assert info.has_audio and info.audio_codec == "aac"
    media.extract_audio(src, tmp_path / "a.mka")
    final = tmp_path / "final.mp4"
    media.merge_audio(out, tmp_path / "a.mka", final, info.audio_codec, info.audio_offset)
    summary = media.summary(final)
    assert summary["has_audio"] and summary["frames"] == info.frames
    assert abs(summary["duration"] - info.duration) <= 1 / info.fps


def test_video_without_audio_is_fine(tmp_path):
    src = make_video(tmp_path / "silent.mp4", audio=False)
    info, _, out = roundtrip(src, tmp_path)
    assert not info.has_audio and info.audio_codec is None
    assert media.summary(out)["frames"] == info.frames


def test_scaling_to_a_height_keeps_the_frame_count(tmp_path):
    src = make_video(tmp_path / "s.mp4", size="160x96")
    info, _, out = roundtrip(src, tmp_path, height=48)
    back = media.summary(out)
    assert (back["width"], back["height"], back["frames"]) == (80, 48, info.frames)


def test_odd_sizes_are_padded_for_the_encoder(tmp_path):
    src = make_video(tmp_path / "odd.mkv", size="95x63", audio=False)
    info, _, out = roundtrip(src, tmp_path)
    assert media.summary(out)["frames"] == info.frames


@pytest.mark.parametrize("content", [b"", b"this is not a video at all", b"\x00" * 5000])
def test_garbage_is_a_clear_media_error(tmp_path, content):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(media.MediaError, match="not a readable video|no video stream|no decodable"):
        media.probe(bad)


def test_audio_only_file_is_refused(tmp_path):
    import ffmpeg

    path = tmp_path / "sound.m4a"
    ffmpeg.input("sine", f="lavfi", t=0.5).output(str(path)).run(quiet=True)
    with pytest.raises(media.MediaError, match="no video stream"):
        media.probe(path)


def test_file_names_are_never_shell_interpreted(tmp_path):
    src = make_video(tmp_path / "plain.mp4", audio=False)
    weird = tmp_path / "it's $(touch pwned) & `x`;.mp4"
    shutil.copy(src, weird)
    info = media.probe(weird)
    assert info.frames > 0
    assert not (tmp_path / "pwned").exists()
