"""sample.labels: the classes a class-conditional model is sampled at when no class is given."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from tinyruns import cli, write_run
from torchdiffusion.cond import CondError, seed_labels, with_seed_labels
from torchdiffusion.config import ConfigError, override, validate
from torchdiffusion.generate import generate, load_run
from torchdiffusion.presets import get_preset


def test_cycle_is_seed_mod_k_and_stratified():
    labels = seed_labels(list(range(30)), 10, "cycle")
    assert labels.tolist() == [s % 10 for s in range(30)]
    assert torch.bincount(labels, minlength=10).tolist() == [3] * 10


def test_random_labels_depend_on_the_seed_alone_and_are_uniform():
    seeds = list(range(20_000))
    labels = seed_labels(seeds, 10, "random")
    # an image's class depends only on its seed: the same seed anywhere in the list, alone or in another order
    assert seed_labels([123, 7], 10, "random").tolist() == [labels[123].item(), labels[7].item()]
    assert seed_labels(seeds[::-1], 10, "random").flip(0).equal(labels)
    # uniform: Pearson's chi-square over 10 classes (9 degrees of freedom; 27.9 is its 0.999 quantile)
    counts = torch.bincount(labels, minlength=10).double()
    expected = len(seeds) / 10
    assert ((counts - expected) ** 2 / expected).sum() < 27.9
    # not the cycle: consecutive seeds' classes agree about 1 time in K
    same = (labels[1:] == labels[:-1]).double().mean().item()
    assert 0.08 < same < 0.12
    # independent of the noise the seed draws: the class is not a function of the first noise value's sign
    first = torch.stack([torch.randn(1, generator=torch.Generator().manual_seed(s)) for s in seeds[:4000]]).flatten()
    pos = labels[:4000][first > 0].double()
    neg = labels[:4000][first <= 0].double()
    assert abs(pos.mean().item() - neg.mean().item()) < 0.3  # each mean 4.5, standard error ~0.13 of the difference


def test_none_and_a_given_class_leave_the_conditioning_alone():
    assert seed_labels([0, 1], 10, "none") is None
    assert with_seed_labels(None, [0, 1], 10, "none") is None
    given = {"class": torch.tensor([3, 3])}
    assert with_seed_labels(given, [0, 1], 10, "cycle") is given
    assert with_seed_labels(None, [0, 1], 0, "cycle") is None  # an unconditional model
    added = with_seed_labels({"context": torch.zeros(2, 4)}, [4, 5], 10, "cycle")
    assert added["class"].tolist() == [4, 5] and "context" in added
    with pytest.raises(CondError, match="unknown label mode"):
        seed_labels([0], 10, "stratified")


def test_config_refuses_labels_on_an_unconditional_model_and_unknown_modes():
    cfg = get_preset("digits-test")
    with pytest.raises(ConfigError, match="not class-conditional"):
        validate(override(cfg, ["sample.labels=cycle"]))
    with pytest.raises(ConfigError, match="sample.labels must be one of"):
        validate(override(cfg, ["model.num_classes=10", "sample.labels=every"]))
    validate(override(cfg, ["model.num_classes=10", "sample.labels=random"]))


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labels") / "class"
    return write_run(folder, "digits-test", ["model.num_classes=10", "sample.steps=3"], (1, 8, 8), jitter=0.2)


def test_generate_samples_the_classes_the_labels_name(class_run):
    run = load_run(class_run)
    seeds = list(range(6))
    base = replace(run.config.sample, n=len(seeds))

    def draw(labels, cond=None):
        return generate(run.model, seeds, replace(base, labels=labels), run.data_shape, cond=cond)

    explicit = {"class": torch.tensor([s % 10 for s in seeds])}
    assert draw("cycle").equal(draw("none", explicit))  # cycle = the classes seed mod K given by hand
    assert not draw("cycle").equal(draw("none"))  # and not the null class
    random = seed_labels(seeds, 10, "random")
    assert draw("random").equal(draw("none", {"class": random}))
    given = {"class": torch.full((6,), 7)}
    assert draw("cycle", given).equal(draw("none", given))  # a given class wins over sample.labels
    # image k depends only on seed k: the same seed sampled alone gives the same image and class
    alone = generate(run.model, [4], replace(base, n=1, labels="random"), run.data_shape)
    assert torch.allclose(alone, draw("random")[4:5], atol=1e-4)  # (a batch of 1: other float summation order)
    assert not torch.allclose(alone, draw("random")[5:6], atol=1e-2)


def test_labels_are_drawn_among_the_classes_the_training_data_held(class_run, tmp_path):
    """A 10-class network whose data held labels 0, 1, 3 (run.json num_classes 4, classes_without_examples [2]):
    cycle and random draw from [0, 1, 3] alone - never the class no example had (--class refuses it) nor one above
    the data's - as if those classes were given; a run whose data held 0..K-1 draws as before (seed mod K)."""
    import json
    import shutil

    gap = tmp_path / "gap"
    shutil.copytree(class_run, gap)
    info = json.loads((gap / "run.json").read_text())
    (gap / "run.json").write_text(json.dumps({**info, "num_classes": 4, "classes_without_examples": [2]}))
    run = load_run(gap)
    seeds = list(range(9))
    base = replace(run.config.sample, n=len(seeds))

    def draw(labels, cond=None):
        return generate(run.model, seeds, replace(base, labels=labels), run.data_shape, cond=cond)

    held = torch.tensor([0, 1, 3])
    assert draw("cycle").equal(draw("none", {"class": held[torch.arange(9) % 3]}))
    random = seed_labels(seeds, [0, 1, 3], "random")
    assert set(random.tolist()) <= {0, 1, 3} and random.equal(held[seed_labels(seeds, 3, "random")])
    assert draw("random").equal(draw("none", {"class": random}))
    # a list of all K classes draws what K draws
    many = list(range(200))
    for mode in ("cycle", "random"):
        assert seed_labels(many, list(range(10)), mode).equal(seed_labels(many, 10, mode))


