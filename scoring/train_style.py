"""Train a TransformerNet on a painting: Johnson et al. (2016) perceptual losses.

Content loss on VGG-16 relu2_2, Gram-matrix style loss on relu1_2, relu2_2, relu3_3 and
relu4_3, and a total-variation loss, over a folder of content photos.

    vidstyle train-style --style starry.jpg --content photos/ --output starry.pth

The loss network's ImageNet weights come from torchvision's weights API (downloaded once into
the torch hub cache) or from a local file given with --vgg-weights; with neither, training
stops with an error: random loss-network weights would silently train nonsense.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from scoring.frames import IMAGE_SUFFIXES
from scoring.transformer_net import TransformerNet

VGG_LAYERS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
CONTENT_LAYER = "relu2_2"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class LossNetworkError(RuntimeError):
    """No usable loss-network weights."""


class FeatureTaps(nn.Module):
    """Runs a feature stack and returns the activations at the named indices (frozen)."""

    def __init__(self, features: nn.Sequential, taps: dict[str, int]) -> None:
        super().__init__()
        self.features = features[: max(taps.values()) + 1].eval().requires_grad_(False)
        self.taps = taps
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x`` in 0..255, as the TransformerNet produces it."""
        y, out, wanted = (x / 255 - self.mean) / self.std, {}, {v: k for k, v in self.taps.items()}
        for i, layer in enumerate(self.features):
            y = layer(y)
            if i in wanted:
                out[wanted[i]] = y
        return out


def vgg16_features(weights_file: str | None, allow_download: bool) -> nn.Sequential:
    from torchvision.models import VGG16_Weights, vgg16

    if weights_file:
        path = Path(weights_file)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise LossNetworkError(f"{path}: not a loadable VGG-16 weights file ({exc})") from exc
        model = vgg16(weights=None)
        # Accept a whole torchvision VGG-16 state_dict or just its "features" part.
        state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
        try:
            model.features.load_state_dict(state)
        except RuntimeError as exc:
            raise LossNetworkError(f"{path}: not torchvision VGG-16 weights ({exc})") from exc
        return model.features
    if not allow_download:
        raise LossNetworkError("no VGG-16 weights: pass --vgg-weights FILE (torchvision's vgg16-397923af.pth) "
                               "or allow the download with --download-vgg")
    try:
        return vgg16(weights=VGG16_Weights.IMAGENET1K_V1).features
    except Exception as exc:
        raise LossNetworkError(f"could not get VGG-16 weights from torchvision ({exc}); "
                               "download vgg16-397923af.pth elsewhere and pass --vgg-weights FILE") from exc


def gram(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    f = x.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def total_variation(y: torch.Tensor) -> torch.Tensor:
    return (y[..., 1:, :] - y[..., :-1, :]).abs().mean() + (y[..., :, 1:] - y[..., :, :-1]).abs().mean()


def content_images(folder: Path) -> list[Path]:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no content images in {folder}")
    return paths


def load_rgb(path: Path, transform) -> torch.Tensor:
    with Image.open(path) as img:
        return transform(img.convert("RGB")) * 255


def train(args: argparse.Namespace, loss_net: nn.Module | None = None) -> dict:
    """Returns the loss history; ``loss_net`` lets tests supply a tiny network (no download)."""
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    if loss_net is None:
        loss_net = FeatureTaps(vgg16_features(args.vgg_weights, args.download_vgg), VGG_LAYERS)
    loss_net = loss_net.to(device)
    crop = transforms.Compose([transforms.RandomResizedCrop(args.image_size, scale=(0.3, 1.0)), transforms.ToTensor()])
    photos = content_images(Path(args.content))
    style_img = load_rgb(Path(args.style), transforms.Compose([
        transforms.Resize(args.style_size or args.image_size), transforms.ToTensor()])).unsqueeze(0).to(device)
    with torch.no_grad():
        style_grams = {k: gram(v) for k, v in loss_net(style_img).items()}

    model = TransformerNet(width=args.width, blocks=args.blocks).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    history, start = [], time.perf_counter()
    for it in range(1, args.iterations + 1):
        x = torch.stack([load_rgb(random.choice(photos), crop) for _ in range(args.batch_size)]).to(device)
        y = model(x)
        fy, fx = loss_net(y), loss_net(x)
        content = nn.functional.mse_loss(fy[CONTENT_LAYER], fx[CONTENT_LAYER].detach())
        style = sum(nn.functional.mse_loss(gram(fy[k]), g.expand(len(x), -1, -1)) for k, g in style_grams.items())
        tv = total_variation(y)
        loss = args.content_weight * content + args.style_weight * style + args.tv_weight * tv
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append({"content": content.item(), "style": style.item(), "tv": tv.item(), "total": loss.item()})
        if it % args.log_every == 0 or it == args.iterations:
            rate = it / (time.perf_counter() - start)
            print(f"iter {it}/{args.iterations}  content {args.content_weight * content.item():.1f}  "
                  f"style {args.style_weight * style.item():.1f}  tv {args.tv_weight * tv.item():.1f}  "
                  f"{rate:.2f} it/s  ETA {(args.iterations - it) / rate / 60:.1f} min", flush=True)
    save(model.cpu(), args)
    return {"history": history}


def save(model: TransformerNet, args: argparse.Namespace) -> None:
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    sidecar = {
        "architecture": {"name": "TransformerNet", "width": args.width, "blocks": args.blocks},
        "style": {"kind": "painting", "image": Path(args.style).name,
                  "sha256": hashlib.sha256(Path(args.style).read_bytes()).hexdigest()},
        "training": {k: v for k, v in vars(args).items() if k not in ("output", "style", "vgg_weights")},
    }
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2, default=str) + "\n")
    print(f"wrote {out}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scoring.train_style", description=__doc__.splitlines()[0])
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--style", required=True, help="the painting")
    p.add_argument("--content", required=True, help="folder of content photos (e.g. a COCO subset)")
    p.add_argument("--output", required=True)
    p.add_argument("--vgg-weights", help="local torchvision VGG-16 weights (vgg16-397923af.pth)")
    p.add_argument("--download-vgg", action="store_true", help="let torchvision download VGG-16 weights")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--style-size", type=int, default=0, help="style image short side (0: image size)")
    p.add_argument("--content-weight", type=float, default=1e5)
    p.add_argument("--style-weight", type=float, default=1e10)
    p.add_argument("--tv-weight", type=float, default=0.0)
    p.add_argument("--iterations", type=int, default=40000)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--device", default="auto", help="auto (a GPU when torch sees one), cpu, cuda, ...")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--log-every", type=int, default=100)


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    try:
        train(args)
    except (LossNetworkError, FileNotFoundError) as exc:
        print(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
