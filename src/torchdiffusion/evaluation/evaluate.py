"""Evaluate a run folder: sample it, then FD / KID / precision-recall per feature set, bits/dim, memorisation.

    from torchdiffusion.evaluation import evaluate
    report = evaluate("runs/demo", metrics=("fd", "kid", "pr", "nll", "memorisation"), n=5000)

Writes ``<out>/report.json`` and a one-page ``<out>/summary.html`` (with ``samples.png`` and
``closest_pairs.png``); ``out`` defaults to ``<run>/eval``. Every metric is named for its features
(``FD-EffNetLite0``, ``FD-MNIST5kclf``); "FID" appears only with user-supplied Inception weights.

References are the run's training images (``load_data(cfg.data, "train", seed=cfg.train.seed)``); the floor
- the same metrics for real held-out images (the source's test split, else ``data.holdout``) against the
training set - is reported beside them when held-out images exist.
"""

from __future__ import annotations

import html
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from ..cond import classes_to_sample, run_labels, trained_classes
from ..io import atomic_write, sha256_tensor, write_json
from . import features as FE
from . import metrics as M
from .classifier import (
    ClassifierError,
    SmallClassifier,
    available_classifiers,
    class_report,
    classifier_card_of,
    classifier_from,
)
from .likelihood import ode_bits_per_dim, pixel_grid, vp_bound_bits_per_dim
from .memorisation import distinct_rows, memorisation_report, save_closest_pairs

METRICS = ("fd", "kid", "pr", "nll", "memorisation", "classes", "straightness", "volume", "contrastive")
# bits/dim's defaults, the library's and the command line's: held-out images, RK4 steps of the probability-flow
# ODE, stratified timesteps of the VP bound (at most T - 1: :func:`vlb_timesteps_for`)
NLL_N, ODE_STEPS, VLB_TIMESTEPS = 64, 32, 100


class EvaluateError(ValueError):
    """Bad evaluation request (unknown metric, unusable run); one-line message."""


def default_features(data_source: str, kind: str, classifier: str | None = None) -> list[str]:
    """EfficientNet-Lite0 plus a classifier's features - ``classifier`` (a name or file), else the project's
    classifier for the data set when one ships; raw for vectors."""
    if kind != "image":
        return ["raw"]
    feats = ["effnet_lite0"]
    if classifier is not None:
        feats.append(f"clf:{classifier}")
    elif data_source in available_classifiers():
        feats.append(f"clf:{data_source}")
    return feats


def classes_classifier(run, metrics: Sequence[str], classifier: str | None = None):
    """(spec, network) of the classifier behind the ``classes`` report, checked against the run before anything
    is sampled: ``classifier`` (a shipped name, a train-classifier --evaluation file or its folder) when given, else
    the data set's shipped one when it reads the run's images; (None, None) when there is none. Refused in one line:
    ``classes`` asked for with no classifier for the data, or a given classifier that cannot read the run's images
    or tells another number of classes apart than a class-conditional run is conditioned on."""
    src = run.config.data.source
    if classifier is None:
        net = shipped_classifier(src, run.image_shape[0]) if run.kind == "image" else None
        if net is not None:
            return src, net
        if "classes" in metrics:
            raise EvaluateError(
                f"--metrics classes needs a classifier of this run's images: none ships for {src!r} data; train "
                f"one with 'torchdiffusion train-classifier {run.path} --evaluation' and pass --classifier"
            )
        return None, None
    if run.kind != "image":
        raise EvaluateError(f"--classifier reads images; {run.path} holds {run.kind} data")
    names = run.info.get("class_names")
    return classifier, fitting_classifier(classifier, run.image_shape, sampled_classes(run), names=names)


def sampled_classes(run) -> int:
    """:func:`classes_to_sample` of a loaded run."""
    return classes_to_sample(run.config.model.num_classes, run.info.get("num_classes"))


def run_classes(run) -> list[int]:
    """The classes a class-conditional run's samples are drawn over: those its training data held
    (cond.trained_classes: below :func:`sampled_classes`, less a class no example had)."""
    return trained_classes(run.config.model.num_classes, run.info)


def class_labels_record(run, classes: list[int]) -> dict:
    """The sampling record's account of the class labels drawn (:func:`cond.run_labels`): the rule and the
    classes, named where run.json names them."""
    names = run.info.get("class_names")
    K = len(classes)
    named = isinstance(names, list) and len(names) > max(classes)
    rule = f"sample k: class k mod {K}" if classes == list(range(K)) else f"sample k: classes[k mod {K}]"
    return {"class_labels": rule, "classes": [str(names[c]) for c in classes] if named else list(classes)}


def shipped_classifier(data_source: str, channels: int) -> SmallClassifier | None:
    """The classifier shipped for ``data_source`` when there is one and it reads ``channels``-channel images."""
    if data_source not in available_classifiers():
        return None
    net = classifier_from(data_source)
    return net if net.cfg.in_channels == channels else None


def fitting_classifier(
    spec: str,
    shape: Sequence[int],
    num_classes: int,
    name: str = "--classifier",
    names: Sequence[str] | None = None,
) -> SmallClassifier:
    """The classifier ``spec`` names (see :func:`classifier.classifier_from`), once it is known to read the run's
    (C, H, W) images of ``shape`` (:func:`refuse_unfit_classifier`) and - for a class-conditional model,
    ``num_classes`` > 0 - to tell that many classes apart, and - where both its card and the run name their classes
    (``names``) - the same ones; else EvaluateError in one line that starts with ``name``."""
    try:
        net = classifier_from(spec)
    except ClassifierError as e:
        raise EvaluateError(f"{name}: {e}") from None
    refuse_unfit_classifier(name, spec, net.cfg, classifier_card_of(spec), shape, num_classes, names)
    return net


