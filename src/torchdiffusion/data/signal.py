"""1-D signals (data kind "signal", one example shaped ``(C, L)``): time series from CSV files and the UCR sets
that ship inside the ``sktime`` package.

Sources:

* ``ucr:<Name>``: a set of the UCR/UEA time-series classification archive (Dau et al. 2019) as the ``sktime``
  wheel ships it (``pip install 'torchdiffusion[signals]'``; no network at run time): ``GunPoint`` (2 classes,
  L = 150), ``ItalyPowerDemand`` (2, L = 24), ``ArrowHead`` (3, L = 251), ``OSULeaf`` (6, L = 427), ``ACSF1``
  (10, L = 1460), ``BasicMotions`` (4 classes, 6 channels, L = 100), and the ragged ``JapaneseVowels`` (12
  channels) and ``PLAID``, which need ``data.signal_length``. The archive's TRAIN and TEST files are pooled (in
  that order) into one set; ``data.holdout`` keeps series out as everywhere else. The archive's series are
  z-normalised (mean 0, standard deviation 1 each); they are kept as they are. Class labels are the file's labels
  in the order of its ``@classLabel`` line (``class_names``).
* ``signal_csv``: ``data.path`` a CSV file, one univariate series per row, its cells the values in time order.
  A first row that is not all numbers is a header; the column named by ``data.target`` (default: a column named
  ``label`` or ``class``, if any) holds class labels (any text; sorted into 0..K-1).
* ``.npy``/``.npz`` arrays ``(N, C, L)`` come through the ``array`` source (data/files.py).

Every series of a set must have the same length, and no value may be missing (NaN, an empty cell, ``?``): a
ragged set or a missing value is refused in one line. ``data.signal_length = L`` resamples every series to L
points by linear interpolation over its own time span (end points kept), which makes a ragged set usable and
fits a length to the U-Net (L divisible by 2^(levels-1)). ``torchdiffusion impute`` reads missing values as the
points to fill in (:func:`read_signal_file`).
"""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import DataConfig
from .base import DataError, TensorData, refuse_beyond_float32
from .delimited import as_number, decimal_of, read_rows

# the classification sets of the UCR/UEA archive inside the sktime wheel (sktime/datasets/data/<Name>/)
UCR_SETS = ("GunPoint", "ItalyPowerDemand", "ArrowHead", "OSULeaf", "ACSF1", "BasicMotions", "JapaneseVowels", "PLAID")
MISSING = ("", "?", "nan", "na", "null")  # cell texts read as missing (case-insensitive)
LABEL_COLUMNS = ("label", "class")  # signal_csv: a column of these names holds class labels


def resample(x: Tensor, length: int) -> Tensor:
    """(..., C, L) -> (..., C, length) by linear interpolation over the same time span (first and last point
    kept: ``align_corners``)."""
    if x.shape[-1] == length:
        return x
    shape = x.shape
    y = F.interpolate(x.reshape(-1, 1, shape[-1]).double(), size=length, mode="linear", align_corners=True)
    return y.reshape(*shape[:-1], length).to(x.dtype)


def stack_series(series: list[np.ndarray], length: int | None, what: str) -> Tensor:
    """N arrays (C, L_i) -> (N, C, L) float32; ragged lengths are refused unless ``length`` resamples them."""
    if not series:
        raise DataError(f"{what} holds no series")
    channels = {s.shape[0] for s in series}
    if len(channels) > 1:
        raise DataError(f"{what}: series have different channel counts {sorted(channels)}")
    for s in series:
        if not np.isfinite(s).all() and np.isnan(s).any():
            raise DataError(f"{what} has missing or NaN values; fill them first (torchdiffusion impute) or drop them")
        refuse_beyond_float32(np.asarray(s), what)
    lengths = sorted({s.shape[1] for s in series})
    if lengths[0] < 2:
        n = lengths[0]
        raise DataError(f"{what}: a series has {n} point{'s' * (n != 1)}; every series needs 2 or more")
    if length is None and len(lengths) > 1:
        raise DataError(
            f"{what} is ragged: series of {lengths[0]} to {lengths[-1]} points; set data.signal_length=L to "
            "resample every series to L points"
        )
    if length is not None and length < 2:
        raise DataError(f"data.signal_length must be >= 2, got {length}")
    out = [torch.from_numpy(np.ascontiguousarray(s, dtype=np.float32)) for s in series]
    if length is not None:
        out = [resample(s, length) for s in out]
    return torch.stack(out)


def _ucr_folder(name: str) -> Path:
    """sktime's data folder of one set, found without importing sktime (its import is slow and not needed)."""
    spec = importlib.util.find_spec("sktime")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"ucr:{name} is read from the sktime package: pip install 'torchdiffusion[signals]'")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    if not folder.is_dir():
        raise DataError(f"the installed sktime ships no {name} set (looked in {folder})")
    return folder


def read_ts(path: Path) -> tuple[list[np.ndarray], list[str], list[str]]:
    """A ``.ts`` file of the archive (sktime's format): (series (C, L_i) float64 with NaN for ``?``, their class
    labels, the class names of the ``@classLabel`` line)."""
    series, labels, names = [], [], []
    in_data = False
    for i, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            low = line.lower()
            if low.startswith("@classlabel"):
                names = line.split()[2:]
            in_data = low == "@data"
            continue
        *dims, label = line.split(":")
        try:
            rows = [[math.nan if v.strip().lower() in MISSING else float(v) for v in d.split(",")] for d in dims]
        except ValueError:
            raise DataError(f"{path.name} line {i}: a value is not a number") from None
        if len({len(r) for r in rows}) > 1:
            raise DataError(f"{path.name} line {i}: the channels of one series have different lengths")
        series.append(np.asarray(rows, dtype=np.float64))
        labels.append(label.strip())
    return series, labels, names


