"""Every registered sampler against exact answers: the common contract, convergence orders on the Gaussian
oracle, sigma's dtype, the settings registry, the adaptive solver and optimised grids. (Moments of the stochastic
samplers: test_samplers_variance.py; agreement with k-diffusion: test_samplers_reference.py.)"""

import math

import pytest
import torch

from torchdiffusion.analytic import IsotropicGaussian, eight_gaussians
from torchdiffusion.precond import Precond
from torchdiffusion.samplers import DETERMINISTIC, SAMPLERS, get_sampler, nfe, steps_for_nfe
from torchdiffusion.samplers.common import dpmpp_2m_weights, exp_weights, poly_integral_weights, unipc_weights
from torchdiffusion.schedules import exponential_sigmas, karras_sigmas
from torchdiffusion.types import NoiseSource

DATA = IsotropicGaussian(0.5, 0.7)
SMIN, SMAX = 0.002, 80.0


class OracleEps(torch.nn.Module):
    """A 'network' that predicts the exact eps for DATA given Precond's inputs (log-sigma conditioning)."""

    def forward(self, x_in, c_noise, cond=None):
        sigma = (4 * c_noise).exp().to(x_in.dtype)
        s = sigma.reshape((-1,) + (1,) * (x_in.ndim - 1))
        x = x_in * (1 + s**2).sqrt()
        return (x - DATA.denoise(x, sigma)) / s


# -- the common contract -----------------------------------------------------------------------------------


class CountingDenoiser:
    def __init__(self, D):
        self.D, self.calls = D, 0

    def __call__(self, x, sigma):
        assert sigma.shape == (x.shape[0],)
        self.calls += 1
        return self.D(x, sigma)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_common_contract(name, dtype):
    """Shape, dtype, determinism under per-image seeds, the NFE table, a wrapped (Precond) denoiser."""
    sig = karras_sigmas(6, SMIN, SMAX)
    D = Precond(OracleEps(), "eps", noise_conditioning="log_sigma").bind(None)

    def run(seeds, denoise):
        ns = NoiseSource(seeds, (2, 3), dtype=dtype)
        return get_sampler(name)(denoise, sig[0].item() * ns.initial(), sig, noise=ns)

    counter = CountingDenoiser(D)
    a = run([1, 2, 3], counter)
    assert a.shape == (3, 2, 3) and a.dtype == dtype
    assert torch.isfinite(a).all()
    assert torch.equal(a, run([1, 2, 3], D))  # same seeds, same samples
    expected = nfe(name, 6)
    if expected is not None:
        assert counter.calls == expected
    # The wrapped model is the exact denoiser in disguise: same answer as the plain oracle.
    b = run([1, 2, 3], DATA.denoise)
    assert torch.allclose(a.double(), b.double(), atol=1e-3 if dtype == torch.float32 else 1e-8)


def test_steps_for_nfe_fits_the_budget():
    assert steps_for_nfe("heun", 10) == 5 and nfe("heun", 5) == 9
    assert steps_for_nfe("dpmpp_3m", 10) == 10
    assert steps_for_nfe("pc", 9, corrector_steps=1) == 5
    assert nfe("langevin", 10) == 10 * 3 + 1 and nfe("langevin", 10, steps_per_level=2) == 21
    assert nfe("heun_sde", 4) == nfe("heun", 4) == 7
    with pytest.raises(ValueError):
        nfe("nope", 3)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_grid_or_setting_that_is_not_a_number_is_refused_by_every_sampler(name):
    """A NaN or infinite sigma in the grid, or a NaN setting, passes every comparison (``b >= a``, ``eta < 0`` are
    False for NaN) and gave NaN samples or a silently different sampler: refused, naming it."""
    from torchdiffusion.samplers import sampler_settings

    D = IsotropicGaussian(0.0, 0.7).denoise
    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for bad in (float("nan"), float("inf")):
        for grid in ([10.0, bad, 0.0], [bad, 1.0, 0.0]):
            with pytest.raises(ValueError, match="a sigma grid must be finite"):
                get_sampler(name)(D, x, torch.tensor(grid, dtype=torch.float64))
    grid = karras_sigmas(4, 0.01, 10.0).double()
    for key, default in sampler_settings(name).items():
        bad_values = {bool: [1, "yes"], int: [2.5, float("nan"), True], float: [float("nan"), float("-inf"), "1"]}
        for v in bad_values.get(type(default), []):
            with pytest.raises(ValueError, match=f"{key} must be"):
                get_sampler(name)(D, x, grid, **{key: v})


# -- convergence orders on the Gaussian oracle -------------------------------------------------------------


