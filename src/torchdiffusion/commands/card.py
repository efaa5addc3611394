"""torchdiffusion card: a model card for a run folder, or a data card for a data set (cards.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .argtypes import MAX_COUNT, check_output_file, int_in

HELP = "write MODEL_CARD.md for a run (Hugging Face layout), or a data card for a data set we build"
EXAMPLES = """examples:
  torchdiffusion card runs/demo                                        # -> runs/demo/MODEL_CARD.md
  torchdiffusion card runs/demo --evaluate --n 1000 --out docs/cards/demo/MODEL_CARD.md
  torchdiffusion card --data emoji --out DATA_CARD-emoji.md              # font licence, caption source, classes

The model card reads config.json, run.json, metrics.jsonl (training compute) and RUN/eval/report.json when
'torchdiffusion evaluate' has written one: metrics beside their held-out floor, memorisation with the
nearest-neighbour grid, class balance of samples against the data. --evaluate writes that report first
(Frechet distance, KID, precision/recall in the data set's classifier features, and memorisation, on --n
samples). Pictures the card shows are copied beside it when it is written outside the run folder."""


def licence_id(text: str) -> str:
    """A licence id as the card's YAML front matter holds it bare: letters, digits and ``. _ + -``."""
    import argparse
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a licence id (letters, digits and . _ + -, e.g. apache-2.0, mit, cc-by-4.0, other)"
        )
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", help="run folder written by 'torchdiffusion train'")
    p.add_argument("--data", help="write a data card instead: emoji, sprites, mnist5k, digits, fashion_mnist")
    p.add_argument("--out", help="output .md (default RUN/MODEL_CARD.md, or DATA_CARD-<data>.md)")
    p.add_argument("--evaluate", action="store_true", help="evaluate the run first (RUN/eval/report.json)")
    p.add_argument("--n", type=int_in(2, MAX_COUNT), default=1000, help="samples for --evaluate (default 1000)")
    p.add_argument(
        "--license",
        type=licence_id,
        default="apache-2.0",
        help="licence of the weights in the front matter: a Hugging Face licence id (apache-2.0, mit, other...)",
    )


def run(args: argparse.Namespace) -> int:
    from ..cards import CardError, data_card, model_card, read_run
    from ..io import atomic_write
    from ..progress import step_bar
    from .common import given_options

    if bool(args.run) == bool(args.data):
        raise CardError("give a run folder or --data NAME (one of the two)")
    given = given_options(args)
    model_only = [flag for dest, flag in given.items() if dest in ("evaluate", "n", "license")]
    if args.data and model_only:
        raise CardError(f"{model_only[0]} is for a model card (a run folder); a data card (--data) reads none of it")
    if "n" in given and not args.evaluate:
        raise CardError("--n is the number of samples --evaluate draws; add --evaluate")
    out = Path(args.out) if args.out else (Path(args.run) / "MODEL_CARD.md" if args.run else None)
    out = out or Path(f"DATA_CARD-{args.data}.md")
    if out.suffix.lower() != ".md":
        raise CardError(f"--out must end in .md, got {out}")
    check_output_file(out)
    if args.data:
        with step_bar(1, f"data card ({args.data})") as bar:
            text = data_card(args.data)
            bar.update(1)
        print(atomic_write(out, text))
        return 0
    read_run(args.run)  # a missing or damaged run folder is refused before any work
    if args.evaluate:
        evaluate_for_card(args.run, args.n)
    with step_bar(1, "model card") as bar:
        text = model_card(args.run, licence=args.license, picture=lambda p: place_picture(p, out))
        bar.update(1)
    print(atomic_write(out, text))
    return 0


def evaluate_for_card(run: str, n: int) -> None:
    """RUN/eval/report.json: FD, KID, precision/recall in the data set's classifier features (raw values when
    none ships) and memorisation, on ``n`` samples; for a run of another kind (table, sequence, signal, volume),
    what ``torchdiffusion evaluate RUN --n n`` reports for it."""
    import sys

    from ..cards import read_run
    from ..evaluation.classifier import available_classifiers
    from ..evaluation.evaluate import evaluate

    _, cfg, info = read_run(run)
    if info.get("kind", "image") != "image":  # a table, sequence, signal or volume: its kind's own evaluation
        from ..cli import build_parser
        from .evaluate import run as evaluate_command

        args = build_parser("evaluate").parse_args(["evaluate", str(run), "--n", str(n)])
        evaluate_command(args)
        return
    feats = [f"clf:{cfg.data.source}"] if cfg.data.source in available_classifiers() else ["raw"]
    log = lambda line: print(line, file=sys.stderr)  # noqa: E731
    evaluate(run, ("fd", "kid", "pr", "memorisation"), n, features=feats, log=log, progress=True)


def place_picture(picture: Path, card: Path) -> str:
    """The link a card at ``card`` writes for ``picture``: a relative path when the picture lies under the
    card's folder, else a copy beside the card (``<card stem>-<name>``)."""
    from ..io import atomic_write
    from ..provenance import manifest_path

    folder = card.parent.resolve()
    src = picture.resolve()
    if folder in src.parents:
        return src.relative_to(folder).as_posix()
    name = f"{card.stem}-{picture.name}"
    atomic_write(card.parent / name, picture.read_bytes())
    made = manifest_path(picture)  # how those bytes were made: the copy's manifest is the picture's
    if made.is_file():
        atomic_write(manifest_path(card.parent / name), made.read_bytes())
    return name
