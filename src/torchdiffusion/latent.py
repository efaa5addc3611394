"""Latent diffusion (Rombach et al. 2022, Sec. 3): diffuse the latents of an autoencoder run instead of pixels.

    data.latents_of = RUN      the autoencoder run (autoencoder.py) whose encoder E and decoder G are used
    z = s * mean(q(z | x))     a training example: the posterior mean of E, times the run's scale factor s
    x = G(z / s)               decoding, once, after the sampler has finished (generate(..., codec=run.codec))

The diffusion model only ever sees ``z``: the training loop, every sampler, guidance and editing wrapper work
on it unchanged, since they only call ``D(z, sigma)``. The data section of a latent run still describes the
*pixel* data (source, image size, channels, holdout); it must match the images the autoencoder was trained on,
and its images are mapped to [-1, 1] as the autoencoder's were: an autoencoder trained on data in its own units
(``data.scale``, float TIFFs in kelvins say) lends the latent run its map and bounds (:func:`with_pixel_map`), so
the run's samples go back to those units and editing inputs come in by them.

The latents of a data set are encoded once and cached as a ``.npy`` in ``cache_dir("latents")``, memory-mapped
when training reads it. The file name is a digest of the images themselves (their values' sha256) and the
autoencoder's sha256, so images edited on disk or an autoencoder whose weights changed get a new file (encoded
again) and the old one is never read for them. Beside each ``.npy`` a ``.json`` records what it holds
(autoencoder sha256, shape, the ``.npy``'s own sha256); a cache whose record disagrees is refused, never used.

A latent run's ``run.json`` records its autoencoder (``latents_of``: path and sha256); :func:`codec_of_run`
reloads it and refuses a run whose autoencoder changed after training (its latents no longer decode).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .config import ConfigError, DataConfig, RunConfig
from .data.base import TensorData
from .io import atomic_write, cache_dir, first_line, sha256_file, sha256_tensor, write_json

CACHE_FORMAT = 1  # bump when the cache's content or record changes meaning
RECORD_KEY = "latents_of"  # run.json: {"path": autoencoder run folder, "sha256": its weights, "relative": path
# from the run folder to it (found there when "path" is gone: both folders moved together)}


@dataclass
class LatentCodec:
    """An autoencoder run seen from a diffusion model: scaled latents in, images out.

    Attributes:
        autoencoder: the loaded Autoencoder (eval mode): ``encode``, ``decode``, ``scale_factor``, ``data_shape``.
        path: its run folder.
    """

    autoencoder: Any
    path: Path
    pixel_map: tuple[str, tuple[float, ...], tuple[float, ...]] | None = None  # its data.scale, scale_lo, scale_hi

    @property
    def sha256(self) -> str:
        return str(self.autoencoder.sha256)

    @property
    def scale_factor(self) -> float:
        return float(self.autoencoder.scale_factor)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of the images it encodes and decodes."""
        return tuple(int(v) for v in self.autoencoder.data_shape)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """(c, H / f, W / f) of one latent."""
        return tuple(int(v) for v in self.autoencoder.latent_shape(self.image_shape))

    def record(self) -> dict:
        """What a latent run's run.json keeps to find and check its autoencoder."""
        return {"path": str(self.path.resolve()), "sha256": self.sha256}

    @torch.no_grad()
    def encode(self, x: Tensor, batch_size: int = 64, bar: Any = None) -> Tensor:
        """(N, C, H, W) images in [-1, 1] -> (N, c, h, w) latents ``z = s * mean(q(z | x))``, float32 on the CPU."""
        out = []
        dev = _device_of(self.autoencoder)
        for start in range(0, len(x), batch_size):
            mean, _ = self.autoencoder.encode(x[start : start + batch_size].to(dev, torch.float32))
            out.append((self.scale_factor * mean).float().cpu())
            if bar is not None:
                bar.update(len(out[-1]))
        return torch.cat(out) if out else x.new_zeros((0, *self.latent_shape))

    @torch.no_grad()
    def decode(self, z: Tensor, batch_size: int = 64) -> Tensor:
        """(N, c, h, w) scaled latents -> (N, C, H, W) images ``G(z / s)`` clamped to [-1, 1], float32 on the CPU."""
        out = []
        dev = _device_of(self.autoencoder)
        for start in range(0, len(z), batch_size):
            zb = z[start : start + batch_size].to(dev, torch.float32) / self.scale_factor
            out.append(self.autoencoder.decode(zb).float().clamp(-1, 1).cpu())
        return torch.cat(out) if out else z.new_zeros((0, *self.image_shape))