def test_sample_cli_labels_flag_and_its_errors(class_run, tmp_path):
    out = tmp_path / "cycle.png"
    code, _, err = cli("sample", class_run, "--labels", "cycle", "--n", "4", "--out", out, "--save-npy")
    assert code == 0, err
    none = tmp_path / "none.png"
    code, _, err = cli("sample", class_run, "--set", "sample.labels=none", "--n", "4", "--out", none, "--save-npy")
    assert code == 0, err
    a, b = np.load(out.with_suffix(".npy")), np.load(none.with_suffix(".npy"))
    assert a.shape == b.shape == (4, 1, 8, 8) and not np.array_equal(a, b)
    # an unconditional run: one line, exit 2, nothing written
    plain = write_run(tmp_path / "plain", "digits-test", ["sample.steps=3"], (1, 8, 8))
    bad = tmp_path / "bad.png"
    code, _, err = cli("sample", plain, "--labels", "random", "--n", "4", "--out", bad)
    assert code == 2 and "not class-conditional" in err and len(err.strip().splitlines()) == 1
    assert not bad.exists()


def test_the_class_conditional_demo_preset_on_unlabelled_images_says_how_to_train_without_classes(tmp_path):
    from PIL import Image

    pics = tmp_path / "pics"
    pics.mkdir()
    rng = np.random.default_rng(0)
    for k in range(4):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L").save(pics / f"{k}.png")
    out = tmp_path / "run"
    args = ["train", "--preset", "mnist-cpu", "--set", "data.source=folder", "--set", f"data.path={pics}"]
    code, _, err = cli(*args, "--set", "data.image_size=8,8", "--set", "data.holdout=0", "--no-progress", "--out", out)
    hint = "--set model.num_classes=0 --set sample.labels=none"
    assert code == 2 and "the data has no labels" in err and hint in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    # the hint's settings make the preset an unconditional one that validates
    validate(override(get_preset("mnist-cpu"), ["model.num_classes=0", "sample.labels=none"]))


def test_labels_outside_the_class_table_are_refused_before_training(tmp_path):
    """A model with fewer classes than the data's labels (here 10 digits, 5 classes) is refused in one line that
    names the class count the labels need, before anything is written; with that count the config validates."""
    out = tmp_path / "run"
    args = ["train", "--preset", "mnist-cpu", "--set", "data.source=digits", "--set", "model.num_classes=5"]
    code, _, err = cli(*args, "--no-progress", "--out", out)
    assert code == 2 and "labels run from 0 to 9" in err and "--set model.num_classes=10" in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_the_settings_record_says_which_guidance_ran_as_the_manifest_does(tmp_path):
    """A class-conditional run whose config guides (sample.guidance=3) sampled without a class draws the null
    class alone (sample.labels=none): no guidance runs, one network evaluation per denoiser call, and the record
    beside the picture says guidance null, as the manifest does; with a class (given, or drawn from the seeds by
    sample.labels) it records the guidance that ran and its two evaluations per call, and the class conditioning."""
    import json

    from torchdiffusion import provenance

    run = write_run(tmp_path / "run", "digits-test", ["model.num_classes=10", "sample.steps=3", "sample.guidance=3"])
    for args, conditioning in [([], None), (["--labels", "cycle"], ["class"]), (["--class", "2"], ["class"])]:
        out = tmp_path / f"s{len(args)}{args[:1]}.png"
        code, _, err = cli("sample", run, "--n", "2", "--out", out, *args)
        assert code == 0, err
        record = json.loads(out.with_suffix(".json").read_text())
        (drawn,) = provenance.read_manifest(out.with_name(out.name + provenance.SUFFIX))["sampling"]
        assert record["conditioning"] == drawn["conditioning"] == conditioning
        assert record["guidance"] == drawn["guidance"]
        guided = conditioning is not None
        assert record["guidance"] == ({"scale": 3.0, "interval": None, "rescale": 0.0} if guided else None)
        assert record["network_evaluations_per_image"] == record["nfe"] * (2 if guided else 1)


