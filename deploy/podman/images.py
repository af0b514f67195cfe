"""The project's two images, built from their Dockerfiles with podman (buildah 1.28 inside), and
their smoke checks: the Airflow image's command and DAGs, and the scoring image run as an Azure ML
command job runs it (its inputs mounted read-only, another working directory, no GPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from deploy.podman import engine

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Image:
    name: str  # images/<name>/Dockerfile
    tag: str

    @property
    def dockerfile(self) -> Path:
        return ROOT / "images" / self.name / "Dockerfile"

    @property
    def tags(self) -> list[str]:
        """What `docker compose` and podman's compatible API look the short name up as."""
        return [self.tag, f"docker.io/library/{self.tag}"]


def image_tag() -> str:
    return os.environ.get("VIDSTYLE_IMAGE_TAG", "latest")


AIRFLOW = Image("airflow", f"video-style-airflow:{image_tag()}")
SCORING = Image("scoring", f"video-style-scoring:{image_tag()}")


def build(image: Image, build_args: dict[str, str] | None = None) -> dict:
    """Build (layers cached by podman: a second build of unchanged sources takes seconds)."""
    engine.say(f"building {image.tag} from {image.dockerfile.relative_to(ROOT)} (log: "
               f"{engine.logs() / ('build-' + image.name + '.log')})")
    args = [x for k, v in (build_args or {}).items() for x in ("--build-arg", f"{k}={v}")]
    start = time.monotonic()
    engine.logged(["podman", "build", "--pull=never", "--format", "docker", "-f", str(image.dockerfile),
                   *args, *(x for t in image.tags for x in ("-t", t)), str(ROOT)], "build-" + image.name)
    seconds = time.monotonic() - start
    size = engine.image_size(image.tag)
    engine.say(f"{image.tag}: built in {seconds:.0f} s, {size / 2**20:.0f} MiB")
    return {"image": image.tag, "build_s": round(seconds, 1), "size_mib": round(size / 2**20)}


def in_image(image: Image, *cmd: str, options: list[str] | None = None, timeout: float = 600) -> str:
    done = engine.podman("run", "--rm", *(options or []), image.tag, *cmd, check=False, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"{image.tag}: {' '.join(cmd)} failed (exit {done.returncode}):\n"
                         f"{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout


DAGBAG = """
from airflow.configuration import conf
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=conf.get("core", "dags_folder"))
assert not bag.import_errors, bag.import_errors
print("DAGS:", " ".join(sorted(bag.dags)))
"""


def smoke_airflow() -> dict:
    """The image's build-time check again at run time, then its DAGs parse, as uid 50000."""
    in_image(AIRFLOW, "vidstyle", "--help")
    version = in_image(AIRFLOW, "airflow", "version").strip().splitlines()[-1]
    out = in_image(AIRFLOW, "python", "-c", DAGBAG)
    dags = next(line for line in reversed(out.splitlines()) if line.startswith("DAGS:")).split()[1:]
    if "video_stylize" not in dags:
        raise SystemExit(f"{AIRFLOW.tag}: the DAGs parsed, but no video_stylize among {dags}")
    engine.say(f"{AIRFLOW.tag}: airflow {version}; DAGs parse: {', '.join(dags)}")
    return {"airflow": version, "dags": dags}


def smoke_scoring(work: Path) -> dict:
    """``python -m scoring stylize`` as an Azure ML command job runs it: the chunk folder mounted
    read-only, the output folder its own mount, the job's own working directory (not WORKDIR),
    the CPU only; the segment must hold exactly the frames and timestamps chunk.json asks for."""
    models = in_image(SCORING, "python", "-m", "scoring", "models")
    chunk = make_chunk(work)
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    options = ["--network=none", "-v", f"{chunk}:/mnt/azureml/inputs/chunk:ro", "-v", f"{out}:/mnt/azureml/outputs/out",
               "-w", "/mnt/azureml/cr/j/job", "--mount", "type=tmpfs,destination=/mnt/azureml/cr/j/job"]
    start = time.monotonic()
    in_image(SCORING, "python", "-m", "scoring", "stylize", "--model", "pop-art", "--input",
             "/mnt/azureml/inputs/chunk", "--output", "/mnt/azureml/outputs/out", "--device", "cpu",
             options=options, timeout=1200)
    seconds = time.monotonic() - start
    frames = check_segment(chunk, out)
    engine.say(f"{SCORING.tag}: stylized a chunk of {frames} frames on the CPU in {seconds:.0f} s, "
               "frame-exact (count and every timestamp)")
    names = [line.split()[0] for line in models.splitlines() if line.strip()]
    return {"models": names, "chunk_frames": frames, "stylize_s": round(seconds, 1)}


def make_chunk(work: Path) -> Path:
    """A chunk folder cut from a synthetic video by the pipeline's own cutter (what split uploads)."""
    from scoring.chunk import Encoding
    from vidstyle.media import probe
    from vidstyle.media.cutting import Cutter, Geometry

    video = work / "source.mp4"
    engine.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x96:rate=30000/1001",
                "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "24", str(video)], env=dict(os.environ))
    info, index = probe.probe(video, max_gop=200)
    geometry = Geometry.of(info, 0)
    folder = work / "chunks"
    shutil.rmtree(folder, ignore_errors=True)

    def emit(i: int, name: str, path: Path) -> None:
        (folder / str(i)).mkdir(parents=True, exist_ok=True)
        shutil.move(path, folder / str(i) / name)

    chunks = Cutter(video, info, index, video.name, 30, geometry, Encoding(frame_rate=info.frame_rate,
                    sar=geometry.sar), folder / ".cut", emit).run()
    # A middle chunk: it starts mid-GOP, so the scorer must drop frames before its first.
    return folder / str(chunks[len(chunks) // 2].index)


def check_segment(chunk: Path, out: Path) -> int:
    """The segment's video frames are exactly the spec's: the same number, the same times."""
    from scoring.chunk import SEGMENT_NAME, ChunkSpec

    spec = ChunkSpec.load(chunk)
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "stream=time_base:frame=pts", "-of", "json", str(out / SEGMENT_NAME)],
                           capture_output=True, text=True, check=True)
    data = json.loads(probe.stdout)
    base = Fraction(data["streams"][0]["time_base"])
    got = sorted(Fraction(f["pts"]) * base for f in data["frames"])
    want = [Fraction(p) * Fraction(spec.time_base) for p in spec.pts]
    if len(got) != len(want):
        raise SystemExit(f"scoring image: the segment has {len(got)} frames, chunk.json asks for {len(want)}")
    if got != want:
        raise SystemExit(f"scoring image: segment timestamps {got[:5]}... differ from chunk.json's {want[:5]}...")
    return len(got)


def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="vidstyle-podman-", dir=engine.home()))
