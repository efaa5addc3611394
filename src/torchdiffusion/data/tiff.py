"""TIFFs: the 16-bit ones Pillow does not read right, at full precision, and the ones the folder source refuses.

A TIFF can hold more than one image (a z-stack, a time series) and more than three channels (a multi-channel
microscope's); the folder source reads one gray or colour image per file, so :func:`check_tiff` refuses a file
with more than one full-resolution image (reduced-resolution previews and transparency masks, NewSubfileType
bits 0 and 2, do not count) or with samples beyond gray/RGB and alpha (one unnamed sample after RGB, "RGBX", is
let through, as Pillow reads it) - such data belongs in a .npy array (``data.source=array``).

Pillow decodes 16-bit RGB(A) to 8 bits per channel, cannot open 16-bit gray with alpha or 32-bit float colour,
and reads 16-bit white-is-zero gray without inverting it (a negative). This small reader takes those cases
(:func:`tiff_kind`): the first image of a TIFF whose samples are 16-bit unsigned integers ("u16"), photometric
RGB (3 samples) or gray (1, PhotometricInterpretation 0 = WhiteIsZero, inverted here, or 1 = BlackIsZero), plus an
optional alpha; or IEEE floats (SampleFormat 3), RGB or gray: 32-bit ones ("f32") in colour or with alpha (plain
32-bit float gray Pillow reads itself), 16- and 64-bit ones ("f16", "f64"), which Pillow cannot open at all; or
RGB, or gray with alpha, of signed 16-bit, or unsigned or signed 32-bit integers ("i16", "u32", "i32"), which it
cannot open either. It follows the TIFF 6.0 specification:

* the header (Sec. 2): byte order ``II`` (little-endian) or ``MM`` (big-endian), 42, the offset of the first IFD;
  each IFD entry is (tag, type, count, value or offset), the value inline when it fits in 4 bytes; BigTIFF (43:
  8-byte counts and offsets, 20-byte entries, values inline up to 8 bytes), which large microscope and satellite
  images use and through which Pillow, too, cuts 16-bit colour to 8 bits;
* the image in strips (StripOffsets, StripByteCounts, RowsPerStrip; Sec. 3) or tiles (TileWidth, TileLength,
  TileOffsets, TileByteCounts; Sec. 15, edge tiles padded), its samples interleaved (PlanarConfiguration 1) or one
  plane after another (2, each plane its own strips or tiles);
* compression (Sec. 3, 9, 13): none (1), PackBits (32773), LZW (5; codes MSB first, 9 to 12 bits, the code width
  growing one code early, Clear = 256, EndOfInformation = 257; in Python, about 3 MB of samples a second),
  Deflate (8, and the older 32946: zlib) or LZMA (34925, as libtiff writes it: an .xz stream);
* Predictor 2 (Sec. 14): each integer sample stored as the difference from the same sample of the pixel to its
  left, undone by a cumulative sum along each row of a strip or tile (mod 2^bits, in the stored type); the
  floating-point predictor 3 (Adobe's Photoshop TIFF Technical Note 3): each row's floats split into byte planes,
  most significant byte first whatever the file's byte order, and those bytes differenced with a stride of the
  samples per pixel - undone by a cumulative sum of the row's bytes (mod 2^8) and the planes put back together;
* ExtraSamples (Sec. 18): a sample after the colour ones that is associated (premultiplied, 1) or unassociated
  (2) alpha is kept as alpha; other extra samples are dropped;
* Orientation (tag 274): the pixels turned the way up viewers show them, as Pillow does for the TIFFs it reads.
"""

from __future__ import annotations

import lzma
import struct
import zlib

import numpy as np

