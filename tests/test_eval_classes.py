"""evaluate's classes report with a classifier of the user's own data (--classifier), checked against a classifier
whose answer is known exactly, and every way a classifier can be the wrong one for a run refused before sampling.

A classifier whose last layer is a bias alone says "class 3" with confidence ~1 for every image: the report must then
give confident share 1, all samples in class 3, and - a class-conditional run's sample k asks for class k mod 10 -
an accuracy of exactly the share of indices k with k mod 10 = 3.
"""

import json

import pytest
import torch

from tinyruns import write_run
from torchdiffusion.cli import main
from torchdiffusion.evaluation import features as FE
from torchdiffusion.evaluation.classifier import ClassifierConfig, SmallClassifier, save_classifier
from torchdiffusion.evaluation.evaluate import EvaluateError, evaluate

N = 24  # samples: indices 3, 13, 23 ask for class 3


def always(k: int, *, in_channels: int = 1, num_classes: int = 10) -> SmallClassifier:
    """A classifier that puts every image in class ``k`` (softmax ~1): zero weights, one large bias."""
    net = SmallClassifier(ClassifierConfig(in_channels=in_channels, num_classes=num_classes, width=8, feature_dim=16))
    with torch.no_grad():
        net.out.weight.zero_()
        net.out.bias.zero_()
        net.out.bias[k] = 30.0
    return net.eval()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("classes")
    write_run(root / "cond", "digits-test", ["model.num_classes=10", "sample.steps=2"])
    write_run(root / "uncond", "digits-test", ["sample.steps=2"])
    clf = root / "clf"
    save_classifier(always(3), clf / "eval-classifier.safetensors", {"heldout_accuracy": 0.1})
    return root, clf


def test_classes_report_matches_the_known_classifier(runs, tmp_path, monkeypatch, capsys):
    root, clf = runs
    monkeypatch.setenv("TORCHDIFFUSION_CACHE", str(tmp_path / "cache"))
    reports = []
    for spec in (clf, clf / "eval-classifier.safetensors"):  # the train-classifier folder or its file
        out = tmp_path / f"ev-{len(reports)}"
        args = ["evaluate", str(root / "cond"), "--metrics", "classes", "--classifier", str(spec), "--n", str(N)]
        assert main([*args, "--out", str(out), "--steps", "2"]) == 0
        reports.append(json.loads((out / "report.json").read_text())["classes"])
        summary = json.loads(capsys.readouterr().out)
        assert summary["class_accuracy"] == pytest.approx(3 / N) and summary["confident_fraction"] == 1.0
    a, b = reports
    assert a["confident_fraction"] == 1.0 and a["histogram"] == [0.0] * 3 + [1.0] + [0.0] * 6
    assert a["accuracy"] == pytest.approx(3 / N)  # k mod 10 == 3 for k in 0..23: 3, 13, 23
    assert a["per_class_accuracy"][3] == 1.0 and a["per_class_accuracy"][4] == 0.0
    assert a["classifier_heldout_accuracy"] == 0.1  # from the card beside the file
    assert {k: v for k, v in a.items() if k != "classifier"} == {k: v for k, v in b.items() if k != "classifier"}


