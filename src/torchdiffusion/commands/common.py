"""Argument helpers shared by the commands."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import typing
from collections.abc import Callable
from pathlib import Path

from ..config import ConfigError, RunConfig, SampleConfig, SamplerSettings, override, refuse_unread, unread_setting
from .argtypes import MAX_BATCH, MAX_COUNT, MAX_SEED, MAX_STEPS, nonneg_int, positive_float, positive_int


def add_config_arguments(p: argparse.ArgumentParser, preset: str, config_help: str) -> None:
    """--preset / --config / --set of the commands that train from a typed config (train, train-autoencoder,
    train-clip)."""
    p.add_argument("--preset", default=preset, help=f"named preset to start from (default: {preset})")
    p.add_argument("--config", help=config_help)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. train.lr=1e-3 (repeatable)",
    )


def base_config(args: argparse.Namespace, from_json: Callable[[str], typing.Any], get_preset: Callable):
    """The config --config names (read by ``from_json``; its preset a plain name), else the --preset's; --set is
    applied by the caller."""
    from ..config import ConfigError, check_preset_name

    if not args.config:
        return get_preset(args.preset)
    if "preset" in given_options(args):  # (the preset was dropped without a word)
        raise ConfigError(f"--preset {args.preset} and --config {args.config} both name the starting config; give one")
    path = Path(args.config)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; give its config.json")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not JSON text") from None
    cfg = from_json(text)
    check_preset_name(cfg.preset, f"config file {path}")
    return cfg


def _setting_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@functools.cache
def setting_comments() -> dict[str, str]:
    """The comment beside each SamplerSettings field in config.py (the one description of each setting).

    Read from the class's own lines of config.py (inspect.getsource would parse the whole module), once per
    process: several commands add these flags to the parser."""
    import inspect
    import linecache
    import re

    lines = linecache.getlines(inspect.getsourcefile(SamplerSettings))
    start = next(i for i, line in enumerate(lines) if line.startswith(f"class {SamplerSettings.__name__}"))
    out, last = {}, ""
    for line in lines[start + 1 :]:
        if line.strip() and not line[0].isspace():  # the class's body has ended
            break
        m = re.match(r"\s+(\w+): [^=]+=[^#]*(?:#\s*(.*))?$", line.rstrip("\n"))
        if m:
            out[m.group(1)] = m.group(2) or f"(with {last})"
            last = m.group(1)
    return out


@functools.cache
def _setting_kinds() -> dict[str, str]:
    """Each SamplerSettings field's value type (``float | None`` -> float), resolved once per process."""
    hints = typing.get_type_hints(SamplerSettings)
    return {f.name: typing.get_args(hints[f.name])[0].__name__ for f in dataclasses.fields(SamplerSettings)}


def given_settings(args: argparse.Namespace) -> dict[str, typing.Any]:
    """name -> value of each sampler-setting flag (--eta, --s-churn, ...) the command line gave."""
    values = {f.name: getattr(args, "setting_" + f.name, None) for f in dataclasses.fields(SamplerSettings)}
    return {name: v for name, v in values.items() if v is not None}


def sample_sets(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(key, the whole assignment) of each ``--set sample.KEY=VALUE`` given, the key stripped."""
    return [(a.split("=", 1)[0].strip(), a) for a in getattr(args, "sample_set", None) or []]


def sample_set_keys(args: argparse.Namespace) -> set[str]:
    """The keys of the ``--set sample.KEY=VALUE`` given."""
    return {key for key, _ in sample_sets(args)}


def given_sampling_flags(args: argparse.Namespace) -> list[str]:
    """The flags of add_sampling_arguments' sampler, grid and settings part that the command line gave (--sampler,
    --steps, --grid, --rho, --spacing, --set sample.*, --eta, ...): what a command that draws no samples refuses."""
    given = [f"--{k}" for k in ("sampler", "steps", "grid", "rho", "spacing") if getattr(args, k, None) is not None]
    given += ["--set"] if sample_sets(args) else []
    return given + [_setting_flag(name) for name in given_settings(args)]


def written_options(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The dests of the options written on a command line ``argv`` (whatever their values - the default too):
    ``--flag``, ``--flag=value`` and single-dash ones, up to a bare ``--``."""
    dests = set()
    for word in argv:
        if word == "--":
            break
        if word.startswith("-") and len(word) > 1 and not word[1].isdigit() and word[1] != ".":  # not -1, -.5
            key = word.split("=", 1)[0]
            action = parser._option_string_actions.get(key)
            if action is None and key.startswith("--"):  # an abbreviation argparse took: the one option it names
                named = {a for s, a in parser._option_string_actions.items() if s.startswith(key)}
                action = named.pop() if len(named) == 1 else None
            if action is not None:
                dests.add(action.dest)
    return dests


