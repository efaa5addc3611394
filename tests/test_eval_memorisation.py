"""Memorisation flags a sample that copies a training image and not a fresh one."""

import torch

from torchdiffusion.evaluation.memorisation import closest_pairs, memorisation_report, nearest_neighbours


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.images, dtype=torch.float32)[:, None] / 8.0 - 1.0


def test_copy_is_flagged_fresh_is_not(tmp_path):
    x = _digits()
    train, fresh = x[:1500], x[1500:1510]  # fresh: real digits never in train
    g = torch.Generator().manual_seed(0)
    copies = train[torch.randint(0, 1500, (10,), generator=g)]
    copies = copies + 0.01 * torch.randn(copies.shape, generator=g)  # near-exact copies
    samples = torch.cat([copies, fresh])
    rep = memorisation_report(samples, train, holdout=x[1520:1600])
    d, idx = nearest_neighbours(samples, train)
    assert rep["copy_fraction"] == 0.5
    assert rep["holdout_copy_fraction"] < 0.1
    assert all(d[:10, 0] < d[:10, 1] / 3) and not any(d[10:, 0] < d[10:, 1] / 3)
    # Exact: the nearest neighbour of a copy is the image it copies.
    ex = train[[3, 77]]
    assert nearest_neighbours(ex, train)[1][:, 0].tolist() == [3, 77]
    pairs = closest_pairs(samples, train, rep, k=4)
    assert pairs.shape == (8, 1, 8, 8)
    closest = int(torch.tensor(rep["nn_distance"]).argmin())
    assert rep["nearest"][0] == int(idx[0, 0])
    assert torch.equal(pairs[0], samples[closest]) and torch.equal(pairs[1], train[rep["nearest"][closest]])
    # An absolute threshold rule as well
    rep2 = memorisation_report(samples, train, threshold=0.5)
    assert rep2["copy_fraction"] == 0.5