def test_classifier_features_are_named_and_cached_by_the_file_bytes(runs, tmp_path, monkeypatch):
    root, _ = runs
    monkeypatch.setenv("TORCHDIFFUSION_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "mine" / "eval-classifier.safetensors"
    feat = f"clf:{path.parent}"
    images = torch.rand(12, 1, 8, 8) * 2 - 1
    ids, feats = [], []
    for seed in (0, 1):  # two different networks written to the same path, one after the other
        torch.manual_seed(seed)
        net = SmallClassifier(ClassifierConfig(in_channels=1, num_classes=10, width=8, feature_dim=16)).eval()
        save_classifier(net, path)
        ids.append(FE.feature_id(feat))
        feats.append(FE.reference_features("digits-test-images", lambda: images, feat))
        with torch.no_grad():
            assert torch.allclose(feats[-1], net.features(images), atol=1e-6)  # this file's network, not a cache
    assert ids[0] != ids[1] and all(i.startswith("clf-file-") for i in ids)
    assert not torch.allclose(feats[0], feats[1])
    assert FE.metric_label(feat) == "clf(mine)" and FE.metric_label("clf:mnist5k") == "MNIST5kclf"
    rep = evaluate(root / "cond", ("fd",), 16, features=[feat], out=tmp_path / "ev", steps=2, log=lambda *a: None)
    assert rep["feature_metrics"][feat]["samples"]["FD-clf(mine)"] >= 0


def _refused(args: list[str], out, capsys, words: str) -> None:
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not out.exists()


def test_a_classifier_that_does_not_fit_the_run_is_refused_before_sampling(runs, tmp_path, capsys):
    root, clf = runs
    cond, out = str(root / "cond"), tmp_path / "ev"
    # no classifier ships for the 'digits' data and none is given
    _refused(["evaluate", cond, "--metrics", "classes", "--n", "4"], out, capsys, "train-classifier")
    rgb, five, empty, junk = tmp_path / "rgb.safetensors", tmp_path / "five.safetensors", tmp_path / "e", tmp_path / "j"
    save_classifier(always(0, in_channels=3), rgb)
    save_classifier(always(0, num_classes=5), five)
    empty.mkdir()
    (junk / "eval-classifier.safetensors").parent.mkdir()
    (junk / "eval-classifier.safetensors").write_bytes(b"not weights")
    base = ["evaluate", cond, "--metrics", "classes", "--n", "4", "--classifier"]
    _refused([*base, str(rgb)], out, capsys, "reads 3-channel images; this run makes 1-channel ones")
    _refused([*base, str(five)], out, capsys, "tells 5 classes apart; this run is conditioned on 10")
    _refused([*base, str(empty)], out, capsys, "holds no eval-classifier.safetensors")
    _refused([*base, str(junk)], out, capsys, "is not a safetensors weights file")
    _refused([*base, str(tmp_path / "none.safetensors")], out, capsys, "no classifier weights at")
    features = ["evaluate", cond, "--metrics", "fd", "--n", "4", "--features"]
    _refused([*features, f"clf:{junk}"], out, capsys, "is not a safetensors weights file")
    _refused([*features, f"clf:{empty}"], out, capsys, "holds no eval-classifier.safetensors")
    # a classifier's features read images of its channel count, as --classifier: refused before sampling
    _refused([*features, f"raw,clf:{rgb}"], out, capsys, "reads 3-channel images; this run makes 1-channel ones")
    # an unconditional run takes a classifier of any number of classes (no accuracy to take)
    args = ["evaluate", str(root / "uncond"), "--metrics", "classes", "--n", "4", "--steps", "2"]
    assert main([*args, "--classifier", str(five), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())["classes"]
    assert report["histogram"] == [1.0, 0.0, 0.0, 0.0, 0.0] and "accuracy" not in report
    with pytest.raises(EvaluateError, match="needs a classifier"):
        evaluate(root / "uncond", ("classes",), 4, steps=2, log=lambda *a: None)


def test_quick_evaluation_in_training_reads_the_samples_with_the_given_classifier(runs, tmp_path, capsys):
    _, clf = runs
    out = tmp_path / "run"
    sets = ["model.num_classes=10", "train.images=64", "train.batch_size=16", "train.eval_every_images=32"]
    sets += ["train.eval_n=20", "sample.steps=2", f"train.eval_classifier={clf}"]
    args = ["train", "--preset", "digits-test", "--out", str(out), "--no-progress"]
    assert main([*args, *[a for s in sets for a in ("--set", s)]]) == 0
    evals = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "eval/seconds" in r]
    assert [r["images_seen"] for r in evals] == [32, 64]
    for r in evals:
        assert r["eval/confident_fraction"] == 1.0 and r["eval/min_class_fraction"] == 0.0
        assert r["eval/class_accuracy"] == pytest.approx(2 / 20)  # samples 3 and 13 ask for class 3
        assert r["eval/FD-clf(clf)@20"] >= 0
    capsys.readouterr()
    # a network of more classes than the data has (12 for the 10 digits) is evaluated over the data's classes, as
    # evaluate does: samples 3, 13 and 23 ask for class 3 (k mod 12 asked 3 and 15, a class never trained)
    wide = tmp_path / "wide"
    sets = ["model.num_classes=12", "train.images=32", "train.batch_size=16", "train.eval_every_images=32"]
    sets += ["train.eval_n=24", "sample.steps=2", f"train.eval_classifier={clf}"]
    assert (
        main(
            [
                "train",
                "--preset",
                "digits-test",
                "--out",
                str(wide),
                "--no-progress",
                *[a for s in sets for a in ("--set", s)],
            ]
        )
        == 0
    )
    evals = [r for r in map(json.loads, (wide / "metrics.jsonl").read_text().splitlines()) if "eval/seconds" in r]
    assert evals and all(r["eval/class_accuracy"] == pytest.approx(3 / 24) for r in evals), evals
    capsys.readouterr()
    # a classifier of 3-channel images for 1-channel digits: refused before anything is written
    rgb = tmp_path / "rgb.safetensors"
    save_classifier(always(0, in_channels=3), rgb)
    bad = tmp_path / "bad"
    sets = ["model.num_classes=10", "train.eval_every_images=32", f"train.eval_classifier={rgb}"]
    assert main(["train", "--preset", "digits-test", "--out", str(bad), *[a for s in sets for a in ("--set", s)]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.eval_classifier" in err[0] and "reads 3-channel images" in err[0], err
    assert not bad.exists()


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--metrics", "nll", "--classifier", "CLF"], "--classifier reads samples, and --metrics nll draws none"),
        (["--metrics", "fd", "--contrastive", "CLF"], "--contrastive is the model of --metrics contrastive"),
        (["--metrics", "fd", "--features", "raw", "--inception", "CLF"], "--inception is the network of --features"),
    ],
    ids=["classifier-without-samples", "contrastive-without-the-metric", "inception-without-the-features"],
)
def test_an_option_nothing_asked_for_reads_is_refused(runs, tmp_path, capsys, extra, words):
    root, clf = runs
    file = str(clf / "eval-classifier.safetensors")  # a file that exists: the refusal is about the option
    args = ["evaluate", str(root / "cond"), "--n", "4", *[file if a == "CLF" else a for a in extra]]
    _refused(args, tmp_path / "ev", capsys, words)


def test_the_sampling_record_names_every_guidance_setting_that_shaped_the_samples(runs, tmp_path):
    """Guidance interval and rescale change the samples (and the FD): the report's sampling record says which ran."""
    root, _ = runs
    args = ["evaluate", str(root / "cond"), "--metrics", "fd", "--features", "raw", "--n", "4"]
    args += ["--set", "sample.guidance=3"]
    reports = {}
    for name, sets in {
        "plain": [],
        # the interval holds the last level of the 2-step grid (80, 0.025): one that guides nowhere is refused
        "shaped": ["--set", "sample.guidance_interval=0.01,2", "--set", "sample.guidance_rescale=0.7"],
    }.items():
        assert main([*args, *sets, "--out", str(tmp_path / name)]) == 0
        reports[name] = json.loads((tmp_path / name / "report.json").read_text())
    plain, shaped = reports["plain"]["sampling"], reports["shaped"]["sampling"]
    assert (plain["guidance_interval"], plain["guidance_rescale"]) == (None, 0.0)
    assert (shaped["guidance_interval"], shaped["guidance_rescale"]) == ([0.01, 2.0], 0.7)
    assert plain["autoguidance"] == shaped["autoguidance"] == 1.0 and plain["clip_denoised"] is True
    assert reports["plain"]["feature_metrics"] != reports["shaped"]["feature_metrics"]


def test_a_run_of_fewer_classes_than_its_network_is_sampled_over_its_data_classes(runs, tmp_path):
    """A 10-class network trained on 2-class data (run.json num_classes 2): sample k asks for class k mod 2, never a
    class the data never had; the record says so. The always-class-1 classifier (of 2 classes) reads half of them
    as asked (samples 1 and 3 of 4) - 1 in 4 when they asked for k mod 10."""
    import shutil

    root, _ = runs
    run = tmp_path / "two"
    shutil.copytree(root / "cond", run)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "num_classes": 2, "class_names": ["a", "b"]}))
    clf = tmp_path / "two.safetensors"
    save_classifier(always(1, num_classes=2), clf)
    out = tmp_path / "ev"
    args = ["evaluate", str(run), "--metrics", "classes", "--n", "4", "--classifier", str(clf), "--out", str(out)]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["classes"]["accuracy"] == 0.5
    assert report["sampling"]["class_labels"] == "sample k: class k mod 2"
    assert report["sampling"]["classes"] == ["a", "b"]