def _device_of(autoencoder: Any) -> torch.device:
    return torch.device(getattr(autoencoder, "device", "cpu"))


def open_codec(path: str | Path, device: str | torch.device = "cpu") -> LatentCodec:
    """The autoencoder run at ``path`` as a codec.

    Raises:
        ConfigError: ``path`` is missing or is not an autoencoder run (one line naming it).
    """
    from .autoencoder import load_autoencoder

    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"data.latents_of={path}: no such run folder")
    try:
        ae = load_autoencoder(p, device=device)
    except (ValueError, OSError) as e:  # AutoencoderError: another kind of run, missing or damaged weights
        msg = first_line(e)
        raise ConfigError(f"data.latents_of: {msg}") from None
    return LatentCodec(ae, p, _pixel_map_of(p))


def _pixel_map_of(run: Path) -> tuple[str, tuple[float, ...], tuple[float, ...]] | None:
    """The ``data.scale`` map an autoencoder run's config.json records (its scale and bounds), None without one
    (images read as pictures, or weights without a run config)."""
    try:
        data = json.loads((run / "config.json").read_text()).get("data", {})
    except (OSError, ValueError, AttributeError):
        return None
    lo, hi = data.get("scale_lo") or (), data.get("scale_hi") or ()
    if not lo:
        return None
    return str(data.get("scale")), tuple(float(v) for v in lo), tuple(float(v) for v in hi)


def with_pixel_map(cfg: DataConfig, codec: LatentCodec) -> DataConfig:
    """A latent run's data section with its autoencoder's pixel map: the ``data.scale`` and bounds the autoencoder
    recorded, for the images to be encoded as the autoencoder saw them (and samples, decoded, to go back to the
    data's units by the same bounds); ``cfg`` itself when neither maps its images.

    Raises:
        ConfigError: the run sets a map of its own (another scale or other bounds than the autoencoder's, or one
            the autoencoder does not have), or a source that gives pictures to an autoencoder of data in its own
            units.
    """
    from .data import SOURCES, scale_of

    mine = scale_of(cfg)
    if codec.pixel_map is None:
        if mine != "auto" or cfg.scale_lo:
            raise ConfigError(
                f"data.latents_of={codec.path} was trained on images read as pictures (no data.scale), so this "
                f"run's images cannot be mapped by data.scale={cfg.scale}: leave data.scale unset, or train the "
                "autoencoder with it"
            )
        return cfg
    how, lo, hi = codec.pixel_map
    told = f"data.scale={how} with bounds {list(lo)} .. {list(hi)}"
    src = SOURCES.get(cfg.source)
    if src is None or "scale" not in src.reads:
        raise ConfigError(
            f"data.latents_of={codec.path} encodes images in their own units ({told}); data.source={cfg.source} "
            "gives pictures: use the folder or array source the autoencoder was trained on"
        )
    if (cfg.scale not in ("auto", how)) or (cfg.scale_lo and (tuple(cfg.scale_lo), tuple(cfg.scale_hi)) != (lo, hi)):
        raise ConfigError(
            f"data.latents_of={codec.path} maps its images by {told}; a latent run reads its images by its "
            "autoencoder's map: leave data.scale, data.scale_lo and data.scale_hi unset"
        )
    return replace(cfg, scale=how, scale_lo=lo, scale_hi=hi)


def check_image_shape(codec: LatentCodec, shape: tuple[int, ...], source: str = "") -> None:
    """The pixel data must be the images the autoencoder was trained on: same channel count and size; the
    refusal names the settings that size ``source``'s images."""
    want = codec.image_shape
    if tuple(shape) != want:
        got = "x".join(map(str, shape))
        sizes = "data.emoji_size" if source == "emoji" else "data.image_size / data.channels"
        raise ConfigError(
            f"data.latents_of={codec.path} encodes {'x'.join(map(str, want))} images (C x H x W) but this data "
            f"is {got}; set {sizes} to match or choose another autoencoder"
        )


@dataclass
class LatentData(TensorData):
    """A data set of latents: ``x`` is (N, c, h, w) (memory-mapped), the labels and captions of its images."""

    codec: LatentCodec | None = None


