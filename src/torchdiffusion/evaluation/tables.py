"""Metrics of synthetic tables against real ones (rows encoded as in data/table.py; every metric named here).

Every metric sees the rows as a sampled CSV holds them (``table_metrics`` re-encodes the decoded cells).

* ``marginal``: per-column marginal distance, averaged over columns - the 1-D Wasserstein-1 distance for
  numeric columns (in the quantile-normalised units, so every column weighs the same; W1 between two empirical
  distributions is the mean |difference| of their quantile functions) and the total variation
  1/2 sum_k |p_k - q_k| for categorical ones. Reported per column and as means ``marginal_w1`` / ``marginal_tv``.
* ``correlation``: pairwise correlation error - the mean over column pairs of |r_real - r_synth|, with r the
  Pearson correlation of the encoded columns (categories one-hot encoded, so a pair of a numeric and a
  categorical column compares the correlation of the number with each category's indicator, averaged).
* ``tstr``: train-on-synthetic / test-on-real accuracy - a logistic regression (scikit-learn, on the other
  columns, categories one-hot) fitted on the synthetic rows predicts the target column of the real held-out
  rows; beside it ``trtr``, the same model fitted on the real training rows. (Esteban et al. 2017.)
* ``dcr``: distance to closest record - for every synthetic row the Euclidean distance (encoded units,
  categories one-hot) to its nearest real training row, compared with the same distance for real held-out
  rows. ``dcr_copy_share`` is the share of synthetic rows closer to a training row than the 5th percentile of
  the held-out rows' distances; about 0.05 for a model that does not copy, near 1 when rows are copies.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from ..data.table import TableSchema, as_decoded

TABLE_METRICS = ("marginal", "correlation", "tstr", "dcr")
DCR_QUANTILE = 0.05  # a synthetic row closer than this quantile of the held-out rows' distances counts as a copy


def _split(x: Tensor, schema: TableSchema) -> tuple[np.ndarray, np.ndarray]:
    a = x.detach().cpu().double().numpy()
    return a[:, : schema.num_numeric], np.round(a[:, schema.num_numeric :]).astype(int)


def one_hot_rows(x: Tensor, schema: TableSchema, drop: str | None = None) -> np.ndarray:
    """(N, Dn + sum K_j) features: numeric columns as encoded, categories one-hot; ``drop`` leaves a column out."""
    num, cat = _split(x, schema)
    parts = [num[:, [j]] for j, c in enumerate(schema.numeric) if c != drop]
    for j, (c, K) in enumerate(zip(schema.categorical, schema.num_categories)):
        if c != drop:
            parts.append(np.eye(K)[np.clip(cat[:, j], 0, K - 1)])
    return np.concatenate(parts, 1) if parts else np.zeros((len(num), 0))


def wasserstein1(a: np.ndarray, b: np.ndarray, grid: int = 1000) -> float:
    """W1 between two 1-D empirical distributions: mean |F_a^-1(p) - F_b^-1(p)| over a fine p grid."""
    p = (np.arange(grid) + 0.5) / grid
    return float(np.abs(np.quantile(a, p) - np.quantile(b, p)).mean())


def marginal_distances(real: Tensor, synth: Tensor, schema: TableSchema) -> dict:
    rn, rc = _split(real, schema)
    sn, sc = _split(synth, schema)
    w1 = {c: wasserstein1(rn[:, j], sn[:, j]) for j, c in enumerate(schema.numeric)}
    tv = {}
    for j, (c, K) in enumerate(zip(schema.categorical, schema.num_categories)):
        p = np.bincount(rc[:, j], minlength=K) / len(rc)
        q = np.bincount(np.clip(sc[:, j], 0, K - 1), minlength=K) / len(sc)
        tv[c] = float(0.5 * np.abs(p - q).sum())
    return {
        "marginal_w1": float(np.mean(list(w1.values()))) if w1 else None,
        "marginal_tv": float(np.mean(list(tv.values()))) if tv else None,
        "marginal_by_column": {**w1, **tv},
    }


def _column_blocks(schema: TableSchema) -> list[list[int]]:
    """The feature indices of each column in :func:`one_hot_rows`' layout."""
    blocks, o = [], 0
    for _ in schema.numeric:
        blocks.append([o])
        o += 1
    for K in schema.num_categories:
        blocks.append(list(range(o, o + K)))
        o += K
    return blocks


