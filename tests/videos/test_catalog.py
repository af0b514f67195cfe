"""The Videos page's pieces that need no server: failures in one sentence, and uploads' names
checked by the trigger form's rules."""

from __future__ import annotations

import pytest

from vidstyle.airflow.videos.app import upload_blob
from vidstyle.airflow.videos.catalog import failure_sentence, matches
from vidstyle.pipeline.errors import BadInput
from vidstyle.pipeline.settings import Settings


def test_a_failure_names_its_task_its_chunk_and_its_cause():
    assert failure_sentence("stylize_chunk (chunk 2 of 5, frames 30-44): CUDA out of memory.") == (
        "Failed in task stylize_chunk, chunk 2 of 5, frames 30-44, because CUDA out of memory.")
    assert failure_sentence("stylize_chunk[3]: boom") == "Failed in task stylize_chunk, chunk 3, because boom."
    assert failure_sentence("split: no video stream") == "Failed in task split because no video stream."
    assert failure_sentence(None) is None


@pytest.mark.parametrize("name", ["../x.mp4", "a/b.mp4", "x.txt", " x.mp4", ".hidden.mp4", "x\\y.mp4", "x\n.mp4",
                                  "", "a" * 300 + ".mp4", "x.mp4/"])
def test_names_a_browser_sends_are_checked_as_the_form_checks_them(name):
    with pytest.raises(BadInput):
        upload_blob(name, Settings())


def test_a_plain_name_goes_under_the_watched_prefix():
    assert upload_blob("Holiday clip.MOV", Settings(input_prefix="in/")) == "in/Holiday clip.MOV"


def test_filters_match_any_output():
    video = {"outputs": [{"state": "done", "style": "pop-art"}, {"state": "failed", "style": "x"}]}
    assert matches(video, "failed", None) and matches(video, None, "pop-art") and matches(video, "done", "pop-art")
    assert not matches(video, "running", None) and not matches(video, None, "mosaic")


def test_a_running_output_counts_its_chunks_split_and_styled_in_storage(store):
    from vidstyle.airflow.videos.catalog import Catalog
    from vidstyle.pipeline.identity import OutputSpec, Video
    from vidstyle.pipeline.layout import Layout
    from vidstyle.pipeline.ledger import RUNNING, Ledger

    settings = Settings(container=store.container)
    layout = Layout(settings)
    video = Video(store.container, "incoming/a.mp4", "v1", "2026-12-06T08:00:00+00:00", 10)
    Ledger(store, layout).record(video, "manual__a", RUNNING, OutputSpec("pop-art"), is_default=True)
    area = layout.work(video.video_id, "manual__a")
    for i in range(3):
        store.hook.load_string("{}", store.container, area.chunk_file(i, "in", "chunk.json"))
    store.hook.load_string("{}", store.container, area.chunk_file(1, "out", "result.json"))
    [out] = Catalog(store, settings).get(video.video_id)["outputs"]
    assert out["state"] == "running" and out["chunks"] == {"done": 1, "total": 3}
