"""Train a contrastive model into a run folder: AdamW on symmetric InfoNCE, images counted, held-out report.

    config.json                 the whole resolved ContrastiveConfig (written when training starts)
    metrics.jsonl               one line per log window: loss, temperature, lr, held-out retrieval/zero-shot
    contrastive.safetensors     the weights (tower config in the metadata), written at the end
    report.json                 the held-out report of the final weights (retrieval top-1/top-5, zero-shot)

Every file is written atomically (io.py), so a Ctrl-C leaves complete files only; training starts over each
time (minutes on a CPU) and replaces the folder's earlier files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import ConfigError, to_dict, to_json
from ..io import atomic_write, json_text, write_json
from .config import ContrastiveConfig
from .metrics import heldout_report
from .model import WEIGHTS_NAME, ContrastiveModel, FrozenBackboneTower, info_nce, save_contrastive


def load_caption_data(cfg: ContrastiveConfig):
    """(training pairs, held-out pairs or None) of ``cfg.data``; ConfigError when the data has no captions."""
    from ..data import load_data

    train = load_data(cfg.data, split="train", seed=cfg.train.seed)
    if train.captions is None:
        raise ConfigError(
            f"the {cfg.data.source} data has no captions to train a contrastive model on (e.g. data.source=emoji)"
        )
    if train.kind != "image":
        raise ConfigError(f"the image tower reads (C, H, W) images; the {cfg.data.source} data is {train.kind}")
    if len(train) < 2:
        raise ConfigError("a contrastive model needs at least 2 training pairs")
    holdout = load_data(cfg.data, split="holdout", seed=cfg.train.seed) if cfg.data.holdout > 0 else None
    return train, holdout


def random_translate(x: Tensor, max_shift: int, g: torch.Generator) -> Tensor:
    """Shift each image by integers (dy, dx) in [-max_shift, max_shift]^2, the border pixels repeated outward
    (the sprite's own background, white for emoji)."""
    if max_shift <= 0:
        return x
    B, _, H, W = x.shape
    p = max_shift
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    dy, dx = (torch.randint(0, 2 * p + 1, (B,), generator=g) for _ in range(2))
    rows = (dy[:, None] + torch.arange(H))[:, None, :, None].expand(B, x.shape[1], H, W + 2 * p)
    h = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(W))[:, None, None, :].expand(B, x.shape[1], H, W)
    return h.gather(3, cols)


def templated_captions(train, templates: tuple[str, ...]) -> list[list[str]]:
    """K lists of N training texts: caption n through template k ("{caption}", "{category}" filled in); a
    template naming {category} needs class labels (ConfigError otherwise)."""
    if not any("{category}" in t for t in templates):  # (the class names are read only here)
        return [[t.format(caption=c, category="") for c in train.captions] for t in templates]
    if train.labels is None or not train.class_names:
        raise ConfigError("train.templates name {category}, but the data has no class labels")
    top = int(train.labels.max()) if len(train.labels) else -1
    if top >= len(train.class_names) or (len(train.labels) and int(train.labels.min()) < 0):
        raise ConfigError(
            f"train.templates name {{category}}, but the data's labels run to {top} and it names "
            f"{len(train.class_names)} classes (class_names)"
        )
    names = [train.class_names[int(y)] for y in train.labels]
    return [[t.format(caption=c, category=k) for c, k in zip(train.captions, names)] for t in templates]


def text_features(texts: list[list[str]], pool: bool) -> tuple[Tensor, Tensor]:
    """MiniLM features of K lists of N texts: (K, N, L, E) tokens and (K, N, L) masks; with ``pool`` (a text
    tower without transformer layers reads only the mean of its tokens) each text is one token, its pooled
    feature: the tower's output is the same, and K x N x L x E floats are never held."""
    from ..text import caption_features, pooled

    toks, masks = [], []
    for k, batch in enumerate(texts):
        t, m = caption_features(batch, cache=k == 0)  # the plain captions' features are cached per machine
        if pool:
            t, m = pooled(t, m)[:, None], torch.ones(len(batch), 1, dtype=torch.bool)
        toks.append(t)
        masks.append(m)
    L = max(t.shape[1] for t in toks)
    toks = [F.pad(t, (0, 0, 0, L - t.shape[1])) for t in toks]
    masks = [F.pad(m, (0, L - m.shape[1])) for m in masks]
    return torch.stack(toks), torch.stack(masks)


def frozen_features(tower: FrozenBackboneTower, x: Tensor, progress: bool) -> Tensor:
    """phi(x) of a frozen backbone for images ``x``, cached per machine under the images' sha256 (``sha256_tensor``)."""
    from ..evaluation.features import reference_features
    from ..io import sha256_tensor

    digest = sha256_tensor(x.float())[:20]
    return reference_features(
        f"clip-images-{digest}", lambda: x.float(), tower.backbone, batch_size=64, progress=progress
    )


def learning_rate(cfg: ContrastiveConfig, seen: int) -> float:
    """Linear warm-up over ``warmup_images``, then a cosine decay to 0 at ``images`` (in images seen)."""
    t = cfg.train
    if seen < t.warmup_images:
        return t.lr * (seen + 1) / t.warmup_images
    span = max(1, t.images - t.warmup_images)
    return t.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (seen - t.warmup_images) / span)))