def _corr(f: np.ndarray) -> np.ndarray:
    f = f - f.mean(0)
    s = np.sqrt((f**2).mean(0))
    s[s == 0] = np.inf  # a constant feature correlates with nothing
    return (f.T @ f / len(f)) / np.outer(s, s)


def correlation_error(real: Tensor, synth: Tensor, schema: TableSchema) -> float:
    """Mean over column pairs of the mean |r_real - r_synth| between their features (module docstring)."""
    cr, cs = _corr(one_hot_rows(real, schema)), _corr(one_hot_rows(synth, schema))
    blocks = _column_blocks(schema)
    errs = [
        float(np.abs(cr[np.ix_(a, b)] - cs[np.ix_(a, b)]).mean()) for i, a in enumerate(blocks) for b in blocks[i + 1 :]
    ]
    return float(np.mean(errs)) if errs else 0.0


def _accuracy(train: Tensor, test: Tensor, schema: TableSchema, seed: int) -> float | None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    j = schema.categorical.index(schema.target)
    y_train = _split(train, schema)[1][:, j]
    y_test = _split(test, schema)[1][:, j]
    if len(np.unique(y_train)) < 2:  # one class: the model predicts it everywhere
        return float((y_test == y_train[0]).mean())
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=sklearn_seed(seed)))
    clf.fit(one_hot_rows(train, schema, drop=schema.target), y_train)
    return float(clf.score(one_hot_rows(test, schema, drop=schema.target), y_test))


def sklearn_seed(seed: int) -> int:
    """scikit-learn's ``random_state`` for an evaluation seed (any of [0, 2^62]): the seed mod 2^32, the range
    scikit-learn (numpy's legacy RandomState) takes; the same seed always gives the same state."""
    return seed % 2**32


def tstr(train_real: Tensor, test_real: Tensor, synth: Tensor, schema: TableSchema, seed: int = 0) -> dict:
    """Train-on-synthetic/test-on-real and train-on-real/test-on-real accuracy of the target column."""
    if schema.target is None:
        return {"tstr": None, "trtr": None}
    return {
        "tstr": _accuracy(synth, test_real, schema, seed),
        "trtr": _accuracy(train_real, test_real, schema, seed),
    }


def _nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each row of a, the Euclidean distance to its nearest row of b."""
    d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(d2, 0, None).min(1))


def dcr(train_real: Tensor, test_real: Tensor, synth: Tensor, schema: TableSchema) -> dict:
    """Distance to closest record (module docstring)."""
    tr = one_hot_rows(train_real, schema)
    d_synth = _nearest(one_hot_rows(synth, schema), tr)
    d_hold = _nearest(one_hot_rows(test_real, schema), tr)
    threshold = float(np.quantile(d_hold, DCR_QUANTILE))
    return {
        "dcr_median": float(np.median(d_synth)),
        "dcr_holdout_median": float(np.median(d_hold)),
        "dcr_copy_share": float((d_synth < threshold).mean()),
    }


def independent_marginals(train_real: Tensor, n: int, schema: TableSchema, seed: int = 0) -> Tensor:
    """The baseline: n rows whose every column is drawn on its own from that column's training values."""
    import torch

    g = np.random.default_rng(seed)
    cols = [train_real[g.integers(0, len(train_real), n), j] for j in range(train_real.shape[1])]
    return torch.stack(cols, 1)


def table_metrics(train_real: Tensor, test_real: Tensor, synth: Tensor, schema: TableSchema, seed: int = 0) -> dict:
    """Every metric of the module docstring for one synthetic table (marginals and correlations vs test_real),
    each on the rows as written to a CSV (data.table.as_decoded): a constant column's drawn codes, values beyond
    the training range or between whole numbers count as the cells they decode to."""
    train_real, test_real, synth = (as_decoded(t, schema) for t in (train_real, test_real, synth))
    return {
        **marginal_distances(test_real, synth, schema),
        "correlation_error": correlation_error(test_real, synth, schema),
        **tstr(train_real, test_real, synth, schema, seed),
        **dcr(train_real, test_real, synth, schema),
    }
