"""A fast evaluation of the exact Gaussian-mixture denoiser for large batches (same math as
:meth:`torchdiffusion.analytic.GaussianMixture.denoise`, reorganised as two large matrix products).

With Sigma_k = U_k diag(lam_k) U_k^T and y_k = U_k^T (x - mu_k), all components at once:

    Y = x [U_1 ... U_K] - [mu_k^T U_k]_k                   (B, K*D), one GEMM
    log r_k = log w_k - 1/2 sum_j (y_kj^2/(lam_kj + s^2) + log(lam_kj + s^2)) + const
    D(x)   = sum_k r_k mu_k + (r_k lam_k/(lam_k + s^2) * y_k)_k [U_1 ... U_K]^T   (B, D), one GEMM.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..analytic import GaussianMixture
from ..types import sigma_vector


class FastMixtureDenoiser:
    """``D(x, sigma)`` of a :class:`GaussianMixture`, in float64, evaluated in chunks of ``chunk`` rows."""

    def __init__(self, mix: GaussianMixture, chunk: int = 4096):
        K, D = mix.means.shape
        self.K, self.D, self.chunk = K, D, chunk
        self.U_all = mix.U.permute(1, 0, 2).reshape(D, K * D).contiguous()  # column block k is U_k
        self.mu_proj = torch.einsum("kd,kdj->kj", mix.means, mix.U).reshape(K * D)
        self.lam = mix.lam  # (K, D)
        self.log_w = mix.weights.log()
        self.means = mix.means

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        sigma = sigma_vector(sigma, x, torch.float64)
        out = [self._chunk(x[i : i + self.chunk], sigma[i : i + self.chunk]) for i in range(0, x.shape[0], self.chunk)]
        return torch.cat(out).to(x.dtype)

    def _chunk(self, x: Tensor, sigma: Tensor) -> Tensor:
        B, K, D = x.shape[0], self.K, self.D
        y = (x.to(torch.float64) @ self.U_all - self.mu_proj).reshape(B, K, D)
        if bool((sigma == sigma[0]).all()):  # one noise level for the batch (every sampler step): (K, D) terms
            var = self.lam + sigma[0] ** 2
            log_r = self.log_w - 0.5 * var.log().sum(-1) - 0.5 * torch.einsum("bkd,kd->bk", y * y, 1 / var)
            shrink = (self.lam / var)[None]
        else:
            var = self.lam[None] + sigma.reshape(B, 1, 1) ** 2
            log_r = self.log_w[None] - 0.5 * ((y * y / var).sum(-1) + var.log().sum(-1))
            shrink = self.lam[None] / var
        r = torch.softmax(log_r, -1)  # (B, K) responsibilities
        z = ((r[..., None] * shrink) * y).reshape(B, K * D)
        return r @ self.means + z @ self.U_all.T