def _err(name, n, **knobs):
    g = torch.Generator().manual_seed(0)
    x0 = SMAX * torch.randn(128, 3, generator=g, dtype=torch.float64)
    sig = exponential_sigmas(n, SMIN, SMAX)[:-1]  # stop at sigma_min: the exact map is known there
    x = get_sampler(name)(DATA.denoise, x0, sig, **knobs)
    return (x - DATA.ode_solution(x0, SMAX, SMIN)).abs().max().item()


@pytest.mark.parametrize(
    "name,order,at_least",
    [
        ("euler", 1, False),
        ("ddim", 1, False),
        ("heun", 2, False),
        ("dpmpp_2m", 2, False),
        ("dpmpp_2s", 2, False),
        ("dpmpp_2m_exact", 2, False),
        ("dpmpp_2s_exact", 2, False),
        # The published 3M weighs its second divided difference by phi_3 where the Taylor term needs 2 phi_3
        # (common.dpmpp_3m_weights): on the Gaussian it converges at order ~2.3 here, the exact rule at >= 3.
        ("dpmpp_3m", 2, True),
        ("dpmpp_3m_exact", 3, True),
        ("lms", 3, True),
    ],
)
def test_convergence_order(name, order, at_least):
    """Global error at sigma_min against the exact ODE map, 32 and 64 steps uniform in log sigma."""
    e1, e2 = _err(name, 32), _err(name, 64)
    observed = math.log2(e1 / e2)
    # at_least: multistep rules of higher order whose error on the Gaussian's smooth denoiser falls faster.
    assert observed > order - 0.25 and (at_least or observed < order + 0.35), (e1, e2, observed)


@pytest.mark.parametrize("name", ["unipc_bh1", "unipc_bh2", "unipc"])
@pytest.mark.parametrize("p", [1, 2])
def test_unipc_order_is_p_plus_one(name, p):
    """UniPC-p (predictor of order p, corrector of order p + 1; Zhao et al. 2023 Thm. 3.3): the global error
    falls as h^(p + 1), published B(h) variants and the exact-weight rule alike."""
    e1, e2 = _err(name, 32, order=p), _err(name, 64, order=p)
    observed = math.log2(e1 / e2)
    assert p + 1 - 0.25 < observed < p + 1 + 0.35, (e1, e2, observed)


@pytest.mark.parametrize("name", ["unipc_bh1", "unipc_bh2"])
def test_unipc_order_three_beats_order_two(name):
    # Order 3 is limited by its lower-order warm-up steps on this grid (slope >= 2.5 from 32 to 64 steps),
    # but at every step count it is far more accurate than order 2.
    e1, e2 = _err(name, 32, order=3), _err(name, 64, order=3)
    assert math.log2(e1 / e2) > 2.4
    assert e1 < 0.1 * _err(name, 32, order=2)


def test_unipc_bh2_predictor_is_dpmpp_2m():
    """With B(h) = e^h - 1 the order-2 predictor is DPM-Solver++(2M) (rho = 1/2), and the order-1 corrector is
    the trapezoidal rule phi_1 (D_i + D_{i+1}) / 2 in lambda."""
    h, taus = 0.37, [0.0, -0.52]
    assert unipc_weights(h, taus, "bh2") == pytest.approx(dpmpp_2m_weights(h, taus))
    phi_1 = -math.expm1(-h)
    assert unipc_weights(h, [h, 0.0], "bh2", corrector=True) == pytest.approx([phi_1 / 2, phi_1 / 2])
    # Any variant reproduces a constant D exactly: the weights sum to phi_1.
    for variant in ("bh1", "bh2"):
        for nodes, corr in (([0.0, -0.3, -0.7], False), ([h, 0.0, -0.3, -0.7], True)):
            assert sum(unipc_weights(h, nodes, variant, corr)) == pytest.approx(phi_1)


def test_unipc_corrector_beats_its_predictor():
    # UniPC's predictor is the exact-integration multistep rule.
    assert _err("unipc", 16, order=2) < 0.75 * _err("dpmpp_2m_exact", 16)
    assert _err("unipc", 32) < _err("dpmpp_3m_exact", 32)


