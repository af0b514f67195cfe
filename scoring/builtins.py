"""The built-in style models shipped in ``scoring/models/``: found by name without loading torch,
so the Airflow side lists them (the trigger form, a run's ``start``) as cheaply as the scorer."""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / "models"
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".model")


def builtin_models() -> dict[str, Path]:
    """Name -> checkpoint of every built-in model."""
    return {p.stem: p for p in sorted(MODELS_DIR.iterdir()) if p.suffix in CHECKPOINT_SUFFIXES}


def builtin_model_names() -> list[str]:
    return sorted(builtin_models())
