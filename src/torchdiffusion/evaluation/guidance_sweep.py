"""The guidance sweep: class accuracy and within-class diversity of a conditional model against the CFG scale.

Every scale samples the same seeds (image k: seed ``sample.seed + k``, the (k mod K)-th class - of a class run, of
the K classes its training data held: :func:`swept_classes`), so the results differ only by the guidance. Accuracy:
the share of samples the evaluation classifier (:mod:`.classifier`) assigns to the requested class. Diversity: the
mean pairwise distance between same-class samples in the classifier's feature space, beside its value on real
images. ``torchdiffusion guidance-sweep`` is the command;
``scripts/mnist_guidance_check.py`` makes the figures in docs/guidance.md with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from ..io import atomic_write, write_json
from ..types import Callback


def class_diversity(features, labels, K: int) -> float:
    """Mean over classes of the mean pairwise L2 distance between same-class feature vectors (B, F)."""
    vals = []
    for k in range(K):
        f = features[labels == k]
        if len(f) >= 2:
            d = torch.cdist(f, f)
            vals.append(float(d.sum() / (len(f) * (len(f) - 1))))
    return sum(vals) / len(vals) if vals else float("nan")


def swept_classes(run_, mode: str) -> list[int]:
    """The classes a sweep asks for: of a class run those its training data held (cond.trained_classes: a class
    no example had was never trained), of a context run its ``context_dim`` one-hot contexts."""
    from ..cond import trained_classes

    m = run_.config.model
    return trained_classes(m.num_classes, run_.info) if mode == "class" else list(range(m.context_dim))


def sweep(
    run_,
    scales: list[float],
    *,
    classifier,
    n_per_class: int,
    mode: str,
    sample,
    log: Callable[[str], None] | None = None,
    callback: Callback | None = None,
) -> dict:
    """Sample ``n_per_class * K`` images at every scale (image k asks for ``classes[k mod K]`` of the K
    :func:`swept_classes`, as cond.cycled_classes draws them) and score them.

    Returns a JSON-ready dict with ``class_labels`` (those classes) and, per scale, ``accuracy``,
    ``per_class_accuracy`` (in the order of ``class_labels``) and ``diversity``, plus the images themselves under
    ``"_images"`` (a list of (N, C, H, W) tensors, one per scale). ``log(line)`` gets one line per scale;
    ``callback`` receives every sampler step (a progress bar).
    """
    from dataclasses import replace

    from ..cond import cycled_classes
    from ..generate import generate
    from ..guidance import GuidanceError
    from .classifier import predict
    from .evaluate import sampling_shape

    m = run_.config.model
    K = m.num_classes if mode == "class" else m.context_dim
    if K <= 0:
        raise GuidanceError(f"this model takes no {'class labels' if mode == 'class' else 'context vectors'}")
    if classifier.cfg.num_classes < K:
        raise GuidanceError(f"the evaluation classifier knows {classifier.cfg.num_classes} classes; the model has {K}")
    classes = swept_classes(run_, mode)
    N = n_per_class * len(classes)
    want = cycled_classes(classes, N)
    cond = {"class": want} if mode == "class" else {"context": torch.nn.functional.one_hot(want, K).float()}
    seeds = list(range(sample.seed, sample.seed + N))
    out = {
        "mode": mode,
        "classes": len(classes),
        "class_labels": classes,
        "n_per_class": n_per_class,
        "sampler": sample.sampler,
        "steps": sample.steps,
        "grid": sample.grid,
        **sampling_shape(sample),
        "scales": [],
        "_images": [],
    }
    for w in scales:
        x = generate(
            run_.model,
            seeds,
            replace(sample, guidance=float(w)),
            run_.data_shape,
            cond=cond,
            callback=callback,
            codec=getattr(run_, "codec", None),  # a latent run is measured on its decoded images
            grid_dir=run_.path / "grids",  # its tuned grids, as sample takes them
        )
        probs = predict(classifier, x.clamp(-1, 1))
        pred = probs.argmax(-1)
        with torch.no_grad():
            feats = classifier.features(x.clamp(-1, 1))
        hit = (pred == want).float()
        out["scales"].append(
            {
                "scale": float(w),
                "accuracy": float(hit.mean()),
                "per_class_accuracy": [round(float(hit[want == k].mean()), 4) for k in classes],
                "diversity": class_diversity(feats, want, K),
            }
        )
        out["_images"].append(x)
        if log is not None:
            r = out["scales"][-1]
            d = r["diversity"]
            shown = f"{d:.3f}" if math.isfinite(d) else "n/a (one sample per class)"
            log(f"  w = {w:g}: accuracy {r['accuracy']:.3f}, diversity {shown}")
    return out


def real_diversity(run_, classifier, n_per_class: int) -> float | None:
    """The same diversity measure on real images of the run's data set (n_per_class per class), or None."""
    from ..data import load_data

    try:
        data = load_data(run_.config.data, split="train", seed=0)
    except ValueError:
        return None
    if data.labels is None or data.kind != "image":
        return None
    K = int(data.labels.max()) + 1
    idx = torch.cat([torch.nonzero(data.labels == k).flatten()[:n_per_class] for k in range(K)])
    with torch.no_grad():
        f = classifier.features(data.x[idx])
    return class_diversity(f, data.labels[idx], K)


