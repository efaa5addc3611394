"""The Python API refuses arguments that are not what it takes - a NaN, a string for a number, a reversed range, a
misspelt conditioning key, one label too few - with a ValueError that names the argument, where they gave NaN
samples, silently other results or an error from deep inside PyTorch."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from test_checkpoint import tiny_cfg
from test_training_worker import tiny_data
from torchdiffusion.analytic import GaussianMixture, IsotropicGaussian
from torchdiffusion.cond import CondError
from torchdiffusion.config import ConfigError, validate
from torchdiffusion.data.base import TensorData
from torchdiffusion.edit import EditError, check_mask, tiled
from torchdiffusion.evaluation.likelihood import bits_per_dim
from torchdiffusion.evaluation.metrics import (
    FeatureStats,
    MetricError,
    energy_distance,
    frechet_distance,
    kid,
    precision_recall,
    sliced_wasserstein,
)
from torchdiffusion.generate import generate, load_run
from torchdiffusion.guidance import GuidanceError, autoguided, classifier_free, classifier_guidance
from torchdiffusion.process import DiscreteVP
from torchdiffusion.schedules import make_betas, make_sigmas
from torchdiffusion.training import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny class-conditional run (4 classes, 8 x 8)."""
    out = tmp_path_factory.mktemp("api") / "run"
    train(tiny_cfg("train.images=32"), out, data=tiny_data(), progress=False)
    return load_run(out)


def _draw(run, sample=None, **kw):
    sample = sample or replace(run.config.sample, sampler="ddim", steps=2, n=4, batch_size=2)
    kw.setdefault("cond", {"class": torch.tensor([0, 1, 2, 3])})
    return generate(run.model, kw.pop("seeds", range(4)), sample, run.data_shape, **kw)


def test_generate_checks_a_sample_config_built_in_python(run):
    base = replace(run.config.sample, sampler="ddim", steps=2, n=4, batch_size=2)
    assert _draw(run, base).shape == (4, *run.data_shape)  # the well-formed call samples
    for field, value, needle in [
        ("guidance", float("inf"), "sample.guidance must be a finite number"),  # gave saturated images
        ("guidance", -1.0, "sample.guidance must be in [0, 100]"),
        ("steps", "4", "sample.steps must be an integer"),  # a TypeError naming no field
        ("steps", 4.0, "sample.steps must be an integer"),
        ("batch_size", 0, "sample.batch_size"),
        ("rho", 0.0, "sample.rho must be > 0"),
        ("sampler", "nope", "unknown sampler"),
    ]:
        with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
            _draw(run, replace(base, **{field: value}))
    with pytest.raises(ConfigError, match="eta must be a finite number"):
        _draw(run, replace(base, settings=replace(base.settings, eta=float("nan"))))
    with pytest.raises(ValueError, match="precision must be fp32 or bf16"):
        _draw(run, base, precision="fp16")  # was silently fp32
    with pytest.raises(ValueError, match="at least one seed"):
        _draw(run, base, seeds=[])
    for seeds, needle in [([0, 1, 2, 3.7], "seeds must be integers"), ([0, 1, 2, 2**70], r"seeds must lie in \[0, ")]:
        with pytest.raises(ValueError, match=needle):  # 3.7 was seed 3; 2**70 an overflow inside torch
            _draw(run, base, seeds=seeds)
    with pytest.raises(CondError, match=r"cond\['class'\] must be a tensor with one row per sample, got int 3"):
        generate(run.model, range(4), base, run.data_shape, cond={"class": 3})  # AttributeError: no .to
    for shape in ((), (1, 0, 8)):  # a matmul shape error or an empty draw
        with pytest.raises(ValueError, match="data_shape must be one example's shape"):
            generate(run.model, range(4), base, shape, cond={"class": torch.tensor([0, 1, 2, 3])})