TYPES = {1: "B", 3: "H", 4: "I", 16: "Q", 18: "Q"}  # BYTE, SHORT, LONG, LONG8 and IFD8 (BigTIFF)
SIZES = {"B": 1, "H": 2, "I": 4, "Q": 8}
FLOATS = {16: "f16", 32: "f32", 64: "f64"}  # BitsPerSample of IEEE floats -> kind
DTYPES = {"u16": "u2", "f16": "f2", "f32": "f4", "f64": "f8", "i16": "i2", "u32": "u4", "i32": "i4"}  # kind -> type
INTEGERS = {(16, 2): "i16", (32, 1): "u32", (32, 2): "i32"}  # (BitsPerSample, SampleFormat) of RGB Pillow cannot open
COMPRESSIONS = {1: "none", 5: "LZW", 8: "Deflate", 32946: "Deflate", 32773: "PackBits", 34925: "LZMA"}
WHITE_IS_ZERO, BLACK_IS_ZERO, RGB = 0, 1, 2  # PhotometricInterpretation
COLOURS = {WHITE_IS_ZERO: 1, BLACK_IS_ZERO: 1, RGB: 3}  # its colour samples per pixel
TAGS = {
    "width": 256,
    "height": 257,
    "bits": 258,
    "compression": 259,
    "photometric": 262,
    "strip_offsets": 273,
    "orientation": 274,
    "samples": 277,
    "rows_per_strip": 278,
    "strip_counts": 279,
    "planar": 284,
    "predictor": 317,
    "tile_width": 322,
    "tile_length": 323,
    "tile_offsets": 324,
    "tile_counts": 325,
    "extra_samples": 338,
    "sample_format": 339,
}
# Orientation -> the turn that shows the stored (rows, columns) upright
ORIENT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, -1)[::-1],
    8: lambda a: np.rot90(a, 1),
}


def _header(data: bytes) -> tuple[str, bool, int]:
    """(byte order "<" or ">", BigTIFF, the first IFD's offset); ValueError for a file that is not a TIFF."""
    if len(data) >= 8 and data[:4] in (b"II*\x00", b"MM\x00*"):
        bo = "<" if data[:2] == b"II" else ">"
        return bo, False, struct.unpack(bo + "I", data[4:8])[0]
    if len(data) >= 16 and data[:4] in (b"II+\x00", b"MM\x00+"):
        bo = "<" if data[:2] == b"II" else ">"
        if struct.unpack(bo + "HH", data[4:8]) != (8, 0):
            raise ValueError("not a BigTIFF file with 8-byte offsets")
        return bo, True, struct.unpack(bo + "Q", data[8:16])[0]
    raise ValueError("not a TIFF file")


def _ifd(data: bytes) -> tuple[str, dict[int, tuple]]:
    """(byte order "<" or ">", {tag: values}) of the first IFD; ValueError for a file that is not a TIFF."""
    bo, big, pos = _header(data)
    return bo, _tags(data, bo, pos, big)[0]


def _tags(data: bytes, bo: str, pos: int, big: bool = False) -> tuple[dict[int, tuple], int]:
    """({tag: values}, the next IFD's offset or 0) of the IFD at ``pos`` (of a BigTIFF where ``big``)."""
    count_of, entry, inline, offset = ("Q", 20, 8, "Q") if big else ("H", 12, 4, "I")
    head = SIZES[count_of]
    if pos + head > len(data):
        raise ValueError("truncated TIFF header")
    (n,) = struct.unpack(bo + count_of, data[pos : pos + head])
    tags = {}
    for k in range(n):
        e = pos + head + entry * k
        if e + entry > len(data):
            raise ValueError("truncated TIFF directory")
        tag, typ, count = struct.unpack(bo + ("HHQ" if big else "HHI"), data[e : e + 4 + inline])
        if typ not in TYPES or count == 0:
            continue  # rationals, ASCII and the like: no tag read here has them; no values: as if absent
        size = SIZES[TYPES[typ]] * count
        at = e + 4 + inline
        if size > inline:
            (at,) = struct.unpack(bo + offset, data[at : at + inline])
        if at + size > len(data):
            raise ValueError(f"TIFF tag {tag} points beyond the end of the file")
        tags[tag] = struct.unpack(f"{bo}{count}{TYPES[typ]}", data[at : at + size])
    end = pos + head + entry * n
    size = SIZES[offset]
    return tags, (struct.unpack(bo + offset, data[end : end + size])[0] if end + size <= len(data) else 0)


