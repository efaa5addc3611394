"""A request's parameters checked by the command line's own rules: the JSON object ``{"steps": 20, "eta": 0.5}``
becomes ``--steps=20 --eta=0.5`` and goes through the command's argparse parser (the converters of
commands/argtypes.py, the choices, the flags a command takes), then through the config validation of a run.
Anything refused raises :class:`ParamError` with argparse's one line; the app answers it with a 400.

    args = parse_command("sample", run_dir, {"sampler": "heun", "steps": 12, "n": 16}, out=run_dir / "studio/x.png")

The studio adds its own bounds (:data:`LIMITS`) so that one request cannot hold the worker for hours, and
refuses the flags that name files (``--out``, ``--images``, ``--classifier``, ``--series``, ``--data``): the
studio sets ``--out`` and ``--images`` itself, under the runs root. An option that takes free text is passed on only
when :data:`TEXT_OPTIONS` says it names no file, so an option the CLI gains later is refused until it is sorted.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

from ..commands import explain, img2img, inpaint, interpolate, outpaint, sample

# The commands a job can run: name -> module (HELP, add_arguments, run), as in cli.COMMANDS
COMMANDS = {
    "sample": sample,
    "inpaint": inpaint,
    "outpaint": outpaint,
    "img2img": img2img,
    "interpolate": interpolate,
    "explain": explain,
}
EDITS = ("inpaint", "outpaint", "img2img")  # the commands that edit pictures of an image run
# Flags the studio sets itself, that name files outside its control, or that write files it does not serve
BLOCKED = {"--out", "--images", "--classifier", "--series", "--data", "--list-samplers", "--save-npy", "--help", "-h"}
BLOCKED |= {"--save-tiff", "--save-nifti", "--save-wav"}  # (SERVED: .png, .gif, .json, .mp4, .csv, .txt)
# The options taking free text (no converter, no choices) that name no file; any other such option could name one
# and is refused. --mask names a file only as FILE.png, which parse_command refuses (the page uploads a painted one)
TEXT_OPTIONS = {"--sampler", "--grid", "--spacing", "--set", "--class", "--context", "--negative-context"}
TEXT_OPTIONS |= {"--prompt", "--negative-prompt", "--guidance-interval", "--given", "--schedules", "--mask"}
# Studio bounds on top of the CLI's (dest -> largest value, or largest number of values for a list)
LIMITS = {
    "n": 64,
    "steps": 500,
    "batch_size": 64,
    "frames": 32,
    "resample": 10,
    "ddpm_steps": 500,
    "T": 10_000,
    "images": 16,
    "left": 64,
    "right": 64,
    "top": 64,
    "bottom": 64,
    "t": 16,
    "sigmas": 8,
    "strength": 8,
    "prompt": 16,
    "sample_set": 16,
    "setting_steps_per_level": 20,  # langevin: network evaluations per step
    "setting_corrector_steps": 20,  # pc: the same
}
# ``--set sample.KEY=VALUE`` reaches the same settings: each bounded as its flag is
SET_LIMITS = {
    "sample.n": "n",
    "sample.steps": "steps",
    "sample.batch_size": "batch_size",
    "sample.settings.steps_per_level": "setting_steps_per_level",
    "sample.settings.corrector_steps": "setting_corrector_steps",
}
MAX_TEXT = 300  # characters of one string value
UPLOAD_MORE = "upload at least {count} images"  # cond.cycled's advice where an edit's uploads are its images


class ParamError(ValueError):
    """A parameter the command line would refuse (or the studio bounds); one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise ParamError(message)


_PARSERS: dict[str, argparse.ArgumentParser] = {}


