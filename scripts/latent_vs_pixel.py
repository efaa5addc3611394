"""Latent vs pixel diffusion, and DiT vs U-Net in latents, at an equal CPU budget: quality against CPU minutes.

    OMP_NUM_THREADS=1 python scripts/latent_vs_pixel.py train --ae runs/emoji64-ae --out runs/lvp --cpu-minutes 15
    OMP_NUM_THREADS=1 python scripts/latent_vs_pixel.py evaluate --out runs/lvp --classifier CLF.safetensors \\
        [--n 60] [--runs emoji64-pixel --every 2]
    python scripts/latent_vs_pixel.py report --out runs/lvp --docs docs/benchmarks/latent-vs-pixel

``train`` encodes the emoji's latents once (the cache every latent run reads; its CPU seconds are reported
apart), then starts the three trainings at the same time, each with one thread and the same process-CPU budget
(``train.cpu_minutes``): ``emoji64-ldm`` (U-Net on the 3 x 16 x 16 latents of ``--ae``), ``emoji64-dit`` (a DiT of
the same forward FLOPs per example on the same latents) and ``emoji64-pixel`` (the same U-Net on 3 x 64 x 64
pixels). Each keeps a training state every few images; a state records the run's cumulative CPU seconds.

``evaluate`` reads every state not yet evaluated (so it can run while the trainings go on, and again after):
its EMA weights draw ``--n`` class-conditional samples (seeds 0..n-1, classes 0..5 in turn) with the preset's
sampler (DPM-Solver++(2M), 20 steps, classifier-free guidance 2), decoded for the latent runs; then

* category accuracy: the share of samples the category classifier (``--classifier``, trained on real 64 px
  emoji) puts in the category the sample was conditioned on;
* with ``--clip`` (a train-clip run on the same emoji and holdout, e.g. ``emoji64-lit``): the same accuracy read by
  the contrastive model, each sample's five nearest training captions voting for their category
  (``contrastive.metrics.caption_vote_classes``). The small CNN reads samples unlike any training emoji as its
  most common category; the contrastive judge's image features come from a frozen ImageNet network;
* the Fréchet distance between the samples and the real 64 px training images in the same classifier's 128-d
  penultimate features (``--effnet``: also in EfficientNet-Lite0's 1280-d ImageNet features at 224 px, slow on a
  CPU);
* at the same ``n``, the floor: the same figures for ``n`` real held-out images (whole emoji the models never saw).

``report`` writes ``DOCS/latent-vs-pixel.json``, ``DOCS/table.md`` and ``DOCS/quality-vs-cpu.png`` (both curves
against CPU minutes of training). ``pictures`` draws the latent pipeline of docs/latent.md: held-out originals,
their latents (as RGB), reconstructions, then sampled latents (as RGB) and their decodes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

LATENT, PIXEL = ("emoji64-ldm", "emoji64-dit"), "emoji64-pixel"
PRESETS = (*LATENT, PIXEL)
CHECKPOINT_EVERY = {"emoji64-ldm": 2048, "emoji64-dit": 2048, PIXEL: 256}  # images between training states
EVALS = "evals"  # OUT/evals/<preset>.json and floor.json: one file per writer, so evaluations can run side by side


def train_command(preset: str, out: Path, ae: Path, cpu_minutes: float) -> list[str]:
    sets = [
        f"train.cpu_minutes={cpu_minutes}",
        "train.images=10000000",  # the budget ends the run long before
        "train.threads=1",
        f"train.checkpoint_every_images={CHECKPOINT_EVERY[preset]}",
        "train.keep_checkpoints=1000",
        f"train.log_every_images={CHECKPOINT_EVERY[preset] // 2}",
        "sample.n=12",  # the final grid only; the figures come from `evaluate`
    ]
    if preset in LATENT:
        sets.append(f"data.latents_of={ae}")
    cmd = [sys.executable, "-m", "torchdiffusion", "train", "--preset", preset, "--out", str(out / preset)]
    return [*cmd, *(a for s in sets for a in ("--set", s)), "--no-progress"]


def encode_once(out: Path, ae: Path) -> dict:
    """The latent cache of the training split, encoded here once (what every latent run then reads)."""
    from torchdiffusion.config import override
    from torchdiffusion.latent import training_latents
    from torchdiffusion.presets import get_preset

    cfg = override(get_preset(LATENT[0]), [f"data.latents_of={ae}"])
    t0, w0 = time.process_time(), time.perf_counter()
    data = training_latents(cfg, None, resume=False, progress=True)
    rec = {"images": int(data.x.shape[0]), "cpu_s": time.process_time() - t0, "wall_s": time.perf_counter() - w0}
    (out / "encode.json").write_text(json.dumps(rec, indent=2) + "\n")
    return rec


def cmd_train(args) -> None:
    out, ae = Path(args.out), Path(args.ae).resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    presets, procs = args.presets.split(","), []

    def start(preset: str) -> None:
        cmd = train_command(preset, out, ae, args.cpu_minutes)
        print(" ".join(cmd), flush=True)
        log = open(out / f"{preset}.log", "a")  # noqa: SIM115 - closed when the process ends
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs.append((preset, subprocess.Popen(cmd, stdout=log, stderr=log, env=env)))

    for preset in (p for p in presets if p not in LATENT):  # the pixel run needs no latents: it starts at once
        start(preset)
    if any(p in LATENT for p in presets):
        print("encoding once:", encode_once(out, ae), flush=True)
    for preset in (p for p in presets if p in LATENT):
        start(preset)
    for preset, p in procs:
        print(preset, "exit code", p.wait(), flush=True)


def run_setup(run: Path, sample_sets: list[str]):
    """(config with the ``sample.*`` overrides, data shape, codec or None) of a run folder."""
    from torchdiffusion.config import from_json, override
    from torchdiffusion.latent import codec_of_run

    cfg = override(from_json((run / "config.json").read_text()), sample_sets)
    info = json.loads((run / "run.json").read_text())
    return cfg, tuple(info["data_shape"]), codec_of_run(run, info)


def ema_model(cfg, shape, state: dict):
    from torchdiffusion.model import build_model
    from torchdiffusion.training import EMA

    torch.manual_seed(0)
    ema = EMA(build_model(cfg, shape))
    ema.load_state_dict(state["ema"])
    return ema.module.eval().requires_grad_(False)


def real_images(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The real 64 px emoji of a split (pixels, not latents) and their categories."""
    from torchdiffusion.data import load_data
    from torchdiffusion.presets import get_preset

    cfg = get_preset(PIXEL)
    data = load_data(cfg.data, split=split, seed=cfg.train.seed)
    return data.x.float(), data.labels