def test_generate_checks_its_conditioning_against_the_seeds_and_the_model(run):
    base = replace(run.config.sample, sampler="ddim", steps=2, n=4, batch_size=2)
    guided = replace(base, guidance=2.0)
    for sample in (base, guided):
        # one label too few was broadcast batch by batch (seed 3 took label 3) or failed deep inside
        with pytest.raises(CondError, match=r"cond\['class'\] has 3 rows for 4 samples"):
            _draw(run, sample, cond={"class": torch.tensor([1, 2, 3])})
        with pytest.raises(CondError, match="5 rows for 4 samples"):  # extra ones were dropped
            _draw(run, sample, cond={"class": torch.tensor([1, 2, 3, 0, 1])})
    with pytest.raises(CondError, match="cond has no key 'klass'"):  # a typo sampled unconditionally
        _draw(run, base, cond={"klass": torch.tensor([1, 2, 3, 0])})
    with pytest.raises(CondError, match="integer labels"):  # 1.9 was truncated to 1
        _draw(run, base, cond={"class": torch.tensor([1.9, 2.5, 3.99, 0.0])})
    with pytest.raises(CondError, match=r"cond\['context'\] is given, and this model does not read it"):
        _draw(run, base, cond={"class": torch.tensor([1, 2, 3, 0]), "context": torch.randn(4, 5)})
    with pytest.raises(CondError, match=r"uncond\['class'\] has 1 rows"):
        _draw(run, guided, uncond={"class": torch.tensor([1])})
    # nothing to guide toward (the null class drawn for every seed): a negative conditioning would change nothing
    null = replace(base, labels="none")
    for sample in (null, replace(null, guidance=3.0)):
        with pytest.raises(CondError, match="uncond changes nothing"):
            _draw(run, sample, cond=None, uncond={"class": torch.tensor([1, 2, 3, 0])})
    assert _draw(run, replace(null, guidance=3.0), cond=None).shape == (4, *run.data_shape)  # a run's own default
    # the rows given, one per seed: the samples of those labels
    a = _draw(run, base, cond={"class": torch.tensor([1, 2, 3, 0])})
    b = _draw(run, base, cond=torch.tensor([1, 2, 3, 0]))
    assert torch.equal(a, b)


def test_guidance_wrappers_refuse_a_scale_or_label_they_cannot_use():
    D = lambda x, s, c=None: x / (1 + s.reshape(-1, *([1] * (x.ndim - 1))) ** 2)  # noqa: E731
    cond = {"class": torch.tensor([0, 1])}
    for bad in (float("nan"), float("inf"), "2"):
        with pytest.raises(GuidanceError, match="classifier-free guidance scale"):
            classifier_free(D, cond, bad)
        with pytest.raises(GuidanceError, match="autoguidance scale"):
            autoguided(D, D, bad)
        with pytest.raises(GuidanceError, match="classifier guidance scale"):
            classifier_guidance(D, lambda x, s: x.flatten(1)[:, :3], 1, bad)
    with pytest.raises(GuidanceError, match="integer class"):  # 2.7 was truncated to 2
        classifier_guidance(D, lambda x, s: x.flatten(1)[:, :3], 2.7, 1.0)
    guided = classifier_guidance(D, lambda x, s: x.flatten(1)[:, :3], 3, 1.0)
    with pytest.raises(GuidanceError, match=r"class labels must be in \[0, 3\)"):
        guided(torch.randn(2, 4), torch.ones(2))
    ok = classifier_guidance(D, lambda x, s: x.flatten(1)[:, :3], 2, 1.0)(torch.randn(2, 4), torch.ones(2))
    assert torch.isfinite(ok).all()


def test_train_refuses_a_config_field_of_the_wrong_type_before_writing_anything(tmp_path):
    cfg = tiny_cfg()
    for section, field, value, needle in [
        ("train", "images", "32", "train.images must be an integer, got '32' (str)"),
        ("train", "batch_size", 16.0, "train.batch_size must be an integer, got 16.0"),  # died in torch.randint
        ("train", "lr", "1e-3", "train.lr must be a number"),
        ("model", "channels", "8", "model.channels must be an integer"),
        ("model", "channel_mult", (1, "2"), "model.channel_mult must be a tuple of integers"),
        ("train", "betas", [0.9, 0.99], "train.betas must be a tuple of numbers"),
    ]:
        bad = replace(cfg, **{section: replace(getattr(cfg, section), **{field: value})})
        with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            validate(bad)
        out = tmp_path / f"{section}-{field}"
        with pytest.raises(ConfigError, match=field):
            train(bad, out, data=tiny_data(), progress=False)
        assert not out.exists()
    assert validate(replace(cfg, train=replace(cfg.train, lr=1))).train.lr == 1  # an int is a number