def test_exponential_weights_are_exact_for_polynomials():
    """sum_j w_j P(tau_j) equals int_0^h (1+eta) e^{-(1+eta)(h-tau)} P(tau) dtau for P of degree k - 1."""
    h, taus = 0.7, [0.0, -0.4, -1.1]
    for eta in (0.0, 1.0):
        c = 1 + eta
        w = exp_weights(h, taus, eta)
        P = lambda t: 1.0 - 2.0 * t + 0.5 * t**2
        tt = torch.linspace(0, h, 200_001, dtype=torch.float64)
        exact = torch.trapezoid(c * torch.exp(-c * (h - tt)) * P(tt), tt).item()
        assert sum(wj * P(t) for wj, t in zip(w, taus)) == pytest.approx(exact, rel=1e-8)
    assert exp_weights(1e-3, [0.0])[0] == pytest.approx(-math.expm1(-1e-3), rel=1e-12)
    assert sum(poly_integral_weights([3.0, 2.0, 1.0], 1.0, 0.5)) == pytest.approx(-0.5)


# -- stochastic samplers: test_samplers_variance.py checks their exact moments on the grid -------------------


def test_sigma_follows_the_dtype_of_x():
    """A float64 solve hands the denoiser float64 sigmas, so it matches the exact map to float64 rounding."""
    seen = []

    def D(x, sigma):
        seen.append(sigma.dtype)
        return DATA.denoise(x, sigma)

    x0 = SMAX * torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sig = karras_sigmas(7, SMIN, SMAX)
    out = get_sampler("euler")(D, x0, sig)
    assert set(seen) == {torch.float64}
    # Euler on the Gaussian, recomputed in float64 from its formula x' = D + (sigma'/sigma)(x - D).
    x = x0.clone()
    for a, b in zip(sig[:-1].tolist(), sig[1:].tolist()):
        d = DATA.mu + DATA.s**2 / (DATA.s**2 + a**2) * (x - DATA.mu)
        x = d + (b / a) * (x - d)
    assert (out - x).abs().max().item() < 1e-12


# -- the adaptive solver ---------------------------------------------------------------------------------------


def test_adaptive_meets_its_tolerance_and_reports_nfe():
    g = torch.Generator().manual_seed(0)
    x0 = SMAX * torch.randn(64, 3, generator=g, dtype=torch.float64)
    grid = torch.tensor([SMAX, SMIN], dtype=torch.float64)
    errs, nfes = [], []
    for tol in (1e-3, 1e-6):
        stats, counter = {}, CountingDenoiser(DATA.denoise)
        x = get_sampler("adaptive")(counter, x0, grid, rtol=tol, atol=tol, stats=stats)
        errs.append((x - DATA.ode_solution(x0, SMAX, SMIN)).abs().max().item())
        assert stats["nfe"] == counter.calls and stats["accepted"] >= 1
        nfes.append(stats["nfe"])
    assert errs[1] < errs[0] and nfes[1] > nfes[0]
    assert errs[1] < 1e-4


def test_adaptive_steps_each_image_on_its_own():
    """An image's sample depends on its own start only: the controller took every image's steps from the batch's
    worst error, so an image changed with the images beside it (by ~1e-2 in a digit run)."""
    from torchdiffusion.analytic import GaussianMixture

    mix = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0]], dtype=torch.float64), torch.tensor([0.05, 0.3]))
    g = torch.Generator().manual_seed(1)
    x0 = SMAX * torch.randn(6, 2, generator=g, dtype=torch.float64)
    grid = torch.tensor([SMAX, SMIN, 0.0], dtype=torch.float64)
    solve = get_sampler("adaptive")
    together = solve(mix.denoise, x0, grid, rtol=1e-2, atol=1e-2)
    for k in range(6):
        alone = solve(mix.denoise, x0[k : k + 1], grid, rtol=1e-2, atol=1e-2)
        assert (together[k] - alone[0]).abs().max().item() < 1e-9, k
    pair = solve(mix.denoise, x0[[0, 5]], grid, rtol=1e-2, atol=1e-2)
    assert (pair - together[[0, 5]]).abs().max().item() < 1e-9


# -- optimised grids -----------------------------------------------------------------------------------------


def test_optimised_grid_beats_its_start_on_unseen_noise(tmp_path):
    from torchdiffusion.samplers.optimize_grid import (
        fit_noise,
        grid_error,
        grid_path,
        load_grid,
        optimize_grid,
        reference_solution,
        save_grid,
    )

    mix = eight_gaussians()
    fit_x = fit_noise((2,), 200, seed=1, sigma_max=SMAX)
    grid, info = optimize_grid(
        mix.denoise,
        "dpmpp_2m",
        5,
        fit_x,
        reference_solution(mix.denoise, fit_x, SMAX, SMIN),
        sigma_max=SMAX,
        sigma_min=SMIN,
        maxfev=120,
    )
    assert len(grid) == 6 and grid[0] == SMAX and grid[-1] == 0 and bool((grid[1:] < grid[:-1]).all())
    assert info["rms"] <= info["rms_start"]
    eval_x = fit_noise((2,), 200, seed=7, sigma_max=SMAX)  # other seeds: the grid must generalise
    ref = reference_solution(mix.denoise, eval_x, SMAX, SMIN)
    assert grid_error(mix.denoise, "dpmpp_2m", grid, eval_x, ref) < grid_error(
        mix.denoise, "dpmpp_2m", karras_sigmas(5, SMIN, SMAX), eval_x, ref
    )
    path = grid_path(tmp_path, "dpmpp_2m", 5)
    save_grid(path, grid, {"nfe": 5})
    back, meta = load_grid(path)
    assert torch.equal(back, grid) and meta["nfe"] == 5
    path.write_text('{"sigmas": [1.0, 2.0, 0.0]}')
    with pytest.raises(ValueError):
        load_grid(path)


