"""Where chunks begin and end: every frame in exactly one chunk, in order."""

import pytest

from vidstyle.media.chunks import Chunk, plan_chunks


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
