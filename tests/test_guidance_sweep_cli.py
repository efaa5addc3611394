"""`torchdiffusion guidance-sweep` end to end on a tiny class-conditional run (real subprocess): its accuracies
are those of the same samples drawn with generate() and read by the same classifier."""

import json
from dataclasses import replace

import torch

from pictures import assert_plot
from tinyruns import CLASS_RUN, cli, write_run
from torchdiffusion.evaluation.classifier import (
    ClassifierConfig,
    load_classifier_file,
    predict,
    save_classifier,
    train_classifier,
)
from torchdiffusion.generate import generate, load_run


def digits_classifier(path):
    """A small evaluation classifier of the 8x8 scikit-learn digits (2 epochs: well above chance)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 8 - 1  # 0..16 -> [-1, 1]
    y = torch.tensor(d.target)
    net = train_classifier(x, y, cfg=ClassifierConfig(in_channels=1, num_classes=10, width=8), epochs=2, max_shift=1)
    save_classifier(net, path)
    return path


def test_guidance_sweep_matches_generate_and_the_classifier(tmp_path):
    run_dir = write_run(tmp_path / "run", *CLASS_RUN)
    clf = digits_classifier(tmp_path / "clf.safetensors")
    out = tmp_path / "sweep"
    rc, _, err = cli(
        *("guidance-sweep", run_dir, "--scales", "0,2,2", "--n-per-class", "3", "--steps", "2"),
        *("--classifier", clf, "--no-reference", "--out", out),
    )
    assert rc == 0, err
    res = json.loads((out / "sweep.json").read_text())
    assert res["mode"] == "class" and res["classes"] == 10 and res["n_per_class"] == 3 and res["steps"] == 2
    assert [r["scale"] for r in res["scales"]] == [0.0, 2.0, 2.0]
    assert res["scales"][1] == res["scales"][2]  # the same seeds at every scale: a repeated scale repeats exactly

    # The oracle: the same 30 images (image k: seed k, class k mod 10) from generate(), read by the classifier.
    run = load_run(run_dir)
    net = load_classifier_file(clf)
    want = torch.arange(30) % 10
    for r in res["scales"]:
        sample = replace(run.config.sample, guidance=r["scale"], steps=2)
        x = generate(run.model, range(30), sample, run.data_shape, cond={"class": want})
        hit = (predict(net, x.clamp(-1, 1)).argmax(-1) == want).float()
        assert abs(r["accuracy"] - float(hit.mean())) < 1e-6
        assert r["per_class_accuracy"] == [round(float(hit[want == k].mean()), 4) for k in range(10)]
        assert r["diversity"] > 0  # distinct samples of a class sit apart in feature space
    assert res["scales"][0] != res["scales"][1]  # the guidance scale reaches the samples
    assert_plot(out / "sweep.png")
    assert_plot(out / "grid.png")
    # the folder 'train-classifier --evaluation' writes names the same classifier as its file
    (tmp_path / "clf-run").mkdir()
    (tmp_path / "clf-run" / "eval-classifier.safetensors").write_bytes(clf.read_bytes())
    rc, _, err = cli(
        *("guidance-sweep", run_dir, "--scales", "2", "--n-per-class", "3", "--steps", "2"),
        *("--classifier", tmp_path / "clf-run", "--no-reference", "--out", tmp_path / "sweep-folder"),
    )
    assert rc == 0, err
    assert json.loads((tmp_path / "sweep-folder" / "sweep.json").read_text())["scales"] == [res["scales"][1]]
    # the sampling flags of 'sample' reach every scale's draw, and the sweep records them
    rc, _, err = cli(
        *("guidance-sweep", run_dir, "--scales", "2", "--n-per-class", "3", "--steps", "2", "--sampler", "heun"),
        *("--grid", "karras", "--rho", "3", "--classifier", clf, "--no-reference", "--out", tmp_path / "sweep-heun"),
    )
    heun = json.loads((tmp_path / "sweep-heun" / "sweep.json").read_text())
    assert rc == 0 and (heun["sampler"], heun["grid"], heun["rho"]) == ("heun", "karras", 3.0), err
    assert heun["scales"][0]["diversity"] != res["scales"][1]["diversity"]
    # one sample per class has no within-class distance: diversity is null in strict JSON, not NaN
    rc, _, err = cli(
        *("guidance-sweep", run_dir, "--scales", "2", "--n-per-class", "1", "--steps", "2"),
        *("--classifier", clf, "--no-reference", "--out", tmp_path / "sweep-one"),
    )
    strict = json.loads((tmp_path / "sweep-one" / "sweep.json").read_text(), parse_constant=_refuse)
    assert rc == 0 and strict["scales"][0]["diversity"] is None and "diversity n/a" in err, err


def _refuse(token: str):
    raise ValueError(f"{token} is not JSON")


def test_sweep_samples_on_the_runs_tuned_grid(tmp_path):
    """A run's tuned grid (grids/, taken by sample.grid = auto) is the grid every scale of the sweep samples on."""
    from torchdiffusion.evaluation.guidance_sweep import sweep
    from torchdiffusion.samplers.optimize_grid import grid_path, save_grid

    name, sets = CLASS_RUN
    run_dir = write_run(tmp_path / "run", name, [*sets, "sample.sampler=ddim", "sample.steps=2", "sample.grid=auto"])
    tuned = torch.tensor([2.5, 0.4, 0.0], dtype=torch.float64)
    save_grid(grid_path(run_dir, "ddim", 2), tuned, {"sampler": "ddim"})
    run = load_run(run_dir)
    net = load_classifier_file(digits_classifier(tmp_path / "clf.safetensors"))
    res = sweep(run, [2.0], classifier=net, n_per_class=1, mode="class", sample=run.config.sample)
    want = torch.arange(10)
    sample = replace(run.config.sample, guidance=2.0)
    on_tuned = generate(run.model, range(10), sample, run.data_shape, cond={"class": want}, grid_dir=run_dir / "grids")
    default = generate(run.model, range(10), sample, run.data_shape, cond={"class": want})
    assert torch.equal(res["_images"][0], on_tuned) and not torch.allclose(on_tuned, default)