def refuse_unfit_classifier(
    name: str,
    spec: str,
    cfg,
    card: dict,
    shape: Sequence[int],
    num_classes: int,
    ours: Sequence[str] | None,
) -> None:
    """EvaluateError (one line, starting with ``name``) unless a classifier - its network config ``cfg`` (an
    evaluation or a noise-aware classifier's) and its card (the classes it names, the ``image_shape`` it was
    trained on) - fits a run that makes (C, H, W) images of ``shape``: where both name their classes, the run's
    ``ours`` (else its class k is another thing than the run's class k: a classifier of another data set); images
    of C channels; where the card records its image shape (older cards do not), images of H x W (its pooled CNN
    reads any size, and misreads another); for a class-conditional run (``num_classes`` > 0), that many classes."""
    theirs, trained = card.get("classes"), card.get("image_shape")
    channels, size = shape[0], tuple(shape[1:])
    if theirs and ours and [str(c) for c in theirs] != [str(c) for c in ours]:
        show = lambda cs: ", ".join(map(str, cs[:4])) + (", ..." if len(cs) > 4 else "")
        raise EvaluateError(
            f"{name} {spec} was trained on the classes {show(list(theirs))}; this run's are {show(list(ours))}"
        )
    if getattr(cfg, "dims", 2) != 2 or cfg.in_channels != channels:
        raise EvaluateError(
            f"{name} {spec} reads {cfg.in_channels}-channel images; this run makes {channels}-channel ones"
        )
    if isinstance(trained, list) and len(trained) == 3 and tuple(trained[1:]) != size:
        raise EvaluateError(
            f"{name} {spec} was trained on {trained[1]}x{trained[2]} images; this run makes "
            f"{'x'.join(map(str, size))} ones (train one on the run's data: 'torchdiffusion train-classifier RUN')"
        )
    if num_classes > 0 and cfg.num_classes != num_classes:
        raise EvaluateError(
            f"{name} {spec} tells {cfg.num_classes} classes apart; this run is conditioned on {num_classes}"
        )


def refuse_unfit_features(run, features: Sequence[str]) -> None:
    """EvaluateError (one line, naming the ``--features`` choice) for a classifier's features (``clf:...``) that
    cannot read the run's samples: a run of other than images, or images of another channel count than the
    classifier reads (:func:`refuse_unfit_classifier`; its classes do not matter here, only its penultimate layer)."""
    for f in features:
        if not f.startswith("clf:"):
            continue
        if run.kind != "image":
            raise EvaluateError(f"--features {f} reads images; {run.path} holds {run.kind} data")
        try:
            net = classifier_from(f[4:])
        except ClassifierError as e:
            raise EvaluateError(f"--features {f}: {e}") from None
        card = {"image_shape": classifier_card_of(f[4:]).get("image_shape")}  # its classes do not matter here
        refuse_unfit_classifier(f"--features {f}:", "the classifier", net.cfg, card, run.image_shape, 0, None)


SAMPLE_TOL = 1e-3  # how far given samples may stray outside [-1, 1] (a rounding) where generate() clips them there


def refuse_unfit_samples(run, samples, metrics: Sequence[str], n: int | None = None) -> None:
    """EvaluateError (one line, naming what is expected and what was given) for ``samples`` given to
    :func:`evaluate` that are not a tensor of (N, *one output's shape) - the run's data shape, a latent run's decoded
    images' - or not in the units generate() returns (model units: floating point, finite, and within [-1, 1]
    where it clips its samples there, :func:`generate.clamps_x0`, and for a latent run's decoded images; other
    kinds' samples are in their data's units), or are too few for a metric asked for (:data:`MIN_SAMPLES`), or
    come beside an ``n`` that is not their count: each metric would read them as other data (8-bit pixels sit
    thousands from every real image), or fail after others were measured."""
    from ..generate import clamps_x0

    want = "(N, " + ", ".join(str(v) for v in run.image_shape) + ")"
    shape = tuple(samples.shape) if isinstance(samples, Tensor) else type(samples).__name__
    if not isinstance(samples, Tensor) or tuple(samples.shape[1:]) != tuple(run.image_shape):
        raise EvaluateError(f"samples must be a tensor of shape {want} for this run's {run.kind} data, got {shape}")
    if not samples.is_floating_point():
        raise EvaluateError(
            f"samples must be floating point in model units, as generate() returns them; got {samples.dtype} values "
            "(8-bit pixels? map them to [-1, 1]: x / 127.5 - 1)"
        )
    if not torch.isfinite(samples).all():
        raise EvaluateError("samples hold NaN or infinite values")
    clipped = run.codec is not None or clamps_x0(run.config.sample, run.data_shape, run.codec)
    lo, hi = float(samples.amin()), float(samples.amax())
    if clipped and (lo < -1 - SAMPLE_TOL or hi > 1 + SAMPLE_TOL):
        raise EvaluateError(
            f"samples span [{lo:.4g}, {hi:.4g}]; this run's samples are in model units [-1, 1], as generate() "
            "clips them (pixels 0..255: x / 127.5 - 1; 0..1: 2 x - 1)"
        )
    if n is not None and n != len(samples):
        raise EvaluateError(
            f"n={n} beside {len(samples)} samples: n is their count; leave it out or give {len(samples)}"
        )
    if why := too_few_samples(len(samples), metrics):
        raise EvaluateError(f"samples: {len(samples)} are {why}")


def too_few_samples(count: int, metrics: Sequence[str]) -> str | None:
    """Why ``count`` samples are too few for a metric asked for (:data:`MIN_SAMPLES`), or None."""
    drawn = [m for m in metrics if m in SAMPLE_METRICS]
    if drawn and count < (need := max(MIN_SAMPLES.get(m, 2) for m in drawn)):
        first = next(m for m in drawn if MIN_SAMPLES.get(m, 2) == need)
        return f"too few samples for --metrics {first}: it needs at least {need}"
    return None


def refuse_changed_data(run, train) -> None:
    """EvaluateError (one line, naming both values) when the run's data as loaded now - ``train``, its training
    split - is not what it was trained on as run.json records it: another example shape (``image_shape`` of a
    latent run, else ``data_shape``), another number of training examples (``train_examples``) or of held-out ones
    (``holdout_examples``; not for a reflow student, which learnt from its teacher's samples). The data folder or
    file changed after training; its metrics would measure other data."""
    info = run.info
    where = f"the run's data ({run.config.data.source}, {run.config.data.path or 'built in'})"
    recorded = info.get("image_shape") or info.get("data_shape")
    if recorded is not None and list(train.shape) != list(recorded):
        raise EvaluateError(
            f"{where} now holds examples of shape {list(train.shape)}; the run was trained on {list(recorded)} "
            "(run.json data_shape): evaluate it on the data it was trained on"
        )
    counts = [("train_examples", len(train), "training"), ("holdout_examples", train.held_out, "held-out")]
    for key, now, what in counts if run.config.objective.name != "reflow" else ():
        if info.get(key) is not None and now is not None and int(now) != int(info[key]):
            raise EvaluateError(
                f"{where} now gives {int(now)} {what} examples; the run was trained with {int(info[key])} "
                f"(run.json {key}): evaluate it on the data it was trained on"
            )


