"""torchdiffusion impute: fill in the missing cells of a table (CSV), the masked symbols of texts, or the missing
points of 1-D signals (inpainting, signals.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .argtypes import MAX_SEED, MAX_STEPS, check_output_file, nonneg_int, positive_int
from .common import add_sampling_arguments, sample_config_from_args

MANIFESTS = True  # each file written gets <file>.manifest.json (provenance.py)
HELP = "fill in missing cells of a table (CSV), masked symbols of a text, or missing points of signals"
EXAMPLES = """examples:
  torchdiffusion impute runs/wine --csv holes.csv --out filled.csv       # empty / NaN cells are filled
  torchdiffusion impute runs/text --text "The data set ___ ____ rows" --out filled.txt
  torchdiffusion impute runs/gunpoint --series gaps.csv --resample 5 --out filled.npy   # NaN points are filled
  torchdiffusion impute runs/gunpoint --series whole.npy --mask span:0.4,0.6 --out filled.csv
Signals: a .npy/.npz (N, C, L) or (N, L), or a CSV of one series per row; NaN / empty cells are missing, and
--mask hides a stretch of every series as well; a picture of the filled series is written beside --out.
Tables: the CSV has the model's columns; empty, NA and NaN cells are missing. Texts: '_' (--mask-char) marks
each symbol to fill; a text shorter than the model's sequences is completed at its end."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder of a table or sequence model")
    p.add_argument("--csv", help="table with missing cells (tables)")
    p.add_argument("--text", action="append", help="text with masked symbols (sequences); repeat for several")
    p.add_argument("--mask-char", default="_", help="the symbol that marks what to fill in texts (default _)")
    p.add_argument(
        "--series", help="signals with missing (NaN) points: .npy, .npz or .csv, or a .wav recording (signals)"
    )
    p.add_argument("--mask", help="signals: also hide this stretch of every series, e.g. span:0.4,0.6")
    p.add_argument("--resample", type=positive_int(1000), default=1, help="signals: RePaint passes per segment")
    p.add_argument("--jump", type=positive_int(MAX_STEPS), help="signals: RePaint jump length (default steps // 4)")
    p.add_argument(
        "--out", help="output .csv / .txt; signals: .npy / .csv, or .wav for a WAV run (default RUN/imputed/<name>)"
    )
    add_sampling_arguments(p, counts=False)  # tables and signals: their sampler, grid and settings, as 'sample's
    p.add_argument("--seed", type=nonneg_int(MAX_SEED), default=0, help="row/text k uses seed + k (default 0)")
    p.add_argument("--weights", default="ema", choices=["ema", "model"], help="EMA (default) or raw weights")


# The options only one kind of run reads (--csv, --text, --series and --mask have their own lines below)
KIND_OPTIONS = {"mask_char": "sequence", "resample": "signal", "jump": "signal"}


def check_kind_options(args: argparse.Namespace, kind: str) -> None:
    """ConfigError in one line for an option this run's kind does not read; the editing commands' check of the
    RePaint options (--jump without passes) after it."""
    from ..config import ConfigError
    from .common import given_options
    from .inpaint import check_edit_options

    for dest, flag in given_options(args).items():
        if dest in KIND_OPTIONS and KIND_OPTIONS[dest] != kind:
            raise ConfigError(f"{flag} is read only for {KIND_OPTIONS[dest]} runs; this run holds {kind} data")
    check_edit_options(args)


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError, checked_sample
    from ..generate import load_run
    from ..kinds import draw, infill_text, save, schema_of

    run_ = load_run(args.run, weights=args.weights)
    check_kind_options(args, run_.kind)
    fixed = {"n": "the rows, texts or series given", "seed": "--seed"}
    sample = sample_config_from_args(run_.config.sample, args, run_, fixed)
    sample = checked_sample(run_.config, sample)
    if run_.kind == "signal":
        from .inpaint import refuse_interval_off_walk

        refuse_interval_off_walk(sample, run_.sampling_plan(sample)[0], cfg=False)  # autoguided on the whole grid
        return impute_signals(run_, args, sample)
    if args.series or args.mask:
        raise ConfigError(f"--series and --mask fill signals; this run holds {run_.kind} data")
    if run_.kind == "table":
        if not args.csv or args.text:
            raise ConfigError("a table run fills a CSV: give --csv FILE (and no --text)")
        out = Path(args.out) if args.out else run_.path / "imputed" / Path(args.csv).name
        suffix = ".csv"
    elif run_.kind == "sequence":
        if not args.text or args.csv:
            raise ConfigError("a sequence run fills texts: give --text TEXT (and no --csv)")
        if len(args.mask_char) != 1:
            raise ConfigError(f"--mask-char must be one symbol, got {args.mask_char!r}")
        out = Path(args.out) if args.out else run_.path / "imputed" / "texts.txt"
        suffix = ".txt"
    else:
        raise ConfigError(
            f"impute fills tables, sequences and signals; {args.run} holds {run_.kind} data (see inpaint)"
        )
    if out.suffix.lower() != suffix:
        raise ConfigError(f"--out must end in {suffix}, got {out}")
    check_output_file(out)
    schema = schema_of(run_.info, run_.kind)
    if run_.kind == "table":
        from ..data.table import encode_rows, read_csv

        table = read_csv(args.csv, tuple(schema.categorical), keep_empty=True)  # an empty row: fill all of it
        known, mask = encode_rows(table, schema, args.csv)
    else:
        known, mask = infill_text(schema, args.text, run_.data_shape[0], args.mask_char)
    steps = sample.steps
    seeds, grids = range(args.seed, args.seed + len(known)), run_.path / "grids"
    x = draw(run_.model, run_.kind, seeds, sample, known=known, known_mask=mask, grid_dir=grids)
    if run_.kind == "table":  # the cells given keep their values as read
        from ..data.table import decode_rows, paste_known, write_csv

        rows = paste_known(decode_rows(x, schema), table, mask, schema)
        # the file's dialect and column order; a semicolon file whose cells show no decimal mark (whole numbers,
        # empty cells) writes its filled numbers with the training file's (a decimal comma run wrote 0.5 beside ;)
        marks = any("." in c or "," in c for name in table.numeric for c in table.text.get(name, ()) if c)
        decimal = table.decimal if marks or table.delimiter != ";" else schema.decimal
        print(write_csv(out, rows, schema, table.delimiter, decimal, table.columns))
        return 0
    for p in save(x, run_.kind, schema, out, title=f"filled in, {steps} steps"):
        print(p)
    return 0