def command_parser(command: str) -> argparse.ArgumentParser:
    """The argparse parser of a studio command (built once): the CLI's own flags, without --help."""
    if command not in COMMANDS:
        raise ParamError(f"unknown command {str(command)[:40]!r}; choose from {', '.join(COMMANDS)}")
    if command not in _PARSERS:
        p = _Parser(prog=f"torchdiffusion {command}", add_help=False, allow_abbrev=False)
        COMMANDS[command].add_arguments(p)
        _PARSERS[command] = p
    return _PARSERS[command]


def _option(parser: argparse.ArgumentParser, key: str) -> argparse.Action:
    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,40}", key):  # explain's --T too
        raise ParamError(f"not a parameter name: {str(key)[:40]!r}")
    flag = "--" + key.replace("_", "-")
    action = parser._option_string_actions.get(flag)
    if action is None or flag in BLOCKED or (takes_text(action) and flag not in TEXT_OPTIONS):
        raise ParamError(f"{parser.prog} takes no parameter {key!r}")
    return action


def takes_text(action: argparse.Action) -> bool:
    """Whether an option's value reaches the command as free text (which could be a path): no converter, no
    choices; a sampler setting (``--eta``) is text that the config reads as a number."""
    free = action.nargs != 0 and action.type is None and not action.choices
    return free and not action.dest.startswith("setting_")


def _text(key: str, value) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ParamError(f"{key}: expected a number or a string, got {type(value).__name__}")
    text = str(value)
    if len(text) > MAX_TEXT or "\x00" in text:
        raise ParamError(f"{key}: at most {MAX_TEXT} characters, no NUL bytes")
    return text


def _flag_args(parser: argparse.ArgumentParser, key: str, value) -> list[str]:
    """The argv words of one parameter: a switch, ``--flag=value``, repeated ``--flag=v``, or ``--flag n1 n2``."""
    action = _option(parser, key)
    flag = action.option_strings[-1]
    if value is None:
        return []
    if action.nargs == 0:  # store_true
        if not isinstance(value, bool):
            raise ParamError(f"{key}: expected true or false")
        return [flag] if value else []
    values = value if isinstance(value, list) else [value]
    if isinstance(action, argparse._AppendAction):
        return [f"{flag}={_text(key, v)}" for v in values]
    if action.nargs in (None, "?"):
        if isinstance(value, list):
            raise ParamError(f"{key}: expected one value, got a list")
        return [f"{flag}={_text(key, value)}"]
    if action.type is None:  # a list of words (explain --schedules linear cosine)
        if not values or any(not isinstance(v, str) or v.startswith("-") for v in values):
            raise ParamError(f"{key}: expected a list of words")
    elif not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise ParamError(f"{key}: expected a list of numbers")
    return [flag, *(_text(key, v) for v in values)]


def _check_limits(args: argparse.Namespace) -> None:
    for dest, hi in LIMITS.items():
        v = getattr(args, dest, None)
        if isinstance(v, str):  # a sampler setting's value stays text until the config reads it: its number here
            try:
                v = float(v)
            except ValueError:
                continue  # not a number: the config's own check names it
        if isinstance(v, list) and len(v) > hi:
            raise ParamError(f"{dest}: the studio takes at most {hi} values")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > hi:
            raise ParamError(f"{dest}: the studio allows at most {hi}, got {v}")
        if dest == "t" and isinstance(v, list) and any(t > LIMITS["T"] for t in v):
            raise ParamError(f"t: the studio allows timesteps up to {LIMITS['T']}")
    for assignment in getattr(args, "sample_set", None) or []:
        key, _, value = str(assignment).partition("=")
        hi = LIMITS.get(SET_LIMITS.get(key.strip(), ""))
        if hi is None:
            continue
        try:
            v = float(value)
        except ValueError:
            continue  # not a number: the config's own check names it
        if v > hi:
            raise ParamError(f"set {key.strip()}: the studio allows at most {hi}, got {value.strip()}")


