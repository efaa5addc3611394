"""Case (b) of the benchmark: a trained run folder.

Two references (``--reference``):

* ``ode``: a many-step solve (Heun on a Karras grid) from other seeds. Rows measure how closely each sampler
  reaches the model's own probability-flow distribution (solver error); the floor is a second solve.
* ``data``: the run's held-out images (``data.holdout``; the training images if it kept none). Rows measure
  sample quality against real data, so stochastic samplers that correct the model's errors can win; the floor is
  as many training images against the same held-out set.

Distances are taken on flattened pixels, or on the features of ``features`` (e.g. ``clf:mnist5k``). Samplers see
the same clamped denoiser as ``torchdiffusion sample`` when the run clips x0_hat to the data range."""

from __future__ import annotations

from pathlib import Path

import torch

from ..samplers import get_sampler
from ..schedules import karras_sigmas


def run_trained(
    run_dir: str,
    cfg,
    grid_dir: str | None = None,
    *,
    ref_steps: int = 200,
    reference: str = "ode",
    features: str | None = None,
    log=print,
) -> list:
    from ..generate import clamped, clamps_x0, load_run
    from ..io import sha256_file
    from .harness import run_case

    if reference not in ("ode", "data"):
        raise ValueError(f"unknown reference {reference!r}; choose ode or data")
    run = load_run(run_dir)
    if run.kind in ("table", "sequence"):
        raise ValueError(
            f"bench-samplers races samplers of D(x, sigma) on continuous data; {run.path} holds {run.kind} data, "
            "sampled by its own process"
        )
    model = run.model
    D = model.bind(None)
    clip = clamps_x0(run.config.sample, run.data_shape, run.codec)  # as generate() samples the run
    if clip:
        D = clamped(D)
    shape = tuple(run.data_shape)
    sigma_max = float(model.sigma_max)
    if reference == "ode":
        grid = karras_sigmas(ref_steps, float(model.sigma_min), sigma_max)
        refs = []
        for seed in (cfg.ref_seed, cfg.ref_seed + 1):
            g = torch.Generator().manual_seed(seed)
            z = torch.randn((cfg.n, *shape), generator=g)
            out = []
            for i in range(0, cfg.n, 1024):
                out.append(get_sampler("heun")(D, sigma_max * z[i : i + 1024], grid))
            refs.append(torch.cat(out))
        log(f"[run] reference: Heun {ref_steps} steps x 2 sets of {cfg.n}")
    else:
        from ..data import load_data

        g = torch.Generator().manual_seed(cfg.ref_seed)
        train = load_data(run.config.data, split="train", seed=run.config.train.seed).x.to(torch.float32)
        if run.config.data.holdout > 0:
            split, real = "holdout", load_data(run.config.data, split="holdout", seed=run.config.train.seed).x
            pool = train
        else:  # no held-out images: two disjoint halves of the training images
            perm = torch.randperm(len(train), generator=g)
            split, real, pool = "train, first half", train[perm[: len(train) // 2]], train[perm[len(train) // 2 :]]
        real = real.to(torch.float32)
        # the floor: as many other training images as each row has samples (--n), so that it carries the same
        # finite-sample bias as the rows it is read against (or the pool, when it holds fewer)
        floor = pool[torch.randperm(len(pool), generator=g)[: min(cfg.n, len(pool))]]
        refs = [real, floor]
        log(f"[run] reference: {len(real)} real images ({split}); floor: {len(floor)} other training images")
    embed = None
    if features:
        from ..evaluation.features import extract

        embed = lambda x: extract(x.reshape(-1, *shape), features)
        refs = [embed(r) for r in refs]
    return run_case(
        Path(run_dir).name,
        D,
        shape,
        refs[0].flatten(1),
        refs[1].flatten(1),
        cfg,
        grid_dir or Path(run_dir) / "grids",
        log,
        model=model,
        sample=run.config.sample,
        embed=embed,
        clamped=clip,
        identity=f"run weights sha256 {sha256_file(run.path / run.weights_file)}",  # the network fit to, moved or not
    )