def test_a_grid_that_stops_short_restores_the_spread_the_last_denoising_step_removes():
    """Gaussian data N(0, s^2): the exact ODE maps x_T to x_T s / sqrt(s^2 + sigma_max^2). A two-step DDIM ends
    in D, which keeps s^2 / (s^2 + sigma_1^2) of the spread at sigma_1: for any sigma_1 its output's spread is at
    most half the exact one. Stopping the last step at sigma_end (a first-order step that keeps that much noise)
    makes the two-step map exact for some (sigma_1, sigma_end); the fit finds it."""
    from torchdiffusion.analytic import IsotropicGaussian
    from torchdiffusion.samplers.optimize_grid import final_step, fit_noise, optimize_grid

    data = IsotropicGaussian(0.0, 0.1)
    x_T = fit_noise((1,), 256, seed=1, sigma_max=SMAX)
    ref = data.ode_solution(x_T, SMAX, 0.0)
    kw = {"sigma_max": SMAX, "sigma_min": SMIN, "maxfev": 150}
    plain, info0 = optimize_grid(data.denoise, "ddim", 2, x_T, ref, **kw)
    short, info = optimize_grid(data.denoise, "ddim", 2, x_T, ref, final_step=True, objective="sw", **kw)
    assert info0["sigma_end"] == 0 and 0 < info["sigma_end"] < float(short[-2])
    spread = lambda grid, end: float(
        get_sampler("ddim")(final_step(data.denoise, float(grid[-2]), end), x_T, grid).std() / ref.std()
    )
    assert spread(plain, 0.0) < 0.55
    assert spread(short, info["sigma_end"]) == pytest.approx(1.0, abs=0.02)
    # the wrapper touches the last level only, and there it is the first-order step to sigma_end
    D = final_step(data.denoise, 0.5, 0.1)
    x = torch.randn(8, 1, dtype=torch.float64)
    assert torch.equal(D(x, torch.tensor(0.7)), data.denoise(x, torch.tensor(0.7)))
    d = data.denoise(x, torch.tensor(0.5))
    assert torch.allclose(D(x, torch.tensor(0.5)), d + 0.2 * (x - d))
    mixed = torch.tensor([0.5, 0.7] * 4, dtype=torch.float32)  # per example: only the rows at the last level move
    d = data.denoise(x, mixed)
    want = torch.where((mixed == 0.5)[:, None], d + 0.2 * (x - d), d)
    assert torch.allclose(D(x, mixed), want) and not torch.allclose(want, d)
    with pytest.raises(ValueError, match="stops short"):
        optimize_grid(data.denoise, "heun", 4, x_T, ref, final_step=True, **kw)  # D twice at the last level


def test_a_saved_sigma_end_is_checked(tmp_path):
    from torchdiffusion.samplers.optimize_grid import GridError, load_grid, save_grid

    grid = torch.tensor([80.0, 1.0, 0.1, 0.0], dtype=torch.float64)
    path = tmp_path / "unipc-nfe3.json"
    save_grid(path, grid, {"sampler": "unipc", "sigma_end": 0.03})
    assert load_grid(path)[1]["sigma_end"] == 0.03
    for meta in (
        {"sampler": "unipc", "sigma_end": 0.1},
        {"sampler": "unipc", "sigma_end": -1.0},
        {"sampler": "unipc", "sigma_end": "x"},
        {"sampler": "heun", "sigma_end": 0.03},
    ):
        save_grid(path, grid, meta)
        with pytest.raises(GridError) as e:
            load_grid(path)
        assert "sigma_end" in str(e.value) and "\n" not in str(e.value)