def test_training_data_with_nan_is_refused_before_training(tmp_path):
    data = tiny_data()
    x = data.x.clone()
    x[3, 0, 2, 2] = float("nan")
    with pytest.raises(ConfigError, match="1 example"):
        train(tiny_cfg(), tmp_path / "r", data=TensorData(x=x, labels=data.labels), progress=False)


def test_pixels_beyond_the_sampled_range_are_refused_before_training(tmp_path):
    """Images are sampled with x0_hat clamped to [-1, 1]: 8-bit values handed over as floats would train a model
    that can never be sampled. Refused (nothing written); with sample.clip_denoised=false they are the user's."""
    data = tiny_data()
    eight_bit = TensorData(x=(data.x + 1) * 127.5, labels=data.labels)
    refusal = r"images run from [\d.]+ to [\d.]+, but images are sampled in \[-1, 1\].*u / 127.5 - 1"
    with pytest.raises(ConfigError, match=refusal):
        train(tiny_cfg(), tmp_path / "r", data=eight_bit, progress=False)
    assert not (tmp_path / "r").exists()
    as_bytes = TensorData(x=eight_bit.x.round().to(torch.uint8), labels=data.labels)  # trained on as 0..255 before
    with pytest.raises(ConfigError, match=refusal):
        train(tiny_cfg(), tmp_path / "r", data=as_bytes, progress=False)
    assert not (tmp_path / "r").exists()
    cfg = tiny_cfg()
    unclamped = replace(cfg, sample=replace(cfg.sample, clip_denoised=False), train=replace(cfg.train, images=16))
    train(unclamped, tmp_path / "u", data=eight_bit, progress=False)
    assert (tmp_path / "u" / "config.json").is_file()


def test_schedules_and_grids_refuse_ranges_that_give_nan_or_reversed_grids():
    for kw, needle in [
        (dict(T=1), "T >= 2"),  # sigma_to_t was NaN everywhere
        (dict(beta_end=1.0), "beta_t = 1"),  # sigma_max = inf
        (dict(beta_end=1.5), "every beta_t must lie in"),  # NaN sigmas
        (dict(beta_start=0.0), "beta_t = 0"),  # sigma_min = 0
    ]:
        with pytest.raises(ValueError, match=needle):
            DiscreteVP("linear", **kw)
    with pytest.raises(ValueError, match="integer"):
        make_betas("linear", 10.5)
    assert DiscreteVP("cosine", 2).T == 2
    for args, needle in [
        ((5, 80.0, 0.002), "0 < sigma_min < sigma_max"),  # was an increasing grid
        ((5, -1.0, 80.0), "0 < sigma_min < sigma_max"),  # was a complex grid
        ((5, 0.002, float("nan")), "0 < sigma_min < sigma_max"),
        ((2.5, 0.002, 80.0), "integer"),
    ]:
        for kind in ("karras", "exponential"):
            with pytest.raises(ValueError, match=needle):
                make_sigmas(kind, *args)
    with pytest.raises(ValueError, match="rho"):
        make_sigmas("karras", 5, 0.002, 80.0, rho=0.0)
    grid = make_sigmas("karras", 5, 0.002, 80.0)
    assert float(grid[0]) == pytest.approx(80.0) and float(grid[-2]) == pytest.approx(0.002) and grid[-1] == 0


