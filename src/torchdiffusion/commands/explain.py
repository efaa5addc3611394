"""torchdiffusion explain: pictures of how diffusion works, drawn from the library itself (see explain.py)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..io import write_json
from .argtypes import MAX_STEPS, check_output_file, float_in, int_in, nonneg_int, positive_int
from .common import add_sampling_arguments, given_options, sample_set_keys, sample_sets

WHAT = (
    "forward",
    "schedules",
    "trajectory",
    "loss",
    "field",
    "ablation",
    "shortcuts",
    "table-forward",
    "sequence-forward",
    "volume-forward",
)
MAX_SIGMA = 1e6  # --sigmas: beyond any trained range (a 1000-step cosine schedule ends near 2e4); 1e200 overflowed
MAX_SIGNAL_SERIES = 10  # curves in each panel of the signals' forward strip (one colour each)
MAX_LIM = 1e4  # --lim: the field's half-width (1e308 drew a blank picture)
MANIFESTS = True  # each file written gets <file>.manifest.json (provenance.py)
HELP = (
    "pictures of the ideas: forward | schedules | trajectory | loss | field | ablation | shortcuts | table-forward"
    " | sequence-forward | volume-forward"
)
EXAMPLES = """examples:
  torchdiffusion explain forward --data mnist5k --t 0 100 500 999        # x0 -> noise, linear vs cosine
  torchdiffusion explain forward runs/demo        # its own process: schedule and T (or x0 + sigma n at --sigmas)
  torchdiffusion explain forward --data ucr:GunPoint --t 0 100 300 500 700 900   # signals: curves at each t
  torchdiffusion explain schedules --out schedules.png                    # alpha_bar, SNR, sigma curves
  torchdiffusion explain trajectory runs/demo --sampler heun --steps 12   # GIF (+ MP4) and PNG strip
  torchdiffusion explain loss runs/demo                                   # loss by noise level over training
  torchdiffusion explain field runs/toy --sigmas 0.1 0.5 2                # 2-D denoiser field, learned vs exact
  torchdiffusion explain ablation runs/demo                               # DDPM without re-added noise, one shot
  torchdiffusion explain table-forward --data sklearn:wine --sigmas 0.01 0.5 1 2 8   # a table's marginals
  torchdiffusion explain table-forward runs/wine --sigmas 0.1 1 4         # + its sampler's reverse process
  torchdiffusion explain sequence-forward runs/text --steps 8             # text masked, then unmasked
  torchdiffusion explain volume-forward --data shapes3d --sigmas 0.1 0.5 1 2 5   # a volume's slices noised
  torchdiffusion explain shortcuts --images 300000    # curved teacher vs reflowed vs consistency jump (8 Gaussians)
Output goes to --out (default RUN/explain/<what>.png, or explain-<what>.png without a run)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=WHAT, help="which picture")
    p.add_argument("run", nargs="?", help="run folder (needed by trajectory, loss, field, ablation)")
    p.add_argument("--out", help="output PNG (trajectory also writes a GIF beside it)")
    p.add_argument("--weights", default="ema", choices=["ema", "model"], help="EMA (default) or raw weights")
    g = p.add_argument_group("forward / schedules")
    g.add_argument(
        "--t",
        type=nonneg_int(MAX_STEPS),
        nargs="+",
        default=[0, 50, 100, 200, 300, 500, 700, 999],
        help="timesteps of the forward strip (0-based, < T; with a discrete run, < its own T, default spread over it)",
    )
    g.add_argument(
        "--schedules",
        nargs="+",
        default=None,
        help="variance schedules (forward: linear cosine, with a run only its own; schedules: linear cosine sigmoid)",
    )
    g.add_argument(
        "--T",
        type=int_in(2, MAX_STEPS),
        default=1000,
        help="number of timesteps (default 1000; forward with a run: only its own T)",
    )
    g.add_argument(
        "--data",
        default="mnist5k",
        help="the data drawn without a run: a source (mnist5k, ucr:GunPoint, sklearn:wine, shapes3d ...) or your own "
        "files - a folder of images (shown at 64 x 64) or WAV files, an array (.npy/.npz/.h5), a CSV (a table for "
        "table-forward, one series per row otherwise), a NIfTI file or TIFF z-stack for volume-forward",
    )
    g.add_argument(
        "--images",
        type=positive_int(10**9),
        default=None,
        help="forward: images in the strip (default 4, at most 1024); shortcuts: training images of each toy "
        "student (default 300000)",
    )
    g = p.add_argument_group("field (2-D runs)")
    g.add_argument(
        "--sigmas",
        type=float_in(0.0, MAX_SIGMA),
        nargs="+",
        default=[0.05, 0.3, 1.0, 3.0],
        help=f"noise levels to draw (each in (0, {MAX_SIGMA:g}]; forward: of a continuous-process run, x0 + sigma n, "
        "in [0, its sigma_max], 0 drawing the clean data)",
    )
    g.add_argument(
        "--lim",
        type=float_in(0.0, MAX_LIM, lo_open=True),
        default=4.0,
        help=f"half-width of the plotted square (default 4, at most {MAX_LIM:g})",
    )
    g = p.add_argument_group("ablation")
    g.add_argument(
        "--ddpm-steps",
        type=positive_int(MAX_STEPS),
        default=100,
        help="DDPM steps of the ablation rows (default 100; a distilled student's rows walk its own grid)",
    )
    add_sampling_arguments(p)


