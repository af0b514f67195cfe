"""What a video is to the pipeline and where its results go: ids, run ids, output paths."""

import pytest

from vidstyle.pipeline.identity import OutputSpec, Video
from vidstyle.pipeline.layout import Layout
from vidstyle.pipeline.settings import Settings


def test_video_identity_follows_path_and_content():
    a = Video("videos", "incoming/a.mp4", "md5-1")
    assert a.video_id == Video("videos", "incoming/a.mp4", "md5-1", "later", 5).video_id
    assert a.video_id != Video("videos", "incoming/a.mp4", "md5-2").video_id  # new content
    assert a.video_id != Video("videos", "incoming/b.mp4", "md5-1").video_id  # other path
    assert a.run_id.startswith("video__00000000T000000__a-")  # no upload time known
    uploaded = Video("videos", "incoming/a.mp4", "m", "2026-03-04T05:06:07+00:00")
    assert uploaded.run_id.startswith("video__20260304T050607__a-")  # the upload time: the order runs go in


def test_output_paths_mirror_the_input_path_and_name_the_style():
    layout = Layout(Settings())
    out = layout.outputs("incoming/trips/Beach Day.MOV", OutputSpec("pop-art"))
    assert out["video"] == "outputs/trips/Beach Day.pop-art.mp4"
    assert out["manifest"].endswith(".pop-art.manifest.json")
    other = layout.outputs("elsewhere/x.mp4", OutputSpec("/models/my.style.pth", output_prefix="done/"))
    assert other["video"] == "done/elsewhere/x.my-style.mp4"


def test_outputs_that_differ_in_height_or_quality_never_share_a_name():
    layout = Layout(Settings())
    names = {layout.outputs("incoming/a.mp4", OutputSpec("pop-art", h, crf))["video"]
             for h in (0, 720) for crf in (18, 23)}
    assert names == {"outputs/a.pop-art.mp4", "outputs/a.pop-art.720p.mp4", "outputs/a.pop-art.crf23.mp4",
                     "outputs/a.pop-art.720p.crf23.mp4"}


@pytest.mark.parametrize("name", ["clip été 東京.mp4", "東京.mp4", "大阪.mp4", "Ünïcödé.mov", "a b c.mp4"])
def test_unicode_names_stay_in_paths_and_ids_stay_ascii_and_distinct(name):
    video = Video("videos", f"incoming/local/{name}", "v1")
    assert video.video_id.isascii() and video.run_id.isascii()
    assert Layout(Settings()).outputs(video.blob, OutputSpec("pop-art"))["video"].startswith(
        "outputs/local/" + name.rsplit(".", 1)[0])


def test_names_in_other_scripts_never_collide():
    ids = {Video("videos", f"incoming/local/{n}", "v1").video_id for n in ("東京.mp4", "大阪.mp4", "京都.mp4")}
    assert len(ids) == 3 and all(i.startswith("video-") for i in ids)
    assert Video("videos", "incoming/clip été.mp4", "v").video_id.startswith("clip-ete-")
