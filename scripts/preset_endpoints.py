"""Finished runs of demo-preset candidates, each scored by the README's digit check: where a schedule ends.

    .venv/bin/python scripts/preset_endpoints.py --out runs/preset-endpoints \\
        [--candidate NAME=PRESET[,KEY=VALUE...] ...] [--w 1.5] [--threads 2] [--json FILE] [--table FILE]

``scripts/preset_curves.py`` stops constant-learning-rate runs by the clock, so each of its points is where a run
stands after that long; a learning-rate schedule that decays to zero (``train.lr_decay=cosine`` or ``cooldown``)
is only worth judging where it ends. This script trains each candidate to its own ``train.images`` with
``torchdiffusion train`` (into OUT/<NAME>; a finished run is left as it is and Ctrl-C then the same command
resumes one), then scores it as the README does (``scripts/autoguidance_check.py``: 256 samples from seeds
0-255 with the run's own sampler, unguided and with autoguidance w by its own guide model; the share of samples
the evaluation classifier is >= 0.9 confident about, the rarest digit's share and the Fréchet distance in the
classifier's features against the training digits). Training time is the run's own clock (run.json
``wall_s``, its quick evaluations excluded: there are none here). Run it alone on a quiet machine: a timing.
Writes OUT/preset-endpoints.json and OUT/preset-endpoints.md (or ``--json`` / ``--table``).

The default candidates: the demo preset with its 28 x 28 U-Net (``mnist-cpu-28``, the demo's network until
space-to-depth) as it is (constant learning rate after the warm-up), with
a cosine decay over its 150,000 images, and with the last 20 % of the images cooling the learning rate
linearly to zero (warm-up-stable-decay); then the constant and the cooldown schedules at 100,000 images (a
third less training time), their guide models kept at 20 % of them: the same 20,000-image EMA the demo preset
keeps at 13.33 % of 150,000; last, the EMA at the 20,000-image half-life the preset names, which its ramp
(``train.ema_warmup_ratio`` 0.05: at most 5 % of the images seen) caps at 7,500 by the end of 150,000 images -
ratio 0.14 lets it reach 20,000 - on two seeds, each beside the preset on the same seed (``train.seed=1`` also
holds out another 500 digits).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from preset_curves import folder, machine, parse  # noqa: E402  (a candidate NAME=PRESET[,KEY=VALUE...], its folder, the CPU)
from sampler_digit_sweep import digit_cells  # noqa: E402  (the README's digit check, one definition)

CANDIDATES = [
    "constant 150k=mnist-cpu-28",
    "cosine 150k=mnist-cpu-28,train.lr_decay=cosine",
    "cooldown 150k=mnist-cpu-28,train.lr_decay=cooldown",
    "constant 100k=mnist-cpu-28,train.images=100000,train.guide_at=0.2",
    "cooldown 100k=mnist-cpu-28,train.lr_decay=cooldown,train.images=100000,train.guide_at=0.2",
    "constant 150k seed 1=mnist-cpu-28,train.seed=1",
    "long EMA 150k=mnist-cpu-28,train.ema_warmup_ratio=0.14",
    "long EMA 150k seed 1=mnist-cpu-28,train.ema_warmup_ratio=0.14,train.seed=1",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder of the runs and the reports")
    ap.add_argument("--candidate", action="append", help="NAME=PRESET[,KEY=VALUE...]; repeatable")
    ap.add_argument("--w", default="1.5", help="the autoguidance weight scored beside w = 1 (unguided)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="default OUT/preset-endpoints.json")
    ap.add_argument("--table", help="default OUT/preset-endpoints.md")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    cpu, rows = machine(), []
    for spec in args.candidate or CANDIDATES:
        name, preset, sets = parse(spec)
        run = out / folder(name)
        state = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
        if not state.get("finished"):
            cmd = [sys.executable, "-m", "torchdiffusion", "train", "--preset", preset, "--out", str(run)]
            for s in [f"train.threads={args.threads}", *sets]:
                cmd += ["--set", s]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, env=env)
            state = json.loads((run / "run.json").read_text())
        check = out / "checks" / run.name
        if not (check / "autoguidance.json").is_file():
            cmd = [sys.executable, str(Path(__file__).parent / "autoguidance_check.py"), str(run)]
            cmd += ["--out", str(check), "--w", f"1,{args.w}", "--threads", str(args.threads)]
            subprocess.run(cmd, check=True, env=env)
        scores = json.loads((check / "autoguidance.json").read_text())["rows"]
        config = json.loads((run / "config.json").read_text())
        rows.append(
            {
                "name": name,
                "preset": preset,
                "settings": sets,
                "images": state["images_seen"],
                "train_wall_s": state["wall_s"],
                "train_cpu_s": state["cpu_s"],
                "precision": config["train"]["precision"],
                "scores": scores,
            }
        )
        record = {"cpu": cpu, "threads": args.threads, "rows": rows}
        Path(args.json or out / "preset-endpoints.json").write_text(json.dumps(record, indent=2))
    table = Path(args.table or out / "preset-endpoints.md")
    table.write_text(markdown(rows, cpu))
    print(table.read_text())
    return 0


def markdown(rows: list[dict], cpu: str) -> str:
    lines = [
        f"CPU: {cpu}. Digit check: 256 samples (seeds 0-255), the run's sampler; FD in the evaluation classifier's "
        "features against the training digits.\n",
        "| candidate | images | training min | unguided: confident / rarest / FD "
        "| autoguided: w, confident / rarest / FD |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [digit_cells(s).replace(" | ", " / ") for s in r["scores"]]
        guided = f"{r['scores'][-1]['w']:g}, {cells[-1]}" if len(cells) > 1 else "-"
        lines.append(f"| {r['name']} | {r['images']:,} | {r['train_wall_s'] / 60:.1f} | {cells[0]} | {guided} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