class Judge:
    """Category accuracy and Fréchet distances (classifier and EfficientNet-Lite0 features) against the real
    training images."""

    def __init__(self, classifier: str, cache: Path, effnet: bool = False, clip: str | None = None, k: int = 5):
        from safetensors.torch import load_file

        from torchdiffusion.evaluation import features as FE
        from torchdiffusion.evaluation.classifier import classifier_from
        from torchdiffusion.evaluation.metrics import FeatureStats
        from torchdiffusion.io import save_safetensors, sha256_file

        self.net, self.FE, self.Stats, self.effnet = classifier_from(classifier), FE, FeatureStats, effnet
        digest = sha256_file(Path(classifier))[:16] + ("-effnet" if effnet else "")
        if cache.is_file() and load_file(str(cache)).get("classifier_" + digest) is not None:
            feats = load_file(str(cache))
        else:  # the real training images' features, computed once per classifier
            feats = self.features(real_images("train")[0]) | {"classifier_" + digest: torch.zeros(1)}
            save_safetensors({k: v.contiguous() for k, v in feats.items()}, cache)
        self.ref = {name: FeatureStats.of(feats[name]) for name in ("clf64", "effnet_lite0") if name in feats}
        self.read = contrastive_reader(clip, k) if clip else None

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> dict:
        clf = torch.cat([self.net.features(b.clamp(-1, 1)) for b in x.split(256)])
        out = {"clf64": clf}
        if self.effnet:
            out["effnet_lite0"] = self.FE.extract(x, "effnet_lite0")
        return out

    @torch.no_grad()
    def judge(self, x: torch.Tensor, labels: torch.Tensor) -> dict:
        from torchdiffusion.evaluation.metrics import frechet_distance

        pred = torch.cat([self.net(b.clamp(-1, 1)).argmax(1) for b in x.split(256)])
        out = {"accuracy": float((pred == labels).float().mean())}
        if self.read is not None:
            out["accuracy_contrastive"] = float((self.read(x) == labels).float().mean())
        for name, f in self.features(x).items():
            out[f"fd_{name}"] = frechet_distance(self.Stats.of(f), self.ref[name])
        return out


