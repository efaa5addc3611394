"""torchdiffusion outpaint: grow the canvas of images on any side and let a trained run fill the new border."""

from __future__ import annotations

import argparse

from .argtypes import MAX_PIXELS, MAX_STEPS, nonneg_int, positive_int
from .inpaint import add_class_argument, add_input_arguments

MANIFESTS = True  # each file written gets <file>.manifest.json (provenance.py)
HELP = "grow images on any side (--left/--right/--top/--bottom pixels) and fill the new area; forecast signals"
EXAMPLES = """examples:
  torchdiffusion outpaint runs/demo --right 8 --bottom 8            # 28x28 digits -> 36x36
  torchdiffusion outpaint runs/demo --left 4 --right 4 --resample 5 --jump 3 --images a.png
The network only knows images of its training size, so the larger canvas is denoised in overlapping windows of
that size whose estimates are averaged (MultiDiffusion); --stride sets the window step. Output rows: original
(padded in grey), result.
Signals (forecasting): each series grows by --right points, --samples continuations from consecutive seeds,
drawn as median and 25-75 / 5-95 % bands (and written to a .npy beside the PNG; --save-wav also writes a run
trained on WAV files' continuations as one WAV):
  torchdiffusion outpaint runs/gunpoint --right 32 --cut 32 --n 3      # hide the last 32 points, then forecast
  torchdiffusion outpaint runs/gunpoint --right 64 --series history.csv --samples 64"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_input_arguments(p)
    add_class_argument(p)
    for side in ("left", "right", "top", "bottom"):
        p.add_argument(
            f"--{side}", type=nonneg_int(MAX_PIXELS), default=0, help=f"pixels to add on the {side} (default 0)"
        )
    p.add_argument(
        "--resample", type=positive_int(1000), default=1, help="RePaint passes per segment (default 1 = replacement)"
    )
    p.add_argument(
        "--jump", type=positive_int(MAX_STEPS), help="RePaint jump length in steps (default: steps // 4, at least 1)"
    )
    p.add_argument(
        "--stride", type=positive_int(MAX_PIXELS), help="window step on the grown canvas (default: half the image size)"
    )
    g = p.add_argument_group("signals (forecasting)")
    g.add_argument("--series", help="series to continue: .npy, .npz, .csv or .wav (default: the run's held-out series)")
    g.add_argument("--samples", type=positive_int(MAX_PIXELS), default=32, help="continuations per series (default 32)")
    g.add_argument(
        "--cut", type=nonneg_int(MAX_PIXELS), default=0, help="drop the last CUT points first (drawn as truth)"
    )
    g.add_argument(
        "--save-wav",
        action="store_true",
        help="runs trained on WAV files: also write every continuation (history and forecast) as one WAV at the "
        "training rate, series by series, a quarter second of silence between them",
    )


# The options of one kind of outpainting: given for the other kind they would change nothing, so they are refused.
IMAGE_OPTIONS = ("jump", "classes", "stride", "images")
SIGNAL_OPTIONS = ("series", "samples", "cut", "save_wav")


def check_kind_options(args: argparse.Namespace, signal: bool) -> None:
    """One line for an option of image outpainting given to a signal forecast, or the other way round."""
    from ..edit import EditError
    from .common import given_options

    given = given_options(args)
    for dest in IMAGE_OPTIONS if signal else SIGNAL_OPTIONS:
        if dest in given:
            what = "forecasting a signal" if signal else "outpainting an image"
            raise EditError(f"{given[dest]} is an option of the other kind of run; {what} does not read it")


def refuse_latent_run(path, latent: bool) -> None:
    """One line for a run that diffuses latents: outpaint grows the canvas of its pixels."""
    from ..edit import EditError

    if latent:
        raise EditError(f"outpaint works on pixel runs; {path} diffuses latents (use inpaint or img2img)")


def run(args: argparse.Namespace) -> int:
    from ..edit import outpaint_canvas, tiled
    from ..generate import load_run
    from .inpaint import (
        check_edit_options,
        inpaint_images,
        load_inputs,
        repaint_bar,
        save_edit,
        setup,
        show_hole,
    )

    run_ = load_run(args.run, weights=args.weights)
    if run_.kind not in ("image", "signal"):  # before the options: they belong to one of these two kinds
        from ..edit import EditError

        raise EditError(f"outpaint grows images and forecasts signals; {run_.path} holds {run_.kind} data")
    check_kind_options(args, signal=run_.kind == "signal")
    if run_.kind == "signal":
        return forecast_signals(run_, args)
    check_edit_options(args)
    refuse_latent_run(run_.path, run_.codec is not None)
    x = load_inputs(run_, args)
    sample, D, sampler, sigmas, knobs, _ = setup(run_, args, n=len(x))
    canvas, mask = outpaint_canvas(x, left=args.left, right=args.right, top=args.top, bottom=args.bottom)
    jump = args.jump if args.jump is not None else max(1, sample.steps // 4)
    from ..provenance import note_edit

    note_edit(**({"jump": jump} if args.resample > 1 else {}))  # the jump that ran, given or not (as inpaint's)
    D = tiled(D, tuple(run_.data_shape[1:]), args.stride)  # the network sees only windows of its own size
    with repaint_bar(len(sigmas) - 1, jump, args.resample, "outpaint") as bar:
        result = inpaint_images(
            sampler, D, canvas, sigmas, mask, seed=sample.seed, jump=jump, resample=args.resample, knobs=knobs, bar=bar
        )
    tag = f"outpaint-l{args.left}r{args.right}t{args.top}b{args.bottom}-{sample.sampler}{sample.steps}"
    for p in save_edit(run_, args, tag, [show_hole(canvas, mask), result], result):
        print(p)
    return 0


def forecast_signals(run_, args: argparse.Namespace) -> int:
    """--samples continuations of each series by --right points (signals.forecast) -> PNG with bands + .npy."""
    import numpy as np
    import torch

    from ..config import ConfigError, checked_sample
    from ..io import atomic_write
    from ..progress import step_bar
    from ..signals import forecast
    from ..viz import save_forecast
    from .common import check_save_wav, sample_config_from_args
    from .inpaint import check_edit_options, default_out, refuse_guidance_sets, refuse_interval_off_walk

    check_edit_options(args)
    if args.save_npy:
        raise ConfigError("--save-npy changes nothing here: a forecast always writes its .npy beside the PNG")
    if args.left or args.top or args.bottom or not args.right:
        raise ConfigError("signals grow to the right only: give --right N (forecasting)")
    from ..data.wav import rate_of, write_wav

    check_save_wav(run_, args.save_wav)
    rate = rate_of(run_.info)
    sidecars = (".npy", ".wav") if args.save_wav else (".npy",)
    out = default_out(run_, args, f"forecast-r{args.right}-cut{args.cut}", sidecars=sidecars)
    fixed = {"n": "--n or the files of --series", "batch_size": "forecasting every series in one batch"}
    sample = checked_sample(run_.config, sample_config_from_args(run_.config.sample, args, run_, fixed))
    refuse_guidance_sets(args, "a forecast draws from the network's null class, with no classifier-free guidance")
    refuse_interval_off_walk(sample, run_.sampling_plan(sample)[0], cfg=False)  # autoguided on the whole grid
    series = _signal_inputs(run_, args)
    if args.cut >= series.shape[-1]:  # before slicing: a negative end would keep the first points instead
        raise ConfigError(f"--cut {args.cut} leaves nothing of series of {series.shape[-1]} points")
    truth = series if args.cut else None
    history = series[..., : series.shape[-1] - args.cut] if args.cut else series
    from ..provenance import note_sampling

    edit = {"name": "outpaint", "right": args.right, "cut": args.cut, "samples": args.samples}
    edit["resample"] = args.resample
    jump = max(1, sample.steps // 4)  # RePaint's default jump: a forecast takes no --jump
    if args.resample > 1:
        edit["jump"] = jump
    note_sampling(sample, range(sample.seed, sample.seed + len(history) * args.samples), wrappers=[edit])
    runs = []
    with step_bar(None, f"forecast ({args.samples} samples per series)") as bar:
        for i, h in enumerate(history):
            seed = sample.seed + i * args.samples  # series i's continuations: seeds seed + i S ... seed + (i + 1) S - 1
            runs.append(
                forecast(
                    run_,
                    h,
                    args.right,
                    sample,
                    samples=args.samples,
                    seed=seed,
                    resample=args.resample,
                    jump=jump,
                    bar=bar,
                )
            )
    # in the data's own units where data.scale mapped them: (N, S, C, L0 + right)
    y = run_.to_data_units(torch.stack(runs).flatten(0, 1)).unflatten(0, (len(runs), args.samples))
    history, truth = run_.to_data_units(history), None if truth is None else run_.to_data_units(truth)
    atomic_write(out.with_suffix(".npy"), lambda f: np.save(f, y.numpy()))
    print(save_forecast(history, y, out, truth=truth))
    print(out.with_suffix(".npy"))
    if args.save_wav:  # series i's S continuations one after another, then series i + 1's
        print(write_wav(out.with_suffix(".wav"), y.flatten(0, 1).numpy(), rate))
    return 0


def _signal_inputs(run_, args: argparse.Namespace):
    """(N, C, L) series of --series (in the data's units: mapped as training mapped them), or --n (default 3)
    held-out series of the run from --index; in the model's units."""
    import numpy as np
    import torch

    from ..config import ConfigError
    from .inpaint import selected_count

    if args.series:
        from ..data.signal import read_signal_file
        from ..data.wav import rate_of

        a, _ = read_signal_file(args.series, rate=rate_of(run_.info))
        if np.isnan(a).any():
            raise ConfigError(f"{args.series} has missing values; fill them first (torchdiffusion impute)")
        return run_.to_model_units(torch.from_numpy(a).float())
    from ..data import load_data

    split = "holdout" if run_.config.data.holdout > 0 else "train"
    data = load_data(run_.config.data, split=split, seed=run_.config.train.seed)
    n = selected_count(args, len(data), split, 3, what="series")  # as the image commands check it
    return data.x[args.index : args.index + n].clone()
