"""The evaluation classifier: training learns, shifts are shifts, weights round-trip, reports are consistent."""

import json

import pytest
import torch

from torchdiffusion.evaluation import classifier as C
from torchdiffusion.evaluation.datasets import balanced_split, load_labelled

pytestmark = pytest.mark.usefixtures("one_thread")


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 8.0 - 1.0  # 0..16 -> [-1, 1]
    return x, torch.tensor(d.target)


def test_random_shift_moves_content_without_loss():
    g = torch.Generator().manual_seed(0)
    x = torch.full((5, 2, 12, 12), -1.0)
    x[:, :, 4:8, 4:8] = torch.rand(5, 2, 4, 4)  # content away from the border survives any 2-pixel shift
    y = C.random_shift(x, 2, g)
    assert y.shape == x.shape
    assert torch.allclose((y + 1).sum((1, 2, 3)), (x + 1).sum((1, 2, 3)))
    # Each output is exactly some integer translate of its input.
    for b in range(5):
        ok = any(torch.equal(torch.roll(x[b], (dy, dx), (1, 2)), y[b]) for dy in range(-2, 3) for dx in range(-2, 3))
        assert ok
    assert torch.equal(C.random_shift(x, 0, g), x)


def test_balanced_split_is_disjoint_and_balanced():
    y = torch.arange(10).repeat_interleave(30)
    tr, te = balanced_split(y, 7, seed=3)
    assert len(set(tr.tolist()) & set(te.tolist())) == 0 and len(tr) + len(te) == len(y)
    assert torch.equal(torch.bincount(y[te]), torch.full((10,), 7))
    tr2, te2 = balanced_split(y, 7, seed=3)
    assert torch.equal(tr, tr2) and torch.equal(te, te2)


def test_training_learns_digits_and_is_deterministic(tmp_path):
    x, y = _digits()
    tr, te = balanced_split(y, 20, seed=0)
    cfg = C.ClassifierConfig(in_channels=1, num_classes=10, width=16, feature_dim=32)
    net = C.train_classifier(x[tr], y[tr], cfg=cfg, epochs=8, batch_size=32, lr=5e-3, max_shift=1, seed=0)
    acc = C.accuracy(net, x[te], y[te])
    assert acc > 0.8, acc  # chance is 0.1
    assert net.features(x[:4]).shape == (4, 32)
    # Save / load round trip is exact; the card is written beside the weights.
    path = tmp_path / "w.safetensors"
    C.save_classifier(net, path, {"heldout_accuracy": acc})
    net2 = C.load_classifier_file(path)
    assert torch.equal(net(x[:8]), net2(x[:8]))
    assert json.loads(path.with_suffix(".json").read_text())["heldout_accuracy"] == acc
    # Labels and confidences agree with the probabilities; the report's histogram sums to one.
    labels, conf = C.classify(x[te], net)
    p = C.predict(net, x[te])
    assert torch.equal(labels, p.argmax(-1)) and torch.allclose(conf, p.max(-1).values)
    rep = C.class_report(x[te], net, labels=y[te])
    assert abs(sum(rep["histogram"]) - 1) < 1e-6 and abs(rep["accuracy"] - acc) < 1e-6


def test_report_flags_missing_classes():
    x, y = _digits()
    net = C.SmallClassifier(C.ClassifierConfig(width=8, feature_dim=8))
    with torch.no_grad():  # a network that always answers class 3 with certainty
        net.out.weight.zero_()
        net.out.bias.zero_()
        net.out.bias[3] = 50.0
    rep = C.class_report(x[:50], net)
    assert rep["histogram"][3] == 1.0 and not rep["all_classes_present"] and rep["confident_fraction"] == 1.0


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(C.ClassifierError):
        C.load_classifier("no-such-data")
    net = C.SmallClassifier()
    with pytest.raises(C.ClassifierError):
        C.classify(torch.zeros(2, 3, 28, 28), net)


@pytest.mark.skipif(not C.weights_path("mnist5k").is_file(), reason="shipped MNIST-5k weights not built yet")
def test_shipped_mnist_classifier_on_its_heldout_split():
    card = C.classifier_card("mnist5k")
    x, y = load_labelled("mnist5k")
    _, te = balanced_split(y, 100, seed=card["seed"])
    rep = C.class_report(x[te], "mnist5k", labels=y[te])
    assert abs(rep["accuracy"] - card["heldout_accuracy"]) < 1e-3  # the card tells the truth
    assert rep["accuracy"] > 0.95
    d = C.digit_report(x[te])
    assert d["passes"]  # real digits pass the demo's digit check
    assert C.load_classifier("mnist5k").features(x[:3]).shape == (3, 128)
