"""3-D volumes (data kind "volume", one example shaped ``(C, D, H, W)``): procedural shapes, NIfTI files and TIFF
stacks.

``shapes3d`` (built in, installs offline): ``data.volume_count`` soft-edged solids in a ``data.volume_size`` grid
(D, H, W; the sides may differ), one class each - sphere, cube, torus, ellipsoid - with a random rotation
(uniform on SO(3)), size and offset. Volume k is the same for every run: the set is drawn from ``SHAPES_SEED``
(the training seed only chooses the held-out split, like for every source). Voxel values are the occupancy
``o = sigmoid(-sdf / w)`` (``sdf``: the solid's signed distance, ``w`` half a voxel) mapped to ``2 o - 1`` in
[-1, 1]. The grid spans [-1, 1] on every axis, so an anisotropic grid has anisotropic voxels.

``nifti`` (``data.path``: a ``.nii``/``.nii.gz`` file or a folder of them; needs ``nibabel``, the ``volumes``
extra): a 3-D file ``(X, Y, Z)`` is one volume, a 4-D file ``(X, Y, Z, N)`` is N volumes (a series); each is read
as ``(1, D, H, W) = (1, Z, Y, X)`` (axial slices first). All volumes must share one size. Intensities are read as
they are (float32) and mapped to [-1, 1] by ``data.scale`` (data/scale.py), whose ``auto`` is ``percentile`` for
this source: the training volumes' 0.5 and 99.5 percentiles, clamped beyond them, recorded in the run's config so
samples go back to the scanner's units.

``tiff_stack`` (``data.path``: a ``.tif``/``.tiff`` file or a folder of them): each file is one volume, its
full-resolution pages the slices of a z-stack as a microscope writes it, ``(1, D, H, W)`` = (1, pages, rows,
columns); reduced-resolution previews (NewSubfileType) are not slices. Pages are gray: 8-, 16- or 32-bit integers or
16-, 32- or 64-bit floats, in any of the layouts data/tiff.py reads (Pillow reads the others); a colour or
many-channel page, or a file of one page (an image, for the folder source), is refused. All volumes must share one
size. As for NIfTI, intensities are read as they are and ``data.scale=auto`` means ``percentile``.

``.npy``/``.npz`` volumes go through the ``array`` source: a 5-D array ``(N, C, D, H, W)``, or a 4-D
``(N, D, H, W)`` with ``data.layout=NDHW``; their values are kept as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..config import DataConfig
from ..io import first_line
from .base import DataError, TensorData, decode_errors, quiet_large_images, refuse_beyond_float32

SHAPES = ("sphere", "cube", "torus", "ellipsoid")
SHAPES_SEED = 20_260_302  # the fixed seed of the shapes3d set
NIFTI_SUFFIXES = (".nii", ".nii.gz")
TIFF_SUFFIXES = (".tif", ".tiff")


def random_rotations(n: int, g: torch.Generator) -> Tensor:
    """(n, 3, 3) rotations uniform on SO(3): QR of a Gaussian matrix with the signs of R's diagonal fixed
    (Mezzadri 2007), then a reflection flipped into a rotation."""
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    flip = torch.linalg.det(q) < 0
    q[flip, :, 0] *= -1
    return q


def signed_distance(shape: str, p: Tensor, a: Tensor) -> Tensor:
    """Signed distance (negative inside) of a solid centred at the origin; ``p``: (B, M, 3) local points, ``a``:
    (B, 3) its size parameters (radius / half-sides / ring and tube radii / semi-axes)."""
    if shape == "sphere":
        return p.norm(dim=-1) - a[:, None, 0]
    if shape == "cube":  # box of half-sides a: |max(q, 0)| + min(max_i q_i, 0), q = |p| - a
        q = p.abs() - a[:, None, :]
        return q.clamp(min=0).norm(dim=-1) + q.amax(dim=-1).clamp(max=0)
    if shape == "torus":  # ring radius a0 in the local xy plane, tube radius a1
        ring = p[..., :2].norm(dim=-1) - a[:, None, 0]
        return torch.stack([ring, p[..., 2]], -1).norm(dim=-1) - a[:, None, 1]
    if shape == "ellipsoid":  # the first-order distance (|p / a| - 1) min(a), exact on the surface
        return (p / a[:, None, :]).norm(dim=-1).sub(1) * a.amin(dim=-1)[:, None]
    raise ValueError(f"unknown shape {shape!r}")


def _sizes(shape: str, n: int, g: torch.Generator) -> Tensor:
    """(n, 3) random size parameters, in grid units (the grid spans [-1, 1])."""
    u = torch.rand(n, 3, generator=g, dtype=torch.float64)
    if shape == "sphere":
        return 0.3 + 0.3 * u
    if shape == "cube":
        return (0.22 + 0.2 * u[:, :1]).expand(n, 3)
    if shape == "torus":
        return torch.stack([0.35 + 0.2 * u[:, 0], 0.12 + 0.08 * u[:, 1], u[:, 2]], 1)
    return 0.2 + 0.45 * u  # ellipsoid semi-axes


def shapes3d(n: int, size: tuple[int, int, int], seed: int = SHAPES_SEED) -> tuple[Tensor, Tensor]:
    """(n, 1, D, H, W) volumes in [-1, 1] and (n,) labels (index into SHAPES, cycling), volume k from the seed."""
    g = torch.Generator().manual_seed(seed)
    D, H, W = size
    axes = [torch.linspace(-1, 1, s, dtype=torch.float64) for s in (D, H, W)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)  # (M, 3) voxel centres
    labels = torch.arange(n) % len(SHAPES)
    R, offset = random_rotations(n, g), 0.2 * (2 * torch.rand(n, 3, generator=g, dtype=torch.float64) - 1)
    sizes = torch.stack([_sizes(s, n, g) for s in SHAPES], 1)[torch.arange(n), labels]  # (n, 3)
    w = 0.5 * 2 / (min(size) - 1)  # half a voxel of the finest axis
    out = torch.empty(n, D * H * W, dtype=torch.float32)
    for start in range(0, n, 64):  # chunks of 64 volumes keep the (B, M, 3) points small at 32^3
        sl = slice(start, min(n, start + 64))
        local = (
            torch.einsum("bij,mj->bmi", R[sl].transpose(1, 2), grid)
            - torch.einsum("bij,bj->bi", R[sl].transpose(1, 2), offset[sl])[:, None, :]
        )  # p = R^T (x - c)
        sdf = torch.empty(local.shape[:2], dtype=torch.float64)
        for k, name in enumerate(SHAPES):
            m = labels[sl] == k
            if m.any():
                sdf[m] = signed_distance(name, local[m], sizes[sl][m])
        out[sl] = (2 * torch.sigmoid(-sdf / w) - 1).float()
    return out.reshape(n, 1, D, H, W), labels


def load_shapes3d(cfg: DataConfig, seed: int) -> TensorData:
    """The built-in procedural set (module docstring); ``seed`` is not used: the set is fixed."""
    size = tuple(int(s) for s in cfg.volume_size)
    if len(size) != 3 or min(size) < 4:
        raise DataError(f"data.volume_size must be three sides D,H,W of at least 4, got {cfg.volume_size}")
    x, labels = shapes3d(cfg.volume_count, size)
    name = f"shapes3d {'x'.join(map(str, size))}"
    return TensorData(x, labels=labels, class_names=list(SHAPES), kind="volume", name=name)


def volume_files(path: Path, suffixes: tuple[str, ...], what: str) -> list[Path]:
    """The ``what`` files (NIfTI, TIFF) of ``suffixes`` that ``path`` names: itself, or those in the folder,
    searched recursively, sorted, hidden names skipped."""
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(
            f
            for f in path.rglob("*")
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(path).parts)
        )
        files = [f for f in files if f.name.lower().endswith(suffixes)]
    else:
        raise DataError(f"data.path {path} does not exist")
    names = " or ".join(suffixes)
    bad = [f for f in files if not f.name.lower().endswith(suffixes)]
    if bad:
        raise DataError(f"{bad[0].name} is not a {what} file ({names})")
    if not files:
        raise DataError(f"no {names} files under {path}")
    return files


@dataclass(frozen=True)
class NiftiGrid:
    """Where a NIfTI set's voxels lie: the first file's 4 x 4 affine (voxel (i, j, k) -> scanner coordinates).
    Saved in run.json as the data's schema, so ``sample --save-nifti`` writes samples on the same grid."""

    affine: tuple[tuple[float, ...], ...]

    def to_dict(self) -> dict:
        return {"nifti_affine": [list(r) for r in self.affine]}

    @staticmethod
    def from_dict(d: dict | None) -> NiftiGrid | None:
        """The grid a run.json schema records, or None (a volume run of another source)."""
        if not d or "nifti_affine" not in d:
            return None
        return NiftiGrid(tuple(tuple(float(v) for v in r) for r in d["nifti_affine"]))