def given_options(args: argparse.Namespace) -> dict[str, str]:
    """dest -> option string of every option the command line gave (from the parser cli.build_parser stores in
    ``args._parser``; {} without one): what a command checks is read - those written on it where cli.main
    recorded them (``args._written``: an unread option given its default value is refused like any other), and
    those set to something other than their default."""
    parser = getattr(args, "_parser", None)
    written = getattr(args, "_written", None)

    def given(a: argparse.Action) -> bool:  # written (any value), or holding another value than the default
        if written is not None and a.dest in written:
            return True
        return getattr(args, a.dest, a.default) not in (a.default, None, [])

    actions = parser._actions if parser is not None else []
    return {a.dest: a.option_strings[0] for a in actions if a.option_strings and a.dest != "help" and given(a)}


def check_save_wav(run_, asked: bool) -> None:
    """A ConfigError (one line) when --save-wav is ``asked`` of a run not trained on WAV files: it has no sample rate
    to write at (data/wav.py rate_of)."""
    from ..data.wav import rate_of

    if asked and rate_of(run_.info) is None:
        raise ConfigError(
            f"--save-wav writes the series of a run trained on WAV files (data.source=wav); {run_.path} holds "
            f"{run_.kind} data from {run_.config.data.source}"
        )


def add_sampling_arguments(p: argparse.ArgumentParser, counts: bool = True, batch: bool = True) -> None:
    """--sampler/--steps/--grid/--n/--seed/... and one flag per sampler setting (--eta, --s-churn, ...),
    overriding the run's SampleConfig (None = keep the run's). ``counts=False`` leaves out --n, --seed and
    --batch-size, for a command that gives them its own defaults (evaluate); ``batch=False`` leaves out
    --batch-size, for a command that edits all its inputs in one batch (inpaint, outpaint, img2img)."""
    g = p.add_argument_group("sampling")
    g.add_argument("--sampler", help="sampler name (see 'torchdiffusion sample --list-samplers')")
    g.add_argument("--steps", type=positive_int(MAX_STEPS), help="steps on the sigma grid")
    g.add_argument(
        "--grid",
        help="sigma grid: auto (the run's tuned grid when one matches, else the process's default) | karras | "
        "exponential | uniform_t | tuned (the run's grids/, from bench-samplers)",
    )
    g.add_argument("--rho", type=positive_float, help="Karras grid exponent")
    g.add_argument("--spacing", help="uniform_t spacing: leading | trailing | linspace")
    if counts:
        g.add_argument("--n", type=positive_int(MAX_COUNT), help="number of samples")
        g.add_argument("--seed", type=nonneg_int(MAX_SEED), help="image k uses seed + k")
        if batch:
            g.add_argument("--batch-size", type=positive_int(MAX_BATCH), help="images per network call")
    g.add_argument(
        "--set",
        dest="sample_set",
        action="append",
        default=[],
        metavar="sample.KEY=VALUE",
        help="override any sample setting, e.g. sample.settings.eta=0.5 (repeatable)",
    )
    s = p.add_argument_group("sampler settings (each sampler takes some; see --list-samplers)")
    about = setting_comments()
    for name, kind in _setting_kinds().items():
        s.add_argument(_setting_flag(name), dest=f"setting_{name}", metavar=kind.upper(), help=about[name])