def check_tiff(data: bytes) -> None:
    """A ValueError naming what the folder source cannot take from the TIFF file ``data`` (module docstring): more
    than one full-resolution image, or samples beyond gray/RGB and alpha. Files it cannot parse are left to
    Pillow's own error."""
    try:
        _, first = _ifd(data)
    except (ValueError, struct.error):
        return
    photometric = first.get(TAGS["photometric"], (None,))[0]
    spp = first.get(TAGS["samples"], (1,))[0]
    extra = first.get(TAGS["extra_samples"], ())
    colours = COLOURS.get(photometric, spp)
    alpha = spp > colours and len(extra) >= 1 and extra[0] in (1, 2)
    unnamed = spp - colours - alpha
    if unnamed > (1 if photometric == RGB and not alpha else 0):
        raise ValueError(
            f"it holds {spp} samples per pixel; the folder source reads gray, RGB and alpha - save many-channel "
            "images as one .npy array (data.source=array)"
        )
    full = len(full_pages(data))
    if full > 1:
        raise ValueError(
            f"it holds {full} images (a stack or a series); the folder source reads one image per file - read "
            "a z-stack as a volume (data.source=tiff_stack), or save the images as one .npy array "
            "(data.source=array) or as one file each"
        )


def full_pages(data: bytes) -> list[tuple[int, int, dict[int, tuple]]]:
    """(index among the file's IFDs, as Pillow's ``seek`` counts them; the IFD's offset; its tags) of each
    full-resolution image of the TIFF file ``data``: reduced-resolution previews and transparency masks
    (NewSubfileType bits 0 and 2) left out. A chain of IFDs that loops or breaks ends the walk; [] for a file
    this cannot parse."""
    try:
        bo, big, pos = _header(data)
    except (ValueError, struct.error):
        return []
    out, seen = [], set()
    while pos and pos not in seen and len(seen) < 100_000:
        seen.add(pos)
        try:
            tags, after = _tags(data, bo, pos, big)
        except (ValueError, struct.error):
            break
        if not tags.get(254, (0,))[0] & 0b101:  # NewSubfileType: reduced resolution (1), mask (4)
            out.append((len(seen) - 1, pos, tags))
        pos = after
    return out


def tiff_kind(data: bytes) -> str | None:
    """The kind, "u16", "f16", "f32" or "f64", when the file ``data`` is a TIFF that Pillow does not read right and
    this reader does (module docstring): 16-bit RGB, gray with alpha or white-is-zero gray; 32-bit float RGB or
    gray with alpha; 16- and 64-bit float RGB or gray. None for every other file (plain 16-bit or 32-bit float
    gray, 8-bit images: Pillow reads them at full precision itself)."""
    try:
        _, tags = _ifd(data)
    except (ValueError, struct.error):
        return None
    return _kind(tags)


def _kind(tags: dict) -> str | None:
    """:func:`tiff_kind` of the first IFD's ``tags``."""
    photometric = tags.get(TAGS["photometric"], (None,))[0]
    spp = tags.get(TAGS["samples"], (1,))[0]
    if photometric not in COLOURS or spp < COLOURS[photometric]:
        return None
    bits, formats = tags.get(TAGS["bits"], (1,)), tags.get(TAGS["sample_format"], (1,))
    if all(b == 16 for b in bits) and all(f == 1 for f in formats):
        return None if photometric == BLACK_IS_ZERO and spp == 1 else "u16"
    integers = len(set(bits)) == 1 and len(set(formats)) == 1 and (bits[0], formats[0]) in INTEGERS
    if integers and (photometric == RGB or (photometric == BLACK_IS_ZERO and spp > 1)):  # gray alone: Pillow's
        return INTEGERS[(bits[0], formats[0])]
    if len(set(bits)) == 1 and bits[0] in FLOATS and all(f == 3 for f in formats) and photometric != WHITE_IS_ZERO:
        kind = FLOATS[bits[0]]
        return None if kind == "f32" and photometric == BLACK_IS_ZERO and spp == 1 else kind
    return None


