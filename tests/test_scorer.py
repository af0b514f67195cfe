import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT

from scoring.checkpoint import load_model
from scoring.engine import Scorer, stylize_stream
from scoring.frames import TarFrameWriter, decode_image, encode_png, read_tar, tar_names
from scoring.transformer_net import TransformerNet, stylize_batch


def frames(n, h=30, w=42, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def write_tar(path, imgs):
    w = TarFrameWriter(path)
    for i, img in enumerate(imgs):
        w.write(f"{i:08d}.png", encode_png(img))
    w.close()
    return path


@pytest.mark.parametrize(("h", "w"), [(32, 32), (30, 42), (17, 9)])
def test_any_frame_size_comes_back_the_same_size(h, w):
    net = TransformerNet(width=4, blocks=1).eval()
    out = stylize_batch(net, torch.from_numpy(np.stack(frames(2, h, w))))
    assert out.shape == (2, h, w, 3) and out.dtype == torch.uint8


def test_engine_matches_a_plain_per_frame_loop(tiny_model):
    model, _ = load_model(tiny_model)
    imgs = frames(11, 32, 44)  # sides divisible by 4: where the plain network is defined unpadded
    got = {}
    encoded = [(f"{i}.png", encode_png(f)) for i, f in enumerate(imgs)]
    stats = stylize_stream(Scorer(model, torch.device("cpu")), encoded,
                           lambda n, d: got.__setitem__(n, decode_image(d)), batch_size=4)
    assert stats.frames == 11 and stats.names == [f"{i}.png" for i in range(11)]
    with torch.inference_mode():
        for i, img in enumerate(imgs):
            ref = model(torch.from_numpy(img).permute(2, 0, 1)[None].float())[0]
            ref = ref.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()
            assert np.abs(got[f"{i}.png"].astype(int) - ref.astype(int)).max() <= 1


def test_engine_failure_in_decoding_surfaces_instead_of_hanging(tiny_model):
    model, _ = load_model(tiny_model)
    bad = [("0.png", encode_png(frames(1)[0])), ("1.png", b"not a png")]
    with pytest.raises(Exception, match="cannot identify image"):
        stylize_stream(Scorer(model, torch.device("cpu")), bad, lambda n, d: None, batch_size=1)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "scoring", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_cli_stylizes_a_chunk_tar_keeping_names_and_order(tmp_path, tiny_model):
    src = write_tar(tmp_path / "in" / "frames.tar", frames(9))
    out = tmp_path / "out"
    r = run_cli("stylize", "--model", tiny_model, "--input", src.parent, "--output", out,
                "--batch-size", 4, "--result", out / "result.json")
    assert r.returncode == 0, r.stderr
    assert tar_names(out / "frames.tar") == tar_names(src) == [f"{i:08d}.png" for i in range(9)]
    result = json.loads((out / "result.json").read_text())
    assert result["frames"] == 9 and result["fps"] > 0
    assert json.loads(r.stdout.strip().splitlines()[-1].removeprefix("RESULT "))["frames"] == 9
    first = decode_image(next(read_tar(out / "frames.tar"))[1])
    assert first.shape == (30, 42, 3)


def test_cli_stylizes_a_folder_of_loose_images(tmp_path, tiny_model):
    src = tmp_path / "imgs"
    src.mkdir()
    for i, img in enumerate(frames(3)):
        (src / f"f{i}.png").write_bytes(encode_png(img))
    r = run_cli("stylize", "--model", tiny_model, "--input", src, "--output", tmp_path / "styled")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "styled").iterdir()) == ["f0.png", "f1.png", "f2.png"]
    r = run_cli("stylize", "--model", tiny_model, "--input", src, "--output", tmp_path / "deflated",
                "--png-level", 6)
    assert r.returncode == 0, r.stderr
    stored, deflated = (tmp_path / "styled" / "f0.png").read_bytes(), (tmp_path / "deflated" / "f0.png").read_bytes()
    assert stored != deflated and np.array_equal(decode_image(stored), decode_image(deflated))


def test_cli_names_a_bad_model_clearly(tmp_path):
    src = write_tar(tmp_path / "frames.tar", frames(1))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    r = run_cli("stylize", "--model", bad, "--input", src, "--output", tmp_path / "o.tar")
    assert r.returncode == 2 and "bad.pth: not a loadable PyTorch weights file" in r.stderr


