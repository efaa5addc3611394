"""torchdiffusion evaluate: sample a run and measure it (FD, KID, precision/recall, bits/dim, memorisation)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import MAX_GUIDANCE
from ..io import json_text
from .argtypes import (
    MAX_BATCH,
    MAX_COUNT,
    MAX_SEED,
    MAX_STEPS,
    MAX_THREADS,
    check_output_dir,
    float_in,
    int_in,
    nonneg_int,
    positive_int,
)
from .common import add_sampling_arguments, given_sampling_flags, sample_config_from_args

DEFAULT_METRICS = "fd,kid,pr,nll,memorisation"
MANIFESTS = True  # each file written gets <file>.manifest.json (provenance.py)
HELP = "evaluate a trained run: Fréchet distance, KID, precision/recall, bits/dim, memorisation -> JSON + HTML"
EXAMPLES = """examples:
  torchdiffusion evaluate runs/demo --metrics fd,kid,pr,nll,memorisation --n 5000
  torchdiffusion evaluate runs/demo --metrics fd,kid --features clf:mnist5k --n 1000   # fast: no EfficientNet
  torchdiffusion evaluate runs/toy --metrics straightness --n 256     # Liu et al.'s straightness of the ODE paths
  torchdiffusion evaluate runs/demo --metrics fd,classes --sampler dpmpp_2m_sde --eta 0.5 --grid karras --rho 5 --n 1000
  torchdiffusion evaluate runs/emoji-text --metrics contrastive,fd --n 1000   # scored by the shipped emoji model
  torchdiffusion train-classifier runs/sprites --evaluation    # a classifier of your own labelled data, then:
  torchdiffusion evaluate runs/sprites --metrics fd,classes --classifier runs/sprites/classifier --n 1000
  torchdiffusion evaluate runs/fashion --n 5000 --nll-n 256 --vlb-timesteps 0   # all T terms
  TORCHDIFFUSION_INCEPTION=inception-2015-12-05.pt torchdiffusion evaluate runs/demo --features inception

