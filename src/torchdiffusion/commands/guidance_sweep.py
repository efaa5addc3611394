"""torchdiffusion guidance-sweep: accuracy and diversity of a conditional model against the CFG scale."""

from __future__ import annotations

import argparse
import math
import sys

from .argtypes import MAX_BATCH, MAX_COUNT, MAX_SEED, check_output_dir, nonneg_int, positive_int
from .common import add_sampling_arguments, sample_config_from_args

MANIFESTS = True  # each file written gets <file>.manifest.json (provenance.py)
HELP = "sample a conditional model over a range of guidance scales; plot class accuracy and diversity vs scale"
EXAMPLES = """examples:
  torchdiffusion guidance-sweep runs/mnist-class --scales 0,1,2,3,5 --n-per-class 20
  torchdiffusion guidance-sweep runs/emoji-ctx --mode context --classifier runs/emoji-ctx/eval-classifier.safetensors
Writes OUT/sweep.json (accuracy, per-class accuracy, diversity per scale), OUT/sweep.png (the plot) and
OUT/grid.png (the first samples of every class, one band per scale). The same seeds are used at every scale,
so the bands differ only by the guidance. Accuracy: the share of samples the evaluation classifier assigns to
the requested class. Diversity: the mean pairwise distance between same-class samples in the classifier's
feature space (its value on real images of the data set is drawn as a reference when the data loads)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder of a class- or context-conditional model")
    p.add_argument("--scales", default="0,1,1.5,2,3,5", help="comma-separated guidance scales (default 0,1,1.5,2,3,5)")
    p.add_argument(
        "--n-per-class", type=positive_int(MAX_COUNT), default=20, help="samples per class and scale (default 20)"
    )
    p.add_argument(
        "--mode",
        choices=["class", "context"],
        default=None,
        help="condition on class labels or one-hot context vectors (default: what the model takes)",
    )
    p.add_argument(
        "--classifier",
        default=None,
        help="evaluation classifier: a shipped name (e.g. mnist5k), a .safetensors file or the folder "
        "'train-classifier RUN --evaluation' wrote "
        "(default: the shipped one named like the run's data source)",
    )
    p.add_argument("--out", help="output folder (default: RUN/guidance-sweep)")
    add_sampling_arguments(p, counts=False)  # the sampler, grid and settings at every scale, as 'sample' takes them
    p.add_argument("--batch-size", type=positive_int(MAX_BATCH), help="images per network call")
    p.add_argument("--seed", type=nonneg_int(MAX_SEED), default=0, help="image k uses seed + k at every scale")
    p.add_argument("--no-reference", action="store_true", help="skip the diversity of real images")


def run(args: argparse.Namespace) -> int:
    from ..config import MAX_GUIDANCE, checked_sample
    from ..evaluation.evaluate import EvaluateError, fitting_classifier
    from ..evaluation.guidance_sweep import SWEEP_FILES, SWEEP_RECORD, real_diversity, save_sweep, sweep, swept_classes
    from ..generate import load_run
    from ..guidance import GuidanceError

    try:  # an empty entry (1,,2) is refused, not dropped
        scales = [float(v) for v in args.scales.split(",")]
    except ValueError:
        scales = []
    if not scales or not all(math.isfinite(s) and 0 <= s <= MAX_GUIDANCE for s in scales):
        raise GuidanceError(
            f"--scales must be numbers in [0, {MAX_GUIDANCE:g}] separated by commas, got {args.scales!r}"
        )
    if args.n_per_class < 1:
        raise GuidanceError("--n-per-class must be >= 1")
    run_ = load_run(args.run)
    out = check_output_dir(args.out or run_.path / "guidance-sweep", writes=SWEEP_FILES, record=SWEEP_RECORD)
    m = run_.config.model
    mode = args.mode or ("class" if m.num_classes > 0 else "context")
    if run_.kind != "image":
        raise GuidanceError(f"guidance-sweep scores images with a classifier; {run_.path} holds {run_.kind} data")
    K = m.num_classes if mode == "class" else m.context_dim
    if K == 0:  # an unconditional run, or the kind of conditioning it does not take
        takes = (
            "class labels"
            if m.num_classes
            else "context vectors"
            if m.context_dim
            else "captions (text: sweep with sample --prompt --guidance)"
            if m.text_dim
            else "no conditioning"
        )
        raise GuidanceError(
            f"guidance-sweep varies the guidance of a class- or context-conditional run; {run_.path} takes {takes}"
            + (f" (drop --mode {mode})" if m.num_classes or m.context_dim else "")
        )
    fixed = {"n": "--n-per-class", "seed": "--seed", "guidance": "--scales", "labels": "asking for every class"}
    # --seed and --batch-size included; a guidance setting is judged at the swept scales, where it is read
    sample = sample_config_from_args(run_.config.sample, args, run_, fixed, scales=scales)
    sample = checked_sample(run_.config, sample)  # refused before a classifier is loaded
    guided = any(w != 1 for w in scales) or sample.autoguidance != 1  # where an interval is read at all
    if guided and sample.guidance_interval is not None:  # guiding at no level changes nothing
        from ..guidance import refuse_interval_off_walk

        refuse_interval_off_walk(sample, run_.sampling_plan(sample)[0], guided=True)
    spec = args.classifier or run_.config.data.source
    try:  # it must read the run's images and tell its K classes (context: one-hot contexts) apart
        clf = fitting_classifier(spec, run_.image_shape, K, names=run_.info.get("class_names"))
    except EvaluateError as e:
        raise GuidanceError(str(e)) from None

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    from ..progress import step_bar

    images = args.n_per_class * len(swept_classes(run_, mode))
    total = len(scales) * -(-images // max(1, sample.batch_size)) * sample.steps
    with step_bar(total, f"guidance sweep ({len(scales)} scales)") as bar:
        result = sweep(
            run_,
            scales,
            classifier=clf,
            n_per_class=args.n_per_class,
            mode=mode,
            sample=sample,
            log=log,
            callback=bar.step,
        )
    result["real_diversity"] = None if args.no_reference else real_diversity(run_, clf, args.n_per_class)
    result["run"] = str(run_.path)
    title = f"{run_.path.name}: guidance sweep ({sample.sampler}, {sample.steps} steps)"
    for p in save_sweep(result, out, title):
        print(p)
    return 0
