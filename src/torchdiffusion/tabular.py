"""Mixed diffusion on tables (TabDDPM, Kotelnikov et al. 2023): Gaussian on the numeric columns, masked on the
categorical ones, one network for both.

A row is ``x0 = [z (Dn numeric, quantile-normalised to unit Gaussians), c (Dc category codes)]`` (data/table.py).
At noise level sigma the numeric part is ``z + sigma n`` (variance exploding) and each categorical cell is kept
with probability alpha(sigma) = 1/(1 + sigma^2) and masked otherwise (categorical.py). One residual MLP reads

    [c_in z_sigma, one-hot(c_sigma) with a mask entry per column]  and  c_noise = ln(sigma)/4,

and gives the numeric part through EDM's preconditioning with sigma_data = 1 (D_num = c_skip z_sigma + c_out F)
and logits per categorical column (the mask never predicted). The loss per row is

    L = lambda(sigma) mean_j (D_num - z)_j^2  +  (1/Dc) sum_{masked j} -log p(c_j | x_sigma),

EDM's weighted denoising error plus the cross-entropy on masked cells (TabDDPM sums a Gaussian and a
multinomial term the same way). Sampling walks the run's sigma grid down to 0 with the run's sampler on the numeric
part (any of samplers/; the table presets: Heun, EDM Alg. 1, on the Karras grid) and, after each of its steps, the
masked reverse step (alpha from sigma to sigma_next) on the categorical part; a known cell is pasted at every step
(numeric: the existing ``edit.known_region`` wrapper; categorical: never masked).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .categorical import alpha_of_sigma, mask_cells, uniform_from_normal, unmask_step
from .config import ConfigError, RunConfig, SampleConfig
from .edit import known_region
from .precond import coefficients, consistency_c_skip
from .types import NoiseSource, StepInfo, sigma_vector, stream_seeds

SIGMA_DATA = 1.0  # the numeric columns are unit Gaussians after the quantile map


class TableDiffusion(nn.Module):
    """D(x_sigma, sigma) -> (numeric x0_hat (B, Dn), categorical logits (B, sum K_j)) and its training loss.

    Args:
        cfg: the run config (``model.mlp_width``, ``mlp_depth``, ``num_classes``/``context_dim``;
            ``diffusion.sigma_min``/``sigma_max`` for sampling grids).
        num_numeric: Dn.
        categories: K_j of every categorical column.
    """

    process = None  # no DDPM table: noise levels are continuous sigmas
    parameterization = "edm"
    sigma_data = SIGMA_DATA

    def __init__(self, cfg: RunConfig, num_numeric: int, categories: Sequence[int]):
        super().__init__()
        from .nets.mlp import MLP

        self.num_numeric, self.categories = int(num_numeric), tuple(int(k) for k in categories)
        if self.num_numeric + len(self.categories) == 0:
            raise ConfigError("a table model needs at least one column")
        self.sigma_min, self.sigma_max = cfg.diffusion.sigma_min, cfg.diffusion.sigma_max
        # a few-step student of a table of numeric columns alone (shortcuts/distill.py) may be a consistency
        # function of its numeric part (precond.py's boundary); the categorical cells have no such function
        self.boundary = cfg.diffusion.boundary
        if self.boundary == "consistency" and self.categories:
            raise ConfigError(
                "diffusion.boundary=consistency makes a consistency function of numeric columns; this table has "
                f"{len(self.categories)} categorical column(s)"
            )
        in_dim = self.num_numeric + sum(k + 1 for k in self.categories)
        self.net = MLP(replace(cfg.model, net="mlp"), (in_dim,), out_dim=self.num_numeric + sum(self.categories))
        # the mask id of each categorical column is its K_j; offsets place each column's one-hot block
        self.register_buffer("mask_ids", torch.tensor(self.categories, dtype=torch.long), persistent=False)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, D) -> numeric (B, Dn) float, categorical (B, Dc) long."""
        return x[:, : self.num_numeric], x[:, self.num_numeric :].round().long()

    def denoise(self, z: Tensor, c: Tensor, sigma: Tensor, cond=None) -> tuple[Tensor, list[Tensor]]:
        """(D_num (B, Dn), [logits (B, K_j) per categorical column]) at noise level sigma (B,)."""
        k = coefficients("edm", sigma, SIGMA_DATA)
        onehots = [F.one_hot(c[:, j], K + 1).to(z.dtype) for j, K in enumerate(self.categories)]
        h = self.net(torch.cat([k.c_in[:, None] * z, *onehots], 1), k.c_noise, cond)
        D_num = k.c_skip[:, None] * z + k.c_out[:, None] * h[:, : self.num_numeric]
        if self.boundary == "consistency":  # f(z, sigma_min) = z (Song et al. 2023, Eq. 5)
            b = consistency_c_skip(sigma, self.sigma_min, SIGMA_DATA)[:, None]
            D_num = b * z + (1 - b) * D_num
        return D_num, list(h[:, self.num_numeric :].split(self.categories, 1))

    def training_loss(self, x0: Tensor, sigma: Tensor, noise: Tensor, cond=None) -> Tensor:
        """Per-row loss (B,) of the module docstring; ``noise`` (B, D) gives the Gaussian noise of the numeric
        columns and, through u = Phi(n), the masking draws of the categorical ones."""
        z0, c0 = self.split(x0)
        z = z0 + sigma[:, None] * noise[:, : self.num_numeric]
        u = uniform_from_normal(noise[:, self.num_numeric :])
        c = mask_cells(c0, alpha_of_sigma(sigma)[:, None], u, self.mask_ids)
        D_num, logits = self.denoise(z, c, sigma, cond)
        weight = (sigma**2 + SIGMA_DATA**2) / (sigma * SIGMA_DATA) ** 2  # EDM's lambda(sigma)
        loss = weight * ((D_num - z0) ** 2).mean(1) if self.num_numeric else torch.zeros_like(sigma)
        if self.categories:
            ce = torch.stack([F.cross_entropy(lg, c0[:, j], reduction="none") for j, lg in enumerate(logits)], 1)
            loss = loss + (ce * (c == self.mask_ids)).sum(1) / len(self.categories)
        return loss

    def forward(self, x: Tensor, sigma: Tensor, cond=None) -> Tensor:
        """x0_hat in the encoded layout (B, D): numeric D_num, categorical the most likely code; in ``x``'s dtype
        around the network's (a sampler's float64 state, as Precond takes it)."""
        dt = next(self.parameters()).dtype
        z, c = self.split(x.to(dt))
        D_num, logits = self.denoise(z, c, sigma_vector(sigma, x).to(dt), cond)
        codes = [lg.argmax(1, keepdim=True).to(z.dtype) for lg in logits]
        return torch.cat([D_num, *codes], 1).to(x.dtype)