def contrastive_reader(clip: str, k: int):
    """x -> (N,) categories read by a train-clip run (its k nearest training captions vote,
    ``contrastive.metrics.caption_vote_classes``): a second category judge, trained on the same real 64 px emoji
    and the same holdout as the runs (a contrastive model of another holdout is refused)."""
    from torchdiffusion.config import DataConfig, from_dict
    from torchdiffusion.contrastive import load_contrastive
    from torchdiffusion.contrastive.metrics import caption_vote_classes
    from torchdiffusion.data import load_data
    from torchdiffusion.presets import get_preset

    model, _ = load_contrastive(clip)
    ccfg = json.loads((Path(clip) / "config.json").read_text())
    data, mine = from_dict(DataConfig, ccfg["data"]), get_preset(PIXEL)
    same = (data.source, data.emoji_set, data.holdout, data.emoji_size) == (
        mine.data.source,
        mine.data.emoji_set,
        mine.data.holdout,
        mine.data.emoji_size,
    )
    if not same or int(ccfg["train"]["seed"]) != mine.train.seed:
        sys.exit(f"--clip {clip}: trained on other emoji or another holdout than {PIXEL}")
    gallery = load_data(data, split="train", seed=mine.train.seed)
    n = len(gallery.class_names)
    return lambda x: caption_vote_classes(model, x.clamp(-1, 1), gallery.captions, gallery.labels, n, k)


def samples(model, cfg, shape, codec, n: int) -> torch.Tensor:
    from torchdiffusion.generate import generate

    cond = {"class": torch.arange(n) % cfg.model.num_classes}
    return generate(model, range(n), replace(cfg.sample, n=n), shape, cond=cond, codec=codec)


def evaluate_state(path: Path, run: Path, judge: Judge, n: int, sample_sets: list[str]) -> dict:
    from torchdiffusion.training import load_state

    cfg, shape, codec = run_setup(run, sample_sets)
    state = load_state(path)
    model = ema_model(cfg, shape, state)
    t0, w0 = time.process_time(), time.perf_counter()
    x = samples(model, cfg, shape, codec, n)
    sample_cpu, sample_wall = time.process_time() - t0, time.perf_counter() - w0
    rec = {"images": int(state["images_seen"]), **{k: float(v) for k, v in state["clock"].items()}}
    rec |= judge.judge(x, torch.arange(n) % cfg.model.num_classes)
    rec |= {"sampler": f"{cfg.sample.sampler}, {cfg.sample.steps} steps, {cfg.sample.grid} grid ({cfg.sample.spacing})"}
    return rec | {"guidance": cfg.sample.guidance, "n": n, "sample_cpu_s": sample_cpu, "sample_wall_s": sample_wall}


def cmd_evaluate(args) -> None:
    from torchdiffusion.io import atomic_write
    from torchdiffusion.training.checkpoint import list_states

    torch.set_num_threads(1)
    out = Path(args.out)
    (out / args.evals).mkdir(parents=True, exist_ok=True)
    cache = out / f"reference-features{'-effnet' if args.effnet else ''}.safetensors"
    judge = Judge(args.classifier, cache, effnet=args.effnet, clip=args.clip)
    floor = out / args.evals / "floor.json"
    old = json.loads(floor.read_text())["floor"] if floor.is_file() else {}
    if old.get("n") != args.n or (args.clip and "accuracy_contrastive" not in old):  # real held-out, same n
        x, labels = real_images("holdout")
        idx = torch.linspace(0, len(x) - 1, args.n).round().long()
        rec = {
            "n": args.n,
            **judge.judge(x[idx], labels[idx]),
        }
        every = judge.judge(x, labels)
        rec |= {f"{k}_all_heldout": v for k, v in every.items() if k.startswith("accuracy")}
        atomic_write(floor, json.dumps({"floor": rec}, indent=2) + "\n")
    for preset in args.runs.split(","):
        path = out / args.evals / f"{preset}.json"
        done = json.loads(path.read_text()) if path.is_file() else {}
        states = list_states(out / preset / "checkpoints")
        chosen = states[:: args.every]
        if (
            states
            and states[-1] not in chosen
            and (args.last or json.loads((out / preset / "run.json").read_text())["finished"])
        ):
            chosen.append(states[-1])  # the final state of a finished run (--last: the newest state), always
        if args.images:  # only these states
            chosen = [(n, p) for n, p in states if n in {int(v) for v in args.images.split(",")}]
        for images, state in chosen:
            key = f"{preset}/{images}"
            if key in done and done[key]["n"] == args.n and ("accuracy_contrastive" in done[key] or not args.clip):
                continue
            done[key] = {"preset": preset, **evaluate_state(state, out / preset, judge, args.n, args.set)}
            print(key, json.dumps(done[key]), flush=True)
            atomic_write(path, json.dumps(done, indent=2) + "\n")


