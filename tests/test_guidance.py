"""Guidance wrappers: CFG identities, batched = unbatched, interval and rescale, negative conditioning, and
classifier guidance / CFG on a Gaussian mixture with exact oracles (the guided samples follow theory)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pictures import assert_grid_of
from torchdiffusion.analytic import GaussianMixture
from torchdiffusion.config import ModelConfig
from torchdiffusion.evaluation.classifier import ClassifierError
from torchdiffusion.evaluation.noisy_classifier import (
    NoisyClassifier,
    NoisyClassifierConfig,
    load_noisy_classifier,
    save_noisy_classifier,
    train_noisy_classifier,
)
from torchdiffusion.guidance import (
    GuidanceError,
    cat_cond,
    classifier_free,
    classifier_guidance,
    guided_denoiser,
    unconditional,
)
from torchdiffusion.precond import Precond
from torchdiffusion.samplers import SAMPLERS, get_sampler
from torchdiffusion.schedules import make_sigmas

torch.set_num_threads(1)


# A tiny random conditional U-Net (every parameter randomised so the conditioning really matters)


@pytest.fixture(scope="module")
def net_model():
    from torchdiffusion.nets import build_net

    torch.manual_seed(0)
    m = ModelConfig(
        channels=8, channel_mult=(1, 2), attn_resolutions=(4,), groups=4, num_classes=3, context_dim=4, text_dim=6
    )
    net = build_net(m, (1, 8, 8))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    return Precond(net, "eps").eval()


def _cond(B=4):
    g = torch.Generator().manual_seed(1)
    return {
        "class": torch.randint(0, 3, (B,), generator=g),
        "context": torch.rand(B, 4, generator=g),
        "text": torch.randn(B, 3, 6, generator=g),
        "text_mask": torch.tensor([[True, True, False]] * B),
    }


def _xs(B=4):
    g = torch.Generator().manual_seed(2)
    return torch.randn(B, 1, 8, 8, generator=g), torch.tensor([0.3, 1.0, 2.5, 10.0][:B])


@torch.no_grad()
def test_cfg_scale_one_is_conditional_and_zero_unconditional(net_model):
    x, s = _xs()
    c = _cond()
    D_c, D_u = net_model(x, s, c), net_model(x, s, unconditional(c))
    assert (D_c - D_u).abs().max() > 1e-3  # the conditioning matters, so the identities are not vacuous
    torch.testing.assert_close(classifier_free(net_model, c, 1.0)(x, s), D_c, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(classifier_free(net_model, c, 0.0)(x, s), D_u, atol=1e-5, rtol=1e-5)
    w = 3.5
    torch.testing.assert_close(classifier_free(net_model, c, w)(x, s), D_u + w * (D_c - D_u), atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_batched_and_unbatched_cfg_agree(net_model):
    x, s = _xs()
    c = _cond()
    # A negative prompt with a different token count exercises the padding of the concatenated text batch.
    neg = {"class": torch.tensor([2]), "context": torch.zeros(1, 4), "text": torch.randn(1, 5, 6)}
    for uncond in (None, neg):
        a = classifier_free(net_model, c, 2.0, uncond=uncond, batched=True)(x, s)
        b = classifier_free(net_model, c, 2.0, uncond=uncond, batched=False)(x, s)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_negative_conditioning_is_the_scale_zero_branch(net_model):
    x, s = _xs()
    c = _cond()
    neg = {"class": torch.full((4,), 1), "context": torch.ones(4, 4), "text": torch.randn(4, 2, 6)}
    torch.testing.assert_close(
        classifier_free(net_model, c, 0.0, uncond=neg)(x, s), net_model(x, s, neg), atol=1e-5, rtol=1e-5
    )
    with pytest.raises(GuidanceError):
        classifier_free(net_model, c, 2.0, uncond={"class": torch.tensor([1])})(x, s)  # keys differ


@torch.no_grad()
def test_interval_guides_only_inside(net_model):
    x, s = _xs()  # sigmas 0.3, 1, 2.5, 10
    c = _cond()
    D_c, D_u = net_model(x, s, c), net_model(x, s, unconditional(c))
    out = classifier_free(net_model, c, 4.0, interval=(0.5, 3.0))(x, s)
    torch.testing.assert_close(out[[0, 3]], D_c[[0, 3]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[[1, 2]], (D_u + 4.0 * (D_c - D_u))[[1, 2]], atol=1e-4, rtol=1e-4)
    with pytest.raises(GuidanceError):
        classifier_free(net_model, c, 2.0, interval=(3.0, 1.0))


@torch.no_grad()
def test_rescale_matches_the_conditional_std(net_model):
    x, s = _xs()
    c = _cond()
    D_c = net_model(x, s, c)
    full = classifier_free(net_model, c, 6.0, rescale=1.0)(x, s)
    torch.testing.assert_close(full.std((1, 2, 3)), D_c.std((1, 2, 3)), atol=1e-4, rtol=1e-4)
    plain = classifier_free(net_model, c, 6.0)(x, s)
    half = classifier_free(net_model, c, 6.0, rescale=0.5)(x, s)
    torch.testing.assert_close(half, 0.5 * full + 0.5 * plain, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_dropped_conditioning_ignores_the_condition(net_model):
    """drop=True uses the null embedding: the output must not depend on the class, context or text."""
    x, s = _xs()
    c1, c2 = _cond(), {k: v.flip(0) for k, v in _cond().items()}
    c2["class"] = (c2["class"] + 1) % 3
    a, b = net_model(x, s, unconditional(c1)), net_model(x, s, unconditional(c2))
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(a, net_model(x, s, None), atol=1e-5, rtol=1e-5)
    assert (net_model(x, s, c1) - net_model(x, s, c2)).abs().max() > 1e-3


def test_cat_cond_pads_text_and_defaults_drop():
    a = {"text": torch.ones(2, 3, 4)}
    b = {
        "text": torch.ones(1, 5, 4),
        "text_mask": torch.tensor([[True, False, True, True, False]]),
        "drop": torch.tensor([True]),
    }
    c = cat_cond(a, b)
    assert c["text"].shape == (3, 5, 4) and c["text"][:2, 3:].abs().sum() == 0
    assert c["text_mask"].tolist() == [[True] * 3 + [False] * 2] * 2 + [[True, False, True, True, False]]
    assert c["drop"].tolist() == [False, False, True]


# Exact oracles on a Gaussian mixture


def _mixture() -> GaussianMixture:
    # Three overlapping 2-D components: the unguided mass in each is its weight, not 0 or 1.
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.5]])
    covs = torch.tensor([[0.5, 0.3], [0.4, 0.6], [0.3, 0.3]]) ** 2
    return GaussianMixture(means, covs, torch.tensor([0.5, 0.3, 0.2]))


def _component(gm: GaussianMixture, k: int) -> GaussianMixture:
    return GaussianMixture(gm.means[k : k + 1], gm.covs[k : k + 1])


def _sample_ode(D, n=2000, steps=40, sigma_max=40.0, seed=0, sampler="heun"):
    g = torch.Generator().manual_seed(seed)
    sigmas = make_sigmas("karras", steps, 0.002, sigma_max)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64) * float(sigmas[0])
    return get_sampler(sampler)(D, x, sigmas)


def _exact_classifier(gm: GaussianMixture):
    """log p(k | x, sigma) of the noised mixture (logits; softmax normalises them)."""
    return lambda x, sigma: gm.responsibilities(x, sigma).clamp_min(1e-300).log()


def _assert_is_component(x: torch.Tensor, comp: GaussianMixture, tol_mean=0.05, tol_cov=0.04):
    mean, cov = x.mean(0), torch.cov(x.T)
    assert (mean - comp.mean).abs().max() < tol_mean, (mean, comp.mean)
    assert (cov - comp.covariance).abs().max() < tol_cov, (cov, comp.covariance)


def test_classifier_guidance_scale_one_samples_the_component_exactly():
    """s = 1 with the exact classifier gives E[x0 | x, k]: the ODE samples component k (mean and covariance)."""
    gm = _mixture()
    k = 1
    D = classifier_guidance(gm.denoise, _exact_classifier(gm), k, 1.0)
    x = _sample_ode(D)
    _assert_is_component(x, _component(gm, k))


def test_classifier_guidance_moves_mass_monotonically():
    """Mass in the chosen component grows with s: w_k at s = 0, ~1 at s = 1 (the posterior), beyond at s > 1."""
    gm = _mixture()
    k = 2
    fracs = []
    for s in (0.0, 0.5, 1.0, 3.0):
        x = _sample_ode(classifier_guidance(gm.denoise, _exact_classifier(gm), k, s), n=1500, steps=24)
        # Which component generated each sample: exact responsibilities at sigma = 0.
        fracs.append(float((gm.responsibilities(x, torch.zeros(len(x))).argmax(-1) == k).double().mean()))
    # Unguided: the mass of the region where component k dominates, estimated from exact samples.
    ref = gm.sample(20000, generator=torch.Generator().manual_seed(3))
    base = float((gm.responsibilities(ref, torch.zeros(len(ref))).argmax(-1) == k).double().mean())
    assert abs(fracs[0] - base) < 0.04, (fracs, base)
    comp = _component(gm, k).sample(20000, generator=torch.Generator().manual_seed(4))
    exact = float((gm.responsibilities(comp, torch.zeros(len(comp))).argmax(-1) == k).double().mean())
    assert abs(fracs[2] - exact) < 0.04, (fracs, exact)
    assert fracs[0] < fracs[1] < fracs[2] <= fracs[3] + 0.01, fracs


class _MixtureOracle:
    """D(x, sigma, cond): the exact class-conditional denoiser (component k), the mixture's when dropped."""

    def __init__(self, gm: GaussianMixture):
        self.gm = gm
        self.parts = [_component(gm, k) for k in range(len(gm.weights))]

    def __call__(self, x, sigma, cond):
        out = self.gm.denoise(x, sigma)
        if cond is None:
            return out
        drop = cond.get("drop", torch.zeros(len(x), dtype=torch.bool))
        for k, part in enumerate(self.parts):
            sel = (cond["class"] == k) & ~drop
            if sel.any():
                out[sel] = part.denoise(x[sel], sigma[sel])
        return out