def vlb_timesteps_for(cfg, asked: int | None) -> int | None:
    """The VP bound's timesteps for a run (its config) as likelihood.vp_bound_bits_per_dim takes them - a count of
    log-spaced strata in [1, T - 1], or None for all T terms - from the count ``asked``: None for the default,
    min(VLB_TIMESTEPS, T - 1); 0 for all T. EvaluateError (one line) for a count outside [1, T - 1] of a
    discrete-process run (one of any other process has no bound to read it)."""
    T = cfg.diffusion.T
    if asked is None:
        return min(VLB_TIMESTEPS, T - 1) or None
    if asked == 0:
        return None
    if cfg.diffusion.process == "discrete" and not 1 <= asked <= T - 1:
        raise EvaluateError(f"--vlb-timesteps must be in [1, {T - 1}] for this run (T = {T}), or 0 for all T")
    return asked


ODE_METRICS = ("nll", "straightness")  # the metrics that read the network as the data's posterior-mean denoiser


def not_a_denoiser(cfg) -> str | None:
    """Why a run's network is not the posterior-mean denoiser D(x, sigma) = E[x0 | x_sigma] that the probability-flow
    ODE (bits/dim, straightness) and the VP bound are built on - a consistency model or a distilled student, which
    map x_sigma to the ODE's end point (or the teacher's few-step result) - or None for a denoising-trained run. A
    reflow student is a denoiser (the denoising loss on its teacher's noise-sample pairs) whose ODE is the one its
    sampling solves: its straightness is what reflow sets out to improve (Liu et al. 2022), so it is measured."""
    o = cfg.objective.name
    if o == "consistency_training":
        what = "a consistency model (objective.name=consistency_training)"
    elif o in ("progressive", "consistency_distillation", "distribution_matching"):
        what = f"a student distilled by {o} (objective.name={o})"
    else:
        return None
    return (
        f"this run's network is {what}: it maps a noisy input to the ODE's end point, not the posterior-mean "
        "denoiser the probability-flow ODE and the VP bound are built on, so bits/dim and straightness of it bound "
        "and measure nothing"
    )


def _subsample(x: Tensor, n: int, seed: int = 0) -> Tensor:
    if x.shape[0] <= n:
        return x
    return x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]]


def feature_metrics(
    fake: Tensor,
    real: Tensor,
    feature: str,
    metrics: Sequence[str],
    *,
    heldout: Tensor | None = None,
    max_ref: int = 10_000,
    pr_k: int = 3,
    batch_size: int = 100,
    cache_key: str | None = None,
    real_fn=None,
    inception_path: str | None = None,
    progress: bool = False,
) -> dict:
    """FD, KID and precision/recall of ``fake`` against ``real`` in one feature space, plus the held-out floor.

    ``real_fn``/``cache_key`` let the reference features be cached (see :func:`features.reference_features`).
    """
    label = FE.metric_label(feature)
    kw = {"batch_size": batch_size, "inception_path": inception_path, "progress": progress}
    if cache_key is not None and real_fn is not None:
        real_f = FE.reference_features(cache_key, real_fn, feature, **kw)
    else:
        real_f = FE.extract(_subsample(real, max_ref), feature, **kw)
    fake_f = FE.extract(fake, feature, **kw)
    sets = {"samples": fake_f}
    if heldout is not None:
        sets["heldout"] = FE.extract(heldout, feature, **kw)
    ref_stats = M.FeatureStats.of(real_f)
    out: dict = {"feature": feature, "n_ref": int(real_f.shape[0])}
    name = "FID" if feature == "inception" else f"FD-{label}"
    for which, f in sets.items():
        r: dict = {"n": int(f.shape[0])}
        if "fd" in metrics:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fd = M.fd_with_warning(f, ref_stats, real_f, name=name)
            r[name] = fd["value"]
            if "expected_bias" in fd:
                r[f"{name}_expected_bias"] = fd["expected_bias"]
                r["warnings"] = [str(w.message) for w in caught]
        if "kid" in metrics:
            v, se = M.kid(f, _subsample(real_f, 5000))
            r[f"KID-{label}"] = v
            r[f"KID-{label}_se"] = se
        if "pr" in metrics:
            p, rc = M.precision_recall(f, _subsample(real_f, max(f.shape[0], pr_k + 1)), k=pr_k)
            r[f"precision-{label}"] = p
            r[f"recall-{label}"] = rc
        out[which] = r
    return out


