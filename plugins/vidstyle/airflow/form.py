"""The processing DAG's Params: typed, documented, rendered as the trigger form in the UI.

Airflow shows JSON-schema failures in its own words, which for a regular expression means the
expression itself. So only rules whose failure reads plainly stay in the schema (ranges, a
list of choices); each field's description states its rule in words, and the rules a pattern
would express (what a video path or an output folder looks like) are checked by the run's
first task, which fails at once with those same words (vidstyle.pipeline.params.check_params). The trigger form
clamps numbers to their range as they are typed (chunk size 0 becomes 1, CRF 99 becomes 51);
the REST API and the CLI refuse them, naming the rule.
"""

from __future__ import annotations

from airflow.sdk import Param

from scoring.builtins import builtin_model_names
from scoring.chunk import DEFAULT_CRF
from vidstyle.pipeline.backends import BACKENDS
from vidstyle.pipeline.models import style_schema
from vidstyle.pipeline.settings import Settings


def stylize_params(settings: Settings) -> dict[str, Param]:
    builtins = builtin_model_names()
    return {
        "video_blob": Param(
            type="string", minLength=1, maxLength=1024, title="Video blob", section="Video",
            description=f"Path of the video inside container '{settings.container}', e.g. "
                        f"{settings.input_prefix}holiday.mp4: no leading '/', ending in "
                        f"{', '.join(settings.suffixes)}",
        ),
        "video_version": Param(
            None, type=["null", "string"], maxLength=64, title="Content version", section="Video",
            description="The upload this run must process (its Content-MD5, else its ETag, as the ledger shows "
                        "it). Empty: whatever the blob holds when the run starts. Runs the watcher starts fill "
                        "it in, so a re-upload never changes what an earlier run processes.",
        ),
        "style": Param(
            settings.default_style, type="string", minLength=1, maxLength=1024, anyOf=style_schema(builtins),
            examples=builtins, title="Style model", section="Output",
            description=f"A built-in model ({', '.join(builtins)}), or a checkpoint: "
                        "wasb://container/path/model.pth, azureml://datastores/..., or a path on the workers "
                        "starting with '/'",
        ),
        "output_height": Param(
            0, type="integer", minimum=0, maximum=4320, multipleOf=2, title="Output height", section="Output",
            description="Height in pixels, an even number from 2 to 4320 (width follows the aspect ratio); "
                        "0 keeps the source size",
        ),
        "crf": Param(
            DEFAULT_CRF, type="integer", minimum=0, maximum=51, title="Encoder quality (CRF)", section="Output",
            description="H.264 constant rate factor, 0 to 51: 0 lossless, 18 visually lossless, 23 smaller, "
                        "51 worst",
        ),
        "output_prefix": Param(
            settings.output_prefix, type="string", maxLength=512, title="Output prefix", section="Output",
            description="Folder in the container for the result, manifest and preview: ending with '/', no "
                        "leading '/' (empty: the container's top)",
        ),
        "chunk_frames": Param(
            None, type=["null", "integer"], minimum=1, maximum=100_000, title="Chunk size (frames)",
            section="Processing",
            description=f"About how many frames each scoring task takes, 1 to 100000 (chunks end on the source's "
                        f"keyframes nearest to it); each chunk is retried on its own. Empty: the backend's "
                        f"(local: {settings.chunk_frames}; azureml: {settings.azureml_chunk_frames}, larger "
                        "because each job pays for starting a container)",
        ),
        "backend": Param(
            settings.backend, type="string", enum=sorted(BACKENDS), title="Compute backend", section="Processing",
            description="Where chunks are scored: local (on the worker) or azureml (a GPU job per chunk "
                        "on an Azure ML compute cluster; see the docs, Azure ML)",
        ),
        "keep_work": Param(
            settings.keep_work, type="boolean", title="Keep work files", section="Processing",
            description="Keep the run's pieces, segments and plan after a successful run (always kept on failure)",
        ),
    }
