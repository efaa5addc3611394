"""WAV recordings as 1-D signals (data kind "signal"): the ``wav`` source and the ``sample --save-wav`` writer.

A WAV file (Microsoft RIFF/WAVE; the formats of the "Multimedia Programming Interface and Data Specifications
1.0", and WAVE_FORMAT_EXTENSIBLE) is a RIFF header (``RIFF``, size, ``WAVE``) and chunks of (id, little-endian
size, bytes, a pad byte after an odd size). Two matter here:

* ``fmt ``: format tag, channels C, sample rate, bytes per second, block align, bits per sample; a format tag
  0xFFFE (extensible) names its real format in the first two bytes of its sub-format GUID;
* ``data``: the samples, frame after frame, each frame the C channels' samples in turn, little-endian.

Read here: integer PCM (format 1) of 8 bits (unsigned, 128 = silence), 16, 24 or 32 bits (signed), and IEEE
floats (format 3) of 32 or 64 bits. Integer samples become fractions of their format's full scale, v / 2^(b - 1)
(8 bits: (v - 128) / 128), in [-1, 1) as audio tools show them; floats are kept as they are (a float file may
hold peaks beyond 1). Python's own ``wave`` module reads integer PCM only, hence this small reader. Compressed
formats (ADPCM, mu-law, MP3 in WAV) and RF64 are refused in one line.

The ``wav`` source: ``data.path`` a folder of ``.wav`` files (recursive, hidden names skipped, sorted), one
series ``(C, L)`` per file, every file with the same channel count and sample rate; class labels from the first
level of subfolders when every file lies in one and there are at least two (as the image folder source). Files
of different lengths are refused unless ``data.signal_length = L`` resamples each to L points over its own
duration (data/signal.py). The run records the sample rate (run.json's schema, :class:`WavFormat`): the files'
own, or after resampling L points over the clips' mean duration, so ``sample --save-wav`` plays the samples at
the speed of the training recordings.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DataConfig
from .base import DataError, TensorData

PCM, IEEE_FLOAT, EXTENSIBLE = 1, 3, 0xFFFE  # format tags
SUFFIX = ".wav"


@dataclass(frozen=True)
class WavFormat:
    """What a run trained on WAV files keeps to write its samples as WAV again: the sample rate (Hz) of its
    series. Saved in run.json as the data's schema."""

    sample_rate: float

    def to_dict(self) -> dict:
        return {"wav_sample_rate": self.sample_rate}

    @staticmethod
    def from_dict(d: dict | None) -> WavFormat | None:
        """The format a run.json schema records, or None (a signal run of another source)."""
        if not d or "wav_sample_rate" not in d:
            return None
        return WavFormat(float(d["wav_sample_rate"]))


def _chunks(data: bytes):
    """(id, body, declared size) of each chunk after the RIFF/WAVE header; a body cut short by the end of the file
    is returned as it is (the caller checks the sizes it needs)."""
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        yield cid, data[pos + 8 : pos + 8 + size], size
        pos += 8 + size + (size & 1)


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """(samples (C, L) float64, sample rate) of the WAV file ``data`` (module docstring).

    Raises:
        ValueError: not a WAV file, a format it does not read, or a file cut short (the caller names the file).
    """
    if data[:4] == b"RF64":
        raise ValueError("RF64 (a WAV over 4 GB) is not read; split the recording into smaller files")
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV file (no RIFF/WAVE header)")
    fmt = samples = None
    for cid, body, size in _chunks(data):
        if cid == b"fmt ":
            if len(body) < 16:
                raise ValueError("its fmt chunk is cut short")
            fmt = struct.unpack("<HHIIHH", body[:16])
            if fmt[0] == EXTENSIBLE:
                if len(body) < 26:
                    raise ValueError("its extensible fmt chunk is cut short")
                fmt = (struct.unpack("<H", body[24:26])[0], *fmt[1:])  # the sub-format GUID's first two bytes
        elif cid == b"data":
            if len(body) < size:
                raise ValueError(f"its data chunk declares {size} bytes but the file holds {len(body)}: cut short")
            samples = body
            break
    if fmt is None or samples is None:
        raise ValueError("a WAV file without a fmt or data chunk")
    tag, channels, rate, _, _, bits = fmt
    if channels < 1 or rate < 1:
        raise ValueError(f"{channels} channels at {rate} Hz")
    kinds = {(PCM, 8): "u1", (PCM, 16): "<i2", (PCM, 24): "i3", (PCM, 32): "<i4", (IEEE_FLOAT, 32): "<f4"}
    kinds[(IEEE_FLOAT, 64)] = "<f8"
    kind = kinds.get((tag, bits))
    if kind is None:
        what = {PCM: "integer PCM", IEEE_FLOAT: "float"}.get(tag, f"format {tag:#06x} (compressed)")
        raise ValueError(f"{what} samples of {bits} bits are not read; save 16/24/32-bit PCM or 32/64-bit float")
    width = bits // 8
    frames = len(samples) // (width * channels)
    raw = np.frombuffer(samples[: frames * width * channels], dtype=np.uint8)
    if kind == "i3":  # 24-bit little-endian: the three bytes as the top of an int32, shifted back with the sign
        b = raw.reshape(-1, 3).astype(np.int32)
        values = ((b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)) >> 8
    else:
        values = raw.view(kind)
    x = values.astype(np.float64).reshape(frames, channels).T
    if tag == PCM:
        x = (x - 128) / 128 if bits == 8 else x / 2.0 ** (bits - 1)
    return np.ascontiguousarray(x), int(rate)


