"""Base samplers against the exact Gaussian denoiser and ODE solution."""

import pytest
import torch

from torchdiffusion.analytic import IsotropicGaussian
from torchdiffusion.process import DiscreteVP
from torchdiffusion.samplers import SAMPLERS, get_sampler
from torchdiffusion.schedules import karras_sigmas, make_sigmas
from torchdiffusion.types import NoiseSource

DATA = IsotropicGaussian(0.5, 0.7)
SMIN, SMAX = 0.002, 80.0


def test_full_solve_to_zero_matches_exact_map():
    g = torch.Generator().manual_seed(0)
    x0 = SMAX * torch.randn(256, 3, generator=g, dtype=torch.float64)
    x = get_sampler("heun")(DATA.denoise, x0, karras_sigmas(64, SMIN, SMAX))
    # Second order: ~8e-3 at 64 steps for |x(sigma_max)| up to ~250 (relative ~3e-5).
    assert (x - DATA.ode_solution(x0, SMAX, 0.0)).abs().max().item() < 1e-2


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_ddpm_ancestral_reproduces_data_moments(variance):
    p = DiscreteVP("linear", T=1000)
    sig = make_sigmas("uniform_t", 1000, 0, 0, discrete_sigmas=p.sigmas)
    g = torch.Generator().manual_seed(1)
    x = sig[0].item() * torch.randn(20_000, 1, generator=g, dtype=torch.float64)
    out = get_sampler("ddpm")(
        DATA.denoise, x, sig, noise=lambda: torch.randn(x.shape, generator=g, dtype=x.dtype), variance=variance
    )
    assert out.mean().item() == pytest.approx(0.5, abs=0.02)
    assert out.std().item() == pytest.approx(0.7, abs=0.02)


def test_ddim_eta1_is_ddpm_with_posterior_variance():
    """Song et al. 2021, Sec. 4.1: eta = 1 makes DDIM the (respaced) DDPM ancestral sampler with beta~."""
    p = DiscreteVP("cosine", T=1000)
    sig = make_sigmas("uniform_t", 20, 0, 0, discrete_sigmas=p.sigmas, spacing="trailing")
    x = sig[0].item() * torch.randn(64, 3, dtype=torch.float64)
    outs = []
    for name, knobs in [("ddim", {"eta": 1.0}), ("ddpm", {"variance": "posterior"})]:
        g = torch.Generator().manual_seed(3)
        noise = lambda g=g: torch.randn(x.shape, generator=g, dtype=x.dtype)
        outs.append(get_sampler(name)(DATA.denoise, x, sig, noise=noise, **knobs))
    assert torch.allclose(outs[0], outs[1], rtol=1e-9, atol=1e-9)


def test_ddim_eta0_is_deterministic_and_converges_to_exact_map():
    p = DiscreteVP("linear", T=1000)
    sig = make_sigmas("uniform_t", 500, 0, 0, discrete_sigmas=p.sigmas, spacing="trailing")
    x = sig[0].item() * torch.randn(256, 2, dtype=torch.float64)
    out = get_sampler("ddim")(DATA.denoise, x, sig)
    exact = DATA.ode_solution(x, sig[0].item(), 0.0)
    assert (out - exact).abs().max().item() < 0.02


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_per_image_seeds_do_not_depend_on_batch(name):
    sig = karras_sigmas(6, SMIN, SMAX)

    def run(seeds):
        ns = NoiseSource(seeds, (4,), dtype=torch.float64)
        return get_sampler(name)(DATA.denoise, sig[0].item() * ns.initial(), sig, noise=ns)

    both = run([7, 11])
    alone = run([11])
    assert torch.equal(both[1], alone[0])
    assert not torch.equal(both[0], both[1])
