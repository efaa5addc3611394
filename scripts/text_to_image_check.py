"""Text-to-image in latents, judged by the contrastive model: held-out captions and their paraphrases -> samples
-> zero-shot category; and the contrastive model's own held-out retrieval and zero-shot figures.

    OMP_NUM_THREADS=1 python scripts/text_to_image_check.py --clip runs/emoji32-seq-clip \
        --run runs/emoji64-ldm-text --judge-prompts emoji --sweep 1,3,5,8 --sweep-emoji 64 --guidance 5 \
        --json docs/benchmarks/text-to-image.json --grid docs/images/latent-text-to-image.png

Without ``--run`` only the contrastive model is measured. The held-out emoji are the run's (the contrastive
model must hold out the same ones: same data section and seed, checked). Each held-out emoji (a group: an
emoji with its skin-tone variants) gives ONE prompt, its shortest caption ("kiss man man"), and three
paraphrases built by the templates below ("a red apple", "an apple, red", "an emoji of a red apple").
Each prompt is sampled ``--per-prompt`` times (seeds 0, 1, ...) with the run's sampler at each guidance scale;
a sample counts when the contrastive model reads the category of the emoji the prompt names. ``--judge-by``
says how it reads: ``captions`` (default) retrieves the ``--judge-k`` training captions nearest the image and
takes their similarity-weighted majority category (``contrastive.metrics.caption_vote_classes``; the gallery is
the training split, so a held-out emoji's own caption is never in it); ``prompts`` takes the nearest category
prompt embedding (zero-shot, ``contrastive.metrics.zero_shot_classes``). The same reader on the real held-out
images (one per emoji, and all of them) is the reference a perfect generator would reach.

``--seen N`` also samples the captions of N training emoji (their shortest caption each) and judges them the same
way: how well the generator draws what it was trained on, apart from how it carries that to new captions (for a
retrieval run a seen caption retrieves its own emoji among its neighbours). ``--state`` measures a training state
of the run (its EMA weights) instead of its final weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

# Paraphrase templates over a caption's words. "reordered" puts the noun first for a two-word caption ("red apple"
# -> "an apple, red"); a longer caption ("face with rolling eyes") keeps its order and becomes "a picture of ...".
PARAPHRASES = {
    "article": "{a} {caption}",  # "a red apple"
    "reordered": "{a_second} {second}, {first}",  # "an apple, red"
    "emoji of": "an emoji of {a} {caption}",  # "an emoji of a red apple"
}
LONG_REORDERED = "a picture of {a} {caption}"


# --sigma-grid / --spacing / --retrieval-guidance: the sampler's grid kind, spacing and retrieval guidance in place
# of the run's
SAMPLE: dict = {}


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def paraphrase(caption: str, template: str) -> str:
    """``caption`` through one of :data:`PARAPHRASES`' templates."""
    words = caption.split()
    if template == PARAPHRASES["reordered"] and len(words) != 2:
        template = LONG_REORDERED
    first, second = (words + [""])[:2]
    return template.format(a=article(caption), caption=caption, a_second=article(second), second=second, first=first)


def emoji_prompts(data) -> tuple[list[str], list[int], list[int]]:
    """(prompt, category, index of its image) per emoji of ``data`` (a group: an emoji and its skin-tone
    variants): the group's shortest caption and its image."""
    groups = data.groups if data.groups is not None else torch.arange(len(data))
    best: dict[int, int] = {}
    for i, g in enumerate(groups.tolist()):
        if g not in best or len(data.captions[i]) < len(data.captions[best[g]]):
            best[g] = i
    idx = sorted(best.values())
    return [data.captions[i] for i in idx], [int(data.labels[i]) for i in idx], idx


def category_reader(clip, args, gallery, class_names):
    """x -> (N,) categories as the judge reads them (``--judge-by``), and a record of how."""
    from torchdiffusion.contrastive.metrics import EMOJI_PROMPTS, PLAIN_PROMPTS, caption_vote_classes, zero_shot_classes

    if args.judge_by == "captions":
        how = {"by": "captions", "k": args.judge_k, "gallery": f"{len(gallery)} training captions"}
        return lambda x: caption_vote_classes(
            clip, x, gallery.captions, gallery.labels, len(class_names), args.judge_k
        ), how
    templates = EMOJI_PROMPTS if args.judge_prompts == "emoji" else PLAIN_PROMPTS
    return lambda x: zero_shot_classes(clip, x, class_names, templates), {"by": "prompts", "templates": list(templates)}