def test_cfg_with_exact_oracle_scale_one_samples_the_component():
    gm = _mixture()
    oracle = _MixtureOracle(gm)
    k = 0
    x = _sample_ode(classifier_free(oracle, {"class": torch.tensor([k])}, 1.0))
    _assert_is_component(x, _component(gm, k))
    x0 = _sample_ode(classifier_free(oracle, {"class": torch.tensor([k])}, 0.0), n=3000)
    _assert_is_component(x0, gm, tol_mean=0.06, tol_cov=0.06)  # scale 0: the whole mixture


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_guidance_works_with_every_sampler(name):
    gm = _mixture()
    oracle = _MixtureOracle(gm)
    D = classifier_guidance(classifier_free(oracle, {"class": torch.tensor([1])}, 2.0), _exact_classifier(gm), 1, 0.5)
    x = _sample_ode(D, n=200, steps=30, sampler=name, sigma_max=20.0)
    assert torch.isfinite(x).all()
    frac = float((gm.responsibilities(x, torch.zeros(len(x))).argmax(-1) == 1).double().mean())
    assert frac > 0.9, (name, frac)


def test_guided_denoiser_plain_when_scale_one():
    calls = []

    def model(x, sigma, cond):
        calls.append(len(x))
        return x

    x = torch.zeros(3, 2)
    guided_denoiser(model, {"class": torch.tensor([0, 1, 2])}, scale=1.0)(x, torch.ones(3))
    guided_denoiser(model, {"class": torch.tensor([0, 1, 2])}, scale=2.0)(x, torch.ones(3))
    assert calls == [3, 6]  # one plain forward; then one batched forward of [cond; uncond]