def cache_key(pixels: str, autoencoder: str) -> str:
    """The cache file's name: a digest of everything the latents depend on (and nothing else) - the images
    themselves (``io.sha256_tensor``: whatever source, split, seed or files on disk gave them) and the
    autoencoder's weights (their sha256)."""
    what = {"pixels": pixels, "autoencoder": autoencoder, "format": CACHE_FORMAT}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def load_latents(
    cfg: DataConfig, split: str = "train", seed: int = 0, *, codec: LatentCodec | None = None, progress: bool = True
) -> LatentData:
    """The latents of ``load_data(cfg, split, seed)`` under ``cfg.latents_of`` (or the given ``codec``): read
    from the cache, or encoded once and cached (atomically: an interrupted encoding leaves no file).

    Raises:
        ConfigError: not an autoencoder run, images of another shape, or a cache whose record disagrees.
    """
    from .data import load_data

    if codec is None and not cfg.latents_of:
        raise ConfigError("load_latents needs data.latents_of")
    codec = codec if codec is not None else open_codec(cfg.latents_of)
    cfg = with_pixel_map(cfg, codec)  # the images mapped to [-1, 1] as the autoencoder's were
    pixels = load_data(cfg, split=split, seed=seed)
    if pixels.kind != "image":
        raise ConfigError(f"data.latents_of needs image data; {cfg.source} gives {pixels.kind} data")
    check_image_shape(codec, pixels.shape, cfg.source)
    path = cache_dir("latents") / f"{cache_key(sha256_tensor(pixels.x), codec.sha256)}.npy"
    if not (path.is_file() and path.with_suffix(".json").is_file()):  # the record is written last
        _encode_to(path, codec, pixels.x, progress=progress)
    z = _read_cache(path, codec, len(pixels))
    fields = {k: getattr(pixels, k) for k in ("labels", "context", "captions", "class_names", "schema")}
    extra = {k: v for k, v in vars(pixels).items() if k not in fields and k not in ("x", "kind", "name")}
    data = LatentData(x=z, kind="image", name=f"latents of {pixels.name} by {codec.path}", codec=codec, **fields)
    for k, v in extra.items():  # e.g. the text features of a captioned source
        setattr(data, k, v)
    return data


def training_latents(
    cfg: RunConfig, out: str | Path | None, *, resume: bool, progress: bool = True, device: Any = "cpu"
) -> LatentData:
    """The training data of a latent run (``cfg.data.latents_of`` set): its autoencoder opened, a resumed run
    (``out`` holding one) checked against it *before* anything is encoded, then :func:`load_latents`."""
    codec = open_codec(resumed_latents_of(cfg.data.latents_of, out if resume else None), device=device)
    check_same_images(cfg, codec)
    if resume and out is not None:
        check_resume(Path(out), codec)
    return load_latents(cfg.data, "train", cfg.train.seed, codec=codec, progress=progress)


# The data fields that choose a source's images, beside data.source (equal, a latent run reads the images its
# autoencoder was trained on): only those the source reads, since every other field is a leftover of the preset the
# run started from (the emoji size of an emoji preset under data.source=folder). A source not named here reads its
# images from data.path.
SAME_IMAGES: dict[str, tuple[str, ...]] = {
    "mnist5k": (),
    "digits": (),
    "emoji": ("path", "emoji_size", "emoji_set"),  # path: another copy of the font
    "array": ("path", "layout"),
}