def parse_command(
    command: str, run_dir: Path, params: dict, *, out: Path, what: str | None = None, files: dict | None = None
) -> argparse.Namespace:
    """The Namespace the command's ``run(args)`` takes, from the run folder, the request's parameters, the output
    path the studio chose and ``files`` (``{"images": [paths], "mask": path}`` of saved uploads); ``args.argv`` is
    the equivalent command line."""
    parser = command_parser(command)
    if not isinstance(params, dict):
        raise ParamError("params must be an object of parameter -> value")
    if len(params) > 64:
        raise ParamError("too many parameters")
    mask = params.get("mask")
    if command in ("inpaint",) and isinstance(mask, str) and ("/" in mask or "." in mask):
        raise ParamError("mask: give a spec (box:x0,y0,x1,y1 | centre | half:SIDE | invert:SPEC) or paint one")
    for key in files or {}:
        if params.get(key) is not None:  # one would silently replace the other (argparse keeps the last)
            raise ParamError(f"{key}: given as a parameter and as an upload; send one")
    argv = [what] if command == "explain" else []
    if command == "explain" and not isinstance(what, str):
        raise ParamError(f"explain needs 'what': {' | '.join(explain.WHAT)}")
    if command != "explain" or explain.reads_run(what):  # the schedules picture reads no run (and refuses one)
        argv.append(str(run_dir))
    for key, value in params.items():
        argv += _flag_args(parser, key, value)
    for key, paths in (files or {}).items():
        argv += [f"--{key}", *map(str, paths)] if isinstance(paths, list) else [f"--{key}={paths}"]
    argv.append(f"--out={out}")
    args = parser.parse_args(argv)
    _check_limits(args)
    from ..cli import empty_option

    empty = empty_option(args, parser)
    if empty is not None:  # as the command line refuses it (the page sends no empty field)
        raise ParamError(f"{empty.lstrip('-').replace('-', '_')}: an empty value; leave the parameter out")
    args.command, args.argv = command, [command, *argv]  # the command line this job equals (its manifest says it)
    args._parser = parser  # as cli.main sets it: the checks of which options were given (common.given_options)
    from ..commands.common import written_options

    args._written = written_options(parser, argv)
    return args