def lzw_decode(data: bytes) -> bytes:
    """TIFF LZW (Sec. 13): variable-width codes, most significant bit first, the width growing from 9 to 12 bits
    when the table reaches 511, 1023 and 2047 entries (one code early, as every TIFF writer does)."""
    out = bytearray()
    padded = bytes(data) + b"\x00\x00\x00"
    nbits = 8 * len(data)
    table = [bytes([i]) for i in range(256)] + [b"", b""]  # 256 Clear, 257 EndOfInformation
    width, pos, prev = 9, 0, None
    while pos + width <= nbits:
        p = pos >> 3
        word = (padded[p] << 16) | (padded[p + 1] << 8) | padded[p + 2]
        code = (word >> (24 - width - (pos & 7))) & ((1 << width) - 1)
        pos += width
        if code == 256:
            del table[258:]
            width, prev = 9, None
            continue
        if code == 257:
            break
        if prev is None:
            if code > 255:
                raise ValueError("corrupt LZW data")
            entry = table[code]
        elif code < len(table):
            entry = table[code]
            table.append(prev + entry[:1])
        elif code == len(table):
            entry = prev + prev[:1]
            table.append(entry)
        else:
            raise ValueError("corrupt LZW data")
        out += entry
        prev = entry
        if len(table) + 1 >= 1 << width and width < 12:
            width += 1
    return bytes(out)


def packbits_decode(data: bytes) -> bytes:
    """PackBits (Sec. 9): a header byte n, then n + 1 literal bytes (0 <= n <= 127) or one byte repeated 1 - n
    times (-127 <= n <= -1); -128 is skipped."""
    out = bytearray()
    i = 0
    while i < len(data):
        n = data[i] - 256 if data[i] > 127 else data[i]
        i += 1
        if n >= 0:
            out += data[i : i + n + 1]
            i += n + 1
        elif n != -128:
            out += data[i : i + 1] * (1 - n)
            i += 1
    return bytes(out)


def _inflate(chunk: bytes, compression: int) -> bytes:
    if compression == 1:
        return chunk
    if compression == 5:
        return lzw_decode(chunk)
    if compression in (8, 32946):
        try:
            return zlib.decompress(chunk)
        except zlib.error as e:
            raise ValueError(f"corrupt Deflate data ({e})") from None
    if compression == 34925:
        try:
            return lzma.decompress(chunk)
        except lzma.LZMAError as e:
            raise ValueError(f"corrupt LZMA data ({e})") from None
    return packbits_decode(chunk)


def _float_rows(raw: bytes, rows: int, cols: int, spp: int, itemsize: int) -> np.ndarray:
    """Predictor 3 undone: (rows, cols, spp) big-endian floats of ``itemsize`` bytes from rows whose bytes were
    split into planes (most significant first) and differenced with a stride of ``spp`` (module docstring)."""
    b = np.frombuffer(raw, dtype=np.uint8).reshape(rows, cols * itemsize, spp)
    b = np.cumsum(b, axis=1, dtype=np.uint8)  # byte j += byte j - spp along each row, mod 2^8
    planes = b.reshape(rows, itemsize, cols * spp)  # plane k: byte k of every sample, the most significant first
    together = np.ascontiguousarray(planes.transpose(0, 2, 1))  # (rows, samples, bytes of one sample)
    return together.view(f">f{itemsize}").reshape(rows, cols, spp)


