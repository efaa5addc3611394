"""`torchdiffusion bench-train` on a tiny U-Net: the report's numbers agree with each other and with the model."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

import pytest

from torchdiffusion.commands import bench_train
from torchdiffusion.config import ConfigError
from torchdiffusion.model import build_model
from torchdiffusion.nets import count_params
from torchdiffusion.presets import get_preset

TINY_BENCH = "--preset digits-test --shape 1,8,8 --batch-size 2 --warmup 0 --windows 1 --steps 1 --peak-size 64"


def run_bench_train(argv: str, tmp_path: Path) -> dict:
    """``torchdiffusion bench-train`` in-process on the given arguments; its JSON report."""
    p = argparse.ArgumentParser()
    bench_train.add_arguments(p)
    out = tmp_path / "bench.json"
    assert bench_train.run(p.parse_args([*argv.split(), "--out", str(out)])) == 0
    return json.loads(out.read_text())


def assert_consistent(report: dict) -> None:
    """Every row: images/s is the median of its windows, GFLOP/s = images/s x FLOPs per image, and the fractions
    of peak divide by the peaks the report measured."""
    gflop = {m: v["train_gflop_per_image"] for m, v in report["models"].items()}
    peaks = report["peaks_gflop_per_s"]
    for r in report["results"]:
        assert r["images_per_s"] == pytest.approx(statistics.median(r["windows"]))
        assert r["gflop_per_s"] == pytest.approx(r["images_per_s"] * gflop[r["model"]])
        assert r["fraction_of_peak"] == pytest.approx(r["gflop_per_s"] / peaks[f"peak_{r['precision']}"])
        assert r["fraction_of_matmul_peak"] == pytest.approx(r["gflop_per_s"] / peaks[f"matmul_{r['precision']}"])


def test_bench_train_report(tmp_path, capsys):
    report = run_bench_train(f"{TINY_BENCH} --precisions fp32 --no-diffusers", tmp_path)
    assert {r["layout"] for r in report["results"]} == {"contiguous", "channels_last"}
    assert report["shape"] == [1, 8, 8] and report["batch"] == 2 and report["diffusers"].startswith("skipped")
    assert_consistent(report)
    # The model measured is the preset's network: same parameter count. Its training FLOPs per image lie between
    # a dense layer's (2 forward + 4 backward per parameter) and every weight applied at every one of the 8 x 8
    # positions (a convolution at full resolution).
    params = count_params(build_model(get_preset("digits-test"), (1, 8, 8)).net)
    ours = report["models"]["torchdiffusion"]
    assert ours["params"] == params
    assert 6 * params <= ours["train_gflop_per_image"] * 1e9 <= 6 * params * 8 * 8
    best = report["best"]["torchdiffusion"]
    assert best["images_per_s"] == max(r["images_per_s"] for r in report["results"])
    assert "| torchdiffusion | fp32 | contiguous |" in capsys.readouterr().out
    with pytest.raises(ConfigError):
        run_bench_train("--shape 1,8 --no-diffusers", tmp_path)


@pytest.mark.slow
def test_bench_train_compile_rows(tmp_path):
    """--compile adds a torch.compile row per setting (~25 s of compiling for this tiny net)."""
    report = run_bench_train(
        f"{TINY_BENCH} --precisions fp32 --layouts channels_last --no-diffusers --compile", tmp_path
    )
    assert [r["compile"] for r in report["results"]] == [False, True]
    assert_consistent(report)
    if shutil.which("cc") or shutil.which("gcc"):  # the channels_last rows ran the fused GroupNorm kernel
        assert report["fused_group_norm"] == "built"


def test_diffusers_is_matched_and_run_on_the_folded_input_of_a_space_to_depth_unet():
    """With ``model.space_to_depth`` = 2 our U-Net runs on (4, H/2, W/2): diffusers' UNet2DModel is matched on that
    folded shape (its FLOPs counted there) and timed between the same pixel unshuffle and shuffle, so both take and
    return (1, H, W); the FLOPs agree within 15 % (matched on the unfolded shape, diffusers' top level would run
    at H x W and cost about twice ours)."""
    pytest.importorskip("diffusers")
    import torch

    from torchdiffusion.bench.train_step import contenders
    from torchdiffusion.config import ModelConfig

    cfg = ModelConfig(channels=16, channel_mult=(1, 2), attn_resolutions=(4,), head_channels=16, space_to_depth=2)
    models, note = contenders(cfg, (1, 16, 16), with_diffusers=True)
    assert note.startswith("matched within"), note
    d = models["diffusers"]
    assert d.config["space_to_depth"] == 2 and abs(d.flops / models["torchdiffusion"].flops - 1) <= 0.15
    net, forward = d.make()
    assert net.config.in_channels == 4 and tuple(net.config.sample_size) == (8, 8)
    x = torch.randn(2, 1, 16, 16)
    assert forward(net, x, torch.rand(2) * 999).shape == x.shape