def precheck(args: argparse.Namespace, run_dir: Path, names: dict[Path, str] | None = None) -> None:
    """The run's config with the sampling parameters applied must pass the config validation (as ``sample``
    checks it before sampling), so a bad setting is a 400 now rather than a failed job later. ``names``: what a
    refusal calls each uploaded image (app.upload_names: the file the user picked), by the path of its copy."""
    from ..commands.common import sample_config_from_args
    from ..commands.inpaint import edit_count
    from ..cond import MORE_IMAGES, build_cond, check_takes_prompts, cycled, parse_classes, parse_vectors
    from ..config import checked_sample, from_json, validate
    from ..generate import RunError

    cfg_file = run_dir / "config.json"
    if not cfg_file.is_file():
        raise RunError(f"{run_dir.name} is not a run folder: config.json is missing")
    try:
        cfg = validate(from_json(cfg_file.read_text()))
    except UnicodeDecodeError:
        raise RunError(f"{run_dir.name}/config.json is not text") from None
    from ..kinds import DISCRETE_KINDS
    from ..latent import RECORD_KEY as LATENT_KEY  # run.json's record of a latent run's autoencoder

    info = _run_info(run_dir)
    ds = info.get("data_shape")
    kind, shape = info.get("kind"), tuple(ds) if isinstance(ds, list) and all(type(v) is int for v in ds) else ()
    # the settings this run does not read, refused as the command refuses them once it has loaded the run
    outline = RunOutline(run_dir, cfg, shape, info) if shape else None  # (none: the job's load_run says why)
    if args.command == "interpolate":  # as the command checks them, before it plans the path
        from ..commands.interpolate import refuse_unfit_run, refuse_unread

        refuse_unread(args)
        if outline is not None:
            refuse_unfit_run(run_dir, outline.kind, outline.latent)
    if args.command == "explain":  # an option (or a run) the picture does not read, as explain refuses it first
        from ..commands.explain import refuse_unread

        refuse_unread(args)
    from ..commands.inpaint import check_edit_options, refuse_non_image_run

    if args.command in ("img2img", "inpaint"):  # an option nothing reads, as they refuse it before loading the run
        check_edit_options(args)
    if args.command in EDITS and outline is not None:  # as the command reads its inputs, before it plans the edit
        from ..commands.outpaint import check_kind_options, refuse_latent_run

        refuse_non_image_run(run_dir, outline.kind, shape)  # a 400, and new_job removes the uploads
        if args.command == "outpaint":  # the options of the image outpainting, then the edit's, then its pixels
            check_kind_options(args, signal=False)
            check_edit_options(args)
            refuse_latent_run(run_dir, outline.latent)
    if args.command in (*EDITS, "interpolate") and outline is not None and getattr(args, "images", None):
        _refuse_other_depths(args, outline, names or {})  # as the command reads its --images
    read = outline if args.command != "explain" or args.run else None  # (explain schedules reads no run)
    plan = checked_sample(cfg, sample_config_from_args(cfg.sample, args, read))
    if args.command == "sample" and outline is not None:  # a table's --gif, an image's --given, ...
        from ..commands.sample import refuse_options_of_other_kinds

        refuse_options_of_other_kinds(outline.kind, run_dir, args)
    if args.command == "sample":  # the guidance flags, applied and checked as ``sample`` applies them
        from ..commands.sample import guidance_from_args

        plan = checked_sample(cfg, guidance_from_args(plan, args))
    # the conditioning asked for must be one the run takes (classes in range, context vectors of its length), no more
    # classes, context vectors or prompts than the images the request fixes (a draw's n; an edit's uploads, or its n
    # examples of the run's data), and prompts the encoder reads whole (their text is encoded only when the job
    # runs: here they are counted in tokens alone)
    images = plan.n if args.command == "sample" else edit_count(args) if args.command in EDITS else None
    more = UPLOAD_MORE if getattr(args, "images", None) else MORE_IMAGES  # the uploads are the edit's images
    classes = parse_classes(args.classes) if getattr(args, "classes", None) else None
    if classes:
        build_cond(cfg.model, images or len(classes), classes=classes, more=more)
        if outline is not None:  # a class no training example had, refused as sample and the edits refuse it
            from ..commands.common import refuse_untrained_classes

            refuse_untrained_classes(outline, classes)
    for flag, negative in (("context", False), ("negative_context", True)):
        if getattr(args, flag, None):  # the vectors' length against the run's, as sample's build_cond checks them
            build_cond(cfg.model, images, contexts=parse_vectors(getattr(args, flag)), negative=negative)
    negative = getattr(args, "negative_prompt", None)
    for flag, given in (("--prompt", getattr(args, "prompt", None)), ("--negative-prompt", negative and [negative])):
        if given:
            from ..text import check_lengths

            check_takes_prompts(cfg.model, flag)
            check_lengths(given, flag)
            if images:
                cycled(len(given), images, f"{flag} prompts")
    if args.command == "explain" and args.run:  # a picture this kind of run cannot give: refused as explain does
        from ..commands.explain import refuse_run_kind

        refuse_run_kind(args.what, run_dir.name, kind, shape, cfg.diffusion.discrete)
    if args.command in (*EDITS, "interpolate") and kind == "image" and len(shape) == 3:
        _check_edit_plan(args, outline)
    if args.command == "inpaint" and kind == "image" and len(shape) == 3 and not info.get(LATENT_KEY):
        from ..masks import make_mask

        make_mask(args.mask, shape[1], shape[2])  # a box outside the image, a mask file that is no image
    if args.command == "sample" and kind not in DISCRETE_KINDS:
        from types import SimpleNamespace

        from ..commands.sample import refuse_interval_off_plan, refuse_unread_options
        from ..generate import keeps_guide, refuse_autoguidance_without_guide

        # a guidance scale for samples with nothing to guide toward: refused as ``sample`` refuses it
        refuse_unread_options(SimpleNamespace(config=cfg), plan, args)
        if outline is not None:  # a guidance interval holding no level of the grid
            refuse_interval_off_plan(outline, plan, args)
        refuse_autoguidance_without_guide(plan, keeps_guide(info))  # (a run stopped before train.guide_at)


