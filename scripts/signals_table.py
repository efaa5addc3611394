"""Markdown tables of the signal reports (docs/benchmarks/signals/*.json, written by signals_figures.sh).

python scripts/signals_table.py docs/benchmarks/signals > docs/benchmarks/signals/summary.md
"""

import argparse
import json
from pathlib import Path


def fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def quality(folder: Path) -> list[str]:
    lines = [
        "| preset | generated | FD model | FD GP baseline | FD model / GP | TSTR model | TSTR GP | TRTR "
        "| FD train vs held-out |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in sorted(folder.glob("signal-*.json")):
        if f.stem.endswith("-impute"):
            continue
        r = json.loads(f.read_text())
        m, g, real = r["model"], r["gaussian_process"], r["real"]
        cells = [m["fd"], g["fd"], m["fd"] / g["fd"], m["tstr"], g["tstr"], real["trtr"], real["fd_train"]]
        lines.append(f"| {f.stem} | {r['n']} | " + " | ".join(map(fmt, cells)) + " |")
    return lines


def imputation(folder: Path) -> list[str]:
    lines = [
        "| run | held-out series | linear MSE | replacement: 1 sample | mean of 4 | RePaint 5x2: 1 sample "
        "| mean of 4 |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in sorted(folder.glob("*-impute.json")):
        r = json.loads(f.read_text())
        a, b = r["replacement"], r["repaint_5x2"]
        cells = [r["linear_interpolation"]["mse"], a["mse_one_sample"], a["mse_mean_of_4"]]
        cells += [b["mse_one_sample"], b["mse_mean_of_4"]]
        lines.append(f"| {f.stem.removesuffix('-impute')} | {r['series']} | " + " | ".join(map(fmt, cells)) + " |")
    return lines


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="the folder of the runs' benchmark JSON files")
    folder = Path(p.parse_args().folder)
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(lambda: print("\n".join(quality(folder) + [""] + imputation(folder)))))