Metrics are named for their features (FD-EffNetLite0, FD-MNIST5kclf); "FID" only with --features inception.
The contrastive score is named for its weights ("torchdiffusion emoji model", from train-clip): not OpenAI's CLIP.
classes: the share of samples a classifier is >= 0.9 sure of, the class balance, and for a class-conditional run
the share read as the class asked for - by --classifier, or the data set's shipped classifier (MNIST, Fashion).
Writes RUN/eval/report.json and RUN/eval/summary.html (or --out DIR). Warnings (a feature network that cannot
run and the pip install that fixes it, the small-n bias of FD) are printed on stderr as well. --metrics nll
alone scores real images and draws no samples."""


REPORT_RECORD = ("report.json", ("run", "metrics"))  # an evaluation's folder is known by its report


def _check_eval_out(out: str | Path) -> Path:
    """The evaluation folder ``out``, checked (argtypes.check_output_dir) for the files an evaluation writes there -
    evaluation.evaluate.EVAL_FILES, and a table's or sequence's samples as rows or lines - known by its report."""
    from ..evaluation.evaluate import EVAL_FILES

    return check_output_dir(out, writes=(*EVAL_FILES, "samples.csv", "samples.txt"), record=REPORT_RECORD)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder written by 'torchdiffusion train'")
    p.add_argument(
        "--metrics",
        default=DEFAULT_METRICS,
        help="comma-separated: fd, kid, pr, nll, memorisation, classes (a classifier's reading of the samples; "
        "see --classifier), straightness (how straight the ODE paths are), "
        "volume (energy / MMD in a 3-D classifier's features, slice profiles, the Gaussian baseline; the default "
        "for volume runs), contrastive (text-conditioned runs: how well samples match their prompts, by our "
        "contrastive emoji model; see --contrastive); default: fd, kid, pr, nll, memorisation",
    )
    p.add_argument("--n", type=int_in(2, MAX_COUNT), default=5000, help="generated samples (default 5000)")
    p.add_argument(
        "--features",
        help="comma-separated feature networks: effnet_lite0, clf:<data>, clf:<classifier file or folder>, "
        "inception, raw (default: effnet_lite0 + the --classifier's or the data set's classifier)",
    )
    p.add_argument(
        "--classifier",
        help="a classifier of the run's images for the classes report and the default classifier features: "
        "'train-classifier RUN --evaluation''s eval-classifier.safetensors or its folder, or a shipped name "
        "(default: the data set's, where one ships: mnist5k, fashion_mnist)",
    )
    p.add_argument("--out", help="output folder (default RUN/eval)")
    add_sampling_arguments(p, counts=False)  # the samples' sampler, grid and settings, as 'sample' takes them
    p.add_argument(
        "--guidance",
        type=float_in(0.0, MAX_GUIDANCE),
        help="override the run's classifier-free guidance scale (conditional image and volume runs)",
    )
    p.add_argument("--seed", type=nonneg_int(MAX_SEED), default=10_000, help="image k uses seed + k (default 10000)")
    p.add_argument("--batch-size", type=positive_int(MAX_BATCH), default=100, help="images per network call")
    p.add_argument(
        "--nll-n", type=positive_int(MAX_COUNT), default=None, help="real (held-out) images for bits/dim (default 64)"
    )
    p.add_argument(
        "--ode-steps",
        type=positive_int(MAX_STEPS),
        default=None,
        help="RK4 steps of the probability-flow ODE (default 32)",
    )
    p.add_argument(
        "--vlb-timesteps",
        type=nonneg_int(MAX_STEPS),
        default=None,
        help="stratified timesteps for the VP bound, in [1, T - 1]; 0 = all T (default 100, or T - 1 if smaller)",
    )
    p.add_argument("--inception", help="TorchScript Inception-v3 file for --features inception")
    p.add_argument(
        "--contrastive",
        help="a train-clip run folder (or its contrastive.safetensors) for --metrics contrastive "
        "(default: the shipped 32-px emoji model)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--threads", type=nonneg_int(MAX_THREADS), default=0, help="torch intra-op threads (0 = torch's default)"
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from ..evaluation.evaluate import NLL_N, ODE_STEPS, evaluate

    kind = run_kind(args.run)
    if kind in ("table", "sequence", "signal") and args.guidance is not None:
        raise ValueError(f"--guidance applies to image and volume runs; {kind} runs are evaluated at their own")
    if kind in KIND_READS:
        check_kind_options(args, kind)
    if kind in ("table", "sequence"):
        return evaluate_discrete(args)
    if kind == "volume" and args.metrics == DEFAULT_METRICS:
        args.metrics = "volume"  # pixel-space image metrics do not apply; the volume metrics and their baseline
    if kind == "signal":
        return evaluate_signals(args)
    notes = default_left_out(args)
    metrics, feats = check_request(args)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    report = evaluate(
        args.run,
        metrics,
        args.n,
        features=feats,
        out=args.out,
        guidance=args.guidance,
        sampling=lambda run_, sample: sample_config_from_args(sample, args, run_, FIXED),
        seed=args.seed,
        batch_size=args.batch_size,
        nll_n=args.nll_n or NLL_N,
        ode_steps=args.ode_steps or ODE_STEPS,
        vlb_timesteps=args.vlb_timesteps,  # None: the library's default (evaluation.evaluate.vlb_timesteps_for)
        inception_path=args.inception,
        contrastive=args.contrastive,
        classifier=args.classifier,
        device=args.device,
        log=lambda line: print(line, file=sys.stderr),  # phases and warnings on screen; the numbers on stdout
        progress=True,
        notes=notes,
    )
    print(json_text(summary_lines(report), indent=2))
    return 0


FIXED = {"n": "--n", "seed": "--seed", "batch_size": "--batch-size"}  # what evaluate sets itself (not --set)
SAMPLING_DESTS = ("sampler", "steps", "grid", "rho", "spacing", "sample_set")  # and every setting_* (--eta, ...)
# What evaluating a table, sequence or signal run reads beside --out, --n, --seed and --threads (their metrics are
# fixed: --metrics and its kin choose image metrics); image and volume runs read every option
KIND_READS = {
    "table": (*SAMPLING_DESTS, "batch_size", "device"),
    "sequence": (*SAMPLING_DESTS, "batch_size", "device"),  # sample_config_from_args refuses its sampler's options
    "signal": (*SAMPLING_DESTS, "batch_size", "device"),
}


def default_left_out(args: argparse.Namespace) -> dict:
    """Without --metrics, a consistency model or a distilled student is evaluated without bits/dim (its network is
    no denoiser: evaluation.evaluate.not_a_denoiser): ``args.metrics`` loses nll, and the report's note says why."""
    from ..config import from_json
    from ..evaluation.evaluate import not_a_denoiser
    from .common import given_options

    if "metrics" in given_options(args) or not (Path(args.run) / "config.json").is_file():
        return {}
    try:
        why = not_a_denoiser(from_json((Path(args.run) / "config.json").read_text()))
    except (ValueError, OSError):
        return {}  # evaluate() names what is wrong with the run
    if why is None or "nll" not in _csv(args.metrics):
        return {}
    args.metrics = ",".join(m for m in _csv(args.metrics) if m != "nll")
    return {"nll": f"left out of the default metrics: {why}"}


