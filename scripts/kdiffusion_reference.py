"""Reference outputs of k-diffusion's samplers on an exact Gaussian-mixture denoiser, stored as a test fixture.

    python scripts/kdiffusion_reference.py                 # writes tests/data/kdiffusion_reference.npz
    python scripts/kdiffusion_reference.py --compare       # prints max |ours - k-diffusion| per sampler

Every sampler runs on the eight-Gaussians mixture (radius 2, std 0.05) with its exact float64 denoiser, from the
same starting points on the same float64 Karras grid (sigma 0.002..80, rho 7; 5 and 10 steps), and every
stochastic step draws the same stored unit noise, in order. ``tests/test_samplers_reference.py`` runs our
samplers on the stored inputs and compares with the stored outputs, so the suite needs no k-diffusion.

Only ``k_diffusion.sampling`` is imported (not the package's ``__init__``, which pulls in its models and
training code); the module-level imports that these samplers never call (torchdiffeq, torchsde, and torchvision
in ``k_diffusion.utils``) are replaced by empty stand-ins when they are not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

from torchdiffusion.analytic import eight_gaussians
from torchdiffusion.samplers import get_sampler
from torchdiffusion.schedules import karras_sigmas

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "kdiffusion_reference.npz"
STEPS = (5, 10)
B, DIM, SEED = 16, 2, 0

# case -> (our sampler, our settings, k-diffusion function, its arguments). DDIM in VE units is Euler (eta = 0)
# and Euler-ancestral (eta > 0); the exact-integration multistep rule is k-diffusion's 2M SDE "heun" solver.
CASES = {
    "euler": ("euler", {}, "sample_euler", {}),
    "heun": ("heun", {}, "sample_heun", {}),
    "heun_churn": ("heun", {"s_churn": 10.0, "s_noise": 1.003}, "sample_heun", {"s_churn": 10.0, "s_noise": 1.003}),
    "lms": ("lms", {}, "sample_lms", {"order": 4}),
    "ddim": ("ddim", {}, "sample_euler", {}),
    "ddim_eta1": ("ddim", {"eta": 1.0}, "sample_euler_ancestral", {"eta": 1.0}),
    "euler_ancestral": ("euler_ancestral", {}, "sample_euler_ancestral", {"eta": 1.0}),
    "dpmpp_2m": ("dpmpp_2m", {}, "sample_dpmpp_2m", {}),
    "dpmpp_2m_sde": ("dpmpp_2m_sde", {}, "sample_dpmpp_2m_sde", {"eta": 1.0, "solver_type": "midpoint"}),
    "dpmpp_3m": ("dpmpp_3m", {}, "sample_dpmpp_3m_sde", {"eta": 0.0}),
    "dpmpp_3m_sde": ("dpmpp_3m_sde", {}, "sample_dpmpp_3m_sde", {"eta": 1.0}),
    "dpmpp_2s": ("dpmpp_2s", {}, "sample_dpmpp_2s_ancestral", {"eta": 0.0}),
    "dpmpp_2s_sde": ("dpmpp_2s_sde", {}, "sample_dpmpp_2s_ancestral", {"eta": 1.0}),
    "dpmpp_2m_exact": ("dpmpp_2m_exact", {}, "sample_dpmpp_2m_sde", {"eta": 0.0, "solver_type": "heun"}),
    "dpmpp_2m_exact_eta1": (
        "dpmpp_2m_exact",
        {"eta": 1.0},
        "sample_dpmpp_2m_sde",
        {"eta": 1.0, "solver_type": "heun"},
    ),
}


def import_k_sampling():
    """``k_diffusion.sampling`` alone, without running the package's ``__init__``."""
    missing = [m for m in ("torchdiffeq", "torchsde", "torchvision") if importlib.util.find_spec(m) is None]
    for name in missing + (["torchvision.transforms"] if "torchvision" in missing else []):
        stub = types.ModuleType(name)
        stub.odeint, stub.BrownianInterval, stub.functional = None, object, None
        sys.modules[name] = stub
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        raise SystemExit("k-diffusion is not installed: pip install --no-deps k-diffusion")
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["k_diffusion"] = pkg
    import k_diffusion.sampling as K

    return K


def inputs() -> dict[str, np.ndarray]:
    g = torch.Generator().manual_seed(SEED)
    d = {"x_T": 80.0 * torch.randn(B, DIM, generator=g, dtype=torch.float64)}
    d["noise"] = torch.randn(2 * max(STEPS), B, DIM, generator=g, dtype=torch.float64)
    for n in STEPS:
        d[f"sigmas_{n}"] = karras_sigmas(n, 0.002, 80.0, 7.0)
    return {k: v.numpy() for k, v in d.items()}


def _queue(noise: np.ndarray):
    it = iter(torch.from_numpy(noise))
    return lambda *args, **kwargs: next(it).clone()


def run_k(K, case: str, inp: dict, n: int) -> np.ndarray:
    _, _, fn, kwargs = CASES[case]
    D = eight_gaussians().denoise
    draw = _queue(inp["noise"])
    x = torch.from_numpy(inp["x_T"]) * float(inp[f"sigmas_{n}"][0]) / 80.0
    sig = torch.from_numpy(inp[f"sigmas_{n}"])
    extra = {} if fn in ("sample_euler", "sample_heun", "sample_lms", "sample_dpmpp_2m") else {"noise_sampler": draw}
    randn_like = torch.randn_like
    torch.randn_like = lambda t, **kw: draw()  # k-diffusion's Heun draws its churn noise with randn_like
    try:
        return K.__dict__[fn](D, x, sig, disable=True, **kwargs, **extra).numpy()
    finally:
        torch.randn_like = randn_like


def run_ours(case: str, inp: dict, n: int) -> np.ndarray:
    name, settings, _, _ = CASES[case]
    D = eight_gaussians().denoise
    x = torch.from_numpy(inp["x_T"]) * float(inp[f"sigmas_{n}"][0]) / 80.0
    sig = torch.from_numpy(inp[f"sigmas_{n}"])
    return get_sampler(name)(D, x, sig, noise=_queue(inp["noise"]), **settings).numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--compare", action="store_true", help="print max |ours - k-diffusion| instead of writing")
    args = p.parse_args()
    K = import_k_sampling()
    inp = inputs()
    if args.compare:
        print("| case | our sampler, settings | k-diffusion | " + " | ".join(f"{n} steps" for n in STEPS) + " |")
        print("|---|---|---|" + "---|" * len(STEPS))
        for case, (name, settings, fn, kwargs) in CASES.items():
            errs = []
            for n in STEPS:
                try:
                    errs.append(f"{np.abs(run_ours(case, inp, n) - run_k(K, case, inp, n)).max():.2g}")
                except (ValueError, TypeError) as e:
                    errs.append(f"n/a ({str(e).splitlines()[0][:40]})")
            print(f"| {case} | {name} {settings or ''} | {fn} {kwargs or ''} | " + " | ".join(errs) + " |")
        return
    out = dict(inp)
    for case in CASES:
        for n in STEPS:
            out[f"{case}_{n}"] = run_k(K, case, inp, n)
    out["cases"] = np.array(json.dumps({c: [v[0], v[1]] for c, v in CASES.items()}))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
