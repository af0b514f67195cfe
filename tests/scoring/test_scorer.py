import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from scoring.checkpoint import load_model
from scoring.chunk import SEGMENT_NAME, ChunkSpec
from scoring.engine import Scorer, stylize_stream
from scoring.frames import decode_image, encode_png
from scoring.transformer_net import TransformerNet, stylize_batch
from tests.support import ROOT, cut_chunks, make_video


def frames(n, h=30, w=42, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize(("h", "w"), [(32, 32), (30, 42), (17, 9)])
def test_any_frame_size_comes_back_the_same_size(h, w):
    net = TransformerNet(width=4, blocks=1).eval()
    out = stylize_batch(net, torch.from_numpy(np.stack(frames(2, h, w))))
    assert out.shape == (2, h, w, 3) and out.dtype == torch.uint8


def test_engine_matches_a_plain_per_frame_loop(tiny_model):
    model, _ = load_model(tiny_model)
    imgs = frames(11, 32, 44)  # sides divisible by 4: where the plain network is defined unpadded
    got = {}
    stats = stylize_stream(Scorer(model, torch.device("cpu")), enumerate(imgs), got.__setitem__, batch_size=4)
    assert stats.frames == 11 and list(got) == list(range(11))  # every frame, in order
    with torch.inference_mode():
        for i, img in enumerate(imgs):
            ref = model(torch.from_numpy(img).permute(2, 0, 1)[None].float())[0]
            ref = ref.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()
            assert np.abs(got[i].astype(int) - ref.astype(int)).max() <= 1


def test_engine_failure_in_decoding_surfaces_instead_of_hanging(tiny_model):
    model, _ = load_model(tiny_model)

    def decoding():
        yield 0, frames(1)[0]
        raise ValueError("cannot decode frame 1")

    with pytest.raises(ValueError, match="cannot decode frame 1"):
        stylize_stream(Scorer(model, torch.device("cpu")), decoding(), lambda k, f: None, batch_size=1)


def test_engine_failure_in_encoding_surfaces_instead_of_hanging(tiny_model):
    model, _ = load_model(tiny_model)

    def write(key, frame):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        stylize_stream(Scorer(model, torch.device("cpu")), enumerate(frames(20)), write, batch_size=2)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "scoring", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def chunk(tmp_path):
    """A real chunk folder: 30 frames of a 29.97 fps video, cut as the pipeline's split cuts it."""
    return cut_chunks(make_video(tmp_path / "v.mp4", seconds=1.0, size="64x48", audio=False), tmp_path / "chunks")[0]


def test_cli_stylizes_a_chunk_into_a_segment_with_the_chunks_timing(tmp_path, tiny_model, chunk):
    out = tmp_path / "out"
    r = run_cli("stylize", "--model", tiny_model, "--input", chunk, "--output", out, "--result", out / "result.json")
    assert r.returncode == 0, r.stderr
    spec = ChunkSpec.load(chunk)
    with av.open(str(out / SEGMENT_NAME)) as c:
        stream = c.streams.video[0]
        pts = sorted(p.pts * stream.time_base for p in c.demux(stream) if p.size)
        assert (stream.codec_context.name, stream.codec_context.width, stream.codec_context.height) == ("h264", 64, 48)
    assert pts == [p * Fraction(spec.time_base) for p in spec.pts]
    result = json.loads((out / "result.json").read_text())
    assert result["frames"] == 30 and result["fps"] > 0 and result["encoder"] == "libx264"
    assert result["bytes_in"] > 0 and result["bytes_out"] == (out / SEGMENT_NAME).stat().st_size + (
        (out / "preview.png").stat().st_size if (out / "preview.png").exists() else 0)
    assert result["total_seconds"] >= result["seconds"] > 0 and result["startup_seconds"] >= 0
    assert json.loads(r.stdout.strip().splitlines()[-1].removeprefix("RESULT "))["frames"] == 30


def test_the_same_chunk_twice_gives_the_same_bytes(tmp_path, tiny_model, chunk):
    runs = [run_cli("stylize", "--model", tiny_model, "--input", chunk, "--output", tmp_path / f"o{i}")
            for i in range(2)]
    assert all(r.returncode == 0 for r in runs)
    assert (tmp_path / "o0" / SEGMENT_NAME).read_bytes() == (tmp_path / "o1" / SEGMENT_NAME).read_bytes()


def test_the_chunk_holding_the_middle_frame_writes_the_before_and_after_preview(tmp_path, tiny_model, chunk):
    from PIL import Image

    assert ChunkSpec.load(chunk).preview == 15  # 30 frames, one chunk: the middle one is here
    assert run_cli("stylize", "--model", tiny_model, "--input", chunk, "--output", tmp_path / "o").returncode == 0
    with Image.open(tmp_path / "o" / "preview.png") as pv:
        assert pv.size == (960, 360)  # before | after, each 64x48 scaled to 360 lines


def test_cli_stylizes_a_folder_of_loose_images(tmp_path, tiny_model):
    src = tmp_path / "imgs"
    src.mkdir()
    for i, img in enumerate(frames(3)):
        (src / f"f{i}.png").write_bytes(encode_png(img))
    r = run_cli("stylize", "--model", tiny_model, "--input", src, "--output", tmp_path / "styled")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "styled").iterdir()) == ["f0.png", "f1.png", "f2.png"]
    r = run_cli("stylize", "--model", tiny_model, "--input", src, "--output", tmp_path / "stored", "--png-level", 0)
    assert r.returncode == 0, r.stderr
    stored, deflated = (tmp_path / "stored" / "f0.png").read_bytes(), (tmp_path / "styled" / "f0.png").read_bytes()
    assert len(stored) > len(deflated) and np.array_equal(decode_image(stored), decode_image(deflated))


