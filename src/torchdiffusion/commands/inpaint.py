"""torchdiffusion inpaint: repaint a masked region of real images with a trained run (replacement or RePaint).

Also holds the small helpers the other editing commands (outpaint, img2img, interpolate) share: reading the
input images, building the denoiser/sampler/grid of a run, writing the before/after grid.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .argtypes import MAX_COUNT, MAX_STEPS, check_output_file, float_in, nonneg_int, positive_float, positive_int
from .common import add_sampling_arguments, refuse_untrained_classes, sample_config_from_args, sample_sets

MANIFESTS = True  # each file written gets <file>.manifest.json (provenance.py)
HELP = "inpaint a masked region of images (known-region replacement, or RePaint with --resample)"
EXAMPLES = """examples:
  torchdiffusion inpaint runs/demo                                   # lower half of 8 held-out digits
  torchdiffusion inpaint runs/demo --mask centre --resample 10 --jump 2 --n 16
  torchdiffusion inpaint runs/demo --mask box:0,0,14,28 --images a.png b.png --out edits.png
  torchdiffusion inpaint runs/demo --mask hole.png --sampler ddpm --grid uniform_t --steps 100
  torchdiffusion inpaint runs/demo --pseudoinverse 1 --sampler euler_ancestral --steps 100   # guided (PiGDM)
  torchdiffusion inpaint runs/demo --class 7 --resample 2                 # complete each digit as a 7
