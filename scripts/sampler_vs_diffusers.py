"""The run's default sampler against diffusers' DDIMPipeline on the same network, by the digit check and wall time.

    .venv/bin/python scripts/sampler_vs_diffusers.py runs/demo --out runs/vs-diffusers [--n 256] [--ddim-steps 50]

Exports the run to a diffusers folder (``torchdiffusion export --format diffusers``), then draws ``--n`` digits
twice: with the run's own default sampler (``config.json``'s ``sample``: sampler, grid, steps; seeds 0..n-1) and
with ``DDIMPipeline`` (eta 0, its default ``leading`` timesteps, ``--ddim-steps`` steps, ``torch.Generator`` seed 0),
timing each call (same process, same threads, one after the other). Both sets are scored as
``scripts/digit_check.py`` and ``sampler_digit_sweep.py`` score them: the share the MNIST-5k evaluation classifier
is >= 0.9 confident about, the rarest digit's share and the Fréchet distance in that classifier's features
(FD-MNIST5kclf) against the run's training digits. Writes OUT/report.json and OUT/report.md.

A class-conditional run sampled at classes (``sample.labels`` cycle or random, as the demo is): ``DDIMPipeline``
passes its network no labels, so the script hands the exported network the same classes ours draws for seeds
0..n-1 (``pipe_with_labels``); without that the pipeline would sample the null class, another model.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import torch


def digit_scores():
    """``scripts/sampler_digit_sweep.py``'s digit check (one definition of how it is read)."""
    path = Path(__file__).with_name("sampler_digit_sweep.py")
    spec = importlib.util.spec_from_file_location("sampler_digit_sweep", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.digit_scores


def pipe_with_labels(pipe, labels: torch.Tensor | None):
    """``pipe`` whose network gets ``class_labels = labels`` (image k: labels[k]) on every call that gives none."""
    if labels is None:
        return pipe
    forward = pipe.unet.forward

    def labelled(sample, timestep, class_labels=None, return_dict=True):
        if class_labels is None:
            class_labels = labels.to(sample.device)
        return forward(sample, timestep, class_labels=class_labels, return_dict=return_dict)

    pipe.unet.forward = labelled
    return pipe


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--ddim-steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from torchdiffusion.cond import seed_labels
    from torchdiffusion.generate import generate, load_run
    from torchdiffusion.interop.diffusers_out import load_pipeline, pipeline_samples
    from torchdiffusion.interop.export import export
    from torchdiffusion.provenance import cpu_name
    from torchdiffusion.samplers import nfe

    run = load_run(args.run)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    s = run.config.sample
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        export(run, "diffusers", Path(tmp) / "diffusers", progress=False)
        pipe = load_pipeline(Path(tmp) / "diffusers", "ddim")
        labels = seed_labels(list(range(args.n)), run.config.model.num_classes, s.labels)  # None: unconditional
        pipe = pipe_with_labels(pipe, labels)
        t0 = time.perf_counter()
        ours = generate(run.model, range(args.n), s, run.data_shape, grid_dir=run.path / "grids")
        ours_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = pipeline_samples(pipe, steps=args.ddim_steps, batch=args.n, seed=0)
        theirs_s = time.perf_counter() - t0
    scores = digit_scores()
    ours_how = f"{s.sampler}, {s.grid}, {s.steps} steps"
    ours_nfe = nfe(s.sampler, s.steps)
    if s.autoguidance != 1.0:  # the guide model is one more network call per step (docs/guidance.md)
        ours_how, ours_nfe = f"{ours_how}, autoguidance {s.autoguidance:g}", 2 * ours_nfe
    if labels is not None:
        ours_how = f"{ours_how}, classes {s.labels}"
    for name, x, secs, n_fe, how in (
        ("torchdiffusion default", ours, ours_s, ours_nfe, ours_how),
        (
            "diffusers DDIMPipeline",
            theirs,
            theirs_s,
            args.ddim_steps,
            f"eta 0, leading, {args.ddim_steps} steps" + ("" if labels is None else f", classes {s.labels}"),
        ),
    ):
        rows.append(
            {"sampler": name, "setting": how, "nfe": n_fe, "wall_s": round(secs, 2), **scores(run, x, out / name[:5])}
        )
        print(rows[-1], flush=True)
    record = {"run": str(run.path), "n": args.n, "threads": args.threads, "cpu": cpu_name(), "rows": rows}
    (out / "report.json").write_text(json.dumps(record, indent=2))
    lines = [
        f"| sampler | setting | NFE | confident >= 0.9 (of {args.n}) | rarest digit | FD-MNIST5kclf | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sampler']} | {r['setting']} | {r['nfe']} | {100 * r['confident_fraction']:.1f} % | "
            f"{100 * r['min_class_fraction']:.1f} % | {r['FD-MNIST5kclf']:.2f} | {r['wall_s']:.1f} |"
        )
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