def test_cli_names_a_bad_model_clearly(tmp_path, chunk):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    r = run_cli("stylize", "--model", bad, "--input", chunk, "--output", tmp_path / "o")
    assert r.returncode == 2 and "bad.pth: not a loadable PyTorch weights file" in r.stderr


def test_a_damaged_piece_is_refused_as_bad_input_naming_the_chunk_and_the_frame(tmp_path, tiny_model, chunk):
    piece = chunk / ChunkSpec.load(chunk).piece
    piece.write_bytes(piece.read_bytes()[: piece.stat().st_size // 3])  # the chunk's later frames are gone
    r = run_cli("stylize", "--model", tiny_model, "--input", chunk, "--output", tmp_path / "o")
    assert r.returncode == 2, r.stderr
    assert "chunk 1/1, frames 0-29" in r.stderr and "did not decode" in r.stderr
    assert not (tmp_path / "o" / SEGMENT_NAME).exists()  # no half-written segment left behind


def test_a_gpu_asked_for_where_there_is_none_fails_loudly_with_the_cause(tmp_path, tiny_model, chunk):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = run_cli("stylize", "--model", tiny_model, "--input", chunk, "--output", tmp_path / "o", "--device", "cuda")
    assert r.returncode == 1  # not "bad input": another node may have its GPU
    assert "--device cuda:" in r.stderr and ("CPU-only build" in r.stderr or "cannot use a GPU" in r.stderr
                                             or "finds no CUDA device" in r.stderr)
    assert not (tmp_path / "o").exists()


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
        assert ffmpeg.returncode == 0, ffmpeg.stderr
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


def test_compiled_scorer_matches_eager(tmp_path, tiny_model, chunk):
    # Through the CLI, in its own process, as a chunk job runs it.
    outs = {}
    for mode in ("eager", "compiled"):
        r = run_cli("stylize", "--model", tiny_model, "--input", chunk, "--output", tmp_path / mode,
                    *(["--compile", "--compile-min-pixels", "0"] if mode == "compiled" else []))
        assert r.returncode == 0, r.stderr
        with av.open(str(tmp_path / mode / SEGMENT_NAME)) as c:
            outs[mode] = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(int)
    assert ", compiled" in r.stdout and "running eager" not in r.stdout  # no silent fallback
    assert np.abs(outs["compiled"] - outs["eager"]).mean() < 1.5  # the same frames, through one encoder
    small = run_cli("stylize", "--model", tiny_model, "--input", chunk, "--output", tmp_path / "small", "--compile")
    assert small.returncode == 0 and "not compiling" in small.stdout and ", compiled" not in small.stdout


def test_bf16_on_cpu_stays_close_to_fp32(tiny_model):
    model, _ = load_model(tiny_model)
    batch = np.stack(frames(2, 32, 44))
    fp32 = Scorer(model, torch.device("cpu"), "fp32")(batch).astype(int)
    bf16 = Scorer(model, torch.device("cpu"), "bf16")(batch).astype(int)
    assert np.abs(fp32 - bf16).mean() < 4


def test_compiling_is_kept_for_chunks_big_enough_to_win_it_back():
    from scoring.engine import compile_pays

    assert compile_pays(240, 640, 360) and compile_pays(20, 1920, 1080)
    assert not compile_pays(8, 96, 64) and not compile_pays(30, 640, 360)


def cpu_flags() -> set[str]:
    """The CPU's feature flags as the Linux kernel lists them: an answer of its own, not torch's
    nor the scorer's (the machines this runs on, CI's included, are Linux)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    raise AssertionError("/proc/cpuinfo lists no flags")


def test_auto_precision_on_a_cpu_is_bf16_only_where_it_runs_natively(monkeypatch):
    from scoring.engine import pick_precision

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    native = bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})  # AVX-512 BF16, or AMX (Sapphire Rapids on)
    cpu = torch.device("cpu")
    assert pick_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert pick_precision("auto", cpu, compiled=True) == ("bf16" if native else "int8")


@pytest.mark.parametrize("cap", ["AVX2", "avx512_core", "AVX2_VNNI"])
def test_a_onednn_cap_below_bf16_makes_auto_int8_compiled_and_fp32_eager(monkeypatch, cap):
    """How a CPU without bf16 is measured on one with it: oneDNN capped below AVX-512 BF16 would
    emulate bf16, so auto must not choose it (on this project's bf16 machines it would). int8
    pays only compiled: eager, its quantize and dequantize steps run as plain float operations."""
    from scoring.engine import cpu_has_native_bf16, pick_precision

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert not cpu_has_native_bf16()
    assert pick_precision("auto", torch.device("cpu")) == "fp32"
    assert pick_precision("auto", torch.device("cpu"), compiled=True) == "int8"
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    native = cpu_has_native_bf16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")  # a cap at or above bf16 changes nothing
    assert cpu_has_native_bf16() == native


def test_precision_choices_are_checked():
    from scoring.engine import pick_precision

    cpu = torch.device("cpu")
    assert pick_precision("auto", cpu) in ("fp32", "bf16")
    with pytest.raises(ValueError, match="fp16 is for GPUs"):
        pick_precision("fp16", cpu)
    with pytest.raises(ValueError, match="precision must be one of"):
        pick_precision("int4", cpu)
    assert pick_precision("int8", cpu) == "int8"
    with pytest.raises(ValueError, match="int8 is for CPUs"):
        pick_precision("int8", torch.device("cuda"))


def test_int8_asked_for_eager_runs_fp32_and_says_so(tiny_model, capsys):
    scorer = Scorer(load_model(tiny_model)[0], torch.device("cpu"), "int8")
    assert scorer.precision == "fp32" and not scorer.compiled
    assert "int8 runs only compiled: running fp32" in capsys.readouterr().out


def test_benchmark_runs_and_prints_every_figure(tmp_path, tiny_model):
    out = tmp_path / "figures.json"
    r = subprocess.run([sys.executable, "-m", "scoring.benchmark", "--model", str(tiny_model), "--size", "64x48",
                        "--frames", "12", "--baseline-frames", "4", "--rounds", "2", "--json", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    figures = json.loads(out.read_text())
    for key in ("baseline_fps", "ceiling_fps", "chunk_fps", "chunk_steady_fps", "chunk_startup_seconds",
                "chunk_vs_baseline", "chunk_vs_ceiling", "deviation_mean_255", "deviation_max_255",
                "chunk_peak_rss", "resolution", "batch_size", "precision", "compiled", "cpu"):
        assert key in figures and key in r.stdout
    assert figures["chunk_fps"] > 0 and figures["deviation_max_255"] <= 1  # fp32 scorer == per-frame fp32
    assert all(len(v) == 2 for v in figures["rounds"].values())
    assert figures["chunk_fps"] == max(figures["rounds"]["chunk"])  # each figure is its best round