# The noise-aware classifier


def test_noisy_classifier_learns_and_round_trips(tmp_path):
    # Two classes: a bright top half or a bright bottom half; easy at low sigma, chance at high sigma.
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (256,), generator=g)
    x = -torch.ones(256, 1, 8, 8)
    x[y == 0, :, :4] = 1.0
    x[y == 1, :, 4:] = 1.0
    sampler = lambda b, gen: (torch.randn(b, generator=gen) * 1.2 - 1.2).exp()  # EDM's log-normal sigmas
    net = train_noisy_classifier(
        x, y, sampler, cfg=NoisyClassifierConfig(num_classes=2, width=8, emb_dim=16), images=3000, batch_size=64
    )
    with torch.no_grad():
        xn = x + 0.1 * torch.randn(x.shape, generator=g)
        acc = float((net(xn, torch.full((256,), 0.1)).argmax(-1) == y).float().mean())
    assert acc > 0.95
    p = save_noisy_classifier(net, tmp_path / "noisy-classifier.safetensors", {"accuracy": acc})
    net2 = load_noisy_classifier(tmp_path)
    torch.testing.assert_close(net2(xn, torch.full((256,), 0.1)), net(xn, torch.full((256,), 0.1)))
    assert json.loads(p.with_suffix(".json").read_text())["accuracy"] == acc
    with pytest.raises(ClassifierError):
        load_noisy_classifier(tmp_path / "missing.safetensors")
    # The gradient guidance of a real network is finite and shaped like x.
    D = classifier_guidance(lambda x, s: x * 0, net, 0, 2.0)
    out = D(torch.randn(3, 1, 8, 8), torch.full((3,), 1.0))
    assert out.shape == (3, 1, 8, 8) and torch.isfinite(out).all() and out.abs().sum() > 0


