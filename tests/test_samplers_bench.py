"""The sampler benchmark's pieces: metrics, the fast exact mixture denoiser, the diffusers driver, the harness."""

import json
import math

import pytest
import torch

from torchdiffusion.analytic import IsotropicGaussian, anisotropic_mixture, eight_gaussians
from torchdiffusion.bench.fast_mixture import FastMixtureDenoiser
from torchdiffusion.bench.metrics import energy_distance, random_directions, sliced_wasserstein


def test_fast_mixture_denoiser_is_the_exact_one():
    for mix in (eight_gaussians(), anisotropic_mixture(dim=8, k=4)):
        x = 2 * torch.randn(300, mix.dim, dtype=torch.float64)
        for sigma in (torch.full((300,), 0.01, dtype=torch.float64), torch.rand(300, dtype=torch.float64) * 5):
            assert torch.allclose(FastMixtureDenoiser(mix, chunk=128)(x, sigma), mix.denoise(x, sigma), atol=1e-10)


def test_sliced_wasserstein_and_energy_distance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    shift = torch.tensor([0.3, 0.0, 0.0], dtype=torch.float64)
    dirs = random_directions(3, 2000)
    assert sliced_wasserstein(x, x, dirs) == 0.0
    # A translation moves every projection by theta . v, so SW_1 = mean |theta . v|.
    assert sliced_wasserstein(x + shift, x, dirs) == pytest.approx((dirs.T @ shift).abs().mean().item(), rel=1e-9)
    y = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    assert energy_distance(x, y) < 0.01 < energy_distance(x + 3 * shift, y)
    assert sliced_wasserstein(x[:1000], y, dirs) < 0.1  # unequal sizes go through quantiles


def test_harness_runs_and_ranks(tmp_path):
    from torchdiffusion.bench.analytic_cases import run_analytic
    from torchdiffusion.bench.harness import BenchConfig, ranking, write_results

    cfg = BenchConfig(
        nfes=(5, 10),
        n=500,
        samplers=("euler", "dpmpp_2m"),
        grids=("karras", "tuned"),
        tuned_samplers=("dpmpp_2m",),
        tune_maxfev=30,
        fit_n=50,
        adaptive_tols=(1e-2,),
        diffusers=(),
    )
    rows = run_analytic("8gaussians", cfg, tmp_path / "grids", log=lambda m: None)
    assert (tmp_path / "grids" / "dpmpp_2m-nfe5.json").exists()
    ours = [r for r in rows if r.family == "torchdiffusion" and r.sampler != "adaptive"]
    assert len(ours) == 2 * 2 + 2 and all(r.nfe <= r.budget for r in ours)
    # The ranking is the geometric mean of each (sampler, grid)'s SW over the budgets, best first.
    rank = ranking(rows, cfg.nfes)
    for s, g, v in rank:
        sws = [r.sw for r in ours if (r.sampler, r.grid) == (s, g)]
        assert v == pytest.approx(math.sqrt(sws[0] * sws[1]), rel=1e-12)
    assert [v for _, _, v in rank] == sorted(v for _, _, v in rank) and len(rank) == 3
    # The tuned rows ran on the grids saved for them.
    tuned = {r.budget: r for r in ours if r.grid == "tuned"}
    saved = json.loads((tmp_path / "grids" / "dpmpp_2m-nfe5.json").read_text())["sigmas"]
    assert tuned[5].extra["sigmas"] == saved and len(saved) == 6
    write_results(rows, cfg, tmp_path / "out", "test")
    assert (tmp_path / "out" / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "out" / "results.md").read_text()
    best = min((r for r in ours if r.budget == 10), key=lambda r: r.sw)
    assert f"| 10 | {best.sw:.4f} | {best.sampler} / {best.grid} |" in md


def test_diffusers_driver_on_the_gaussian_oracle():
    pytest.importorskip("diffusers")
    from torchdiffusion.bench.diffusers_driver import sample_diffusers

    data = IsotropicGaussian(0.5, 0.7)
    x, calls = sample_diffusers("DPMSolverMultistep", data.denoise, (4000, 1), 20, seed=0)
    assert calls <= 20
    assert x.mean().item() == pytest.approx(0.5, abs=0.05) and x.std().item() == pytest.approx(0.7, abs=0.05)


def test_trained_run_against_ode_and_held_out_data(tmp_path):
    from torchdiffusion.bench.harness import BenchConfig
    from torchdiffusion.bench.run_case import run_trained
    from torchdiffusion.config import override
    from torchdiffusion.presets import get_preset
    from torchdiffusion.training import train

    cfg = override(get_preset("digits-test"), ["train.images=128", "data.holdout=40"])
    train(cfg, tmp_path / "run", progress=False)
    bench = BenchConfig(
        nfes=(3,),
        n=40,
        samplers=("euler", "euler_ancestral"),
        grids=("karras",),
        tuned_samplers=(),
        adaptive_tols=(),
        diffusers=(),
    )
    no_holdout = tmp_path / "run0"
    train(override(cfg, ["data.holdout=0"]), no_holdout, progress=False)
    for run_dir, reference in ((tmp_path / "run", "ode"), (tmp_path / "run", "data"), (no_holdout, "data")):
        rows = run_trained(
            str(run_dir), bench, tmp_path / "grids", ref_steps=4, reference=reference, log=lambda m: None
        )
        floor = [r for r in rows if r.family == "floor"]
        ours = {r.sampler: r for r in rows if r.family == "torchdiffusion"}
        assert len(floor) == 1 and math.isfinite(floor[0].sw) and set(ours) == {"euler", "euler_ancestral"}
        assert all(r.nfe == 3 and math.isfinite(r.sw) and r.energy >= 0 for r in ours.values())
        # Same grid and starting noise: the deterministic and the stochastic sampler land in different places.
        assert ours["euler"].extra["sigmas"] == ours["euler_ancestral"].extra["sigmas"]
        assert ours["euler"].sw != ours["euler_ancestral"].sw
    with pytest.raises(ValueError, match="reference"):
        run_trained(str(tmp_path / "run"), bench, reference="pixels", log=lambda m: None)