def _nll(run, x: Tensor, nll_n: int, ode_steps: int, vlb_timesteps: int | None, seed: int) -> dict:
    """Bits/dim of real images by both estimators (likelihood.py). Images on a grid of levels - 8-bit, 16-bit
    or their own (likelihood.pixel_grid) - are dequantised uniformly within their own bin (Delta = 2/255, 2/65535
    or 2/L) and get the VP bound with a decoder over that grid's levels; images on no grid (resized, composited or
    float values) and vector data get the continuous density's figure, labelled so, and no discrete bound."""
    model = run.model
    x = x[:nll_n].to(next(model.parameters()).device)
    g = torch.Generator().manual_seed(seed)
    D = lambda xx, s: model(xx, s)  # unconditional, unclamped
    bin_width, grid = pixel_grid(x) if run.kind == "image" else (None, None)
    t0 = time.time()
    ode = ode_bits_per_dim(
        D,
        x,
        bin_width=bin_width,
        generator=g,
        sigma_min=model.sigma_min,
        sigma_max=model.sigma_max,
        steps=ode_steps,
        trace="hutchinson",
    )
    if grid is not None:
        L = round(2 / bin_width)
        deq = f"uniform, Delta = 2/{L} ({grid} data, x = v/{L / 2:g} - 1): bits/dim = NLL/(D ln 2) + log2({L / 2:g})"
    elif run.kind == "image":
        deq = (
            "none: the images lie on no 8- or 16-bit grid of levels (resized, composited or float values); "
            "bits/dim of the continuous density at the values, no bound on a discrete NLL"
        )
    else:
        deq = "none (continuous data)"
    out = {
        "n": int(x.shape[0]),
        "bits_per_dim_ode": float(ode.mean()),
        "bits_per_dim_ode_se": float(ode.std() / math.sqrt(len(ode))) if len(ode) > 1 else None,
        "ode": f"RK4, {ode_steps} steps in log sigma over [{model.sigma_min:.4g}, {model.sigma_max:.4g}], "
        "Hutchinson (Rademacher) trace, prior N(0, sigma_max^2 I)",
        "dequantisation": deq,
        "seed": seed,  # the dequantisation noise, the Hutchinson probes and the VP bound's strata
        "ode_seconds": round(time.time() - t0, 1),
    }
    if model.process is not None and grid is not None:
        t0 = time.time()
        vb = vp_bound_bits_per_dim(
            D, model.process, x, variance="small", timesteps=vlb_timesteps, bin_width=bin_width, generator=g
        )
        out.update(
            {
                "bits_per_dim_vlb": float(vb.mean()),
                "bits_per_dim_vlb_se": float(vb.std() / math.sqrt(len(vb))) if len(vb) > 1 else None,
                "vlb": f"discrete VP bound, variance beta~ (small), decoder discretised over the {L + 1} levels of "
                f"{grid} data, "
                + ("all T timesteps" if vlb_timesteps is None else f"~{vlb_timesteps} log-spaced strata of timesteps"),
                "vlb_seconds": round(time.time() - t0, 1),
            }
        )
    elif model.process is None:
        p = run.config.diffusion.parameterization
        what = {"flow": "a rectified-flow (flow-matching) model", "edm": "a continuous-sigma (EDM) model"}.get(
            p, f"a continuous-sigma ({p}-parameterised) model"
        )
        out["vlb"] = f"not available: {what} has no discrete VP chain"
    elif run.kind == "image":
        out["vlb"] = "not computed: its decoder gives probabilities of grid levels, and these images lie on none"
    else:
        out["vlb"] = f"not computed: its decoder gives probabilities of pixel levels, and {run.kind} data have none"
    return out


# The files an evaluation writes in its folder. Those an earlier evaluation left there that this one does not write
# again are removed once its report is written: the folder never shows an older evaluation's picture beside a newer
# report (until then the older evaluation stays whole, so a failed or stopped one loses nothing).
DEFAULT_N = 5000  # the samples drawn where evaluate() is given no n
EVAL_FILES = ("report.json", "summary.html", "samples.png", "closest_pairs.png", "gaussian_pca.png", "profiles.png")

# the metrics that need generated samples
SAMPLE_METRICS = ("fd", "kid", "pr", "memorisation", "classes", "volume", "contrastive")
# the fewest samples a metric can be computed from: KID's and the volume metrics' unbiased MMD^2 needs 3 on each
# side, precision/recall a point and its k = 3 nearest neighbours; any other, 2
MIN_SAMPLES = {"kid": 3, "volume": 3, "pr": 4}


