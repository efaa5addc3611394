"""From a config to a denoiser: the process, the raw network, and the Precond wrapper that joins them."""

from __future__ import annotations

from torch import nn

from .config import DiffusionConfig, RunConfig
from .precond import Precond
from .process import DiscreteVP


def build_process(d: DiffusionConfig) -> DiscreteVP | None:
    """The discrete VP process of a DDPM-style model, or None for a continuous-sigma (EDM) model."""
    if d.process != "discrete":
        return None
    kwargs = {"beta_start": d.beta_start, "beta_end": d.beta_end} if d.schedule == "linear" else {}
    return DiscreteVP(d.schedule, d.T, **kwargs)


def sigma_range(d: DiffusionConfig):
    """What a sampling grid reads of a run's model (generate.resolve_grid: ``sigma_min``, ``sigma_max``,
    ``process``), from its config alone, without building the network: as :class:`Precond` sets them."""
    from types import SimpleNamespace

    process = build_process(d)
    lo, hi = (process.sigma_min, process.sigma_max) if process is not None else (d.sigma_min, d.sigma_max)
    return SimpleNamespace(sigma_min=float(lo), sigma_max=float(hi), process=process)


def build_model(cfg: RunConfig, data_shape: tuple[int, ...]) -> Precond:
    """The network named by ``cfg.model`` for examples of ``data_shape``, wrapped as D(x, sigma, cond).

    Tables (``model.net=table``) and sequences (``transformer``) get their own model classes, which carry their
    process and ``training_loss``; they follow Precond's attributes (process, sigma_min, sigma_max)."""
    from .nets import build_net

    if cfg.model.net == "table":  # its own process and loss (tabular.py)
        from .tabular import TableDiffusion

        D = int(data_shape[0])
        return TableDiffusion(cfg, D - len(cfg.model.categories), cfg.model.categories)
    if cfg.model.net == "transformer":  # discrete diffusion on symbols (sequences.py)
        from .sequences import SequenceDiffusion

        return SequenceDiffusion(cfg, int(data_shape[0]), cfg.model.vocab)
    return wrap_net(cfg, build_net(cfg.model, tuple(data_shape)))


def wrap_net(cfg: RunConfig, net: nn.Module) -> Precond:
    """A raw network ``F(x_in, c_noise, cond)`` (ours, or one run elsewhere: ONNX Runtime) as D(x, sigma, cond),
    with the parameterization and process of ``cfg.diffusion``."""
    d = cfg.diffusion
    return Precond(
        net,
        d.parameterization,
        sigma_data=d.sigma_data,
        process=build_process(d),
        noise_conditioning=d.noise_conditioning,
        sigma_min=d.sigma_min,
        sigma_max=d.sigma_max,
        boundary=d.boundary,
    )
