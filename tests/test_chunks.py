import pytest

from vidstyle.config import Settings
from vidstyle.layout import Chunk, Layout, Video, plan_chunks


@pytest.mark.parametrize(("frames", "size"), [(1, 1), (10, 3), (300, 100), (301, 100), (299, 100), (7, 50)])
def test_chunks_cover_every_frame_once_in_order(frames, size):
    chunks = plan_chunks(frames, size)
    covered = [i for c in chunks for i in range(c.start, c.end)]
    assert covered == list(range(frames))
    assert all(0 < c.frames <= size for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert all(c.count == len(chunks) for c in chunks)


def test_remainder_gets_its_own_chunk():
    chunks = plan_chunks(1000, 300)
    assert [(c.start, c.end) for c in chunks] == [(0, 300), (300, 600), (600, 900), (900, 1000)]


def test_labels_read_like_the_ui_shows_them():
    assert plan_chunks(3600, 300)[2].label == "chunk 3/12, frames 600-899"


@pytest.mark.parametrize(("frames", "size"), [(0, 10), (10, 0), (-1, 5)])
def test_bad_plans_are_refused(frames, size):
    with pytest.raises(ValueError, match="need frames"):
        plan_chunks(frames, size)


def test_chunk_round_trips_through_xcom_dicts():
    c = plan_chunks(50, 20)[1]
    assert Chunk.from_dict(c.to_dict()) == c


def test_video_identity_follows_path_and_content():
    a = Video("videos", "incoming/a.mp4", "md5-1")
    assert a.video_id == Video("videos", "incoming/a.mp4", "md5-1", "later", 5).video_id
    assert a.video_id != Video("videos", "incoming/a.mp4", "md5-2").video_id  # new content
    assert a.video_id != Video("videos", "incoming/b.mp4", "md5-1").video_id  # other path
    assert a.run_id.startswith("video__a-")


def test_output_paths_mirror_the_input_path_and_name_the_style():
    layout = Layout(Settings())
    out = layout.outputs("incoming/trips/Beach Day.MOV", "pop-art")
    assert out["video"] == "outputs/trips/Beach Day.pop-art.mp4"
    assert out["manifest"].endswith(".pop-art.manifest.json")
    other = layout.outputs("elsewhere/x.mp4", "/models/my.style.pth", "done/")
    assert other["video"] == "done/elsewhere/x.my-style.mp4"
