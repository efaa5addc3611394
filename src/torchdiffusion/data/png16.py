"""16-bit colour and gray-with-alpha PNGs at full precision (Pillow decodes them to 8 bits per channel).

A small reader for the cases Pillow truncates or misreads: bit depth 16, colour type 2 (RGB), 4 (gray + alpha) or 6
(RGBA), and 0 (gray) with a tRNS chunk (whose transparent colour Pillow drops for 16-bit gray); plain or
Adam7-interlaced. A tRNS chunk of colour type 0 or 2 (Sec. 11.3.2.1) names one gray level or RGB colour, in 16-bit
samples, whose pixels are fully transparent: it becomes an alpha channel, 0 there and 65535 elsewhere.

It follows the PNG specification (W3C PNG 2nd ed., Sec. 9 "Filtering"): the IDAT stream is inflated, then each
scanline's filter (None, Sub, Up, Average, Paeth) is undone byte by byte with ``bpp`` = bytes per pixel, and
samples are big-endian. An interlaced image (Sec. 8.2) is seven reduced images one after
the other, each filtered on its own (its first row's "previous row" is zeros); pass p holds the pixels
(y0 + i dy, x0 + j dx) of ADAM7[p] = (x0, y0, dx, dy), and a pass with no pixels takes no bytes.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel: gray, RGB, gray + alpha, RGBA
MAX_PIXELS = 178_956_970  # Pillow's limit (twice its warning size): larger declared sizes are refused, not allocated
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def is_png16(path: Path) -> bool:
    """Whether ``path`` starts like a 16-bit RGB, gray + alpha or RGBA PNG (the IHDR chunk comes first), or a
    16-bit gray one with a tRNS chunk (before its image data, as the specification places it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(29)
            if len(head) < 29 or head[:8] != SIGNATURE or head[12:16] != b"IHDR" or head[24] != 16:
                return False  # bit depth
            if head[25] != 0:
                return head[25] in CHANNELS  # colour type
            f.seek(33)  # after IHDR: walk the chunk headers up to the first IDAT
            while len(top := f.read(8)) == 8 and top[4:] != b"IDAT":
                if top[4:] == b"tRNS":
                    return True
                f.seek(struct.unpack(">I", top[:4])[0] + 4, 1)
    except OSError:
        return False
    return False


def _chunks(data: bytes):
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        yield kind, data[pos + 8 : pos + 8 + length]
        pos += 12 + length


def _unfilter_row(kind: int, line: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    """One reconstructed scanline (uint8) from its filtered bytes and the previous reconstructed one."""
    if kind == 0:
        return line
    if kind == 1:  # Sub: Recon(x) = Filt(x) + Recon(a); a cumulative sum per byte position, mod 256
        return (np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.int64) % 256).astype(np.uint8).reshape(-1)
    if kind == 2:  # Up: Recon(x) = Filt(x) + Recon(b)
        return line + prev
    if kind not in (3, 4):
        raise ValueError(f"unknown PNG filter type {kind}")
    out = np.zeros(len(line) + bpp, dtype=np.int64)  # bpp leading zeros stand for the bytes left of the row
    up = np.concatenate([np.zeros(bpp, dtype=np.int64), prev.astype(np.int64)])
    filt = line.astype(np.int64)
    for x in range(bpp, len(out), bpp):
        a, b, c = out[x - bpp : x], up[x : x + bpp], up[x - bpp : x]
        if kind == 3:  # Average: Recon(x) = Filt(x) + floor((Recon(a) + Recon(b)) / 2)
            pred = (a + b) // 2
        else:  # Paeth: the one of a, b, c nearest to p = a + b - c (ties: a, then b)
            p = a + b - c
            pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
            pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        out[x : x + bpp] = (filt[x - bpp : x] + pred) % 256
    return out[bpp:].astype(np.uint8)


def read_png16(path: Path) -> np.ndarray:
    """A 16-bit RGB, gray + alpha or RGBA PNG as uint16 (H, W, 3, 2 or 4); gray or RGB with a tRNS colour key as
    (H, W, 2 or 4), its alpha 0 on the key's pixels (gray without one: (H, W, 1)).

    Raises:
        ValueError: not such a PNG, or corrupt (the caller names the file).
    """
    data = Path(path).read_bytes()
    if not data.startswith(SIGNATURE):
        raise ValueError("not a PNG file")
    header, idat, key = None, [], None
    for kind, body in _chunks(data):
        if kind == b"IHDR":
            if len(body) != 13:
                raise ValueError(f"corrupt PNG: its IHDR chunk is {len(body)} bytes, not 13")
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"tRNS":
            key = body
    if header is None:
        raise ValueError("PNG without an IHDR chunk")
    w, h, depth, ctype, _, _, interlace = header
    if depth != 16 or ctype not in CHANNELS:
        raise ValueError("not a 16-bit RGB, gray + alpha or RGBA PNG")
    if interlace not in (0, 1):
        raise ValueError(f"unknown PNG interlace method {interlace}")
    if w < 1 or h < 1 or w * h > MAX_PIXELS:
        raise ValueError(f"a PNG of {w}x{h} pixels; this reader takes 1 to {MAX_PIXELS:,} pixels")
    bpp = 2 * CHANNELS[ctype]
    try:
        raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    except zlib.error as e:
        raise ValueError(f"corrupt PNG data ({e})") from None
    if not interlace:
        out = _samples(_unfilter(raw, h, w, bpp)[0], h, w, CHANNELS[ctype])
    else:
        out = np.empty((h, w, CHANNELS[ctype]), dtype=np.uint16)
        pos = 0
        for x0, y0, dx, dy in ADAM7:  # Sec. 8.2: seven reduced images, each filtered on its own
            ph, pw = -(-(h - y0) // dy), -(-(w - x0) // dx)  # rows and columns of this pass (0: it takes no bytes)
            if ph > 0 and pw > 0:
                rows, used = _unfilter(raw[pos:], ph, pw, bpp)
                out[y0::dy, x0::dx] = _samples(rows, ph, pw, CHANNELS[ctype])
                pos += used
    return _keyed(out, key) if ctype in (0, 2) and key is not None else out


def _keyed(out: np.ndarray, key: bytes) -> np.ndarray:
    """Gray or RGB samples with the alpha channel of a tRNS colour key: 0 where every sample equals the key's."""
    if len(key) < 2 * out.shape[-1]:
        raise ValueError("corrupt PNG tRNS chunk")
    colour = np.frombuffer(key[: 2 * out.shape[-1]], dtype=">u2").astype(np.uint16)
    alpha = np.where((out == colour).all(axis=-1, keepdims=True), 0, 65535).astype(np.uint16)
    return np.concatenate([out, alpha], axis=-1)


def _unfilter(raw: np.ndarray, h: int, w: int, bpp: int) -> tuple[np.ndarray, int]:
    """(reconstructed (h, w * bpp) bytes, bytes consumed) of an image's h filtered scanlines at the start of raw."""
    stride = w * bpp
    if raw.size < h * (stride + 1):
        raise ValueError("truncated PNG data")
    rows = raw[: h * (stride + 1)].reshape(h, stride + 1)
    out = np.empty((h, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.uint8)
    for y in range(h):
        prev = out[y] = _unfilter_row(int(rows[y, 0]), rows[y, 1:], prev, bpp)
    return out, h * (stride + 1)


def _samples(rows: np.ndarray, h: int, w: int, channels: int) -> np.ndarray:
    """Big-endian 16-bit samples of reconstructed scanlines as uint16 (h, w, channels)."""
    return rows.view(">u2").reshape(h, w, channels).astype(np.uint16)
