"""Train a TransformerNet to reproduce a procedural pop-art filter (works fully offline).

The filter maps each image's *standardised* luminance onto a fixed palette: posterised bands
over a Kuwahara-smoothed image, with darkened edges. Instance normalisation in the network
hides global brightness and colour, so a filter defined on standardised luminance is one the
network can learn exactly; a filter that keeps each photo's own colours is not.

    vidstyle train-filter --output scoring/models/pop-art.pth
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from scoring.frames import IMAGE_SUFFIXES
from scoring.transformer_net import TransformerNet

# Deep navy, crimson, orange, pale yellow: dark to light.
PALETTE = np.array([[24, 22, 66], [196, 30, 88], [247, 148, 29], [255, 236, 160]], dtype=np.float32)
BAND_EDGES = np.array([-0.6, 0.15, 0.9], dtype=np.float32)
HELD_OUT = "chelsea.png"  # never trained on: used for the before/after image and the tests


def kuwahara(lum: np.ndarray, radius: int = 3) -> np.ndarray:
    """Edge-preserving smoothing: each pixel takes the mean of its least-varied quadrant."""
    size = radius + 1
    mean = ndimage.uniform_filter(lum, size, mode="reflect")
    sq = ndimage.uniform_filter(lum * lum, size, mode="reflect")
    var = sq - mean * mean
    h, w = lum.shape

    def quadrants(a: np.ndarray) -> np.ndarray:
        # The four windows ending at, or starting from, each pixel; edges padded, not wrapped.
        p = np.pad(a, radius, mode="edge")
        return np.stack([p[r:r + h, c:c + w] for r in (0, radius) for c in (0, radius)])

    means, variances = quadrants(mean), quadrants(var)
    return np.take_along_axis(means, variances.argmin(0)[None], 0)[0]


def pop_art(rgb: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> uint8 HxWx3 stylised image."""
    lum = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    smooth = kuwahara(lum)
    z = (smooth - smooth.mean()) / (smooth.std() + 1e-6)
    out = PALETTE[np.searchsorted(BAND_EDGES, z)]
    edges = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1))
    edges = np.clip(edges / (edges.std() * 3 + 1e-6), 0, 1)
    out *= (1 - 0.85 * edges)[..., None]
    return out.clip(0, 255).astype(np.uint8)


SKIMAGE_PHOTOS = ("astronaut.png", "coffee.png", "rocket.jpg", "ihc.png", "hubble_deep_field.jpg", "camera.png",
                  "coins.png", "grass.png", "gravel.png", "brick.png", "motorcycle_left.png", "color.png",
                  "clock_motion.png", "retina.jpg", "moon.png", "page.png")


def training_images(folder: Path | None = None, min_side: int = 160) -> dict[str, np.ndarray]:
    """Every photo in ``folder``; by default the photos inside the scikit-image wheel (no
    download), the held-out image excluded."""
    if folder is None:
        import skimage

        base = Path(skimage.__file__).parent / "data"
        paths = [base / n for n in SKIMAGE_PHOTOS]
    else:
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.name != HELD_OUT)
    images = {}
    for path in paths:
        if path.is_file():
            img = np.asarray(Image.open(path).convert("RGB"))
            if min(img.shape[:2]) >= min_side:
                images[path.name] = img
    if not images:
        raise FileNotFoundError(f"no training photos of at least {min_side} px found in {folder or 'scikit-image'}")
    return images


MIN_CROP_STD = 8.0  # flatter crops (black sky, blank paper) make instance norm divide by ~sqrt(eps)


def random_crops(pairs: list[tuple[np.ndarray, np.ndarray]], size: int, batch: int, rng: np.random.Generator):
    xs, ys = [], []
    while len(xs) < batch:
        src, dst = pairs[rng.integers(len(pairs))]
        h, w = src.shape[:2]
        top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        crop = src[top:top + size, left:left + size]
        if crop.std() < MIN_CROP_STD:
            continue
        xs.append(crop)
        ys.append(dst[top:top + size, left:left + size])
    to_t = lambda a: torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2).float()  # noqa: E731
    return to_t(xs), to_t(ys)