def _given_as(args: argparse.Namespace, sets: list, name: str) -> str | None:
    """How the sample setting ``name`` was given on this command line - its flag ``--name``, or ``--set
    sample.name=...`` - for a refusal to quote; None where it was not."""
    if getattr(args, name, None) is not None:
        return _setting_flag(name)
    return next((f"--set {a.strip()}" for key, a in sets if key == f"sample.{name}"), None)


def _refuse_unread_by_adaptive(run_, sample: SampleConfig, args: argparse.Namespace, sets: list) -> None:
    """The adaptive solver takes its own steps between the grid's first and last positive level: --steps or --rho
    (or their --set) that move neither end change nothing (karras and exponential grids end at the run's sigma range
    whatever their steps), and are refused in one line."""
    from dataclasses import replace

    def ends(s: SampleConfig) -> tuple[float, float]:
        sigmas = run_.sampling_plan(s)[0]
        positive = sigmas[sigmas > 0]
        return float(positive[0]), float(positive[-1])

    written = {name: flag for name in ("steps", "rho") if (flag := _given_as(args, sets, name))}
    here = ends(sample)
    for name, flag in written.items():
        other = replace(sample, **{name: sample.steps + 1 if name == "steps" else sample.rho * 2})
        if all(abs(a - b) <= 1e-9 * b for a, b in zip(ends(other), here)):  # (rho's powers round in the last bits)
            raise ConfigError(
                f"{flag} changes nothing: the adaptive solver takes its own steps between the grid's first and last "
                f"level ({here[0]:.4g} and {here[1]:.4g}), which {name} does not move on this grid"
            )


