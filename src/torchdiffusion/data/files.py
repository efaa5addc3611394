"""User files: single images, a folder of PNG/JPEG/TIFF/WebP/BMP/GIF files, and .npy/.npz/HDF5 arrays.

Images (``read_image`` and the ``folder`` source):
  * PNG, JPEG, TIFF, WebP, BMP and GIF (``.png .jpg .jpeg .tif .tiff .webp .bmp .gif``, any case); a folder is
    searched recursively, in sorted path order, skipping hidden files and folders (names starting with ``.``). An
    animated WebP or GIF is refused (one image per file; a TIFF stack likewise: :mod:`.tiff`).
  * An EXIF orientation tag (a phone's photo) is applied: the pixels are read the way up every viewer shows them,
    not as stored (Pillow does so for a TIFF's orientation tag itself).
  * Transparency (RGBA, LA, palette or colour-key transparency) is composited over a white background.
  * Colour: an image "has colour" when its RGB channels differ anywhere by more than 2/255; otherwise it is
    read as grayscale (1 channel). A folder is RGB if any of its files has colour, else grayscale, unless
    ``data.channels`` says 1 or 3.
  * 16-bit grayscale PNG/TIFF (Pillow modes ``I;16*``, or ``I`` holding 16-bit values) are scaled from the
    format's range 0..65535 (whatever the values in the file), keeping their 16-bit precision, and so are
    16-bit RGB, RGBA, gray-with-alpha and colour-keyed (tRNS) PNGs, 16-bit RGB(A) and gray-with-alpha TIFFs and
    white-is-zero gray TIFFs (read by :mod:`.png16` and :mod:`.tiff`: Pillow would keep 8 bits, drop the key, not
    open them, or not invert them); float TIFF (gray, Pillow's mode ``F``, or colour, or of 16 or 64 bits, read by
    :mod:`.tiff`) must hold values in [0, 1], signed or 32-bit integer TIFF values (gray, or colour or gray with
    alpha read by :mod:`.tiff`, alpha a fraction of its type's largest value) in 0..65535.
    Each file is scaled by its own format's full scale (255, 65535 or 1), so a folder may mix 8-bit and 16-bit
    (or float) files: a pixel of 128 in an 8-bit PNG and one of 32896 (= 128 * 257) in a 16-bit PNG both read
    as 128/255.
    With ``data.scale`` set, every file is read as the numbers stored in it (0..255, 0..65535, signed or 32-bit
    integers, floats of any range) and the folder's range is mapped to [-1, 1] (data/scale.py); those numbers
    have no white, so a signed or 32-bit integer TIFF's alpha is dropped where it is opaque everywhere and its
    transparent pixels are refused, and a folder mixing files of different full scales (8-bit with 16-bit or
    wider integers, or either with floats: ``DEPTH_NAMES``) is refused, naming a file of each - their numbers
    are on different scales, and one range fitted over both would crush the 8-bit ones to -1.
  * ``data.image_size = H,W`` scales each image to cover (H, W) and centre-crops it; without it all files
    must share one size.
  * Class labels: when every file lies inside a first-level sub-folder and there are at least two of them,
    the sub-folder names are the classes (``labels`` and ``class_names``, sorted).

Arrays (the ``array`` source, ``data.path`` a ``.npy``, ``.npz``, or HDF5 ``.h5``/``.hdf5``):
  * In a ``.npz`` the examples are the key ``x`` or ``images`` (labels: ``labels`` or ``y``), or ``x_train``
    (labels: ``y_train``, as Keras saves its sets), or the only array beside the extras; ``captions`` holds
    optional strings, ``class_names`` optional names. Other sets of keys are refused, naming the keys.
  * An HDF5 file (the ``hdf5`` extra, h5py) is read as an npz whose keys are its datasets: a dataset in a group
    goes by its own name (``train/images`` as ``images``) unless two share it, then by its path; scalar datasets
    (settings stored beside the data) are not arrays of examples and are left out; string datasets are read as
    text. Only the datasets the roles take are read from disk.
  * Layout (``data.layout``; "auto" reads it from the shape, see :func:`array_layout`): ``(N, D)`` vectors
    (kind "vector"); ``(N, C, L)`` 1-D signals (kind "signal") when ``L >= 8 C``, else ``(N, H, W)`` grayscale;
    4-D images of any channel count: channels-first ``(N, C, H, W)`` or channels-last ``(N, H, W, C)`` (the
    sprite format of the DeepLearning.AI course "How Diffusion Models Work"), the channel axis being the one
    of size <= 4, else the smaller of the two; 5-D arrays are volumes ``(N, C, D, H, W)`` (kind "volume"), and
    a 4-D array of single-channel volumes ``(N, D, H, W)`` needs ``data.layout=NDHW``.
  * Vector, signal and volume values are kept as they are (volumes must lie in [-1, 1], where they are sampled:
    training.loop refuses others; scale vectors and signals to about [-1, 1], the range the noise levels
    are made for), unless ``data.scale`` maps each channel's range to [-1, 1] (data/scale.py).
  * Image values: uint8 (or integers of any dtype within 0..255) are 8-bit pixels; booleans and floats with
    min >= 0 and max <= 1 are [0, 1] and mapped to [-1, 1]; other floats within [-1, 1] are kept. Anything else,
    NaN or inf is an error. (All-nonnegative [-1, 1] data is therefore read as [0, 1]: save such data as uint8.)
    With ``data.scale`` set, image values of any range are mapped per channel instead (data/scale.py).
  * Labels (the npz key or ``data.labels_path``, a ``.npy``): ``(N,)`` integers -> ``labels``; ``(N, K)``
    one-hot / multi-hot floats -> ``context`` (and also ``labels`` when every row is exactly one-hot).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..config import DataConfig
from ..io import first_line
from .base import (
    DataError,
    TensorData,
    check_size,
    decode_errors,
    from_uint8,
    from_unit,
    match_channels,
    quiet_large_images,
    refuse_beyond_float32,
    resize_crop,
)
from .png16 import is_png16, read_png16
from .tiff import check_tiff, read_tiff, tiff_kind

LAYOUTS = ("auto", "NCHW", "NHWC", "NHW", "NCL", "NCDHW", "NDHW")
SIGNAL_ASPECT = 8  # "auto" reads a 3-D array (N, A, B) as signals (N, C, L) when B >= 8 A, else as (N, H, W)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif")
GRAY_TOLERANCE = 2  # max |R - G|, |G - B| (in 0..255) for an RGB file to count as grayscale
# the full scales of _decoded: a file's white (the number stored for it, under data.scale)
DEPTH_NAMES = {255.0: "8-bit", 65535.0: "16-bit or wider integer", 1.0: "float"}


def integer_full_scale(lo: int, hi: int) -> float:
    """The full scale (a ``DEPTH_NAMES`` key) of the image files that store integers ``lo..hi``: 255 within
    0..255 (8-bit, whatever the array's dtype), else 65535 (a 16-bit PNG, or a signed or 32-bit TIFF)."""
    return 255.0 if lo >= 0 and hi <= 255 else 65535.0


def array_depth(a: np.ndarray) -> str | None:
    """The ``DEPTH_NAMES`` name of the image files that store the numbers of the image array ``a`` (its
    ``stored_depth``): integers by their values (:func:`integer_full_scale`), floats the float; None for booleans,
    which no image file stores."""
    if a.dtype.kind == "f":
        return DEPTH_NAMES[1.0]
    if a.dtype.kind in "iu":
        return DEPTH_NAMES[integer_full_scale(int(a.min(initial=0)), int(a.max(initial=0)))]
    return None


# Single images


EXIF_ORIENTATION = 0x0112  # the EXIF tag a camera writes instead of turning the pixels (1 = as stored)


def upright(im):
    """``im`` turned and mirrored as its EXIF orientation tag says (2-8: how every viewer shows a phone's photo);
    ``im`` itself when it has no such tag."""
    from PIL import ImageOps

    if im.getexif().get(EXIF_ORIENTATION, 1) in (1, None):
        return im
    return ImageOps.exif_transpose(im)


def _high_depth(im, raw: bool = False) -> tuple[np.ndarray, float] | None:
    """(grayscale values as float64 (H, W), the format's full scale) of a 16-bit, 32-bit integer or float image;
    None for 8-bit modes. ``values / full`` is the pixel's fraction in [0, 1]: scaled by the true range of the
    format, never by the values in the file. 16-bit modes (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``) and 32-bit
    integers (``I``) have full = 65535, floats (``F``) full = 1; an ``I`` value beyond 0..65535 or an ``F`` value
    beyond [0, 1] is refused unless ``raw`` (``data.scale``: the stored numbers, to be mapped by the folder's
    range).
    """
    mode = im.mode
    if not (mode.startswith("I;16") or mode in ("I", "F")):
        return None
    a = np.asarray(im, dtype=np.float64)
    if mode == "F":
        return _unit_floats(a, raw), 1.0
    return _integer_pixels(a, raw), 65535.0


def _integer_pixels(a: np.ndarray, raw: bool) -> np.ndarray:
    """Integer pixels (float64) of a format wider than 16 bits or signed: within 0..65535 (16-bit values) unless
    ``raw`` (``data.scale`` maps the folder's range instead)."""
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if not raw and (lo < 0 or hi > 65535):
        raise DataError(
            f"integer pixels span [{lo:.0f}, {hi:.0f}], beyond 16 bits (0..65535); save 8- or 16-bit images, "
            "or set data.scale=minmax or percentile to map the folder's range"
        )
    return a


def _integer_tiff(samples: np.ndarray, associated: bool, raw: bool) -> np.ndarray:
    """Signed or 32-bit integer samples (H, W, C) of a TIFF - gray or RGB, with or without alpha - as 16-bit values
    composited over white (float64, 0..65535); ``raw``: the stored numbers (data.scale maps them).

    Alpha is a fraction of its type's largest value (TIFF 6.0, ExtraSamples: 0 transparent, the largest value
    opaque). The stored numbers of ``data.scale`` have no white to composite over, so there a transparent pixel is
    refused and an alpha opaque everywhere is dropped."""
    colours = samples.shape[-1] if samples.shape[-1] in (1, 3) else samples.shape[-1] - 1
    values = _integer_pixels(samples[..., :colours].astype(np.float64), raw)
    if colours == samples.shape[-1]:
        return _composite(values / 65535.0) * 65535.0
    full, alpha = float(np.iinfo(samples.dtype).max), samples[..., colours:].astype(np.float64)
    if alpha.size and alpha.min() < 0:
        raise DataError(f"alpha spans [{alpha.min():.0f}, {alpha.max():.0f}]; it must lie in 0..{full:.0f}")
    if raw:
        if (alpha < full).any():
            raise DataError(
                "it has transparent pixels, and data.scale reads the stored numbers, which have no white to "
                "composite them over; save it without alpha (or flattened), or drop data.scale"
            )
        return _composite(values / 65535.0) * 65535.0
    return _composite(np.concatenate([values / 65535.0, alpha / full], axis=-1), associated) * 65535.0


def _colour16(a: np.ndarray, associated: bool = False) -> np.ndarray:
    """uint16 (H, W, C) -> float64 (H, W, 1 or 3) in [0, 1]: :func:`_composite` of the fractions of 65535."""
    return _composite(a.astype(np.float64) / 65535.0, associated)


def _composite(x: np.ndarray, associated: bool = False) -> np.ndarray:
    """float64 (H, W, C) -> (H, W, 1 or 3): C = 1 (gray) or 3 (RGB), plus 1 for alpha (in [0, 1]), which is
    composited over white = 1 (``associated``: the colours are premultiplied by it already); colourless RGB as
    gray."""
    if x.shape[-1] in (2, 4):
        alpha = x[..., -1:]
        x = (x[..., :-1] if associated else x[..., :-1] * alpha) + (1 - alpha)
        if associated:  # a premultiplied colour above its alpha (not a valid one) would pass white: held at white
            x = np.minimum(x, 1.0)
    if x.shape[-1] == 3 and np.abs(np.diff(x, axis=-1)).max(initial=0) <= GRAY_TOLERANCE / 255:
        x = x[..., 1:2]
    return x


def _unit_floats(a: np.ndarray, raw: bool) -> np.ndarray:
    """Float pixels (gray or colour) as float64: finite, and in [0, 1] unless ``raw`` (``data.scale`` maps the
    folder's range instead)."""
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        raise DataError("float pixels include NaN or infinite values")
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if not raw and (lo < 0 or hi > 1):
        raise DataError(
            f"float pixels span [{lo:.3g}, {hi:.3g}]; expected [0, 1], "
            "or set data.scale=minmax or percentile to map the folder's range"
        )
    return a


def _decode(path: Path, raw: bool = False) -> tuple[np.ndarray, float]:
    """(decoded pixels as float32 (H, W, 1) or (H, W, 3) in [0, 1], the format's full scale), alpha composited
    over white (Pillow, and :mod:`.png16` and :mod:`.tiff` for the 16-bit PNGs and TIFFs Pillow would cut to 8
    bits or misread); ``raw``: the numbers stored in the file instead (0..255, 0..65535, any integer or float: the
    fraction times the format's full scale), for ``data.scale`` to map."""
    values, full = _decoded(path, raw)
    return (values if raw else values / full).astype(np.float32), full


def _decoded(path: Path, raw: bool) -> tuple[np.ndarray, float]:
    """(pixels (H, W, 1 or 3), the format's full scale) of :func:`_decode`."""
    from PIL import Image

    try:
        if path.suffix.lower() == ".png" and is_png16(path):
            return _colour16(read_png16(path)) * 65535.0, 65535.0
        if path.suffix.lower() in (".tif", ".tiff"):
            data = path.read_bytes()  # read once for the checks and the reader; Pillow opens it itself
            check_tiff(data)
            kind = tiff_kind(data)
            if kind == "u16":
                return _colour16(*read_tiff(data)) * 65535.0, 65535.0
            if kind in ("i16", "u32", "i32"):  # signed or 32-bit: 16-bit values, or data.scale's numbers
                return _integer_tiff(*read_tiff(data), raw), 65535.0
            if kind is not None:  # floats
                samples, associated = read_tiff(data)
                return _composite(_unit_floats(samples, raw), associated), 1.0
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except decode_errors() as e:  # DataError included: the file named once
        raise DataError(f"cannot read image {path}: {first_line(e)}") from None
    try:
        with quiet_large_images(), Image.open(path) as opened:
            opened.load()
            if opened.format in ("WEBP", "GIF") and getattr(opened, "n_frames", 1) > 1:
                raise DataError(
                    f"it is an animation of {opened.n_frames} frames; the folder source reads one image per file"
                )
            im = upright(opened)
            high = _high_depth(im, raw)
            if high is not None:
                return high[0][..., None], high[1]
            mode = im.mode
            transparent = "A" in im.getbands() or "transparency" in im.info
            if transparent:
                rgba = im.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                im = Image.alpha_composite(white, rgba).convert("RGB")
            elif mode not in ("L", "RGB"):
                im = im.convert("L" if mode in ("1", "L", "LA") else "RGB")
            a = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except DataError as e:
        raise DataError(f"cannot read image {path}: {e}") from None
    except decode_errors() as e:
        raise DataError(f"cannot read image {path}: {first_line(e)}") from None
    if a.ndim == 2:
        a = a[..., None]
    elif int(np.abs(np.diff(a.astype(np.int16), axis=-1)).max(initial=0)) <= GRAY_TOLERANCE:
        a = a[..., 1:2]  # colourless RGB: keep the green channel, which the luma weights most
    return a.astype(np.float64), 255.0


def _decode_tensor(path: Path, raw: bool = False) -> tuple[Tensor, float]:
    """((1, C, H, W) in [-1, 1], C = 1 or 3, the format's full scale) from :func:`_decode`; ``raw``: the numbers
    stored in the file (data.scale maps them afterwards)."""
    x, full = _decode(path, raw)
    x = torch.from_numpy(x).permute(2, 0, 1)[None]
    return (x if raw else from_unit(x)), full


def read_image(
    path: str | Path, size: tuple[int, int] | None = None, channels: int | None = None, raw: bool = False
) -> Tensor:
    """Read a PNG/JPEG/TIFF/WebP/BMP/GIF image as (C, H, W) float32 in [-1, 1].

    Args:
        path: the image file.
        size: (H, W) to scale-to-cover and centre-crop to; None keeps the file's size.
        channels: 1 (grayscale) or 3 (RGB); None keeps the file's (1 if it has no colour, else 3).
        raw: the values the folder source reads under ``data.scale`` instead (the numbers stored in the file:
            0..255, 0..65535, any integer or float), for a run's map to take to [-1, 1].

    Raises:
        DataError: the file is missing, unreadable or corrupt (the message names it).
    """
    return read_stored_image(path, size, channels, raw)[0]


def read_stored_image(
    path: str | Path, size: tuple[int, int] | None = None, channels: int | None = None, raw: bool = False
) -> tuple[Tensor, str]:
    """(:func:`read_image`'s image, the bit depth the file stores: a name of ``DEPTH_NAMES``), for a run that
    maps the stored numbers (``data.scale``) to check a file against the depth its data had."""
    from ..provenance import note_input

    x, full = _decode_tensor(Path(path), raw=raw)
    note_input(path)  # a command's manifest records the files it read (provenance.py)
    return resize_crop(match_channels(x, channels), check_size(size))[0].contiguous(), DEPTH_NAMES[full]


# The folder source


def list_files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The files under ``root`` with one of ``suffixes`` (any case), recursively, sorted by relative path, hidden
    names skipped: what a folder source reads."""
    files = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if p.suffix.lower() in suffixes and not any(part.startswith(".") for part in rel.parts) and p.is_file():
            files.append(rel)
    return [root / r for r in sorted(files, key=lambda r: r.as_posix())]


def load_folder(cfg: DataConfig, seed: int) -> TensorData:
    """Every image file under ``cfg.path`` as (N, C, H, W); see the module docstring for the rules."""
    if not cfg.path:
        raise DataError("the folder source needs data.path=<folder of PNG/JPEG/TIFF/WebP/BMP/GIF images>")
    root = Path(cfg.path).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    files = list_files(root, IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no PNG/JPEG/TIFF/WebP/BMP/GIF images in {root}")
    from . import scale_of  # the package's rule for data.scale (here at call time: it imports this module)

    size, raw = check_size(cfg.image_size), scale_of(cfg) != "auto"
    images, depths = [], {}  # depths: a file of each full scale (data.scale: the stored numbers' units)
    for f in files:
        x, full = _decode_tensor(f, raw=raw)
        images.append(resize_crop(x, size))
        depths.setdefault(full, f)
        if raw and len(depths) > 1:
            (a, fa), (b, fb) = depths.items()
            raise DataError(
                f"data.scale reads the numbers stored in each file, and this folder mixes {DEPTH_NAMES[a]} "
                f"({fa.relative_to(root)}) and {DEPTH_NAMES[b]} ({fb.relative_to(root)}) images, whose numbers are "
                f"on different scales (white {a:g} and {b:g}); save them at one bit depth, or drop data.scale (each "
                "file is then scaled by its own bit depth)"
            )
        if size is None and images[-1].shape[-2:] != images[0].shape[-2:]:
            h0, w0 = images[0].shape[-2:]
            h, w = images[-1].shape[-2:]
            raise DataError(
                f"images differ in size ({h0}x{w0} in {files[0].name}, {h}x{w} in {f.name}); set data.image_size=H,W"
            )
    channels = cfg.channels or max(x.shape[1] for x in images)
    x = torch.cat([match_channels(im, channels) for im in images])

    labels, class_names = folder_classes(root, files)
    depth = DEPTH_NAMES[next(iter(depths))] if len(depths) == 1 else None  # (one under data.scale, see above)
    return TensorData(x, labels=labels, class_names=class_names, name=f"folder:{root}", stored_depth=depth)


def folder_classes(root: Path, files: list[Path]) -> tuple[Tensor | None, list[str] | None]:
    """(labels, class names) of files under ``root`` by their first-level subfolder: classes when every file lies
    in one and there are at least two, else (None, None)."""
    rel = [f.relative_to(root).parts for f in files]
    if not (all(len(r) >= 2 for r in rel) and len({r[0] for r in rel}) >= 2):
        return None, None
    names = sorted({r[0] for r in rel})
    labels = torch.tensor([names.index(r[0]) for r in rel], dtype=torch.long)
    # a folder name that is not UTF-8 (Python holds its bytes as lone surrogates) is named by its escaped bytes,
    # "caf\xe9": text any file, card or web page can hold
    return labels, [n.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") for n in names]


# The array source


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a .npy (key "x") or .npz, read without pickle."""
    if not path.is_file():
        hint = " (python -m torchdiffusion.data.sprites --out DIR writes synthetic course sprites)"
        raise DataError(f"array file not found: {path}{hint if path.name.startswith('sprite') else ''}")
    try:
        if path.suffix.lower() == ".npy":
            return {"x": np.load(path, allow_pickle=False)}
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if not z.files:
                    raise DataError(f"{path} holds no arrays")
                out = {k: z[k] for k in z.files}
            return _named_roles(out, path)
        if path.suffix.lower() in HDF5_SUFFIXES:
            return _load_hdf5(path)
    except DataError:
        raise
    except ValueError as e:
        if "pickle" in str(e):
            raise DataError(f"{path} holds Python objects; save plain numeric arrays") from None
        raise DataError(f"cannot read {path}: {e}") from None
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    raise DataError(f"data.path must be a .npy, .npz or HDF5 (.h5, .hdf5) file, got {path.name}")


HDF5_SUFFIXES = (".h5", ".hdf5")


def _load_hdf5(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an HDF5 file by the npz's roles (module docstring), only the chosen datasets read."""
    try:
        import h5py
    except ImportError:
        from ..extras import missing

        raise DataError(missing("hdf5", f"reading {path.name}")) from None
    try:
        with h5py.File(path, "r") as f:
            found: dict[str, h5py.Dataset] = {}

            def collect(name: str, obj) -> None:  # (a value returned would stop the walk)
                if isinstance(obj, h5py.Dataset):
                    found[name] = obj

            f.visititems(collect)
            found = {k: d for k, d in found.items() if d.ndim > 0}  # scalars: settings, not examples
            if not found:
                raise DataError(f"{path} holds no datasets of examples")
            short = [k.rsplit("/", 1)[-1] for k in found]
            named = {(s if short.count(s) == 1 else k): d for k, s, d in zip(found, short, found.values())}
            roles = _named_roles(named, path)
            return {k: _hdf5_values(d) for k, d in roles.items()}
    except OSError as e:  # not an HDF5 file, or a damaged one
        raise DataError(f"cannot read {path}: {first_line(e)}") from None


def _hdf5_values(d) -> np.ndarray:
    """A dataset's values; strings (variable or fixed length) as a numpy str array."""
    if d.dtype.kind in "OS":
        try:
            return np.asarray(d.asstr()[()], dtype=str)
        except (TypeError, ValueError):
            pass  # not strings: the caller names the dtype it cannot use
    return np.asarray(d[()])


NPZ_EXAMPLES = ("x", "images", "x_train")  # the keys an npz's examples go by, in this order
NPZ_EXTRAS = ("labels", "y", "captions", "class_names")  # the others load_array reads


def _named_roles(arrays: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    """An npz's arrays with the examples as "x" (and their labels as "labels"): the key ``x`` or ``images``
    (labels ``labels`` or ``y``), or ``x_train`` (labels ``y_train``: Keras's files, whose ``x_test`` is not read),
    or the one array there is beside the known extras; anything else is refused rather than guessed."""
    key = next((k for k in NPZ_EXAMPLES if k in arrays), None)
    if key is None:
        others = [k for k in arrays if k not in NPZ_EXTRAS]
        if len(others) != 1:
            raise DataError(
                f"{path.name} holds the arrays {', '.join(arrays)}; name the examples 'x' (or 'images', or "
                "'x_train') and their labels 'labels' (or 'y', or 'y_train')"
            )
        key = others[0]
    arrays["x"] = arrays.pop(key)
    if key == "x_train":  # its labels are y_train, whatever else the file holds
        arrays.pop("labels", None)
        arrays.pop("y", None)
        if "y_train" in arrays:
            arrays["labels"] = arrays.pop("y_train")
    return arrays


def _finite(a: np.ndarray, what: str) -> np.ndarray:
    if a.dtype.kind not in "biuf":
        raise DataError(f"{what} must be numeric, got dtype {a.dtype}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise DataError(f"{what} contains NaN or infinite values")
    refuse_beyond_float32(a, what)
    return a


def array_layout(shape: tuple[int, ...], layout: str = "auto", what: str = "array") -> str:
    """The axes of an array of ``shape``: "ND", "NCL", "NHW", "NCHW", "NHWC", "NCDHW" or "NDHW".

    ``layout`` names them ("auto" decides from the shape): 2-D is vectors; 3-D is signals (N, C, L) when
    ``L >= SIGNAL_ASPECT * C``, else grayscale images; in 4-D the channel axis is whichever of the second and
    last has size <= 4 (the last when both do), else the smaller of the two; equal sizes are ambiguous; 5-D is
    volumes (N, C, D, H, W).
    """
    ndims = {"NCL": 3, "NHW": 3, "NCHW": 4, "NHWC": 4, "NCDHW": 5, "NDHW": 4}
    if layout not in LAYOUTS:
        raise DataError(f"data.layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if len(shape) == 2 and layout == "auto":
        return "ND"
    if layout != "auto":
        if len(shape) != ndims[layout]:
            raise DataError(f"data.layout={layout} needs a {ndims[layout]}-D array, got {what} of shape {shape}")
        return layout
    if len(shape) == 3:
        return "NCL" if shape[2] >= SIGNAL_ASPECT * shape[1] else "NHW"
    if len(shape) == 5:
        return "NCDHW"
    if len(shape) != 4:
        raise DataError(
            f"{what} must be (N, D), (N, C, L), (N, H, W), (N, H, W, C), (N, C, H, W) or (N, C, D, H, W) volumes; "
            f"got a {len(shape)}-D array of shape {shape}"
        )
    first, last = shape[1], shape[3]
    if last <= 4 or (first > 4 and last < first):
        return "NHWC"
    if first <= 4 or first < last:
        return "NCHW"
    raise DataError(
        f"{what} of shape {shape}: cannot tell the channel axis (second or last); set data.layout=NCHW or NHWC"
    )


def _channels_first(a: np.ndarray, axes: str) -> np.ndarray:
    """``a`` with its channel axis second: (N, H, W) and (N, D, H, W) get one channel, (N, H, W, C) is transposed;
    every other layout of :func:`array_layout` is channels-first already."""
    if axes in ("NHW", "NDHW"):
        return a[:, None]
    return a.transpose(0, 3, 1, 2) if axes == "NHWC" else a


def array_to_images(a: np.ndarray, what: str = "array", layout: str = "auto") -> Tensor:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) pixels -> (N, C, H, W) float32 in [-1, 1] (rules above)."""
    a = _finite(a, what)
    if a.dtype.kind == "b":
        a = a.astype(np.float32)  # False/True -> 0/1 -> -1/+1
    axes = array_layout(a.shape, layout, what)
    if axes in ("ND", "NCL", "NCDHW", "NDHW"):
        held = {"ND": "vectors", "NCL": "1-D signals"}.get(axes, "volumes")
        raise DataError(f"{what} of shape {a.shape} holds {held}, not images")
    a = _channels_first(a, axes)
    if a.shape[0] == 0:
        raise DataError(f"{what} holds no examples")
    if a.dtype.kind in "biu":
        lo, hi = int(a.min()), int(a.max())
        if integer_full_scale(lo, hi) != 255.0:
            raise DataError(
                f"{what}: integer pixels must be within 0..255, got {lo}..{hi}; "
                "set data.scale=minmax or percentile to map each channel's range"
            )
        return from_uint8(a.astype(np.uint8))
    x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    lo, hi = float(x.min()), float(x.max())
    tol = 1e-3
    if lo >= -tol and hi <= 1 + tol:
        return from_unit(x).clamp(-1, 1)
    if lo >= -1 - tol and hi <= 1 + tol:
        return x.clamp(-1, 1)
    raise DataError(
        f"{what}: float pixels span [{lo:.3g}, {hi:.3g}]; expected [0, 1] or [-1, 1] (or uint8 0..255), "
        "or set data.scale=minmax or percentile to map each channel's range"
    )


def labels_from_array(a: np.ndarray, n: int, what: str) -> tuple[Tensor | None, Tensor | None]:
    """(N,) integers -> (labels, None); (N, K) floats -> (labels if every row is one-hot else None, context)."""
    a = _finite(a, what)
    if a.ndim not in (1, 2):
        raise DataError(f"{what} must be (N,) class labels or (N, K) one-/multi-hot rows, got shape {a.shape}")
    if a.shape[0] != n:
        raise DataError(f"{what} has {a.shape[0]} rows but there are {n} images")
    if a.ndim == 1:
        if a.dtype.kind == "f" and not (a == np.round(a)).all():
            raise DataError(f"{what}: (N,) labels must be integers")
        labels = torch.from_numpy(a.astype(np.int64))
        if n and int(labels.min()) < 0:
            raise DataError(f"{what}: labels must be >= 0")
        return labels, None
    context = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    one_hot = bool(((context == 0) | (context == 1)).all() and (context.sum(1) == 1).all())
    return (context.argmax(1) if one_hot else None), context


def load_array(cfg: DataConfig, seed: int) -> TensorData:
    """Images, signals, vectors or volumes from ``cfg.path`` (.npy/.npz/HDF5), labels from the file or
    ``cfg.labels_path``."""
    if not cfg.path:
        raise DataError("the array source needs data.path=<file.npy, file.npz or file.h5>")
    path = Path(cfg.path).expanduser()
    arrays = _load_arrays(path)
    a = arrays["x"]
    if a.ndim >= 2 and 0 in a.shape[1:]:
        raise DataError(f"{path.name} has an axis of size 0 (shape {tuple(a.shape)}): its examples hold no values")
    axes = array_layout(a.shape, cfg.layout, path.name)
    # vectors, signals and volumes: values kept as they are; any kind with data.scale: values in the array's own
    # units, mapped to [-1, 1] by load_data (data/scale.py)
    from . import scale_of  # the package's rule for data.scale (here at call time: it imports this module)

    if axes in ("ND", "NCL", "NCDHW", "NDHW") or scale_of(cfg) != "auto":
        a = _channels_first(_finite(a, path.name), axes)
        x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        kind = {"ND": "vector", "NCL": "signal", "NCDHW": "volume", "NDHW": "volume"}.get(axes, "image")
        if x.shape[0] == 0:
            raise DataError(f"{path.name} holds no examples")
    else:
        x, kind = array_to_images(a, path.name, axes), "image"
    n = x.shape[0]

    labels = context = None
    lab_key = next((k for k in ("labels", "y") if k in arrays), None)
    if lab_key is not None:
        labels, context = labels_from_array(arrays[lab_key], n, f"{path.name}[{lab_key!r}]")
    if cfg.labels_path:
        lp = Path(cfg.labels_path).expanduser()
        if lp.suffix.lower() != ".npy":
            raise DataError(f"data.labels_path must be a .npy file, got {lp.name}")
        labels, context = labels_from_array(_load_arrays(lp)["x"], n, lp.name)

    captions = class_names = None
    if "captions" in arrays:
        c = arrays["captions"]
        if c.dtype.kind != "U" or c.shape != (n,):
            raise DataError(f"{path.name}['captions'] must be ({n},) strings, got {c.dtype} {c.shape}")
        captions = [str(s) for s in c]
    if "class_names" in arrays:
        class_names = [str(s) for s in arrays["class_names"].reshape(-1)]
        K = int(labels.max()) + 1 if labels is not None and labels.numel() else 0
        if labels is None:  # names of classes no example has: recorded, and read by nothing
            raise DataError(f"{path.name} has class_names and no labels; add 'labels' or leave class_names out")
        if len(class_names) != K:  # a card or a picture would name class k by another's name, or by none
            raise DataError(
                f"{path.name}['class_names'] has {len(class_names)} names, and its labels run over {K} classes "
                f"(0..{K - 1}); give one name per class"
            )
    return TensorData(
        x,
        labels=labels,
        context=context,
        captions=captions,
        class_names=class_names,
        kind=kind,
        name=f"array:{path.name}",
        stored_depth=array_depth(arrays["x"]) if kind == "image" else None,  # as a folder of such files
    )