def _refuse_other_depths(args: argparse.Namespace, run_: RunOutline, names: dict[Path, str]) -> None:
    """Each uploaded image against the bit depth of the files a ``data.scale`` run maps (inpaint.refuse_other_depth,
    as the command refuses an --images file), its depth read from the studio's copy of it. The studio keeps every
    upload as an 8-bit picture (security.decode_upload), so a run of 16-bit or float files is edited from the
    command line, which the refusal says."""
    from ..commands.inpaint import refuse_other_depth, trained_depth
    from ..data import read_stored_image

    if not trained_depth(run_):
        return
    files = "A B" if args.command == "interpolate" else "FILE"
    how = f"torchdiffusion {args.command} {run_.path} --images {files}"
    remedy = f"edit the run from the command line, {how}, with the files saved at their bit depth"
    kept = "(the studio keeps every upload as an 8-bit picture)"  # a 16-bit file uploaded is 8-bit here
    for f in args.images:
        refuse_other_depth(run_, f"{names.get(Path(f), f)} {kept}", read_stored_image(f, raw=True)[1], remedy)


def _check_edit_plan(args: argparse.Namespace, run_: RunOutline) -> None:
    """An edit's sample config and the grid it walks, checked as the command checks them before sampling
    (inpaint.edit_sample with the settings the run does not read, autoguidance without the run's guide model,
    inpaint.refuse_interval_off_walks: a guidance interval that holds no level of a walk, img2img's at each
    strength), from the run's config and run.json alone: the network is loaded only when the job runs."""
    from ..commands.inpaint import edit_sample, refuse_interval_off_walks
    from ..generate import keeps_guide, refuse_autoguidance_without_guide

    solver = args.method if args.command == "interpolate" else None
    sample = edit_sample(run_.config, args, run_, solver=solver)
    refuse_autoguidance_without_guide(sample, keeps_guide(run_.info))  # as inpaint.setup's required_guide
    refuse_interval_off_walks(args, sample, run_.sampling_plan(sample)[0])


@dataclass
class RunOutline:
    """A run folder as the command's checks read it (commands.common.sample_config_from_args, inpaint.edit_sample:
    ``config``, ``data_shape``, ``kind``, ``path``, ``sampling_plan``) before the job loads its network: the
    grid is planned from the config's sigma range (model.sigma_range), as generate.LoadedRun plans it from the
    network's."""

    path: Path
    config: object
    data_shape: tuple
    info: dict

    @property
    def kind(self) -> str:
        from ..generate import run_kind

        return run_kind(self.info, self.data_shape)

    @property
    def latent(self) -> bool:
        """Whether the run diffuses an autoencoder's latents (run.json records it; nothing is clamped then)."""
        from ..latent import RECORD_KEY

        return bool(self.info.get(RECORD_KEY))

    def sampling_plan(self, sample):
        from ..generate import clamps_x0, sampling_plan
        from ..model import sigma_range

        clamped = not self.latent and clamps_x0(sample, self.data_shape)
        return sampling_plan(sigma_range(self.config.diffusion), sample, clamped=clamped, grid_dir=self.path / "grids")


def _run_info(run_dir: Path) -> dict:
    """run.json as read (an empty dict for a missing or damaged one: the job's load_run says what is wrong)."""
    from .runs import read_object

    info = read_object(run_dir / "run.json")
    return info if isinstance(info, dict) else {}
