"""The training objectives of few-step students (training/objective.py's hook): progressive distillation,
consistency distillation and training, distribution matching distillation, reflow. Each draws its noise levels
and computes its per-example loss from the formulas of progressive.py, consistency.py, dmd.py and reflow.py; a
teacher is a run folder (load_run).

Class-conditional teachers are distilled **with guidance at a fixed scale** (objective.guidance, the teacher's
default sample.guidance unless set): the teacher is the CFG denoiser at that w, the student is an ordinary
conditional model sampled at guidance 1, so its CFG wrapper still works but w is baked in.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from ..config import ConfigError, ObjectiveConfig, RunConfig
from ..losses import model_loss, precond_loss, training_sigmas
from ..precond import Precond
from ..process import add_noise
from ..training.objective import Denoising, Objective
from ..training.state import MicroBatch
from ..types import Denoiser
from . import consistency as cm
from . import dmd
from . import progressive as pd
from .reflow import load_pairs, reflow_noise


class Teacher:
    """A loaded teacher run as the denoiser the student learns from (guided at a fixed w, clamped like its sampler).

    ``autoguidance`` != 1 steers the teacher away from the guide model its run keeps (guide.safetensors), as
    sampling does: D_guide + w (D - D_guide), both clamped first."""

    def __init__(self, path: str | Path, guidance: float, device: torch.device, autoguidance: float = 1.0):
        from ..generate import clamps_x0, guide_of, load_run

        self.run = load_run(path, device=device)
        self.guidance = guidance
        self.autoguidance = float(autoguidance)
        self.clip = clamps_x0(self.run.config.sample, self.run.data_shape, self.run.codec)
        if self.autoguidance != 1.0 and guide_of(self.run.model) is None:
            raise ConfigError(
                f"{self.run.path} keeps no guide model (it was trained with train.guide_at=0): "
                f"autoguidance {self.autoguidance:g} needs one to steer the teacher away from; distil it without "
                "autoguidance"
            )

    def denoiser(self, cond: dict | None, clip: bool | None = None) -> Denoiser:
        """The teacher's denoiser; ``clip=False`` leaves out the clamping to [-1, 1] its sampler applies."""
        from ..generate import clamped, guide_of
        from ..guidance import autoguided, guided_denoiser

        clip = self.clip if clip is None else clip
        if cond is not None:
            cond = {k: v for k, v in cond.items() if k != "drop"}
        D = guided_denoiser(self.run.model, cond, scale=self.guidance)
        if self.autoguidance != 1.0:
            D_0 = guided_denoiser(guide_of(self.run.model), cond, scale=self.guidance)
            D = autoguided(clamped(D) if clip else D, clamped(D_0) if clip else D_0, self.autoguidance)
        return clamped(D) if clip else D

    def plan(self, steps: int, kind: str = "") -> tuple[Tensor, dict]:
        """(the teacher's DDIM grid of ``steps`` steps, its record): its own sample.grid (a student's grids/ file)
        unless ``kind`` names another, built as sampling builds it (a discrete model's Karras or log-SNR grid capped
        at sigma 80). A tuned grid's record may say it stops short of 0 (``sigma_end``, generate.stop_short).
        Without a tuned DDIM grid, a tuned Euler grid fitted with no sampler settings serves (a reflow student's):
        the teacher steps DDIM with eta = 0, which is the Euler step of the probability-flow ODE in sigma
        (optimize_grid.SAME_STEP), so it is the very solver that grid was made for."""
        from ..generate import resolve_grid
        from ..samplers.optimize_grid import NoTunedGrid

        sample = replace(self.run.config.sample, sampler="ddim", steps=steps, grid=kind or self.run.config.sample.grid)
        grid_dir = self.run.path / "grids"
        try:
            return resolve_grid(self.run.model, sample, clamped=self.clip, grid_dir=grid_dir)
        except NoTunedGrid:
            if sample.grid != "tuned":
                raise
            try:
                plan = resolve_grid(
                    self.run.model, replace(sample, sampler="euler"), clamped=self.clip, grid_dir=grid_dir
                )
            except NoTunedGrid:
                plan = None
            if plan is None or plan[1].get("settings"):  # none, or one fitted for a stochastic Euler
                raise
            return plan

    def grid(self, steps: int, kind: str = "") -> Tensor:
        """The grid of :meth:`plan`."""
        return self.plan(steps, kind)[0]


