"""Held-out figures of autoencoder runs: reconstruction PSNR and a category classifier's accuracy on originals vs
reconstructions, a picture of originals / latents / reconstructions, and a bar chart comparing the runs.

    python scripts/autoencoder_figures.py runs/emoji64-ae runs/emoji64-ae-perceptual \\
        --classifier runs/emoji64-classifier/eval-classifier.safetensors --out docs/benchmarks/autoencoder

The held-out images are the runs' own held-out split (whole emoji the autoencoder never saw: ``data.holdout``);
every run must have been trained on the same data. Writes OUT/figures.json, OUT/table.md,
OUT/reconstructions.png (rows: originals, then each run's latents as RGB pictures and its reconstructions) and
OUT/effect.png. scripts/autoencoder_figures.sh runs everything from training on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def heldout_images(run: Path):
    from torchdiffusion.autoencoder import autoencoder_config_from_json
    from torchdiffusion.data import load_data

    cfg = autoencoder_config_from_json((run / "config.json").read_text())
    data = load_data(cfg.data, split="holdout", seed=cfg.train.seed)
    return cfg, data


def latent_picture(z: torch.Tensor, size: int) -> torch.Tensor:
    """(B, c, h, w) latents -> (B, 3, size, size) pictures in [-1, 1]: the first three channels as RGB (each scaled
    by its own batch range), nearest-neighbour upscaled; one channel is shown as gray."""
    v = z[:, :3] if z.shape[1] >= 3 else z[:, :1].expand(-1, 3, -1, -1)
    lo = v.amin(dim=(0, 2, 3), keepdim=True)
    hi = v.amax(dim=(0, 2, 3), keepdim=True)
    v = (v - lo) / (hi - lo).clamp(min=1e-8) * 2 - 1
    return torch.nn.functional.interpolate(v, size=(size, size), mode="nearest")


def measure(runs: list[Path], classifier: str | None) -> tuple[dict, dict]:
    from torchdiffusion.autoencoder import load_autoencoder, psnr_db
    from torchdiffusion.evaluation.classifier import accuracy, classifier_from

    _, data = heldout_images(runs[0])
    x, labels = data.x, data.labels
    net = classifier_from(classifier) if classifier else None
    groups = len(set(data.groups.tolist())) if data.groups is not None else None
    out = {"heldout_images": len(x), "heldout_groups": groups}
    if net is not None:
        out["classifier_accuracy_originals"] = round(accuracy(net, x, labels), 4)
    pictures = {"originals": x}
    for run in runs:
        ae = load_autoencoder(run)
        mean, _ = ae.encode(x)
        x_hat = ae.decode(mean).clamp(-1, 1)
        info = json.loads((run / "autoencoder.json").read_text())
        cfg = json.loads((run / "config.json").read_text())
        row = {
            "psnr_db": round(float(psnr_db(x, x_hat).mean()), 2),
            "scale_factor": round(ae.scale_factor, 4),
            "perceptual_weight": cfg["loss"]["perceptual"],
            "images_seen": info.get("images_seen", cfg["train"]["images"]),  # a time limit may end it sooner
            "train_seconds": info["seconds"],
        }
        if net is not None:
            row["classifier_accuracy_reconstructions"] = round(accuracy(net, x_hat, labels), 4)
        out[run.name] = row
        pictures[run.name + " latents"] = latent_picture(mean, x.shape[-1])
        pictures[run.name] = x_hat
    return out, pictures


def write_table(figures: dict, runs: list[Path], path: Path) -> None:
    acc0 = figures.get("classifier_accuracy_originals")
    groups = f" of {figures['heldout_groups']} whole emoji" if figures["heldout_groups"] else ""
    lines = [
        f"Held-out: {figures['heldout_images']} images{groups}.",
        "",
        "| run | perceptual weight | images seen | PSNR (dB) | classifier accuracy: reconstructions | originals |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        r = figures[run.name]
        acc = r.get("classifier_accuracy_reconstructions")
        acc_text = f"{100 * acc:.1f} %" if acc is not None else "-"
        orig = f"{100 * acc0:.1f} %" if acc0 is not None else "-"
        cells = [run.name, f"{r['perceptual_weight']:g}", f"{r['images_seen']:,}", f"{r['psnr_db']:.2f}"]
        cells += [acc_text, orig]
        lines.append("| " + " | ".join(cells) + " |")
    from torchdiffusion.io import atomic_write

    atomic_write(path, "\n".join(lines) + "\n")


def bar_chart(figures: dict, runs: list[Path], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from torchdiffusion.viz import _save_figure

    names = [r.name for r in runs]
    fig, axes = plt.subplots(1, 2, figsize=(7, 2.8))
    axes[0].bar(names, [figures[n]["psnr_db"] for n in names], color="tab:blue")
    axes[0].set_ylabel("held-out PSNR (dB)")
    accs = [100 * figures[n].get("classifier_accuracy_reconstructions", 0) for n in names]
    axes[1].bar(names, accs, color="tab:orange", label="reconstructions")
    if "classifier_accuracy_originals" in figures:
        axes[1].axhline(100 * figures["classifier_accuracy_originals"], color="k", ls="--", label="originals")
    axes[1].set_ylabel("category accuracy (%)")
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    _save_figure(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="autoencoder run folders (same data)")
    p.add_argument("--classifier", help="a category classifier (.safetensors from train-classifier --evaluation)")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/autoencoder"))
    p.add_argument("--show", type=int, default=12, help="held-out emoji in the picture")
    args = p.parse_args()
    torch.manual_seed(0)
    from torchdiffusion.io import atomic_write
    from torchdiffusion.viz import save_grid

    figures, pictures = measure(args.runs, args.classifier)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "figures.json", json.dumps(figures, indent=2) + "\n")
    write_table(figures, args.runs, args.out / "table.md")
    idx = torch.linspace(0, len(pictures["originals"]) - 1, args.show).round().long()
    rows = torch.cat([v[idx].expand(-1, 3, -1, -1) for v in pictures.values()])  # gray shown as RGB
    save_grid(rows, args.out / "reconstructions.png", nrow=args.show, scale=1)
    bar_chart(figures, args.runs, args.out / "effect.png")
    print(json.dumps(figures, indent=2))
    print("rows of reconstructions.png:", ", ".join(pictures))


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
