import argparse

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from scoring import train_filter, train_style
from scoring.checkpoint import load_model
from scoring.transformer_net import stylize_image


def photos(folder, n=4, size=48, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        # Smooth gradients plus blobs: photo-like enough for a few iterations.
        yy, xx = np.mgrid[0:size, 0:size] / size
        img = np.stack([yy * 255, xx * 255, (1 - yy) * 128 + rng.integers(0, 60)], -1)
        img[rng.integers(0, size // 2):, rng.integers(0, size // 2):] *= 0.4
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return folder


def tiny_loss_network() -> nn.Module:
    """A small fixed random conv stack standing in for VGG-16 (no download in tests)."""
    torch.manual_seed(1)
    layers = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                           nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
    return train_style.FeatureTaps(layers, {"relu1_2": 3, "relu2_2": 6})


def style_args(tmp_path, **over):
    args = train_style.build_parser().parse_args([
        "--style", str(photos(tmp_path / "style", n=1, seed=9) / "p0.png"), "--content", str(photos(tmp_path / "c")),
        "--output", str(tmp_path / "out" / "painting.pth"), "--image-size", "32", "--iterations", "40",
        "--batch-size", "2", "--width", "4", "--blocks", "1", "--lr", "1e-2", "--device", "cpu",
        "--content-weight", "1e3", "--style-weight", "1e8", "--log-every", "10"])
    return argparse.Namespace(**(vars(args) | over))


def test_painting_training_losses_fall_and_the_checkpoint_loads(tmp_path):
    args = style_args(tmp_path)
    history = train_style.train(args, loss_net=tiny_loss_network())["history"]
    first = np.mean([h["total"] for h in history[:5]])
    last = np.mean([h["total"] for h in history[-5:]])
    assert last < first * 0.85, (first, last)
    _, info = load_model(args.output)
    assert (info.width, info.blocks) == (4, 1)
    assert info.sidecar["style"]["kind"] == "painting" and len(info.sidecar["style"]["sha256"]) == 64


def test_no_loss_network_weights_is_a_clear_error_never_random_weights(tmp_path):
    with pytest.raises(train_style.LossNetworkError, match="no VGG-16 weights"):
        train_style.vgg16_features(None, allow_download=False)
    bad = tmp_path / "vgg.pth"
    torch.save({"0.weight": torch.zeros(1)}, bad)
    with pytest.raises(train_style.LossNetworkError, match="vgg.pth: not torchvision VGG-16 weights"):
        train_style.vgg16_features(str(bad), allow_download=False)


def test_a_local_vgg_weights_file_is_used(tmp_path):
    from torchvision.models import vgg16

    torch.manual_seed(3)
    net = vgg16(weights=None)
    path = tmp_path / "vgg16-local.pth"
    torch.save(net.state_dict(), path)
    features = train_style.vgg16_features(str(path), allow_download=False)
    assert torch.equal(features[0].weight, net.features[0].weight)


def test_filter_training_l1_falls(tmp_path):
    args = train_filter.build_parser().parse_args([
        "--output", str(tmp_path / "f.pth"), "--images", str(photos(tmp_path / "imgs", n=3, size=96)),
        "--iterations", "40", "--crop", "64", "--batch-size", "2", "--width", "4", "--blocks", "1",
        "--lr", "1e-2", "--log-every", "20"])
    losses = train_filter.train(args)["losses"]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) * 0.8
    assert load_model(tmp_path / "f.pth")[1].sidecar["style"]["filter"] == "pop-art"


def test_a_shift_by_whole_pixels_moves_the_image_exactly():
    x = torch.rand(2, 3, 16, 20)
    moved = train_filter.translate(x, torch.tensor([[2.0, 0.0], [0.0, -3.0]]))
    assert torch.allclose(moved[0, :, :, 2:], x[0, :, :, :-2], atol=1e-5)  # right by 2
    assert torch.allclose(moved[1, :, :-3], x[1, :, 3:], atol=1e-5)  # up by 3


def test_stability_training_makes_the_model_agree_with_itself_under_small_moves(tmp_path):
    """The same fine-tuning with and without the consistency loss: with it, the output for a
    moved, noisy input is closer to the moved output; the sidecar says how the model was made."""
    torch.manual_seed(0)
    base = tmp_path / "base.pth"
    torch.save(train_filter.TransformerNet(width=4, blocks=1).state_dict(), base)
    images = photos(tmp_path / "imgs", n=3, size=96)

    def fine_tune(name: str, *extra: str):
        args = train_filter.build_parser().parse_args([
            "--output", str(tmp_path / name), "--images", str(images), "--iterations", "80", "--crop", "64",
            "--batch-size", "2", "--lr", "1e-2", "--log-every", "40", "--init", str(base), *extra])
        train_filter.train(args)
        return load_model(tmp_path / name)

    plain, _ = fine_tune("plain.pth")
    steady, info = fine_tune("steady.pth", "--stability", "5")
    x = torch.from_numpy(np.stack([np.asarray(Image.open(p)) for p in sorted(images.iterdir())])) \
        .permute(0, 3, 1, 2).float()

    def inconsistency(model):
        torch.manual_seed(1)
        with torch.no_grad():
            return train_filter.stability_loss(model, x, model(x), max_shift=2, noise=3).item()
    assert inconsistency(steady) < inconsistency(plain) * 0.8
    made = info.sidecar["training"]
    assert made["init"] == str(base) and made["stability"]["weight"] == 5 and made["held_out_l1"] > 0


def test_the_builtin_model_visibly_stylizes_a_held_out_photo():
    from pathlib import Path

    import skimage

    photo = np.array(Image.open(Path(skimage.__file__).parent / "data" / train_filter.HELD_OUT).convert("RGB"))
    model, info = load_model("pop-art")
    assert train_filter.HELD_OUT not in info.sidecar["training"]["images"]
    out = stylize_image(model, photo).astype(float)
    assert np.abs(out - photo).mean() > 30  # clearly changed
    assert out.std() > 25  # not flat
    target = train_filter.pop_art(photo).astype(float)
    assert np.abs(out - target).mean() < np.abs(photo - target).mean() * 0.9  # and towards the style