def check_device(device: str) -> None:
    """An EvaluateError (one line) unless ``device`` is cpu, or cuda with a GPU present."""
    import torch

    from ..evaluation.evaluate import EvaluateError

    if not (device == "cpu" or (device.startswith("cuda") and torch.cuda.is_available())):
        raise EvaluateError(f"--device must be cpu or cuda (with a GPU present), got {device!r}")


def check_kind_options(args: argparse.Namespace, kind: str) -> None:
    """One line for an option that evaluating a ``kind`` run would not read (it would change nothing)."""

    from ..evaluation.evaluate import EvaluateError
    from ..kinds import unread_sampler_flag
    from .common import given_options

    given = given_options(args)
    if {"metrics", "features", "classifier"} & set(given):
        raise EvaluateError(f"--metrics/--features/--classifier choose image metrics; {kind} runs report all of theirs")
    for dest, flag in given.items():
        if dest in ("sampler", "grid") and kind == "sequence":
            raise EvaluateError(unread_sampler_flag(flag, kind))
        if dest not in ("out", "n", "seed", "threads", *KIND_READS[kind]) and not dest.startswith("setting_"):
            raise EvaluateError(f"{flag} does not apply to {kind} runs (their metrics and sampling are fixed)")
    check_device(args.device)


def run_kind(run: str) -> str | None:
    """The data kind run.json records, or None (evaluate() then names what is wrong with the folder)."""
    from pathlib import Path

    try:
        return json.loads((Path(run) / "run.json").read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def _open_for_evaluation(args: argparse.Namespace):
    """(the output folder, checked; the run on --device; its sampling with the sampling flags and --batch-size
    applied) of a table, sequence or signal run, whose metrics are their own; --threads set."""
    from pathlib import Path

    import torch

    from ..config import checked_sample
    from ..generate import load_run

    out = _check_eval_out(args.out or Path(args.run) / "eval")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    run_ = load_run(args.run, device=args.device)
    sample = sample_config_from_args(run_.config.sample, args, run_, FIXED)  # --n, --seed: the metrics' own
    return out, run_, checked_sample(run_.config, sample)


def evaluate_discrete(args: argparse.Namespace) -> int:
    """Tables and sequences: their metrics and baseline (kinds.metrics) -> OUT/report.json, summary.html and the
    samples (rows or lines, and their picture)."""
    from ..kinds import metrics, save, schema_of

    out, run_, sample = _open_for_evaluation(args)
    report = metrics(run_, args.n, args.seed, sample)
    samples, reference = report.pop("samples"), report.pop("reference")
    suffix = ".csv" if run_.kind == "table" else ".txt"
    out.mkdir(parents=True, exist_ok=True)
    schema, title = schema_of(run_.info, run_.kind), f"{args.n} samples over the held-out data (grey)"
    save(samples, run_.kind, schema, out / f"samples{suffix}", reference=reference, title=title)
    return _write_kind_report(run_, args, report, _sampling_record(run_.kind, sample, args.seed), out, suffix)


def evaluate_signals(args: argparse.Namespace) -> int:
    """Signals: FD in a classifier's features and train-on-synthetic accuracy, beside the Gaussian-process
    baseline and the real data (evaluation/signals.py) -> OUT/report.json, summary.html and a picture of the
    samples."""
    from ..evaluation.signals import evaluate_signal_run
    from ..viz import save_signals

    out, run_, sample = _open_for_evaluation(args)
    report = evaluate_signal_run(run_, args.n, args.seed, sample)
    samples, reference = report.pop("samples"), report.pop("reference")
    out.mkdir(parents=True, exist_ok=True)
    save_signals(samples, out / "samples.png", reference=reference, title="generated (colour) over held-out (grey)")
    return _write_kind_report(run_, args, report, _sampling_record("signal", sample, args.seed), out)


def _sampling_record(kind: str, sample, seed: int) -> dict:
    """The report's ``sampling`` record, as an image run's names it: a sequence's steps (its process's own reverse
    steps, no sampler), else the sampler, its steps, grid, the grid's shape and the settings; and the seed."""
    from ..evaluation.evaluate import sampling_shape

    if kind == "sequence":
        return {"steps": sample.steps, "seed": seed}
    record = {"sampler": sample.sampler, "steps": sample.steps, "grid": sample.grid, **sampling_shape(sample)}
    return {**record, "seed": seed}


def _write_kind_report(run_, args, metrics: dict, sampling: dict, out, suffix: str | None = None) -> int:
    """OUT/report.json and summary.html (evaluation.evaluate.write_report) of a table, sequence or signal run,
    beside the samples' picture (and rows or lines) already written; the report on stdout."""
    from ..evaluation.evaluate import write_report

    report = {"run": str(run_.path), "kind": run_.kind, "n": args.n, **metrics, "sampling": sampling}
    pictures = ["samples.png", *([f"samples{suffix}"] if suffix else [])]
    print(write_report(report, None, out, pictures) / "report.json", file=sys.stderr)
    print(json_text(report, indent=2, default=str))
    return 0


def _csv(text: str | None) -> list[str]:
    return [v.strip() for v in (text or "").split(",") if v.strip()]


def check_request(args: argparse.Namespace) -> tuple[list[str], list[str] | None]:
    """(metrics, features) once every argument is checked - before anything is sampled.

    Refuses an empty or unknown --metrics, an unknown --features name, a missing or unloadable Inception or
    classifier file, --inception / --contrastive / --classifier where nothing asked for reads them, --vlb-timesteps
    outside [1, T - 1] for the run's T, an unwritable --out and an unusable --device.
    """
    import os
    from pathlib import Path

    from ..config import from_json
    from ..evaluation import features as FE
    from ..evaluation.evaluate import METRICS, NLL_N, SAMPLE_METRICS, EvaluateError, no_level_grid, vlb_timesteps_for
    from .common import given_options

    metrics = _csv(args.metrics)
    if not metrics:
        raise EvaluateError(f"--metrics names no metric; choose from {', '.join(METRICS)}")
    for m in metrics:
        if m not in METRICS:
            raise EvaluateError(f"--metrics: unknown metric {m!r}; choose from {', '.join(METRICS)}")
    feats = _csv(args.features) or None
    if args.features is not None and not feats:
        raise EvaluateError(f"--features names no feature network; choose from {', '.join(FE.feature_names())}")
    inception = args.inception or os.environ.get("TORCHDIFFUSION_INCEPTION")
    if inception and not Path(inception).is_file():
        raise FileNotFoundError(2, "No such file or directory", inception)
    for f in feats or []:
        if not FE.is_feature_name(f):
            raise EvaluateError(
                f"--features: unknown feature network {f!r}; choose from {', '.join(FE.feature_names())}"
            )
        if f.startswith("clf:"):
            FE.get_features(f)  # a classifier file that is missing or not one: refused now, not skipped later
    if "inception" in (feats or []):
        if not inception:  # the library's message names its argument (inception_path); here the flag
            raise EvaluateError(
                "--features inception needs a TorchScript Inception-v3 file: pass --inception FILE or set "
                "TORCHDIFFUSION_INCEPTION (none ships with torchdiffusion)"
            )
        FE.get_features("inception", inception_path=args.inception)  # a missing or damaged file: refused now
    # an option for a part of the evaluation that was not asked for would be ignored without a word: refused
    if args.inception and "inception" not in (feats or []):
        raise EvaluateError("--inception is the network of --features inception; add inception to --features")
    if args.contrastive and "contrastive" not in metrics:
        raise EvaluateError("--contrastive is the model of --metrics contrastive; add contrastive to --metrics")
    if args.classifier and not set(metrics) & set(SAMPLE_METRICS):
        raise EvaluateError(
            f"--classifier reads samples, and --metrics {','.join(metrics)} draws none; add classes to --metrics"
        )
    for flag, given, readers in (
        ("--nll-n", args.nll_n, ("nll",)),
        ("--vlb-timesteps", args.vlb_timesteps, ("nll",)),
        ("--ode-steps", args.ode_steps, ("nll", "straightness")),  # bits/dim's ODE, and the straightened paths'
    ):
        if given is not None and not set(metrics) & set(readers):
            raise EvaluateError(f"{flag} is read by --metrics {' or '.join(readers)}; add one, or leave {flag} out")
    if "n" in given_options(args) and not set(metrics) & {*SAMPLE_METRICS, "straightness"}:
        raise EvaluateError(
            f"--n sets the samples drawn, and --metrics {','.join(metrics)} draws none (--nll-n: bits/dim's images)"
        )
    sampling = given_sampling_flags(args)
    if sampling and not set(metrics) & set(SAMPLE_METRICS):
        raise EvaluateError(f"{sampling[0]} sets how samples are drawn, and --metrics {','.join(metrics)} draws none")
    given = given_options(args)
    if "guidance" in given and not set(metrics) & {*SAMPLE_METRICS, "straightness"}:
        raise EvaluateError(
            f"--guidance sets the samples' guidance, and --metrics {','.join(metrics)} draws none (bits/dim are "
            "of the unguided model); leave --guidance out"
        )
    if "batch_size" in given and not set(metrics) & set(SAMPLE_METRICS):
        raise EvaluateError(
            f"--batch-size sets the images per network call of sampling and features, and --metrics "
            f"{','.join(metrics)} draws no samples; leave --batch-size out"
        )
    check_device(args.device)
    run = Path(args.run)
    if not (run / "config.json").is_file():
        return metrics, feats  # evaluate() names what is missing
    from ..generate import refuse_other_runs

    refuse_other_runs(run)
    _check_eval_out(args.out or run / "eval")
    cfg = from_json((run / "config.json").read_text())
    vlb = args.vlb_timesteps
    if vlb is not None and (why := no_vp_bound(cfg, run_kind(args.run))):
        raise EvaluateError(f"--vlb-timesteps sets the VP bound's timesteps, and {why}; leave --vlb-timesteps out")
    if vlb is not None and "nll" in metrics and no_level_grid(cfg, args.nll_n or NLL_N):  # loads the data: if asked
        raise EvaluateError(
            "--vlb-timesteps sets the VP bound's timesteps, and this run's images lie on no 8-bit, 16-bit or own grid "
            "of levels (the bound's decoder is discretised over one); leave --vlb-timesteps out"
        )
    if "nll" in metrics:
        vlb_timesteps_for(cfg, vlb)  # the range refused before anything is loaded
    return metrics, feats


def no_vp_bound(cfg, kind: str | None) -> str | None:
    """Why bits/dim of this run (its config, run.json's data kind) come without the discrete VP bound, or None:
    the bound needs a discrete (DDPM) process and image data (its decoder is discretised over pixel levels);
    a latent run's likelihood is not measured at all."""
    if cfg.data.latents_of:
        return "a latent run's bits/dim are not measured (its likelihood is its latents')"
    if cfg.diffusion.process != "discrete":
        return f"this run's {cfg.diffusion.process} process has no discrete VP chain to bound"
    if (kind or "image") != "image":
        return f"this run holds {kind} data (the VP bound's discretised decoder is for images)"
    return None


def summary_lines(report: dict) -> dict:
    """The headline numbers of a report (what the README tables quote)."""
    s: dict = {"n": report["n"]} if "n" in report else {}
    for r in report.get("feature_metrics", {}).values():
        for which in ("samples", "heldout"):
            for k, v in r.get(which, {}).items():
                if k not in ("n", "warnings") and not k.endswith("_expected_bias"):
                    s[f"{k} ({which})"] = round(v, 5) if isinstance(v, float) else v
    nll = report.get("nll", {})
    for k in ("bits_per_dim_ode", "bits_per_dim_vlb"):
        if k in nll:
            s[k] = round(nll[k], 4)
    mem = report.get("memorisation", {})
    if mem:
        s["copy_fraction"] = mem.get("copy_fraction")
        s["heldout_copy_fraction"] = mem.get("holdout_copy_fraction")
    if "classes" in report:
        s["confident_fraction"] = report["classes"]["confident_fraction"]
        if "accuracy" in report["classes"]:
            s["class_accuracy"] = report["classes"]["accuracy"]
    if "contrastive" in report:
        c = report["contrastive"]
        s["contrastive_score"] = round(c["score"], 3)
        s["contrastive_prompt_top1"] = round(c["prompt_top1"], 4)
        s["contrastive_score (real images)"] = round(c["real_images"]["score"], 3)
        s["contrastive_prompt_top1 (real images)"] = round(c["real_images"]["prompt_top1"], 4)
    if "straightness" in report:
        s["straightness_S"] = round(report["straightness"]["S"], 5)
        s["path_length_ratio"] = round(report["straightness"]["length_ratio"], 4)
    for who, r in report.get("volume", {}).items():
        if isinstance(r, dict) and "energy" in r:
            s.update({f"{k} ({who})": round(v, 5) for k, v in r.items() if k != "n"})
    return s
