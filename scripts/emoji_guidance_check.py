"""Guidance check of the context- and text-conditioned models on the 16 px emoji sprites.

    .venv/bin/python scripts/emoji_guidance_check.py context --out runs/emoji-context
    .venv/bin/python scripts/emoji_guidance_check.py text --out runs/emoji-text
    (add --skip-train to only measure an existing run)

``context``: trains the ``emoji-context`` preset (one-hot category as the context vector); trains an evaluation
classifier of the six categories on real sprites (80 % of them; accuracy on the other 20 % reported), then
samples ``--per-class`` sprites of each category at several guidance scales and reports the share the
classifier assigns to the requested category (a grid per scale goes to ``docs/images``).

``text``: attaches MiniLM token features of every caption (torchdiffusion.text.encode_captions), trains the
``emoji-text`` preset, samples 8 sprites for each of five prompts at several scales (grid in ``docs/images``)
and scores caption retrieval: each sample is read as the caption of its nearest real sprite and matched to the
most similar of the five prompts by MiniLM (chance = 20 %).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

PROMPTS = ["red apple", "banana", "evergreen tree", "ghost", "rocket"]


def train_run(preset: str, out: Path, data, images: int | None):
    from torchdiffusion.presets import get_preset
    from torchdiffusion.training import train

    cfg = get_preset(preset)
    if images:
        cfg = replace(cfg, train=replace(cfg.train, images=images))
    t = time.time()
    train(cfg, out, progress=sys.stderr.isatty(), data=data)
    print(f"trained {preset} in {time.time() - t:.0f} s (rough; shared CPU)", file=sys.stderr)


def eval_classifier(data, out: Path, epochs: int):
    """The category classifier on real sprites: trained on 80 %, accuracy on the held-out 20 %; cached in OUT."""
    from torchdiffusion.evaluation.classifier import (
        ClassifierConfig,
        accuracy,
        load_classifier_file,
        save_classifier,
        train_classifier,
    )

    path = out / "eval-classifier.safetensors"
    if path.is_file():
        return load_classifier_file(path), json.loads(path.with_suffix(".json").read_text())
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    n_te = len(data) // 5
    te, tr = perm[:n_te], perm[n_te:]
    K = len(data.class_names)
    net = train_classifier(
        data.x[tr],
        data.labels[tr],
        cfg=ClassifierConfig(in_channels=data.x.shape[1], num_classes=K),
        epochs=epochs,
        max_shift=1,
        noise_std=0.02,
    )
    card = {
        "heldout_accuracy": accuracy(net, data.x[te], data.labels[te]),
        "heldout_images": n_te,
        "train_accuracy": accuracy(net, data.x[tr], data.labels[tr]),
        "epochs": epochs,
        "classes": data.class_names,
        "chance_majority": float(torch.bincount(data.labels[te]).max() / n_te),
    }
    save_classifier(net, path, card)
    return net, card


def grid_scale(args, run) -> float:
    """Guidance scale of the docs grid: --grid-guidance, else the run's sample.guidance."""
    return float(args.grid_guidance if args.grid_guidance is not None else run.config.sample.guidance)