def _gap_run(class_run, folder):
    """``class_run`` (a 10-class network) whose run.json says its data held labels 0, 1, 3 (num_classes 4,
    classes_without_examples [2])."""
    import json
    import shutil

    shutil.copytree(class_run, folder)
    info = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**info, "num_classes": 4, "classes_without_examples": [2]}))
    return folder


def _capture_generate(monkeypatch, seen: list):
    """generate() that records each call's conditioning and returns zeros of the asked shape (nothing sampled)."""
    import torchdiffusion.generate as gen

    def fake(model, seeds, sample, data_shape, cond=None, **kw):
        seen.append(cond)
        return torch.zeros(len(list(seeds)), *data_shape)

    monkeypatch.setattr(gen, "generate", fake)


def test_run_labels_cycle_the_trained_classes_and_all_k_without_gaps():
    from torchdiffusion.cond import cycled_classes, run_labels

    gap = {"num_classes": 4, "classes_without_examples": [2]}
    assert run_labels(10, gap, 7).tolist() == [0, 1, 3, 0, 1, 3, 0]
    assert run_labels(10, {"num_classes": 10, "classes_without_examples": []}, 25).equal(torch.arange(25) % 10)
    assert run_labels(10, {}, 25).equal(torch.arange(25) % 10)  # a run.json that records nothing: the network's K
    assert run_labels(10, {"num_classes": 4}, 9).equal(torch.arange(9) % 4)  # data of fewer classes
    assert run_labels(0, gap, 5) is None
    assert cycled_classes([5, 2], 5).tolist() == [5, 2, 5, 2, 5]


@pytest.mark.parametrize("gaps", [True, False])
def test_the_training_sample_grid_asks_for_the_classes_the_data_held(class_run, tmp_path, monkeypatch, gaps):
    """The grid train draws (and a distilled student's) asks image k for class [0, 1, 3][k mod 3] when the data
    held labels 0, 1, 3 - never class 2 nor one above 3 - and for k mod K when the data held every class."""
    from torchdiffusion.data.base import TensorData
    from torchdiffusion.training.callbacks import _sample_grid

    run = load_run(class_run)
    held = [0, 1, 3] if gaps else list(range(10))
    data = TensorData(x=torch.zeros(12, 1, 8, 8), labels=torch.tensor(held * 12)[:12])
    info = {"kind": "image", "data_shape": [1, 8, 8], "num_classes": held[-1] + 1}
    info["classes_without_examples"] = [2] if gaps else []
    seen = []
    _capture_generate(monkeypatch, seen)
    cfg = replace(run.config, sample=replace(run.config.sample, n=16))
    stop = type("Stop", (), {"check": lambda self: None})()
    _sample_grid(run.model, cfg, data, info, tmp_path / "samples" / "grid.png", stop=stop)
    assert len(seen) == 1
    want = torch.tensor(held)[torch.arange(16) % len(held)]
    assert seen[0]["class"].cpu().equal(want)
    if not gaps:
        assert seen[0]["class"].cpu().equal(torch.arange(16) % 10)  # as before: k mod K


@pytest.mark.parametrize("gaps", [True, False])
def test_reflow_pairs_ask_the_teacher_for_the_classes_its_data_held(class_run, tmp_path, monkeypatch, gaps):
    """distill --method reflow: pair k's class is [0, 1, 3][k mod 3] of a teacher whose data held labels 0, 1, 3
    (the student trains on them, and its grids and evaluations follow), k mod K of one whose data held all K."""
    from types import SimpleNamespace

    from torchdiffusion.shortcuts.distill import draw_pairs

    run = load_run(_gap_run(class_run, tmp_path / "gap") if gaps else class_run)
    seen = []
    _capture_generate(monkeypatch, seen)
    x0, noise, labels = draw_pairs(SimpleNamespace(run=run, guidance=1.0, autoguidance=1.0), 11, progress=False)
    want = torch.tensor([0, 1, 3])[torch.arange(11) % 3] if gaps else torch.arange(11) % 10
    assert labels.equal(want) and seen[0]["class"].equal(want) and x0.shape[0] == noise.shape[0] == 11