def _out(args: argparse.Namespace, default_dir: Path | None, sidecars: tuple[str, ...] = ()) -> Path:
    from ..config import ConfigError

    out = (
        Path(args.out)
        if args.out
        else (default_dir / f"{args.what}.png" if default_dir else Path(f"explain-{args.what}.png"))
    )
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out must end in .png, got {out}")
    return check_output_file(out, sidecars)


# The options each picture reads (argparse dests; "sampling" stands for every flag of add_sampling_arguments).
# Any other option given is refused in one line: it would change nothing in the picture.
_READS = {
    "forward": {"run", "data", "t", "T", "seed", "images", "schedules", "sigmas"},
    "schedules": {"T", "schedules"},
    "trajectory": {"run", "weights", "sampling"},
    "ablation": {"run", "weights", "sampling", "ddpm_steps"},
    "field": {"run", "weights", "steps", "grid", "rho", "spacing", "sample_set", "sigmas", "lim"},
    "loss": {"run"},
    "shortcuts": {"images", "seed"},
    "table-forward": {"run", "weights", "data", "sigmas", "seed"},
    "volume-forward": {"run", "data", "sigmas", "seed"},  # the data alone: no model is drawn
    "sequence-forward": {"run", "weights", "steps", "seed"},
}
_SAMPLING = {"sampler", "steps", "grid", "rho", "spacing", "n", "seed", "sample_set"}  # one batch: no --batch-size
FIELD_SETS = ("sample.steps", "sample.grid", "sample.rho", "sample.spacing")  # what the field's Heun paths read
FIELD_MAX_STEPS = 24  # the field's Heun paths: a run's longer default is shortened to this


def reads_run(what: str) -> bool:
    """Whether the picture ``what`` takes a run folder (schedules and shortcuts draw without one)."""
    return "run" in _READS.get(what, {"run"})


def _reads(what: str, dests) -> set[str]:
    """The argparse dests the picture ``what`` reads, out of ``dests`` (the sampler settings' among them)."""
    reads = set(_READS[what]) | {"out"}
    if "sampling" in reads:
        reads |= _SAMPLING | {d for d in dests if d.startswith("setting_")}
    return reads


def options_read(what: str) -> set[str]:
    """The option strings (--t, --steps, ...) the picture ``what`` reads."""
    p = argparse.ArgumentParser()
    add_arguments(p)
    reads = _reads(what, [a.dest for a in p._actions])
    return {s for a in p._actions if a.dest in reads for s in a.option_strings}