def evaluate(
    run_path: str | Path,
    metrics: Sequence[str] = ("fd", "kid", "pr", "nll", "memorisation"),
    n: int | None = None,
    *,
    features: Sequence[str] | None = None,
    out: str | Path | None = None,
    steps: int | None = None,
    sampler: str | None = None,
    guidance: float | None = None,
    grid: str | None = None,
    sampling: Callable | None = None,
    seed: int = 10_000,
    batch_size: int = 100,
    nll_n: int = NLL_N,
    ode_steps: int = ODE_STEPS,
    vlb_timesteps: int | None = None,
    holdout_n: int | None = None,
    inception_path: str | None = None,
    samples: Tensor | None = None,
    contrastive: str | Path | None = None,
    classifier: str | None = None,
    device: str = "cpu",
    log=print,
    progress: bool = False,
    notes: dict | None = None,
) -> dict:
    """Evaluate a run folder; returns the report dict and writes report.json + summary.html under ``out``.

    Args:
        run_path: a run folder (config.json, run.json, weights).
        metrics: any of fd, kid, pr, nll, memorisation, classes (with ``classifier`` or a shipped one). Samples
            are drawn only for the metrics that use them (``nll`` alone scores real images only).
        n: number of generated samples (image k uses seed ``seed + k``; None: :data:`DEFAULT_N`); beside
            ``samples``, their count or None.
        features: feature networks (default: effnet_lite0 + the data set's classifier; raw for vectors).
        steps, sampler, guidance, grid: override the run's sampling settings (guidance: the classifier-free scale
            of a conditional run's samples; grid: a sample.grid name).
        sampling: ``(run, SampleConfig) -> SampleConfig``, applied to the run's sample config before n,
            batch_size and the overrides above: any other sample setting, e.g. the CLI's sampling flags.
        nll_n, ode_steps, vlb_timesteps: real images used for bits/dim, RK4 steps, VP-bound timesteps (None: the
            default, min(100, T - 1); 0: all T; as the command line's --vlb-timesteps, :func:`vlb_timesteps_for`).
        holdout_n: cap on the held-out real images used for the floor (default: n).
        samples: precomputed samples (N, ...) instead of generating, in the units generate() returns: model units,
            floating point - images and volumes within [-1, 1] where the run clips its samples (sample.clip_denoised),
            a latent run's decoded images within [-1, 1], other kinds their data's units - and one output's shape
            each (the run's data shape; a latent run's decoded images'), else refused before anything is measured.
        contrastive: a train-clip run folder (or its weights) for the ``contrastive`` metric (default: the
            shipped emoji model); samples of a text-conditioned run are drawn from the held-out captions.
        classifier: the classifier of the ``classes`` report (confidence, balance, and the share of a
            class-conditional run's samples read as their class) and of the default classifier features: a
            shipped name, or ``train-classifier RUN --evaluation``'s eval-classifier.safetensors or its folder
            (default: the data set's shipped classifier, when one ships).
        log: receives one line per phase and every warning (a skipped feature network, small-n bias).
        progress: progress bars for sampling and feature extraction (progress.step_bar).
        notes: lines the report carries under ``notes`` (e.g. a default metric left out, and why).

    ``nll`` and ``straightness`` of a consistency model or a distilled student are refused (:func:`not_a_denoiser`).
    """
    from ..generate import load_run

    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise EvaluateError(f"unknown metric {bad[0]!r}; choose from {', '.join(METRICS)}")
    asked_n, n = n, DEFAULT_N if n is None else n  # beside samples, an n asked for must be their count
    if n < 2:
        raise EvaluateError(f"--n must be >= 2, got {n}")
    drawn = [m for m in metrics if m in SAMPLE_METRICS]
    if samples is None and (why := too_few_samples(n, metrics)):
        raise EvaluateError(f"--n {n} is {why}")
    from ..config import MAX_SEED

    used = n if drawn and samples is None else min(n, 256) if "straightness" in metrics else 0  # seeds seed + k
    if used and seed + used - 1 > MAX_SEED:
        raise EvaluateError(
            f"--seed {seed} with {used} samples needs seeds up to {seed + used - 1}, beyond the largest, {MAX_SEED}: "
            f"take --seed <= {MAX_SEED - used + 1}"
        )
    run = load_run(run_path, device=device)
    cfg = run.config
    if samples is not None:
        refuse_unfit_samples(run, samples, metrics, asked_n)
    if run.codec is not None and list(metrics) == ["nll"]:  # in a list of metrics it is skipped, and says why
        raise EvaluateError(
            "--metrics nll has nothing to measure on a latent run: its likelihood is its latents', not its images'; "
            "choose other metrics (fd, kid, pr, classes, ...)"
        )
    if (asked := [m for m in metrics if m in ODE_METRICS]) and (why := not_a_denoiser(cfg)):
        raise EvaluateError(f"--metrics {asked[0]}: {why}; choose other metrics")
    vlb_timesteps = vlb_timesteps_for(cfg, vlb_timesteps) if "nll" in metrics else None  # refused before sampling
    out = Path(out) if out is not None else run.path / "eval"
    clf_spec, clf_net = classes_classifier(run, metrics, classifier)  # refused before sampling
    features = list(features) if features else default_features(cfg.data.source, run.kind, classifier)
    if any(m in metrics for m in ("fd", "kid", "pr")):
        refuse_unfit_features(run, features)  # before sampling, as --classifier
    # "n": the samples measured, set once they are drawn (straightness and nll draw none: each names its own n)
    report: dict = {"run": str(run.path), "data": cfg.data.source, "metrics": list(metrics)}
    if notes:
        report["notes"] = dict(notes)
    feature_metrics = any(m in metrics for m in ("fd", "kid", "pr"))  # the ones read in ``features``
    report.update(**({"features": features} if feature_metrics else {}), torch=torch.__version__)
    train, held = _real_sets(cfg)
    refuse_changed_data(run, train)  # before sampling: metrics against other data would say nothing of the run
    heldout = None if held is None else _subsample(held, holdout_n or n, seed=1)  # the floor's real images
    report["train_n"] = len(train)
    if "memorisation" in metrics and (m := distinct_rows(train.x)[0].shape[0]) < 2:  # refused before sampling
        raise EvaluateError(
            f"--metrics memorisation: the d1/d2 ratio test needs at least 2 distinct training examples, and this run "
            f"has {m}; leave memorisation out of --metrics"
        )
    scorer = _contrastive_model(run, contrastive) if "contrastive" in metrics else None  # refused before sampling
    if heldout is not None and (feature_metrics or "memorisation" in metrics):  # (volume: its own held-out set)
        report["heldout_n"] = int(heldout.shape[0])
    labels = None
    pictures: list[str] = []  # the pictures this evaluation writes beside its report
    if samples is None and any(m in metrics for m in SAMPLE_METRICS):
        samples, labels, report["sampling"] = _draw_samples(
            run, n, seed, batch_size, steps, sampler, guidance, log, progress, grid=grid, sampling=sampling
        )
    if samples is not None:
        report["n"] = int(samples.shape[0])
        if any(m in metrics for m in ("fd", "kid", "pr")):
            fm = dict(metrics=metrics, batch_size=batch_size, inception_path=inception_path, progress=progress)
            report["feature_metrics"] = _feature_section(samples, train, heldout, features, cfg, log, **fm)
        if "volume" in metrics:
            log("volume metrics (a 3-D classifier's features; the Gaussian baseline beside)...")
            report["volume"] = _volume_section(run, samples, labels, train, seed, out)
            pictures += ["samples.png", "gaussian_pca.png", "profiles.png"]
        if clf_net is not None:
            report["classes"] = class_report(samples, clf_net, labels=labels)
            report["classes"]["classifier"] = clf_spec
            report["classes"]["classifier_heldout_accuracy"] = classifier_card_of(clf_spec).get("heldout_accuracy")
    if scorer is not None:
        log("contrastive score...")
        report["contrastive"] = _contrastive(run, samples, report.get("sampling", {}).get("prompts"), scorer)
    if "nll" in metrics and run.codec is not None:  # bits/dim of latents says nothing about images: not measured
        report["nll"] = {"skipped": "a latent run's likelihood is its latents', not its images'"}
    elif "nll" in metrics:
        real = nll_images(train, held, nll_n)
        log(f"bits/dim on {min(nll_n, len(real))} real images...")
        report["nll"] = _nll(run, real, nll_n, ode_steps, vlb_timesteps, seed)
        report["nll"]["images"] = "held-out real images" if heldout is not None else "training images (no hold-out)"
    if "straightness" in metrics:
        log(f"straightness of the probability-flow paths ({min(n, 256)} noises, {ode_steps} Heun steps)...")
        from ..config import unread_flag

        if guidance is not None and (why := unread_flag(run.config, "sample.guidance", "--guidance")):
            raise EvaluateError(why)
        w = guidance if guidance is not None else run.config.sample.guidance  # --guidance, as the samples take it
        report["straightness"] = _straightness(run, min(n, 256), seed, ode_steps, w, progress)
    if "memorisation" in metrics:
        log("memorisation...")
        report["memorisation"] = _memorisation(run, samples, train, heldout, out)
        pictures += ["closest_pairs.png"] if run.kind == "image" else []
    write_report(report, samples if run.kind == "image" and samples is not None else None, out, pictures)
    return report