def _nibabel(what: str):
    try:
        import nibabel
    except ImportError:
        from ..extras import missing

        raise DataError(missing("volumes", what)) from None
    return nibabel


def write_nifti(path: Path, x: np.ndarray, grid: NiftiGrid | None) -> Path:
    """(N, 1, D, H, W) volumes -> one NIfTI series ``(X, Y, Z, N)`` (float32; gzip for a ``.gz`` name), on
    ``grid``'s affine (the identity without one), written atomically: the axes back as :func:`read_nifti` took
    them, so a sample lies where the training scans did."""
    import gzip

    from ..io import atomic_write

    nibabel = _nibabel("writing NIfTI files")
    if x.ndim != 5 or x.shape[1] != 1:
        raise DataError(f"a NIfTI series holds one-channel volumes; these are {tuple(x.shape[1:])}")
    affine = np.array(grid.affine if grid is not None else np.eye(4), dtype=np.float64)
    image = nibabel.Nifti1Image(np.ascontiguousarray(x[:, 0].transpose(3, 2, 1, 0), dtype=np.float32), affine)
    data = image.to_bytes()
    return atomic_write(path, gzip.compress(data, mtime=0) if path.name.lower().endswith(".gz") else data)


def read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """((N, D, H, W) float64 volumes of one file: (X, Y, Z) -> one, (X, Y, Z, N) -> N, axes as (Z, Y, X); its
    4 x 4 affine)."""
    nibabel = _nibabel("reading NIfTI files")
    try:
        image = nibabel.load(str(path))
        a, affine = np.asarray(image.get_fdata(dtype=np.float64)), image.affine
    except Exception as e:  # nibabel raises many types for a damaged file; the message is what matters
        first = first_line(e)
        raise DataError(f"cannot read NIfTI file {path.name}: {first}") from None
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4:
        raise DataError(f"{path.name} is {a.ndim}-D {a.shape}; a NIfTI volume must be (X, Y, Z) or (X, Y, Z, N)")
    if not np.isfinite(a).all():
        raise DataError(f"{path.name} contains NaN or infinite values")
    refuse_beyond_float32(a, path.name)
    return a.transpose(3, 2, 1, 0), affine


