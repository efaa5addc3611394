"""Parameterizations fed an oracle network reproduce the exact denoiser; losses match their textbook form."""

import math

import pytest
import torch
from torch import nn

from torchdiffusion.analytic import IsotropicGaussian
from torchdiffusion.losses import loss_weight, precond_loss, sample_sigmas
from torchdiffusion.precond import Precond
from torchdiffusion.process import DiscreteVP

MU, S = 0.3, 0.8
DATA = IsotropicGaussian(MU, S)


def _sigma_from_c_noise(c_noise, noise_conditioning, process):
    if noise_conditioning == "timestep":
        return process.t_to_sigma(c_noise.double())
    return (4 * c_noise.double()).exp()


class TextbookOracle(nn.Module):
    """Predicts each parameterization's *native* target from its textbook definition, for Gaussian data.

    It sees only what a real network sees (the scaled input x_in and c_noise) and computes
    E[x0 | x] by Bayes in VP units, then eps_hat, v_hat, x0_hat or EDM's F from their definitions -
    independently of Precond's coefficient table.
    """

    def __init__(self, param, noise_conditioning, process=None, sigma_data=0.5):
        super().__init__()
        self.param, self.nc, self.process, self.sd = param, noise_conditioning, process, sigma_data

    def forward(self, x_in, c_noise, cond=None):
        sigma = _sigma_from_c_noise(c_noise, self.nc, self.process).reshape(-1, 1).to(x_in.dtype)
        if self.param == "flow":  # x_in is the straight-path point x_t = (1 - t) x0 + t n (Liu et al. 2022)
            t = sigma / (1 + sigma)
            gain = (1 - t) * S**2 / ((1 - t) ** 2 * S**2 + t**2)  # Bayes: x_t | x0 ~ N((1 - t) x0, t^2)
            x0_hat = MU + gain * (x_in - (1 - t) * MU)
            return (x_in - (1 - t) * x0_hat) / t - x0_hat  # v_hat = E[n - x0 | x_t]
        if self.param == "edm":
            x = x_in * (sigma**2 + self.sd**2).sqrt()
        else:
            x = x_in * (1 + sigma**2).sqrt()  # x_in is x_vp for eps/x0/v
        ab = 1 / (1 + sigma**2)
        x_vp = x * ab.sqrt()
        # Bayes in VP units: x_vp = sqrt(ab) x0 + sqrt(1-ab) eps, x0 ~ N(MU, S^2).
        gain = ab.sqrt() * S**2 / (ab * S**2 + (1 - ab))
        x0_hat = MU + gain * (x_vp - ab.sqrt() * MU)
        eps_hat = (x_vp - ab.sqrt() * x0_hat) / (1 - ab).sqrt()
        if self.param == "eps":
            return eps_hat
        if self.param == "x0":
            return x0_hat
        if self.param == "v":
            return ab.sqrt() * eps_hat - (1 - ab).sqrt() * x0_hat  # Salimans & Ho 2022
        c_skip = self.sd**2 / (sigma**2 + self.sd**2)
        c_out = sigma * self.sd / (sigma**2 + self.sd**2).sqrt()
        return (x0_hat - c_skip * x) / c_out


@pytest.mark.parametrize("param", ["eps", "x0", "v", "edm", "flow"])
@pytest.mark.parametrize("nc", ["log_sigma", "timestep"])
def test_oracle_network_gives_exact_denoiser(param, nc):
    process = DiscreteVP("cosine", T=200) if nc == "timestep" else None
    model = Precond(TextbookOracle(param, nc, process), param, process=process, noise_conditioning=nc)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g, dtype=torch.float64) * 3
    lo, hi = (process.sigma_min, process.sigma_max) if process else (0.01, 80.0)
    sigma = torch.exp(torch.empty(64, dtype=torch.float64).uniform_(math.log(lo), math.log(hi), generator=g))
    D = model(x, sigma).double()
    exact = DATA.denoise(x, sigma)
    assert torch.allclose(D, exact, rtol=1e-8, atol=1e-8), (D - exact).abs().max()


def test_one_sigma_for_a_batch_is_each_samples_sigma():
    """A scalar or a (1,) sigma denoises every sample at that sigma (the network sees a (B,) noise input); a
    sigma of another length than the batch is refused rather than broadcast by accident."""
    model = Precond(TextbookOracle("edm", "log_sigma", None), "edm")
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    each = model(x, torch.full((6,), 2.5, dtype=torch.float64))
    for sigma in (2.5, torch.tensor(2.5), torch.tensor([2.5])):
        assert torch.equal(model(x, sigma), each)
    seen = []
    Precond(lambda x_in, c_noise, cond: seen.append(c_noise.shape) or x_in, "edm")(x, torch.tensor([2.5]))
    assert seen == [(6,)]
    with pytest.raises(ValueError, match=r"shape \(6,\) for 6 samples, got \(3,\)"):
        model(x, torch.ones(3))


def test_uniform_eps_loss_is_the_simplified_elbo():
    """w = 1/c_out^2 turns the x0-space loss into ||eps - eps_hat||^2 exactly (Ho et al. Eq. 14)."""
    net = nn.Linear(3, 3, dtype=torch.float64)

    class Net(nn.Module):
        def forward(self, x, c_noise, cond=None):
            return net(x) * (1 + c_noise[:, None])

    model = Precond(Net(), "eps")
    x0, noise = torch.randn(32, 3, dtype=torch.float64), torch.randn(32, 3, dtype=torch.float64)
    sigma = torch.rand(32, dtype=torch.float64) * 5 + 0.05
    loss = precond_loss(model, x0, sigma, noise, weighting="uniform")
    x_vp = (x0 + sigma[:, None] * noise) / (1 + sigma[:, None] ** 2).sqrt()
    eps_hat = Net()(x_vp, sigma.log() / 4)
    ref = ((eps_hat - noise) ** 2).mean(1)
    assert torch.allclose(loss, ref, rtol=1e-9), (loss / ref - 1).abs().max()


def test_weightings():
    s = torch.tensor([0.1, 1.0, 10.0])
    assert torch.allclose(loss_weight("uniform", s, parameterization="eps"), 1 / s**2)
    assert torch.allclose(loss_weight("uniform", s, parameterization="v"), (1 + s**2) / s**2)
    assert torch.allclose(loss_weight("uniform", s, parameterization="edm"), loss_weight("edm", s))
    assert torch.allclose(loss_weight("min_snr", s, gamma=5.0), torch.tensor([5.0, 1.0, 0.01]))
    with pytest.raises(ValueError):
        loss_weight("nope", s)


def test_sigma_sampling_distributions():
    g = torch.Generator().manual_seed(0)
    s = sample_sigmas("lognormal", 100_000, generator=g)
    assert s.log().mean().item() == pytest.approx(-1.2, abs=0.02)
    assert s.log().std().item() == pytest.approx(1.2, abs=0.02)
    p = DiscreteVP("linear", T=10)
    d = sample_sigmas("discrete", 10_000, generator=g, discrete_sigmas=p.sigmas)
    assert set(torch.unique(d).tolist()) == set(p.sigmas.float().tolist())