def test_cli_preview_puts_before_and_after_side_by_side(tmp_path, tiny_model):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray(frames(1, 20, 30)[0]).save(photo)
    r = run_cli("preview", "--model", tiny_model, "--image", photo, "--output", tmp_path / "pv.png")
    assert r.returncode == 0, r.stderr
    with Image.open(tmp_path / "pv.png") as pv:
        assert pv.size == (60, 20)
        assert np.array_equal(np.asarray(pv)[:, :30], np.asarray(Image.open(photo)))


@pytest.mark.parametrize("level", [0, 1, 9])
@pytest.mark.parametrize(("h", "w"), [(1, 1), (17, 9), (30, 42)])
def test_png_writer_is_lossless_for_any_decoder(h, w, level):
    img = frames(1, h, w, seed=h)[0]
    img[0, 0], img[-1, -1] = 255, 0  # Up-filter differences that wrap around mod 256
    for frame in (img, np.asfortranarray(img)):  # the model's output is often a strided view
        data = encode_png(frame, level)
        assert np.array_equal(decode_image(data), img)  # Pillow
        ffmpeg = subprocess.run(["ffmpeg", "-v", "error", "-f", "png_pipe", "-i", "pipe:0", "-f", "rawvideo",
                                 "-pix_fmt", "rgb24", "pipe:1"], input=data, capture_output=True, timeout=60)
        assert ffmpeg.returncode == 0, ffmpeg.stderr  # what stitching reads them with
        assert np.array_equal(np.frombuffer(ffmpeg.stdout, np.uint8).reshape(h, w, 3), img)


def test_png_writer_levels_trade_bytes_for_time():
    yy, xx = np.mgrid[0:90, 0:160]
    smooth = np.stack([xx, yy, xx + yy], -1).astype(np.uint8)  # like video: neighbours alike
    stored, deflated = len(encode_png(smooth, 0)), len(encode_png(smooth, 1))
    assert stored > smooth.nbytes and deflated < stored / 4


def test_png_writer_refuses_what_is_not_an_rgb_frame():
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        encode_png(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        encode_png(np.zeros((4, 4, 3), np.float32))


def test_compiled_scorer_matches_eager(tmp_path, tiny_model):
    # Through the CLI, in its own process, as a chunk job runs it.
    src = write_tar(tmp_path / "in.tar", frames(3))
    outs = {}
    for mode in ("eager", "compiled"):
        r = run_cli("stylize", "--model", tiny_model, "--input", src, "--output", tmp_path / f"{mode}.tar",
                    *(["--compile"] if mode == "compiled" else []))
        assert r.returncode == 0, r.stderr
        outs[mode] = np.stack([decode_image(d) for _, d in read_tar(tmp_path / f"{mode}.tar")]).astype(int)
    assert ", compiled" in r.stdout and "running eager" not in r.stdout  # no silent fallback
    assert np.abs(outs["compiled"] - outs["eager"]).max() <= 1


def test_bf16_on_cpu_stays_close_to_fp32(tiny_model):
    model, _ = load_model(tiny_model)
    batch = np.stack(frames(2, 32, 44))
    fp32 = Scorer(model, torch.device("cpu"), "fp32")(batch).astype(int)
    bf16 = Scorer(model, torch.device("cpu"), "bf16")(batch).astype(int)
    assert np.abs(fp32 - bf16).mean() < 4


def test_precision_choices_are_checked():
    from scoring.engine import pick_precision

    cpu = torch.device("cpu")
    assert pick_precision("auto", cpu) == "fp32"
    with pytest.raises(ValueError, match="fp16 is for GPUs"):
        pick_precision("fp16", cpu)
    with pytest.raises(ValueError, match="precision must be one of"):
        pick_precision("int4", cpu)


def test_benchmark_runs_and_prints_every_figure(tmp_path, tiny_model):
    out = tmp_path / "figures.json"
    r = subprocess.run([sys.executable, "-m", "scoring.benchmark", "--model", str(tiny_model), "--size", "64x48",
                        "--frames", "4", "--rounds", "2", "--json", str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    figures = json.loads(out.read_text())
    for key in ("baseline_fps", "ceiling_fps", "engine_fps", "engine_vs_baseline", "engine_vs_ceiling",
                "deviation_mean_255", "deviation_max_255", "peak_memory", "resolution", "batch_size", "precision"):
        assert key in figures and key in r.stdout
    assert figures["engine_fps"] > 0 and figures["deviation_max_255"] <= 1  # fp32 engine == per-frame fp32
    assert all(len(r) == 2 for r in figures["rounds"].values())
    assert figures["engine_fps"] == max(figures["rounds"]["engine"])  # each figure is its best round