def wav_bytes(x: np.ndarray, rate: float) -> bytes:
    """A WAV file of ``x`` (C, L) as 32-bit IEEE floats at ``rate`` Hz (rounded to a whole number): a fmt chunk
    of format 3 (with cbSize = 0), the fact chunk non-PCM files carry, and the data chunk."""
    x = np.asarray(x, dtype="<f4")
    channels, frames = x.shape
    rate = max(1, round(rate))
    fmt = struct.pack("<HHIIHHH", IEEE_FLOAT, channels, rate, rate * 4 * channels, 4 * channels, 32, 0)
    body = np.ascontiguousarray(x.T).tobytes()
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt  # 18 bytes: no pad byte
    chunks += b"fact" + struct.pack("<II", 4, frames)
    chunks += b"data" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def write_wav(path: Path, x: np.ndarray, rate: float, gap: float = 0.25) -> Path:
    """(N, C, L) series -> one WAV file, atomically: the N series one after another, ``gap`` seconds of silence
    between them (the grid of a set of samples, to listen to)."""
    from ..io import atomic_write

    if x.ndim != 3:
        raise DataError(f"a WAV file holds (C, L) series; these are {tuple(x.shape[1:])}")
    silence = np.zeros((x.shape[1], int(round(gap * rate))), dtype=np.float32)
    parts = [p for s in x for p in (s, silence)][:-1]
    return atomic_write(path, wav_bytes(np.concatenate(parts, axis=1) if parts else x[0], rate))


def rate_of(info: dict) -> float | None:
    """The sample rate a run's run.json records (a run trained on WAV files), else None."""
    fmt = WavFormat.from_dict(info.get("schema"))
    return None if fmt is None else fmt.sample_rate


def read_wav_file(path: Path) -> tuple[np.ndarray, int]:
    """:func:`read_wav` of the file ``path``; a DataError naming it when it cannot be read."""
    try:
        return read_wav(path.read_bytes())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}") from None


def load_wav(cfg: DataConfig, seed: int) -> TensorData:
    """The ``wav`` source: one series per file under ``data.path`` (module docstring)."""
    from .files import folder_classes, list_files
    from .signal import stack_series

    if not cfg.path:
        raise DataError("the wav source needs data.path=<folder of .wav files>")
    root = Path(cfg.path).expanduser()
    if root.is_file():
        raise DataError(f"data.path={root} is a file; the wav source reads a folder of .wav files, one series each")
    if not root.is_dir():
        raise DataError(f"WAV folder not found: {root}")
    files = list_files(root, (SUFFIX,))
    if not files:
        raise DataError(f"no .wav files in {root}")
    series, rates = [], {}
    for f in files:
        x, rate = read_wav_file(f)
        series.append(x)
        rates.setdefault(rate, f.name)
    if len(rates) > 1:
        (r0, f0), (r1, f1) = sorted(rates.items())[:2]
        raise DataError(f"the WAV files differ in sample rate ({r0} Hz in {f0}, {r1} Hz in {f1}); resample them to one")
    if len({s.shape[0] for s in series}) > 1:
        counts = sorted({s.shape[0] for s in series})
        raise DataError(f"the WAV files differ in channel count ({counts[0]} to {counts[-1]}); save them alike")
    x = stack_series(series, cfg.signal_length, f"the WAV files in {root}")
    (rate,) = rates
    seconds = float(np.mean([s.shape[1] for s in series])) / rate  # what a series lasts, on average
    labels, class_names = folder_classes(root, files)
    fmt = WavFormat(x.shape[-1] / seconds if cfg.signal_length is not None else float(rate))
    return TensorData(x, labels=labels, class_names=class_names, kind="signal", name=f"wav:{root}", schema=fmt)