def read_accuracy(read, x, labels, names: list[str] | None = None) -> dict:
    """The share of ``x`` read as its label; with ``names``, also per category: that share and what its images
    were read as (counts per category, in ``names`` order)."""
    pred, labels = read(x), torch.as_tensor(labels).long()
    out = {"accuracy": float((pred == labels).double().mean()), "n": len(labels)}
    if names:
        out["by_category"] = {
            name: {
                "n": int((labels == c).sum()),
                "accuracy": float((pred[labels == c] == c).double().mean()) if (labels == c).any() else None,
                "read_as": torch.bincount(pred[labels == c], minlength=len(names)).tolist(),
            }
            for c, name in enumerate(names)
        }
    return out


def contrastive_section(clip, data, idx: list[int], read, how: dict) -> dict:
    """Retrieval and zero-shot (plain category names) of the contrastive model on all held-out images and on one
    per emoji, and the judge's reading (``read``) of the real held-out images."""
    from torchdiffusion.contrastive.metrics import heldout_report, retrieval, zero_shot

    one = [data.captions[i] for i in idx]
    rep = heldout_report(clip, data)
    rep["retrieval_one_per_emoji"] = retrieval(clip, data.x[idx], one)
    rep["zero_shot_one_per_emoji"] = zero_shot(clip, data.x[idx], data.labels[idx], data.class_names)
    rep["judge"] = how
    rep["judge_on_real_images"] = {
        "all": read_accuracy(read, data.x, data.labels),
        "one_per_emoji": read_accuracy(read, data.x[idx], data.labels[idx], data.class_names),
    }
    return rep


def sample_prompts(run, prompts: list[str], per_prompt: int, guidance: float) -> torch.Tensor:
    """(P * per_prompt, C, H, W) decoded samples, prompt-major; image k of every prompt uses seed k."""
    from torchdiffusion.generate import generate
    from torchdiffusion.text import prompt_cond

    cond = prompt_cond(prompts)
    if run.retrieval is not None:  # model.text_retrieval: each prompt's nearest training examples join it
        from torchdiffusion.retrieval import with_neighbours

        cond = with_neighbours(cond, run.retrieval)
    rep = torch.arange(len(prompts)).repeat_interleave(per_prompt)
    cond = {k: v[rep] for k, v in cond.items()}
    seeds = list(range(per_prompt)) * len(prompts)
    sample = replace(run.config.sample, guidance=guidance, batch_size=128, **SAMPLE)
    return generate(run.model, seeds, sample, run.data_shape, cond=cond, codec=run.codec)


def measure_set(run, read, prompts, labels, w, per_prompt, names=None) -> tuple[dict, torch.Tensor]:
    """The share of the samples of ``prompts`` at guidance ``w`` read as their prompt's category (with ``names``:
    per category too); the samples."""
    t = time.time()
    x = sample_prompts(run, prompts, per_prompt, w)
    asked = torch.tensor(labels).repeat_interleave(per_prompt)
    return read_accuracy(read, x, asked, names) | {"seconds": round(time.time() - t, 1)}, x


def measure_run(run, read, prompts, labels, w, per_prompt, names=None) -> tuple[dict, dict]:
    """At guidance ``w``, per prompt set (the captions and each paraphrase template): the share of samples read
    as the prompt's category; and the samples."""
    sets = {"caption": prompts, **{k: [paraphrase(p, t) for p in prompts] for k, t in PARAPHRASES.items()}}
    row, kept = {}, {}
    for name, ps in sets.items():
        row[name], kept[name] = measure_set(run, read, ps, labels, w, per_prompt, names)
        print(f"w={w} {name}: {row[name]['accuracy']:.3f} ({row[name]['n']} samples)", file=sys.stderr)
    n = sum(r["n"] for r in row.values())
    row["paraphrases and captions"] = {"accuracy": sum(r["accuracy"] * r["n"] for r in row.values()) / n, "n": n}
    return row, {"sets": sets, "samples": kept}


def sweep(run, read, prompts, labels, scales, per_prompt) -> dict:
    """The captions alone at each guidance scale (the cheaper measurement that picks the scale)."""
    out = {}
    for w in scales:
        out[str(w)], _ = measure_set(run, read, prompts, labels, w, per_prompt)
        print(f"sweep w={w}: {out[str(w)]['accuracy']:.3f} ({out[str(w)]['n']} samples)", file=sys.stderr)
    return out


