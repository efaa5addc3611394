"""Memorisation flags a sample that copies a training image and not a fresh one."""

import pytest
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


def test_each_section_names_the_rule_it_applied_and_takes_a_threshold_in_its_own_units():
    """threshold= flagged pixel copies by d1 < threshold while the feature section kept the ratio test without a
    word: each section now names its rule, and the features take their own threshold (a pixel distance means
    nothing in feature units) - here features 100 times the pixels, where a pixel threshold flags nothing."""
    x = _digits()
    train = x[:1500]
    g = torch.Generator().manual_seed(0)
    copies = train[:10] + 0.01 * torch.randn(train[:10].shape, generator=g)
    samples = torch.cat([copies, x[1500:1510]])
    feats = dict(sample_feats=100 * samples.flatten(1), train_feats=100 * train.flatten(1))
    rep = memorisation_report(samples, train, threshold=0.5, **feats)
    assert rep["rule"] == "d1 < 0.5" and rep["copy_fraction"] == 0.5
    assert rep["features"]["rule"] == "d1/d2 < 0.3333" and rep["features"]["copy_fraction"] == 0.5
    rep = memorisation_report(samples, train, threshold=0.5, feature_threshold=50.0, **feats)
    assert rep["features"]["rule"] == "d1 < 50.0" and rep["features"]["copy_fraction"] == 0.5
    rep = memorisation_report(samples, train, feature_threshold=0.5, **feats, holdout=x[1520:1600])
    assert rep["rule"] == "d1/d2 < 0.3333" and rep["features"]["copy_fraction"] == 0.0  # 0.5 in units 100x smaller


def test_exact_copies_of_an_image_held_twice_in_training_are_flagged():
    x = _digits()
    train = torch.cat([x[:50], x[:3]])  # the first three images are in the training set twice
    rep = memorisation_report(x[:3], train)
    assert rep["copy_fraction"] == 1.0  # d1 = 0: pixel-exact training images, whatever the duplicates
    assert rep["nearest"] == [0, 1, 2] and rep["nn_distance"] == [0.0, 0.0, 0.0]
    assert memorisation_report(x[:3], train, threshold=1e-9)["copy_fraction"] == 1.0
    # the ratio test against the nearest *distinct* neighbour: a fresh image is still no copy
    assert memorisation_report(x[100:103], train)["copy_fraction"] == 0.0


def test_a_sample_at_numerically_zero_distance_is_a_copy():
    a = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    train = torch.cat([a, a + 2e-8, a + 1])  # two training images far closer than any 8-bit step (2/255)
    rep = memorisation_report(a + 1e-8, train)  # d1 = d2 = 2e-8: the ratio test alone calls it no copy
    assert rep["nn_distance"] == [0.0] and rep["copy_fraction"] == 1.0  # RMS difference 1e-8 <= 1e-6: a copy


def test_the_ratio_test_needs_two_distinct_training_examples():
    a = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="at least 2 distinct training examples"):
        memorisation_report(a, torch.cat([a + 1, a + 1]))


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(feature_threshold=0.5), "feature_threshold=0.5 without features"),
        (dict(threshold=-1.0), "threshold=-1.0: a distance"),
        (dict(threshold=0.0), "threshold=0.0: a distance"),
        (dict(threshold=float("nan")), "threshold=nan: a distance"),
        (dict(threshold=float("inf")), "threshold=inf: a distance"),
        (
            dict(feature_threshold=-2.0, sample_feats=torch.zeros(1, 3), train_feats=torch.eye(3)),
            "feature_threshold=-2.0",
        ),
        (dict(ratio=0.0), "ratio=0.0: d1/d2"),
        (dict(ratio=1.5), "ratio=1.5: d1/d2"),
        (dict(sample_feats=torch.zeros(1, 3)), "sample_feats without train_feats"),
        (dict(train_feats=torch.eye(3)), "train_feats without sample_feats"),
        (dict(holdout_feats=torch.eye(3)), "holdout_feats without"),
    ],
)
def test_a_rule_that_cannot_flag_as_asked_is_refused(kw, words):
    """feature_threshold without features was ignored without a word, and threshold=-1.0 reported the rule
    'd1 < -1.0', flagging nothing (a distance is never negative); a threshold that is not a positive finite
    distance, a ratio outside (0, 1] (d1/d2 never exceeds 1), and features given by halves, are refused in one
    line."""
    a = torch.zeros(1, 1, 2, 2)
    train = torch.cat([a + 1, a + 2, a + 3])
    with pytest.raises(ValueError) as e:
        memorisation_report(a, train, **kw)
    assert words in str(e.value) and len(str(e.value).splitlines()) == 1