def refuse_unread(args: argparse.Namespace) -> None:
    """One line for an option (or a run folder) the picture asked for does not read."""
    from ..config import ConfigError

    reads, given = _reads(args.what, vars(args)), given_options(args)
    if args.run and "run" not in reads:
        raise ConfigError(f"'explain {args.what}' reads no run folder; drop {args.run}")
    if args.run and "data" in given:
        raise ConfigError(f"--data is drawn without a run; 'explain {args.what} RUN' draws the run's own data")
    for dest, flag in given.items():
        if dest not in reads:
            raise ConfigError(f"'explain {args.what}' does not read {flag}")
    if "sigmas" in given and args.what != "forward" and 0 in args.sigmas:  # forward: 0 is x_0, its strip's start
        raise ConfigError(
            f"--sigmas 0: 'explain {args.what}' draws noise levels in (0, {MAX_SIGMA:g}] (only 'explain forward' of "
            "a continuous run draws sigma = 0, the clean data)"
        )
    if args.what == "table-forward" and not args.run and "weights" in given:
        raise ConfigError(f"'explain {args.what}' without a run draws no model: --weights is read with a run only")
    sets = sample_sets(args)
    if args.what == "field":  # Heun paths on the run's grid: no sampler, settings, seeds or batch of its own
        for key, a in sets:
            if key not in FIELD_SETS:
                raise ConfigError(
                    f"--set {a.strip()} changes nothing: 'explain field' draws Heun paths and reads only "
                    f"{', '.join(FIELD_SETS)}"
                )
    elif "sample.batch_size" in sample_set_keys(args) and args.what in ("trajectory", "ablation"):
        raise ConfigError(
            f"--set sample.batch_size changes nothing: 'explain {args.what}' draws its images in one batch"
        )


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError

    refuse_unread(args)
    if args.what in ("table-forward", "volume-forward"):
        files = _table_forward(args) if args.what == "table-forward" else _volume_forward(args)
    elif args.what in ("schedules", "forward"):
        files = _schedules(args) if args.what == "schedules" else _forward(args)
    elif args.what == "shortcuts":
        files = _shortcuts(args)
    elif not args.run:
        raise ConfigError(f"'explain {args.what}' needs a run folder, e.g. 'explain {args.what} runs/demo'")
    elif args.what == "sequence-forward":
        files = _sequence_forward(args)
    elif args.what == "loss":
        files = _loss(args)
    else:
        files = _sampled(args)
    for p in files:
        print(p)
    return 0


def refuse_run_kind(what: str, path, kind: str | None, data_shape: tuple, discrete: str | None) -> None:
    """ExplainError (one line) when the picture ``what`` cannot be drawn from a run of this kind (run.json's
    ``kind`` and ``data_shape``; ``discrete``: its config's diffusion.discrete) - the command, after loading the
    run, and the studio, before queueing the job, ask the same."""
    from .. import explain as ex
    from ..kinds import DISCRETE_KINDS

    data_shape = tuple(data_shape)
    if what in ("trajectory", "ablation", "field") and kind in DISCRETE_KINDS:  # no one continuous path
        raise ex.ExplainError(
            f"'explain {what}' draws the sampler's path through continuous data (images, signals, volumes, "
            f"points); {path} holds {kind} data (see 'explain {kind}-forward {path}', which draws its forward process "
            "and its sampler's reverse one)"
        )
    if what == "field" and data_shape != (2,):
        raise ex.ExplainError(f"the field picture needs a 2-D run; {path} holds data of shape {data_shape}")
    if what == "sequence-forward" and (kind != "sequence" or discrete != "masked"):
        raise ex.ExplainError(f"sequence-forward needs a masked-diffusion sequence run; {path} holds {kind} data")
    needs = {"forward": ("image", "signal"), "table-forward": ("table",), "volume-forward": ("volume",)}.get(what)
    if needs and kind not in needs:
        raise ex.ExplainError(f"'explain {what}' draws {' or '.join(needs)} data; {path} holds {kind} data")


def _load_run(args: argparse.Namespace):
    """The run folder of ``args`` (its --weights), refused in one line where the picture asked for cannot be drawn
    from its kind (:func:`refuse_run_kind`)."""
    from ..generate import load_run

    run_ = load_run(args.run, weights=args.weights)
    refuse_run_kind(args.what, run_.path, run_.kind, run_.data_shape, run_.config.diffusion.discrete)
    return run_


def _figure_bar(args: argparse.Namespace):
    """The bar of a picture drawn without sampling: one unit per figure."""
    from ..progress import step_bar

    return step_bar(1, f"explain {args.what}", "figure")