def _volume_section(run, samples: Tensor, labels, train, seed: int, out: Path) -> dict:
    """evaluation/volumes.py's metrics for the model's samples, the Gaussian-in-PCA-basis baseline and as many
    training volumes (the floor), against the held-out volumes; pictures of the samples and the baseline."""
    from ..data import load_data
    from ..viz import save_profiles, save_volumes
    from .volumes import FEATURE_SEED, gaussian_pca, slice_profiles, volume_metrics

    cfg = run.config
    if run.kind != "volume":
        raise EvaluateError(f"--metrics volume measures volumes; {run.path} holds {run.kind} data")
    if cfg.data.holdout < 2:
        raise EvaluateError("the volume metrics compare with held-out volumes: train with data.holdout=N (N >= 2)")
    held = load_data(cfg.data, "holdout", cfg.train.seed)
    n = len(samples)
    baseline = gaussian_pca(train.x, n, seed)
    floor = _subsample(train.x, n, seed)
    floor_labels = None if train.labels is None else train.labels[_subsample(torch.arange(len(train)), n, seed)]
    candidates = {
        "model": (samples, labels),
        "gaussian_pca": (baseline, None),
        "training_volumes": (floor, floor_labels),
    }
    # the feature network is the same for every --seed (seeded by FEATURE_SEED): a seed draws other samples and
    # baseline volumes, never another feature space
    rep = volume_metrics(train.x, train.labels, held.x, held.labels, candidates, seed=FEATURE_SEED)
    rep["profiles"].update(model=slice_profiles(samples), gaussian_pca=slice_profiles(baseline))
    rep["seed"] = seed  # the Gaussian baseline's draws and the training volumes of the floor
    save_volumes(samples, out / "samples.png", title="samples (row k: class k mod K)")
    save_volumes(baseline, out / "gaussian_pca.png", title="Gaussian baseline (data mean and covariance)")
    save_profiles(rep["profiles"], out / "profiles.png", title="slice profiles: held-out volumes (grey) and samples")
    return rep


def _straightness(run, n: int, seed: int, steps: int, guidance: float, progress: bool = False) -> dict:
    """Liu et al.'s straightness S and the path/chord length ratio of the run's ODE (shortcuts/straightness.py),
    from the noises of seeds seed..seed+n-1 (sample k's class: :func:`cond.run_labels`, at classifier-free guidance
    ``guidance``)."""
    from ..guidance import guided_denoiser
    from ..progress import step_bar
    from ..shortcuts.straightness import straightness
    from ..types import NoiseSource

    labels = run_labels(run.config.model.num_classes, run.info, n)
    cond = None if labels is None else {"class": labels}
    from ..generate import clamped, clamps_x0

    D = guided_denoiser(run.model, cond, scale=guidance)
    clip = clamps_x0(run.config.sample, run.data_shape, run.codec)
    D = clamped(D) if clip else D  # the ODE sampling solves: x0_hat clamped to [-1, 1] for images in pixels
    noise = NoiseSource(range(seed, seed + n), run.data_shape).initial()
    with torch.no_grad(), step_bar(steps, "straightness (Heun steps)", show=progress) as bar:
        st = straightness(D, noise, run.model.sigma_max, steps, callback=bar.step)
    out = {"S": st.S, "length_ratio": st.length_ratio, "n": n, "heun_steps": steps, "clamped": clip, "seed": seed}
    return {**out, "guidance": float(guidance)} if labels is not None else out


def nll_images(train, held: Tensor | None, nll_n: int) -> Tensor:
    """The real images bits/dim are measured on: ``nll_n`` held-out ones (seed 1), or the training set's."""
    return _subsample(held, nll_n, seed=1) if held is not None else train.x[:nll_n]


def no_level_grid(cfg, nll_n: int) -> bool:
    """Whether the images bits/dim of a run (its config) would be measured on lie on no grid of levels
    (likelihood.pixel_grid): the discrete VP bound is not computed for them."""
    return pixel_grid(nll_images(*_real_sets(cfg), nll_n))[1] is None


def _real_sets(cfg):
    """(training data: the reference, every held-out real image or None; each metric takes its own number)."""
    from ..data import load_data

    train = load_data(cfg.data, split="train", seed=cfg.train.seed)
    heldout = None
    try:
        if cfg.data.source == "fashion_mnist":
            heldout = load_data(cfg.data, split="test").x
        elif cfg.data.holdout > 0:
            heldout = load_data(cfg.data, split="holdout", seed=cfg.train.seed).x
    except ValueError:
        heldout = None
    return train, heldout


