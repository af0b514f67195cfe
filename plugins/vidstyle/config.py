"""Installation settings, read from Airflow's config section ``[vidstyle]``.

Each can be set in airflow.cfg or as ``AIRFLOW__VIDSTYLE__<KEY>`` in the environment; DAG
params override the per-run ones from the UI form or ``--conf``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from airflow.configuration import conf

SECTION = "vidstyle"


@dataclass(frozen=True)
class Settings:
    wasb_conn_id: str = "wasb_default"
    container: str = "videos"
    input_prefix: str = "incoming/"
    work_prefix: str = "work/"
    output_prefix: str = "outputs/"
    state_prefix: str = "state/"
    video_suffixes: str = ".mp4,.mov,.mkv,.avi,.webm,.m4v,.mpg,.mpeg,.ts"
    default_style: str = "pop-art"
    chunk_frames: int = 240
    backend: str = "local"
    keep_work: bool = False
    max_active_videos: int = 4
    scoring_pool: str = "scoring"
    sensor_poke_seconds: int = 30
    max_frames: int = 500_000
    local_batch_size: int = 0  # 0: the scorer picks (1 on CPU, by free memory on a GPU)
    local_precision: str = "auto"  # auto: fp16 on a GPU, fp32 on a CPU
    local_compile: bool = False  # torch.compile: pays off on long chunks (compiling takes ~10 s)

    @property
    def suffixes(self) -> tuple[str, ...]:
        return tuple(s.strip().lower() for s in self.video_suffixes.split(",") if s.strip())


def load_settings() -> Settings:
    values = {}
    for f in fields(Settings):
        if not conf.has_option(SECTION, f.name):
            continue
        if f.type == "int":
            values[f.name] = conf.getint(SECTION, f.name)
        elif f.type == "bool":
            values[f.name] = conf.getboolean(SECTION, f.name)
        else:
            values[f.name] = conf.get(SECTION, f.name)
    return Settings(**values)