# generate() and the sample command with conditioning


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    """A run folder holding a random class-conditional 8x8 model (no training needed for these checks)."""
    import json
    from dataclasses import replace

    from safetensors.torch import save_file

    from torchdiffusion.config import to_json
    from torchdiffusion.model import build_model
    from torchdiffusion.presets import get_preset

    cfg = get_preset("digits-test")
    cfg = replace(cfg, model=replace(cfg.model, num_classes=10))
    path = tmp_path_factory.mktemp("class_run")
    torch.manual_seed(0)
    model = build_model(cfg, (1, 8, 8))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    (path / "config.json").write_text(to_json(cfg))
    (path / "run.json").write_text(json.dumps({"data_shape": [1, 8, 8]}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "ema.safetensors"))
    return path


def test_generate_with_cfg_keeps_per_image_seeds(class_run):
    from dataclasses import replace

    from torchdiffusion.generate import generate, load_run

    run = load_run(class_run)
    cond = {"class": torch.arange(5) % 10}
    s = replace(run.config.sample, guidance=2.5, steps=3, sampler="euler")
    a = generate(run.model, range(5), replace(s, batch_size=2), run.data_shape, cond=cond)
    b = generate(run.model, range(5), replace(s, batch_size=5), run.data_shape, cond=cond)
    torch.testing.assert_close(a, b, atol=5e-4, rtol=1e-4)  # float32 kernels may differ with the batch size
    c = generate(run.model, range(5), replace(s, batch_size=5, guidance=1.0), run.data_shape, cond=cond)
    assert (a - c).abs().max() > 1e-4  # the guidance scale reaches the sampler