def read_tiff_stack(path: Path) -> np.ndarray:
    """The full-resolution pages of a TIFF file as one gray volume (D, H, W), float64, values as stored.

    Raises:
        DataError: not a stack of gray pages of one size, or a page that cannot be read (the message names the
            file).
    """
    import io

    from PIL import Image

    from .tiff import TAGS, _kind, full_pages, read_tiff

    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    try:
        pages = full_pages(data)
    except decode_errors() as e:
        raise DataError(f"cannot read {path}: {first_line(e)}") from None
    if not pages:
        raise DataError(f"cannot read {path}: not a TIFF file")
    if len(pages) < 2:
        raise DataError(f"{path.name} holds one image, not a stack of slices; the folder source reads single images")
    slices, im = [], None  # Pillow opens the file for the pages it reads (it cannot open some data/tiff.py reads)
    with quiet_large_images():
        try:
            for index, at, tags in pages:
                spp = tags.get(TAGS["samples"], (1,))[0]
                if spp != 1 or tags.get(TAGS["photometric"], (1,))[0] not in (0, 1):
                    raise DataError(
                        f"{path.name}: page {index} holds {spp} samples per pixel; the slices of a volume here are "
                        "gray - save channels as one array (N, C, D, H, W) (data.source=array)"
                    )
                if _kind(tags) is not None:  # pages Pillow misreads or cannot open (data/tiff.py)
                    a = read_tiff(data, at)[0][:, :, 0]
                else:
                    im = im or Image.open(io.BytesIO(data))
                    im.seek(index)
                    if im.mode not in ("1", "L", "I", "F") and not im.mode.startswith("I;16"):
                        raise DataError(f"{path.name}: page {index} is of Pillow mode {im.mode}, not a gray slice")
                    a = np.asarray(im)
                if slices and a.shape != slices[0].shape:
                    size, first = "x".join(map(str, a.shape)), "x".join(map(str, slices[0].shape))
                    raise DataError(
                        f"{path.name}: page {index} is {size}, the first page {first}; the slices of a stack share "
                        "one size"
                    )
                slices.append(a.astype(np.float64))
        except DataError:
            raise
        except decode_errors() as e:
            raise DataError(f"cannot read {path}: {first_line(e)}") from None
        finally:
            if im is not None:
                im.close()
    vol = np.stack(slices)
    if not np.isfinite(vol).all():
        raise DataError(f"{path.name} holds NaN or infinite values")
    refuse_beyond_float32(vol, path.name)
    return vol