def _schedules(args: argparse.Namespace) -> list:
    from .. import explain as ex

    with _figure_bar(args) as bar:
        ex.plot_schedules(p := _out(args, None), T=args.T, schedules=args.schedules or ("linear", "cosine", "sigmoid"))
        bar.update(1)
    return [p]


def data_config(spec: str, what: str):
    """The DataConfig --data names for the picture ``what``: a source by name, or the path of the user's own files
    read by the source their kind takes. Arrays in their own units (kelvins, counts) are mapped by their range
    (``data.scale=minmax``), and so are images only when they cannot be read as pixels (:func:`load_explained`);
    images of any sizes are shown at 64 x 64: a picture of the data, not a training set.

    Raises:
        ConfigError: neither a source nor an existing file or folder, or files no source reads (one line).
    """
    from ..config import ConfigError, DataConfig
    from ..data import SOURCES
    from ..data.files import HDF5_SUFFIXES, IMAGE_SUFFIXES
    from ..data.volume import NIFTI_SUFFIXES, TIFF_SUFFIXES

    if spec in SOURCES:
        return DataConfig(source=spec, volume_count=8) if spec == "shapes3d" else DataConfig(source=spec)
    if not spec.strip():
        raise ConfigError("--data is empty: name a data source (e.g. mnist5k) or a file or folder")
    p = Path(spec).expanduser()
    name = p.name.lower()
    volume = what == "volume-forward"
    if p.is_dir():
        names = {f.name.lower() for f in p.rglob("*") if f.is_file()}
        if volume and any(n.endswith(NIFTI_SUFFIXES) for n in names):
            return DataConfig(source="nifti", path=str(p))
        if volume and any(n.endswith(TIFF_SUFFIXES) for n in names):
            return DataConfig(source="tiff_stack", path=str(p))
        if not volume and any(n.endswith(tuple(IMAGE_SUFFIXES)) for n in names):
            return DataConfig(source="folder", path=str(p), image_size=(64, 64))
        if not volume and any(n.endswith(".wav") for n in names):
            return DataConfig(source="wav", path=str(p))
        raise ConfigError(f"--data {spec}: a folder without the files 'explain {what}' reads")
    if p.is_file():
        if name.endswith((".npy", ".npz", *HDF5_SUFFIXES)):
            return DataConfig(source="array", path=str(p), scale="minmax")
        if name.endswith((".csv", ".csv.gz")) and not volume:
            return DataConfig(source="csv" if what == "table-forward" else "signal_csv", path=str(p))
        if volume and name.endswith(NIFTI_SUFFIXES):
            return DataConfig(source="nifti", path=str(p))
        if volume and name.endswith(TIFF_SUFFIXES):
            return DataConfig(source="tiff_stack", path=str(p))
        raise ConfigError(f"--data {spec}: 'explain {what}' does not read {p.suffix or 'such'} files")
    raise ConfigError(f"--data {spec}: neither a data source ({', '.join(list(SOURCES)[:4])} ...) nor a file or folder")


def load_explained(cfg):
    """The data of ``cfg`` (:func:`data_config`): a folder of images read as pixels - each file by its own format's
    range, 8- and 16-bit ones side by side - or, where a file's values are not pixels (float TIFFs beyond [0, 1],
    integers beyond 16 bits), as the numbers stored in them, mapped by the folder's range (``data.scale=minmax``)."""
    from dataclasses import replace

    from ..data import DataError, load_data

    try:
        return load_data(cfg)
    except DataError as e:
        if cfg.source != "folder" or cfg.scale != "auto" or "data.scale" not in str(e):
            raise
        return load_data(replace(cfg, scale="minmax"))


REVERSE_ROWS = 1000  # the model's rows drawn for the reverse block of 'explain table-forward RUN'


