"""The teaching picture of the shortcuts, on the 8-Gaussians toy with its exact denoiser as the teacher.

From one noise: the teacher's probability-flow path (curved), the path of a reflowed student (straighter: its
straightness S, straightness.py, drops) and the jump of a consistency-distilled student (one evaluation). The
students are small MLPs trained by ``train()`` with the reflow and consistency-distillation objectives, in
run folders under ``work`` (a temporary folder unless given).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from ..analytic import eight_gaussians
from ..config import ObjectiveConfig, RunConfig, override
from ..presets import get_preset
from ..types import NoiseSource
from .objectives import Consistency, Reflow
from .reflow import PAIR_SEED, save_pairs
from .straightness import straightness


class ExactTeacher:
    """The analytic 8-Gaussians denoiser in the interface the objectives take (``denoiser(cond) -> D``)."""

    def __init__(self):
        self.mixture = eight_gaussians()

    def denoiser(self, cond=None):
        return lambda x, sigma: self.mixture.denoise(x, sigma)


@dataclass
class ToyShortcuts:
    teacher: object  # ExactTeacher
    reflow: torch.nn.Module  # the reflowed student (a Precond)
    consistency: torch.nn.Module  # the consistency-distilled student (a Precond, boundary = consistency)
    sigma_max: float


def toy_config(images: int, seed: int) -> RunConfig:
    """toy-2d with a smaller MLP and a short schedule: a student in seconds to minutes on a CPU."""
    settings = [f"train.images={images}", "train.batch_size=512", "train.warmup_images=5000", "train.lr=2e-3"]
    settings += ["model.mlp_width=128", "model.mlp_depth=3", f"train.ema_halflife_images={max(1, images // 10)}"]
    settings += [f"train.seed={seed}", "train.checkpoint_every_images=0", "train.log_every_images=0"]
    return override(get_preset("toy-2d"), settings)


def _pairs(teacher: ExactTeacher, count: int, sigma_max: float, progress: bool) -> tuple[Tensor, Tensor]:
    """(x0, n): the teacher's Heun ODE sample (36 steps) from sigma_max n, for the pair seeds."""
    from ..samplers import sample_heun
    from ..schedules import karras_sigmas

    noise = NoiseSource(range(PAIR_SEED, PAIR_SEED + count), (2,), dtype=torch.float64).initial()
    x0 = sample_heun(teacher.denoiser(), noise * sigma_max, karras_sigmas(36, 0.002, sigma_max))
    return x0.float(), noise.float()


def train_toy_shortcuts(images: int = 300_000, *, work: str | Path | None = None, seed: int = 0, progress=False):
    """Train the reflowed and the consistency-distilled student of the exact 8-Gaussians teacher."""
    from ..data.base import TensorData
    from ..provenance import unrecorded
    from ..training import train

    # the students are trained and loaded in a folder of their own: a manifest of the picture drawn from them
    # names no run (reproduce trains them again), and none of their files
    with tempfile.TemporaryDirectory() as tmp, unrecorded():
        root = Path(work) if work is not None else Path(tmp)
        cfg = toy_config(images, seed)
        teacher, sigma_max = ExactTeacher(), cfg.diffusion.sigma_max
        x0, noise = _pairs(teacher, min(images, 20_000), sigma_max, progress)
        out_r = root / "reflow"
        out_r.mkdir(parents=True, exist_ok=True)
        save_pairs(out_r, x0, noise, None)
        # t ~ U(0, 1) (rectified flow's own draw): a straight path is learnt at every t, large sigma included
        rdiff = replace(cfg.diffusion, sigma_sampling="rf_uniform")
        rcfg = replace(cfg, diffusion=rdiff, objective=ObjectiveConfig(name="reflow", teacher="8gaussians (exact)"))
        rdata = TensorData(x0, kind="vector")
        train(rcfg, out_r, data=rdata, objective=Reflow(rcfg, None, out_r), progress=progress, raise_on_stop=True)
        o = ObjectiveConfig(name="consistency_distillation", teacher="8gaussians (exact)", ct_steps_start=40)
        o = replace(o, ct_steps_end=40)
        ccfg = replace(cfg, objective=o, diffusion=replace(cfg.diffusion, boundary="consistency"))
        total = -(-images // ccfg.train.batch_size)
        cd = Consistency(o, cfg.diffusion.sigma_min, sigma_max, total, teacher)
        data = TensorData(teacher.mixture.sample(20_000, torch.Generator().manual_seed(seed)).float(), kind="vector")
        train(ccfg, root / "consistency", data=data, objective=cd, progress=progress, raise_on_stop=True)
        from ..generate import load_run

        reflow, cons = load_run(out_r).model, load_run(root / "consistency").model
    return ToyShortcuts(teacher, reflow, cons, sigma_max)


def float64_denoiser(model):
    """A float32 network as a float64 denoiser (for the float64 path integration)."""
    return lambda x, sigma: model(x.float(), sigma.float()).double()


def toy_numbers(toy: ToyShortcuts, n: int = 512, seed: int = 0, steps: int = 48) -> dict:
    """Straightness S and length ratio of teacher and reflowed student over ``n`` noises (straightness.py)."""
    noise = NoiseSource(range(seed, seed + n), (2,)).initial()
    out = {}
    with torch.no_grad():
        for name, D in (("teacher", toy.teacher.denoiser()), ("reflow", float64_denoiser(toy.reflow))):
            st = straightness(D, noise.double(), toy.sigma_max, steps)
            out[name] = {"S": st.S, "length_ratio": st.length_ratio}
    return out
