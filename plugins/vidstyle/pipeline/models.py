"""A run's ``style``: which model it names and where that model lives, decided in one place.

A style is a built-in model's name (``pop-art``), a checkpoint in the pipeline's storage
(``wasb://container/path.pth``), one on an Azure ML datastore (``azureml://datastores/...``), or a
path on the workers starting with ``/``. The trigger form's schema, the result's name, each
backend's check before any work and the way each backend fetches it all read it from here.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from scoring.builtins import builtin_model_names

BUILTIN, WASB, AZUREML, PATH = "builtin", "wasb", "azureml", "path"


class UnknownModel(ValueError):
    """A style that names no model: neither a built-in name nor a checkpoint's location."""


@dataclass(frozen=True)
class ModelRef:
    ref: str
    kind: str
    container: str = ""  # wasb: the container ...
    blob: str = ""  # ... and the blob

    @classmethod
    def parse(cls, ref: str, builtins: list[str] | None = None) -> ModelRef:
        builtins = builtin_model_names() if builtins is None else builtins
        if ref in builtins:
            return cls(ref, BUILTIN)
        if ref.startswith("wasb://"):
            container, _, blob = ref[len("wasb://"):].partition("/")
            return cls(ref, WASB, container, blob)
        if ref.startswith("azureml://"):
            return cls(ref, AZUREML)
        if ref.startswith("/"):
            return cls(ref, PATH)
        raise UnknownModel(f"model {ref!r}: not a built-in model ({', '.join(builtins) or 'none'}) nor a "
                           "checkpoint (wasb://container/path.pth, azureml://datastores/..., or a path on the "
                           "workers starting with '/')")

    @property
    def stem(self) -> str:
        return model_stem(self.ref)

    @property
    def sidecar_blob(self) -> str:
        """A stored checkpoint's JSON sidecar beside it (architecture, training settings)."""
        return self.blob.rpartition(".")[0] + ".json"


def require_stored_model(model: ModelRef, conn_id: str) -> None:
    """A model in storage must exist before any frame is split."""
    from vidstyle.hooks.blob_store import BlobStore  # storage only here: the rest of this module is pure

    if not BlobStore(conn_id, model.container).exists(model.blob):
        raise FileNotFoundError(f"model {model.ref} does not exist")


def model_stem(ref: str) -> str:
    """A style's name in a result's file name: ``pop-art``, or the checkpoint's file stem."""
    return posixpath.splitext(posixpath.basename(ref.rstrip("/")))[0]


def style_schema(builtins: list[str]) -> list[dict]:
    """The trigger form's rule for ``style``, as JSON schema: exactly what ``ModelRef.parse``
    accepts, so a typo of a built-in's name is refused before a run is created."""
    return [{"enum": builtins}, {"pattern": "^(wasb|azureml)://."}, {"pattern": "^/."}]