def impute_signals(run_, args: argparse.Namespace, sample) -> int:
    """Missing points of the series in --series (NaN, and --mask's stretch) inpainted with ``sample`` (the run's
    sampling with the command's flags) -> .npy or .csv + .png."""
    import numpy as np
    import torch

    from ..config import ConfigError
    from ..data.signal import read_signal_file
    from ..data.wav import rate_of, write_wav
    from ..io import atomic_write
    from ..masks import make_mask
    from ..progress import step_bar
    from ..signals import impute
    from ..viz import save_signals

    if not args.series or args.csv or args.text:
        raise ConfigError("a signal run fills series: give --series FILE (and no --csv / --text)")
    out = Path(args.out) if args.out else run_.path / "imputed" / (Path(args.series).stem + ".npy")
    rate = rate_of(run_.info)  # a run trained on WAV recordings: their sample rate
    if out.suffix.lower() not in (".npy", ".csv", *((".wav",) if rate is not None else ())):
        ends = ".npy or .csv (.wav for a run trained on WAV files)" if rate is None else ".npy, .csv or .wav"
        raise ConfigError(f"--out must end in {ends}, got {out}")
    if out.suffix.lower() == ".csv" and run_.data_shape[0] > 1:  # a CSV row is one channel's series (--series reads)
        raise ConfigError(
            f"--out .csv holds one series per row, and this run's series have {run_.data_shape[0]} channels; write "
            ".npy (series, channels, length)"
        )
    check_output_file(out, sidecars=(".png",))
    a, _ = read_signal_file(args.series, rate=rate, keep_empty=True)
    x = torch.from_numpy(a).float()
    if tuple(x.shape[1:]) != tuple(run_.data_shape):
        raise ConfigError(f"--series holds series of shape {tuple(x.shape[1:])}; the run's are {run_.data_shape}")
    given = torch.from_numpy(np.asarray(a, dtype=np.float64))  # the given points as read, in float64 (NaN stays)
    x = run_.to_model_units(x)  # the model's units where data.scale mapped the data's own
    mask = (~torch.isnan(x)).float()
    if args.mask:
        mask = mask * make_mask(args.mask, 1, x.shape[-1])[:, :, 0]
    from ..provenance import note_sampling
    from .inpaint import refuse_long_jump

    refuse_long_jump(args.jump, sample.steps)
    edit = {"name": "impute", "mask": args.mask, "resample": args.resample, "jump": args.jump}
    note_sampling(sample, range(args.seed, args.seed + len(x)), wrappers=[{k: v for k, v in edit.items() if v}])
    with step_bar(None, f"impute ({args.resample} pass{'es' if args.resample > 1 else ''} per segment)") as bar:
        y = run_.to_data_units(
            impute(run_, x, mask, sample, seed=args.seed, resample=args.resample, jump=args.jump, bar=bar)
        )
        known = mask.bool().expand_as(y)
        y = torch.where(known, given, y.double())  # the given points exactly as they were (float64: as read)
    if out.suffix.lower() == ".npy":  # in the input's float type (float32 in, float32 out; else float64)
        dtype = a.dtype if np.issubdtype(a.dtype, np.floating) and a.dtype.itemsize >= 4 else np.float64
        atomic_write(out, lambda f: np.save(f, y.numpy().astype(dtype)))
    elif out.suffix.lower() == ".wav":  # the series one after another, at the recordings' rate
        write_wav(out, y.numpy(), rate)
    else:  # one series per row: a given value in the digits that read back to it exactly, a filled one to 7
        cells = [
            [repr(v) if k else f"{v:.7g}" for v, k in zip(r.tolist(), kr.tolist())]
            for r, kr in zip(y[:, 0], known[:, 0])
        ]
        atomic_write(out, "".join(",".join(c) + "\n" for c in cells))
    print(out)
    shown = torch.where(mask.bool().expand_as(x), given, torch.full_like(x, float("nan")))
    print(save_signals(y, out.with_suffix(".png"), reference=shown, title="filled (colour) and given points (grey)"))
    return 0