def translate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W) moved by its own (dx, dy) pixels, bilinear: a sub-pixel
    camera move, the kind of small change between video frames that makes a model flicker."""
    n, _, h, w = x.shape
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2], theta[:, 1, 2] = -2 * shift[:, 0] / w, -2 * shift[:, 1] / h
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def stability_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, max_shift: float, noise: float,
                   margin: int = 8) -> torch.Tensor:
    """Consistency on a crop, no video needed: the output for the input moved by a small random
    sub-pixel shift, with sensor-like noise, must be the output moved by the same shift (L1,
    away from the borders the shift fills in). ``y`` is ``model(x)``."""
    shift = (torch.rand(x.shape[0], 2) * 2 - 1) * max_shift
    moved = model(translate(x, shift) + torch.randn_like(x) * noise)
    inner = (slice(None), slice(None), slice(margin, -margin), slice(margin, -margin))
    return torch.nn.functional.l1_loss(moved[inner], translate(y, shift)[inner])


def held_out_l1(model: torch.nn.Module, names: tuple[str, ...] = (HELD_OUT,)) -> float:
    """The distillation loss (L1 to the filter, 0-255) on whole photos never trained on."""
    import skimage

    from scoring.transformer_net import stylize_image

    base, losses = Path(skimage.__file__).parent / "data", []
    for name in names:
        img = np.asarray(Image.open(base / name).convert("RGB"))
        out = stylize_image(model, img)
        losses.append(np.abs(out.astype(np.float32) - pop_art(img).astype(np.float32)).mean())
    return float(np.mean(losses))


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    images = training_images(Path(args.images) if args.images else None, args.crop)
    # Targets are computed on whole images once: the filter standardises per image.
    pairs = [(img, pop_art(img)) for img in images.values()]
    model = TransformerNet(width=args.width, blocks=args.blocks)
    if args.init:  # fine-tune: e.g. the built-in pop-art, for stability
        from scoring.checkpoint import load_model

        model, _ = load_model(args.init)
        model.train().requires_grad_(True)
        args.width, args.blocks = model.width, model.blocks
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.iterations)
    start, losses, stable_losses = time.perf_counter(), [], []
    for it in range(1, args.iterations + 1):
        x, y = random_crops(pairs, args.crop, args.batch_size, rng)
        out = model(x)
        loss = torch.nn.functional.l1_loss(out, y)
        if args.stability:
            stable = stability_loss(model, x, out, args.max_shift, args.noise)
            stable_losses.append(stable.item())
            loss = loss + args.stability * stable
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # Clipped, and a non-finite step is skipped: one bad batch must not ruin the run.
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        if torch.isfinite(loss) and torch.isfinite(norm):
            opt.step()
        else:
            print(f"iter {it}: non-finite loss or gradient, step skipped", flush=True)
        sched.step()
        losses.append(loss.item())
        if it % args.log_every == 0 or it == args.iterations:
            rate = it / (time.perf_counter() - start)
            eta = (args.iterations - it) / rate
            stable = f"  stability {np.mean(stable_losses[-args.log_every:]):.2f}" if stable_losses else ""
            print(f"iter {it}/{args.iterations}  loss {np.mean(losses[-args.log_every:]):.2f}{stable}  "
                  f"{rate:.2f} it/s  ETA {eta / 60:.1f} min", flush=True)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    sidecar = {
        "architecture": {"name": "TransformerNet", "width": args.width, "blocks": args.blocks},
        "style": {"kind": "procedural", "filter": "pop-art",
                  "filter_hash": hashlib.sha256(PALETTE.tobytes() + BAND_EDGES.tobytes()).hexdigest()[:16]},
        "training": {"iterations": args.iterations, "crop": args.crop, "batch_size": args.batch_size,
                     "lr": args.lr, "schedule": "cosine", "loss": "L1", "seed": args.seed,
                     "images": sorted(images), "final_loss": round(float(np.mean(losses[-50:])), 3),
                     "init": args.init, "stability": args.stability and {
                         "weight": args.stability, "max_shift_px": args.max_shift, "noise": args.noise,
                         "final": round(float(np.mean(stable_losses[-50:])), 3)},
                     "held_out_l1": round(held_out_l1(model.eval()), 3),
                     "seconds": round(time.perf_counter() - start)},
        "command": "vidstyle train-filter " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in sorted(vars(args).items()) if v is not None),
    }
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    print(f"wrote {out} ({math.ceil(out.stat().st_size / 1024)} KiB)")
    return {"losses": losses, "path": out}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scoring.train_filter", description=__doc__.splitlines()[0])
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", required=True)
    p.add_argument("--images", help="folder of training photos (default: scikit-image's bundled photos)")
    p.add_argument("--iterations", type=int, default=3000)
    p.add_argument("--crop", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--clip", type=float, default=20.0, help="gradient norm clip (typical norms: 5-15)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--init", help="start from this model (built-in name or checkpoint): fine-tuning")
    p.add_argument("--stability", type=float, default=0.0,
                   help="weight of the consistency loss (0: off); see stability_loss")
    p.add_argument("--max-shift", type=float, default=2.0, help="largest shift of the consistency loss, pixels")
    p.add_argument("--noise", type=float, default=3.0, help="noise of the consistency loss (std, 0-255 scale)")


def run(args: argparse.Namespace) -> int:
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(run(build_parser().parse_args()))
