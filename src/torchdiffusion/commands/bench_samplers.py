"""torchdiffusion bench-samplers: quality against NFE for every sampler and grid, beside diffusers' schedulers."""

from __future__ import annotations

import argparse
import shlex
import sys

from .argtypes import MAX_COUNT, MAX_STEPS, MAX_THREADS, check_output_dir, int_in, nonneg_int, positive_int

HELP = "benchmark samplers x grids x NFE (sliced Wasserstein, energy distance, time) against diffusers"
EXAMPLES = """examples:
  torchdiffusion bench-samplers --case 8gaussians --out bench/8g            # exact denoiser, 2-D
  torchdiffusion bench-samplers --case mixture64 --n 10000 --samplers dpmpp_2m,unipc --grids karras,tuned
  torchdiffusion bench-samplers --run runs/toy --n 2000 --out runs/toy/bench   # a trained run folder
  torchdiffusion bench-samplers --run runs/demo --reference data --features clf:mnist5k --n 500 --nfe 10,20,50
  torchdiffusion bench-samplers --case 8gaussians --no-diffusers --nfe 5,10
Tuned grids are fit on their own seed and stored as <grid-dir>/<sampler>-nfe<N>.json (default: OUT/grids, or
OUT/grids/<case> when several cases share OUT, or RUN/grids for a run folder; several cases under --grid-dir
get a subfolder each); an existing file is reused only when fit for the same case (a run: the same weights)
and fit settings, else refit."""


def _csv(s: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in s.split(",") if v.strip())


def _tuned(a: argparse.Namespace) -> bool:
    return "tuned" in _csv(a.grids)


# Options one kind of benchmark reads: dest -> (does this command line read it?, what reads it). Given where it is
# not read, the option is refused in one line (it would change nothing).
READ_WHEN = {
    "reference": (lambda a: bool(a.run), "a trained run (--run; an analytic case's reference is exact)"),
    "features": (lambda a: bool(a.run), "a trained run (--run; an analytic case is compared in its own space)"),
    "ref_steps": (
        lambda a: bool(a.run) and a.reference == "ode",
        "the ODE reference of a trained run (--run with --reference ode)",
    ),
    **{
        dest: (_tuned, "the tuned grids (--grids with tuned)")
        for dest in ("tune_maxfev", "fit_n", "fit_objective", "stop_short", "grid_dir")
    },
    # --tuned-samplers '' (no sampler tuned) asks for what every command line without tuned grids does
    "tuned_samplers": (lambda a: _tuned(a) or not _csv(a.tuned_samplers), "the tuned grids (--grids with tuned)"),
    "diffusers": (lambda a: not a.no_diffusers, "diffusers' rows, which --no-diffusers drops"),
}


def refuse_duplicates(flag: str, values) -> None:
    """ValueError (exit 2) for a value named twice in a comma list (it would be measured twice)."""
    seen = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{flag} names {v!r} twice; name each once")
        seen.add(v)