def _table_forward(args: argparse.Namespace) -> list:
    """A table's marginals under the forward process, from a run's data or --data (e.g. sklearn:wine); for a run,
    its sampler's reverse process at the same noise levels below them."""
    from .. import explain as ex
    from ..data import load_data

    run_ = None
    if args.run:
        run_ = _load_run(args)
        data, out = load_data(run_.config.data, seed=run_.config.train.seed), _out(args, run_.path / "explain")
    else:
        data, out = load_explained(data_config(args.data, "table-forward")), _out(args, None)
    if data.kind != "table":
        raise ex.ExplainError(f"table-forward needs table data (e.g. --data sklearn:wine), got {data.kind} data")
    reverse = None
    if run_ is not None:  # its sampler's reverse process, seen at the same levels
        from ..progress import step_bar
        from ..tabular import reverse_states, sampling_plan_of

        seed, sample = args.seed or 0, run_.config.sample
        plan = sampling_plan_of(run_.model, sample, run_.path / "grids")
        steps = len(plan[0]) - 1
        with step_bar(steps, f"explain {args.what} (the model's {sample.sampler}, {steps} steps)") as bar:
            seeds = range(seed, seed + REVERSE_ROWS)
            reverse = reverse_states(run_.model, seeds, sample, args.sigmas, lambda: bar.update(1), plan=plan)
    with _figure_bar(args) as bar:
        ex.table_forward(data.x, data.schema, args.sigmas, seed=args.seed or 0, reverse=reverse, path=out)
        bar.update(1)
    return [out]


def _volume_forward(args: argparse.Namespace) -> list:
    """One volume of a run's data or --data (e.g. shapes3d) under the forward process, slice by slice."""
    from .. import explain as ex
    from ..data import load_data

    if args.run:
        run_ = _load_run(args)
        data, out = load_data(run_.config.data, seed=run_.config.train.seed), _out(args, run_.path / "explain")
    else:
        data, out = load_explained(data_config(args.data, "volume-forward")), _out(args, None)
    if data.kind != "volume":
        raise ex.ExplainError(f"volume-forward needs volume data (e.g. --data shapes3d), got {data.kind} data")
    with _figure_bar(args) as bar:
        ex.volume_forward(data.x[(args.seed or 0) % len(data)], args.sigmas, seed=args.seed or 0, path=out)
        bar.update(1)
    return [out]


def _sequence_forward(args: argparse.Namespace) -> list:
    """A held-out sequence of a masked-diffusion run masked at several t, and a sample being unmasked."""
    from .. import explain as ex
    from ..data import load_data
    from ..kinds import schema_of
    from ..progress import step_bar

    run_ = _load_run(args)
    cfg = run_.config
    data = load_data(cfg.data, "holdout" if cfg.data.holdout else "train", cfg.train.seed)
    out = _out(args, run_.path / "explain")
    steps = args.steps or 8
    with step_bar(steps, f"explain {args.what}") as bar:
        ex.sequence_forward(
            run_.model,
            schema_of(run_.info, "sequence"),
            data.x[0],
            (0.0, 0.25, 0.5, 0.75, 1.0),
            steps=steps,
            seed=args.seed or 0,
            path=out,
        )
        bar.update(steps)
    return [out]


STRIP_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)  # a discrete run's default --t: these fractions of T, and T - 1
STRIP_SIGMA_FLOOR = 0.01  # a continuous run's default levels start at max(sigma_min, this): lower ones look like x_0


def run_forward_process(run_):
    """The forward process a run was trained on (:class:`explain.ForwardProcess`): its discrete schedule and T, or
    its continuous process - rectified flow for the flow parameterization, x_0 + sigma n otherwise."""
    from .. import explain as ex

    vp = getattr(run_.model, "process", None)
    if vp is not None:
        return ex.ForwardProcess("discrete", vp)
    return ex.ForwardProcess("flow" if run_.config.diffusion.parameterization == "flow" else "ve")


