"""Conditioning: its one type and every operation on it.

A conditioning is ``None`` (unconditional) or a dict of per-sample tensors (:data:`torchdiffusion.types.Cond`):

    "class"      (B,) long      class labels in [0, num_classes)
    "context"    (B, K) float   context vectors of length context_dim
    "text"       (B, L, E)      token features (MiniLM, E = 384), with
    "text_mask"  (B, L) bool    True for real tokens, False for padding
    "neighbours" (B, D) float   the mean of the prompt's retrieved training examples (model.text_retrieval)
    "drop"       (B,) bool      True where a sample uses the learned null embedding (classifier-free dropout)
    "drop_neighbours" (B,) bool the neighbours' own drop mask where it differs from "drop" (a caption dropped
                                alone, its neighbours kept: train.caption_drop_prob, sample.retrieval_guidance);
                                absent = "drop" (:func:`neighbour_drop_mask`)

At the edges a bare tensor is also accepted and read by :func:`as_cond`. Everything here keeps the
batch dimension first: normalise (:func:`as_cond`), its size (:func:`cond_batch`), the null twin
(:func:`unconditional`, :func:`drop_mask`), broadcast (:func:`expand_cond`), batch concatenation
(:func:`cat_cond`), batch slicing (:func:`slice_cond`), the conditioning of a training batch from the data
(:func:`cond_from_data`), and the conditioning of ``n`` samples from user input (:func:`build_cond`,
:func:`parse_vectors`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .types import Cond


class CondError(ValueError):
    """Unusable conditioning (wrong shape, mismatched keys or batch, out-of-range class); one line."""


def as_cond(cond: Cond | Tensor) -> Cond:
    """``None`` or a cond dict; a bare tensor becomes ``{"class"}`` ((B,) long), ``{"context"}`` ((B, K)) or
    ``{"text"}`` ((B, L, E))."""
    if cond is None or isinstance(cond, dict):
        return cond
    if isinstance(cond, Tensor):
        if cond.ndim == 1 and not cond.is_floating_point():
            return {"class": cond}
        if cond.ndim == 2:
            return {"context": cond}
        if cond.ndim == 3:
            return {"text": cond}
    raise CondError("cond must be None, a dict, or a tensor shaped (B,) long / (B, K) / (B, L, E)")


COND_KEYS = ("class", "context", "text", "text_mask", "neighbours", "drop", "drop_neighbours")  # the table above


def check_cond(cond: Cond, n: int, what: str = "cond") -> Cond:
    """``cond`` unchanged when it conditions ``n`` samples: known keys only (a misspelt one would be ignored and
    the samples silently unconditional), every tensor with ``n`` rows (fewer were broadcast batch by batch, more
    silently dropped), integer class labels (floats were truncated); else a one-line CondError."""
    if cond is None:
        return None
    check_cond_keys(cond, what)
    for k, v in cond.items():
        if v is not None and not isinstance(v, Tensor):  # (an int label failed deep inside: no .to)
            raise CondError(f"{what}[{k!r}] must be a tensor with one row per sample, got {type(v).__name__} {v!r}")
        if isinstance(v, Tensor) and (v.ndim == 0 or v.shape[0] != n):
            rows = "no batch dimension" if v.ndim == 0 else f"{v.shape[0]} rows"
            raise CondError(f"{what}[{k!r}] has {rows} for {n} samples; give one row per sample")
    return cond


def check_cond_keys(cond: Cond, what: str = "cond") -> Cond:
    """``cond`` unchanged when its keys are known ones and its class labels integers (any batch size: a batch-1
    cond may be broadcast); else a one-line CondError - a misspelt key was ignored (an unconditional sample), a
    float label truncated."""
    if cond is None:
        return None
    if not isinstance(cond, dict):
        raise CondError(f"{what} must be None or a dict of tensors, got {type(cond).__name__}")
    for k in cond:
        if k not in COND_KEYS:
            raise CondError(f"{what} has no key {k!r}; its keys are {', '.join(COND_KEYS)}")
    labels = cond.get("class")
    if isinstance(labels, Tensor) and (labels.is_floating_point() or labels.is_complex()):
        raise CondError(f"{what}['class'] must hold integer labels, got {labels.dtype}")
    return cond


def cond_batch(cond: dict) -> int:
    """The batch size B of a cond dict (the leading size of its first tensor)."""
    for v in cond.values():
        if isinstance(v, Tensor):
            return int(v.shape[0])
    raise CondError("a cond dict needs at least one tensor")


def unconditional(cond: Cond | Tensor) -> Cond:
    """The same conditioning with every sample dropped (``drop=True``: the net's learned null embedding)."""
    c = as_cond(cond)
    if c is None:
        return None
    B = cond_batch(c)
    device = next(v for v in c.values() if isinstance(v, Tensor)).device
    out = {k: v for k, v in c.items() if k != "drop_neighbours"}
    return {**out, "drop": torch.ones(B, dtype=torch.bool, device=device)}


def drop_mask(cond: Cond, batch: int, device: torch.device) -> Tensor:
    """(B,) bool: True where the sample uses the null (unconditional) embedding; all True for ``None``."""
    if cond is None:
        return torch.ones(batch, dtype=torch.bool, device=device)
    d = cond.get("drop")
    if d is None:
        return torch.zeros(batch, dtype=torch.bool, device=device)
    return d.to(device=device, dtype=torch.bool).reshape(batch)


def neighbour_drop_mask(cond: Cond, drop: Tensor) -> Tensor:
    """(B,) bool: where the retrieved neighbours use their null - ``cond["drop_neighbours"]``, else ``drop``."""
    d = None if cond is None else cond.get("drop_neighbours")
    return drop if d is None else d.to(device=drop.device, dtype=torch.bool).reshape(drop.shape)


def expand_cond(cond: Cond | Tensor, n: int) -> Cond:
    """Repeat a batch-1 conditioning to ``n`` samples (or check that it already has ``n``)."""
    c = as_cond(cond)
    if c is None:
        return None
    B = cond_batch(c)
    if B == n:
        return c
    if B != 1:
        raise CondError(f"conditioning has batch {B}; need 1 or {n}")
    return {k: (v.expand(n, *v.shape[1:]) if isinstance(v, Tensor) else v) for k, v in c.items()}


def slice_cond(cond: Cond | Tensor, sl: slice) -> Cond | Tensor:
    """Samples ``sl`` of a conditioning (every tensor sliced along the batch); ``None`` stays ``None``."""
    if cond is None:
        return None
    if isinstance(cond, dict):
        return {k: (v[sl] if isinstance(v, Tensor) else v) for k, v in cond.items()}
    return cond[sl]


def _pad_tokens(t: Tensor, L: int) -> Tensor:
    """Pad (B, L0, ...) along dim 1 with zeros (False for masks) to length L."""
    if t.shape[1] == L:
        return t
    pad = torch.zeros(t.shape[0], L - t.shape[1], *t.shape[2:], dtype=t.dtype, device=t.device)
    return torch.cat([t, pad], 1)


def cat_cond(a: Cond | Tensor, b: Cond | Tensor) -> dict[str, Tensor]:
    """Concatenate two cond dicts along the batch, ``[a; b]``.

    ``drop`` defaults to False, ``drop_neighbours`` to ``drop`` and ``text_mask`` to all-True where missing;
    text token features of different lengths are padded (the padding masked out). Any other key must be present
    in both.
    """
    a, b = as_cond(a), as_cond(b)
    if a is None or b is None:
        raise CondError("cat_cond needs two conditionings (use unconditional(cond) for the null branch)")
    Ba, Bb = cond_batch(a), cond_batch(b)
    keys = (set(a) | set(b)) - {"drop", "drop_neighbours", "text_mask"}
    for k in keys:
        if k not in a or k not in b:
            raise CondError(f"the negative conditioning must have the same keys as the conditioning (missing {k!r})")
    out = {}
    for k in keys:
        va, vb = a[k], b[k]
        if k == "text":
            L = max(va.shape[1], vb.shape[1])
            va, vb = _pad_tokens(va, L), _pad_tokens(vb, L)
        out[k] = torch.cat([va, vb.to(va.device, va.dtype)])
    if "text" in out:
        L = out["text"].shape[1]
        masks = []
        for c, B in ((a, Ba), (b, Bb)):
            m = c.get("text_mask")
            if m is None:
                m = torch.ones(B, c["text"].shape[1], dtype=torch.bool, device=c["text"].device)
            masks.append(_pad_tokens(m.to(torch.bool), L))
        out["text_mask"] = torch.cat([masks[0], masks[1].to(masks[0].device)])
    device = out[next(iter(keys))].device if keys else torch.device("cpu")
    drops = []
    for c, B in ((a, Ba), (b, Bb)):
        d = c.get("drop")
        drops.append(torch.zeros(B, dtype=torch.bool, device=device) if d is None else d.to(device, torch.bool))
    out["drop"] = torch.cat(drops)
    if "drop_neighbours" in a or "drop_neighbours" in b:
        parts = [c.get("drop_neighbours", d) for c, d in ((a, drops[0]), (b, drops[1]))]
        out["drop_neighbours"] = torch.cat([p.to(device, torch.bool) for p in parts])
    return out


def cond_from_data(data, idx: Tensor, drop: Tensor, model_cfg, device: torch.device) -> Cond:
    """The conditioning of examples ``idx`` of ``data`` (a TensorData) for a model (a ModelConfig).

    A key is present when the model asks for it (num_classes / context_dim / text_dim > 0) and the data has
    it. ``drop`` (B,) bool marks examples that use the null embedding (classifier-free guidance dropout).
    """
    cond: dict[str, Tensor] = {}
    if model_cfg.num_classes > 0 and getattr(data, "labels", None) is not None:
        cond["class"] = data.labels[idx].to(device=device, dtype=torch.long)
    if model_cfg.context_dim > 0 and getattr(data, "context", None) is not None:
        cond["context"] = data.context[idx].to(device=device, dtype=torch.float32)
    if model_cfg.text_dim > 0 and getattr(data, "text", None) is not None:
        cond["text"] = data.text[idx].to(device=device, dtype=torch.float32)
        if getattr(data, "text_mask", None) is not None:
            cond["text_mask"] = data.text_mask[idx].to(device=device)
        if getattr(model_cfg, "text_retrieval", 0) and getattr(data, "neighbours", None) is not None:
            cond["neighbours"] = data.neighbours[idx].to(device=device, dtype=torch.float32)
    if not cond:
        return None
    cond["drop"] = drop.to(device=device, dtype=torch.bool)
    return cond


MORE_IMAGES = "ask for at least {count} images (--n)"  # how a draw gets more images (cycled's advice)
MORE_FILES = "edit at least {count} files (--images)"  # an edit of given files: --n picks none of them


def cycled(count: int, n: int, what: str, more: str = MORE_IMAGES) -> Tensor:
    """Which of ``count`` given items (classes, context vectors, prompts) samples 0..n-1 take: sample k takes item
    k mod count. More items than samples is a CondError (one line, both counts): the extra ones would make no
    sample, silently. ``what`` names the items (``classes``, ``--prompt prompts``); ``more``: how the user asks for
    more images (:data:`MORE_IMAGES`, :data:`MORE_FILES` for an edit of files), ``{count}`` filled in."""
    if count > n:
        images = "image" if n == 1 else "images"
        raise CondError(
            f"{count} {what} for {n} {images}: image k takes item k mod {count}, so {count - n} would make none; "
            f"{more.format(count=count)} or give fewer"
        )
    return torch.arange(n) % count


def check_takes_prompts(model_cfg, flag: str = "--prompt") -> None:
    """CondError unless a model (a ModelConfig) is conditioned on the MiniLM encoder's token features (``flag``: the
    option the prompt came from, named in the message)."""
    from .text import TEXT_DIM

    E = int(getattr(model_cfg, "text_dim", 0))
    if E <= 0:
        raise CondError(f"this model is not text-conditioned (model.text_dim = 0); drop {flag}")
    if E != TEXT_DIM:
        raise CondError(f"model.text_dim = {E} does not match the MiniLM encoder's {TEXT_DIM}")


def build_cond(
    model_cfg,
    n: int,
    *,
    classes: list[int] | None = None,
    contexts: list[list[float]] | None = None,
    prompts: list[str] | None = None,
    retrieval=None,
    negative: bool = False,
    more: str = MORE_IMAGES,
) -> Cond:
    """The cond dict of ``n`` samples for a model (a ModelConfig), each list cycled over the samples (:func:`cycled`:
    more items than samples is refused).

    ``classes``: labels in [0, num_classes); ``contexts``: vectors of length context_dim; ``prompts``: strings,
    encoded by the MiniLM encoder (text_dim = 384), and for a ``model.text_retrieval`` model their neighbours
    retrieved from ``retrieval`` (a ``retrieval.Database``, the run's). Checks each against the model; None when
    nothing is given. ``negative``: the lists are classifier-free guidance's negatives (its messages name
    --negative-context / --negative-prompt). ``more``: :func:`cycled`'s advice when a list is longer than ``n``.
    """
    cond: dict[str, Tensor] = {}
    if classes:
        K = int(getattr(model_cfg, "num_classes", 0))
        if K <= 0:
            raise CondError("this model is not class-conditional (model.num_classes = 0); drop --class")
        bad = [c for c in classes if not 0 <= int(c) < K]
        if bad:
            raise CondError(f"class {bad[0]} is out of range; this model has classes 0..{K - 1}")
        labels = torch.tensor([int(c) for c in classes], dtype=torch.long)
        cond["class"] = labels[cycled(len(classes), n, "--class classes", more)]
    if contexts:
        K = int(getattr(model_cfg, "context_dim", 0))
        flag = "--negative-context" if negative else "--context"
        if K <= 0:
            raise CondError(f"this model takes no context vectors (model.context_dim = 0); drop {flag}")
        bad = [v for v in contexts if len(v) != K]
        if bad:
            raise CondError(f"a context vector has {len(bad[0])} entries; this model needs {K}")
        rows = cycled(len(contexts), n, f"{flag} vectors", more)
        cond["context"] = torch.tensor(contexts, dtype=torch.float32)[rows]
    if prompts:
        from .text import prompt_cond

        flag = "--negative-prompt" if negative else "--prompt"
        check_takes_prompts(model_cfg, flag)
        cond.update(prompt_cond(prompts, n, what=flag))
        if getattr(model_cfg, "text_retrieval", 0):
            from .retrieval import with_neighbours

            if retrieval is None:
                raise CondError("this model retrieves training examples for its prompts; give its run's database")
            cond = with_neighbours(cond, retrieval)
    return cond or None


# The second entropy word of a "random" label's generator: its stream is not the seed's noise stream
_LABEL_STREAM = 0x1ABE1


def classes_to_sample(model_classes: int, data_classes) -> int:
    """K, the classes a class-conditional model's samples are drawn over (sample k asks for class k mod K): the
    classes its training data had (``data_classes``, run.json's ``num_classes``) where that is fewer than the
    network's ``model_classes`` - a label the data never had was never trained - else ``model_classes``; 0 for an
    unconditional model."""
    K = int(model_classes)
    return int(data_classes) if K > 0 and isinstance(data_classes, int) and 0 < data_classes < K else K


def trained_classes(model_classes: int, info: dict) -> list[int]:
    """The classes a class-conditional run's training examples held, in increasing order: those below
    :func:`classes_to_sample` of the network's ``model_classes`` and run.json's ``num_classes``, less run.json's
    ``classes_without_examples`` (labels 0, 1, 3 -> [0, 1, 3]); [] for an unconditional model."""
    held = classes_to_sample(model_classes, info.get("num_classes"))
    missing = {int(c) for c in info.get("classes_without_examples") or ()}
    return [k for k in range(held) if k not in missing]


def cycled_classes(classes: Sequence[int], n: int) -> Tensor:
    """The class of samples 0..n-1: sample k asks for ``classes[k mod len(classes)]``."""
    return torch.tensor([int(c) for c in classes], dtype=torch.long)[torch.arange(n) % len(classes)]


def run_labels(model_classes: int, info: dict, n: int) -> Tensor | None:
    """The classes of a run's own samples 0..n-1 - its training grid, evaluations, guidance sweep, distillation
    pairs: :func:`cycled_classes` over its :func:`trained_classes` (run.json ``info``), so a class no training
    example had is never asked for, and a run whose data held every class 0..K-1 asks for k mod K; None for an
    unconditional model."""
    classes = trained_classes(model_classes, info)
    return cycled_classes(classes, n) if classes else None


def seed_labels(seeds: list[int], classes: int | Sequence[int], mode: str) -> Tensor | None:
    """The class of each image of ``seeds`` when a class-conditional model is sampled without one (sample.labels).

    ``classes``: K (the classes 0..K-1), or the classes to draw from (a run's :func:`trained_classes`: a class no
    training example had is never drawn); C below is that list. ``none``: None (the learned null class).
    ``cycle``: C[seed mod |C|], so seeds 0..n-1 hold every class n / |C| times (stratified, as ``evaluate`` draws
    class models). ``random``: uniform on C from a generator of the seed alone (numpy's SeedSequence of (seed, a
    fixed stream word), independent of the noise the seed draws), so an image's class, like its noise, depends
    only on its seed.
    """
    import numpy as np

    pool = list(range(classes)) if isinstance(classes, int) else [int(c) for c in classes]
    if mode == "none" or not pool:
        return None
    if mode == "cycle":
        return torch.tensor([pool[int(s) % len(pool)] for s in seeds], dtype=torch.long)
    if mode == "random":
        draws = [np.random.default_rng([int(s), _LABEL_STREAM]).integers(len(pool)) for s in seeds]
        return torch.tensor([pool[int(d)] for d in draws], dtype=torch.long)
    raise CondError(f"unknown label mode {mode!r}; choose none, cycle or random")


def with_seed_labels(cond: Cond, seeds: list[int], classes: int | Sequence[int], mode: str) -> Cond:
    """``cond`` with the classes of :func:`seed_labels` added where it names none (a given class always wins)."""
    if isinstance(cond, dict) and "class" in cond:
        return cond
    labels = seed_labels(seeds, classes, mode)
    if labels is None:
        return cond
    return {**(cond or {}), "class": labels}


def parse_vectors(text: str, *, finite: bool = True) -> list[list[float]]:
    """``"1,0,0.6;0,1,0"`` -> [[1, 0, 0.6], [0, 1, 0]] (one-line CondError on anything else, NaN and inf included
    unless ``finite=False``: a network fed a non-finite input returns NaN)."""
    out = []
    for part in text.split(";"):
        try:
            out.append([float(v) for v in part.split(",") if v.strip()])
        except ValueError:
            raise CondError(f"cannot read the vector {part!r}; write numbers separated by commas") from None
        if not out[-1]:
            raise CondError(f"empty vector in {text!r}")
        if finite and not all(math.isfinite(v) for v in out[-1]):
            raise CondError(f"the vector {part.strip()!r} has a value that is not a finite number")
    return out


def parse_classes(text: str) -> list[int]:
    """``"7"`` or ``"0,1,2"`` -> [7] or [0, 1, 2]: class labels, whole numbers (one-line CondError on anything else;
    :func:`build_cond` checks them against the model's classes)."""
    parts = [v.strip() for v in text.split(",")]
    if not all(parts):
        raise CondError(f"cannot read the classes {text!r}; write whole numbers separated by commas, e.g. 7 or 0,1,2")
    out = []
    for v in parts:
        try:
            out.append(int(v))
        except ValueError:
            raise CondError(f"class {v!r} is not a whole number; write classes like 7 or 0,1,2") from None
    return out