def read_evals(out: Path, name: str = EVALS) -> dict:
    """Every evaluation so far: {"floor": ..., "<preset>/<images>": ...}."""
    evals: dict = {}
    for path in sorted((out / name).glob("*.json")):
        evals |= json.loads(path.read_text())
    return evals


def curves(evals: dict) -> dict:
    rows: dict[str, list] = {}
    for key, r in evals.items():
        if key != "floor":
            rows.setdefault(r["preset"], []).append(r)
    return {p: sorted(v, key=lambda r: r["images"]) for p, v in rows.items()}


def plot(evals: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from torchdiffusion.viz import _save_figure

    keys = [("accuracy", "category accuracy, CNN (%)", 100)]
    if "accuracy_contrastive" in evals["floor"]:
        keys.append(("accuracy_contrastive", "category accuracy, contrastive (%)", 100))
    keys.append(("fd_clf64", "FD, classifier features", 1))
    if "fd_effnet_lite0" in evals["floor"]:
        keys.append(("fd_effnet_lite0", "FD, EfficientNet-Lite0 features", 1))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.7 * len(keys), 3.2))
    for ax, (key, label, scale) in zip(axes, keys, strict=True):
        for preset, rows in curves(evals).items():
            rows = [r for r in rows if key in r]
            ax.plot([r["cpu_s"] / 60 for r in rows], [scale * r[key] for r in rows], "o-", label=preset, ms=3)
        ax.axhline(
            scale * evals["floor"][key], color="k", ls="--", lw=0.8, label=f"real held-out (n={evals['floor']['n']})"
        )
        ax.set_xlabel("training CPU minutes")
        ax.set_ylabel(label)
        if key.startswith("fd"):
            ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, path)


