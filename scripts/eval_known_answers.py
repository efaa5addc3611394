"""Measured errors of the evaluation estimators against known answers (the numbers quoted in docs/evaluation.md).

    .venv/bin/python scripts/eval_known_answers.py

Same oracles as tests/test_eval_*.py, with more samples: Fréchet distance vs scipy and vs the Gaussian
closed form, KID on identical distributions, bits/dim by the ODE (exact and Hutchinson trace) and by the VP
bound against the exact Gaussian log-likelihood, memorisation on copies vs fresh digits. One thread.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from torchdiffusion.analytic import GaussianMixture, IsotropicGaussian
from torchdiffusion.evaluation import likelihood as L
from torchdiffusion.evaluation import metrics as M
from torchdiffusion.evaluation.memorisation import memorisation_report
from torchdiffusion.process import DiscreteVP


def fd_checks() -> None:
    import scipy.linalg

    g = torch.Generator().manual_seed(0)
    errs = []
    for _ in range(5):
        a_ = torch.randn(64, 64, generator=g, dtype=torch.float64)
        b_ = torch.randn(64, 64, generator=g, dtype=torch.float64)
        a = M.FeatureStats(torch.randn(64, generator=g, dtype=torch.float64), a_ @ a_.T / 64, 2)
        b = M.FeatureStats(torch.randn(64, generator=g, dtype=torch.float64), b_ @ b_.T / 64, 2)
        ref = (
            float(((a.mu - b.mu) ** 2).sum())
            + np.trace(a.cov.numpy())
            + np.trace(b.cov.numpy())
            - 2 * np.trace(scipy.linalg.sqrtm(a.cov.numpy() @ b.cov.numpy()).real)
        )
        errs.append(abs(M.frechet_distance(a, b) - ref) / ref)
    print(f"FD vs scipy sqrtm (64-d, 5 random pairs): max relative error {max(errs):.2e}")
    Q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    la, lb = torch.rand(16, generator=g, dtype=torch.float64) + 0.1, torch.rand(16, generator=g, dtype=torch.float64)
    mu = torch.randn(16, generator=g, dtype=torch.float64)
    exact = float(mu @ mu + ((la.sqrt() - lb.sqrt()) ** 2).sum())
    a = M.FeatureStats(mu, Q @ torch.diag(la) @ Q.T, 0)
    b = M.FeatureStats(torch.zeros(16, dtype=torch.float64), Q @ torch.diag(lb) @ Q.T, 0)
    print(f"FD two Gaussians, closed form {exact:.6f}: population error {abs(M.frechet_distance(a, b) - exact):.2e}")
    for n in (1000, 10000, 50000):
        xa = mu + torch.randn(n, 16, generator=g, dtype=torch.float64) * la.sqrt() @ Q.T
        xb = torch.randn(n, 16, generator=g, dtype=torch.float64) * lb.sqrt() @ Q.T
        est = M.frechet_distance(M.FeatureStats.of(xa), M.FeatureStats.of(xb))
        print(f"  from n={n} samples each: {est:.5f} (error {est - exact:+.5f})")


def kid_checks() -> None:
    g = torch.Generator().manual_seed(1)
    vals, ses = [], []
    for _ in range(100):
        v, se = M.kid(torch.randn(500, 32, generator=g), torch.randn(500, 32, generator=g))
        vals.append(v)
        ses.append(se)
    v = torch.tensor(vals, dtype=torch.float64)
    print(
        f"KID identical N(0, I) 32-d, n=500, 100 repeats: mean {v.mean():+.2e} +- {v.std() / 10:.1e} "
        f"(s.e. of the mean); jackknife s.e. {np.mean(ses):.2e} vs spread across repeats {v.std():.2e}"
    )


def nll_checks() -> None:
    g = torch.Generator().manual_seed(2)
    D = 16
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    gm = GaussianMixture(
        0.3 * torch.randn(1, D, generator=g, dtype=torch.float64),
        (Q @ torch.diag(torch.linspace(0.05, 1.0, D, dtype=torch.float64)) @ Q.T)[None],
    )
    x = gm.sample(256, g)
    exact = -gm.log_prob(x, 0.002)
    for trace, steps in (("exact", 32), ("hutchinson", 32)):
        err = L.bits_per_dim(L.ode_nll(gm.denoise, x, steps=steps, trace=trace, generator=g) - exact, D)
        print(
            f"ODE bits/dim, anisotropic Gaussian D={D}, {trace} trace, {steps} RK4 steps, 256 points: "
            f"mean error {err.mean():+.5f} (s.e. {err.std() / 16:.5f}), max |error| {err.abs().max():.4f}"
        )
    s, mu, D = 0.5, 0.2, 64
    gauss = IsotropicGaussian(mu, s)
    x0 = gauss.sample((512, D), g)
    exact = 0.5 * ((x0 - mu) ** 2).sum(1) / s**2 + 0.5 * D * math.log(2 * math.pi * s**2)
    proc = DiscreteVP("cosine", 1000)
    ab = proc.alpha_bars
    ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
    v = (1 - ab_prev) / (1 - ab) * proc.betas + (ab_prev.sqrt() * proc.betas / (1 - ab)) ** 2 * s**2 * (1 - ab) / (
        ab * s**2 + 1 - ab
    )
    for name, var in (
        ("oracle reverse variance", lambda xt, t, x0h: v[t][:, None].to(xt.dtype)),
        ("large (beta_t)", "large"),
        ("small (beta~_t)", "small"),
    ):
        b = L.vp_bound_nll(gauss.denoise, proc, x0, variance=var, decoder="continuous", generator=g)
        err = L.bits_per_dim(b - exact, D)
        print(
            f"VP bound - exact NLL, N({mu}, {s}^2 I) D={D}, cosine T=1000, oracle mean, {name}: "
            f"{err.mean():+.5f} bits/dim (s.e. {err.std() / math.sqrt(len(err)):.5f})"
        )


def memorisation_checks() -> None:
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().images, dtype=torch.float32)[:, None] / 8 - 1
    train, fresh = x[:1500], x[1500:]
    g = torch.Generator().manual_seed(3)
    copies = train[torch.randint(0, 1500, (100,), generator=g)]
    copies = copies + 0.05 * torch.randn(copies.shape, generator=g)
    rc = memorisation_report(copies, train)
    rf = memorisation_report(fresh, train)
    print(
        f"memorisation (8x8 digits, ratio test d1/d2 < 1/3): copies flagged {rc['copy_fraction']:.3f}, "
        f"fresh held-out digits flagged {rf['copy_fraction']:.3f}"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.parse_args()
    torch.set_num_threads(1)
    fd_checks()
    kid_checks()
    nll_checks()
    memorisation_checks()