class _TableState:
    """The categorical cells ``c`` (B, Dc) while the numeric part is sampled, and the logits that the first
    network call of the current step gave (the categorical step of that step uses them)."""

    def __init__(self, model: TableDiffusion, c: Tensor, cond):
        self.model, self.c, self.cond = model, c, cond
        self.logits: list[Tensor] | None = None

    def D(self, x: Tensor, sigma: Tensor) -> Tensor:
        """D(z, sigma) of the numeric part with the categorical cells fixed, in the sampler's dtype."""
        d, logits = self.model.denoise(x.float(), self.c, sigma.float(), self.cond)
        if self.logits is None:  # the first call of this step: at sigma (a Heun step's second call is at sigma')
            self.logits = logits
        return d.to(x.dtype)

    def unmask(self, sigma: float, sigma_next: float, u: Tensor) -> None:
        """The masked reverse step of every categorical column from alpha(sigma) to alpha(sigma_next)."""
        if self.logits is None:
            return
        a_t, a_s = alpha_of_sigma(torch.tensor(sigma)), alpha_of_sigma(torch.tensor(sigma_next))
        for j, (lg, K) in enumerate(zip(self.logits, self.model.categories, strict=True)):
            column = unmask_step(self.c[:, j : j + 1], lg.float().softmax(-1)[:, None], a_s, a_t, K, u[:, j : j + 1])
            self.c[:, j] = column[:, 0]
        self.logits = None


