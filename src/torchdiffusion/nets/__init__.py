"""Networks ``F(x_in, c_noise, cond) -> same shape as x_in``: the raw function inside ``Precond``.

``build_net(model, data_shape)`` picks the network by ``model.net`` and the data shape:

* ``unet``: :class:`UNet` for images ``(C, H, W)`` (any C, any H x W divisible by ``2^(levels-1)``), 1-D
  signals ``(C, L)`` and volumes ``(C, D, H, W)``;
* ``dit``: :class:`DiT`, the diffusion transformer, for images ``(C, H, W)`` (pixels or latents) whose sides
  ``model.patch`` divides;
* ``mlp``: :class:`MLP` for vectors ``(D,)``.

Every net takes ``c_noise: (B,)`` (a fractional DDPM timestep or ln(sigma)/4; one embedding handles both, see
``layers.NoiseEmbedding``) and an optional ``cond`` dict with keys ``class`` (B,) long, ``context`` (B, K),
``text`` (B, L, E) + ``text_mask`` (B, L) bool, ``drop`` (B,) bool (use the null embedding); ``cond=None``
means unconditional.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..config import ConfigError, ModelConfig
from .dit import DiT
from .mlp import MLP
from .unet import UNet

NETS: dict[str, Callable[[ModelConfig, tuple[int, ...]], nn.Module]] = {
    "unet": UNet,
    "dit": DiT,
    "mlp": MLP,
}


def build_net(model: ModelConfig, data_shape: tuple[int, ...]) -> nn.Module:
    """The network named by ``model.net`` for one example of shape ``data_shape`` ((C, H, W), (C, L), (D,) or
    (C, D, H, W))."""
    if model.net not in NETS:
        raise ConfigError(f"unknown model.net {model.net!r}; choose from {', '.join(NETS)}")
    if model.embedding not in ("sinusoidal", "fourier"):
        raise ConfigError(f"model.embedding must be sinusoidal or fourier, got {model.embedding!r}")
    data_shape = tuple(int(s) for s in data_shape)
    if model.net == "dit":
        from .dit import check_dit_shape

        check_dit_shape(model, data_shape)
    if model.net == "unet" and len(data_shape) == 1:
        raise ConfigError(
            f"model.net=unet needs (C, H, W), (C, L) or (C, D, H, W) data, got vectors {data_shape}; use model.net=mlp"
        )
    return NETS[model.net](model, data_shape)


def count_params(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def count_flops(model: ModelConfig, data_shape: tuple[int, ...], cond: dict | None = None) -> int:
    """Forward FLOPs per example of the network ``model`` builds (2 per multiply-add of every matrix product and
    convolution, as ``torch.utils.flop_counter`` counts them; elementwise work is not counted).

    The network is built on the meta device, so even DiT-XL is counted in a moment without memory.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if cond is not None:  # one example's conditioning, on the meta device beside the network
        cond = {k: v.to("meta") for k, v in cond.items()}
    with torch.device("meta"):
        # .to("meta"): a constructor the device context misses stays on the CPU. torch.linspace is one once
        # transformers has loaded a model (the text encoder): it swaps in its own linspace while loading, and
        # torch's cached list of constructors to redirect can keep that one instead of torch.linspace.
        net = build_net(model, data_shape).to("meta")
        x, c_noise = torch.zeros(1, *data_shape), torch.zeros(1)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(x, c_noise, cond)
    return int(counter.get_total_flops())


__all__ = ["MLP", "NETS", "DiT", "UNet", "build_net", "count_flops", "count_params"]