def table(evals: dict) -> str:
    fds = [k for k in ("fd_clf64", "fd_effnet_lite0") if k in evals["floor"]]
    names = {"fd_clf64": "FD (classifier features)", "fd_effnet_lite0": "FD (EffNet-Lite0)"}
    accs = [k for k in ("accuracy", "accuracy_contrastive") if k in evals["floor"]]
    heads = {"accuracy": "category accuracy (CNN)", "accuracy_contrastive": "category accuracy (contrastive)"}
    head = ["preset", "images seen", "training CPU min", *(heads[k] for k in accs), *(names[k] for k in fds)]
    lines = ["| " + " | ".join([*head, "sampling CPU s"]) + " |", "|---" * (len(head) + 1) + "|"]
    for preset, rows in curves(evals).items():
        for r in rows:
            cells = [preset, f"{r['images']:,}", f"{r['cpu_s'] / 60:.2f}"]
            cells += [f"{100 * r[k]:.1f} %" if k in r else "-" for k in accs]
            cells += [f"{r[k]:.1f}" for k in fds] + [f"{r['sample_cpu_s']:.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
    f = evals["floor"]
    cells = [f"real held-out emoji (n={f['n']})", "-", "-", *(f"{100 * f[k]:.1f} %" for k in accs)]
    lines.append("| " + " | ".join([*cells, *(f"{f[k]:.1f}" for k in fds), "-"]) + " |")
    return "\n".join(lines) + "\n"


def cmd_report(args) -> None:
    from torchdiffusion.io import atomic_write

    out, docs = Path(args.out), Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    evals = read_evals(out, args.evals)
    record = {"evaluations": evals, "curves": curves(evals)}
    if (out / "encode.json").is_file():
        record["encode_once"] = json.loads((out / "encode.json").read_text())
    record["runs"] = {}
    for preset in curves(evals):
        info = json.loads((out / preset / "run.json").read_text())
        keys = ("images_seen", "finished", "stopped_by", "cpu_s", "wall_s", "data_shape")
        record["runs"][preset] = {k: info.get(k) for k in keys}
    atomic_write(docs / "latent-vs-pixel.json", json.dumps(record, indent=2) + "\n")
    atomic_write(docs / "table.md", table(evals))
    plot(evals, docs / "quality-vs-cpu.png")
    print(table(evals))


def cmd_pictures(args) -> None:
    """originals -> latents -> reconstructions -> sampled latents -> decoded samples, one row each."""
    sys.path.insert(0, str(Path(__file__).parent))
    from autoencoder_figures import latent_picture

    from torchdiffusion.generate import generate, load_run
    from torchdiffusion.viz import save_grid

    torch.set_num_threads(1)
    run = load_run(args.run)
    codec, k = run.codec, args.show
    x, _ = real_images("holdout")
    x = x[torch.linspace(0, len(x) - 1, k).round().long()]
    z = codec.encode(x)  # s * mean(q(z | x)), what the diffusion model is trained on
    cond = {"class": torch.arange(k) % run.config.model.num_classes}
    from torchdiffusion.config import override

    sample = replace(override(run.config, args.set).sample, n=k)
    z_new = generate(run.model, range(k), sample, run.data_shape, cond=cond)
    rows = [x, latent_picture(z, 64), codec.decode(z).clamp(-1, 1), latent_picture(z_new, 64)]
    rows.append(codec.decode(z_new).clamp(-1, 1))
    save_grid(torch.cat(rows), args.picture, nrow=k, scale=1)
    print("rows: held-out originals, their latents, reconstructions, sampled latents, decoded samples")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="encode once, then the three trainings at the same time")
    t.add_argument("--ae", required=True, help="the emoji64-ae autoencoder run folder")
    t.add_argument("--out", required=True)
    t.add_argument("--cpu-minutes", type=float, default=15.0)
    t.add_argument("--presets", default=",".join(PRESETS))
    e = sub.add_parser("evaluate", help="evaluate every training state not evaluated yet")
    e.add_argument("--out", required=True)
    e.add_argument("--classifier", required=True, help="category classifier trained on real 64 px emoji")
    e.add_argument("--n", type=int, default=60, help="samples per evaluation")
    e.add_argument("--runs", default=",".join(PRESETS))
    e.add_argument("--every", type=int, default=1, help="every k-th state (and the final one)")
    e.add_argument("--clip", help="a train-clip run (emoji64-lit): also category accuracy read by its captions")
    e.add_argument("--effnet", action="store_true", help="also FD in EfficientNet-Lite0 features (slow on a CPU)")
    e.add_argument("--last", action="store_true", help="also the newest state of a run that has not finished")
    e.add_argument("--images", help="only the states at these images seen (comma-separated)")
    e.add_argument("--set", action="append", default=[], help="a sample.* override for every run (repeatable)")
    e.add_argument("--evals", default=EVALS, help="the folder in OUT for these evaluations (one per setting)")
    r = sub.add_parser("report", help="JSON, table and plot")
    r.add_argument("--out", required=True)
    r.add_argument("--docs", default="docs/benchmarks/latent-vs-pixel")
    r.add_argument("--evals", default=EVALS, help="the evaluations to report (a folder in OUT)")
    p = sub.add_parser("pictures", help="the latent pipeline, row by row, of a trained latent run")
    p.add_argument("run")
    p.add_argument("--picture", default="docs/images/latent-pipeline.png")
    p.add_argument("--show", type=int, default=12)
    p.add_argument("--set", action="append", default=[], help="a sample.* override (repeatable)")
    args = ap.parse_args()
    {"train": cmd_train, "evaluate": cmd_evaluate, "report": cmd_report, "pictures": cmd_pictures}[args.command](args)


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