class Progressive(Objective):
    """Salimans & Ho 2022 Alg. 2 on the teacher's grid of ``teacher_steps`` steps (progressive.py). On a tuned grid
    that stops short of 0 the teacher's last step is the one it was fitted with (generate.stop_short), so the
    student's single step to 0 lands where the teacher's sampler does."""

    def __init__(self, teacher: Teacher, teacher_steps: int, grid: str = ""):
        self.teacher = teacher
        self.grid, self.grid_record = teacher.plan(teacher_steps, grid)
        self.student_grid = pd.halve_grid(self.grid)

    def draw_sigmas(self, batch: int, generator: torch.Generator, step: int) -> Tensor:
        i = torch.randint(0, len(self.student_grid) - 1, (batch,), generator=generator)
        return self.student_grid[i].float()

    def loss(self, model: Precond, mb: MicroBatch, step: int) -> Tensor:
        from ..generate import stop_short

        i = pd.grid_levels(self.student_grid, mb.sigma).cpu()
        dt, dev = mb.x0.dtype, mb.x0.device
        sigma, mid, nxt = (self.grid[j].to(dev, dt) for j in (2 * i, 2 * i + 1, 2 * i + 2))
        x = add_noise(mb.x0, sigma, mb.noise)
        with torch.no_grad():
            D = stop_short(self.teacher.denoiser(mb.cond), self.grid, self.grid_record)
            target = pd.progressive_target(D, x, sigma, mid, nxt)
        err = (model(x, sigma, mb.cond) - target).flatten(1).float().pow(2).mean(1)
        return pd.truncated_snr_weight(sigma.float()) * err


class Consistency(Objective):
    """Consistency distillation (a teacher's Heun step) or consistency training (data alone), iCT's recipe.

    ``teacher``: anything with ``denoiser(cond) -> D`` (a :class:`Teacher`, or an exact one); None for training."""

    def __init__(self, o: ObjectiveConfig, sigma_min: float, sigma_max: float, total_steps: int, teacher=None):
        self.o, self.teacher, self.total_steps = o, teacher, total_steps
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def levels(self, step: int) -> Tensor:
        o = self.o
        n = cm.curriculum_levels(step, self.total_steps, o.ct_steps_start, o.ct_steps_end)
        return cm.level_grid(n, self.sigma_min, self.sigma_max)

    def draw_sigmas(self, batch: int, generator: torch.Generator, step: int) -> Tensor:
        levels = self.levels(step)
        p = cm.level_probabilities(levels, self.o.ct_P_mean, self.o.ct_P_std)
        i = torch.multinomial(p, batch, replacement=True, generator=generator)
        return levels[i + 1].float()  # the upper level of each pair

    def loss(self, model: Precond, mb: MicroBatch, step: int) -> Tensor:
        levels = self.levels(step)
        j = pd.grid_levels(torch.cat([levels, levels.new_zeros(1)]), mb.sigma).clamp(min=1).cpu()
        dt, dev = mb.x0.dtype, mb.x0.device
        hi, lo = levels[j].to(dev, dt), levels[j - 1].to(dev, dt)
        x_hi = add_noise(mb.x0, hi, mb.noise)
        if self.teacher is None:  # consistency training: the same noise at the lower level
            x_lo = add_noise(mb.x0, lo, mb.noise)
        else:
            with torch.no_grad():
                x_lo = cm.heun_step(self.teacher.denoiser(mb.cond), x_hi, hi, lo)
        return cm.consistency_loss(lambda x, s: model(x, s, mb.cond), x_hi, hi, x_lo, lo)


class BatchDraws:
    """An objective's own draws at global batch ``step`` (training.loop.global_draws): each one is drawn for the whole
    global batch of B examples, in the same order on every rank, and cut to the micro-batch's positions - as the
    loop draws sigma and noise, so an example's draws never depend on the rank or the number of processes."""

    def __init__(self, seed: int, batch: int, step: int, mb: MicroBatch):
        from ..training.loop import global_draws

        self.g, self.B = global_draws(seed, step), batch
        self.at = slice(mb.position, mb.position + mb.x0.shape[0])
        self.shape, self.device, self.dtype = mb.x0.shape[1:], mb.x0.device, mb.x0.dtype

    def cut(self, draw) -> Tensor:
        """This micro-batch's part of ``draw(B, generator)``, on its device."""
        return draw(self.B, self.g)[self.at].to(self.device)

    def normal(self) -> Tensor:
        """This micro-batch's part of (B, *data_shape) unit noise."""
        return self.cut(lambda B, g: torch.randn((B, *self.shape), generator=g)).to(self.dtype)

    def stage(self, K: int) -> int:
        """One stage in 0 .. K-1 for the whole global batch."""
        return int(torch.randint(0, K, (), generator=self.g))


