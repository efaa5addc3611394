"""Guidance as denoiser wrappers: classifier-free guidance and classifier guidance, for every sampler.

Each function takes a model (or a denoiser) and returns a denoiser ``D(x, sigma) -> x0_hat``, so guidance composes
with any sampler, any parameterization and any other wrapper (clamping, inpainting).

**Classifier-free guidance** (Ho & Salimans 2022, Eq. 6), written in x0 space:

    D_w(x, sigma) = D(x, sigma | uncond) + w (D(x, sigma | cond) - D(x, sigma | uncond)).

For a fixed (x, sigma) the eps-, score- and v-predictions are affine in D with the *same* coefficients for both
branches (eps = (x - D)/sigma, score = (D - x)/sigma^2), so this is exactly the eps-space formula of the paper:
w = 0 is the unconditional model, w = 1 the conditional one, w > 1 extrapolates towards the condition. The
"unconditional" branch is the learned null embedding (``drop=True``) or a negative prompt/context.
Options: a guidance *interval* (Kynkäänniemi et al. 2024: guide only for sigma in [sigma_lo, sigma_hi], plain
conditional elsewhere), and *rescale* (Lin et al. 2024, Sec. 3.4: match the per-sample std of the guided
prediction to the conditional one, blended by phi).

**Classifier guidance** (Dhariwal & Nichol 2021; Song et al. 2021, Eq. 14). With Tweedie's formula
D(x, sigma) = x + sigma^2 grad_x log p_sigma(x), the guided score grad log p_sigma(x) + s grad log p_sigma(y | x)
belongs to the denoiser

    D_s(x, sigma) = D(x, sigma) + s sigma^2 grad_x log p(y | x, sigma).

At s = 1 it is the exact conditional denoiser E[x0 | x, y]; a noise-aware classifier (:class:`NoisyClassifier`,
trained by ``torchdiffusion train-classifier``) supplies log p(y | x, sigma).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cond import CondError, as_cond, cat_cond, expand_cond, unconditional
from .io import atomic_write, save_safetensors
from .types import Cond, Denoiser, append_dims

GuidanceError = CondError  # unusable guidance input (conditioning, interval, rescale, classifier file); one line


# ---------------------------------------------------------------------------------------------------------
# Classifier-free guidance
# ---------------------------------------------------------------------------------------------------------

ConditionalModel = Callable[[Tensor, Tensor, Cond], Tensor]  # D(x, sigma, cond), e.g. a Precond


def _sigma_vector(sigma: Tensor | float, x: Tensor) -> Tensor:
    sigma = torch.as_tensor(sigma, device=x.device)
    return sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma


def cfg_combine(D_c: Tensor, D_u: Tensor, w: Tensor | float, rescale: float = 0.0) -> Tensor:
    """D_u + w (D_c - D_u), then Lin et al. 2024's rescale: phi * D_g std(D_c)/std(D_g) + (1 - phi) * D_g.

    ``w``: a float or a (B,) tensor; std is per sample over all non-batch dims.
    """
    if isinstance(w, Tensor):
        w = append_dims(w.to(D_c.dtype), D_c.ndim)
    D_g = D_u + w * (D_c - D_u)
    if rescale > 0:
        dims = tuple(range(1, D_c.ndim))
        ratio = D_c.std(dims, keepdim=True) / D_g.std(dims, keepdim=True).clamp_min(1e-12)
        D_g = rescale * (D_g * ratio) + (1 - rescale) * D_g
    return D_g


def classifier_free(
    model: ConditionalModel,
    cond: Cond,
    scale: float,
    *,
    uncond: Cond = None,
    interval: tuple[float, float] | None = None,
    rescale: float = 0.0,
    batched: bool = True,
) -> Denoiser:
    """Classifier-free guidance as a denoiser: ``D_u + w (D_c - D_u)`` (module docstring).

    Args:
        model: ``D(x, sigma, cond)``, e.g. a :class:`~torchdiffusion.precond.Precond`.
        cond: the conditioning of the B samples (dict of (B, ...) tensors; a batch-1 dict is broadcast).
        scale: the guidance scale w (0 = unconditional, 1 = conditional, > 1 = guided).
        uncond: the "unconditional" branch: None = the same cond with ``drop=True`` (the learned null
            embedding); or a negative prompt/context (same keys as ``cond``, batch 1 or B).
        interval: ``(sigma_lo, sigma_hi)``: guide only where sigma lies in it, plain conditional elsewhere
            (Kynkäänniemi et al. 2024); outside it only the conditional branch is evaluated.
        rescale: phi in [0, 1] of Lin et al. 2024 Sec. 3.4 (0 = off).
        batched: one forward of the concatenated batch ``[cond; uncond]`` (default) or two forwards.
    """
    if interval is not None:
        lo, hi = float(interval[0]), float(interval[1])
        if not (0 <= lo < hi):
            raise GuidanceError(f"the guidance interval needs 0 <= sigma_lo < sigma_hi, got ({lo}, {hi})")
    if not 0.0 <= rescale <= 1.0:
        raise GuidanceError(f"guidance rescale must be in [0, 1], got {rescale}")
    if as_cond(cond) is None:
        raise GuidanceError("classifier-free guidance needs a conditioning (a class, context or prompt)")

    def D(x: Tensor, sigma: Tensor) -> Tensor:
        B = x.shape[0]
        sigma = _sigma_vector(sigma, x)
        c = expand_cond(cond, B)
        u = unconditional(c) if uncond is None else expand_cond(uncond, B)
        w = torch.full((B,), float(scale), dtype=torch.float32, device=x.device)
        if interval is not None:
            inside = (sigma >= lo) & (sigma <= hi)
            if not bool(inside.any()):
                return model(x, sigma, c)  # no guidance anywhere in this batch: one conditional forward
            w = torch.where(inside, w, torch.ones_like(w))
        elif scale == 0:
            return model(x, sigma, u)  # w = 0 is the unconditional branch alone: one forward
        if batched:
            out = model(torch.cat([x, x]), torch.cat([sigma, sigma]), cat_cond(c, u))
            D_c, D_u = out[:B], out[B:]
        else:
            D_c, D_u = model(x, sigma, c), model(x, sigma, u)
        return cfg_combine(D_c, D_u, w, rescale)

    return D


def guided_denoiser(
    model: ConditionalModel,
    cond: Cond | Tensor,
    *,
    scale: float = 1.0,
    uncond: Cond | Tensor = None,
    interval: tuple[float, float] | None = None,
    rescale: float = 0.0,
) -> Denoiser:
    """The denoiser ``generate`` samples with: CFG at ``scale`` when there is something to guide.

    A plain ``model.bind(cond)``-style closure when ``cond`` is None or the scale is 1 with no negative
    conditioning (one forward per step); :func:`classifier_free` (``uncond``, ``interval``, ``rescale`` as
    there) otherwise.
    """
    scale = float(scale)
    if as_cond(cond) is None or (scale == 1.0 and uncond is None):
        if hasattr(model, "bind"):
            return model.bind(cond)
        return lambda x, sigma: model(x, _sigma_vector(sigma, x), cond)
    return classifier_free(
        model, cond, scale, uncond=uncond, interval=tuple(interval) if interval else None, rescale=float(rescale)
    )


# ---------------------------------------------------------------------------------------------------------
# Classifier guidance
# ---------------------------------------------------------------------------------------------------------

NoisyLogits = Callable[[Tensor, Tensor], Tensor]  # classifier(x, sigma) -> logits (B, K)


def classifier_guidance(D: Denoiser, classifier: NoisyLogits, y: Tensor | int, scale: float) -> Denoiser:
    """Classifier guidance: ``D'(x, sigma) = D(x, sigma) + s sigma^2 grad_x log p(y | x, sigma)``.

    By Tweedie, ``D = x + sigma^2 grad log p_sigma(x)``, so adding ``s sigma^2 grad log p(y | x, sigma)`` shifts
    the score by ``s grad log p(y | x, sigma)``; at s = 1 the result is the exact conditional denoiser
    ``E[x0 | x, y]`` when the classifier is exact.

    Args:
        D: the (unconditional or conditional) denoiser.
        classifier: ``classifier(x, sigma) -> logits (B, K)`` on noisy ``x`` in VE units (noise-aware).
        y: the wanted class, an int or ``(B,)`` long.
        scale: s (0 = no guidance).
    """

    def guided(x: Tensor, sigma: Tensor) -> Tensor:
        sigma = _sigma_vector(sigma, x)
        d = D(x, sigma)
        labels = torch.as_tensor(y, device=x.device).long().expand(x.shape[0])
        with torch.enable_grad():
            xg = x.detach().float().requires_grad_(True)
            logp = F.log_softmax(classifier(xg, sigma.float()).float(), -1)
            chosen = logp.gather(1, labels[:, None]).sum()
            (grad,) = torch.autograd.grad(chosen, xg)
        return d + float(scale) * append_dims(sigma.to(d.dtype), x.ndim) ** 2 * grad.to(d.dtype)

    return guided


# ---------------------------------------------------------------------------------------------------------
# A noise-aware classifier p(y | x, sigma)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoisyClassifierConfig:
    in_channels: int = 1  # image channels C
    num_classes: int = 10  # classes K
    width: int = 32  # channels of the first stage; stages are (w, 2w, 2w) at full, 1/2 and 1/4 resolution
    emb_dim: int = 64  # width of the noise embedding
    sigma_data: float = 0.5  # input scaling c_in = 1/sqrt(sigma^2 + sigma_data^2) (EDM Eq. 7), unit-ish input


class _Stage(nn.Module):
    """conv -> GroupNorm modulated by the noise embedding (scale, shift) -> SiLU."""

    def __init__(self, cin: int, cout: int, emb_dim: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.norm = nn.GroupNorm(min(8, cout), cout, affine=False)
        self.film = nn.Linear(emb_dim, 2 * cout)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        s, b = self.film(emb)[:, :, None, None].chunk(2, 1)
        return F.silu(self.norm(self.conv(h)) * (1 + s) + b)


class NoisyClassifier(nn.Module):
    """``classifier(x, sigma) -> logits (B, K)`` for noisy images ``x = x0 + sigma n`` in VE units.

    Like the denoiser it sees ``x_in = c_in(sigma) x`` and ``c_noise = ln(sigma)/4`` (EDM Table 1), through a
    sinusoidal embedding and an MLP that modulates every stage. Any H, W (global average pooling at the end).
    """

    def __init__(self, cfg: NoisyClassifierConfig = NoisyClassifierConfig()):
        super().__init__()
        from .nets.layers import NoiseEmbedding

        self.cfg = cfg
        w, e = cfg.width, cfg.emb_dim
        self.embed = NoiseEmbedding(e)
        self.emb_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e), nn.SiLU())
        self.stages = nn.ModuleList(
            [
                _Stage(cfg.in_channels, w, e, 1),
                _Stage(w, 2 * w, e, 2),
                _Stage(2 * w, 2 * w, e, 1),
                _Stage(2 * w, 2 * w, e, 2),
            ]
        )
        self.head = nn.Linear(2 * w, cfg.num_classes)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        sigma = _sigma_vector(sigma, x).float()
        c_in = 1 / (sigma**2 + self.cfg.sigma_data**2).sqrt()
        emb = self.emb_mlp(self.embed(sigma.clamp_min(1e-8).log() / 4))
        h = append_dims(c_in, x.ndim) * x.float()
        for stage in self.stages:
            h = stage(h, emb)
        return self.head(h.mean((2, 3)))


def train_noisy_classifier(
    x: Tensor,
    labels: Tensor,
    sigma_sampler: Callable[[int, torch.Generator], Tensor],
    *,
    cfg: NoisyClassifierConfig | None = None,
    images: int = 100_000,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    log: Callable[[int, float, float], None] | None = None,
) -> NoisyClassifier:
    """Train p(y | x, sigma) on noised data ``x0 + sigma n``, sigma drawn as the diffusion model draws it.

    Args:
        x: clean data (N, C, H, W) in [-1, 1]; labels: (N,) long.
        sigma_sampler: ``(batch, generator) -> (batch,)`` training noise levels (the model's distribution).
        images: training length in images seen; AdamW with cosine decay; deterministic for a seed.
        log: ``log(images_seen, loss, accuracy)`` about every 10 % of training.
    """
    if x.ndim != 4 or labels.shape != (x.shape[0],):
        raise GuidanceError(f"expected x: (N, C, H, W) and labels: (N,), got {tuple(x.shape)}, {tuple(labels.shape)}")
    labels = labels.long()
    cfg = cfg or NoisyClassifierConfig(in_channels=x.shape[1], num_classes=int(labels.max()) + 1)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = NoisyClassifier(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = max(1, math.ceil(images / batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    net.train()
    every = max(1, steps // 10)
    run_loss, run_acc, run_n = 0.0, 0.0, 0
    for step in range(steps):
        idx = torch.randint(0, x.shape[0], (batch_size,), generator=g)
        x0, y = x[idx].float(), labels[idx]
        sigma = sigma_sampler(batch_size, g).float()
        xn = x0 + append_dims(sigma, x0.ndim) * torch.randn(x0.shape, generator=g)
        logits = net(xn, sigma)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        run_loss += float(loss.detach())
        run_acc += float((logits.argmax(-1) == y).float().mean())
        run_n += 1
        if log is not None and ((step + 1) % every == 0 or step + 1 == steps):
            log((step + 1) * batch_size, run_loss / run_n, run_acc / run_n)
            run_loss, run_acc, run_n = 0.0, 0.0, 0
    return net.eval()


def save_noisy_classifier(net: NoisyClassifier, path: str | Path, card: dict | None = None) -> Path:
    """Write ``path`` (.safetensors, config in its metadata) and ``path`` with .json (config + card), atomically."""
    path = Path(path)
    save_safetensors(net.state_dict(), path, metadata={"config": json.dumps(asdict(net.cfg))})
    atomic_write(path.with_suffix(".json"), json.dumps({"config": asdict(net.cfg), **(card or {})}, indent=2) + "\n")
    return path


def load_noisy_classifier(path: str | Path, device: str | torch.device = "cpu") -> NoisyClassifier:
    """A :class:`NoisyClassifier` from a file written by :func:`save_noisy_classifier` (or its folder), eval mode."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / "noisy-classifier.safetensors"
    if not path.is_file():
        raise GuidanceError(f"no noise-aware classifier at {path} (train one with 'torchdiffusion train-classifier')")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        net = NoisyClassifier(NoisyClassifierConfig(**json.loads(meta["config"])))
        net.load_state_dict(load_file(str(path)))
    except (SafetensorError, KeyError, TypeError, RuntimeError, json.JSONDecodeError, OSError) as e:
        raise GuidanceError(f"{path} is not a noise-aware classifier file ({type(e).__name__})") from None
    return net.to(device).eval().requires_grad_(False)
