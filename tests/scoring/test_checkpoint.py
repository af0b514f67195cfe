import json
import pickle

import pytest
import torch

from scoring.checkpoint import ModelLoadError, builtin_models, load_model
from scoring.transformer_net import TransformerNet


def test_loads_pytorch_examples_format_and_infers_shape(tmp_path):
    net = TransformerNet(width=8, blocks=3)
    path = tmp_path / "m.pth"
    torch.save(net.state_dict(), path)
    model, info = load_model(path)
    assert (info.width, info.blocks) == (8, 3)
    x = torch.rand(1, 3, 32, 32) * 255
    assert torch.equal(model(x), net.eval()(x))


def test_full_size_keys_match_pytorch_examples():
    keys = set(TransformerNet().state_dict())
    for k in ("conv1.conv2d.weight", "in1.weight", "res1.conv1.conv2d.weight", "res5.in2.bias",
              "deconv1.conv2d.weight", "deconv3.conv2d.bias", "in5.weight"):
        assert k in keys
    assert not any("running" in k for k in keys)


def test_old_checkpoints_with_instance_norm_running_stats_load(tmp_path):
    state = TransformerNet(width=4, blocks=2).state_dict()
    for name in [k[: -len(".weight")] for k in state if k.split(".")[-2].startswith("in") and k.endswith("weight")]:
        c = state[name + ".weight"].shape[0]
        state[name + ".running_mean"] = torch.zeros(c)
        state[name + ".running_var"] = torch.ones(c)
    assert any(k.endswith("running_mean") for k in state)
    path = tmp_path / "old.pth"
    torch.save(state, path)
    _, info = load_model(path)
    assert (info.width, info.blocks) == (4, 2)


def test_wrong_shapes_are_refused_naming_the_file(tmp_path):
    state = TransformerNet(width=4, blocks=1).state_dict()
    state["res1.conv1.conv2d.weight"] = torch.zeros(3, 3, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ModelLoadError, match="bad.pth.*TransformerNet"):
        load_model(path)


def test_not_a_transformer_net_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ModelLoadError, match="other.pth: not a TransformerNet"):
        load_model(path)


def test_corrupt_file_is_refused(tmp_path):
    path = tmp_path / "corrupt.pth"
    torch.save(TransformerNet(width=4, blocks=1).state_dict(), path)
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ModelLoadError, match="corrupt.pth: not a loadable"):
        load_model(path)


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_code_in_a_checkpoint_never_runs(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"conv1.conv2d.weight": torch.zeros(1), "x": _Payload()}, path, pickle_module=pickle)
    with pytest.raises(ModelLoadError, match="evil.pth"):
        load_model(path)
    assert "code ran" not in capsys.readouterr().out


def test_sidecar_disagreeing_with_tensors_is_refused(tmp_path):
    path = tmp_path / "m.pth"
    torch.save(TransformerNet(width=4, blocks=1).state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps({"architecture": {"width": 32, "blocks": 5}}))
    with pytest.raises(ModelLoadError, match="sidecar says width=32"):
        load_model(path)


def test_unknown_name_lists_the_builtins():
    with pytest.raises(ModelLoadError, match="not a built-in model"):
        load_model("no-such-style")


def test_builtin_models_load():
    assert builtin_models(), "the project ships at least one model"
    for name in builtin_models():
        _, info = load_model(name)
        assert info.path.name.startswith(name)
