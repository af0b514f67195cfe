"""A run's style, interpreted once: what it names, where it lives, and each backend's check of it."""

import pytest

from vidstyle.pipeline.models import AZUREML, BUILTIN, PATH, WASB, ModelRef, UnknownModel, model_stem
from vidstyle.pipeline.settings import Settings, load_settings


@pytest.mark.parametrize(("ref", "kind"), [("pop-art", BUILTIN), ("wasb://videos/models/a.pth", WASB),
                                           ("azureml://datastores/d/paths/a.pth", AZUREML), ("/models/a.pth", PATH)])
def test_a_style_names_one_kind_of_model(ref, kind):
    assert ModelRef.parse(ref, ["pop-art"]).kind == kind


def test_a_stored_model_knows_its_container_blob_and_sidecar():
    model = ModelRef.parse("wasb://videos/models/starry.night.pth", [])
    assert (model.container, model.blob, model.sidecar_blob) == ("videos", "models/starry.night.pth",
                                                                 "models/starry.night.json")
    assert model_stem(model.ref) == "starry.night" and model_stem("pop-art") == "pop-art"


@pytest.mark.parametrize("ref", ["pop_art", "models/relative.pth", "https://example.com/a.pth"])
def test_anything_else_is_refused_naming_what_a_style_can_be(ref):
    with pytest.raises(UnknownModel, match="not a built-in model .* nor a checkpoint"):
        ModelRef.parse(ref, ["pop-art"])


def test_models_by_blob_path_are_checked_and_fetched_with_their_sidecar(store, tmp_path, tiny_model):
    from vidstyle.pipeline.backends.local import LocalBackend, fetch_model

    settings = load_settings()
    conn = settings.wasb_conn_id
    tiny_model.with_suffix(".json").write_text('{"architecture": {"width": 4, "blocks": 1}}')
    store.upload(tiny_model, "models/tiny.pth")
    store.upload(tiny_model.with_suffix(".json"), "models/tiny.json")
    ref = f"wasb://{store.container}/models/tiny.pth"
    LocalBackend().preflight(ref, settings)  # exists: no error
    with pytest.raises(FileNotFoundError, match="models/missing.pth does not exist"):
        LocalBackend().preflight(f"wasb://{store.container}/models/missing.pth", settings)
    local = fetch_model(ref, conn, tmp_path / "fetched")
    assert open(local, "rb").read() == tiny_model.read_bytes()
    assert (tmp_path / "fetched" / "tiny.json").is_file()
    assert fetch_model("pop-art", conn, tmp_path) == "pop-art"  # names pass through


def test_builtin_and_local_models_are_checked_before_any_work(tiny_model):
    from vidstyle.pipeline.backends.local import LocalBackend

    settings = Settings()
    LocalBackend().preflight("pop-art", settings)
    LocalBackend().preflight(str(tiny_model), settings)
    with pytest.raises(FileNotFoundError, match="not a built-in model"):
        LocalBackend().preflight("/models/monet.pth", settings)
    with pytest.raises(ValueError, match="not a built-in model"):  # a typo of a name: neither a name nor a path
        LocalBackend().preflight("monet", settings)
    with pytest.raises(ValueError, match="not Azure ML datastores"):
        LocalBackend().preflight("azureml://datastores/x/paths/m.pth", settings)
