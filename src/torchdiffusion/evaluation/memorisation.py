"""Memorisation: for each sample the nearest training example, and which samples look like copies.

A sample is flagged as a copy when its nearest training neighbour is much closer than the second nearest,
the relative-distance test of Carlini et al. 2023 (Sec. 4.2, "Extracting training data from diffusion models"):

    d(x, n_1) / d(x, n_2) < ratio       (ratio = 1/3 by default),

or, when an absolute ``threshold`` is given, when d(x, n_1) < threshold. A threshold is a distance in the units
of the space it is applied in: :func:`memorisation_report`'s ``threshold`` is in pixels (flattened values) and
``feature_threshold`` in the feature space; a section given none takes the ratio test, and each section names
the rule it applied (``rule``). n_1 and n_2 are the two nearest
*distinct* training examples: identical training rows are collapsed into one first, else a training image held
twice would be its own second neighbour (d_1 = d_2 = 0) and hide every exact copy of it. A sample at (numerically)
zero distance from a training example - an RMS difference per value below ``ZERO_RMS`` - is a copy whatever the
ratio says. The test needs two distinct training examples (d_2); with fewer, :func:`memorisation_report` raises
ValueError. Distances are Euclidean, computed in pixels (flattened values) and optionally in a feature space.
A fresh sample of a good model sits at about the distance a held-out real image sits from the training set;
:func:`memorisation_report` gives both.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

ZERO_RMS = 1e-6  # a sample this close to a training example per value (RMS) is that example (8-bit steps: 7.8e-3)


def nearest_neighbours(query: Tensor, train: Tensor, k: int = 2, chunk: int = 512) -> tuple[Tensor, Tensor]:
    """Distances ``(N, k)`` and indices ``(N, k)`` of the ``k`` nearest rows of ``train`` for each query row.

    Works on any shapes ``(N, ...)`` / ``(M, ...)`` (flattened); float64 distances, chunked over queries.
    """
    q = query.reshape(query.shape[0], -1).double()
    t = train.reshape(train.shape[0], -1).double()
    if q.shape[1] != t.shape[1]:
        raise ValueError(f"samples and training data differ in size: {q.shape[1]} vs {t.shape[1]} values")
    k = min(k, t.shape[0])
    ds, ids = [], []
    for i in range(0, q.shape[0], chunk):
        d = torch.cdist(q[i : i + chunk], t)
        v, j = d.topk(k, dim=1, largest=False)
        ds.append(v)
        ids.append(j)
    return torch.cat(ds), torch.cat(ids)


def distinct_rows(train: Tensor) -> tuple[Tensor, Tensor]:
    """(the distinct rows of ``train`` (M, ...) flattened, (U, D); for each, the index of its first occurrence)."""
    t = train.reshape(train.shape[0], -1)
    rows, inverse = torch.unique(t, dim=0, return_inverse=True)
    first = torch.full((rows.shape[0],), t.shape[0], dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(t.shape[0]), reduce="amin")
    return rows, first


def flag_copies(d: Tensor, ratio: float = 1 / 3, threshold: float | None = None, dim: int | None = None) -> Tensor:
    """``(N,)`` bool: copies by the ratio test of Carlini et al. 2023 (Sec. 4.2), d1 < ratio * d2, on ``d: (N, >=2)``
    - the distances to the two nearest distinct training examples - (or by the absolute ``threshold`` on d[:, 0]);
    given the values per example ``dim``, a sample at zero distance (RMS difference per value <= ZERO_RMS) is a copy
    under either rule."""
    zero = d[:, 0] <= ZERO_RMS * dim**0.5 if dim is not None else torch.zeros_like(d[:, 0], dtype=torch.bool)
    if threshold is not None:
        return (d[:, 0] < threshold) | zero
    if d.shape[1] < 2:
        raise ValueError("the d1/d2 ratio test needs at least 2 distinct training examples")
    return (d[:, 0] < ratio * d[:, 1]) | zero


def copy_rule(ratio: float = 1 / 3, threshold: float | None = None) -> str:
    """The rule :func:`flag_copies` applies for ``ratio`` and ``threshold``, as a report names it."""
    return f"d1 < {threshold}" if threshold is not None else f"d1/d2 < {ratio:.4g}"


def refuse_unfit_rules(ratio, threshold, feature_threshold, sample_feats, train_feats, holdout_feats) -> None:
    """ValueError (one line) for :func:`memorisation_report` settings no rule applies as asked: a threshold that is
    not a positive finite distance (``d1 < -1`` flags nothing: a distance is never negative), a ratio outside
    (0, 1] (d1/d2 never exceeds 1: a larger one flags everything), a ``feature_threshold`` without features, and
    features given by halves (each is ignored without them)."""
    for name, t in (("threshold", threshold), ("feature_threshold", feature_threshold)):
        if t is not None and not (math.isfinite(t) and t > 0):
            raise ValueError(f"{name}={t}: a distance d1 is flagged below it, so it must be positive and finite")
    if not (math.isfinite(ratio) and 0 < ratio <= 1):
        raise ValueError(f"ratio={ratio}: d1/d2 is flagged below it and lies in [0, 1]; take a ratio in (0, 1]")
    given = {"sample_feats": sample_feats is not None, "train_feats": train_feats is not None}
    if given["sample_feats"] != given["train_feats"]:
        has, lacks = sorted(given, key=lambda k: not given[k])
        raise ValueError(f"{has} without {lacks}: the feature section needs both")
    if not given["sample_feats"]:
        for name, value in (("feature_threshold", feature_threshold), ("holdout_feats", holdout_feats)):
            if value is not None:
                shown = f"{name}={value}" if name == "feature_threshold" else name
                raise ValueError(f"{shown} without features (sample_feats, train_feats): there is no feature section")


def _neighbours(query: Tensor, train: Tensor) -> tuple[Tensor, Tensor]:
    """Distances (N, 2) to the two nearest distinct rows of ``train``, and the index (into ``train``) of each."""
    rows, first = distinct_rows(train)
    if rows.shape[0] < 2:
        raise ValueError(
            f"the d1/d2 ratio test needs at least 2 distinct training examples; the training set has {rows.shape[0]}"
        )
    d, idx = nearest_neighbours(query, rows)
    return d, first[idx]


def memorisation_report(
    samples: Tensor,
    train: Tensor,
    *,
    ratio: float = 1 / 3,
    threshold: float | None = None,
    holdout: Tensor | None = None,
    sample_feats: Tensor | None = None,
    train_feats: Tensor | None = None,
    holdout_feats: Tensor | None = None,
    feature_threshold: float | None = None,
) -> dict:
    """JSON-ready memorisation summary of ``samples`` against ``train`` (same per-example shape).

    Keys: ``copy_fraction`` (pixels), ``nn_distance_mean``/``median`` (pixels), ``nearest`` (per-sample index of
    the nearest training example) and, given ``holdout`` real images, the same distances for them
    (``holdout_nn_distance_median``, ``holdout_copy_fraction``: the baseline a non-memorising model matches).
    With features given, the same in feature space under ``features``. Neighbours are the nearest distinct
    training examples (see the module's note); ValueError when ``train`` holds fewer than 2 distinct ones.
    ``threshold`` (a distance in pixels) flags the pixel section's copies, ``feature_threshold`` (in the features'
    units) the feature section's; a section without one takes the ``ratio`` test. Each section's ``rule`` names
    the rule it applied. A rule that cannot flag as asked is refused (ValueError, one line): see
    :func:`refuse_unfit_rules`.
    """
    refuse_unfit_rules(ratio, threshold, feature_threshold, sample_feats, train_feats, holdout_feats)
    D = samples[0].numel()
    d, idx = _neighbours(samples, train)
    flags = flag_copies(d, ratio, threshold, D)
    out = {
        "rule": copy_rule(ratio, threshold),
        "n": int(samples.shape[0]),
        "copy_fraction": float(flags.double().mean()),
        "nn_distance_mean": float(d[:, 0].mean()),
        "nn_distance_median": float(d[:, 0].median()),
        "nearest": idx[:, 0].tolist(),
        "nn_distance": [round(float(v), 5) for v in d[:, 0]],
    }
    if holdout is not None:
        dh, _ = _neighbours(holdout, train)
        out["holdout_nn_distance_median"] = float(dh[:, 0].median())
        out["holdout_copy_fraction"] = float(flag_copies(dh, ratio, threshold, D).double().mean())
    if sample_feats is not None and train_feats is not None:
        F = sample_feats[0].numel()
        df, idf = _neighbours(sample_feats, train_feats)
        feats = {
            "rule": copy_rule(ratio, feature_threshold),
            "copy_fraction": float(flag_copies(df, ratio, feature_threshold, F).double().mean()),
            "nn_distance_median": float(df[:, 0].median()),
            "nearest": idf[:, 0].tolist(),
        }
        if holdout_feats is not None:
            dhf, _ = _neighbours(holdout_feats, train_feats)
            feats["holdout_nn_distance_median"] = float(dhf[:, 0].median())
            feats["holdout_copy_fraction"] = float(flag_copies(dhf, ratio, feature_threshold, F).double().mean())
        out["features"] = feats
    return out


def closest_pairs(samples: Tensor, train: Tensor, report: dict, k: int = 16) -> Tensor:
    """The ``k`` samples closest to the training set, each followed by its nearest training image: (2k, ...)."""
    dist = torch.tensor(report["nn_distance"])
    order = dist.argsort()[:k]
    nearest = torch.tensor(report["nearest"])
    pairs = [torch.stack([samples[i], train[nearest[i]]]) for i in order.tolist()]
    return torch.cat(pairs) if pairs else samples[:0]


def save_closest_pairs(samples: Tensor, train: Tensor, report: dict, path: str | Path, k: int = 16) -> Path:
    """A grid of the closest pairs (sample, nearest training image), two columns per pair, as a PNG."""
    from ..viz import save_grid

    pairs = closest_pairs(samples, train, report, k)
    return save_grid(pairs, path, nrow=min(8, pairs.shape[0]))