def test_sample_cli_conditioning_flags(class_run, capsys):
    from torchdiffusion.cli import main

    out = class_run / "g.png"
    assert (
        main(
            [
                "sample",
                str(class_run),
                "--class",
                "0,1,2",
                "--guidance",
                "2",
                "--n",
                "3",
                "--steps",
                "2",
                "--save-npy",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    x = torch.from_numpy(np.load(out.with_suffix(".npy")))
    assert x.shape == (3, 1, 8, 8)
    assert_grid_of(out, x)  # the PNG shows exactly the saved samples
    for bad in (
        ["--class", "10"],
        ["--prompt", "red apple"],
        ["--context", "1,0"],
        ["--negative-prompt", "x"],
        ["--class", "a,b"],
        ["--classifier", str(class_run / "none"), "--class", "1"],
    ):
        capsys.readouterr()
        assert main(["sample", str(class_run), "--n", "2", "--steps", "2", *bad]) == 2, bad
        err = capsys.readouterr().err.strip()
        assert err.startswith("torchdiffusion sample: error:") and "\n" not in err, err
    # a guidance setting given by --set is read at --guidance's scale (it was checked against the run's own, 1)
    base = ["sample", str(class_run), "--n", "2", "--steps", "2", "--class", "1", "--out", str(out)]
    for sets in (["--set", "sample.guidance_interval=0.02,10"], ["--set", "sample.guidance_rescale=0.5"]):
        assert main([*base, "--guidance", "3", *sets]) == 0, capsys.readouterr().err
        capsys.readouterr()
        assert main([*base, *sets]) == 2 and "changes nothing" in capsys.readouterr().err
    # a negative the model cannot read is named as given (it said 'drop --prompt' for a --negative-prompt)
    for bad, says in [
        (["--negative-prompt", "blue"], "drop --negative-prompt"),
        (["--negative-context", "1,0"], "drop --negative-context"),
    ]:
        capsys.readouterr()
        assert main(["sample", str(class_run), "--n", "2", "--steps", "2", "--class", "1", *bad]) == 2, bad
        err = capsys.readouterr().err.strip()
        assert says in err and "\n" not in err, err


def test_guidance_refuses_what_it_would_silently_misread():
    """A misspelt cond key (the draw was unconditional), float class labels (truncated), a NaN retrieval scale
    (plain CFG), labels of the wrong count (a torch broadcast error) and Precond's sigma_data 0 (all-zero samples):
    one-line ValueErrors; CFG's rescale on one value per sample is the plain guided value (it was NaN)."""
    from torchdiffusion.cond import CondError
    from torchdiffusion.guidance import classifier_free, classifier_guidance, guided_denoiser, retrieval_guided

    net = lambda x, c_noise, cond: x  # noqa: E731
    m = Precond(net, "edm")
    labels = torch.zeros(2, dtype=torch.long)
    for make, says in [
        (lambda: classifier_free(m, {"klass": torch.tensor([3])}, 3.0), "no key 'klass'"),
        (lambda: guided_denoiser(m, {"class": labels}, uncond={"clas": labels}, scale=2.0), "no key 'clas'"),
        (lambda: m(torch.randn(2, 3), torch.ones(2), {"class": torch.full((2,), 3.7)}), "integer labels"),
        (lambda: guided_denoiser(m, {"class": labels}, scale=2.0, retrieval_scale=float("nan")), "finite"),
        (lambda: retrieval_guided(m, {"class": labels, "neighbours": torch.zeros(2, 3)}, 1.0, math.inf), "finite"),
        (lambda: classifier_guidance(m.bind(None), lambda x, s: x[:, :3], torch.tensor([0, 1, 2]), 1.0)(
            torch.randn(5, 4), torch.ones(5)), "3 labels for 5 samples"),
        (lambda: Precond(net, "edm", sigma_data=0.0), "sigma_data must be a finite number > 0"),
        (lambda: Precond(net, "edm", sigma_min=5.0, sigma_max=1.0), "0 < sigma_min < sigma_max"),
    ]:  # fmt: skip
        with pytest.raises((CondError, ValueError), match=__import__("re").escape(says)):
            make()
    two = lambda x, s, c: torch.where(c["drop"][:, None], 0.2 * x, 0.5 * x)  # noqa: E731
    x = torch.randn(4, 1)
    out = classifier_free(two, {"class": torch.zeros(4, dtype=torch.long)}, 2.0, rescale=0.5)(x, torch.ones(4))
    assert torch.allclose(out, 0.2 * x + 2.0 * (0.5 * x - 0.2 * x))


def test_classifier_guidance_of_the_unconditional_branch_takes_its_target_class(class_run, tmp_path, capsys):
    # --guidance 0 samples the unconditional branch alone, and --classifier steers it towards --class (Dhariwal and
    # Nichol guide an unconditional model): --class is read, by the classifier
    from torchdiffusion.cli import main

    torch.manual_seed(0)
    net = NoisyClassifier(NoisyClassifierConfig(in_channels=1, num_classes=10, width=8, emb_dim=16))
    save_noisy_classifier(net, tmp_path / "clf" / "noisy-classifier.safetensors", {})
    base = ["sample", str(class_run), "--n", "2", "--steps", "2", "--save-npy"]
    x = {}
    for name, extra in (
        ("plain", []),
        (
            "guided",
            ["--guidance", "0", "--class", "3", "--classifier", str(tmp_path / "clf"), "--classifier-scale", "9"],
        ),
    ):
        out = tmp_path / f"{name}.png"
        assert main([*base, *extra, "--out", str(out)]) == 0, capsys.readouterr().err
        x[name] = np.load(out.with_suffix(".npy"))
    assert np.abs(x["guided"] - x["plain"]).max() > 1e-4
    assert json.loads((tmp_path / "guided.json").read_text())["wrapped"] is True


def test_a_negative_at_scale_1_is_one_conditional_forward():
    # D_u + 1 (D_c - D_u) = D_c whatever the negative: the conditional branch alone, not two branches per step
    rows = []

    def model(x, sigma, cond):
        rows.append(len(x))
        return x * 0.5 + cond["context"][:, :1, None, None]

    x = torch.randn(3, 1, 4, 4)
    cond, neg = {"context": torch.ones(3, 2)}, {"context": torch.zeros(3, 2)}
    D = guided_denoiser(model, cond, scale=1.0, uncond=neg, interval=(0.1, 10), rescale=0.5)
    out = D(x, torch.full((3,), 1.0))
    assert rows == [3]
    assert torch.equal(out, model(x, torch.full((3,), 1.0), cond))


def test_a_saved_interval_off_the_grid_is_judged_only_where_guidance_reads_it(tmp_path, capsys):
    # the run guides at 3 within [100, 200], above sigma_max: refused there; at --guidance 1 nothing reads the
    # interval, so the conditional draw is taken
    from tinyruns import CLASS_RUN, write_run
    from torchdiffusion.cli import main

    name, sets = CLASS_RUN
    run = write_run(tmp_path / "run", name, [*sets, "sample.guidance=3", "sample.guidance_interval=100,200"])
    base = ["sample", str(run), "--class", "3", "--n", "2", "--steps", "2", "--out", str(tmp_path / "x.png")]
    assert main(base) == 2 and "holds no noise level" in capsys.readouterr().err
    assert main([*base, "--guidance", "1"]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("sampler", ["dpmpp_2s", "heun_sde"])
def test_an_interval_between_the_grids_levels_is_taken_by_samplers_that_evaluate_there(tmp_path, capsys, sampler):
    """DPM-Solver++(2S) evaluates at each step's midpoint and heun_sde at sigma raised by churn: an interval holding
    no level of the grid still guides those evaluations (it changes the samples), so it is not refused; euler,
    which evaluates at the levels alone, is refused."""
    from tinyruns import CLASS_RUN, write_run
    from torchdiffusion.cli import main
    from torchdiffusion.generate import load_run

    name, sets = CLASS_RUN
    run = write_run(tmp_path / "run", name, [*sets, "sample.steps=4", "sample.grid=karras"])
    grid = load_run(run).sampling_plan(load_run(run).config.sample)[0]  # 80, 13.07, 1.127, 0.0251, 0
    lo, hi = float(grid[1]) * 1.05, float(grid[0]) * 0.95  # strictly between the first two levels
    base = ["sample", str(run), "--class", "3", "--n", "2", "--guidance", "3"]
    png = tmp_path / "in.png"
    assert main([*base, "--sampler", sampler, "--guidance-interval", f"{lo},{hi}", "--out", str(png)]) == 0
    record = json.loads(png.with_suffix(".json").read_text())
    assert record["network_evaluations_per_image"] > record["nfe"]  # some evaluations were guided (two branches)
    euler = [*base, "--sampler", "euler", "--guidance-interval", f"{lo},{hi}", "--out", str(tmp_path / "e.png")]
    assert main(euler) == 2
    assert "holds no noise level" in capsys.readouterr().err


def test_more_classes_than_images_is_refused_and_the_record_names_each_images_class(class_run, tmp_path):
    """`--class 0,1,2 --n 1` drew class 0 alone and said nothing, and the settings record did not say which class
    made which image."""
    import json

    from tinyruns import cli
    from torchdiffusion.cond import CondError
    from torchdiffusion.studio.params import parse_command, precheck

    out = tmp_path / "out" / "g.png"
    base = ["sample", class_run, "--steps", "2", "--out", out]
    code, _, err = cli(*base, "--n", "1", "--class", "0,1,2")
    assert code == 2 and err.count("\n") == 1 and "3 --class classes for 1 image" in err, err
    assert not out.parent.exists()
    args = parse_command("sample", class_run, {"n": 2, "steps": 2, "class": "0,1,2"}, out=class_run / "s.png")
    with pytest.raises(CondError, match="3 --class classes for 2 images"):  # the studio, before the job
        precheck(args, class_run)
    for flags, classes in ((["--class", "4,7"], [4, 7, 4]), (["--labels", "cycle"], [0, 1, 2])):
        code, _, err = cli(*base, "--n", "3", *flags)
        assert code == 0, err
        rec = json.loads(out.with_suffix(".json").read_text())
        assert rec["classes"] == classes and "prompts" not in rec and "negative_prompt" not in rec
