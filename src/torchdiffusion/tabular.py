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
multinomial term the same way). Sampling walks a Karras sigma grid down to 0: a Heun step (EDM Alg. 1) on the
numeric part, and the masked reverse step (alpha from sigma to sigma_next) on the categorical part; a known cell is
pasted at every step (numeric: the existing ``edit.known_region`` wrapper; categorical: never masked).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .categorical import alpha_of_sigma, mask_cells, uniform_from_normal, unmask_step
from .config import ConfigError, RunConfig
from .edit import known_region
from .precond import coefficients
from .schedules import make_sigmas
from .types import NoiseSource

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
        """x0_hat in the encoded layout (B, D): numeric D_num, categorical the most likely code."""
        z, c = self.split(x)
        D_num, logits = self.denoise(z, c, sigma, cond)
        codes = [lg.argmax(1, keepdim=True).to(z.dtype) for lg in logits]
        return torch.cat([D_num, *codes], 1)


def _numeric_denoiser(model: TableDiffusion, c: Tensor, cond) -> tuple[Callable[[Tensor, Tensor], Tensor], list]:
    """D(z, sigma) of the numeric part with the categorical cells ``c`` fixed; each call leaves the categorical
    logits in the returned list."""
    logits: list[Tensor] = []

    def D(x: Tensor, sigma: Tensor) -> Tensor:
        d, lg = model.denoise(x, c, sigma, cond)
        logits[:] = lg
        return d

    return D, logits


@torch.no_grad()
def sample_table(
    model: TableDiffusion,
    seeds: Sequence[int],
    steps: int,
    *,
    known: Tensor | None = None,
    known_mask: Tensor | None = None,
    rho: float = 7.0,
    cond=None,
    callback: Callable[[int, Tensor], None] | None = None,
) -> Tensor:
    """Rows (N, D) in the encoded layout, row k from ``seeds[k]`` alone; ``known``/``known_mask`` (N, D) fix cells.

    The sigma grid is Karras et al.'s (rho) from the model's sigma_max to sigma_min, then 0; at each step the
    numeric part takes a Heun step of the probability-flow ODE (dx/dsigma = (x - D)/sigma) and the categorical
    part the masked reverse step from alpha(sigma) to alpha(sigma_next) (module docstring)."""
    Dn, Dc = model.num_numeric, len(model.categories)
    device = next(model.parameters()).device
    sigmas = make_sigmas("karras", steps, model.sigma_min, model.sigma_max, rho=rho).float().to(device)
    noise = NoiseSource(seeds, (Dn + 2 * Dc * (steps + 1),), device=device).initial()
    z = noise[:, :Dn] * sigmas[0]
    draws = uniform_from_normal(noise[:, Dn:]).view(len(seeds), steps + 1, Dc, 2)
    c = model.mask_ids.expand(len(seeds), Dc).clone()
    if known is not None:
        known, known_mask = known.to(device), known_mask.to(device)
        kc, mc = model.split(known)[1], known_mask[:, Dn:]
        c = torch.where(mc, kc, c)
    for i in range(steps):
        s, s_next = sigmas[i].expand(len(seeds)), sigmas[i + 1].expand(len(seeds))
        D, logits = _numeric_denoiser(model, c, cond)
        if known is not None:
            g = NoiseSource([int(v) * 1_000_003 + i for v in seeds], (Dn,), device=device)
            D = known_region(D, known[:, :Dn], known_mask[:, :Dn].to(z.dtype), noise=g)
        d = (z - D(z, s)) / s[:, None]
        first = list(logits)  # the categorical step uses the logits at sigma (the second call overwrites them)
        z_next = z + (s_next - s)[:, None] * d  # Euler; the last step (to 0) lands on D
        if i < steps - 1:  # Heun's correction (Karras et al. 2022, Alg. 1)
            z_next = z + (s_next - s)[:, None] * (d + (z_next - D(z_next, s_next)) / s_next[:, None]) / 2
        z = z_next
        for j, lg in enumerate(first):
            c[:, j] = unmask_step(
                c[:, j : j + 1],
                lg.softmax(-1)[:, None],
                alpha_of_sigma(s_next),
                alpha_of_sigma(s),
                model.categories[j],
                draws[:, i, j : j + 1],
            )[:, 0]
        if callback is not None:
            callback(i, torch.cat([z, c.to(z.dtype)], 1))
    return torch.cat([z, c.to(z.dtype)], 1).cpu()
