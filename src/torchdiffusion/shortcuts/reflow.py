"""Reflow (Liu et al. 2022, Sec. 2.3): straighten a flow by training on its own (noise, sample) pairs.

The teacher's probability-flow ODE couples each noise n_k with its end x0_k = ODE(sigma_max n_k). Training a
denoiser on ``x = x0_k + sigma n_k`` with the *paired* noise (instead of fresh noise) is rectified flow's loss
on that coupling, seen through the denoiser contract: x / (1 + sigma) = (1 - t) x0_k + t n_k is the straight
line between the pair. Pairs that no longer cross make paths that are straight, so few Euler steps suffice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from ..io import first_line
from ..types import NoiseSource

PAIRS_FILE = "reflow_pairs.safetensors"
PAIR_SEED = 1_000_000_000  # pair k starts from the noise of seed PAIR_SEED + k (apart from sampling seeds)


def pair_noise(count: int, data_shape: Sequence[int]) -> Tensor:
    """(count, *data_shape): the unit noise n_k of each pair, from its own seed."""
    return NoiseSource([PAIR_SEED + k for k in range(count)], data_shape).initial()


def save_pairs(out: Path, x0: Tensor, noise: Tensor, labels: Tensor | None) -> Path:
    """Write the pairs (x0_k, n_k) and the labels they were drawn for, atomically."""
    from ..io import save_safetensors

    tensors = {"x0": x0.contiguous(), "noise": noise.contiguous()}
    if labels is not None:
        tensors["labels"] = labels.contiguous()
    return save_safetensors(tensors, Path(out) / PAIRS_FILE)


def load_pairs(out: Path) -> dict[str, Tensor]:
    """The pairs of a reflow run folder; RunError (one line) when missing or damaged."""
    from safetensors.torch import load

    from ..generate import RunError

    path = Path(out) / PAIRS_FILE
    if not path.is_file():
        raise RunError(f"{out} has no reflow pairs ({PAIRS_FILE} is missing); run 'torchdiffusion distill' again")
    try:
        return load(path.read_bytes())
    except Exception as e:  # a damaged file: one line
        raise RunError(f"{path} is damaged ({first_line(e)})") from None


def reflow_noise(pairs_noise: Tensor, index: Tensor) -> Tensor:
    """The paired noise of the examples ``index`` (their positions in the pairs)."""
    return pairs_noise[index.cpu()]


def straight_line(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """x_t = (1 - t) x0 + t n (Liu et al. 2022, Eq. 1); t: (B,)."""
    tt = t.view(-1, *[1] * (x0.ndim - 1))
    return (1 - tt) * x0 + tt * noise
