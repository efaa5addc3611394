"""Ship a train-clip run as the default model of ``evaluate --metrics contrastive``, with its held-out figures.

    OMP_NUM_THREADS=1 python scripts/ship_contrastive.py runs/emoji32-clip \\
        --command "torchdiffusion train-clip --out runs/emoji32-clip"

Writes ``src/torchdiffusion/evaluation/weights/emoji32-contrastive.safetensors`` (float16: half the size) and
``emoji32-contrastive.json`` (the run's config, the command, and caption->image retrieval and zero-shot
accuracy on the held-out emoji, re-measured with the float16 weights as they ship). Copies the run's
report.json, metrics.jsonl and config.json to ``docs/benchmarks/contrastive/``.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
from pathlib import Path

from torchdiffusion.contrastive.config import clip_config_from_json
from torchdiffusion.contrastive.metrics import SHIPPED, heldout_report
from torchdiffusion.contrastive.model import load_contrastive, save_contrastive
from torchdiffusion.contrastive.train import load_caption_data
from torchdiffusion.io import atomic_write

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a train-clip run folder")
    p.add_argument("--command", required=True, help="the exact command that trained the run (for the card)")
    args = p.parse_args()
    model, _ = load_contrastive(args.run)
    cfg = clip_config_from_json((args.run / "config.json").read_text())
    _, holdout = load_caption_data(cfg)
    model.image_size = model.image_size or holdout.x.shape[-1]  # (runs written before the size was recorded)
    card = {"command": args.command, "config": json.loads((args.run / "config.json").read_text())}
    save_contrastive(copy.deepcopy(model).half(), SHIPPED, card={"command": args.command, "preset": cfg.preset})
    shipped, _ = load_contrastive(SHIPPED)
    card["heldout"] = heldout_report(shipped, holdout)
    atomic_write(SHIPPED.with_suffix(".json"), json.dumps(card, indent=2) + "\n")
    out = ROOT / "docs" / "benchmarks" / "contrastive"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("report.json", "metrics.jsonl", "config.json"):
        shutil.copyfile(args.run / name, out / f"{args.run.name}-{name}")
    r = card["heldout"]["retrieval"]["caption_to_image"]
    print(f"{SHIPPED}: held-out top-1 {r['top1']:.3f}, top-5 {r['top5']:.3f}, ", end="")
    print(f"zero-shot {card['heldout']['zero_shot']['accuracy']:.3f}")


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