@torch.no_grad()
def sample_table(
    model: TableDiffusion,
    seeds: Sequence[int],
    sample: SampleConfig,
    *,
    known: Tensor | None = None,
    known_mask: Tensor | None = None,
    cond=None,
    callback: Callable[[int, Tensor], None] | None = None,
    trace: Callable[[float, Tensor], None] | None = None,
    grid_dir: str | Path | None = None,
    plan: tuple[Tensor, dict, dict] | None = None,
) -> Tensor:
    """Rows (N, D) in the encoded layout, row k from ``seeds[k]`` alone; ``known``/``known_mask`` (N, D) fix cells.
    ``callback(i, rows)`` after step i, ``trace(sigma, rows)`` with the level sigma the step reached (rows: numeric
    z_sigma, categorical codes with K_j for a masked cell). ``plan``: :func:`sampling_plan_of` of ``sample`` and
    ``grid_dir``, when the caller has resolved it already (once for all its batches).

    The numeric part is sampled by ``sample.sampler`` on the grid ``sample.grid`` over the model's sigma range (the
    library's samplers, :func:`generate.sampling_plan`; the table presets: Heun, EDM Alg. 1, on Karras et al.'s
    grid); after each of the sampler's steps, from sigma to sigma', every categorical column takes the masked
    reverse step from alpha(sigma) to alpha(sigma') with the logits of the step's first network call (module
    docstring). Row k's numeric noise, its categorical draws and its known-cell noise are three streams of its
    seed (:func:`types.stream_seeds`)."""
    from .generate import state_dtype, stop_short
    from .samplers import get_sampler

    Dn, Dc, N = model.num_numeric, len(model.categories), len(seeds)
    device = next(model.parameters()).device
    sigmas, knobs, record = plan or sampling_plan_of(model, sample, grid_dir)
    dtype = state_dtype(device)
    noise = NoiseSource(seeds, (Dn,), device=device, dtype=dtype)
    draws = NoiseSource(stream_seeds(seeds, 1), (Dc, 2), device=device)
    z = noise.initial() * float(sigmas[0])
    state = _TableState(model, model.mask_ids.expand(N, Dc).clone(), cond)
    D = state.D
    if known is not None:
        known, known_mask = known.to(device), known_mask.to(device)
        state.c = torch.where(known_mask[:, Dn:], model.split(known)[1], state.c)
        g = NoiseSource(stream_seeds(seeds, 2), (Dn,), device=device, dtype=dtype)
        D = known_region(D, known[:, :Dn].to(dtype), known_mask[:, :Dn].to(dtype), noise=g)

    def step(info: StepInfo) -> None:
        state.unmask(info.sigma, info.sigma_next, uniform_from_normal(draws()))
        if callback is not None or trace is not None:
            rows = torch.cat([info.x.float(), state.c.to(torch.float32)], 1)
            if callback is not None:
                callback(info.i, rows)
            if trace is not None:
                trace(info.sigma_next, rows)

    D = stop_short(D, sigmas, record)  # a tuned grid (a distilled student's) may stop short of 0
    z = get_sampler(sample.sampler)(D, z, sigmas, noise=noise, callback=step, **knobs)
    if Dc and bool((state.c == model.mask_ids).any()):  # a grid that stops above 0 leaves cells masked: unmask all
        state.D(z, torch.full((N,), float(sigmas[-2]), dtype=dtype, device=device))
        state.unmask(float(sigmas[-2]), 0.0, uniform_from_normal(draws()))
    return torch.cat([z.float(), state.c.to(torch.float32)], 1).cpu()


def sampling_plan_of(
    model: TableDiffusion, sample: SampleConfig, grid_dir: str | Path | None = None
) -> tuple[Tensor, dict, dict]:
    """(sigma grid, sampler settings, grid record) of ``sample`` on a table model: unclamped; the tuned grids of
    ``grid_dir`` (a run folder's ``grids/``: a distilled student's) where it names one."""
    from .generate import sampling_plan
    from .samplers.optimize_grid import NoTunedGrid

    try:
        return sampling_plan(model, sample, clamped=False, grid_dir=grid_dir)
    except NoTunedGrid as e:  # bench-samplers, which fits grids for images and points, takes no table
        have = f"steps {', '.join(map(str, e.steps_found))}" if e.steps_found else "none"
        raise ConfigError(
            f"no {sample.sampler} grid for {sample.steps} steps in {grid_dir} (it has {have}); a table's grids "
            "come from distill: sample with the steps it was distilled for, or name another grid (--grid karras)"
        ) from None


@torch.no_grad()
def reverse_states(
    model: TableDiffusion,
    seeds: Sequence[int],
    sample: SampleConfig,
    sigmas: Sequence[float],
    on_step: Callable[[], None] | None = None,
    grid_dir: str | Path | None = None,
    plan: tuple[Tensor, dict, dict] | None = None,
) -> list[tuple[float, Tensor]]:
    """The reverse process of :func:`sample_table` seen at the levels it reaches nearest each of ``sigmas`` (in log
    sigma; 0 is the end): [(the level, rows (N, D) there: numeric z_sigma, categorical codes with K_j for a masked
    cell)], whatever the sampler's steps (an adaptive one's included). The picture of ``explain table-forward
    RUN`` sets them beside the forward process, whose marginals at each sigma they share when the model is exact.
    ``on_step()`` after each step (a bar); ``plan`` as for :func:`sample_table`."""
    wanted = [float(s) for s in sigmas]
    best: list[tuple[float, float, Tensor] | None] = [None] * len(wanted)  # (log distance, level, rows)

    def keep(level: float, rows: Tensor) -> None:
        for j, s in enumerate(wanted):
            d = abs(math.log((level + 1e-4) / (s + 1e-4)))
            if best[j] is None or d < best[j][0]:
                best[j] = (d, level, rows.cpu().clone())
        if on_step is not None:
            on_step()

    sample_table(model, seeds, sample, trace=keep, grid_dir=grid_dir, plan=plan)
    return [(b[1], b[2]) for b in best if b is not None]
