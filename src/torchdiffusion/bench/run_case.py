"""Case (b) of the benchmark: a trained run folder. The reference is a many-step solve (Heun on a Karras grid)
from other seeds; quality is measured on flattened samples against it."""

from __future__ import annotations

from pathlib import Path

import torch

from ..samplers import get_sampler
from ..schedules import karras_sigmas


def run_trained(run_dir: str, cfg, grid_dir: str | None = None, *, ref_steps: int = 200, log=print) -> list:
    from dataclasses import replace

    from ..generate import load_run
    from .harness import run_case

    run = load_run(run_dir)
    model = run.model
    D = model.bind(None)
    shape = tuple(run.data_shape)
    cfg = replace(cfg, sigma_min=float(model.sigma_min), sigma_max=float(model.sigma_max))
    grid = karras_sigmas(ref_steps, cfg.sigma_min, cfg.sigma_max)
    refs = []
    for seed in (cfg.ref_seed, cfg.ref_seed + 1):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn((cfg.n, *shape), generator=g)
        out = []
        for i in range(0, cfg.n, 1024):
            out.append(get_sampler("heun")(D, cfg.sigma_max * z[i:i + 1024], grid).flatten(1))
        refs.append(torch.cat(out))
    log(f"[run] reference: Heun {ref_steps} steps x 2 sets of {cfg.n}")
    process = model.process
    return run_case(Path(run_dir).name, D, shape, refs[0], refs[1], cfg,
                    grid_dir or Path(run_dir) / "grids", log, process=process)
