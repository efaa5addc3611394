"""How long should the EMA be? One training run keeps several EMAs; the README's digit check scores each.

    .venv/bin/python scripts/ema_length_scan.py --out runs/ema-scan [--preset mnist-cpu] [--set KEY=VALUE ...] \\
        [--ratios 0.025,0.05,0.1,0.15,0.25] [--w 1.5] [--threads 2]

The EMA's half-life grows with the images seen n as h = min(train.ema_halflife_images, r n) (``training/ema.py``,
EDM's ramp), so a run's ``train.ema_warmup_ratio`` r sets how long its average is for most of the run. This script
trains the preset once (into OUT/run, with its own EMA as configured) and keeps, beside it, one more EMA per ratio r
in ``--ratios`` with h = r n and no cap, updated after every applied optimizer step exactly as the run's own
(:class:`ExtraEMAs`). Each is then written as a run folder OUT/ratio-<r> (the run's config, raw weights and guide
model; that EMA as ema.safetensors) and scored as ``scripts/autoguidance_check.py`` scores a run: 256 samples
(seeds 0-255) with the run's sampler, autoguided at ``--w`` by the run's own guide model - the same guide for every
ratio, so the rows differ by the averaged weights alone. A run trained with ``--set train.ema_warmup_ratio=r``
has the same EMA, and a guide model averaged at that ratio too. Writes OUT/ema-scan.json and OUT/ema-scan.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from preset_curves import machine  # noqa: E402  (the CPU, as the other preset scripts name it)
from sampler_digit_sweep import digit_cells, floor_note  # noqa: E402  (the README's digit check, one definition)

from torchdiffusion.training.callbacks import Callback  # noqa: E402
from torchdiffusion.training.ema import EMA, ema_beta  # noqa: E402


class ExtraEMAs(Callback):
    """EMAs with half-life r * images seen (no cap), one per ratio r, updated after every applied step with the
    decay the run's own EMA would get at that ratio (``training.loop._update``: the images seen before the step)."""

    def __init__(self, ratios: list[float]):
        self.ratios, self.emas, self.updates = ratios, {}, 0

    def after_step(self, state, stats) -> None:
        if state.updates == self.updates:  # a skipped step (non-finite loss): no update, no EMA step
            return
        seen_before = self.updates * state.batch_size
        self.updates = state.updates
        for r in self.ratios:
            if r not in self.emas:
                self.emas[r] = EMA(state.model)
            self.emas[r].update(state.model, ema_beta(state.batch_size, seen_before, float("inf"), r))


def ratio_run(run: Path, out: Path, ema: EMA) -> Path:
    """A run folder of ``run``'s config, raw weights and guide with ``ema`` as its averaged weights."""
    from torchdiffusion.training.checkpoint import WEIGHTS_KEY, export_weights, write_run_info

    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "guide.safetensors"):
        if (run / name).is_file():
            shutil.copy2(run / name, out / name)
    info = json.loads((run / "run.json").read_text())
    info[WEIGHTS_KEY].update(export_weights(out, {"ema.safetensors": ema.state_dict()}))
    write_run_info(out, info)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder of the run, the EMA variants and the reports")
    ap.add_argument("--preset", default="mnist-cpu")
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE config override; repeatable")
    ap.add_argument("--ratios", default="0.025,0.05,0.1,0.15,0.25", help="comma-separated EMA ratios r (h = r n)")
    ap.add_argument("--w", type=float, default=1.5, help="autoguidance weight of the digit check")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    from autoguidance_check import main as check

    from torchdiffusion.config import ConfigError, override, validate
    from torchdiffusion.presets import get_preset
    from torchdiffusion.training import train

    try:
        ratios = [float(r) for r in args.ratios.split(",")]
        if not all(r > 0 for r in ratios):
            raise ValueError(f"every ratio must be > 0, got {args.ratios}")
        cfg = override(get_preset(args.preset), [*args.set, f"train.threads={args.threads}"])
        validate(cfg)
    except (ValueError, KeyError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    run = out / "run"
    if run.exists():  # the extra EMAs live in this process only: a resumed or finished run would have none
        print(f"error: {run} exists; give a new --out", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    extra = ExtraEMAs(ratios)
    train(cfg, run, callbacks=[extra])
    rows = []
    for r in ratios:
        folder = ratio_run(run, out / f"ratio-{r:g}", extra.emas[r])
        report = out / "checks" / folder.name
        args_check = [str(folder), "--out", str(report), "--w", f"{args.w:g}", "--n", str(args.n)]
        if check([*args_check, "--threads", str(args.threads)]) != 0:
            return 1
        (row,) = json.loads((report / "autoguidance.json").read_text())["rows"]
        rows.append({"ratio": r, **row})
    record = {"cpu": machine(), "preset": args.preset, "settings": args.set, "images": cfg.train.images, "rows": rows}
    (out / "ema-scan.json").write_text(json.dumps(record, indent=2))
    lines = [
        f"CPU: {record['cpu']}. Preset `{args.preset}` {' '.join(args.set)}, {cfg.train.images:,} images; "
        f"{args.n} samples (seeds 0-{args.n - 1}), the run's sampler, autoguided w = {args.w:g} by the run's own "
        "guide.\n",
        "| EMA ratio r (half-life r x images seen) | half-life at the end | confident >= 0.9 | rarest digit | FD |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['ratio']:g} | {row['ratio'] * cfg.train.images:,.0f} | {digit_cells(row)} |")
    lines += floor_note(rows)
    (out / "ema-scan.md").write_text("\n".join(lines) + "\n")
    print((out / "ema-scan.md").read_text())
    return 0


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