def check_same_images(cfg: RunConfig, codec: LatentCodec) -> None:
    """A latent run on the images its autoencoder was trained on splits them the same way (else it would train on
    images the autoencoder held out, or hold out images it trained on): when data.source and the fields
    ``SAME_IMAGES`` names for it equal those of the autoencoder's config.json, data.holdout and, with a holdout, the
    split's seed (data.seed, else train.seed) must too; a one-line ConfigError otherwise. Other images of the same
    shape (an autoencoder serving another data set) pass, as does an autoencoder without a readable config.json
    (weights alone)."""
    try:
        ae = json.loads((codec.path / "config.json").read_text())
        ae_data, ae_seed = ae["data"], ae.get("train", {}).get("seed", 0)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return
    d = cfg.data
    if d.source != ae_data.get("source"):
        return
    for name in SAME_IMAGES.get(d.source, ("path",)):
        mine, theirs = getattr(d, name), ae_data.get(name)
        if name == "path" and mine and theirs:
            if Path(mine).expanduser().resolve() != Path(theirs).expanduser().resolve():
                return
        elif mine != theirs:
            return
    if d.holdout != ae_data.get("holdout", 0):
        raise ConfigError(
            f"data.holdout={d.holdout}, but the autoencoder {codec.path} was trained on these images with "
            f"data.holdout={ae_data.get('holdout', 0)}: a latent run on its autoencoder's images holds out the same"
        )
    split_seed = d.seed if d.seed is not None else cfg.train.seed
    ae_split = ae_data.get("seed") if ae_data.get("seed") is not None else ae_seed
    if d.holdout > 0 and split_seed != ae_split:
        raise ConfigError(
            f"this run splits its {d.holdout} held-out images with seed {split_seed}, its autoencoder {codec.path} "
            f"with seed {ae_split}: it would train on images the autoencoder held out; add --set data.seed={ae_split} "
            f"(train.seed still varies the run)"
        )


def _encode_to(path: Path, codec: LatentCodec, x: Tensor, *, progress: bool) -> None:
    from tqdm import tqdm

    from .progress import bars_enabled

    bar = tqdm(total=len(x), desc="encoding latents", unit="img", disable=not bars_enabled(progress))
    with bar:
        z = codec.encode(x, bar=bar).numpy()
    atomic_write(path, lambda f: np.save(f, z))
    record = {"format": CACHE_FORMAT, "autoencoder": codec.record(), "shape": list(z.shape)}
    write_json(record | {"npy_sha256": sha256_file(path)}, path.with_suffix(".json"), indent=None)


def _read_cache(path: Path, codec: LatentCodec, n: int) -> Tensor:
    """The cached latents, memory-mapped, after checking the record beside them."""
    rec_path = path.with_suffix(".json")
    try:
        rec = json.loads(rec_path.read_text())
    except (OSError, json.JSONDecodeError):
        rec = None
    shape = [n, *codec.latent_shape]
    ok = (
        isinstance(rec, dict)
        and rec.get("autoencoder", {}).get("sha256") == codec.sha256
        and rec.get("shape") == shape
        and rec.get("npy_sha256") == sha256_file(path)
    )
    if not ok:
        raise ConfigError(
            f"the latent cache {path} does not hold the latents of {codec.path} (sha256 {codec.sha256[:12]}); "
            f"delete it (and its .json) to encode again"
        )
    with warnings.catch_warnings():  # a read-only memory map: torch warns that it is not writable
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.load(path, mmap_mode="r"))


def codec_of_run(run: Path, info: dict, device: str | torch.device = "cpu") -> LatentCodec | None:
    """The autoencoder a latent run's ``run.json`` records (None for a pixel run), checked against its sha256.

    Raises:
        ValueError (ConfigError): the autoencoder run is gone, or its weights changed since this run was trained.
    """
    rec = info.get(RECORD_KEY)
    if not rec:
        return None
    if not isinstance(rec, dict) or "path" not in rec or "sha256" not in rec:
        raise ConfigError(f"{run / 'run.json'} is damaged ({RECORD_KEY} must hold a path and a sha256)")
    try:
        codec = open_codec(recorded_autoencoder(run, rec), device=device)
    except ConfigError as e:
        raise ConfigError(f"{run} diffuses the latents of {rec['path']}, which cannot be loaded ({e})") from None
    check_same_autoencoder(run, rec, codec)  # wherever it was found: the weights it was trained on
    return codec


def recorded_autoencoder(run: Path, rec: dict) -> str | Path:
    """Where the autoencoder a run's ``latents_of`` record names is: its path, or, that gone, its path from the run
    (``relative``: the two folders moved together)."""
    moved = Path(run) / str(rec.get("relative", ""))
    if not Path(rec["path"]).is_dir() and rec.get("relative") and moved.is_dir():
        return moved
    return rec["path"]


def _record_of(run: Path) -> dict | None:
    """The ``latents_of`` record of the run.json in ``run`` (None without one, or a damaged one)."""
    try:
        rec = json.loads((Path(run) / "run.json").read_text()).get(RECORD_KEY)
    except (OSError, ValueError, AttributeError):
        return None
    return rec if isinstance(rec, dict) and "path" in rec and "sha256" in rec else None