def _forward_levels(args: argparse.Namespace, proc, where: str, sigma_range=(0.002, 80.0)) -> list:
    """The levels of the strip: timesteps --t of a discrete process (default: STRIP_FRACTIONS of its T, and T - 1),
    noise levels --sigmas of a continuous one (default: 0, then 7 evenly spaced in log sigma up to sigma_max);
    an option the process does not read, or one that would draw another process than ``where``'s own, in one
    line."""
    import torch

    from ..config import ConfigError

    given = given_options(args)
    if proc.kind != "discrete":
        for dest in ("t", "schedules", "T"):
            if dest in given:
                raise ConfigError(
                    f"{where} runs a continuous process ({proc.title}): it has no timesteps, schedule or T; drop "
                    f"{given[dest]} and give its noise levels with --sigmas"
                )
        if "sigmas" in given:  # within the run's own range (0: the data itself, the default strip's first column)
            above = [s for s in args.sigmas if s > sigma_range[1]]
            if above:
                raise ConfigError(
                    f"--sigmas {above[0]:g} lies above this run's noise range (sigma up to {sigma_range[1]:g}); "
                    f"its forward process ends there"
                )
            return list(args.sigmas)
        lo, hi = max(sigma_range[0], STRIP_SIGMA_FLOOR), sigma_range[1]
        return [
            0.0,
            *(float(f"{s:.4g}") for s in torch.logspace(math.log10(lo), math.log10(hi), 7, dtype=torch.float64)),
        ]
    vp = proc.vp
    if "sigmas" in given:
        raise ConfigError(
            f"{where} draws a discrete process ({proc.title}): its levels are timesteps --t, not --sigmas"
        )
    if args.schedules and list(args.schedules) != [vp.schedule]:
        raise ConfigError(
            f"{where} draws its own {vp.schedule} schedule; --schedules {' '.join(args.schedules)} would draw "
            "another: drop it (or draw a schedule without a run: --data)"
        )
    if "T" in given and args.T != vp.T:
        raise ConfigError(
            f"{where} draws its own T = {vp.T}; --T {args.T} would draw another: drop it (or draw without a run: "
            "--data)"
        )
    if "t" in given:
        return list(args.t)
    return sorted({int(f * vp.T) for f in STRIP_FRACTIONS} | {vp.T - 1})


def _forward(args: argparse.Namespace) -> list:
    """The forward strip: a run's data under the run's own forward process (its schedule and T, or its continuous
    process; a latent run's latents decoded by its autoencoder), or --data under DDPM schedules (--schedules,
    --T)."""
    from .. import explain as ex
    from ..config import ConfigError
    from ..data import load_data
    from ..provenance import note_extra

    codec = None
    if args.run:
        run_ = _load_run(args)
        codec = getattr(run_, "codec", None)  # a latent run: its images encoded, noised, and decoded to be drawn
        if codec is not None:
            from ..latent import with_pixel_map

            data = load_data(with_pixel_map(run_.config.data, codec), seed=run_.config.train.seed)
        else:
            data = load_data(run_.config.data, seed=run_.config.train.seed)
        out = _out(args, run_.path / "explain")
        proc = run_forward_process(run_)
        sigma_range = (float(run_.model.sigma_min), float(run_.model.sigma_max))
        levels = _forward_levels(args, proc, str(run_.path), sigma_range)
        processes = [proc]
    else:
        if "sigmas" in given_options(args):
            raise ConfigError(
                "'explain forward' without a run draws DDPM schedules at timesteps --t; --sigmas is read with a run "
                "of a continuous process"
            )
        data = load_explained(data_config(args.data, "forward"))
        out = _out(args, None)
        levels, processes = list(args.t), None
    if data.kind == "signal":
        if args.schedules and len(args.schedules) > 1:
            raise ConfigError(f"the forward strip of signals draws one schedule, got {' '.join(args.schedules)}")
        if args.images is not None and args.images > MAX_SIGNAL_SERIES:
            raise ConfigError(
                f"the forward strip of signals draws at most {MAX_SIGNAL_SERIES} series, got {args.images}"
            )
        proc = processes[0] if processes else ex.ForwardProcess("discrete", _vp(args.schedules or ["cosine"], args.T))
        proc.check(levels)
        _refuse_more_than_held("series", args.images, len(data))
        note_extra(forward=[proc.record(levels)])  # one layout for every kind: a list of processes
        with _figure_bar(args) as bar:
            series = data.x[: args.images or 3]
            ex.signal_forward(series, levels, seed=args.seed or 0, path=out, process=proc)
            bar.update(1)
        return [out]
    if data.kind != "image":
        raise ex.ExplainError("the forward strip needs image or signal data")
    if processes is None:
        processes = [
            ex.ForwardProcess("discrete", _vp([name], args.T)) for name in args.schedules or ("linear", "cosine")
        ]
    for proc in processes:
        proc.check(levels)
    latents = {"latents_decoded_by": str(codec.path)} if codec is not None else {}
    note_extra(forward=[{**proc.record(levels), **latents} for proc in processes])
    _refuse_more_than_held("images", _strip_images(args) if args.images is not None else None, len(data))
    with _figure_bar(args) as bar:
        images = data.x[: _strip_images(args)]
        images = codec.encode(images) if codec is not None else images  # the latents z the run diffuses
        decode = codec.decode if codec is not None else None
        ex.forward_strip(images, levels, seed=args.seed or 0, path=out, processes=processes, decode=decode)
        bar.update(1)
    return [out]