masks (the region to REPAINT): box:x0,y0,x1,y1 | centre | half:bottom|top|left|right | FILE.png (white =
repaint) | invert:SPEC.  Output rows: original, masked input (hole in grey), result."""


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    """RUN, input images (files or the run's data), --out, --weights and the sampling overrides."""
    p.add_argument("run", help="run folder written by 'torchdiffusion train'")
    p.add_argument("--images", nargs="+", metavar="FILE", help="input images (default: the run's own data)")
    p.add_argument("--index", type=nonneg_int(MAX_COUNT), default=0, help="first data example to use (default 0)")
    p.add_argument("--out", help="output PNG (default: RUN/edits/<command>-....png)")
    p.add_argument("--weights", default="ema", choices=["ema", "model"], help="EMA (default) or raw weights")
    p.add_argument(
        "--save-npy",
        action="store_true",
        help="also write the edited examples beside the PNG as .npy, in the data's own units (a data.scale run's "
        "kelvins, counts, ...; [-1, 1] otherwise)",
    )
    add_sampling_arguments(p, batch=False)  # every input is edited in one batch


def add_class_argument(p: argparse.ArgumentParser) -> None:
    """--class: the class(es) a class-conditional run edits towards (default: its learned null class)."""
    p.add_argument(
        "--class",
        dest="classes",
        help="class label(s) of a class-conditional run, e.g. 7 or 0,1,2 (cycled over the images: image k takes "
        "the (k mod count)-th; no more classes than images: --n, or the --images files); default: none, "
        "the network's learned null class; classifier-free guided at the run's sample.guidance "
        "(--set sample.guidance=W)",
    )


def check_edit_options(args: argparse.Namespace) -> None:
    """One line for an editing option nothing would read: --index beside --images (the files are the images),
    --jump without RePaint passes (--resample 1), --pseudoinverse-sigma-max without --pseudoinverse."""
    from ..edit import EditError
    from .common import given_options

    given = given_options(args)
    files = "--images" if getattr(args, "images", None) else "--series" if getattr(args, "series", None) else None
    for flag in ("index", "n"):
        if flag in given and files:
            raise EditError(f"--{flag} picks examples of the run's data; with {files} the files are the inputs")
    if "jump" in given and getattr(args, "resample", 1) == 1:
        raise EditError("--jump is RePaint's jump length: it needs --resample 2 or more (one pass jumps nowhere)")
    if "pseudoinverse_sigma_max" in given and not getattr(args, "pseudoinverse", 0.0):
        raise EditError("--pseudoinverse-sigma-max limits pseudoinverse guidance: add --pseudoinverse W")


def refuse_non_image_run(where, kind: str | None, data_shape) -> None:
    """An EditError (one line) unless the run at ``where`` holds images (kind image, data shape C, H, W): the
    editing commands read and write pictures (the studio checks it before it keeps an upload)."""
    from ..edit import EditError

    if kind != "image" or len(data_shape) != 3:
        raise EditError(f"editing needs an image run; {where} holds {kind} data")


def trained_depth(run_) -> str | None:
    """The bit depth of the image files whose stored numbers a ``data.scale`` run maps by its recorded bounds
    (run.json's ``stored_depth``: files.DEPTH_NAMES); None for a run that reads its images as pictures, or whose
    data recorded none. ``run_``: a loaded run, or the studio's outline of one (``config``, ``info``)."""
    return run_.info.get("stored_depth") if run_.config.data.scale_lo else None


def refuse_other_depth(run_, name, depth: str, remedy: str = "save the input at their bit depth") -> None:
    """An EditError (one line) for an input file ``name`` that stores ``depth`` pixels (files.DEPTH_NAMES, as
    data.read_stored_image reads it) where the run maps the numbers of files of another depth
    (:func:`trained_depth`): its numbers are on another scale (an 8-bit PNG's 0..255 read by a 16-bit folder's
    bounds). ``remedy``: what the user can do (the studio, which keeps uploads as 8-bit pictures, says its own)."""
    from ..edit import EditError

    trained = trained_depth(run_)
    if trained and depth != trained:
        raise EditError(
            f"{name} holds {depth} pixels, and {run_.path} maps the numbers stored in the {trained} images it was "
            f"trained on (data.scale), on another scale; {remedy}"
        )


N_DEFAULT = 8  # the data examples an edit takes from --index without --n (fewer where the data ends first)


def edit_count(args: argparse.Namespace) -> int:
    """The images an edit makes, as its request fixes them: one per --images file, else --n examples of the run's
    data (at most :data:`N_DEFAULT` without --n: fewer where the data ends first)."""
    return len(args.images) if getattr(args, "images", None) else args.n if args.n is not None else N_DEFAULT


def more_images(args: argparse.Namespace) -> str:
    """How an edit asks for more images (cond.cycled's advice): more --images files, else a larger --n."""
    from ..cond import MORE_FILES, MORE_IMAGES

    return MORE_FILES if getattr(args, "images", None) else MORE_IMAGES


def load_inputs(run_, args: argparse.Namespace, n_default: int = N_DEFAULT, flags: str = "--index/--n"):
    """(N, C, H, W) images in [-1, 1]: the files of --images (resized to the run's size), or --n examples of the
    run's data starting at --index (its holdout split when the run kept one, else its training data). A run whose
    ``data.scale`` mapped its images' own units (float TIFFs in kelvins, say; for a latent run, its autoencoder's
    map, which it records as its own) reads the files as its data was read and maps them by its recorded bounds
    (data/scale.py); a file of another bit depth than that data's (run.json's ``stored_depth``: an 8-bit PNG for a
    run of 16-bit ones) stores numbers on another scale, and is refused in one line."""
    import torch

    from ..edit import EditError

    refuse_non_image_run(run_.path, run_.kind, run_.data_shape)
    C, H, W = run_.image_shape  # a latent run edits images of its autoencoder's shape
    if args.images:
        from ..data import read_stored_image

        own_units = bool(run_.config.data.scale_lo)
        images = []
        for f in args.images:
            x, depth = read_stored_image(f, size=(H, W), channels=C, raw=own_units)
            refuse_other_depth(run_, f, depth)
            images.append(x)
        x = torch.stack(images)
        return run_.to_model_units(x) if own_units else x
    from ..data import load_data

    if run_.config.data.source == "folder" and not run_.config.data.path:  # a diffusers folder: no data of its own
        raise EditError(f"{run_.path} records no data of its own to edit (a diffusers model folder): give --images")
    split = "holdout" if run_.config.data.holdout > 0 else "train"
    data = load_data(run_.config.data, split=split, seed=run_.config.train.seed)
    n = selected_count(args, len(data), split, n_default, flags)
    return data.x[args.index : args.index + n].clone()


def selected_count(
    args: argparse.Namespace, count: int, split: str, n_default: int, flags: str = "--index/--n", what: str = "images"
) -> int:
    """How many of the ``count`` examples of the run's ``split`` data --n takes from --index (``n_default`` when
    --n is left out: fewer where the data ends first); an EditError (one line) for an --index past the data, or an
    --n asked for that runs past its end."""
    from ..edit import EditError

    n = args.n if args.n is not None else n_default
    if not 0 <= args.index < count or n < 1:
        raise EditError(f"{flags} select no {what}: the {split} data has {count} examples")
    if args.index + n > count and args.n is not None:  # asked for: all of them, or a word (the default: fewer)
        raise EditError(
            f"{flags} ask for examples {args.index} to {args.index + n - 1}; the {split} data has {count} "
            f"(0 to {count - 1})"
        )
    return n


def setup(run_, args: argparse.Namespace, n: int | None = None, solver: str | None = None, seeds=...):
    """(sample config, denoiser D(x, sigma), sampler, sigma grid, sampler knobs, grid record) for a loaded run: the
    plan `sample` takes (run.sampling_plan). D walks the grid down as planned (generate.stop_short: a tuned grid
    that stops short of 0 ends with its first-order step); a command that also walks it up (an inversion) wraps
    ``D`` itself with stop_short for the way down.

    ``n``: the number of images edited in one batch, for ``--class`` (the classes cycled over them); without a
    class the denoiser is the network's unconditional (null-class) one. ``solver``: a command that walks its own
    deterministic sampler (interpolate's --method) names it, so the grid is planned, and the manifest records,
    that sampler with its default settings instead of the run's; D is then returned unwrapped. ``seeds``: the
    noises the command draws, for its manifest, where they are not image k's seed + k (interpolate's two seeds;
    None for a path between given images, which draws none)."""
    from ..cond import build_cond, parse_classes
    from ..generate import autoguided_denoiser, clamps_x0, guidance_of, required_guide, stop_short
    from ..guidance import guided_denoiser
    from ..provenance import note_sampling
    from ..samplers import get_sampler

    default_out(run_, args, "check")  # an unusable --out (or edits folder) is refused before any sampling
    sample = edit_sample(run_.config, args, run_, solver)
    required_guide(run_.model, sample)  # sample.autoguidance from a run with no guide: one line, nothing recorded
    if getattr(args, "classes", None):
        classes = parse_classes(args.classes)
        refuse_untrained_classes(run_, classes)
        cond = build_cond(run_.config.model, n or len(classes), classes=classes, more=more_images(args))
        denoiser_of = lambda net: guided_denoiser(net, cond, **guidance_of(sample))  # noqa: E731
    else:
        denoiser_of = lambda net: net.bind(None)  # noqa: E731
    clip = clamps_x0(sample, run_.data_shape, run_.codec)  # latents have no [-1, 1] range
    D = autoguided_denoiser(run_.model, sample, denoiser_of, clip)  # steered from the guide as `sample` is
    edit = {k: v for k, v in vars(args).items() if k in _EDIT_KNOBS and v is not None}
    if seeds is ...:
        seeds = list(range(sample.seed, sample.seed + n)) if n else [sample.seed]  # image k: seed + k
    conditioning = ["class"] if getattr(args, "classes", None) else None  # guided at sample.guidance then
    note_sampling(sample, seeds, wrappers=[{"name": args.command, **edit}], conditioning=conditioning)
    sigmas, knobs, record = run_.sampling_plan(sample)  # the grid `sample` takes for this run (its tuned grids too)
    refuse_interval_off_walks(args, sample, sigmas)
    if solver is None:
        D = stop_short(D, sigmas, record)
    return sample, D, get_sampler(sample.sampler), sigmas, knobs, record


def edit_sample(config, args: argparse.Namespace, run_=None, solver: str | None = None):
    """The sample config an edit runs with: the run's ``config.sample`` with the sampling flags applied and checked
    (the number of images and the batch are the edit's own), ``solver`` (interpolate's --method) in place of the
    sampler with its default settings; a --set of the guidance refused where the edit is unconditional. With the
    loaded ``run_`` the settings this run does not read are refused too (sample_config_from_args); the studio
    checks a request with the run's config alone, before the job loads the network."""
    from dataclasses import replace

    from ..config import SamplerSettings, checked_sample

    fixed = {"n": "--n", "batch_size": "editing every image in one batch"}
    sample = sample_config_from_args(config.sample, args, run_, fixed)
    if solver is not None:
        sample = replace(sample, sampler=solver, settings=SamplerSettings())
    checked_sample(config, sample)
    if not getattr(args, "classes", None):  # a valid value that would change nothing
        refuse_guidance_sets(
            args, "without --class the edit draws from the network's null class, with no classifier-free guidance"
        )
    return sample


def refuse_interval_off_walks(args: argparse.Namespace, sample, sigmas) -> None:
    """:func:`refuse_interval_off_walk` on every walk of the grid ``sigmas`` the edit makes: img2img's tail of the
    grid at each --strength, the whole grid for the other edits (inpaint, outpaint, interpolate)."""
    cfg = bool(getattr(args, "classes", None))
    if args.command != "img2img":
        refuse_interval_off_walk(sample, sigmas, cfg=cfg)
        return
    from ..edit import strength_sigmas

    for s in args.strength:
        refuse_interval_off_walk(sample, strength_sigmas(sigmas, s), cfg=cfg, at=f" at --strength {s:g}")


def refuse_interval_off_walk(sample, sigmas, *, cfg: bool, at: str = "") -> None:
    """guidance.refuse_interval_off_walk, as every command that samples checks it, for an edit guided by
    classifier-free guidance (``cfg``: the edit is conditioned, at sample.guidance != 1) or autoguidance, over the
    grid ``sigmas`` it walks (img2img: the tail of the grid its strength keeps, named by ``at``)."""
    from ..guidance import INTERVAL_SET
    from ..guidance import refuse_interval_off_walk as refuse

    guided = (cfg and sample.guidance != 1.0) or sample.autoguidance != 1.0
    refuse(sample, sigmas, guided=guided, what=f"{INTERVAL_SET}{at}")


def refuse_guidance_sets(args: argparse.Namespace, why: str) -> None:
    """One line for a ``--set sample.guidance[_rescale]`` an unguided edit never reads (``why``)."""
    from ..edit import EditError

    for key, a in sample_sets(args):
        if key in ("sample.guidance", "sample.guidance_rescale"):
            raise EditError(f"--set {a.strip()} changes nothing: {why}")


# The flags of the editing commands that say what the edit does (recorded in the manifests).
_EDIT_KNOBS = (
    "classes",
    "mask",
    "resample",
    "jump",
    "pseudoinverse",
    "pseudoinverse_sigma_max",
    "strength",
    "method",
    "left",
    "right",
    "top",
    "bottom",
    "stride",
    "frames",
    "seeds",
    "data_index",
)


def default_out(run_, args: argparse.Namespace, name: str, sidecars: tuple[str, ...] = ()) -> Path:
    from ..config import ConfigError

    sidecars = (*sidecars, ".npy") if getattr(args, "save_npy", False) else sidecars

    out = Path(args.out) if args.out else run_.path / "edits" / (re.sub(r"[^A-Za-z0-9_.=-]+", "_", name) + ".png")
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out must end in .png, got {out}")
    return check_output_file(out, sidecars)


def save_rows(rows, path: Path) -> Path:
    """One PNG, one row per tensor of (N, C, H, W) images (all rows the same N)."""
    import torch

    from ..viz import save_grid

    return save_grid(torch.cat([r.clamp(-1, 1) for r in rows]), path, nrow=rows[0].shape[0])


def save_edit(run_, args: argparse.Namespace, tag: str, rows, edited) -> list[Path]:
    """The PNG of ``rows`` at the edit's output (:func:`default_out`) and, with --save-npy, ``edited`` (the edited
    examples: (N, ...) or one such row per setting, (S, N, ...)) beside it as .npy in the data's own units
    (``LoadedRun.to_data_units``)."""
    import numpy as np

    from ..io import atomic_write

    path = default_out(run_, args, tag)
    paths = [save_rows(rows, path)]
    if args.save_npy:
        values = run_.to_data_units(edited.float()).numpy()
        paths.append(atomic_write(path.with_suffix(".npy"), lambda f: np.save(f, values)))
    return paths


def show_hole(x, mask, value: float = 0.0):
    """The input as the model sees it: the hole painted a flat grey."""
    return mask * x + (1 - mask) * value


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_input_arguments(p)
    add_class_argument(p)
    from ..masks import MASK_HELP

    p.add_argument("--mask", default="half:bottom", help=f"{MASK_HELP} (default half:bottom)")
    p.add_argument(
        "--resample",
        type=positive_int(1000),
        default=1,
        help="RePaint passes over each segment (default 1 = plain known-region replacement)",
    )
    p.add_argument(
        "--jump", type=positive_int(MAX_STEPS), help="RePaint jump length in steps (default: steps // 4, at least 1)"
    )
    p.add_argument(
        "--pseudoinverse",
        type=float_in(0.0, 100.0),
        default=0.0,
        metavar="W",
        help="pseudoinverse guidance weight (PiGDM: the hole follows the known pixels through the network's "
        "Jacobian; one backward pass per step; default 0 = off, 1 = the paper's)",
    )
    p.add_argument(
        "--pseudoinverse-sigma-max",
        type=positive_float,
        metavar="SIGMA",
        help="no pseudoinverse guidance above this noise level (default 20 x the run's sigma_data)",
    )


def guidance_knobs(run_, args: argparse.Namespace) -> dict:
    """inpaint()'s pseudoinverse-guidance arguments from --pseudoinverse / --pseudoinverse-sigma-max."""
    sd = run_.config.diffusion.sigma_data
    cap = args.pseudoinverse_sigma_max if args.pseudoinverse_sigma_max is not None else 20 * sd
    return {"guidance": args.pseudoinverse, "sigma_data": sd, "guidance_sigma_max": cap}


def run(args: argparse.Namespace) -> int:
    from ..generate import load_run
    from ..masks import make_mask

    check_edit_options(args)
    run_ = load_run(args.run, weights=args.weights)
    x = load_inputs(run_, args)
    sample, D, sampler, sigmas, knobs, _ = setup(run_, args, n=len(x))
    C, H, W = run_.image_shape
    mask = make_mask(args.mask, H, W)
    from ..provenance import note_edit

    jump = args.jump if args.jump is not None else max(1, sample.steps // 4)
    guide = guidance_knobs(run_, args)
    # the values used where their flags were left out, in the manifest beside the flags given
    note_edit(
        **({"jump": jump} if args.resample > 1 else {}),
        **({"pseudoinverse_sigma_max": guide["guidance_sigma_max"]} if args.pseudoinverse else {}),
    )
    with repaint_bar(len(sigmas) - 1, jump, args.resample, "inpaint") as bar:
        kw = dict(seed=sample.seed, jump=jump, resample=args.resample, knobs=knobs, bar=bar, guide=guide)
        if run_.codec is None:
            result = inpaint_images(sampler, D, x, sigmas, mask, **kw)
        else:  # in latents, the mask on the latent grid; the known pixels pasted back at the end
            from ..latent import edit_in_latents, latent_mask

            m_z = latent_mask(mask, run_.data_shape[1:])
            result = edit_in_latents(
                run_.codec, x, lambda z: inpaint_images(sampler, D, z, sigmas, m_z, **kw), mask=mask
            )
    tag = (
        f"inpaint-{args.mask}-{sample.sampler}{sample.steps}"
        + (f"-repaint{args.resample}x{jump}" if args.resample > 1 else "")
        + (f"-pigdm{args.pseudoinverse:g}" if args.pseudoinverse else "")
        + (f"-class{args.classes}" if args.classes else "")
    )
    for p in save_edit(run_, args, tag, [x, show_hole(x, mask), result], result):
        print(p)
    return 0


def refuse_long_jump(jump: int | None, steps: int) -> None:
    """EditError (one line) for a RePaint jump longer than the steps of the grid: the segment stops at the grid's
    end, so every jump from ``steps`` up gives the same result - a --jump 50 on 3 steps was recorded and ran as 3."""
    from ..edit import EditError

    if jump is not None and jump > steps:
        raise EditError(
            f"--jump {jump} is longer than the {steps} sampling steps it would jump over; give {steps} or less"
        )


def repaint_bar(steps: int, jump: int, resample: int, what: str):
    """A progress bar over every sampler step of RePaint's schedule (``resample`` passes per ``jump`` steps); a
    jump longer than the grid is refused (:func:`refuse_long_jump`)."""
    refuse_long_jump(jump, steps)
    from ..edit import repaint_moves
    from ..progress import step_bar

    total = sum(b - a for a, b in repaint_moves(steps, jump, resample) if b > a)
    return step_bar(total, f"{what} ({resample} pass{'es' if resample > 1 else ''} per segment)")


def inpaint_images(
    sampler,
    D,
    x,
    sigmas,
    mask,
    *,
    seed: int,
    jump: int | None,
    resample: int,
    knobs: dict,
    bar=None,
    guide: dict | None = None,
):
    """Inpaint a batch with per-image seeds: image k's noise comes from seed + k (the known region's noise from
    a second stream of the same seed), so a result never depends on the batch it was drawn in. ``guide``: the
    pseudoinverse-guidance arguments of :func:`torchdiffusion.edit.inpaint` (:func:`guidance_knobs`)."""
    from ..edit import inpaint
    from ..types import NoiseSource

    seeds = range(seed, seed + len(x))
    ns = NoiseSource(seeds, x.shape[1:])
    known = NoiseSource([s + 7_919_000_000 for s in seeds], x.shape[1:])
    return inpaint(
        sampler,
        D,
        ns.initial() * float(sigmas[0]),
        sigmas,
        x,
        mask,
        jump=jump,
        resample=resample,
        noise=ns,
        known_noise=known,
        callback=None if bar is None else bar.step,
        **(guide or {}),
        **knobs,
    )