def load_tiff_stacks(cfg: DataConfig, seed: int) -> TensorData:
    """Volumes from TIFF stacks (module docstring), intensities as they are (float32): ``load_data`` maps them to
    [-1, 1] by ``data.scale`` (percentile unless set), fitted to the training volumes."""
    if not cfg.path:
        raise DataError("the tiff_stack source needs data.path=<file.tif or a folder of TIFF stacks>")
    vols = []
    for f in volume_files(Path(cfg.path).expanduser(), TIFF_SUFFIXES, "TIFF"):
        v = read_tiff_stack(f)
        if vols and v.shape != vols[0].shape:
            raise DataError(f"{f.name} is a volume of size {v.shape}, the first file {vols[0].shape}")
        vols.append(v)
    x = torch.from_numpy(np.stack(vols).astype(np.float32))[:, None].contiguous()
    return TensorData(x, kind="volume", name=f"tiff_stack:{Path(cfg.path).name}")


def load_nifti(cfg: DataConfig, seed: int) -> TensorData:
    """Volumes from NIfTI files (module docstring), intensities as they are (float32): ``load_data`` maps them to
    [-1, 1] by ``data.scale`` (percentile unless set), fitted to the training volumes."""
    if not cfg.path:
        raise DataError("the nifti source needs data.path=<file.nii[.gz] or a folder of them>")
    vols, affines = [], []
    for f in volume_files(Path(cfg.path).expanduser(), NIFTI_SUFFIXES, "NIfTI"):
        v, affine = read_nifti(f)
        if vols and v.shape[1:] != vols[0].shape[1:]:
            raise DataError(f"{f.name} holds volumes of size {v.shape[1:]}, the first file {vols[0].shape[1:]}")
        vols.append(v)
        affines.append(affine)
    x = torch.from_numpy(np.concatenate(vols).astype(np.float32, copy=False))[:, None].contiguous()
    grid = NiftiGrid(tuple(tuple(float(v) for v in row) for row in affines[0]))  # the first file's grid
    return TensorData(x, kind="volume", name=f"nifti:{Path(cfg.path).name}", schema=grid)
