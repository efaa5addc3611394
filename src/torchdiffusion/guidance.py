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

**Retrieval guidance** (``sample.retrieval_guidance``; compositional CFG over two conditions as in
InstructPix2Pix, Brooks et al. 2023, Eq. 3): a ``model.text_retrieval`` model conditions on the caption c and on
its retrieved neighbours n. Trained with the caption also dropped alone (``train.caption_drop_prob``), it knows
D(x | n) as well, and the two scales can differ:

    D(x, sigma) = D(x | -) + w_n (D(x | n) - D(x | -)) + w (D(x | c, n) - D(x | n)),

w_n towards the neighbours, w from them towards the caption; w_n = w is plain CFG on (c, n) together.

**Autoguidance** (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself", Eq. 2): the same
extrapolation with a weaker model of the same task in place of the unconditional branch,

    D_w(x, sigma) = D_0(x, sigma) + w (D_1(x, sigma) - D_0(x, sigma)),

D_1 the model, D_0 its guide (here: the run's own EMA weights from early in training, ``train.guide_at``).
Where both models err the same way the difference cancels the shared part of the error and w > 1 pushes away
from what the weaker model still gets wrong; unlike CFG it needs no conditioning, so it sharpens unconditional
models too, without CFG's loss of variety.

**Classifier guidance** (Dhariwal & Nichol 2021; Song et al. 2021, Eq. 14). With Tweedie's formula
D(x, sigma) = x + sigma^2 grad_x log p_sigma(x), the guided score grad log p_sigma(x) + s grad log p_sigma(y | x)
belongs to the denoiser

    D_s(x, sigma) = D(x, sigma) + s sigma^2 grad_x log p(y | x, sigma).

At s = 1 it is the exact conditional denoiser E[x0 | x, y]; a noise-aware classifier
(:class:`torchdiffusion.evaluation.noisy_classifier.NoisyClassifier`, trained by ``torchdiffusion
train-classifier``) supplies log p(y | x, sigma).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .cond import CondError, as_cond, cat_cond, check_cond_keys, drop_mask, expand_cond, unconditional
from .types import Cond, Denoiser, append_dims, sigma_vector

GuidanceError = CondError  # unusable guidance input (conditioning, interval, rescale); a one-line message


# Classifier-free guidance

ConditionalModel = Callable[[Tensor, Tensor, Cond], Tensor]  # D(x, sigma, cond), e.g. a Precond


def cfg_combine(D_c: Tensor, D_u: Tensor, w: Tensor | float, rescale: float = 0.0) -> Tensor:
    """D_u + w (D_c - D_u), then Lin et al. 2024's rescale: phi * D_g std(D_c)/std(D_g) + (1 - phi) * D_g.

    ``w``: a float or a (B,) tensor; std is per sample over all non-batch dims.
    """
    if isinstance(w, Tensor):
        w = append_dims(w.to(D_c.dtype), D_c.ndim)
    return _rescaled(D_u + w * (D_c - D_u), D_c, rescale)


def _rescaled(D_g: Tensor, D_c: Tensor, rescale: float) -> Tensor:
    """Lin et al. 2024 Sec. 3.4: ``phi * D_g std(D_c)/std(D_g) + (1 - phi) * D_g`` (per sample); phi = 0: D_g. Data
    of one value per sample has no spread to match: D_g as it is (its std was NaN)."""
    if rescale > 0 and D_c[0].numel() > 1:
        dims = tuple(range(1, D_c.ndim))
        ratio = D_c.std(dims, keepdim=True) / D_g.std(dims, keepdim=True).clamp_min(1e-12)
        D_g = rescale * (D_g * ratio) + (1 - rescale) * D_g
    return D_g


def _checked_options(interval: tuple[float, float] | None, rescale: float) -> tuple[float, float]:
    """The guidance interval as (sigma_lo, sigma_hi) ((0, inf) when there is none), and rescale, checked."""
    lo, hi = (0.0, math.inf) if interval is None else (float(interval[0]), float(interval[1]))
    if not (0 <= lo < hi):
        raise GuidanceError(f"the guidance interval needs 0 <= sigma_lo < sigma_hi, got ({lo}, {hi})")
    if not 0.0 <= rescale <= 1.0:
        raise GuidanceError(f"guidance rescale must be in [0, 1], got {rescale}")
    return lo, hi


def _checked_scale(w: Any, what: str) -> float:
    """A guidance scale as a float: a finite real number (a NaN or infinite one gives NaN denoisers)."""
    if isinstance(w, (bool, str)) or not isinstance(w, (numbers.Real, Tensor)) or getattr(w, "numel", lambda: 1)() != 1:
        raise GuidanceError(f"the {what} scale must be a number, got {w!r}")
    w = float(w)
    if not math.isfinite(w):
        raise GuidanceError(f"the {what} scale must be finite, got {w}")
    return w


def _inside_interval(sigma: Tensor, lo: float, hi: float, *scales: Tensor) -> tuple[Tensor, ...] | None:
    """The (B,) guidance scales where sigma lies in [lo, hi] and 1 (the conditional branch alone) elsewhere; None
    when no sigma of the batch lies in it."""
    inside = (sigma >= lo) & (sigma <= hi)
    if not bool(inside.any()):
        return None
    return tuple(torch.where(inside, w, torch.ones_like(w)) for w in scales)


def refuse_interval_off_grid(interval: tuple[float, float] | None, sigmas: Tensor, what: str) -> None:
    """GuidanceError (one line) when the guidance ``interval`` (sigma_lo, sigma_hi) holds no noise level of the grid
    ``sigmas`` the sampler walks (its final 0 is never denoised): guided nowhere, it would change nothing.
    ``what``: how the user set it (``--guidance-interval`` or ``--set sample.guidance_interval``). The inclusion
    rule is the one sampling applies (:func:`_inside_interval`)."""
    if interval is None:
        return
    lo, hi = float(interval[0]), float(interval[1])
    levels = sigmas.detach().double().flatten()
    levels = levels[levels > 0]
    if len(levels) and _inside_interval(levels, lo, hi, torch.ones_like(levels)) is None:
        raise GuidanceError(
            f"{what} changes nothing: [{lo:g}, {hi:g}] holds no noise level of the grid the sampler walks "
            f"(sigma {float(levels.min()):.4g} to {float(levels.max()):.4g})"
        )


INTERVAL_SET = "sample.guidance_interval (--set or the run's)"  # how a command names the interval it refuses


def refuse_interval_off_walk(sample: Any, sigmas: Tensor, *, guided: bool, what: str = INTERVAL_SET) -> None:
    """The one check every command that samples makes before it writes anything: GuidanceError (one line,
    :func:`refuse_interval_off_grid`) when ``sample.guidance_interval`` is read - ``guided``: classifier-free
    guidance or autoguidance guides the draw - yet holds no noise level of the grid ``sigmas`` the draw walks.
    Samplers that also evaluate the denoiser between the levels (samplers.walks_between_levels) are not judged:
    their midpoints may be guided."""
    from dataclasses import asdict

    from .samplers import walks_between_levels

    if sample.guidance_interval is None or not guided:
        return
    if walks_between_levels(sample.sampler, asdict(sample.settings)):
        return
    refuse_interval_off_grid(sample.guidance_interval, sigmas, what)


def refuse_interval_off_run_grid(run_: Any, sample: Any, what: str = INTERVAL_SET) -> None:
    """:func:`refuse_interval_off_walk` for a draw of the loaded run ``run_`` at ``sample`` over its whole grid
    (``run_.sampling_plan``), guided where the run's config reads the interval (config.unread_setting: a
    conditioned model at sample.guidance != 1, or sample.autoguidance != 1)."""
    from dataclasses import replace

    from .config import unread_setting

    guided = unread_setting(replace(run_.config, sample=sample), "sample.guidance_interval") is None
    if sample.guidance_interval is not None and guided:
        refuse_interval_off_walk(sample, run_.sampling_plan(sample)[0], guided=True, what=what)


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
    lo, hi = _checked_options(interval, rescale)
    scale = _checked_scale(scale, "classifier-free guidance")
    if as_cond(cond) is None:
        raise GuidanceError("classifier-free guidance needs a conditioning (a class, context or prompt)")
    check_cond_keys(as_cond(cond))
    check_cond_keys(as_cond(uncond), "uncond")

    def D(x: Tensor, sigma: Tensor) -> Tensor:
        B = x.shape[0]
        sigma = sigma_vector(sigma, x)
        c = expand_cond(cond, B)
        u = unconditional(c) if uncond is None else expand_cond(uncond, B)
        w = torch.full((B,), float(scale), dtype=torch.float32, device=x.device)
        if interval is not None:
            scales = _inside_interval(sigma, lo, hi, w)
            if scales is None:
                return model(x, sigma, c)  # no guidance anywhere in this batch: one conditional forward
            (w,) = scales
        elif scale == 0:
            return model(x, sigma, u)  # w = 0 is the unconditional branch alone: one forward
        if batched:
            out = model(torch.cat([x, x]), torch.cat([sigma, sigma]), cat_cond(c, u))
            D_c, D_u = out[:B], out[B:]
        else:
            D_c, D_u = model(x, sigma, c), model(x, sigma, u)
        return cfg_combine(D_c, D_u, w, rescale)

    return D


def retrieval_guided(
    model: ConditionalModel,
    cond: Cond,
    scale: float,
    retrieval_scale: float,
    *,
    uncond: Cond = None,
    interval: tuple[float, float] | None = None,
    rescale: float = 0.0,
) -> Denoiser:
    """Retrieval guidance as a denoiser (module docstring): ``D_u + w_n (D_n - D_u) + w (D_c - D_n)``.

    ``D_c`` sees the caption and its neighbours, ``D_n`` the neighbours with the caption dropped (or the negative
    prompt in its place), ``D_u`` neither (or the negative prompt with its own neighbours); one forward of the
    batch ``[c; n; u]``. ``interval`` and ``rescale`` as in :func:`classifier_free` (outside the interval the
    conditional branch alone: both scales 1).
    """
    c0 = as_cond(cond)
    if c0 is None or c0.get("neighbours") is None:
        raise GuidanceError("retrieval guidance needs a prompt's retrieved neighbours (a model.text_retrieval run)")
    check_cond_keys(c0)
    check_cond_keys(as_cond(uncond), "uncond")
    lo, hi = _checked_options(interval, rescale)
    scale = _checked_scale(scale, "classifier-free guidance")
    retrieval_scale = _checked_scale(retrieval_scale, "retrieval guidance")

    def D(x: Tensor, sigma: Tensor) -> Tensor:
        B = x.shape[0]
        sigma = sigma_vector(sigma, x)
        c = expand_cond(cond, B)
        u = unconditional(c) if uncond is None else expand_cond(uncond, B)
        # the neighbours of the prompt beside the caption's null (or the negative prompt): D(x | n)
        n = {**u, "neighbours": c["neighbours"], "drop_neighbours": drop_mask(c, B, x.device)}
        w = torch.full((B,), float(scale), dtype=torch.float32, device=x.device)
        w_n = torch.full((B,), float(retrieval_scale), dtype=torch.float32, device=x.device)
        if interval is not None:
            scales = _inside_interval(sigma, lo, hi, w, w_n)
            if scales is None:
                return model(x, sigma, c)  # no guidance anywhere in this batch: one conditional forward
            w, w_n = scales
        out = model(torch.cat([x, x, x]), torch.cat([sigma, sigma, sigma]), cat_cond(cat_cond(c, n), u))
        D_c, D_n, D_u = out[:B], out[B : 2 * B], out[2 * B :]
        w, w_n = append_dims(w.to(D_c.dtype), D_c.ndim), append_dims(w_n.to(D_c.dtype), D_c.ndim)
        D_g = D_u + w_n * (D_n - D_u) + w * (D_c - D_n)
        return _rescaled(D_g, D_c, rescale)

    return D


def guided_denoiser(
    model: ConditionalModel,
    cond: Cond | Tensor,
    *,
    scale: float = 1.0,
    uncond: Cond | Tensor = None,
    interval: tuple[float, float] | None = None,
    rescale: float = 0.0,
    retrieval_scale: float = 0.0,
) -> Denoiser:
    """The denoiser ``generate`` samples with: CFG at ``scale`` when there is something to guide.

    A plain ``model.bind(cond)``-style closure when ``cond`` is None or the scale is 1 (the conditional branch alone,
    whatever ``uncond``, ``interval`` and ``rescale`` say: one forward per step); :func:`classifier_free`
    (``uncond``, ``interval``, ``rescale`` as there) otherwise; :func:`retrieval_guided` with ``retrieval_scale`` > 0.
    """
    scale = _checked_scale(scale, "classifier-free guidance")
    retrieval_scale = _checked_scale(retrieval_scale, "retrieval guidance")  # (a NaN one was plain CFG)
    check_cond_keys(as_cond(cond))
    check_cond_keys(as_cond(uncond), "uncond")
    interval = tuple(interval) if interval else None
    if retrieval_scale > 0:  # towards the retrieved neighbours at their own scale (retrieval_guided)
        return retrieval_guided(model, cond, scale, retrieval_scale, uncond=uncond, interval=interval, rescale=rescale)
    if as_cond(cond) is None or scale == 1.0:  # D_u + 1 (D_c - D_u) = D_c, whatever the negative: one forward
        if hasattr(model, "bind"):
            return model.bind(cond)
        return lambda x, sigma: model(x, sigma_vector(sigma, x), cond)
    return classifier_free(model, cond, scale, uncond=uncond, interval=interval, rescale=float(rescale))


def autoguided(D: Denoiser, D_guide: Denoiser, w: float, *, interval: tuple[float, float] | None = None) -> Denoiser:
    """Autoguidance: ``D_guide + w (D - D_guide)`` (module docstring); ``w = 1`` is ``D`` alone.

    ``interval = (sigma_lo, sigma_hi)`` guides only where sigma lies in it and is ``D`` alone elsewhere (the guide
    is not evaluated for a batch wholly outside), as :func:`classifier_free`'s interval does.
    """
    w = _checked_scale(w, "autoguidance")
    if w == 1.0:
        return D
    lo, hi = _checked_options(interval, 0.0)

    def D_w(x: Tensor, sigma: Tensor | float) -> Tensor:
        if interval is not None:
            s = sigma_vector(sigma, x)
            scales = _inside_interval(s, lo, hi, torch.full_like(s, w, dtype=torch.float32))
            if scales is None:
                return D(x, sigma)  # no sigma of the batch inside: the model alone, one forward
            w_b = append_dims(scales[0].to(x.dtype), x.dim())
        else:
            w_b = w
        D_0 = D_guide(x, sigma)
        return D_0 + w_b * (D(x, sigma) - D_0)

    return D_w


# Classifier guidance

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
    scale = _checked_scale(scale, "classifier guidance")
    wanted = torch.as_tensor(y)
    if wanted.is_floating_point() or wanted.is_complex() or wanted.dtype == torch.bool or wanted.ndim > 1:
        raise GuidanceError(f"classifier guidance needs an integer class or (B,) integer labels, got {y!r}")

    def guided(x: Tensor, sigma: Tensor) -> Tensor:
        if wanted.ndim == 1 and len(wanted) not in (1, x.shape[0]):
            raise GuidanceError(
                f"classifier guidance: {len(wanted)} labels for {x.shape[0]} samples; give 1 or one each"
            )
        sigma = sigma_vector(sigma, x)
        d = D(x, sigma)
        labels = wanted.to(x.device).long().expand(x.shape[0])
        with torch.enable_grad():
            xg = x.detach().float().requires_grad_(True)
            logp = F.log_softmax(classifier(xg, sigma.float()).float(), -1)
            if ((labels < 0) | (labels >= logp.shape[1])).any():
                raise GuidanceError(f"classifier guidance: class labels must be in [0, {logp.shape[1]})")
            chosen = logp.gather(1, labels[:, None]).sum()
            (grad,) = torch.autograd.grad(chosen, xg)
        return d + float(scale) * append_dims(sigma.to(d.dtype), x.ndim) ** 2 * grad.to(d.dtype)

    return guided
