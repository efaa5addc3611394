"""Our samplers against k-diffusion's, on numbers computed once by scripts/kdiffusion_reference.py.

The fixture holds the starting points, the float64 Karras grids (5 and 10 steps, sigma 0.002..80), the unit
noise every stochastic step draws (in order) and k-diffusion's outputs on the eight-Gaussians mixture's exact
denoiser. Each case names our sampler and settings; the outputs must agree to float64 rounding.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from torchdiffusion.analytic import eight_gaussians
from torchdiffusion.samplers import get_sampler

REF = np.load(Path(__file__).parent / "data" / "kdiffusion_reference.npz")
CASES = json.loads(str(REF["cases"]))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("steps", [5, 10])
def test_agrees_with_k_diffusion(case, steps):
    name, settings = CASES[case]
    sigmas = torch.from_numpy(REF[f"sigmas_{steps}"])
    x = torch.from_numpy(REF["x_T"]) * float(sigmas[0]) / 80.0
    draws = iter(torch.from_numpy(REF["noise"]))
    out = get_sampler(name)(eight_gaussians().denoise, x, sigmas, noise=lambda: next(draws).clone(), **settings)
    expected = REF[f"{case}_{steps}"]
    assert np.abs(out.numpy() - expected).max() < 1e-9 * max(1.0, np.abs(expected).max())


def test_the_exact_and_published_rules_differ():
    """The exact-integration variants are other rules: on 5 steps they land measurably elsewhere."""
    sigmas = torch.from_numpy(REF["sigmas_5"])
    x = torch.from_numpy(REF["x_T"])
    D = eight_gaussians().denoise
    for published, exact in (
        ("dpmpp_2m", "dpmpp_2m_exact"),
        ("dpmpp_3m", "dpmpp_3m_exact"),
        ("dpmpp_2s", "dpmpp_2s_exact"),
    ):
        gap = (get_sampler(published)(D, x, sigmas) - get_sampler(exact)(D, x, sigmas)).abs().max().item()
        assert gap > 0.01, (published, gap)