class DistributionMatching(Objective):
    """DMD2 (dmd.py): batch ``step`` trains the generator's stage k = step mod K on inputs from its own earlier
    stages; each micro-batch also updates the fake denoiser ``objective.dmd_fake_updates`` times (its state is
    checkpointed with the run's, so a resumed distillation continues exactly). Its own draws (the renoising of
    earlier stages, the matching levels and noise, D_fake's stages, levels and noise) are :class:`BatchDraws`, so
    1 and N processes distil the same student (up to float summation order)."""

    def __init__(self, cfg: RunConfig, teacher: Teacher):
        from ..generate import guide_of

        o, tm = cfg.objective, teacher.run.model
        self.teacher, self.o, self.d = teacher, o, teacher.run.config.diffusion  # the teacher's training levels
        self.levels = dmd.teacher_levels(tm, o.max_steps).float()
        self.discrete = tm.process.sigmas if tm.process is not None else None
        cl = cfg.train.channels_last and len(teacher.run.data_shape) == 3
        if cl:  # the teacher (and its guide) in the student's memory layout
            for net in {tm, guide_of(tm)} - {None}:
                net.to(memory_format=torch.channels_last)
        self.fake = dmd.FakeScore(tm, o.dmd_fake_lr or cfg.train.lr, cl)
        self.grad_clip = cfg.train.grad_clip
        self.seed, self.batch = cfg.train.seed, cfg.train.batch_size

    def draw_sigmas(self, batch: int, generator: torch.Generator, step: int) -> Tensor:
        return self.levels[step % len(self.levels)].expand(batch).clone()

    def _teacher_sigmas(self, draws: BatchDraws) -> Tensor:
        """The teacher's own training levels (what D_fake trains on)."""
        return draws.cut(lambda B, g: training_sigmas(self.d, B, g, self.discrete)).float()

    def _matching_sigmas(self, draws: BatchDraws) -> Tensor:
        """The levels the distributions are compared at (dmd.matching_levels)."""
        if self.discrete is not None:
            return draws.cut(lambda B, g: dmd.matching_levels(self.discrete, B, g)).float()
        return self._teacher_sigmas(draws).clamp(min=dmd.MATCH_SIGMA_LOW * self.d.sigma_data)

    def _fake_loss(self, x0: Tensor, cond, draws: BatchDraws) -> Tensor:
        """The teacher's own denoising loss, for D_fake on generator outputs ``x0``."""
        d, sigma = self.d, self._teacher_sigmas(draws)
        n = draws.normal()
        return model_loss(self.fake.net, x0, sigma, n, weighting=d.weighting, gamma=d.min_snr_gamma, cond=cond).mean()

    def loss(self, model: Precond, mb: MicroBatch, step: int) -> Tensor:
        K, clip, cond = len(self.levels), self.teacher.clip, mb.cond
        draws = BatchDraws(self.seed, self.batch, step, mb)  # the same on every rank, cut at this micro-batch
        levels = self.levels.to(mb.x0.device, mb.x0.dtype)
        G = lambda x, s: model(x, s, cond)  # noqa: E731
        x0 = model(dmd.simulate(G, mb.noise, levels, step % K, clip, draws.normal), mb.sigma, cond)
        sigma = self._matching_sigmas(draws)
        x_s = add_noise(x0.detach(), sigma, draws.normal())
        with torch.no_grad():  # both denoisers unclamped: a clamp on one side only would bias g at the bounds
            d_real = self.teacher.denoiser(cond, clip=False)(x_s, sigma).float()
            d_fake = self.fake.net(x_s, sigma, cond).float()
        per = dmd.generator_loss(x0.float(), dmd.dmd_gradient(x0.detach().float(), d_real, d_fake))
        # D_fake follows the generator: on this batch's outputs, then on fresh ones from random stages
        for r in range(self.o.dmd_fake_updates):
            if r == 0:
                fake_x0 = x0.detach()
            else:
                k = draws.stage(K)
                with torch.no_grad():
                    x_k = dmd.simulate(G, draws.normal(), levels, k, clip, draws.normal)
                    fake_x0 = G(x_k, levels[k].expand(len(x0)))
            self.fake.update(self._fake_loss(fake_x0.clamp(-1, 1) if clip else fake_x0, cond, draws), self.grad_clip)
        return per

    def state_dict(self) -> dict:
        return {"fake": self.fake.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.fake.load_state_dict(state["fake"])


class Reflow(Denoising):
    """The denoising loss on the teacher's (noise, sample) pairs: the noise of example k is n_k (reflow.py)."""

    def __init__(self, cfg: RunConfig, discrete_sigmas: Tensor | None, out: Path):
        super().__init__(cfg, discrete_sigmas)
        self.noise = load_pairs(out)["noise"]

    def loss(self, model: Precond, mb: MicroBatch, step: int) -> Tensor:
        d = self.d
        noise = reflow_noise(self.noise, mb.index).to(mb.x0.device, mb.x0.dtype)
        return precond_loss(model, mb.x0, mb.sigma, noise, weighting=d.weighting, gamma=d.min_snr_gamma, cond=mb.cond)


def build(cfg: RunConfig, model: Precond, total_steps: int, device: torch.device, out: Path) -> Objective:
    """The objective ``cfg.objective.name`` names, with its teacher loaded on ``device``."""
    o = cfg.objective
    if o.name == "progressive" and o.stage_teacher:  # a later halving: the previous student, its guidance baked in
        return Progressive(Teacher(o.stage_teacher, 1.0, device), 2 * o.max_steps)
    teacher = Teacher(o.teacher, o.guidance, device, o.autoguidance) if o.teacher else None
    if o.name == "progressive":
        return Progressive(teacher, o.teacher_steps, o.teacher_grid)
    if o.name in ("consistency_distillation", "consistency_training"):
        distil = o.name == "consistency_distillation"
        return Consistency(o, model.sigma_min, model.sigma_max, total_steps, teacher if distil else None)
    if o.name == "distribution_matching":
        return DistributionMatching(cfg, teacher)
    if o.name == "reflow":
        return Reflow(cfg, model.process.sigmas if model.process is not None else None, out)
    raise ConfigError(f"unknown objective {o.name!r}")
