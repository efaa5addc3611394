"""`torchdiffusion train-classifier` end to end (real subprocess, tiny settings), then classifier guidance with it."""

import json

import numpy as np
import torch

from tinyruns import td, write_run


def test_train_classifier_then_guide_towards_a_class(tmp_path):
    clf = tmp_path / "clf"
    rc, _, err = td(
        *("train-classifier", "digits-test", "--out", clf, "--images", "3000", "--batch-size", "64"),
        *("--holdout", "300", "--width", "8", "--threads", "1"),
    )
    assert rc == 0, err
    card = json.loads((clf / "noisy-classifier.json").read_text())
    assert card["data"] == "digits" and card["classes"] == [str(k) for k in range(10)]
    assert card["image_shape"] == [1, 8, 8]  # sample --classifier refuses it for a run of other images
    assert card["images"] == 3000 and card["holdout"] == 300 and card["arguments"]["width"] == 8
    acc = {float(s): a for s, a in card["heldout_accuracy_by_sigma"].items()}
    assert sorted(acc) == [0.05, 0.2, 0.5, 1.0, 2.0, 5.0]
    # Held-out digits at low noise are read well above chance (10 %); noise erases what the classifier can read.
    assert acc[0.05] > 0.3
    assert acc[5.0] < acc[0.05] - 0.15

    # Classifier guidance with it (`sample --class --classifier`) moves an unconditional model's samples (same
    # seeds) towards the requested class.
    run = write_run(tmp_path / "run", "digits-test", ["sample.steps=4", "sample.grid=karras"])
    samples = {}
    for name, extra in (("plain", []), ("guided", ["--class", "3", "--classifier", clf, "--classifier-scale", "8"])):
        out = tmp_path / f"{name}.png"
        rc, _, err = td("sample", run, "--n", "16", "--save-npy", "--out", out, *extra)
        assert rc == 0, err
        samples[name] = torch.from_numpy(np.load(out.with_suffix(".npy")))
    assert samples["plain"].shape == samples["guided"].shape == (16, 1, 8, 8)
    from torchdiffusion.evaluation.noisy_classifier import load_noisy_classifier

    net = load_noisy_classifier(clf)
    with torch.no_grad():
        logp = {k: torch.log_softmax(net(x, torch.full((16,), 0.05)), -1) for k, x in samples.items()}
    assert logp["guided"][:, 3].mean() > logp["plain"][:, 3].mean() + 0.5
    share = {k: float((v.argmax(-1) == 3).float().mean()) for k, v in logp.items()}
    assert share["guided"] > share["plain"] + 0.2, share


def test_the_classifier_of_a_run_tells_its_classes_apart_though_the_data_lack_the_top_one(tmp_path):
    # labels from {0, 1, 3} on a run conditioned on 5 classes: both classifiers tell 5 classes apart (what sample
    # --classifier and guidance-sweep --classifier ask of them), not the 4 the labels reach
    from tinyruns import cli
    from torchdiffusion.evaluation.classifier import read_classifier_file

    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.integers(0, 256, (40, 1, 8, 8)).astype(np.uint8))
    np.save(tmp_path / "y.npy", np.array([0, 1, 3] * 13 + [0], dtype=np.int64))
    data = ["data.source=array", f"data.path={tmp_path / 'x.npy'}", f"data.labels_path={tmp_path / 'y.npy'}"]
    run = write_run(tmp_path / "run", "digits-test", [*data, "model.num_classes=5"])
    small = ("--images", "32", "--batch-size", "16", "--width", "4", "--holdout", "8", "--threads", "1")
    rc, _, err = cli("train-classifier", run, *small)
    assert rc == 0, err
    assert json.loads((run / "classifier" / "noisy-classifier.json").read_text())["config"]["num_classes"] == 5
    rc, _, err = cli("train-classifier", run, "--evaluation", "--epochs", "1", *small)
    assert rc == 0, err
    meta = read_classifier_file(run / "classifier" / "eval-classifier.safetensors")[0]
    assert json.loads(meta["config"])["num_classes"] == 5


def test_the_noise_aware_classifier_trains_over_the_noise_levels_of_the_runs_model(tmp_path, monkeypatch):
    """A rectified-flow run narrowed to sigma in [0.5, 5] (diffusion.sigma_min/sigma_max): the classifier is trained
    on noise levels drawn as the run's model's are (losses.training_sigmas), all within that range and spread over
    it - not over the default [0.002, 80] the model never saw."""
    from tinyruns import cli
    from torchdiffusion.commands.train_classifier import sigma_sampler
    from torchdiffusion.config import override
    from torchdiffusion.evaluation import noisy_classifier
    from torchdiffusion.losses import training_sigmas
    from torchdiffusion.presets import TRAIN_OBJECTIVES, get_preset

    flow = [s for s in TRAIN_OBJECTIVES["rectified_flow"] if s.startswith("diffusion.")]  # what it reads
    flow += ["diffusion.sigma_min=0.5", "diffusion.sigma_max=5"]
    drawn, real = [], noisy_classifier.train_noisy_classifier

    def recorded(x, labels, sampler, **kw):
        return real(x, labels, lambda b, g: drawn.append(sampler(b, g)) or drawn[-1], **kw)

    monkeypatch.setattr(noisy_classifier, "train_noisy_classifier", recorded)
    sets = [a for s in flow for a in ("--set", s)]
    small = ("--images", "256", "--batch-size", "64", "--width", "4", "--holdout", "8", "--threads", "1")
    rc, _, err = cli("train-classifier", "digits-test", *sets, *small, "--out", tmp_path / "clf")
    assert rc == 0, err
    sigma = torch.cat(drawn)
    assert len(sigma) == 256 and sigma.min() >= 0.5 - 1e-5 and sigma.max() <= 5 + 1e-5
    assert sigma.min() < 1 and sigma.max() > 3  # over the range, not a corner of it
    # the same draw as the run's training: one generator gives the classifier and the model the same levels
    cfg = override(get_preset("digits-test"), flow)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert sigma_sampler(cfg)(64, g1).equal(training_sigmas(cfg.diffusion, 64, g2))
