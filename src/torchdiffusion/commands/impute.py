"""torchdiffusion impute: fill in the missing cells of a table (CSV) or the masked symbols of texts."""

from __future__ import annotations

import argparse
from pathlib import Path

from .argtypes import MAX_SEED, MAX_STEPS, check_output_file, nonneg_int, positive_int

MANIFESTS = True  # each file written gets <file>.manifest.json (provenance.py)
HELP = "fill in missing cells of a table (CSV) or masked symbols of a text with a trained table/sequence run"
EXAMPLES = """examples:
  torchdiffusion impute runs/wine --csv holes.csv --out filled.csv       # empty / NaN cells are filled
  torchdiffusion impute runs/text --text "The data set ___ ____ rows" --out filled.txt
Tables: the CSV has the model's columns; empty, NA and NaN cells are missing. Texts: '_' (--mask-char) marks
each symbol to fill; a text shorter than the model's sequences is completed at its end."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder of a table or sequence model")
    p.add_argument("--csv", help="table with missing cells (tables)")
    p.add_argument("--text", action="append", help="text with masked symbols (sequences); repeat for several")
    p.add_argument("--mask-char", default="_", help="the symbol that marks what to fill in texts (default _)")
    p.add_argument("--out", help="output .csv / .txt (default RUN/imputed/<name>)")
    p.add_argument("--steps", type=positive_int(MAX_STEPS), help="sampling steps (default: the run's sample.steps)")
    p.add_argument("--seed", type=nonneg_int(MAX_SEED), default=0, help="row/text k uses seed + k (default 0)")
    p.add_argument("--weights", default="ema", choices=["ema", "model"], help="EMA (default) or raw weights")


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError
    from ..generate import load_run
    from ..kinds import draw, infill_text, save, schema_of

    run_ = load_run(args.run, weights=args.weights)
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
        raise ConfigError(f"impute fills tables and sequences; {args.run} holds {run_.kind} data (see inpaint)")
    if out.suffix.lower() != suffix:
        raise ConfigError(f"--out must end in {suffix}, got {out}")
    check_output_file(out)
    schema = schema_of(run_.info, run_.kind)
    if run_.kind == "table":
        from ..data.table import encode_rows, read_csv

        table = read_csv(args.csv, tuple(schema.categorical))
        known, mask = encode_rows(table, schema, args.csv)
    else:
        known, mask = infill_text(schema, args.text, run_.data_shape[0], args.mask_char)
    steps = args.steps or run_.config.sample.steps
    x = draw(run_.model, run_.kind, range(args.seed, args.seed + len(known)), steps, known=known, known_mask=mask)
    if run_.kind == "table":  # the cells given keep their values as read
        from ..data.table import decode_rows, paste_known, write_csv

        print(write_csv(out, paste_known(decode_rows(x, schema), table, mask, schema), schema))
        return 0
    for p in save(x, run_.kind, schema, out, title=f"filled in, {steps} steps"):
        print(p)
    return 0