def _draw_samples(
    run,
    n: int,
    seed: int,
    batch_size: int,
    steps,
    sampler,
    guidance,
    log,
    progress: bool,
    grid: str | None = None,
    sampling: Callable | None = None,
):
    """(samples, class labels or None, the sampling record) - for class models, sample k asks for the class
    :func:`cond.run_labels` names among the classes of the run's data (:func:`run_classes`)."""
    from ..config import checked_sample, unread_flag, with_sampler
    from ..generate import generate
    from ..progress import step_bar

    over = {"steps": steps} if steps else {}
    over.update({"sampler": sampler} if sampler else {})
    over.update({"grid": grid} if grid else {})
    if guidance is not None and (why := unread_flag(run.config, "sample.guidance", "--guidance")):
        raise EvaluateError(why)
    over.update({"guidance": guidance} if guidance is not None else {})
    sample = run.config.sample if sampling is None else sampling(run, run.config.sample)
    sample = replace(sample, n=n, batch_size=batch_size, **over)  # the arguments above over ``sampling``'s
    if sampler and sampler != run.config.sample.sampler:  # the run's settings were its own sampler's
        sample = with_sampler(sample, sampler)
    checked_sample(run.config, sample)  # e.g. a student asked for more steps than it was distilled for
    from ..guidance import GuidanceError, refuse_interval_off_run_grid

    try:  # a guidance interval guiding at no level of the grid: the report would record guidance never applied
        refuse_interval_off_run_grid(run, sample)
    except GuidanceError as e:
        raise EvaluateError(str(e)) from None
    classes = run_classes(run)  # the data's classes: a class the data never had was never trained
    labels = run_labels(run.config.model.num_classes, run.info, n)
    cond = None if labels is None else {"class": labels}
    prompts = eval_prompts(run.config) if run.config.model.text_dim > 0 else None
    if prompts:  # a text-conditioned run: image k is drawn for prompt k mod P
        from ..text import caption_features

        text, mask = caption_features(prompts, cache=False)  # captions of the data: cut to the encoder's tokens
        k = torch.arange(n) % len(prompts)
        cond = {**(cond or {}), "text": text[k], "text_mask": mask[k]}
        if run.retrieval is not None:  # model.text_retrieval: each prompt's retrieved training examples
            from ..retrieval import with_neighbours

            cond = with_neighbours(cond, run.retrieval)
    t0 = time.time()
    log(f"sampling {n} images ({sample.sampler}, {sample.steps} steps)...")
    total = -(-n // batch_size) * sample.steps
    with step_bar(total, f"sampling {n} images ({sample.sampler})", show=progress) as bar:
        seeds = list(range(seed, seed + n))
        x = generate(
            run.model,
            seeds,
            sample,
            run.data_shape,
            cond=cond,
            callback=bar.step,
            grid_dir=run.path / "grids",
            codec=run.codec,  # a latent run's samples are decoded: every metric measures images
        )
    record = {"sampler": sample.sampler, "steps": sample.steps, "grid": sample.grid, "guidance": sample.guidance}
    record.update(sampling_shape(sample))
    record.update(guidance_record(sample))
    record.update(class_labels_record(run, classes) if classes else {})
    if prompts:
        record["prompts"] = prompts
    return x, labels, {**record, "seed": seed, "seconds": round(time.time() - t0, 1)}


def sampling_shape(sample) -> dict:
    """The grid's shape (rho, spacing) and the sampler settings a SampleConfig sets (those not left at the
    sampler's default): the rest of what an evaluation's sampling record names beside sampler, steps and grid."""
    from dataclasses import asdict

    settings = {k: v for k, v in asdict(sample.settings).items() if v is not None}
    return {"rho": sample.rho, "spacing": sample.spacing, **({"settings": settings} if settings else {})}


def guidance_record(sample) -> dict:
    """The rest of the settings that shape a draw beside the sampler's: classifier-free guidance's interval and
    rescale, autoguidance's weight, retrieval guidance's scale, and whether x0_hat was clamped."""
    interval = None if sample.guidance_interval is None else [float(v) for v in sample.guidance_interval]
    return {
        "guidance_interval": interval,
        "guidance_rescale": float(sample.guidance_rescale),
        "autoguidance": float(sample.autoguidance),
        "retrieval_guidance": float(sample.retrieval_guidance),
        "clip_denoised": bool(sample.clip_denoised),
    }


def eval_prompts(cfg, max_prompts: int = 256) -> list[str] | None:
    """The prompts a text-conditioned run is sampled with: the captions of its held-out data (never seen in
    training) when it has some, else of its training data; at most ``max_prompts``, distinct, in data order."""
    from ..data import load_data

    split = "holdout" if cfg.data.holdout > 0 else "train"
    captions = load_data(cfg.data, split=split, seed=cfg.train.seed).captions
    return list(dict.fromkeys(captions))[:max_prompts] if captions else None


def _contrastive_model(run, weights):
    """(contrastive model, its card) for a text-conditioned image run; EvaluateError for any other run."""
    from ..contrastive.metrics import default_contrastive_model

    if run.kind != "image" or run.config.model.text_dim <= 0:
        raise EvaluateError("the contrastive metric needs a text-conditioned image run (model.text_dim > 0)")
    return default_contrastive_model(weights, run.image_shape)  # a latent run's samples are decoded images


def _contrastive(run, samples: Tensor | None, prompts: list[str] | None, scorer) -> dict:
    """The contrastive score (contrastive/metrics.py) of samples against their prompts, beside the same score of
    real images of those captions (what a perfect model would reach)."""
    from ..contrastive.metrics import contrastive_score
    from ..data import load_data

    if not prompts or samples is None:
        raise EvaluateError("the contrastive metric needs samples drawn from prompts (a run with captions)")
    model, card = scorer
    index = torch.arange(samples.shape[0]) % len(prompts)
    out = {"weights": card.get("source"), **contrastive_score(model, samples, prompts, index)}
    cfg = run.config
    real = load_data(cfg.data, split="holdout" if cfg.data.holdout > 0 else "train", seed=cfg.train.seed)
    first = {c: i for i, c in reversed(list(enumerate(real.captions)))}  # one real image per prompt
    keep = torch.tensor([first[p] for p in prompts])
    out["real_images"] = contrastive_score(model, real.x[keep], prompts, torch.arange(len(prompts)))
    return out


def reference_key(source: str, reference: Tensor) -> str:
    """The name of the reference images' cached features: the images themselves (their sha256), so another
    folder, size, split or file changed on disk never reuses another set's features."""
    return f"{source}-train-{sha256_tensor(reference)[:32]}-n{len(reference)}"


def _feature_section(samples, train, heldout, features, cfg, log, **kw) -> dict:
    """feature_metrics per feature network; a network that cannot run is skipped with its reason, said on screen
    like every small-sample bias warning."""
    reference = _subsample(train.x, 10_000)
    key = reference_key(cfg.data.source, reference)
    section: dict = {}
    for feat in features:
        log(f"features {feat}...")
        try:
            section[feat] = feature_metrics(
                samples,
                train.x,
                feat,
                heldout=heldout,
                cache_key=key,
                real_fn=lambda: reference,
                **kw,
            )
        except FE.FeatureError as e:
            section[feat] = {"skipped": str(e)}
            log(f"warning: {feat} skipped: {e}")
            continue
        for which in ("samples", "heldout"):
            for w in section[feat].get(which, {}).get("warnings", []):
                log(f"warning ({which}): {w}")
    return section


def _memorisation(run, samples, train, heldout, out: Path) -> dict:
    """Nearest training neighbours of the samples (pixels, and the data set's classifier features when it ships)."""
    src = run.config.data.source
    kw = {}
    if run.kind == "image" and src in available_classifiers():
        clf = f"clf:{src}"
        kw = {"sample_feats": FE.extract(samples, clf), "train_feats": FE.extract(train.x, clf)}
        if heldout is not None:
            kw["holdout_feats"] = FE.extract(heldout, clf)
    mem = memorisation_report(samples, train.x, holdout=heldout, **kw)
    if run.kind == "image":
        save_closest_pairs(samples, train.x, mem, out / "closest_pairs.png")
    rep = {k: v for k, v in mem.items() if k not in ("nearest", "nn_distance")}
    if "features" in mem:
        rep["features"] = {k: v for k, v in mem["features"].items() if k != "nearest"}
    return rep


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for k, v in d.items():
        if isinstance(v, dict):
            rows += _flatten(v, f"{prefix}{k}.")
        elif isinstance(v, list) and len(v) > 12:
            continue
        else:
            rows.append((prefix + k, v))
    return rows


def write_report(report: dict, samples: Tensor | None, out: str | Path, pictures: Sequence[str] = ()) -> Path:
    """report.json and a one-page summary.html (metric table, sample grid, closest pairs) under ``out``.

    ``pictures``: the files this evaluation already wrote there; every other file of :data:`EVAL_FILES` (an
    earlier evaluation's) is removed with its manifest once the new report and page are written - an earlier
    evaluation's only: a picture of that name that another command wrote there stays (:func:`_of_an_evaluation`)."""
    out = Path(out)
    evaluated_before = (out / "report.json").is_file()
    write_json(report, out / "report.json")
    written = {"report.json", "summary.html", *pictures}
    imgs = ""
    if samples is not None:
        from ..viz import save_grid

        save_grid(samples[:64], out / "samples.png", nrow=8)
        written.add("samples.png")
        imgs += '<h2>Samples (first 64)</h2><img src="samples.png">'
    elif "samples.png" in written:  # a picture of another kind's samples (rows, series, volumes), drawn already
        imgs += '<h2>Samples</h2><img src="samples.png">'
    if "closest_pairs.png" in written:
        imgs += '<h2>Closest pairs (sample, nearest training image)</h2><img src="closest_pairs.png">'

    def fmt(v):
        return f"{v:.5g}" if isinstance(v, float) else html.escape(str(v))

    from ..provenance import TIMING_KEYS

    def row(k, v):  # a timing row is marked: reproduce compares the page without it, as report.json's timings
        mark = " class=timing" if k.endswith(TIMING_KEYS) else ""
        return f"<tr{mark}><td>{html.escape(k)}</td><td>{fmt(v)}</td></tr>"

    rows = "".join(row(k, v) for k, v in _flatten(report))
    page = (
        f"<!doctype html><meta charset=utf-8><title>torchdiffusion evaluation</title>"
        f"<style>body{{font-family:sans-serif;max-width:60em}}td{{padding:0 1em}}</style>"
        f"<h1>Evaluation of {html.escape(report.get('run', ''))}</h1><table>{rows}</table>{imgs}"
    )
    atomic_write(out / "summary.html", page)
    from ..provenance import manifest_path

    for name in sorted(set(EVAL_FILES) - written):
        if _of_an_evaluation(out / name, evaluated_before):
            for stale in (out / name, manifest_path(out / name)):  # the picture and provenance.py's record of it
                stale.unlink(missing_ok=True)
    return out


def _of_an_evaluation(path: Path, evaluated_before: bool) -> bool:
    """Whether ``path`` is an earlier evaluation's file: its manifest names ``evaluate``, or, without one (the
    library writes none), the folder held an evaluation's report.json before this one."""
    from ..provenance import ManifestError, manifest_path, read_manifest

    if not path.is_file():
        return False
    if not manifest_path(path).is_file():
        return evaluated_before
    try:
        return read_manifest(manifest_path(path))["command"]["name"] == "evaluate"
    except (ManifestError, KeyError, TypeError):
        return False  # unreadable: not known to be ours, so it stays


def quick_eval(
    model,
    cfg,
    data_shape: Sequence[int],
    train_x: Tensor,
    n: int = 256,
    seed: int = 10_000,
    steps: int | None = None,
    grid_dir: str | Path | None = None,
    codec=None,
    classifier: str = "",
    data_classes: int | None = None,
    classes_without_examples: Sequence[int] = (),
) -> dict:
    """A cheap in-training evaluation: one flat dict for a ``metrics.jsonl`` line.

    Samples ``n`` images with the run's sampler, then FD in a classifier's features - ``classifier``
    (``train.eval_classifier``: a train-classifier --evaluation file or folder, or a shipped name), else the data
    set's shipped one; raw values for vector data or image data with neither - against at most 2000 training
    examples, plus the classifier's confident fraction, the share of its rarest class and, for a class-conditional
    model (sample k asks for the class :func:`cond.run_labels` names), the share read as the class asked for. Meant
    to be called by
    ``train()`` every ``eval_every_images``.
    ``grid_dir``: the run folder's ``grids/`` (for ``sample.grid = "tuned"``, e.g. a distilled student's grid).
    ``codec``: a latent run's autoencoder; samples and the training latents ``train_x`` are decoded (the
    reference is then the reconstructions of the training images) before the features are taken.
    ``data_classes``: the classes of the training data (run.json's ``num_classes``); where fewer than
    ``model.num_classes``, samples are drawn over those alone (:func:`classes_to_sample`), less
    ``classes_without_examples`` (run.json's: classes below it no example had; cond.trained_classes).
    """
    from ..generate import before_guide, generate
    from ..latent import as_pixels

    sample = before_guide(replace(cfg.sample, n=n, **({"steps": steps} if steps else {})), model)
    K = classes_to_sample(cfg.model.num_classes, data_classes)
    info = {"num_classes": data_classes, "classes_without_examples": list(classes_without_examples)}
    labels = run_labels(cfg.model.num_classes, info, n)
    cond = None if labels is None else {"class": labels}  # else unconditional
    was_training = model.training
    model.eval()
    seeds = list(range(seed, seed + n))
    x = generate(model, seeds, sample, data_shape, cond=cond, grid_dir=grid_dir, codec=codec).cpu()
    model.train(was_training)
    src = cfg.data.source
    if classifier:
        spec, net = classifier, fitting_classifier(classifier, x.shape[1:], K, "train.eval_classifier")
    else:
        net = shipped_classifier(src, x.shape[1]) if x.ndim == 4 else None
        spec = src if net is not None else None
    feat = f"clf:{spec}" if spec else "raw"
    ref = FE.extract(as_pixels(_subsample(train_x, 2000), codec), feat)
    fd = M.frechet_distance(M.FeatureStats.of(FE.extract(x, feat)), M.FeatureStats.of(ref))
    out = {f"eval/FD-{FE.metric_label(feat)}@{n}": fd}
    if cfg.sample.autoguidance != 1.0:  # whether the run's guide model was there yet (training keeps it midway)
        out["eval/autoguidance"] = sample.autoguidance
    if net is not None:
        rep = class_report(x, net, labels=None if cond is None else cond["class"])
        out["eval/confident_fraction"] = rep["confident_fraction"]
        out["eval/min_class_fraction"] = rep["min_class_fraction"]  # a model of one class is confident too
        if "accuracy" in rep:
            out["eval/class_accuracy"] = rep["accuracy"]
    return out
