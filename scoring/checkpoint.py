"""Finding and loading TransformerNet checkpoints in the pytorch/examples format."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from scoring.builtins import CHECKPOINT_SUFFIXES, MODELS_DIR, builtin_models
from scoring.transformer_net import TransformerNet

__all__ = ["CHECKPOINT_SUFFIXES", "MODELS_DIR", "ModelInfo", "ModelLoadError", "builtin_models", "load_model"]

# Checkpoints saved with PyTorch < 0.4 carry InstanceNorm running stats the model no longer has.
_LEGACY_KEY = re.compile(r"in\d+\.running_(mean|var)$")
_RES_BLOCK = re.compile(r"^res(\d+)\.conv1\.conv2d\.weight$")


class ModelLoadError(ValueError):
    """A model reference that cannot be turned into a working TransformerNet."""


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    width: int
    blocks: int
    sidecar: dict


def resolve_model(ref: str | Path) -> Path:
    """A built-in model name or a path to a local checkpoint file."""
    builtins = builtin_models()
    if str(ref) in builtins:
        return builtins[str(ref)]
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    raise ModelLoadError(
        f"model {str(ref)!r}: no such file and not a built-in model (built-ins: {', '.join(builtins) or 'none'})"
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load tensors only (``weights_only=True``): a checkpoint is data, never code."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise ModelLoadError(f"{path}: not a loadable PyTorch weights file ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path}: expected a state_dict (a mapping of names to tensors), got {type(obj).__name__}")
    return {k: v for k, v in obj.items() if not _LEGACY_KEY.search(k)}


def infer_shape(state: dict[str, torch.Tensor], path: Path) -> tuple[int, int]:
    """Width and residual block count from the tensors themselves."""
    first = state.get("conv1.conv2d.weight")
    if first is None or first.ndim != 4 or first.shape[1] != 3:
        raise ModelLoadError(
            f"{path}: not a TransformerNet checkpoint (expected key 'conv1.conv2d.weight' of shape [width, 3, 9, 9])"
        )
    blocks = sum(1 for k in state if _RES_BLOCK.match(k))
    return int(first.shape[0]), blocks


def read_sidecar(path: Path, sidecar: Path | None = None) -> dict:
    sidecar = sidecar or path.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        return json.loads(sidecar.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{sidecar}: sidecar is not valid JSON ({exc})") from exc


def load_model(ref: str | Path, device: str | torch.device = "cpu",
               sidecar: Path | None = None) -> tuple[TransformerNet, ModelInfo]:
    """A built-in model or a checkpoint, checked against its sidecar (beside it, or ``sidecar``)."""
    path = resolve_model(ref)
    state = read_state_dict(path)
    width, blocks = infer_shape(state, path)
    sidecar = read_sidecar(path, sidecar)
    arch = sidecar.get("architecture", {})
    if arch and (arch.get("width"), arch.get("blocks")) != (width, blocks):
        raise ModelLoadError(
            f"{path}: sidecar says width={arch.get('width')} blocks={arch.get('blocks')}, "
            f"tensors say width={width} blocks={blocks}"
        )
    model = TransformerNet(width=width, blocks=blocks)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"{path}: tensors do not fit a TransformerNet(width={width}, blocks={blocks}): {exc}"
        ) from exc
    model.eval().requires_grad_(False).to(device)
    return model, ModelInfo(path=path, width=width, blocks=blocks, sidecar=sidecar)