def save_figure(path: Path, real, sets, samples, w, rows: list[int], per_prompt: int, retrieved=None) -> None:
    """Rows: held-out emoji; columns: the real image, then the samples of the caption and each paraphrase; with
    ``retrieved`` (a retrieval run) the caption's nearest training image comes second."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(sets)
    cols = 1 + len(names) + (retrieved is not None)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.9 * cols, 1.35 * len(rows) + 0.3), squeeze=False)
    for r, p in enumerate(rows):
        pics = [real[p]] + [samples[n][p * per_prompt] for n in names]
        titles = ["held-out image"] + [sets[n][p] for n in names]
        if retrieved is not None:
            pics.insert(1, retrieved[p])
            titles.insert(1, "nearest training image")
        for c, (img, title) in enumerate(zip(pics, titles)):
            ax = axes[r][c]
            ax.imshow(((img.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy())
            ax.set_title(title if len(title) < 30 else title[:28] + "...", fontsize=6)
            ax.axis("off")
    fig.suptitle(f"held-out captions and paraphrases -> samples (guidance {w})", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", required=True, help="train-clip run folder (the judge)")
    ap.add_argument("--run", help="text-conditioned latent run (emoji64-ldm-text); omit to measure the judge alone")
    ap.add_argument("--data-from", help="without --run: a config.json whose data section names the held-out emoji")
    ap.add_argument("--guidance", type=float, default=5.0, help="the guidance scale of the full measurement")
    ap.add_argument("--sigma-grid", default="", help="sigma grid kind in place of the run's sample.grid (karras, ...)")
    ap.add_argument(
        "--retrieval-guidance",
        type=float,
        default=0.0,
        help="sample.retrieval_guidance w_n (a run trained with train.caption_drop_prob > 0); 0 = the run's",
    )
    ap.add_argument("--spacing", default="", help="timestep spacing in place of the run's (leading, trailing, ...)")
    ap.add_argument("--sweep", help="comma-separated guidance scales tried on the captions alone first")
    ap.add_argument("--sweep-emoji", type=int, default=0, help="the sweep uses the first N held-out emoji (0 = all)")
    ap.add_argument(
        "--judge-prompts",
        choices=("plain", "emoji"),
        default="plain",
        help="with --judge-by prompts: the names (plain) or the names through contrastive.metrics.EMOJI_PROMPTS",
    )
    ap.add_argument("--judge-by", choices=("captions", "prompts"), default="captions", help="how the judge reads")
    ap.add_argument("--judge-k", type=int, default=5, help="with --judge-by captions: nearest training captions")
    ap.add_argument("--per-prompt", type=int, default=1, help="samples per prompt")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N held-out emoji (0 = all)")
    ap.add_argument(
        "--seen",
        type=int,
        default=0,
        help="also sample the captions of N training emoji (drawn with seed 0): how well the run draws what it saw",
    )
    ap.add_argument("--state", type=Path, help="a training state of the run (checkpoints/state-*.pt): its EMA weights")
    ap.add_argument("--figure-rows", type=int, default=8)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--grid", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from torchdiffusion.config import to_dict
    from torchdiffusion.contrastive import load_contrastive
    from torchdiffusion.data import load_data
    from torchdiffusion.generate import load_run

    t0 = time.time()
    SAMPLE.update({k: v for k, v in (("grid", args.sigma_grid), ("spacing", args.spacing)) if v})
    if args.retrieval_guidance:
        SAMPLE["retrieval_guidance"] = args.retrieval_guidance
    if args.seen < 0:
        sys.exit(f"--seen must be >= 0, got {args.seen}")
    if args.state is not None and not args.run:
        sys.exit("--state needs --run (the run the state belongs to)")
    clip, _ = load_contrastive(args.clip)
    clip_cfg = json.loads((Path(args.clip) / "config.json").read_text())
    run = load_run(args.run) if args.run else None
    if args.state is not None:
        images = load_state_ema(run, args.state)
    data_cfg, seed = judged_split(run, clip_cfg)
    data = load_data(data_cfg, split="holdout", seed=seed)
    train = load_data(data_cfg, split="train", seed=seed)
    read, how = category_reader(clip, args, train, data.class_names)
    prompts, labels, idx = emoji_prompts(data)
    if args.limit:
        prompts, labels, idx = prompts[: args.limit], labels[: args.limit], idx[: args.limit]
    report = {
        "heldout": {"images": len(data), "emoji": len(prompts), "data": to_dict(data_cfg), "seed": seed},
        "contrastive": {"run": str(args.clip), **contrastive_section(clip, data, idx, read, how)},
        "paraphrase_templates": PARAPHRASES,
    }
    if run is not None:
        report["text_to_image"] = text_to_image_section(run, read, data, prompts, labels, idx, args, train)
        if args.state is not None:
            report["text_to_image"] |= {"state": str(args.state), "state_images": images}
        if args.seen:
            report["seen"] = seen_section(run, read, train, args)
    report["seconds"] = round(time.time() - t0, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary(report), indent=2))
    return 0


def text_to_image_section(run, read, data, prompts, labels, idx, args, train) -> dict:
    """The guidance sweep on the first ``--sweep-emoji`` captions, then every prompt set at ``--guidance``; for a
    retrieval run (``model.text_retrieval``) also :func:`retrieval_section`."""
    s = run.config.sample
    out = {
        "run": str(args.run),
        "sampler": f"{s.sampler}, {s.steps} steps, grid {args.sigma_grid or s.grid} ({args.spacing or s.spacing})",
        "retrieval_guidance": SAMPLE.get("retrieval_guidance", s.retrieval_guidance),
        "per_prompt": args.per_prompt,
    }
    if args.sweep:
        k = args.sweep_emoji or len(prompts)
        scales = [float(v) for v in args.sweep.split(",")]
        out["sweep_emoji"] = k
        out["sweep"] = sweep(run, read, prompts[:k], labels[:k], scales, args.per_prompt)
    row, kept = measure_run(run, read, prompts, labels, args.guidance, args.per_prompt, data.class_names)
    out |= {"guidance": args.guidance, "by_prompt_set": row, "examples": {k: v[:5] for k, v in kept["sets"].items()}}
    retrieved = None
    if run.retrieval is not None:
        out["retrieval"], retrieved = retrieval_section(run, read, data, train, labels, kept)
    if args.grid:
        rows = list(range(0, len(prompts), max(1, len(prompts) // args.figure_rows)))[: args.figure_rows]
        save_figure(
            args.grid, data.x[idx], kept["sets"], kept["samples"], args.guidance, rows, args.per_prompt, retrieved
        )
    return out


def seen_section(run, read, train, args) -> dict:
    """The captions of ``--seen`` training emoji (one prompt per emoji, a random draw with seed 0), sampled and
    judged like the held-out ones, and the judge on those emoji's real images: the gap between the two is how far
    the generator is from drawing even the emoji it was trained on (a fit ceiling under the held-out figure)."""
    prompts, labels, idx = emoji_prompts(train)  # one prompt per training emoji, the rule of the held-out ones
    pick = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(0))[: args.seen].tolist()
    prompts, labels, idx = [prompts[i] for i in pick], [labels[i] for i in pick], [idx[i] for i in pick]
    row, _ = measure_set(run, read, prompts, labels, args.guidance, args.per_prompt, train.class_names)
    print(f"seen captions w={args.guidance}: {row['accuracy']:.3f} ({row['n']} samples)", file=sys.stderr)
    return {"emoji": len(prompts), "captions": row, "judge_on_real_images": read_accuracy(read, train.x[idx], labels)}


def load_state_ema(run, path: Path) -> int:
    """Put the EMA weights of a training state of ``run`` into ``run.model`` (a state's ``ema`` is the averaged
    network's state dict, what ``ema.safetensors`` holds); the state's image count."""
    from torchdiffusion.training import CheckpointError, load_state

    try:
        state = load_state(path)
        run.model.load_state_dict(state["ema"])
    except CheckpointError as e:
        sys.exit(str(e))
    except OSError as e:
        sys.exit(f"cannot read the training state {path}: {e.strerror or e}")
    except (KeyError, RuntimeError):
        sys.exit(f"{path} is not a training state of {run.path} (its EMA weights do not fit the run's network)")
    return int(state["images_seen"])


def retrieval_section(run, read, data, train, labels, kept) -> dict:
    """What retrieval alone gives, and whether the samples are copies of training emoji; and the captions'
    nearest training images (for the figure).

    ``nearest_retrieved_image``: per prompt set, the share of prompts whose single nearest training image (by
    caption, as the run retrieves) the judge reads as the prompt's category - a retrieval system that returns a
    training emoji instead of drawing one. ``distance_to_nearest_training_image``: the median RMS pixel distance
    (in [-1, 1] units) from each caption sample, and from each real held-out image (new emoji by construction),
    to its nearest training image; samples copied from the training set would sit far below the held-out images.
    """
    from torchdiffusion.text import get_encoder

    if len(train) != run.retrieval.keys.shape[0]:
        sys.exit("the run's retrieval database does not match the training split of its data section")
    keys = run.retrieval.keys.float()
    asked = torch.tensor(labels)
    alone, first = {}, None
    for name, ps in kept["sets"].items():
        nearest = train.x[(get_encoder().embed(ps) @ keys.T).argmax(1)]
        alone[name] = float((read(nearest) == asked).double().mean())
        first = nearest if first is None else first

    def median_nearest(x: torch.Tensor) -> float:
        flat, ref = x.flatten(1).float(), train.x.flatten(1).float()
        d = torch.cat([torch.cdist(flat[i : i + 256], ref).min(1).values for i in range(0, len(flat), 256)])
        return float((d / flat.shape[1] ** 0.5).median())

    samples = kept["samples"]["caption"]
    return {
        "k": run.retrieval.k,
        "nearest_retrieved_image": alone,
        "distance_to_nearest_training_image": {
            "caption samples (median)": median_nearest(samples.clamp(-1, 1)),
            "real held-out images (median)": median_nearest(data.x),
        },
    }, first


def judged_split(run, clip_cfg: dict):
    """(pixel data section, seed) of the held-out emoji: the run's when given, else the contrastive model's; a
    contrastive model trained on other images (another holdout, set or seed) is refused."""
    from torchdiffusion.config import DataConfig, from_dict
    from torchdiffusion.data import data_seed

    clip_data = from_dict(DataConfig, clip_cfg["data"])
    clip_seed = data_seed(clip_data, int(clip_cfg["train"]["seed"]))
    if run is None:
        return clip_data, clip_seed
    d = replace(run.config.data, latents_of=None)
    seed = data_seed(d, run.config.train.seed)  # data.seed when set: the split, whatever train.seed
    same = (d.emoji_set, d.holdout, d.source) == (clip_data.emoji_set, clip_data.holdout, clip_data.source)
    if not same or seed != clip_seed:
        sys.exit("the contrastive model holds out other emoji than the run (data.emoji_set/holdout or seed differ)")
    return d, seed


def summary(report: dict) -> dict:
    c = report["contrastive"]
    out = {
        "caption_to_image (all held-out images)": c["retrieval"]["caption_to_image"],
        "caption_to_image (one per emoji)": c["retrieval_one_per_emoji"]["caption_to_image"],
        "zero_shot (all)": c["zero_shot"]["accuracy"],
        "zero_shot (one per emoji)": c["zero_shot_one_per_emoji"]["accuracy"],
        "judge on real images (one per emoji)": c["judge_on_real_images"]["one_per_emoji"]["accuracy"],
        "judge on real images (all)": c["judge_on_real_images"]["all"]["accuracy"],
    }
    t2i = report.get("text_to_image", {})
    for w, r in t2i.get("sweep", {}).items():
        out[f"sweep w={w} (captions)"] = round(r["accuracy"], 3)
    if "by_prompt_set" in t2i:
        out[f"w={t2i['guidance']}"] = {k: round(v["accuracy"], 3) for k, v in t2i["by_prompt_set"].items()}
        real = c["judge_on_real_images"]["one_per_emoji"]["by_category"]
        out[f"w={t2i['guidance']} captions by category (real images)"] = {
            name: f"{r['accuracy']:.3f} ({real[name]['accuracy']:.3f})"
            for name, r in t2i["by_prompt_set"]["caption"]["by_category"].items()
            if r["n"]
        }
    if "retrieval" in t2i:
        out["retrieval"] = t2i["retrieval"]
    if "seen" in report:
        seen = report["seen"]
        out["seen captions"] = {
            "samples": round(seen["captions"]["accuracy"], 3),
            "real images": round(seen["judge_on_real_images"]["accuracy"], 3),
        }
    return out


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