def test_deterministic_list_is_deterministic():
    sig = karras_sigmas(5, SMIN, SMAX)
    x = SMAX * torch.randn(4, 2, dtype=torch.float64)
    for name in DETERMINISTIC:
        a = get_sampler(name)(DATA.denoise, x, sig, noise=lambda: torch.randn(4, 2, dtype=torch.float64))
        b = get_sampler(name)(DATA.denoise, x, sig, noise=lambda: torch.randn(4, 2, dtype=torch.float64))
        assert torch.equal(a, b), name


# -- settings: one typed set, passed as is -------------------------------------------------------------------


@pytest.mark.parametrize(
    "alias,base,settings",
    [
        ("heun_sde", "heun", {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}),
        ("dpmpp_2m_sde", "dpmpp_2m", {"eta": 1.0}),
        ("dpmpp_3m_sde", "dpmpp_3m", {"eta": 1.0}),
        ("dpmpp_2s_sde", "dpmpp_2s", {"eta": 1.0}),
    ],
)
def test_named_settings_are_the_same_sampler(alias, base, settings):
    sig = karras_sigmas(6, SMIN, SMAX)

    def run(name, **kw):
        ns = NoiseSource([3, 4], (2,), dtype=torch.float64)
        return get_sampler(name)(DATA.denoise, sig[0].item() * ns.initial(), sig, noise=ns, **kw)

    assert SAMPLERS[alias].fn is SAMPLERS[base].fn
    assert torch.equal(run(alias), run(base, **settings))
    assert not torch.equal(run(alias), run(base))
    assert torch.equal(run(alias, **{k: 0.0 for k in settings if k != "s_noise"}), run(base))  # user settings win


def test_settings_are_checked_against_the_sampler():
    from torchdiffusion.samplers import resolve_settings, sampler_settings

    assert resolve_settings("heun", {"s_churn": 5.0, "eta": None}) == {"s_churn": 5.0}
    with pytest.raises(ValueError, match="has no setting 'eta'.*s_churn"):
        resolve_settings("heun", {"eta": 0.5})
    assert sampler_settings("langevin") == {"steps_per_level": 3, "step_lr": 1.0}
    assert sampler_settings("dpmpp_2m_sde") == {"eta": 1.0}


def test_default_grid_follows_the_process_and_caps_discrete_karras():
    """grid auto: a DDPM model's own timesteps when x0_hat is clamped, log-SNR for a continuous model; Karras and
    log-SNR grids of a discrete model start at DISCRETE_SIGMA_MAX, a continuous model's at its own sigma_max."""
    from torchdiffusion.bench.harness import GridModel, analytic_model
    from torchdiffusion.config import SampleConfig
    from torchdiffusion.generate import resolve_grid
    from torchdiffusion.schedules import DISCRETE_SIGMA_MAX, exponential_sigmas, make_sigmas

    ddpm, edm = analytic_model(), GridModel(0.002, 80.0)
    sig, rec = resolve_grid(ddpm, SampleConfig(steps=7), clamped=True)
    assert rec["grid"] == "uniform_t" and "sigma_cap" not in rec
    assert torch.equal(sig, make_sigmas("uniform_t", 7, 0, 0, discrete_sigmas=ddpm.process.sigmas))
    for sampler in ("unipc", "ddpm"):  # clamped: the whole sigma range whatever the sampler
        sig, rec = resolve_grid(edm, SampleConfig(sampler=sampler, steps=7), clamped=True)
        assert rec["grid"] == "exponential" and torch.equal(sig, exponential_sigmas(7, 0.002, 80.0))
    sig, rec = resolve_grid(edm, SampleConfig(sampler="ddpm", steps=7), clamped=False)
    assert rec["grid"] == "exponential" and torch.equal(sig, exponential_sigmas(7, 0.002, 80.0))
    sig, rec = resolve_grid(edm, SampleConfig(steps=7), clamped=False)  # unclamped, deterministic: down to 1 / n
    assert rec["sigma_low"] == 1 / 7 and torch.equal(sig, exponential_sigmas(7, 1 / 7, 80.0))
    assert ddpm.sigma_max > 150
    for kind in ("karras", "exponential"):
        for clamped in (True, False):
            sig = resolve_grid(ddpm, SampleConfig(grid=kind, steps=7), clamped=clamped)[0]
            assert float(sig[0]) == pytest.approx(DISCRETE_SIGMA_MAX) and sig[-2] == pytest.approx(ddpm.sigma_min)
    big = GridModel(0.002, 200.0)
    assert float(resolve_grid(big, SampleConfig(grid="karras", steps=7), clamped=False)[0][0]) == pytest.approx(200.0)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("sampler", ["ddpm", "dpmpp_2m_sde", "ddim:eta=1", "adaptive"])