def test_guidance_settings_are_read_at_the_swept_scales(tmp_path):
    # the run was saved with sample.guidance=1, where rescale and interval are read by nothing; the sweep samples at
    # --scales, and at 2 both are read: they are taken, and they change that scale's samples
    run_dir = write_run(tmp_path / "run", *CLASS_RUN)
    assert load_run(run_dir).config.sample.guidance == 1.0
    clf = digits_classifier(tmp_path / "clf.safetensors")
    common = ("--scales", "1,2", "--n-per-class", "2", "--steps", "4", "--classifier", clf, "--no-reference")
    rows = {}
    for name, extra in (
        ("plain", []),
        ("rescale", ["--set", "sample.guidance_rescale=0.7"]),
        ("interval", ["--set", "sample.guidance_interval=0.5,5"]),
    ):
        rc, _, err = cli("guidance-sweep", run_dir, *common, *extra, "--out", tmp_path / name)
        assert rc == 0, err
        rows[name] = json.loads((tmp_path / name / "sweep.json").read_text())["scales"]
    for name in ("rescale", "interval"):
        assert rows[name][0] == rows["plain"][0]  # scale 1: the conditional branch alone
        assert rows[name][1]["diversity"] != rows["plain"][1]["diversity"]
    # at scale 1 alone nothing reads them: refused in one line
    once = ("--scales", "1", *common[2:], "--set", "sample.guidance_rescale=0.7")
    rc, _, err = cli("guidance-sweep", run_dir, *once, "--out", tmp_path / "once")
    assert rc == 2 and "changes nothing" in err, err


def test_sweep_asks_for_the_classes_the_runs_data_held(tmp_path):
    """A 10-class network whose data held labels 0, 1, 3 (run.json num_classes 4, classes_without_examples [2]):
    image k asks for class [0, 1, 3][k mod 3], never the class no example had nor one above the data's; the result
    names those classes, per_class_accuracy follows them, and the command's sweep.json and grid say the same."""
    from torchdiffusion.evaluation.classifier import SmallClassifier
    from torchdiffusion.evaluation.guidance_sweep import sweep

    run_dir = write_run(tmp_path / "run", *CLASS_RUN)
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "num_classes": 4, "classes_without_examples": [2]}))
    run = load_run(run_dir)
    net = SmallClassifier(ClassifierConfig(in_channels=1, num_classes=10, width=8)).eval()
    res = sweep(run, [2.0], classifier=net, n_per_class=2, mode="class", sample=replace(run.config.sample, steps=2))
    want = torch.tensor([0, 1, 3, 0, 1, 3])
    x = generate(run.model, range(6), replace(run.config.sample, guidance=2.0, steps=2), run.data_shape,
                 cond={"class": want})  # fmt: skip
    assert torch.equal(res["_images"][0], x)
    assert (res["classes"], res["class_labels"], len(res["scales"][0]["per_class_accuracy"])) == (3, [0, 1, 3], 3)
    hit = (predict(net, x.clamp(-1, 1)).argmax(-1) == want).float()
    assert res["scales"][0]["per_class_accuracy"] == [round(float(hit[want == k].mean()), 4) for k in (0, 1, 3)]
    save_classifier(net, tmp_path / "clf.safetensors")
    rc, _, err = cli(
        *("guidance-sweep", run_dir, "--scales", "2", "--n-per-class", "2", "--steps", "2"),
        *("--classifier", tmp_path / "clf.safetensors", "--no-reference", "--out", tmp_path / "sweep"),
    )
    assert rc == 0, err
    saved = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert (saved["class_labels"], saved["scales"]) == ([0, 1, 3], res["scales"])
    assert_plot(tmp_path / "sweep" / "grid.png")


def test_sweep_of_a_run_whose_data_held_every_class_asks_for_k_mod_k(tmp_path):
    from torchdiffusion.evaluation.classifier import SmallClassifier
    from torchdiffusion.evaluation.guidance_sweep import sweep

    run_dir = write_run(tmp_path / "run", *CLASS_RUN)
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "num_classes": 10, "classes_without_examples": []}))
    run = load_run(run_dir)
    net = SmallClassifier(ClassifierConfig(in_channels=1, num_classes=10, width=8)).eval()
    res = sweep(run, [2.0], classifier=net, n_per_class=1, mode="class", sample=replace(run.config.sample, steps=2))
    x = generate(run.model, range(10), replace(run.config.sample, guidance=2.0, steps=2), run.data_shape,
                 cond={"class": torch.arange(10) % 10})  # fmt: skip
    assert torch.equal(res["_images"][0], x) and res["classes"] == 10 and res["class_labels"] == list(range(10))
