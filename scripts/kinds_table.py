"""Markdown tables of the table, sequence and volume reports (docs/benchmarks/kinds/*.json, written by
kinds_figures.sh and volume_figures.sh).

python scripts/kinds_table.py docs/benchmarks/kinds > docs/benchmarks/kinds/summary.md
"""

import argparse
import json
from pathlib import Path


def fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def tables(folder: Path) -> list[str]:
    lines = [
        "| set | rows | model | marginal W1 | marginal TV | correlation error | TSTR | TRTR | DCR copy share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in sorted(folder.glob("table-*.json")):
        r = json.loads(f.read_text())
        for who in ("model", "independent_marginals", "training_rows_fed_back"):
            m = r[who]
            cells = [m["marginal_w1"], m["marginal_tv"], m["correlation_error"], m["tstr"], m["trtr"]]
            cells.append(m["dcr_copy_share"])
            lines.append(f"| {f.stem} | {r['n']} | {who.replace('_', ' ')} | " + " | ".join(map(fmt, cells)) + " |")
    return lines


def sequences(folder: Path) -> list[str]:
    lines = [
        "| run | bound (bits/symbol) | n-gram (bits/symbol) | n-gram TV: model | n-gram baseline | training floor |",
        "|---|---|---|---|---|---|",
    ]
    for f in sorted(folder.glob("text-*.json")):
        r = json.loads(f.read_text())
        cells = [r["bound_bits_per_symbol"], r["ngram_bits_per_symbol"], r["ngram_tv"], r["ngram_tv_baseline"]]
        cells.append(r["ngram_tv_train"])
        lines.append(f"| {f.stem} | " + " | ".join(map(fmt, cells)) + " |")
    return lines


def volumes(folder: Path) -> list[str]:
    lines = [
        "| run | n | samples | energy (features) | MMD^2 (features) | class accuracy | slice-mean error | "
        "slice-variance error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in sorted(folder.glob("volume-*.json")):
        r = json.loads(f.read_text())
        if "volume" not in r:
            continue
        for who in ("model", "gaussian_pca", "training_volumes"):
            m = r["volume"][who]
            cells = [m["energy"], m["mmd2"], m.get("class_accuracy"), m["profile_mean_error"], m["profile_var_error"]]
            lines.append(f"| {f.stem} | {m['n']} | {who.replace('_', ' ')} | " + " | ".join(map(fmt, cells)) + " |")
    return lines


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="the folder of the runs' benchmark JSON files")
    folder = Path(p.parse_args().folder)
    from torchdiffusion.cli import run_script

    raise SystemExit(
        run_script(lambda: print("\n".join(tables(folder) + [""] + sequences(folder) + [""] + volumes(folder))))
    )