def resumed_latents_of(latents_of: str, out: str | Path | None) -> str | Path:
    """The autoencoder a run resumed in ``out`` encodes with: ``latents_of``, or, when that folder is gone and is
    the one the run's run.json records, where the record finds it from the run (both folders moved together, as
    sampling finds it: :func:`recorded_autoencoder`; its sha256 is then checked by :func:`check_resume`)."""
    rec = _record_of(Path(out)) if out is not None and not Path(latents_of).expanduser().is_dir() else None
    if rec is None or Path(latents_of).expanduser().resolve() != Path(rec["path"]).resolve():
        return latents_of
    return recorded_autoencoder(Path(out), rec)


def same_autoencoder_as_recorded(run: Path, latents_of: str) -> bool:
    """Whether the autoencoder at ``latents_of`` has the weights (sha256) the run in ``run`` recorded it was trained
    on: the same latents wherever the folder now is (a resume after both folders moved)."""
    from .autoencoder import WEIGHTS_FILE
    from .io import sha256_file

    rec, weights = _record_of(run), Path(latents_of).expanduser() / WEIGHTS_FILE
    return rec is not None and weights.is_file() and sha256_file(weights) == rec["sha256"]


def check_same_autoencoder(run: Path, rec: dict, codec: LatentCodec) -> None:
    """Refuse a latent run whose autoencoder's weights are not the ones it was trained with."""
    if rec.get("sha256") != codec.sha256:
        raise ConfigError(
            f"{run} was trained on the latents of {rec.get('path')} with weights sha256 "
            f"{str(rec.get('sha256'))[:12]}, but that autoencoder now has {codec.sha256[:12]}: the latents are "
            f"stale; retrain {run} (--no-resume) or restore the autoencoder"
        )


def check_resume(out: Path, codec: LatentCodec) -> None:
    """Before resuming a latent run: its run.json must name the autoencoder we are about to encode with."""
    path = out / "run.json"
    if not path.is_file():
        return
    try:
        rec = json.loads(path.read_text()).get(RECORD_KEY)
    except (OSError, json.JSONDecodeError, AttributeError):
        return
    if isinstance(rec, dict):
        check_same_autoencoder(out, rec, codec)


# Editing in latents: the edit runs on z = s E(x) with the mask on the latent grid; pixels are pasted at the end


def latent_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """A pixel mask ``(..., H, W)`` (1 = known) on the latent grid ``(..., h, w)``: a latent cell is known only as
    far as *every* pixel it covers is, ``m_z = 1 - maxpool(1 - m)`` (so the generated latents cover the whole hole
    and a border the decoder blends; the known pixels themselves are pasted back exactly afterwards)."""
    lead = mask.shape[:-2]
    hole = (1 - mask.float()).reshape(-1, 1, *mask.shape[-2:])
    m = 1 - torch.nn.functional.adaptive_max_pool2d(hole, tuple(size))
    return m.reshape(*lead, *size)


def edit_in_latents(
    codec: LatentCodec, x: Tensor, edit: Callable[[Tensor], Tensor], mask: Tensor | None = None
) -> Tensor:
    """Run ``edit`` (img2img, inpainting ... on latents, ``(B, c, h, w) -> (B, c, h, w)``) on ``z = s E(x)`` for
    images ``x: (B, C, H, W)``, decode the result, and paste the known pixels of ``x`` back where the pixel
    ``mask`` is 1: ``m x + (1 - m) G(z' / s)``; the known region is then exactly the input."""
    from .edit import paste

    out = codec.decode(edit(codec.encode(x)))
    return out if mask is None else paste(out, x, mask.to(out.dtype))


def as_pixels(x: Tensor, codec: LatentCodec | None) -> Tensor:
    """Decoded images of latents ``x`` (the codec's), or ``x`` itself for a pixel run: the one place pictures
    and metrics turn what a sampler produced into images."""
    return x if codec is None else codec.decode(x)


__all__ = [
    "LatentCodec",
    "LatentData",
    "as_pixels",
    "cache_key",
    "edit_in_latents",
    "latent_mask",
    "check_image_shape",
    "check_resume",
    "codec_of_run",
    "load_latents",
    "open_codec",
    "recorded_autoencoder",
    "resumed_latents_of",
    "same_autoencoder_as_recorded",
    "training_latents",
]