def sample_config_from_args(
    base: SampleConfig,
    args: argparse.Namespace,
    run_=None,
    fixed: dict[str, str] | None = None,
    scales: list[float] | None = None,
) -> SampleConfig:
    """The run's SampleConfig with the sampling flags applied: --set first, then the dedicated flags.

    With the loaded run, a --set of a sample setting the run does not read (config.refuse_unread), and --rho or
    --spacing when the grid this sampling uses (what --grid auto resolves to for the run) does not read them, are
    refused in one line instead of changing nothing. ``fixed``: the sample settings the command sets itself
    (``{"n": "--n"}``: key -> what sets it), whose --set would be overwritten, refused the same way. ``scales``: the
    guidance scales the command samples at (guidance-sweep's --scales), a --set being refused only where it is read
    at none of them."""
    from dataclasses import replace

    from ..config import with_sampler

    own_sampler, sets, settings = base.sampler, sample_sets(args), given_settings(args)
    updates = {
        k: getattr(args, k)
        for k in ("sampler", "steps", "grid", "rho", "spacing", "n", "seed", "batch_size", "labels")
        if getattr(args, k, None) is not None
    }
    for key, a in sets:
        if not key.startswith("sample."):
            raise ValueError(f"--set {a!r}: only sample settings can be changed here (sample.KEY=VALUE)")
        if key[len("sample.") :] in (fixed or {}):
            raise ConfigError(f"--set {key} changes nothing: {args.command} sets it by {fixed[key[len('sample.') :]]}")
        name = key.removeprefix("sample.settings.") if key.startswith("sample.settings.") else None
        flag = _setting_flag(key[len("sample.") :]) if key[len("sample.") :] in updates else None
        flag = _setting_flag(name) if name in settings else flag
        if flag:  # the flag's value wins: the --set would change nothing
            raise ConfigError(f"--set {a.strip()} and {flag} both set {key}; give one")
        base = override(RunConfig(sample=base), [a.strip()]).sample  # errors name the key as given
    sample = override(replace(base, **updates), [f"settings.{name}={v}" for name, v in settings.items()])
    keep = {*settings, *(k[len("sample.settings.") :] for k, _ in sets if k.startswith("sample.settings."))}
    if sample.sampler != own_sampler:  # the run's settings were its own sampler's; those given here are kept
        sample = with_sampler(sample, sample.sampler, keep=keep)
    from ..samplers import SAMPLERS, unread_settings

    if sample.sampler in SAMPLERS:  # (an unknown one: validate names it) a setting its other settings switch off
        unread = unread_settings(sample.sampler, dataclasses.asdict(sample.settings), sorted(keep))
        if unread:
            key, why = unread
            raise ConfigError(
                f"{_setting_flag(key) if key in settings else '--set sample.settings.' + key} changes nothing: {why}"
            )
    if run_ is not None:  # a --set of a sample setting this run does not read (sample.guidance when unconditional)
        scale = getattr(args, "guidance", None)  # read with --guidance's scale: it decides what guidance reads
        ws = sorted(set(scales), reverse=True) if scales else [scale]  # a sweep's: read at one of them is read
        cfgs = [replace(run_.config, sample=replace(sample, guidance=w) if w is not None else sample) for w in ws]
        for _, a in sets:
            if all(unread_setting(c, a.split("=", 1)[0].strip()) for c in cfgs):
                refuse_unread(cfgs[0], [a])  # its one-line refusal
    if run_ is not None:  # clamping where nothing is clamped; a sampler or grid flag where no grid is (sequences)
        cfg = replace(run_.config, sample=sample)
        clip = [a for key, a in sets if key == "sample.clip_denoised"]
        if clip and len(run_.data_shape) not in (3, 4):  # the rule's data check (generate.clamps_x0)
            raise ConfigError(
                f"--set {clip[0].strip()} changes nothing: x0_hat is clamped only for images and volumes in pixel "
                f"space, and {run_.path} holds {run_.kind} data"
            )
        flags = ("sampler", "grid", "rho", "spacing")
        given = {f"--{k}": f"sample.{k}" for k in flags if getattr(args, k, None) is not None}
        given |= {_setting_flag(name): f"sample.settings.{name}" for name in settings}
        for flag, key in given.items():  # the grid's shape: read only where a grid is (the sampler's rule)
            why = unread_setting(cfg, "sample.sampler" if key in ("sample.rho", "sample.spacing") else key)
            if why:
                raise ConfigError(f"{flag} changes nothing: {why.replace('sample.sampler', key, 1)}")
    if run_ is not None and sample.sampler == "adaptive":  # it walks only the grid's first and last level
        _refuse_unread_by_adaptive(run_, sample, args, sets)
    shape_flags = {name: _given_as(args, sets, name) for name in ("rho", "spacing")}
    if run_ is not None and any(shape_flags.values()):
        grid = run_.sampling_plan(sample)[2]["grid"]
        if shape_flags["rho"] and grid != "karras":
            raise ConfigError(
                f"{shape_flags['rho']} shapes the karras grid; this sampling uses the {grid} grid (add --grid karras)"
            )
        spacing = shape_flags["spacing"] and sample.spacing in ("leading", "trailing", "linspace")
        if spacing and grid != "uniform_t":  # else validate() names it
            raise ConfigError(
                f"{shape_flags['spacing']} places the uniform_t grid's timesteps; this sampling uses the {grid} grid "
                "(add --grid uniform_t)"
            )
    return sample


def refuse_untrained_classes(run_, classes) -> None:
    """GuidanceError (one line) when a class of ``classes`` (--class) is one no training example had: a
    class-conditional run whose data's labels (run.json's ``num_classes``, the largest + 1) stop below the
    network's ``model.num_classes``, or skip a class below their largest (run.json's ``classes_without_examples``:
    a folder's class whose images were all held out, an emoji subset without a category, an array's labels
    0, 1, 3), never trained those classes' embeddings."""
    from ..evaluation.evaluate import run_classes
    from ..guidance import GuidanceError

    K = run_.config.model.num_classes
    if not classes or K <= 0:
        return
    held = set(run_classes(run_))
    untrained = sorted({int(c) for c in classes if 0 <= int(c) < K and int(c) not in held})
    if untrained:
        raise GuidanceError(
            f"--class {','.join(map(str, untrained))}: no training example had that class; the data of "
            f"{run_.path} hold classes {_spans(sorted(held))} (of the network's {K})"
        )


def _spans(ks) -> str:
    """Whole numbers in increasing order as runs: 0-2, 4, 6-9."""
    runs: list[list[int]] = []
    for k in ks:
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