def test_unclamped_auto_grid_of_a_stochastic_sampler_takes_the_model_s_timesteps_below_the_cap(schedule, sampler):
    """grid auto, x0_hat not clamped, a sampler that is not a deterministic grid walker (fresh noise, or adaptive):
    the trailing timesteps of the part of the table with sigma <= 80, so the grid never starts above
    DISCRETE_SIGMA_MAX; named grids and the clamped auto grid are the same as before."""
    from dataclasses import replace

    from torchdiffusion.bench.harness import GridModel
    from torchdiffusion.config import ConfigError, SampleConfig, SamplerSettings
    from torchdiffusion.generate import resolve_grid
    from torchdiffusion.process import DiscreteVP
    from torchdiffusion.schedules import DISCRETE_SIGMA_MAX, make_sigmas

    name, _, eta = sampler.partition(":eta=")
    settings = SamplerSettings(eta=float(eta)) if eta else SamplerSettings()
    base = SampleConfig(sampler=name, settings=settings)
    p = DiscreteVP(schedule, T=1000)
    model = GridModel(p.sigma_min, p.sigma_max, p)
    below = int((p.sigmas <= DISCRETE_SIGMA_MAX).sum())  # 991 (cosine), 930 (linear)
    assert p.sigma_max > DISCRETE_SIGMA_MAX and p.sigmas[below] > DISCRETE_SIGMA_MAX >= p.sigmas[below - 1]
    for steps in (1, 2, 5, 20, 100, below):
        sig, rec = resolve_grid(model, replace(base, steps=steps), clamped=False)
        assert rec["grid"] == "uniform_t" and rec["asked"] == "auto" and rec["sigma_cap"] == DISCRETE_SIGMA_MAX
        assert float(sig[0]) == float(p.sigmas[below - 1]) <= DISCRETE_SIGMA_MAX  # trailing: the top timestep
        assert sig[-1] == 0 and bool((sig[:-1] > sig[1:]).all()) and float(sig[-2]) >= p.sigma_min
        t = p.sigma_to_t(sig[:-1])
        assert torch.allclose(t, t.round(), atol=1e-6)  # the model's own timesteps, as on a clamped run
        assert rec["sigmas"] == sig.tolist()
        # the same steps on the part of the table below the cap, the spacing honoured
        assert torch.equal(sig, make_sigmas("uniform_t", steps, 0, 0, discrete_sigmas=p.sigmas[:below]))
        lead = resolve_grid(model, replace(base, steps=steps, spacing="leading"), clamped=False)[0]
        assert torch.equal(
            lead, make_sigmas("uniform_t", steps, 0, 0, discrete_sigmas=p.sigmas[:below], spacing="leading")
        )
        # clamped: exactly today's grid over the whole table (it starts at t = T - 1)
        full = resolve_grid(model, replace(base, steps=steps), clamped=True)[0]
        assert torch.equal(full, make_sigmas("uniform_t", steps, 0, 0, discrete_sigmas=p.sigmas))
        assert float(full[0]) == p.sigma_max
        named = replace(base, grid="uniform_t", steps=steps)  # a named grid is the user's: never capped
        assert torch.equal(resolve_grid(model, named, clamped=False)[0], full)
    with pytest.raises(ConfigError, match=f"at most {below} steps"):
        resolve_grid(model, replace(base, steps=below + 1), clamped=False)


