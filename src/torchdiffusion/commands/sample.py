"""torchdiffusion sample: draw samples from a trained run folder into a PNG grid (and a GIF on request)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

from ..config import MAX_GUIDANCE
from .argtypes import check_output_file, float_in
from .common import add_sampling_arguments, refuse_untrained_classes, sample_config_from_args

MANIFESTS = True  # each file written gets <file>.manifest.json (provenance.py)
HELP = "sample a trained run: a PNG grid (scatter plot for 2-D data) and, with --gif, the denoising as a GIF"
EXAMPLES = """examples:
  torchdiffusion sample runs/demo                                  # the run's default sampler
  torchdiffusion sample runs/demo --sampler dpmpp_2m --steps 10 --n 100 --seed 7
  torchdiffusion sample runs/demo --sampler ddpm --grid uniform_t --steps 1000 --gif
  torchdiffusion sample runs/toy --n 5000 --out toy.png
  torchdiffusion sample runs/ddpm-diffusers --sampler ddim --steps 10   # a diffusers folder (save_pretrained)
  torchdiffusion sample runs/mnist-class --class 7 --guidance 3.0               # classifier-free guidance
  torchdiffusion sample runs/mnist-class --class 0,1,2,3,4,5,6,7,8,9 --n 100      # one column per digit
  torchdiffusion sample runs/mnist-class --labels random --n 256                # classes drawn from the seeds
  torchdiffusion sample runs/emoji-context --context 1,0,0.6,0,0,0 --guidance 2
  torchdiffusion sample runs/emoji-text --prompt "red apple" --negative-prompt "green" --guidance 3
  torchdiffusion sample runs/mnist --class 3 --classifier runs/mnist/classifier --classifier-scale 2
  torchdiffusion sample --list-samplers"""


# what write_samples puts beside its picture: settings, --gif, --save-npy, --save-nifti, --save-wav, --save-tiff
SIDECARS = (".json", ".gif", ".npy", ".nii.gz", ".wav", ".tif")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", help="run folder written by 'torchdiffusion train', or a diffusers model folder")
    add_sampling_arguments(p)
    p.add_argument("--out", help="output PNG (default: RUN/samples/<sampler>-<steps>-seed<seed>.png)")
    p.add_argument("--gif", action="store_true", help="also write a GIF of x_t beside x0_hat at each step")
    p.add_argument("--weights", default="ema", choices=["ema", "model"], help="EMA (default) or raw weights")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default=None,
        help="the network's arithmetic while sampling: fp32 (default) or bf16 autocast (the sampler's own arithmetic "
        "stays float64/fp32). On CPUs with native bf16 (amx_bf16, avx512_bf16) 1.7-2.2x the images per second at the "
        "best batch, the same digit check on the demo model (docs/samplers.md); the samples then depend on the CPU",
    )
    p.add_argument(
        "--save-npy",
        action="store_true",
        help="also save the samples as .npy (float: in the data's own units where data.scale mapped them, else the "
        "model's [-1, 1])",
    )
    p.add_argument(
        "--save-nifti",
        action="store_true",
        help="volume runs: also save the samples as one NIfTI series (.nii.gz, X x Y x Z x N) in the data's own "
        "units, on the grid (affine) of the NIfTI files the run was trained on",
    )
    p.add_argument(
        "--save-wav",
        action="store_true",
        help="runs trained on WAV files (data.source=wav): also save the samples as one WAV file, at the training "
        "files' sample rate, one after another with a quarter second of silence between them",
    )
    p.add_argument(
        "--save-tiff",
        action="store_true",
        help="image and volume runs: also save the samples as one 32-bit float TIFF hyperstack (N samples of C "
        "channels, of D slices; Fiji and napari open it as such), in the data's own units where data.scale mapped "
        "them, else as fractions in [0, 1] (how the folder source reads float TIFFs)",
    )
    p.add_argument(
        "--list-samplers", action="store_true", help="list the samplers with their settings and defaults, and exit"
    )
    add_guidance_arguments(p)
    p.add_argument(
        "--given",
        action="append",
        metavar="COLUMN=VALUE",
        help="tables: generate rows with this cell fixed (repeat for several); e.g. --given target=class_1",
    )


def add_guidance_arguments(p: argparse.ArgumentParser) -> None:
    """--class/--context/--prompt, their negatives, and the guidance knobs (see torchdiffusion.guidance)."""
    g = p.add_argument_group("conditioning and guidance")
    g.add_argument(
        "--class",
        dest="classes",
        help="class label(s), e.g. 7 or 0,1,2 (cycled over the images: image k takes the (k mod count)-th; no more "
        "classes than images)",
    )
    g.add_argument(
        "--labels",
        choices=("none", "cycle", "random"),
        help="a class-conditional run sampled without --class: none (the null class, unconditional), cycle "
        "(seed mod K) or random (uniform, from each image's seed); default: the run's sample.labels",
    )
    g.add_argument("--context", help="context vector(s), e.g. 1,0,0.6,0,0; several separated by ';' (cycled)")
    g.add_argument(
        "--prompt",
        action="append",
        help="text prompt of at most 32 MiniLM tokens, [CLS] and [SEP] included (a longer one is refused, not cut); "
        "repeat for several (cycled over the images; no more prompts than images)",
    )
    g.add_argument(
        "--negative-prompt",
        help="the prompt classifier-free guidance steers away from (at most 32 tokens, as --prompt)",
    )
    g.add_argument("--negative-context", help="the context vector classifier-free guidance steers away from")
    g.add_argument(
        "--guidance",
        type=float_in(0.0, MAX_GUIDANCE),
        help="classifier-free guidance scale w in [0, 100]: 0 unconditional, 1 conditional, "
        ">1 guided (default: the run's sample.guidance)",
    )
    g.add_argument(
        "--guidance-interval",
        help="LO,HI: guide (CFG and autoguidance) only for sigma in [LO, HI] (Kynkaanniemi et al. 2024)",
    )
    g.add_argument("--guidance-rescale", type=float, help="phi in [0, 1]: rescaled CFG (Lin et al. 2024)")
    g.add_argument(
        "--classifier",
        help="noise-aware classifier (from 'torchdiffusion train-classifier') for classifier guidance towards --class",
    )
    g.add_argument(
        "--classifier-scale",
        type=float_in(0.0, MAX_GUIDANCE),
        help="classifier guidance scale s in [0, 100] (default 1)",
    )


def conditioning_from_args(run_, sample, args: argparse.Namespace):
    """(sample, cond, uncond, wrap, said) for generate() from the conditioning and guidance flags; ``said``: the
    prompts of the images (image k's, cycled as ``cond`` cycles them) and the negatives, for the settings record
    (:func:`conditioning_record`)."""
    import torch

    from ..cond import build_cond, cycled, parse_classes, parse_vectors
    from ..evaluation.noisy_classifier import load_noisy_classifier
    from ..guidance import GuidanceError, classifier_guidance

    m = run_.config.model
    n = sample.n
    classes = parse_classes(args.classes) if getattr(args, "classes", None) else None
    refuse_untrained_classes(run_, classes)
    classifier = getattr(args, "classifier", None)
    contexts = parse_vectors(args.context) if getattr(args, "context", None) else None
    prompts = getattr(args, "prompt", None)
    db = getattr(run_, "retrieval", None)  # model.text_retrieval: prompts bring their training neighbours
    cond = build_cond(
        m,
        n,
        classes=classes if (m.num_classes > 0 or not classifier) else None,
        contexts=contexts,
        prompts=prompts,
        retrieval=db,
    )
    said: dict = {}
    if prompts:  # (build_cond refused more prompts than images)
        said["prompts"] = [prompts[i] for i in cycled(len(prompts), n, "--prompt prompts").tolist()]
    uncond = None
    neg_prompt, neg_context = getattr(args, "negative_prompt", None), getattr(args, "negative_context", None)
    if neg_prompt or neg_context:
        if cond is None:
            raise GuidanceError("a negative prompt/context needs a conditioning (--class, --context or --prompt)")
        neg = build_cond(
            m,
            n,
            contexts=parse_vectors(neg_context) if neg_context else None,
            prompts=[neg_prompt] if neg_prompt else None,
            retrieval=db,
            negative=True,
        )
        uncond = {**cond, **neg}  # the negative replaces what it names; the rest of the conditioning is kept
        said.update({"negative_prompt": neg_prompt} if neg_prompt else {})
        said.update({"negative_contexts": parse_vectors(neg_context)} if neg_context else {})
    sample = guidance_from_args(sample, args)
    wrap = None
    if classifier:
        if getattr(run_, "codec", None) is not None:
            raise GuidanceError("classifier guidance reads pixels; this run diffuses latents (use --guidance)")
        if not classes:
            raise GuidanceError("classifier guidance needs the wanted class: add --class")
        clf = load_noisy_classifier(classifier)
        check_noisy_classifier(run_, clf, classifier)
        if max(classes) >= clf.cfg.num_classes:
            raise GuidanceError(f"class {max(classes)} is out of range; the classifier has {clf.cfg.num_classes}")
        y = torch.tensor(classes)[cycled(len(classes), n, "--class classes")]
        if cond is None or "class" not in cond:  # an unconditional model steered to a class: the record says which
            said["classes"] = y.tolist()
        s = 1.0 if args.classifier_scale is None else float(args.classifier_scale)
        wrap = lambda D, sl: classifier_guidance(D, clf, y[sl], s)
        wrap.provenance = {"name": "classifier_guidance", "classifier": str(classifier), "scale": s}
    return sample, cond, uncond, wrap, said


def guidance_from_args(sample, args: argparse.Namespace):
    """``sample`` with the guidance scale, interval and rescale of --guidance, --guidance-interval and
    --guidance-rescale (the studio's check before a job applies them as this command does)."""
    from dataclasses import replace

    from ..cond import parse_vectors
    from ..guidance import GuidanceError

    updates = {}
    if getattr(args, "guidance", None) is not None:
        updates["guidance"] = args.guidance
    if getattr(args, "guidance_interval", None):
        vs = parse_vectors(args.guidance_interval, finite=False)  # hi = inf: no upper end (validate checks)
        v = vs[0]
        if len(vs) != 1 or len(v) != 2:
            raise GuidanceError(f"--guidance-interval takes two sigmas LO,HI, got {args.guidance_interval!r}")
        updates["guidance_interval"] = (v[0], v[1])
    if getattr(args, "guidance_rescale", None) is not None:
        updates["guidance_rescale"] = args.guidance_rescale
    return replace(sample, **updates)


def check_noisy_classifier(run_, clf, spec) -> None:
    """GuidanceError (one line) unless the noise-aware classifier ``clf`` can steer ``run_``: it reads (C, H, W)
    images of the run's channels, tells a class-conditional run's classes apart, and - where its card
    (``noisy-classifier.json``) and the run both name their classes - the same ones
    (``evaluate.refuse_unfit_classifier``, as for the evaluation classifiers) - and where the card records the image
    shape it was trained on, the run's image size (its pooled CNN reads any size, and misguides another)."""
    import json
    from pathlib import Path

    from ..evaluation.evaluate import EvaluateError, refuse_unfit_classifier
    from ..evaluation.noisy_classifier import FILE_NAME
    from ..guidance import GuidanceError

    if run_.kind != "image" or len(run_.data_shape) != 3:
        raise GuidanceError(f"classifier guidance steers images by a CNN; {run_.path} holds {run_.kind} data")
    card_file = Path(spec) / FILE_NAME if Path(spec).is_dir() else Path(spec)
    try:
        told = json.loads(card_file.with_suffix(".json").read_text())
    except (OSError, ValueError):
        told = {}
    k, names, card = run_.config.model.num_classes, run_.info.get("class_names"), told if isinstance(told, dict) else {}
    try:
        refuse_unfit_classifier("--classifier", str(spec), clf.cfg, card, run_.data_shape, k, names)
    except EvaluateError as e:
        raise GuidanceError(str(e)) from None


def refuse_unread_options(run_, sample, args: argparse.Namespace) -> None:
    """Refuse, in one line, a guidance flag that nothing in this run or command line reads (it would change
    nothing): guidance flags for an unconditional run, a classifier scale without a classifier. (The grid's flags:
    common.sample_config_from_args.)"""
    from dataclasses import replace

    from ..config import unread_flag
    from ..guidance import GuidanceError

    cfg = replace(run_.config, sample=sample)
    for flag, key, given in (
        ("--guidance", "sample.guidance", args.guidance is not None),
        ("--guidance-rescale", "sample.guidance_rescale", args.guidance_rescale is not None),
        ("--guidance-interval", "sample.guidance_interval", bool(args.guidance_interval)),
    ):
        why = unread_flag(cfg, key, flag) if given else None
        if why:
            raise GuidanceError(why)
    conditioned = any(getattr(args, k, None) for k in ("classes", "context", "prompt"))
    conditioned |= run_.config.model.num_classes > 0 and sample.labels != "none"  # classes drawn from the seeds
    for flag, given in (("--guidance", args.guidance), ("--guidance-rescale", args.guidance_rescale)):
        if given is not None and not conditioned:  # the null conditioning alone: D_u + w (D_u - D_u) = D_u
            raise GuidanceError(
                f"{flag} changes nothing: these samples have no conditioning to guide toward (sample.labels=none and "
                "no --class, --context or --prompt); add one, or --labels cycle|random"
            )
    if sample.guidance == 0:  # D_u + 0 (D_c - D_u): the unconditional branch alone, the conditioning never read
        for dest in ("classes", "context", "prompt", "labels"):
            if dest == "classes" and args.classifier:  # classifier guidance's target (Dhariwal & Nichol)
                continue
            if getattr(args, dest, None) not in (None, "none", []):
                flag = {"classes": "--class"}.get(dest, "--" + dest)
                raise GuidanceError(
                    f"{flag} changes nothing at guidance 0, which samples the unconditional branch alone"
                )
    if sample.guidance == 1 and sample.retrieval_guidance == 0:  # D_u + 1 (D_c - D_u) = D_c: the negative unread
        for flag, dest in (("--negative-prompt", "negative_prompt"), ("--negative-context", "negative_context")):
            if getattr(args, dest, None):
                raise GuidanceError(
                    f"{flag} changes nothing at guidance 1, which samples the conditional branch alone; "
                    "guide away from it with --guidance > 1"
                )
    if args.classifier_scale is not None and not args.classifier:
        raise GuidanceError("--classifier-scale is the scale of classifier guidance; add --classifier")
    if args.classifier and args.classifier_scale == 0:
        raise GuidanceError("--classifier changes nothing at --classifier-scale 0 (no guidance); drop one")
    if getattr(args, "labels", None) and getattr(args, "classes", None):
        raise GuidanceError("--labels chooses classes for images sampled without --class; give one or the other")


def list_samplers() -> str:
    """Every sampler: its whole description, its NFE on n steps, and each setting with its default."""
    import textwrap

    from ..samplers import SAMPLERS, sampler_settings

    lines = []
    for name, entry in SAMPLERS.items():
        lines.append(name)
        lines += textwrap.wrap(entry.about, 100, initial_indent="    ", subsequent_indent="    ")
        lines.append(f"    NFE on n steps: {entry.nfe_text}")
        settings = ", ".join(  # (an infinite default - s_tmax - is what leaving the setting out gives)
            f"--{k.replace('_', '-')} {v if v != math.inf else 'unset (no upper end)'}"
            for k, v in sampler_settings(name).items()
        )
        lines.append(f"    settings (default): {settings or 'none'}")
    lines.append("Each setting is also sample.settings.<name> (train/sample --set); see docs/samplers.md.")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError, checked_sample

    if args.list_samplers:
        print(list_samplers())
        return 0
    if not args.run:
        raise ConfigError("give a run folder, e.g. 'torchdiffusion sample runs/demo'")
    from ..generate import load_run

    run_ = load_run(args.run, weights=args.weights)
    if args.precision == "bf16" and "onnx" in run_.info:
        raise ConfigError(
            f"--precision bf16 is torch's autocast, and {args.run} is an ONNX export: onnxruntime runs it in the "
            "precision it was exported in"
        )
    sample = sample_config_from_args(run_.config.sample, args, run_)
    from ..kinds import DISCRETE_KINDS

    refuse_options_of_other_kinds(run_.kind, args.run, args)
    if run_.kind in DISCRETE_KINDS:
        return sample_discrete(run_, sample, args)
    checked_sample(run_.config, sample)
    sample, cond, uncond, wrap, said = conditioning_from_args(run_, sample, args)
    checked_sample(run_.config, sample)  # the guidance interval and rescale
    refuse_unread_options(run_, sample, args)
    refuse_interval_off_plan(run_, sample, args)
    # the default name tells guided draws from plain ones (they replaced each other under one name)
    tag = f"-w{sample.guidance:g}" if cond is not None or sample.guidance != 1.0 else ""
    tag += f"-ag{sample.autoguidance:g}" if sample.autoguidance != 1.0 else ""
    tag += "-classifier" if args.classifier else ""
    out = (
        Path(args.out)
        if args.out
        else (run_.path / "samples" / f"{sample.sampler}-{sample.steps}-seed{sample.seed}{tag}.png")
    )
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out must end in .png, got {out}")
    if args.save_nifti and (run_.kind != "volume" or run_.data_shape[0] != 1):
        raise ConfigError(
            f"--save-nifti writes one-channel volumes; {args.run} holds {run_.kind} data of shape {run_.data_shape}"
        )
    from .common import check_save_wav

    check_save_wav(run_, args.save_wav)
    if args.save_tiff and run_.kind not in ("image", "volume"):
        raise ConfigError(f"--save-tiff writes images and volumes; {args.run} holds {run_.kind} data")
    json_, *others = SIDECARS  # the settings record always, the GIF and arrays when asked for
    flags = (args.gif, args.save_npy, args.save_nifti, args.save_wav, args.save_tiff)
    check_output_file(out, sidecars=(json_, *(s for s, on in zip(others, flags, strict=True) if on)))
    paths = write_samples(
        run_,
        sample,
        out,
        gif=args.gif,
        save_npy=args.save_npy,
        save_nifti=args.save_nifti,
        save_wav=args.save_wav,
        save_tiff=args.save_tiff,
        cond=cond,
        uncond=uncond,
        wrap=wrap,
        precision=args.precision or "fp32",
        said=said,
    )
    for p in paths:
        print(p)
    return 0


def write_samples(
    run_,
    sample,
    out: Path,
    *,
    gif: bool = False,
    save_npy: bool = False,
    save_nifti: bool = False,
    save_wav: bool = False,
    save_tiff: bool = False,
    cond=None,
    uncond=None,
    wrap=None,
    progress: bool = True,
    precision: str = "fp32",
    said: dict | None = None,
) -> list[Path]:
    """Generate ``sample.n`` samples of a loaded run and write the grid (+ GIF, + npy, + NIfTI, + WAV, + TIFF).

    ``cond``/``uncond``/``wrap``: conditioning, negative conditioning and denoiser wrapper, and ``precision`` (fp32 or
    bf16 autocast of the network), as in generate(); ``said``: the prompts and negatives as given
    (:func:`conditioning_from_args`), for the settings record.
    The GIF is recorded from the same single run (the sampler callback), guidance and all."""
    import numpy as np

    from ..cond import with_seed_labels
    from ..generate import generate, label_classes, network_evaluations
    from ..io import atomic_write
    from ..progress import chain, step_bar
    from ..samplers import nfe
    from ..viz import channel_note, save_samples

    seeds = list(range(sample.seed, sample.seed + sample.n))
    # the grid and the settings it brings, resolved once: counted, sampled and recorded alike
    plan = run_.sampling_plan(sample)
    _, knobs, grid_record = plan
    spent = nfe(sample.sampler, sample.steps, **knobs)
    shown = {"image": 16, "signal": 4, "volume": 16}.get(run_.kind, sample.n)  # samples drawn in the GIF
    recorder = Recorder(min(sample.n, shown), sample.batch_size) if gif else None
    steps_total = -(-sample.n // max(1, sample.batch_size)) * sample.steps
    with (
        step_bar(steps_total, f"sampling ({sample.sampler}, {spent} NFE)", show=progress) as bar,
        network_evaluations(run_.model) as evaluated,
    ):
        x = generate(
            run_.model,
            seeds,
            sample,
            run_.data_shape,
            cond=cond,
            uncond=uncond,
            wrap=wrap,
            callback=chain(bar.step, recorder),
            codec=run_.codec,  # a latent run: the images decoded from its latents
            plan=plan,
            precision=precision,
        )
    values = run_.to_data_units(x)  # in the data's own units where data.scale mapped them (before any file)
    paths = [save_samples(x, run_.kind, out, title=f"{sample.sampler}, {sample.steps} steps")]
    if run_.kind == "image" and channel_note(x.shape[1]):
        print(channel_note(x.shape[1]), file=sys.stderr)
    if save_npy:
        paths.append(atomic_write(out.with_suffix(SIDECARS[2]), lambda f: np.save(f, values.numpy())))
    if save_nifti:  # on the training scans' grid (data/volume.py NiftiGrid), the identity for other sources
        from ..data.volume import NiftiGrid, write_nifti

        grid = NiftiGrid.from_dict(run_.info.get("schema"))
        paths.append(write_nifti(out.with_suffix(SIDECARS[3]), values.numpy(), grid))
    if save_wav:  # at the rate of the training recordings (data/wav.py WavFormat)
        from ..data.wav import rate_of, write_wav

        paths.append(write_wav(out.with_suffix(SIDECARS[4]), values.numpy(), rate_of(run_.info)))
    if save_tiff:  # in the data's units, or as the [0, 1] fractions float TIFFs of pictures hold
        from ..data.tiff import hyperstack_bytes

        own = values if run_.config.data.scale_lo else (x + 1) / 2
        paths.append(atomic_write(out.with_suffix(SIDECARS[5]), hyperstack_bytes(own.numpy())))
    if recorder is not None:
        paths.append(recorder.save(out.with_suffix(SIDECARS[1]), run_.kind, codec=run_.codec))
    drawn = with_seed_labels(cond, seeds, label_classes(run_.model), sample.labels)  # what generate conditioned on
    extra = {
        # what they cost: network evaluations per image (x2 for classifier-free guidance, x2 autoguidance)
        "network_evaluations_per_image": evaluated["rows"] / max(1, sample.n),
        "grid_used": grid_record,
        "wrapped": wrap is not None,
        "precision": precision,  # of the network's arithmetic (bf16: autocast)
    }
    paths.append(write_settings_record(run_, sample, seeds, spent, paths, out, extra, cond=drawn, said=said))
    return paths


def write_settings_record(
    run_,
    sample,
    seeds: list[int],
    spent,
    paths: list[Path],
    out: Path,
    extra: dict,
    *,
    cond: dict | None,
    said: dict | None = None,
) -> Path:
    """What made the files ``paths``, beside them as ``out``'s .json: the run, the seeds, ``spent`` (the sampler's
    denoiser calls per sample), the conditioning the draw took (``cond``, the dict generate() conditioned on, or
    None: its keys, and per image what :func:`conditioning_record` reads from it and ``said``) and the
    classifier-free guidance that ran, what the caller adds (``extra``), the sampling settings and the run's
    resolved config."""
    from ..io import write_json
    from ..provenance import guidance_record

    conditioning = sorted(cond) if isinstance(cond, dict) else None
    record = {
        "run": str(run_.path),
        "seeds": [seeds[0], seeds[-1]],
        "nfe": spent,
        "conditioning": conditioning,
        **conditioning_record(cond, said),
        # the guidance that ran, as the manifest records it: None without a conditioning (the unconditional
        # prediction alone, and every table or sequence draw; sample.guidance below is the setting, not applied)
        "guidance": guidance_record(sample, conditioning),
        **extra,
        "sample": dataclasses.asdict(sample),
        "run_config": dataclasses.asdict(run_.config),
        "files": [p.name for p in paths],
    }
    from ..provenance import note_record

    note_record(out.with_suffix(SIDECARS[0]))  # listed in the manifests of the files it describes
    return write_json(record, out.with_suffix(SIDECARS[0]))


def conditioning_record(cond: dict | None, said: dict | None = None) -> dict:
    """What conditioned each image of a draw, item k for the image of seed first + k: ``classes`` (a class run's,
    given by --class or drawn from the seeds by sample.labels), ``contexts``, ``prompts`` (a text run's, from
    ``said``), and the negatives classifier-free guidance steered away from (``negative_prompt``,
    ``negative_contexts``) - those the draw had."""
    record = {}
    for key, name in (("class", "classes"), ("context", "contexts")):
        if isinstance(cond, dict) and cond.get(key) is not None:
            record[name] = cond[key].tolist()
    return {**record, **(said or {})}


class Recorder:
    """A generate() callback keeping, at every step, x_t (VP scale, x / sqrt(1 + sigma^2)) and x0_hat of the
    first ``k`` samples, across batches of ``batch_size``; ``save`` writes them as a GIF of at most ``frames``.
    Batches that took fewer steps (the adaptive solver's) hold their last state in the later frames."""

    def __init__(self, k: int, batch_size: int, frames: int = 40) -> None:
        self.k, self.bs, self.frames = k, max(1, batch_size), frames
        self.steps: list[list[tuple]] = []  # per batch: (x_t, x0_hat) of each step
        self.batch_sigmas: list[list[float]] = []  # per batch: the level each step reached

    def __call__(self, info) -> None:
        if info.i == 0:
            self.steps.append([])
            self.batch_sigmas.append([])
        lo = (len(self.steps) - 1) * self.bs
        if lo >= self.k:
            return
        take = slice(0, self.k - lo)
        x_t = (info.x[take] / (1 + info.sigma_next**2) ** 0.5).float().cpu()
        self.steps[-1].append((x_t, info.denoised[take].float().cpu()))
        self.batch_sigmas[-1].append(info.sigma_next)

    @property
    def sigmas(self) -> list[float]:
        """The levels of the frames: those of the batch that took the most steps."""
        return max(self.batch_sigmas, key=len, default=[])

    def _frame(self, i: int, which: int):
        import torch

        return torch.cat([b[min(i, len(b) - 1)][which] for b in self.steps if b])

    def save(self, path: Path, kind: str, codec=None) -> Path:
        """The GIF: x_t beside x0_hat (images, decoded by a latent run's ``codec``; volumes: their middle slice
        along D), both as lines (signals) or a scatter of x_t (2-D vectors)."""
        import torch

        from ..latent import as_pixels
        from ..viz import middle_slices, save_gif, save_scatter_gif, signal_frames, trajectory_frames

        n = len(self.sigmas)
        keep = sorted(set(torch.linspace(0, n - 1, min(self.frames, n)).round().long().tolist()))
        xs = [as_pixels(self._frame(i, 0), codec) for i in keep]
        x0s = [as_pixels(self._frame(i, 1), codec) for i in keep]
        titles = [f"sigma = {self.sigmas[i]:.3g}" for i in keep]
        if kind == "image":
            return save_gif(trajectory_frames(xs, x0s, nrow=int(self.k**0.5) or 1), path, scale=3)
        if kind == "signal":
            return save_gif(signal_frames(xs, x0s, titles=titles), path)
        if kind == "volume":
            frames = trajectory_frames(middle_slices(xs), middle_slices(x0s), nrow=int(self.k**0.5) or 1)
            return save_gif(frames, path, scale=3)
        return save_scatter_gif([x[:, :2] for x in xs], path, titles=titles)


def refuse_interval_off_plan(run_, sample, args: argparse.Namespace) -> None:
    """One line (guidance.refuse_interval_off_run_grid) when the guidance interval is read - something guides - yet
    holds no noise level of the grid this sampling walks (run_.sampling_plan): guided nowhere, it would change
    nothing. Named as the user set it; the studio's precheck asks the same."""
    from ..guidance import INTERVAL_SET, refuse_interval_off_run_grid

    refuse_interval_off_run_grid(run_, sample, "--guidance-interval" if args.guidance_interval else INTERVAL_SET)


def refuse_options_of_other_kinds(kind: str, where, args: argparse.Namespace) -> None:
    """A ConfigError (one line) for an option a run of ``kind`` (the run at ``where``) does not read: a table or
    sequence reads its sampler's options, the counts and --given (a table's); the rest - pictures, sidecar formats,
    conditioning, guidance - would change nothing. --given fixes cells of a table only. (The studio checks a
    request with it before the job.)"""
    from ..config import ConfigError
    from ..kinds import DISCRETE_KINDS
    from .common import given_options

    if kind in DISCRETE_KINDS:  # (the sampler's options: sample_config_from_args refuses them for a sequence)
        read = {"out", "weights", "given", "sampler", "grid", "rho", "spacing", "steps", "n", "seed", "batch_size"}
        for dest, flag in given_options(args).items():
            if dest not in read and dest != "sample_set" and not dest.startswith("setting_"):
                raise ConfigError(f"{flag} does not apply to {kind} runs")
    if args.given and kind != "table":
        raise ConfigError(f"--given fixes cells of a table; {where} holds {kind} data")


def sample_discrete(run_, sample, args: argparse.Namespace) -> int:
    """Tables: a CSV of sample.n rows (+ marginals picture); sequences: a text file of sample.n lines (+ picture)."""
    from ..config import ConfigError, checked_sample
    from ..kinds import draw, given_cells, save, schema_of
    from ..samplers import nfe
    from ..tabular import sampling_plan_of

    checked_sample(run_.config, sample)
    suffix = ".csv" if run_.kind == "table" else ".txt"
    out = Path(args.out) if args.out else run_.path / "samples" / f"{run_.kind}-seed{sample.seed}{suffix}"
    if out.suffix.lower() != suffix:
        raise ConfigError(f"--out must end in {suffix} for {run_.kind} samples, got {out}")
    check_output_file(out, sidecars=(".png", SIDECARS[0]))  # kinds.save draws them beside; the settings record
    schema = schema_of(run_.info, run_.kind)
    known = mask = None
    if args.given:
        known, mask = given_cells(schema, args.given, sample.n)
    seeds, grids = list(range(sample.seed, sample.seed + sample.n)), run_.path / "grids"
    plan = sampling_plan_of(run_.model, sample, grids) if run_.kind == "table" else None
    x = draw(run_.model, run_.kind, seeds, sample, known=known, known_mask=mask, grid_dir=grids, plan=plan)
    how = f"{sample.sampler}, " if run_.kind == "table" else ""
    title = f"{sample.n} samples, {how}{sample.steps} steps"
    paths = save(x, run_.kind, schema, out, title=title, given=args.given or ())
    # what made them, as beside an image grid: a table's sampler on its grid; a sequence's own reverse steps
    spent = nfe(sample.sampler, sample.steps, **plan[1]) if plan else sample.steps  # a sequence: its reverse steps
    extra = {"grid_used": plan[2] if plan else None, "given": list(args.given or [])}
    # no conditioning: a table's given cells are fixed in the draw, not a guided conditioning
    paths.append(write_settings_record(run_, sample, seeds, spent, paths, out, extra, cond=None))
    for p in paths:
        print(p)
    return 0
