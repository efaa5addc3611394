"""Value ranges of user data (``data.scale``): from a data set's own units to the [-1, 1] the noise levels are
made for, and back.

A scientific array - temperatures, counts, fluorescence, a sensor's volts - rarely lies in [-1, 1], nor does a
folder of float TIFFs or a NIfTI scan. With ``data.scale`` set, the ``array``, ``folder`` and ``nifti`` sources
map each channel c (axis 1: an image's or volume's channel, a signal's channel, a vector's coordinate) affinely::

    x' = 2 (x - lo_c) / (hi_c - lo_c) - 1          (data units -> model units)
    x  = lo_c + (x' + 1) (hi_c - lo_c) / 2         (model units -> data units)

* ``minmax``: lo_c and hi_c are the channel's minimum and maximum over the training examples (the held-out ones
  are mapped by the same bounds), so every training value lands in [-1, 1];
* ``percentile``: its 0.5th and 99.5th percentiles, values beyond them clamped to [-1, 1] - a few outliers do not
  squeeze the rest;
* ``auto`` (the default): the source's own rule (``data.Source.scale``): ``percentile`` for NIfTI volumes (a
  scanner's units), else no map - images follow the pixel rules of data/files.py, other kinds are kept as they are.

Channels keep their units: ``data.channels`` that would convert scaled images to another channel count (luma,
repetition, compositing over alpha - rules for pictures, not for kelvins or counts) is refused in one line
(``data.check_kind_settings``), and :func:`to_data_units` refuses values whose channel count is not the bounds'.

A folder's images enter as the numbers stored in them: 0..255, 0..65535, signed or 32-bit integers (a CT's
Hounsfield units), floats of any range.

A constant channel gets lo = v - 1, hi = v + 1 (it maps to 0). The fitted bounds are recorded in the run's
config (``data.scale_lo``, ``data.scale_hi``) when training starts, so the held-out split, a resumed run and the
outputs written in data units (``sample --save-npy``, ``outpaint``'s ``.npy``, ``impute``) use the same map;
``LoadedRun.to_data_units`` applies it to what ``generate`` returns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..config import DataConfig
from .base import DataError, TensorData

SCALES = ("auto", "minmax", "percentile")
PERCENTILES = (0.5, 99.5)  # percentile: the bounds lo_c, hi_c

Bounds = tuple[tuple[float, ...], tuple[float, ...]]


def scale_checks(d: DataConfig) -> list[tuple[bool, str]]:
    """(ok, message) of each rule the data.scale settings obey (config validation and load_data both ask). Only
    the sources whose ``data.Source.reads`` name them read them; the command line refuses them for the others."""
    bounds = bool(d.scale_lo or d.scale_hi)
    return [
        (d.scale in SCALES, f"data.scale must be one of {', '.join(SCALES)}, got {d.scale!r}"),
        (not bounds or d.scale != "auto", "data.scale_lo/scale_hi need data.scale=minmax or percentile"),
        (
            len(d.scale_lo) == len(d.scale_hi) and all(h > lo for lo, h in zip(d.scale_lo, d.scale_hi)),
            f"data.scale_lo and data.scale_hi need one bound per channel each, every hi above its lo; got "
            f"{d.scale_lo!r} and {d.scale_hi!r}",
        ),
    ]


def fit_range(a: np.ndarray, how: str) -> Bounds:
    """(lo, hi) per channel (axis 1) of ``a`` (N, C, ...): its minimum and maximum, or its PERCENTILES. One channel
    at a time, in the array's own precision (a data set of gigabytes is not copied whole, nor widened)."""
    if how not in SCALES[1:]:
        raise ValueError(f"data.scale must be one of {', '.join(SCALES[1:])} to fit a range, got {how!r}")
    bounds = []
    for c in range(a.shape[1]):
        channel = a[:, c]
        bounds.append((channel.min(), channel.max()) if how == "minmax" else np.percentile(channel, PERCENTILES))
    lo, hi = (np.array([float(b[i]) for b in bounds]) for i in (0, 1))
    flat = hi <= lo  # a constant channel (or one whose percentiles meet): centred on its value, width 2
    lo, hi = np.where(flat, lo - 1.0, lo), np.where(flat, lo + 1.0, hi)
    return tuple(float(v) for v in lo), tuple(float(v) for v in hi)