@pytest.mark.parametrize("schedule", ["cosine", "linear", None])
def test_unclamped_auto_grid_of_an_ode_sampler_is_log_snr_down_to_one_over_n(schedule):
    """grid auto, x0_hat not clamped, a deterministic sampler: uniform in log-SNR from the model's sigma_max (80 for
    a DDPM table) down to max(sigma_min, 1 / n); plain UniPC takes order 2 there unless an order is set (the record
    says so and sampling_plan passes it on), other samplers get the grid alone; clamped runs are unchanged."""
    from dataclasses import replace

    from torchdiffusion.bench.harness import GridModel
    from torchdiffusion.config import SampleConfig, SamplerSettings
    from torchdiffusion.generate import resolve_grid, sampling_plan
    from torchdiffusion.process import DiscreteVP
    from torchdiffusion.samplers import UNIPC_AUTO_ORDER
    from torchdiffusion.schedules import DISCRETE_SIGMA_MAX, exponential_sigmas

    if schedule is None:
        model, top = GridModel(0.002, 40.0), 40.0
    else:
        p = DiscreteVP(schedule, T=1000)
        model, top = GridModel(p.sigma_min, p.sigma_max, p), DISCRETE_SIGMA_MAX
    for steps in (1, 2, 5, 10, 18, 100, 2000):
        low = min(max(model.sigma_min, 1 / steps), top / 2)
        for sampler in ("unipc", "dpmpp_2m", "euler", "heun", "ddim", "dpmpp_3m_exact"):
            sig, knobs, rec = sampling_plan(model, SampleConfig(sampler=sampler, steps=steps), clamped=False)
            assert rec["grid"] == "exponential" and rec["asked"] == "auto" and rec["sigma_low"] == low
            assert ("sigma_cap" in rec) == (schedule is not None) and rec["sigmas"] == sig.tolist()
            assert torch.equal(sig, exponential_sigmas(steps, low, top))
            assert knobs == ({"order": UNIPC_AUTO_ORDER} if sampler == "unipc" else {})
            assert rec.get("settings") == ({"order": UNIPC_AUTO_ORDER} if sampler == "unipc" else None)
        # an order the user sets is kept, and recorded as theirs
        mine = SampleConfig(steps=steps, settings=SamplerSettings(order=3))
        _, knobs, rec = sampling_plan(model, mine, clamped=False)
        assert knobs == {"order": 3} and "settings" not in rec
        # clamped: the process's own grid (no more steps than a DDPM table has), no order chosen for the user
        if schedule is None or steps <= 1000:
            _, knobs, rec = sampling_plan(model, SampleConfig(steps=steps), clamped=True)
            assert knobs == {} and "sigma_low" not in rec
            assert rec["grid"] == ("exponential" if schedule is None else "uniform_t")
        assert torch.equal(
            resolve_grid(model, replace(SampleConfig(steps=steps), grid="exponential"), clamped=False)[0],
            exponential_sigmas(steps, model.sigma_min, top),
        )  # a named grid keeps the full range