def _vp(schedules, T: int):
    """The DiscreteVP of the one schedule named (an unknown name refused in one line)."""
    from ..config import ConfigError
    from ..process import DiscreteVP

    try:
        return DiscreteVP(schedules[0], T)
    except (ValueError, KeyError) as e:
        raise ConfigError(f"--schedules: {e}") from None


def _refuse_more_than_held(what: str, asked: int | None, held: int) -> None:
    """ConfigError (one line) for --images asking the strip for more examples than the data hold (it drew fewer)."""
    from ..config import ConfigError

    if asked is not None and asked > held:
        raise ConfigError(f"--images {asked}: the data hold {held} {what}; ask for at most {held}")


def _strip_images(args: argparse.Namespace) -> int:
    from ..config import ConfigError

    if args.images is not None and args.images > 1024:
        raise ConfigError(f"--images of the forward strip must be at most 1024, got {args.images}")
    return args.images or 4


def _shortcuts(args: argparse.Namespace) -> list:
    """Train the toy students (reflow, consistency distillation) of the exact 8-Gaussians teacher; one figure."""

    from .. import explain as ex
    from ..shortcuts.toy import toy_numbers, train_toy_shortcuts

    out = _out(args, None, sidecars=(".json",))
    numbers_path = out.with_suffix(".json")
    toy = train_toy_shortcuts(args.images or 300_000, seed=args.seed or 0, progress=True)
    with _figure_bar(args) as bar:
        numbers = toy_numbers(toy, seed=args.seed or 0)
        ex.plot_shortcuts(toy, out, seed=args.seed or 0, numbers=numbers)
        bar.update(1)
    record = {"images_per_student": args.images or 300_000, "seed": args.seed or 0, "straightness": numbers}
    write_json(record, numbers_path)
    return [out, numbers_path]


def _loss(args: argparse.Namespace) -> list:
    from .. import explain as ex

    out = _out(args, Path(args.run) / "explain")
    _note_run_folder(Path(args.run))
    with _figure_bar(args) as bar:
        ex.plot_loss_by_noise(args.run, out)
        bar.update(1)
    return [out]


def _note_run_folder(path: Path) -> None:
    """The run whose metrics a picture draws, for its manifest (path, id, config sha256; no weights: the picture
    reads metrics.jsonl, which the manifest's inputs record). Nothing for a metrics file outside a run folder."""
    import json
    from types import SimpleNamespace

    from ..provenance import note_run
    from ..training.run_folder import saved_config

    cfg = saved_config(path)  # None: no config, or a damaged one (the picture needs only the metrics)
    if cfg is None:
        return
    try:
        info = json.loads((path / "run.json").read_text())
    except (OSError, ValueError):
        info = {}
    note_run(SimpleNamespace(path=path, config=cfg, info=info if isinstance(info, dict) else {}, weights_file=None))