def plot_sweep(result: dict, path: Path, title: str = "") -> Path:
    """Accuracy (left axis) and diversity (right axis, with the real images' as a dashed line) against w."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = [r["scale"] for r in result["scales"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(s, [100 * r["accuracy"] for r in result["scales"]], "o-", color="C0", label="class accuracy")
    ax.set_xlabel("guidance scale w")
    ax.set_ylabel("accuracy (%)", color="C0")
    ax.set_ylim(0, 100)
    ax2 = ax.twinx()
    ax2.plot(s, [r["diversity"] for r in result["scales"]], "s-", color="C1", label="diversity")
    if result.get("real_diversity") is not None:
        ax2.axhline(result["real_diversity"], color="C1", ls="--", lw=1, label="diversity of real images")
    ax2.set_ylabel("within-class diversity (classifier features)", color="C1")
    ax2.set_ylim(bottom=0)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="lower right", fontsize=8)
    ax.set_title(title or "classifier-free guidance sweep", fontsize=9)
    fig.tight_layout()
    return _savefig(fig, path)


def plot_grid(result: dict, path: Path, rows_per_scale: int = 2) -> Path:
    """One band per scale: the first ``rows_per_scale`` samples of every class (class k in column k)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..viz import make_grid

    K = result["classes"]
    n = len(result["_images"])
    fig, axes = plt.subplots(n, 1, figsize=(max(4, 0.45 * K + 1), 0.5 * rows_per_scale * n + 0.6 * n), squeeze=False)
    for ax, x, r in zip(axes[:, 0], result["_images"], result["scales"]):
        g = make_grid(x[: rows_per_scale * K], nrow=K)
        if g.ndim == 3 and g.shape[-1] == 1:
            g = g[..., 0]
        ax.imshow(g, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(f"w = {r['scale']:g}", rotation=0, ha="right", va="center")
    fig.tight_layout()
    return _savefig(fig, path)


def _savefig(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
    return path


SWEEP_FILES = ("sweep.json", "sweep.png", "grid.png")  # what save_sweep writes in its folder
SWEEP_RECORD = ("sweep.json", ("run", "scales"))  # a sweep's folder is known by its numbers


def save_sweep(result: dict, out: Path, title: str = "") -> list[Path]:
    """``out``/sweep.json (the numbers), sweep.png (:func:`plot_sweep`) and grid.png (:func:`plot_grid`): the
    :data:`SWEEP_FILES`."""
    return [
        write_json({k: v for k, v in result.items() if not k.startswith("_")}, out / "sweep.json"),  # not _ keys
        plot_sweep(result, out / "sweep.png", title),
        plot_grid(result, out / "grid.png"),
    ]