def _per_channel(v: Sequence[float], x: Tensor) -> Tensor:
    return torch.tensor(v, dtype=x.dtype, device=x.device).reshape(1, -1, *([1] * (x.ndim - 2)))


def to_model_units(
    x: Tensor, lo: Sequence[float], hi: Sequence[float], clamp: bool = False, inplace: bool = False
) -> Tensor:
    """x' = 2 (x - lo) / (hi - lo) - 1 per channel (axis 1); ``clamp``: to [-1, 1] (percentile bounds);
    ``inplace``: in ``x`` itself (a whole data set, mapped without a second copy)."""
    lo_, hi_ = _per_channel(lo, x), _per_channel(hi, x)
    y = x if inplace else x.clone()
    y.sub_(lo_).mul_(2 / (hi_ - lo_)).sub_(1)
    return y.clamp_(-1, 1) if clamp else y


def to_data_units(x: Tensor, lo: Sequence[float], hi: Sequence[float]) -> Tensor:
    """x = lo + (x' + 1) (hi - lo) / 2 per channel (axis 1): the inverse of :func:`to_model_units`.

    Raises:
        DataError: ``x`` has another channel count than the bounds (they are not broadcast).
    """
    channels = x.shape[1] if x.ndim > 1 else 1
    if len(lo) != channels or len(hi) != channels:
        raise DataError(
            f"data.scale_lo/scale_hi hold bounds for {len(lo)} channel{'s' * (len(lo) != 1)}, but these values have "
            f"{channels}; they cannot be mapped back to the data's units"
        )
    lo_, hi_ = _per_channel(lo, x), _per_channel(hi, x)
    return lo_ + (x + 1) * (hi_ - lo_) / 2


def scale_data(data: TensorData, cfg: DataConfig, fit_on: Tensor, how: str) -> TensorData:
    """``data`` with ``x`` in model units: by the bounds ``cfg.scale_lo``/``scale_hi`` where a run recorded them,
    else by those :func:`fit_range` fits (``how``: minmax or percentile) on the examples ``fit_on`` (the training
    rows); ``value_range`` set."""
    channels = data.x.shape[1] if data.x.ndim > 1 else 1
    if cfg.scale_lo:
        lo, hi = tuple(cfg.scale_lo), tuple(cfg.scale_hi)
        if len(lo) != channels:
            raise DataError(
                f"data.scale_lo/scale_hi hold bounds for {len(lo)} channel{'s' * (len(lo) != 1)}; the data has "
                f"{channels} (leave them unset to fit them to the data)"
            )
    else:
        lo, hi = fit_range(data.x[fit_on].numpy(), how)
    data.x = to_model_units(data.x.contiguous(), lo, hi, clamp=how == "percentile", inplace=True)
    if not torch.isfinite(data.x).all():  # float32 arithmetic: bounds beyond ~3e38, or hi - lo below ~1e-38
        raise DataError(
            f"data.scale bounds {list(lo)} .. {list(hi)} map the data to values beyond float32's range; give bounds "
            "of the data's own magnitude (or leave data.scale_lo/scale_hi unset to fit them)"
        )
    data.value_range = (lo, hi)
    return data


def recorded(cfg: DataConfig, data: TensorData, how: str) -> DataConfig:
    """``cfg`` with the map ``data`` was scaled by: ``how`` as ``scale`` (a source's ``auto`` made explicit) and
    ``data.value_range`` as ``scale_lo``/``scale_hi``; what a run's config.json records. ``cfg`` itself for data
    that was not scaled."""
    if data.value_range is None:
        return cfg
    lo, hi = data.value_range
    return dataclasses.replace(cfg, scale=how, scale_lo=tuple(lo), scale_hi=tuple(hi))
