"""The generated corpus (tests/media/corpus.py) through the real split, chunks and stitch: every
case comes out with the frames and times ffmpeg decodes from the source and the audio in sync
within 1 ms, or is refused at the split, once, with its reason in words."""

from __future__ import annotations

import pytest

from tests.media.corpus import CASES, Case, decoded_times
from tests.media.test_media import relative_times, run_pipeline
from vidstyle.media.probe import MediaError

# How each case is cut (README "The data path"): by copy where its packets allow, else re-encoded
# per chunk; "fallback": the copy cut was tried and refused by the muxer or its own read-back check.
PATHS = {
    "concat-rates": "copy",
    "setts-gap": "copy",
    "setts-one-tick": "copy",
    "ts-offset": "copy",
    "edit-skip": "transcode",
    "edit-gap": "copy",
    "open-gop": "copy",
    "b-pyramid": "copy",
    "hevc": "copy",
    "vp9-altref": "copy",
    "av1": "fallback",
    "mpeg2-interlaced": "copy",
    "mjpeg-avi": "transcode",
    "prores-mov": "fallback",
    "ffv1-mkv": "copy",
    "h264-10bit": "transcode",
    "h264-422": "transcode",
    "h264-444": "transcode",
    "audio-first": "copy",
    "audio-late": "copy",
    "two-audio": "copy",
}
CHUNK = 12  # the copy cut takes keyframes up to 2 chunks apart: the corpus's H.264 has one every 12


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_odd_source_comes_out_exact_or_is_refused_at_the_split_saying_why(case: Case, tmp_path, tiny_model):
    # No skip: a missing codec fails here, by name (CI has them all; scripts/bootstrap.sh installs them).
    assert not (missing := case.missing_tools()), f"{case.name} cannot be made or read here: {'; '.join(missing)}"
    (tmp_path / "make").mkdir()
    src = case.make(tmp_path / "make")
    if case.refused:
        with pytest.raises(MediaError, match=case.refused):
            run_pipeline(src, tmp_path, tiny_model, chunk_frames=CHUNK)
        return
    info, chunks, out, report = run_pipeline(src, tmp_path, tiny_model, chunk_frames=CHUNK)
    assert len(chunks) > 1
    assert len(relative_times(out)) == len(reference := decoded_times(src))
    assert relative_times(out) == reference, info.mode_reason
    if info.audio:
        assert abs(report["audio"]["offset"] - report["audio"]["source_offset"]) <= 0.001
        assert abs(report["audio"]["duration"] - report["audio"]["source_duration"]) <= 0.001
    path = "fallback" if "copy cut failed" in info.mode_reason else info.mode
    print(f"{case.name}: {path} ({info.mode_reason})")
    assert path == PATHS[case.name], info.mode_reason