def ucr_loader(name: str):
    """The loader of ``ucr:<name>`` (TRAIN then TEST of the archive's split, pooled)."""

    def load(cfg: DataConfig, seed: int) -> TensorData:
        folder = _ucr_folder(name)
        series, labels, names = [], [], []
        for part in ("TRAIN", "TEST"):
            s, lab, names = read_ts(folder / f"{name}_{part}.ts")
            series += s
            labels += lab
        names = names or sorted(set(labels))
        index = {c: k for k, c in enumerate(names)}
        if any(lab not in index for lab in labels):
            raise DataError(f"ucr:{name}: a label is not among the classes {names}")
        x = stack_series(series, cfg.signal_length, f"ucr:{name}")
        y = torch.tensor([index[lab] for lab in labels], dtype=torch.long)
        return TensorData(x, labels=y, class_names=list(names), kind="signal", name=f"ucr:{name}")

    return load


def read_signal_file(
    path: str | Path, target: str | None = None, rate: float | None = None, keep_empty: bool = False
) -> tuple[np.ndarray, list[str] | None]:
    """A CSV of one series per row (``signal_csv``), a ``.npy``/``.npz`` of ``(N, C, L)`` or ``(N, L)`` series,
    or a WAV recording (one series, data/wav.py): (values (N, C, L) float64, NaN where missing; the label
    column's texts, or None). ``rate``: the sample rate (Hz) of the run's series, which a WAV file must have.

    Raises:
        DataError: a missing or unreadable file, ragged rows, a cell that is not a number, a WAV at another rate.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{p} does not exist")
    from ..provenance import note_input

    note_input(p)  # a command's manifest records the files it read (provenance.py)
    if p.suffix.lower() == ".wav":
        from .wav import read_wav_file

        x, file_rate = read_wav_file(p)
        if rate is not None and abs(file_rate - rate) > 0.5:
            raise DataError(
                f"{p.name} is sampled at {file_rate} Hz; the run's series are at {rate:g} Hz - resample it to that rate"
            )
        refuse_beyond_float32(x, p.name)
        return x[None], None
    if p.suffix.lower() in (".npy", ".npz", ".h5", ".hdf5"):
        from .files import _load_arrays

        a = np.asarray(_load_arrays(p)["x"])
        if a.dtype.kind not in "biuf" or a.ndim not in (2, 3):
            raise DataError(f"{p.name} must hold (N, L) or (N, C, L) numbers, got {a.dtype} {a.shape}")
        refuse_beyond_float32(a, p.name)  # NaN: the missing points
        return (a[:, None] if a.ndim == 2 else a).astype(np.float64), None
    if not p.name.lower().endswith((".csv", ".csv.gz")):
        raise DataError(f"signal files are .csv (or .csv.gz), .npy, .npz, .h5 or .wav, got {p.name}")
    try:
        rows, delimiter = read_rows(p, keep_empty)  # keep_empty: impute's all-missing rows, filled in place
    except (OSError, ValueError, csv.Error) as e:
        raise DataError(f"cannot read {p.name} ({e})") from None
    if not rows:
        raise DataError(f"{p.name} holds no series")
    return _parse_rows(rows, p.name, target, decimal_of([c.strip() for r in rows for c in r], delimiter))


def _number(cell: str, decimal: str = ".") -> float | None:
    c = cell.strip()
    if c.lower() in MISSING:
        return math.nan
    return as_number(c, decimal)


def _parse_rows(
    rows: list[list[str]], name: str, target: str | None, decimal: str = "."
) -> tuple[np.ndarray, list[str] | None]:
    header = None if all(_number(c, decimal) is not None for c in rows[0]) else [c.strip() for c in rows[0]]
    body = rows[1:] if header else rows
    col = None
    if target is not None and (header is None or target not in header):
        raise DataError(f"{name} has no column {target!r} (data.target) in its header row")
    if header is not None:
        col = header.index(target) if target else next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
    widths = sorted({len(r) for r in body})
    if len(widths) > 1:
        raise DataError(f"{name} is ragged: rows of {widths[0]} to {widths[-1]} cells; every series needs one length")
    if not body:
        raise DataError(f"{name} holds no series")
    labels = None if col is None else [r[col].strip() for r in body]
    values = []
    for i, r in enumerate(body, 2 if header else 1):
        cells = [c for j, c in enumerate(r) if j != col]
        v = [_number(c, decimal) for c in cells]
        if any(x is None for x in v):
            raise DataError(f"{name} row {i}: a cell is not a number")
        values.append(v)
    return np.asarray(values, dtype=np.float64)[:, None], labels


def load_signal_csv(cfg: DataConfig, seed: int) -> TensorData:
    """The ``signal_csv`` source: series from ``data.path`` (module docstring)."""
    if not cfg.path:
        raise DataError("the signal_csv source needs data.path=<file.csv>")
    a, texts = read_signal_file(cfg.path, cfg.target)
    name = Path(cfg.path).name
    x = stack_series(list(a), cfg.signal_length, name)
    labels = names = None
    if texts is not None:
        names = sorted(set(texts))
        labels = torch.tensor([names.index(t) for t in texts], dtype=torch.long)
    return TensorData(x, labels=labels, class_names=names, kind="signal", name=f"signal_csv:{name}")
