"""Forward process: closed form vs the Markov chain, posterior, sigma <-> t, schedules."""

import math

import pytest
import torch

from torchdiffusion.process import DiscreteVP, alpha_bar_to_sigma, sigma_to_alpha_bar, ve_to_vp, vp_to_ve
from torchdiffusion.schedules import karras_sigmas, make_betas, make_sigmas, timestep_indices


@pytest.mark.parametrize("schedule", ["linear", "cosine", "sigmoid"])
def test_schedules_monotone_with_right_endpoints(schedule):
    p = DiscreteVP(schedule, T=500)
    assert torch.all(p.betas > 0) and torch.all(p.betas < 1)
    ab = p.alpha_bars
    assert torch.all(ab[1:] < ab[:-1])  # strictly decreasing signal
    assert ab[0] > 0.99  # almost clean at t = 1
    assert ab[-1] < 0.01  # almost pure noise at t = T
    assert torch.all(p.sigmas[1:] > p.sigmas[:-1])


def test_course_preset_endpoints():
    b = make_betas("linear", 500, beta_start=1e-4, beta_end=0.02)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    # Ho et al.: T = 1000 linear gives abar_T ~ 4e-5.
    assert DiscreteVP("linear", 1000).alpha_bars[-1].item() == pytest.approx(4.04e-5, rel=0.02)


def test_closed_form_matches_iterated_chain_moments():
    """q(x_t|x0) = N(sqrt(abar_t) x0, (1-abar_t) I) vs iterating q(x_t|x_{t-1}) from a fixed x0."""
    p = DiscreteVP("cosine", T=100)
    g = torch.Generator().manual_seed(1)
    n = 200_000
    x0 = torch.full((n,), 0.7, dtype=torch.float64)
    x = x0.clone()
    for t in range(p.T):
        x = p.q_step(x, torch.full((n,), t), torch.randn(n, generator=g, dtype=torch.float64))
        if t in (0, 10, 50, 99):
            ab = p.alpha_bars[t].item()
            assert x.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=5e-3)
            assert x.var().item() == pytest.approx(1 - ab, abs=5e-3)
    xc = p.q_sample(x0, torch.full((n,), p.T - 1), torch.randn(n, generator=g, dtype=torch.float64))
    assert xc.mean().item() == pytest.approx(x.mean().item(), abs=7e-3)


def test_posterior_is_bayes_rule_of_the_chain():
    """The posterior mean/var of q(x_{t-1}|x_t,x0) equals the Gaussian conditioning formula."""
    p = DiscreteVP("linear", T=50)
    t = torch.tensor([1, 10, 49])
    x0 = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    xt = torch.tensor([0.1, 0.5, -0.2], dtype=torch.float64)
    mean, var = p.posterior(xt, x0, t)
    for j in range(3):
        ab_prev = p.alpha_bars[t[j] - 1].item()
        beta = p.betas[t[j]].item()
        # prior x_{t-1} ~ N(sqrt(ab_prev) x0, 1 - ab_prev); likelihood x_t ~ N(sqrt(1-beta) x_{t-1}, beta)
        a = math.sqrt(1 - beta)
        prec = 1 / (1 - ab_prev) + a * a / beta
        m = (math.sqrt(ab_prev) * x0[j].item() / (1 - ab_prev) + a * xt[j].item() / beta) / prec
        assert mean[j].item() == pytest.approx(m, rel=1e-9)
        assert var[j].item() == pytest.approx(1 / prec, rel=1e-9)


def test_sigma_t_round_trip_and_conversions():
    p = DiscreteVP("linear", T=1000)
    t = torch.tensor([0.0, 1.5, 10.25, 500.0, 998.9, 999.0], dtype=torch.float64)
    assert torch.allclose(p.sigma_to_t(p.t_to_sigma(t)), t, atol=1e-9)
    assert torch.allclose(p.t_to_sigma(torch.arange(1000.0)), p.sigmas)
    s = torch.tensor([0.01, 1.0, 50.0], dtype=torch.float64)
    assert torch.allclose(alpha_bar_to_sigma(sigma_to_alpha_bar(s)), s)
    x = torch.randn(3, 4, dtype=torch.float64)
    assert torch.allclose(vp_to_ve(ve_to_vp(x, s), s), x)


def test_sampling_grids():
    s = karras_sigmas(10, 0.002, 80.0)
    assert len(s) == 11 and s[-1] == 0 and s[0].item() == pytest.approx(80.0) and s[-2].item() == pytest.approx(0.002)
    assert torch.all(s[1:] < s[:-1])
    e = make_sigmas("exponential", 5, 0.01, 10.0)
    r = e[:-2] / e[1:-1]
    assert torch.allclose(r, r[0].expand_as(r))  # uniform in log sigma
    p = DiscreteVP("linear", T=1000)
    assert timestep_indices(1000, 10, "trailing").tolist()[0] == 999
    assert timestep_indices(1000, 10, "leading").tolist() == list(range(900, -1, -100))
    assert timestep_indices(1000, 3, "linspace").tolist() == [999, 500, 0]
    u = make_sigmas("uniform_t", 10, 0, 0, discrete_sigmas=p.sigmas)
    assert u[0].item() == pytest.approx(p.sigmas[-1].item()) and u[-1] == 0
    with pytest.raises(ValueError):
        make_sigmas("karras", 0, 0.1, 1.0)