def optimizer(model: ContrastiveModel, cfg: ContrastiveConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on weight matrices and kernels only (not biases, norms or the temperature), as CLIP."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.train.lr, betas=(0.9, 0.98), eps=1e-6)


def batches(n: int, batch_size: int, g: torch.Generator):
    """Endless (B,) index batches: each epoch a fresh permutation, its incomplete tail dropped (B <= n)."""
    while True:
        perm = torch.randperm(n, generator=g)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i : i + batch_size]


def train_contrastive(
    cfg: ContrastiveConfig,
    out: str | Path,
    *,
    data=None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Train ``cfg`` into the folder ``out``; returns the final held-out report (also ``out/report.json``).

    ``data``: (train, holdout) TensorData pairs (default: :func:`load_caption_data`). The batch is capped at the
    number of training pairs (InfoNCE needs distinct pairs in a batch).
    """
    from ..progress import step_bar

    out = Path(out)
    t = cfg.train
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    train, holdout = data if data is not None else load_caption_data(cfg)
    texts = templated_captions(train, t.templates)
    log(f"MiniLM features of {len(train)} captions x {len(texts)} templates (plain captions cached)")
    tokens, mask = text_features(texts, pool=cfg.model.text_layers == 0)  # (K, N, L, E), (K, N, L)
    torch.manual_seed(t.seed)
    model = ContrastiveModel(cfg.model, train.x.shape[1], tokens.shape[-1], image_size=train.x.shape[-1])
    opt = optimizer(model, cfg)
    frozen = isinstance(model.image, FrozenBackboneTower)
    if frozen:  # phi(x) of every training image, once: each step then trains the heads only
        log(f"{cfg.model.image_backbone} features of {len(train)} training images (cached per machine)")
        phi = frozen_features(model.image, train.x, progress)
    g = torch.Generator().manual_seed(t.seed)
    B = min(t.batch_size, len(train))
    if B < t.batch_size:  # the config saved beside the weights says the batch that ran
        log(f"train.batch_size={t.batch_size} capped at the {B} training pairs (InfoNCE needs distinct pairs)")
        cfg = replace(cfg, train=replace(t, batch_size=B))
        t = cfg.train
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "config.json", to_json(cfg) + "\n")
    lines: list[str] = []
    atomic_write(out / "metrics.jsonl", "")
    seen, window, t0 = 0, [], time.time()
    next_log = t.log_every_images or t.images
    with step_bar(t.images, f"contrastive {cfg.preset}", "img", show=progress) as bar:
        for idx in batches(len(train), B, g):
            if seen >= t.images:
                break
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg, seen)
            model.train()
            k = torch.randint(0, len(texts), (len(idx),), generator=g) if len(texts) > 1 else torch.zeros_like(idx)
            if frozen:
                z_img = F.normalize(model.image.head(phi[idx]), dim=-1)
                loss = info_nce(model.logit_scale() * z_img @ model.encode_text(tokens[k, idx], mask[k, idx]).T)
            else:
                x = random_translate(train.x[idx], t.max_shift, g)
                loss = info_nce(model(x, tokens[k, idx], mask[k, idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            model.clamp_temperature_()
            seen += B
            window.append(loss.item())
            bar.update(B)
            bar.set_postfix(loss=f"{window[-1]:.3f}", tau=f"{1 / model.logit_scale().item():.4f}")
            if seen >= next_log or seen >= t.images:
                next_log += t.log_every_images or t.images
                lines.append(json_text(_log_line(model, cfg, seen, window, holdout, time.time() - t0)))
                atomic_write(out / "metrics.jsonl", "".join(s + "\n" for s in lines))
                window = []
    report = _final_report(model, cfg, train, holdout, seen)
    save_contrastive(model, out / WEIGHTS_NAME, card={k: report[k] for k in ("preset", "data", "images_seen")})
    write_json(report, out / "report.json")
    return report


def _log_line(model: ContrastiveModel, cfg: ContrastiveConfig, seen: int, window: list, holdout, seconds) -> dict:
    line = {
        "images_seen": seen,
        "loss": sum(window) / max(1, len(window)),
        "temperature": 1 / model.logit_scale().item(),
        "lr": learning_rate(cfg, max(0, seen - 1)),
        "seconds": round(seconds, 1),
    }
    if holdout is not None:
        rep = heldout_report(model, holdout)
        line.update({f"heldout/caption_to_image_{k}": v for k, v in rep["retrieval"]["caption_to_image"].items()})
        if "zero_shot" in rep:
            line["heldout/zero_shot_accuracy"] = rep["zero_shot"]["accuracy"]
    return line


def _final_report(model: ContrastiveModel, cfg: ContrastiveConfig, train, holdout, seen: int) -> dict:
    report = {
        "preset": cfg.preset,
        "data": to_dict(cfg.data),
        "images_seen": seen,
        "train_pairs": len(train),
        "temperature": 1 / model.logit_scale().item(),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if holdout is not None:
        from ..data import data_seed

        by = "data.seed" if cfg.data.seed is not None else "train.seed"
        report["heldout"] = heldout_report(model, holdout)
        report["heldout_split"] = (
            f"data.holdout={cfg.data.holdout} whole emoji (the last ones of a permutation seeded with "
            f"{by}={data_seed(cfg.data, cfg.train.seed)}), never seen in training"
        )
    return report