def test_the_unclamped_auto_plan_beats_the_model_s_timesteps_on_a_gaussian_mixture():
    """With an exact denoiser (a 3-D mixture of nine narrow modes), the plan a new unclamped run gets - UniPC of
    order 2 on log-SNR down to 1 / n - lands closer to exact samples than UniPC on the model's timesteps <= 80 (the
    auto grid before) at 5 and 10 steps, by the sliced Wasserstein distance over three starting noises."""
    from torchdiffusion.bench.analytic_cases import CASES
    from torchdiffusion.bench.fast_mixture import FastMixtureDenoiser
    from torchdiffusion.bench.harness import analytic_model
    from torchdiffusion.bench.metrics import SlicedReference, random_directions
    from torchdiffusion.config import SampleConfig
    from torchdiffusion.generate import sampling_plan
    from torchdiffusion.schedules import make_sigmas, unclamped_timesteps

    mix, model, n = CASES["narrow3"](), analytic_model(), 2000
    D = FastMixtureDenoiser(mix)
    sliced = SlicedReference(mix.sample(n, torch.Generator().manual_seed(2)), random_directions(mix.dim, 128))
    zs = [torch.randn(n, mix.dim, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in (0, 1, 2)]

    def sw(sigmas, **knobs):
        return sum(sliced.distance(get_sampler("unipc")(D, float(sigmas[0]) * z, sigmas, **knobs)) for z in zs) / 3

    for steps in (5, 10):
        sigmas, knobs, _ = sampling_plan(model, SampleConfig(steps=steps), clamped=False)
        before = make_sigmas("uniform_t", steps, 0, 0, discrete_sigmas=unclamped_timesteps(model.process.sigmas))
        assert sw(sigmas, **knobs) < 0.9 * sw(before)


class BiasedOracleEps(torch.nn.Module):
    """The exact eps of N(0, 1) data on a DDPM table (timestep conditioning), plus a constant error ``delta``: a
    network whose only fault is a small error in eps_hat, so x0_hat = x - sigma eps_hat is off by sigma delta."""

    def __init__(self, process, delta: float):
        super().__init__()
        self.process, self.delta, self.data = process, delta, IsotropicGaussian(0.0, 1.0)

    def forward(self, x_in, c_noise, cond=None):
        sigma = self.process.t_to_sigma(c_noise).to(x_in.dtype)
        s = sigma.reshape((-1,) + (1,) * (x_in.ndim - 1))
        x = x_in * (1 + s**2).sqrt()
        return (x - self.data.denoise(x, sigma)) / s + self.delta


def test_unclamped_x0_hat_stays_bounded_on_the_auto_grid():
    """An eps model with an error delta in eps_hat, on the cosine table (sigma_max 2.0e4), sampled by generate()
    as vectors (never clamped): x0_hat at the top of the auto grid is off by sigma_0 delta <= 80 delta, and with
    Euler the samples move by at most sigma_0 delta from the exact model's (each step adds (sigma_i - sigma_{i+1})
    delta, which later steps only shrink for Gaussian data). On the whole table, where a clamped run starts, both
    are hundreds of times larger."""
    from dataclasses import replace

    from torchdiffusion.config import SampleConfig
    from torchdiffusion.generate import generate, resolve_grid
    from torchdiffusion.process import DiscreteVP
    from torchdiffusion.schedules import DISCRETE_SIGMA_MAX

    p, delta = DiscreteVP("cosine", T=1000), 0.01
    exact, biased = (
        Precond(BiasedOracleEps(p, d), "eps", process=p, noise_conditioning="timestep") for d in (0.0, delta)
    )
    sample = SampleConfig(sampler="euler", steps=10)  # grid auto
    seeds, shape = list(range(64)), (4,)
    top = float(resolve_grid(exact, sample, clamped=False)[0][0])
    assert top <= DISCRETE_SIGMA_MAX
    x = NoiseSource(seeds, shape, dtype=torch.float64).initial() * top
    sigma = torch.full((len(seeds),), top, dtype=torch.float64)
    err = (biased(x, sigma) - exact(x, sigma)).abs()
    assert torch.allclose(err, torch.full_like(err, top * delta), rtol=1e-6)  # x0_hat off by sigma_0 delta exactly
    run = lambda model, sample: generate(model, seeds, sample, shape, device="cpu")  # noqa: E731
    moved = (run(biased, sample) - run(exact, sample)).abs().max()  # float32 samples
    assert 0 < float(moved) <= top * delta + 1e-5
    # the grid a clamped model gets (the whole table, from sigma 2.0e4): the same error is not contained
    whole = replace(sample, grid="uniform_t")
    assert resolve_grid(exact, whole, clamped=False)[0][0] == p.sigma_max
    wild = (run(biased, whole) - run(exact, whole)).abs().max()
    assert float(wild) > 10 * DISCRETE_SIGMA_MAX * delta


def test_fit_grid_is_never_worse_than_its_starts():
    """fit_grid (the cheap fit) keeps a caller's start grid when nothing beats it on the fit seed, so a tuned grid
    started from the model's own timesteps is at least as close to the accurate ODE solution as they are."""
    from torchdiffusion.bench.fast_mixture import FastMixtureDenoiser
    from torchdiffusion.bench.harness import analytic_model
    from torchdiffusion.samplers.optimize_grid import fit_grid, fit_noise, grid_error, reference_solution
    from torchdiffusion.schedules import make_sigmas

    D, m = FastMixtureDenoiser(eight_gaussians()), analytic_model()
    start = make_sigmas("uniform_t", 4, 0, 0, discrete_sigmas=m.process.sigmas)
    grid, info = fit_grid(
        D, "unipc", 4, (2,), sigma_max=float(start[0]), sigma_min=m.sigma_min, fit_n=32, maxfev=20, starts=(start,)
    )
    assert len(grid) == 5 and grid[0] == start[0] and grid[-1] == 0 and info["seconds"] >= 0
    x_T = fit_noise((2,), 32, 1, float(start[0]))
    ref = reference_solution(D, x_T, float(start[0]), m.sigma_min, tol=1e-4)
    assert info["rms"] <= grid_error(D, "unipc", start, x_T, ref) + 1e-12
    assert info["rms"] == pytest.approx(grid_error(D, "unipc", grid, x_T, ref))
    assert info["settings"] == {}


def test_fit_grid_fits_at_the_sampler_settings_it_is_given():
    """fit_grid(knobs=...) runs the sampler at those settings while fitting (UniPC at order 2: its error is the
    order-2 error of the grid, not the order-3 one) and returns them in ``info["settings"]`` to save with the grid."""
    from torchdiffusion.bench.fast_mixture import FastMixtureDenoiser
    from torchdiffusion.bench.harness import analytic_model
    from torchdiffusion.samplers.optimize_grid import fit_grid, fit_noise, grid_error, reference_solution

    D, m = FastMixtureDenoiser(eight_gaussians()), analytic_model()
    top = 80.0
    grid, info = fit_grid(
        D, "unipc", 5, (2,), sigma_max=top, sigma_min=m.sigma_min, fit_n=32, maxfev=30, knobs={"order": 2}
    )
    assert info["settings"] == {"order": 2}
    x_T = fit_noise((2,), 32, 1, top)
    ref = reference_solution(D, x_T, top, m.sigma_min, tol=1e-4)
    at2, at3 = (grid_error(D, "unipc", grid, x_T, ref, {"order": k}) for k in (2, 3))
    assert info["rms"] == pytest.approx(at2) and abs(at3 - at2) > 1e-3 * at2