def _blocks(data: bytes, tags: dict, bo: str, h: int, w: int, spp: int, kind: str) -> list[np.ndarray]:
    """Each strip or tile, decompressed and its predictor undone, as uint16 or float (``kind``) (rows, columns,
    spp): a tile is TileLength x TileWidth (edge tiles padded), strip k of a plane RowsPerStrip rows (the last one
    fewer). The horizontal differences of the predictors start again at each block's left edge, so they are undone
    per block."""
    compression = tags.get(TAGS["compression"], (1,))[0]
    predictor = tags.get(TAGS["predictor"], (1,))[0]
    tiled = TAGS["tile_offsets"] in tags
    if tiled:
        offsets, counts = tags[TAGS["tile_offsets"]], tags.get(TAGS["tile_counts"], ())
        th, tw = tags.get(TAGS["tile_length"], (0,))[0], tags.get(TAGS["tile_width"], (0,))[0]
        if th < 1 or tw < 1:
            raise ValueError("TIFF tiles without a tile size")
    else:
        offsets, counts = tags.get(TAGS["strip_offsets"], ()), tags.get(TAGS["strip_counts"], ())
        rps = max(1, min(tags.get(TAGS["rows_per_strip"], (h,))[0], h))
        per_plane = -(-h // rps)
    if len(offsets) != len(counts) or not offsets:
        raise ValueError("TIFF without matching strip or tile offsets and byte counts")
    out = []
    for k, (at, n) in enumerate(zip(offsets, counts)):
        if at + n > len(data):
            raise ValueError("TIFF strip or tile beyond the end of the file")
        rows, cols = (th, tw) if tiled else (min(rps, h - rps * (k % per_plane)), w)
        raw = _inflate(data[at : at + n], compression)
        dtype = np.dtype(bo + DTYPES[kind])
        need = rows * cols * spp * dtype.itemsize
        if len(raw) < need:
            raise ValueError("truncated TIFF image data")
        if predictor == 3:
            out.append(_float_rows(raw[:need], rows, cols, spp, dtype.itemsize).astype(_out_type(kind)))
            continue
        block = np.frombuffer(raw[:need], dtype=dtype).reshape(rows, cols, spp)
        if predictor == 2:  # each sample stored as the difference from its left neighbour's, mod 2^16
            out.append(np.cumsum(block, axis=1, dtype=np.dtype(DTYPES[kind])))  # mod 2^bits, as stored
        else:
            out.append(block.astype(_out_type(kind)))
    return out


def _out_type(kind: str) -> type:
    """What :func:`read_tiff` returns for ``kind``: float32 for 16- and 32-bit floats, else the stored type."""
    return np.float32 if kind in ("f16", "f32") else np.dtype(DTYPES[kind]).type


def read_tiff(data: bytes, at: int | None = None) -> tuple[np.ndarray, bool]:
    """(uint16, float32 or float64 (H, W, C), associated) of the TIFF file ``data``, one :func:`tiff_kind` names
    (floats of 16 bits widened to 32): C = 3 (RGB)
    or 1 (gray, white-is-zero inverted), plus 1 when the next sample is alpha; ``associated``: that alpha is
    premultiplied into the colours. ``at``: the offset of the IFD to read (a page of a stack, :func:`full_pages`);
    the first image by default.

    Raises:
        ValueError: not such a TIFF, a compression or predictor it does not read, or corrupt data (the caller names
            the file).
    """
    bo, big, first = _header(data)
    tags = _tags(data, bo, first if at is None else at, big)[0]
    kind = _kind(tags)
    if kind is None:
        raise ValueError("not a 16-bit RGB, gray-with-alpha or white-is-zero TIFF, nor a float one Pillow cannot read")

    def one(name: str, default=None):
        v = tags.get(TAGS[name])
        if v is None and default is None:
            raise ValueError(f"TIFF without its {name} tag")
        return v[0] if v is not None else default

    w, h, spp = one("width"), one("height"), one("samples", 1)
    compression, predictor, planar = one("compression", 1), one("predictor", 1), one("planar", 1)
    if compression not in COMPRESSIONS:
        raise ValueError(f"TIFF compression {compression} is not read; save with none, LZW, Deflate, LZMA or PackBits")
    if predictor not in ((1, 3) if kind.startswith("f") else (1, 2)) or planar not in (1, 2) or w < 1 or h < 1:
        raise ValueError(
            f"TIFF predictor {predictor} / planar configuration {planar} is not read for {kind} samples; save "
            "without a predictor"
        )
    blocks = _blocks(data, tags, bo, h, w, spp if planar == 1 else 1, kind)
    planes = 1 if planar == 1 else spp
    if len(blocks) % planes:
        raise ValueError("TIFF strips or tiles do not divide among its sample planes")
    per_plane = len(blocks) // planes
    out = np.empty((h, w, spp), dtype=_out_type(kind))
    for p in range(planes):
        mine = blocks[p * per_plane : (p + 1) * per_plane]
        channels = slice(None) if planar == 1 else slice(p, p + 1)
        if TAGS["tile_offsets"] in tags:
            th, tw = one("tile_length"), one("tile_width")
            across = -(-w // tw)
            if len(mine) < across * -(-h // th):
                raise ValueError("TIFF with fewer tiles than its size needs")
            for k, tile in enumerate(mine[: across * -(-h // th)]):
                y, x = (k // across) * th, (k % across) * tw
                out[y : y + th, x : x + tw, channels] = tile[: h - y, : w - x]
        else:
            img = np.concatenate(mine)
            if img.shape[0] < h:
                raise ValueError("TIFF strips hold fewer rows than its height")
            out[:, :, channels] = img[:h]
    extra = tags.get(TAGS["extra_samples"], ())
    photometric = one("photometric")
    colours = COLOURS[photometric]
    alpha = spp > colours and len(extra) >= 1 and extra[0] in (1, 2)
    out = out[:, :, : colours + alpha]
    if photometric == WHITE_IS_ZERO:  # 0 is white: the gray sample inverted (alpha as it is; u16 only)
        out[:, :, 0] = 65535 - out[:, :, 0]
    return np.ascontiguousarray(ORIENT.get(one("orientation", 1), ORIENT[1])(out)), alpha and extra[0] == 1


def hyperstack_bytes(x: np.ndarray) -> bytes:
    """Samples (N, C, H, W) or (N, C, D, H, W) as one little-endian TIFF of 32-bit float gray pages, uncompressed,
    in the order ImageJ reads a hyperstack - channel fastest, then slice, then sample (its "frames") - with the
    ImageJ description that names those counts, so Fiji or napari open it as N samples of C channels (of D slices).

    Each page is one IFD (Sec. 2) with its image in one strip: NewSubfileType 0, ImageWidth, ImageLength,
    BitsPerSample 32, Compression 1, PhotometricInterpretation 1 (black is zero), ImageDescription (first page),
    StripOffsets, SamplesPerPixel 1, RowsPerStrip, StripByteCounts, SampleFormat 3 (IEEE float).

    Raises:
        ValueError: another rank, or more than a classic TIFF's 4 GB.
    """
    if x.ndim not in (4, 5):
        raise ValueError(f"a hyperstack holds (N, C, H, W) or (N, C, D, H, W) samples, not {x.shape}")
    n, c = x.shape[:2]
    d = x.shape[2] if x.ndim == 5 else 1
    h, w = x.shape[-2:]
    pages = np.ascontiguousarray(x.reshape(n, c, d, h, w).transpose(0, 2, 1, 3, 4), dtype="<f4").reshape(-1, h, w)
    described = f"ImageJ=1.11a\nimages={len(pages)}\nchannels={c}\nslices={d}\nframes={n}\nhyperstack=true\n"
    text = described.encode("ascii") + b"\x00"
    strip = h * w * 4
    if 8 + len(text) + len(pages) * (2 + 12 * 12 + 4 + strip) >= 2**32:
        raise ValueError("the samples exceed a classic TIFF's 4 GB; save them with --save-npy")
    out = bytearray(b"II*\x00")
    out += struct.pack("<I", 8 + len(text) + len(text) % 2)  # the first IFD, after the description (word-aligned)
    out += text + b"\x00" * (len(text) % 2)
    for k, page in enumerate(pages):
        tags = [(254, 4, 1, 0), (256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 32), (259, 3, 1, 1), (262, 3, 1, 1)]
        tags += [(270, 2, len(text), 8)] if k == 0 else []  # the description, on the first page
        tags += [(273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, h), (279, 4, 1, strip), (339, 3, 1, 3)]
        data_at = len(out) + 2 + 12 * len(tags) + 4  # the page's strip, right after its IFD
        out += struct.pack("<H", len(tags))
        for tag, typ, count, value in tags:
            value = data_at if tag == 273 else value
            field = struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)  # SHORTs left-justified
            out += struct.pack("<HHI", tag, typ, count) + field
        out += struct.pack("<I", data_at + strip if k + 1 < len(pages) else 0)  # the next page's IFD, or 0
        out += page.tobytes()
    return bytes(out)