def test_a_run_whose_data_skip_a_class_is_sampled_over_the_classes_it_held(runs, tmp_path):
    """A 10-class network trained on labels 0, 1, 3 (run.json num_classes 4, classes_without_examples [2]): sample
    k asks for class [0, 1, 3][k mod 3], never the class no example had nor one above the data's; the record says
    so. The always-class-3 classifier (of 4) reads 2 of 6 samples as asked (1 of 6 when they asked for k mod 4)."""
    import shutil

    root, _ = runs
    run = tmp_path / "gap"
    shutil.copytree(root / "cond", run)
    info = json.loads((run / "run.json").read_text())
    gap = {"num_classes": 4, "classes_without_examples": [2], "class_names": ["a", "b", "c", "d"]}
    (run / "run.json").write_text(json.dumps({**info, **gap}))
    clf = tmp_path / "four.safetensors"
    save_classifier(always(3, num_classes=4), clf)
    out = tmp_path / "ev"
    args = ["evaluate", str(run), "--metrics", "classes", "--n", "6", "--classifier", str(clf), "--out", str(out)]
    assert main([*args, "--steps", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["classes"]["accuracy"] == pytest.approx(2 / 6)
    assert report["sampling"]["class_labels"] == "sample k: classes[k mod 3]"
    assert report["sampling"]["classes"] == ["a", "b", "d"]


def test_the_quick_evaluation_in_training_asks_for_the_classes_the_data_held(runs, tmp_path):
    """In training, as in evaluate: labels 0, 1, 3 (num_classes 4, classes_without_examples [2]) - sample k asks for
    class [0, 1, 3][k mod 3], so the always-class-3 classifier reads 2 of 6 samples as asked."""
    from torchdiffusion.evaluation.evaluate import quick_eval
    from torchdiffusion.generate import load_run

    root, _ = runs
    run = load_run(root / "cond")
    clf = tmp_path / "four.safetensors"
    save_classifier(always(3, num_classes=4), clf)
    train_x = torch.rand(20, *run.data_shape) * 2 - 1
    out = quick_eval(run.model, run.config, run.data_shape, train_x, n=6, steps=2, classifier=str(clf),
                     data_classes=4, classes_without_examples=[2])  # fmt: skip
    assert out["eval/class_accuracy"] == pytest.approx(2 / 6)


def test_a_classifier_trained_on_another_image_size_is_refused_wherever_it_is_loaded(runs, tmp_path, capsys):
    root, _ = runs
    cond, out = str(root / "cond"), tmp_path / "ev"  # a run of 8x8 images
    sized = tmp_path / "sized" / "eval-classifier.safetensors"
    save_classifier(always(0), sized)
    card = {"data": "array", "classes": None, "image_shape": [1, 16, 16]}  # as train-classifier writes it
    sized.with_suffix(".json").write_text(json.dumps(card))
    words = "was trained on 16x16 images; this run makes 8x8 ones"
    _refused(["evaluate", cond, "--metrics", "classes", "--n", "4", "--classifier", str(sized)], out, capsys, words)
    _refused(["evaluate", cond, "--metrics", "fd", "--n", "4", "--features", f"clf:{sized}"], out, capsys, words)
    _refused(["guidance-sweep", cond, "--classifier", str(sized), "--n-per-class", "1"], out, capsys, words)
    # a card that records no image shape (an older one) is still taken
    sized.with_suffix(".json").write_text(json.dumps({k: v for k, v in card.items() if k != "image_shape"}))
    args = ["evaluate", cond, "--metrics", "classes", "--n", "4", "--steps", "2", "--classifier", str(sized)]
    assert main([*args, "--out", str(out)]) == 0