def run_context(args, out: Path, docs: Path) -> dict:
    from torchdiffusion.config import DataConfig
    from torchdiffusion.data import load_data
    from torchdiffusion.evaluation.classifier import class_report
    from torchdiffusion.generate import generate, load_run
    from torchdiffusion.viz import save_grid

    data = load_data(DataConfig(source="emoji", emoji_size=16))
    if not args.skip_train:
        train_run("emoji-context", out, data, args.images)
    clf, card = eval_classifier(data, out, args.clf_epochs)
    print(f"category classifier on held-out real sprites: {card['heldout_accuracy']:.3f}", file=sys.stderr)
    run = load_run(out)
    K = len(data.class_names)
    want = torch.arange(args.per_class * K) % K
    ctx = torch.nn.functional.one_hot(want, K).float()
    res = {"classifier": card, "per_class": args.per_class, "scales": {}}
    for w in [float(s) for s in args.scales.split(",")]:
        x = generate(
            run.model, range(len(want)), replace(run.config.sample, guidance=w), run.data_shape, cond={"context": ctx}
        )
        rep = class_report(x, clf, labels=want)
        res["scales"][f"{w:g}"] = {"accuracy": rep["accuracy"], "per_class_accuracy": rep["per_class_accuracy"]}
        save_grid(x[: 8 * K], out / f"samples-w{w:g}.png", nrow=K)
        print(f"w = {w:g}: category accuracy {rep['accuracy']:.3f}", file=sys.stderr)
    w_grid = grid_scale(args, run)
    save_grid(
        generate(
            run.model,
            range(8 * K),
            replace(run.config.sample, guidance=w_grid),
            run.data_shape,
            cond={"context": torch.eye(K)[torch.arange(8 * K) % K]},
        ),
        docs / "emoji-context-grid.png",
        nrow=K,
    )
    res["grid_guidance"] = w_grid
    return res


def run_text(args, out: Path, docs: Path) -> dict:
    from torchdiffusion.config import DataConfig
    from torchdiffusion.data import load_data
    from torchdiffusion.generate import generate, load_run
    from torchdiffusion.text import caption_retrieval, encode_captions, prompt_cond
    from torchdiffusion.viz import save_grid

    data = encode_captions(load_data(DataConfig(source="emoji", emoji_size=16)))
    if not args.skip_train:
        train_run("emoji-text", out, data, args.images)
    run = load_run(out)
    prompts = [t.strip() for t in args.prompts.split(",")] if args.prompts else PROMPTS
    P = len(prompts)
    per = args.per_prompt
    idx = torch.arange(per * P) % P  # column k = prompt k
    cond = prompt_cond(prompts, per * P)
    res = {"prompts": prompts, "per_prompt": per, "scales": {}}
    for w in [float(s) for s in args.scales.split(",")]:
        x = generate(run.model, range(per * P), replace(run.config.sample, guidance=w), run.data_shape, cond=cond)
        r = caption_retrieval(x, idx, prompts, data.x, data.captions)
        res["scales"][f"{w:g}"] = {k: v for k, v in r.items() if k != "neighbour_captions"}
        res["scales"][f"{w:g}"]["neighbours_first_row"] = r["neighbour_captions"][:P]
        save_grid(x, out / f"samples-w{w:g}.png", nrow=P)
        print(
            f"w = {w:g}: retrieval {r['accuracy']:.3f} (chance {r['chance']:.2f}), exact caption "
            f"{r['exact_caption']:.3f}",
            file=sys.stderr,
        )
    best = grid_scale(args, run)
    x = generate(run.model, range(per * P), replace(run.config.sample, guidance=best), run.data_shape, cond=cond)
    save_grid(x, docs / (args.grid_name or "emoji-text-grid.png"), nrow=P)
    res["grid_guidance"] = best
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["context", "text"])
    ap.add_argument("--out", default=None, help="run folder (default runs/emoji-<mode>)")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--images", type=int, default=None, help="override the preset's training length")
    ap.add_argument("--scales", default="0,1,3")
    ap.add_argument("--per-class", type=int, default=30, help="context: samples per category and scale")
    ap.add_argument("--per-prompt", type=int, default=8, help="text: samples per prompt and scale")
    ap.add_argument("--clf-epochs", type=int, default=100)
    ap.add_argument("--grid-guidance", type=float, default=None, help="scale of the docs grid (default: the run's)")
    ap.add_argument("--prompts", default=None, help="text: comma-separated prompts (default: five emoji names)")
    ap.add_argument("--grid-name", default=None, help="text: file name of the docs grid")
    ap.add_argument("--json", default="guidance-check.json", help="report file name inside the run folder")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--docs", default="docs/images")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out or f"runs/emoji-{args.mode}")
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    res = run_context(args, out, docs) if args.mode == "context" else run_text(args, out, docs)
    (out / args.json).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "classifier"}, indent=1)[:3000])
    return 0


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
