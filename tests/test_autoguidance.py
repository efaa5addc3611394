"""Autoguidance: the formula, the guide model a run keeps (train.guide_at), resume, sampling, bad input."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from test_checkpoint import tiny_cfg
from test_training_worker import tiny_data
from tinyruns import cli
from torchdiffusion.config import ConfigError, validate
from torchdiffusion.generate import RunError, attach_guide, generate, guide_of, load_run
from torchdiffusion.guidance import autoguided
from torchdiffusion.training import train
from torchdiffusion.training.checkpoint import GUIDE_FILE, WEIGHTS_KEY, sha256_bytes

pytestmark = pytest.mark.usefixtures("one_thread")


def test_autoguided_is_the_extrapolation_from_the_guide():
    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(6, 6, generator=g), torch.randn(6, 6, generator=g)
    D1, D0 = (lambda x, s: x @ A / (1 + s)), (lambda x, s: x @ B / (1 + s))
    x, sigma = torch.randn(3, 6, generator=g), 0.7
    for w in (0.0, 0.5, 2.0, 3.5):
        expect = D0(x, sigma) + w * (D1(x, sigma) - D0(x, sigma))
        torch.testing.assert_close(autoguided(D1, D0, w)(x, sigma), expect)
    assert autoguided(D1, D0, 1.0) is D1  # w = 1: the model alone, no guide call


def test_autoguidance_interval_guides_only_inside():
    """With an interval [lo, hi], each row is guided where its sigma lies inside and is the model alone outside;
    a batch wholly outside never calls the guide."""
    g = torch.Generator().manual_seed(1)
    A, B = torch.randn(5, 5, generator=g), torch.randn(5, 5, generator=g)
    calls = []
    D1 = lambda x, s: x @ A  # noqa: E731
    D0 = lambda x, s: calls.append(len(x)) or x @ B  # noqa: E731
    x = torch.randn(4, 5, generator=g)
    sigma = torch.tensor([0.1, 0.5, 2.0, 9.0])
    D = autoguided(D1, D0, 2.5, interval=(0.5, 2.0))
    inside = torch.tensor([False, True, True, False])  # both ends belong to the interval
    expect = torch.where(inside[:, None], x @ B + 2.5 * (x @ A - x @ B), x @ A)
    torch.testing.assert_close(D(x, sigma), expect)
    calls.clear()
    torch.testing.assert_close(D(x, torch.full((4,), 5.0)), x @ A)
    assert calls == []  # outside everywhere: one forward of the model, none of the guide
    torch.testing.assert_close(D(x, 1.0), x @ B + 2.5 * (x @ A - x @ B))  # a float sigma inside
    with pytest.raises(ValueError, match="interval"):
        autoguided(D1, D0, 2.0, interval=(2.0, 1.0))


def test_gaussian_autoguidance_sharpens_toward_the_model():
    """Exact Gaussian denoisers D(x, sigma) = s^2 / (s^2 + sigma^2) x: the model of data N(0, 1) guided away from
    a guide that believes N(0, 2^2) is, for w > 1, the denoiser of a narrower Gaussian, its Tweedie gain
    a_0 + w (a_1 - a_0) below a_1 at every sigma - what the guide gets wrong (too much spread) is pushed out."""

    def gain(s2, sigma):
        return s2 / (s2 + sigma**2)

    for sigma in (0.1, 0.5, 1.0, 3.0, 10.0):
        x = torch.tensor([[1.0]])
        D = autoguided(lambda x, s: gain(1.0, s) * x, lambda x, s: gain(4.0, s) * x, 2.0)
        a_w = float(D(x, sigma))
        assert a_w == pytest.approx(2 * gain(1.0, sigma) - gain(4.0, sigma))
        assert a_w < gain(1.0, sigma)


def test_run_keeps_its_ema_at_guide_at_bit_for_bit(tmp_path):
    """The guide is the EMA of the same run at train.guide_at: a run stopped there has it as its ema.safetensors;
    it survives a resume and is vouched for by run.json."""
    full, short, resumed = tmp_path / "full", tmp_path / "short", tmp_path / "resumed"
    train(tiny_cfg("train.guide_at=0.375"), full, data=tiny_data(), progress=False)  # 48 of 128 images
    train(tiny_cfg("train.images=48"), short, data=tiny_data(), progress=False)
    assert (full / GUIDE_FILE).read_bytes() == (short / "ema.safetensors").read_bytes()
    assert (full / GUIDE_FILE).read_bytes() != (full / "ema.safetensors").read_bytes()
    info = json.loads((full / "run.json").read_text())
    assert info[WEIGHTS_KEY][GUIDE_FILE] == sha256_bytes((full / GUIDE_FILE).read_bytes())
    # stopped at 96 images (after the guide was kept at 48), then resumed to the end: the same guide and weights
    train(tiny_cfg("train.guide_at=0.5", "train.images=96"), resumed, data=tiny_data(), progress=False)
    train(tiny_cfg("train.guide_at=0.375"), resumed, data=tiny_data(), progress=False)
    for name in (GUIDE_FILE, "ema.safetensors"):
        assert (resumed / name).read_bytes() == (full / name).read_bytes()
    # a run without train.guide_at keeps none
    assert (
        not (short / GUIDE_FILE).exists()
        and GUIDE_FILE not in json.loads((short / "run.json").read_text())[WEIGHTS_KEY]
    )


def test_a_run_a_time_limit_ends_early_keeps_its_guide_at_that_fraction_of_the_time(tmp_path, capsys):
    """train.guide_at of train.images may never come in a run that train.minutes ends first: the guide is then kept
    at train.guide_at of the time limit, so the run samples with the autoguidance its config asks for."""
    run_dir = tmp_path / "run"
    cfg = tiny_cfg("train.guide_at=0.5", "train.images=10000000", "train.minutes=0.01", "sample.autoguidance=2")
    train(cfg, run_dir, data=tiny_data(), progress=False)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["stopped_by"] == "train.minutes" and info["images_seen"] < 5_000_000
    assert info[WEIGHTS_KEY][GUIDE_FILE] == sha256_bytes((run_dir / GUIDE_FILE).read_bytes())
    assert "kept the guide model (autoguidance) at" in capsys.readouterr().err
    run = load_run(run_dir)
    assert guide_of(run.model) is not None
    sample = replace(run.config.sample, sampler="ddim", steps=3, n=2)
    guided = generate(run.model, range(2), sample, run.data_shape)  # the run's own config: autoguidance 2
    assert torch.isfinite(guided).all()
    # without a time limit the guide still waits for train.guide_at of train.images
    untimed = tmp_path / "untimed"
    train(tiny_cfg("train.guide_at=0.5", "train.images=64"), untimed, data=tiny_data(), progress=False)
    short = tmp_path / "short"
    train(tiny_cfg("train.images=32"), short, data=tiny_data(), progress=False)
    assert (untimed / GUIDE_FILE).read_bytes() == (short / "ema.safetensors").read_bytes()


def test_sampling_with_the_guide(tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_cfg("train.guide_at=0.375", "train.ema_halflife_images=0"), run_dir, data=tiny_data(), progress=False)
    run = load_run(run_dir)
    guide = guide_of(run.model)
    assert guide is not None
    want = load_file(str(run_dir / GUIDE_FILE))
    assert all(torch.equal(guide.state_dict()[k], v) for k, v in want.items())
    cond = {"class": torch.arange(4) % 4}
    base = replace(run.config.sample, sampler="ddim", steps=4, n=4)
    plain = generate(run.model, range(4), base, run.data_shape, cond=cond)
    guided = generate(run.model, range(4), replace(base, autoguidance=2.5), run.data_shape, cond=cond)
    assert not torch.equal(plain, guided)
    # a model guided by itself is the model: D + w (D - D) = D at every step, whatever w
    attach_guide(run.model, run.model)
    same = generate(run.model, range(4), replace(base, autoguidance=2.5), run.data_shape, cond=cond)
    torch.testing.assert_close(same, plain, atol=1e-6, rtol=0)


def test_autoguidance_without_a_guide_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_cfg("train.images=32"), run_dir, data=tiny_data(), progress=False)
    run = load_run(run_dir)
    with pytest.raises(RunError, match="guide model"):
        generate(run.model, range(2), replace(run.config.sample, autoguidance=2.0), run.data_shape)
    rc, out, err = cli("sample", run_dir, "--set", "sample.autoguidance=2", "--n", "2", "--out", tmp_path / "s.png")
    assert rc == 2 and "guide" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.png").exists()
    with pytest.raises(ConfigError, match="train.guide_at"):
        validate(tiny_cfg("train.guide_at=1"))  # the end of training: no earlier state
    with pytest.raises(ConfigError, match="sample.autoguidance=2 needs a guide model"):
        validate(tiny_cfg("sample.autoguidance=2"))
    with pytest.raises(ConfigError, match="sample.autoguidance"):
        validate(tiny_cfg("sample.autoguidance=-1"))


@pytest.mark.parametrize("fmt", ["diffusers", "onnx"])
def test_exports_carry_the_model_alone_and_sample_unguided(tmp_path, fmt):
    """An export holds the network, not the guide: its config says autoguidance 1, and it samples like the run with
    autoguidance off."""
    need = {"diffusers": ["diffusers"], "onnx": ["onnx", "onnxruntime"]}[fmt]
    for module in need:
        pytest.importorskip(module)
    from torchdiffusion.interop.export import export

    run_dir = tmp_path / "run"
    cfg = tiny_cfg("train.guide_at=0.375", "sample.autoguidance=2", "model.num_classes=0")  # ONNX: unconditional
    train(cfg, run_dir, data=tiny_data(), progress=False)
    run = load_run(run_dir)
    export(run, fmt, tmp_path / fmt, progress=False)
    back = load_run(tmp_path / fmt)
    assert back.config.sample.autoguidance == 1.0 and back.config.train.guide_at == 0.0
    sample = replace(back.config.sample, sampler="ddim", steps=3, n=2)
    x = generate(back.model, range(2), sample, back.data_shape)  # the export's own config: unguided
    ref = generate(run.model, range(2), replace(sample, autoguidance=1.0), run.data_shape)
    torch.testing.assert_close(x, ref, atol=1e-3, rtol=0)


def test_students_learn_the_teacher_alone_and_keep_no_guide(tmp_path):
    from torchdiffusion.cli import main

    teacher = tmp_path / "teacher"
    cfg = tiny_cfg("train.guide_at=0.375", "sample.autoguidance=2", "model.num_classes=0")
    train(cfg, teacher, data=tiny_data(), progress=False)
    out = tmp_path / "student"
    args = ["distill", str(teacher), "--method", "consistency", "--steps", "2", "--out", str(out)]
    assert main([*args, "--images", "64", "--batch-size", "32", "--no-progress"]) == 0
    student = load_run(out)
    assert student.config.sample.autoguidance == 1.0 and student.config.train.guide_at == 0.0
    assert guide_of(student.model) is None and not (out / GUIDE_FILE).exists()


def test_cli_train_keeps_a_guide_and_sample_uses_it(tmp_path):
    """``train --set train.guide_at`` writes guide.safetensors; ``sample --set sample.autoguidance`` changes the
    samples (and 1 gives the run alone)."""
    import numpy as np

    run_dir = tmp_path / "run"
    sets = [
        "model.channels=8",
        "model.channel_mult=1,2",
        "model.groups=4",
        "model.attn_resolutions=4",
        "train.images=64",
        "train.batch_size=16",
        "train.guide_at=0.5",
    ]
    args = ["train", "--preset", "digits-test", "--out", run_dir, "--no-progress"]
    rc, _, err = cli(*args, *[a for s in sets for a in ("--set", s)])
    assert rc == 0, err
    assert (run_dir / GUIDE_FILE).is_file()
    out = {}
    for w in ("1", "3"):
        png = tmp_path / f"w{w}.png"
        common = ["--n", "4", "--sampler", "ddim", "--steps", "4", "--save-npy", "--out", png]
        rc, _, err = cli("sample", run_dir, "--set", f"sample.autoguidance={w}", *common)
        assert rc == 0, err
        out[w] = np.load(png.with_suffix(".npy"))
        meta = json.loads(png.with_suffix(".json").read_text())
        assert meta["sample"]["autoguidance"] == float(w)
        # the guide's forward is counted: twice the network evaluations of the run alone at the same NFE
        assert meta["network_evaluations_per_image"] == meta["nfe"] * (1 if w == "1" else 2)
    assert not np.array_equal(out["1"], out["3"])
    # sample.guidance_interval limits autoguidance as it limits CFG: other samples, fewer guide evaluations
    png = tmp_path / "interval.png"
    common = ["--n", "4", "--sampler", "ddim", "--steps", "4", "--save-npy", "--out", png]
    rc, _, err = cli("sample", run_dir, "--set", "sample.autoguidance=3", "--guidance-interval", "0.5,5", *common)
    assert rc == 0, err
    meta = json.loads(png.with_suffix(".json").read_text())
    assert meta["sample"]["guidance_interval"] == [0.5, 5.0]
    assert meta["nfe"] < meta["network_evaluations_per_image"] < 2 * meta["nfe"]
    inside = np.load(png.with_suffix(".npy"))
    assert not np.array_equal(inside, out["3"]) and not np.array_equal(inside, out["1"])
    # an interval above sigma_max (80) holds no level of the grid: autoguided nowhere, it is refused in one line
    rc, _, err = cli("sample", run_dir, "--set", "sample.autoguidance=3", "--guidance-interval", "100,200", *common)
    assert rc == 2 and "holds no noise level of the grid" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    "argv",
    [
        ["img2img", "--n", "2", "--strength", "0.7"],
        ["inpaint", "--n", "2", "--resample", "2"],
        ["outpaint", "--n", "2", "--right", "2"],
        ["interpolate", "--seeds", "1", "2", "--frames", "3"],
    ],
)
def test_edits_sample_with_the_guide_and_record_the_w_that_ran(tmp_path, argv):
    """The editing commands edited with the model alone whatever sample.autoguidance said, and their manifests
    recorded the w asked for: w = 3 and w = 1 gave the same pictures."""
    import numpy as np
    from PIL import Image

    run_dir = tmp_path / "run"
    train(tiny_cfg("train.guide_at=0.375", "sample.steps=3"), run_dir, data=tiny_data(), progress=False)
    pictures = {}
    for w in ("1", "3"):
        png = tmp_path / f"w{w}.png"
        rc, _, err = cli(argv[0], run_dir, *argv[1:], "--set", f"sample.autoguidance={w}", "--out", png)
        assert rc == 0, err
        with Image.open(png) as im:
            pictures[w] = np.asarray(im)
        drawn = json.loads(png.with_name(png.name + ".manifest.json").read_text())["sampling"][0]
        assert drawn["autoguidance"] == float(w)
    assert not np.array_equal(pictures["1"], pictures["3"])