def test_metrics_refuse_features_that_are_not_finite_and_meaningless_settings():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g)
    holed = fake.clone()
    holed[:100] = float("nan")  # precision/recall gave (0.495, 0.97)
    for fn in (precision_recall, kid, energy_distance, sliced_wasserstein):
        with pytest.raises(MetricError, match="100 row"):
            fn(holed, real)
    with pytest.raises(MetricError, match="100 row"):
        frechet_distance(FeatureStats.of(holed), FeatureStats.of(real))
    with pytest.raises(MetricError, match="k >= 1"):
        precision_recall(fake, real, k=0)  # gave (0.0, 0.0)
    with pytest.raises(MetricError, match="n_proj"):
        sliced_wasserstein(fake, real, n_proj=0)
    with pytest.raises(MetricError, match="p >= 1"):
        sliced_wasserstein(fake, real, p=0)
    p, r = precision_recall(fake, real)
    assert 0.8 < p <= 1 and 0.8 < r <= 1  # the same distribution: both near 1


def test_editing_and_likelihood_helpers_refuse_what_would_be_nan():
    D = lambda x, s: 0.5 * x  # noqa: E731
    with pytest.raises(EditError, match="stride"):
        tiled(D, (2, 2), stride=0)
    with pytest.raises(EditError, match="leaves gaps"):
        tiled(D, (2, 2), stride=3)(torch.randn(3, 1, 5, 7), torch.ones(3))  # pixels no window covered were 0/0
    out = tiled(D, (2, 2), stride=2)(torch.randn(3, 1, 4, 6), torch.ones(3))
    assert torch.isfinite(out).all()
    with pytest.raises(EditError, match="mask values"):
        check_mask(torch.full((1, 1, 4, 4), float("nan")), torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="bin width"):
        bits_per_dim(torch.ones(2), 3, bin_width=0.0)
    with pytest.raises(ValueError, match="mixture weights"):
        GaussianMixture(torch.zeros(2, 2), torch.ones(2), torch.zeros(2))
    assert IsotropicGaussian(0.0, 0.7).denoise(torch.ones(1, 2), torch.ones(1)).shape == (1, 2)


def test_count_flops_takes_class_conditioning():
    from torchdiffusion.nets import count_flops

    m = replace(tiny_cfg().model, num_classes=4)
    assert count_flops(m, (1, 8, 8), {"class": torch.tensor([1])}) == count_flops(m, (1, 8, 8)) > 0


def test_the_discrete_process_refuses_timesteps_outside_its_table_and_takes_scalar_sigmas():
    """T = 2.5 was a 2-step process, t = -1 the last timestep, posterior at t = 0 read abar_{-1}; a float sigma
    failed in append_dims / .to. The formulas at a scalar equal them at the same sigma for each sample."""
    from torchdiffusion import process as P

    with pytest.raises(ValueError, match="integer"):
        DiscreteVP("linear", 2.5)
    vp, x = DiscreteVP("linear", 1000), torch.randn(2, 3)
    for call, says in [
        (lambda: vp.q_sample(x, torch.tensor([-1, 5]), x), r"\[0, 999\]"),
        (lambda: vp.q_sample(x, torch.tensor([1000, 5]), x), r"\[0, 999\]"),
        (lambda: vp.q_step(x, torch.tensor([1.5, 2.0]), x), "integers"),
        (lambda: vp.posterior(x, x, torch.tensor([0, 1])), r"\[1, 999\]"),
    ]:
        with pytest.raises(ValueError, match=says):
            call()
    two = torch.full((2,), 1.5)
    for f in (P.ve_to_vp, P.vp_to_ve, P.ve_to_rf, P.rf_to_ve):
        assert torch.equal(f(x, 1.5), f(x, two)) and torch.equal(f(x, torch.tensor(1.5)), f(x, two))
    assert torch.equal(P.add_noise(x, 1.5, x), P.add_noise(x, two, x))
    assert torch.equal(P.rf_velocity(x, 1.5, x), P.rf_velocity(x, two, x))
    assert float(vp.sigma_to_t(1.0)) == float(vp.sigma_to_t(torch.tensor(1.0)))
    assert float(vp.t_to_sigma(10)) == pytest.approx(float(vp.sigmas[10]))