def _sampled(args: argparse.Namespace) -> list:
    """trajectory, ablation and field: pictures that sample the run (a bar over the sampler steps)."""
    from dataclasses import replace

    from .. import explain as ex
    from ..config import ConfigError, checked_sample
    from ..generate import clamps_x0, make_grid_sigmas
    from ..progress import step_bar
    from .common import sample_config_from_args

    run_ = _load_run(args)
    sample = sample_config_from_args(run_.config.sample, args, run_)
    checked_sample(run_.config, sample)
    classes = run_.config.model.num_classes > 0
    if not (classes and sample.labels != "none"):  # every image drawn with the null conditioning
        for key in ("sample.guidance", "sample.guidance_rescale", "sample.guidance_interval"):
            if key in sample_set_keys(args):  # D_u + w (D_u - D_u) = D_u
                raise ConfigError(
                    f"--set {key} changes nothing: these images have no conditioning to guide toward "
                    + (
                        "(sample.labels=none); add --set sample.labels=cycle or random"
                        if classes
                        else f"('explain {args.what}' draws a context or text run's images without one)"
                    )
                )
    if args.what == "trajectory":  # guided as `sample` guides, on the run's grid (with no conditioning: no CFG)
        from ..guidance import refuse_interval_off_run_grid

        conditioned = classes and sample.labels != "none"
        refuse_interval_off_run_grid(run_, sample if conditioned else replace(sample, guidance=1.0))
    limit = run_.config.objective.max_steps
    if args.what == "ablation" and limit > 0 and "ddpm_steps" in given_options(args):
        raise ConfigError(
            f"--ddpm-steps changes nothing: {args.run} is a student distilled for at most {limit} sampling steps, "
            f"and its DDPM rows walk its own grid ({sample.steps} steps), the levels it was trained for"
        )
    out = _out(args, run_.path / "explain", sidecars=(".gif", ".mp4") if args.what == "trajectory" else ())
    if args.n is not None or "sample.n" in sample_set_keys(args):  # --n, or --set sample.n
        n = sample.n
    else:
        n = {4: 16, 3: 16, 2: 4}.get(len(run_.data_shape), 500)
    seeds = list(range(sample.seed, sample.seed + n))
    if args.what == "trajectory":
        with step_bar(sample.steps, f"explain trajectory ({sample.sampler})") as bar:
            res = ex.denoising_trajectory(
                run_.model,
                sample,
                run_.data_shape,
                seeds,
                gif=out.with_suffix(".gif"),
                png=out,
                callback=bar.step,
                codec=run_.codec,
                grid_dir=run_.path / "grids",
            )
        return res["files"]
    if args.what == "ablation":
        # a student's DDPM rows walk its own grid, within the steps it was distilled for (explain.ablation)
        ddpm_steps = None if limit > 0 else args.ddpm_steps
        with step_bar(2 * (ddpm_steps or sample.steps) + sample.steps, "explain ablation (four samplers)") as bar:
            ex.ablation(
                run_.model,
                sample,
                run_.data_shape,
                seeds,
                ddpm_steps=ddpm_steps,
                path=out,
                callback=bar.step,
                codec=run_.codec,
                grid_dir=run_.path / "grids",
            )
        return [out]
    from ..data import load_data

    data = load_data(run_.config.data, seed=run_.config.train.seed).x[:3000]
    toy = run_.config.data.toy if run_.config.data.source == "toy" else None
    exact, label = ex.exact_denoiser_for(data, toy)
    asked = args.steps is not None or "sample.steps" in sample_set_keys(args)
    if asked and sample.steps > FIELD_MAX_STEPS:  # the run's own longer default is shortened without a word
        raise ex.ExplainError(
            f"'explain field' draws its Heun paths in at most {FIELD_MAX_STEPS} steps, got {sample.steps}"
        )
    traj_sample = replace(sample, steps=min(sample.steps, FIELD_MAX_STEPS))
    if traj_sample.steps < sample.steps and sample.grid == "tuned":  # fitted at the run's steps, not these
        traj_sample = replace(traj_sample, grid="auto")
    clip = clamps_x0(traj_sample, run_.data_shape, run_.codec)
    traj = make_grid_sigmas(run_.model, traj_sample, clamped=clip, grid_dir=run_.path / "grids")
    with step_bar((len(traj) - 1) * (2 if exact is not None else 1), "explain field (Heun paths)") as bar:
        D = run_.model.bind(None)
        ex.plot_field(
            D, exact, args.sigmas, traj, data=data, exact_label=label, lim=args.lim, path=out, callback=bar.step
        )
    from ..config import SamplerSettings
    from ..provenance import note_sampling

    paths = replace(traj_sample, sampler="heun", settings=SamplerSettings())  # what the paths walked, on which grid
    note_sampling(paths, range(ex.FIELD_PATHS), grid_used={"grid": traj_sample.grid, "sigmas": traj.tolist()})
    return [out]