def refuse_unread(args: argparse.Namespace) -> None:
    """ValueError (exit 2) for an option given where nothing reads it (READ_WHEN)."""
    from .common import given_options

    for dest, flag in given_options(args).items():
        if dest in READ_WHEN and not READ_WHEN[dest][0](args):
            raise ValueError(f"{flag} changes nothing here: it is read only by {READ_WHEN[dest][1]}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--case", help="analytic case(s): 8gaussians, mixture64 (comma-separated)")
    src.add_argument("--run", help="a trained run folder (case b)")
    p.add_argument("--out", default="bench-samplers", help="output folder: results.md, results.json, plot.png")
    p.add_argument("--n", type=int_in(2, MAX_COUNT), default=20_000, help="samples per row (default 20000)")
    p.add_argument("--nfe", default="5,10,20,50", help="NFE budgets (default 5,10,20,50)")
    p.add_argument("--samplers", help="our samplers (default: all but adaptive, which gets its own rows)")
    p.add_argument("--grids", default="karras,exponential,uniform_t,tuned", help="grids to race")
    p.add_argument("--tuned-samplers", default="dpmpp_2m,dpmpp_3m,unipc", help="samplers that get tuned grids")
    p.add_argument(
        "--tune-maxfev", type=positive_int(1_000_000), default=120, help="grid search evaluations per tuned grid"
    )
    p.add_argument(
        "--fit-n", type=positive_int(MAX_COUNT), default=128, help="starting samples (own seed) the grids are fit on"
    )
    p.add_argument(
        "--fit-objective",
        choices=("auto", "rms", "sw"),
        default="auto",
        help="what a tuned grid minimises: rms distance of each sample to its accurate ODE solution, or sliced "
        "Wasserstein-1 between the two sample sets (default auto: sw for a run whose x0_hat is not clamped - "
        "vectors, signals, latents - and rms for images and volumes)",
    )
    p.add_argument(
        "--stop-short",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tuned grids also fit where their last step stops (a little noise left in; at few steps the full "
        "step to 0 narrows the data's narrow modes); sample/generate then stop there too (default: where x0_hat "
        "is not clamped, as --fit-objective auto)",
    )
    p.add_argument("--grid-dir", help="where tuned grids are read from / written to")
    p.add_argument("--diffusers", default=None, help="diffusers schedulers (default: all, if installed)")
    p.add_argument("--no-diffusers", action="store_true", help="skip diffusers' schedulers")
    p.add_argument("--threads", type=nonneg_int(MAX_THREADS), default=1, help="torch threads (default 1)")
    p.add_argument(
        "--ref-steps", type=positive_int(MAX_STEPS), default=200, help="case b: Heun steps of the reference solve"
    )
    p.add_argument(
        "--reference",
        default="ode",
        choices=["ode", "data"],
        help="case b: compare with a many-step ODE solve (solver error; default) or with the run's "
        "held-out images (sample quality)",
    )
    p.add_argument("--features", help="case b: compare in this feature space (e.g. clf:mnist5k) instead of pixels")


def check_sources(args: argparse.Namespace) -> None:
    """Refuse unknown cases, feature spaces and ones that cannot read the run's samples, and unwritable output
    folders, before anything is sampled."""
    from ..bench.analytic_cases import CASES

    for case in _csv(args.case or "") if not args.run else ():
        if case not in CASES:
            raise ValueError(f"unknown case {case!r}; choose from {', '.join(CASES)}")
    if args.features:
        from ..evaluation.features import get_features

        get_features(args.features)
        if args.run:  # the feature network must read the run's samples (a classifier: images of its channels)
            from ..evaluation.evaluate import refuse_unfit_features
            from ..generate import load_run

            run = load_run(args.run)
            if run.kind != "image" and args.features != "raw":
                raise ValueError(f"--features {args.features} reads images; {run.path} holds {run.kind} data")
            refuse_unfit_features(run, [args.features])
    from ..bench.harness import RESULT_FILES, RESULT_RECORD

    check_output_dir(args.out, writes=RESULT_FILES, record=RESULT_RECORD)  # never over a user's own results.md
    if args.grid_dir:
        check_output_dir(args.grid_dir)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..bench import diffusers_driver
    from ..bench.harness import GRIDS, OUR_SAMPLERS, BenchConfig, races, write_results
    from ..samplers import SAMPLERS
    from .common import given_options

    torch.set_num_threads(max(1, args.threads))
    try:
        nfes = tuple(positive_int(MAX_STEPS)(v) for v in _csv(args.nfe))
    except argparse.ArgumentTypeError:
        nfes = ()
    if not nfes:
        raise ValueError(f"--nfe needs positive integers up to {MAX_STEPS}, e.g. 5,10,20,50; got {args.nfe!r}")
    refuse_unread(args)
    for flag, value, what in (("--case", args.case, "case"), ("--samplers", args.samplers, "sampler"),
                              ("--diffusers", args.diffusers, "diffusers scheduler")):  # fmt: skip
        if value is not None and not _csv(value):
            raise ValueError(f"{flag} names no {what}; leave it out for the default, or name one")
    refuse_duplicates("--nfe", nfes)
    for flag, value in (("--case", args.case), ("--samplers", args.samplers), ("--grids", args.grids)):
        refuse_duplicates(flag, _csv(value or ""))
    check_sources(args)
    samplers = _csv(args.samplers) if args.samplers else OUR_SAMPLERS
    if "adaptive" in samplers:
        raise ValueError(
            "--samplers adaptive: the adaptive solver chooses its own steps and gets its own rows per tolerance "
            "(not a grid per NFE budget); leave it out of --samplers"
        )
    for s in samplers + _csv(args.tuned_samplers):
        if s not in SAMPLERS:
            raise ValueError(f"unknown sampler {s!r}; choose from {', '.join(SAMPLERS)}")
    grids = _csv(args.grids)
    if not grids:
        raise ValueError(f"--grids needs at least one of {', '.join(GRIDS)}")
    for g in grids:
        if g not in GRIDS:
            raise ValueError(f"unknown grid {g!r}; choose from {', '.join(GRIDS)}")
    dif = () if args.no_diffusers else (_csv(args.diffusers) if args.diffusers else tuple(diffusers_driver.SCHEDULERS))
    for d in dif:
        if d not in diffusers_driver.SCHEDULERS:
            raise ValueError(f"unknown diffusers scheduler {d!r}; choose from {', '.join(diffusers_driver.SCHEDULERS)}")
    if args.n < 2:
        raise ValueError("--n must be >= 2")
    cfg = BenchConfig(
        nfes=nfes,
        n=args.n,
        samplers=samplers,
        grids=grids,
        tuned_samplers=_csv(args.tuned_samplers),
        tune_maxfev=args.tune_maxfev,
        fit_n=args.fit_n,
        fit_objective=args.fit_objective,
        stop_short=args.stop_short,
        diffusers=dif,
    )
    if "tuned" in grids and not any(races(s, "tuned", cfg) for s in samplers):  # its options would change nothing
        raise ValueError(
            f"nothing to race on the tuned grid: --tuned-samplers {args.tuned_samplers!r} tunes none of --samplers "
            f"{','.join(samplers)} (deterministic ones only); add one, or drop tuned from --grids"
        )
    if "tuned_samplers" in given_options(args):  # each one named must get a tuned grid, or it changes nothing
        from ..samplers import DETERMINISTIC

        for s in cfg.tuned_samplers:
            if s == "adaptive" or s not in DETERMINISTIC:
                why = "chooses its own steps" if s == "adaptive" else "is stochastic (tuned grids fit ODE solvers)"
                raise ValueError(f"--tuned-samplers {s}: {s} {why}, so it gets no tuned grid; leave it out")
            if s not in samplers:
                raise ValueError(f"--tuned-samplers {s}: {s} is not among --samplers, so its tuned grid would not race")
    command = "torchdiffusion " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    from ..progress import step_bar

    bar = step_bar(None, "bench-samplers", "row")
    log = lambda m: (bar.write(m, file=sys.stdout), bar.update(1))  # a line per measured row
    with bar:
        rows = _measure(args, cfg, log)
    write_results(rows, cfg, args.out, command)
    print(f"wrote {args.out}/results.md, results.json, plot.png")
    return 0


def _measure(args: argparse.Namespace, cfg, log) -> list:
    rows = []
    if args.run:
        from ..bench.run_case import run_trained

        rows = run_trained(
            args.run,
            cfg,
            args.grid_dir,
            ref_steps=args.ref_steps,
            reference=args.reference,
            features=args.features,
            log=log,
        )
    else:
        from ..bench.analytic_cases import run_analytic

        cases = _csv(args.case or "8gaussians,mixture64")
        for case in cases:  # one case: OUT/grids; several: OUT/grids/<case>
            grid_dir = args.grid_dir or f"{args.out}/grids"
            grid_dir = f"{grid_dir}/{case}" if len(cases) > 1 else grid_dir
            rows += run_analytic(case, cfg, grid_dir, log)
    return rows
