"""Data sources: every one loads a whole data set into memory as :class:`TensorData`.

``load_data(cfg, split, seed)`` is the one entry point:

* ``split="train"``: the examples left after the holdout, in the order of a seeded permutation (so
  ``data.limit = N`` takes N examples spread over every class even when the file is sorted by class);
* ``split="holdout"``: the last ``data.holdout`` examples of that permutation (disjoint from "train"); data
  with ``groups`` (emoji with their skin-tone variants) permute whole groups and hold out the last groups until
  they hold at least ``data.holdout`` examples (``split_groups``);
* ``split="test"``: the source's own test split, in file order (Fashion-MNIST only).

The permutation's seed is ``data.seed`` when set, else the ``seed`` passed (a run's ``train.seed``): runs of
several ``train.seed`` hold out the same examples when ``data.seed`` is fixed (``data_seed``).

Then, for images, ``data.image_size`` (scale to cover, centre-crop) and ``data.channels`` (1 or 3) apply to
every source, and for signals ``data.signal_length`` (linear resampling); set for data of another kind they
would change nothing and are refused (``KIND_SETTINGS``). Sources (``SOURCES``): mnist5k,
digits, fashion_mnist, emoji, folder, array, toy, the tables, sequences, volumes (shapes3d, nifti, tiff_stack)
and signals (signal_csv, wav, ucr:<set>); see their modules for the file formats and value conventions. Every
data set has a ``kind`` (``KINDS``): "image" (N, C, H, W) with any channel count, "signal" (N, C, L), "vector"
(N, D), "table", "sequence" or "volume" (N, C, D, H, W); networks and pictures are chosen by it.

``fit_conditioning(cfg, data)`` sets a model's context width from the data (``model.context_dim=-1``) and
refuses a labels file that the model would ignore.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from ..config import MAX_SEED, ConfigError, DataConfig, RunConfig
from ..io import cache_dir
from .base import (
    KINDS,
    NET_OF_KIND,
    DataError,
    TensorData,
    check_size,
    kind_of_shape,
    match_channels,
    resize_crop,
    to_uint8,
)
from .builtin import load_digits, load_fashion_mnist, load_fashion_mnist_test, load_mnist5k
from .emoji import EMOJI_CLASSES, load_emoji
from .files import load_array, load_folder, read_image, read_stored_image
from .scale import recorded, scale_checks, scale_data
from .sequence import load_fasta, load_python_docs, load_sklearn_text, load_text
from .signal import UCR_SETS, load_signal_csv, resample, ucr_loader
from .table import SKLEARN_TABLES, load_csv_table, normalise_table, sklearn_loader
from .toy import TOYS, load_toy
from .volume import load_nifti, load_shapes3d, load_tiff_stacks
from .wav import load_wav

__all__ = [
    "DataError",
    "EMOJI_CLASSES",
    "KINDS",
    "SOURCES",
    "SPLITS",
    "Source",
    "TOYS",
    "TensorData",
    "cache_dir",
    "fit_conditioning",
    "fit_kind",
    "kind_of_shape",
    "load_data",
    "read_image",
    "read_stored_image",
    "scale_of",
    "to_uint8",
]


@dataclass(frozen=True)
class Source:
    load: Callable[[DataConfig, int], TensorData]  # the training pool; seed only matters for random toys
    load_test: Callable[[DataConfig], TensorData] | None = None  # the official test split, if the source has one
    # the DataConfig fields of one kind of source that this one reads (a --set of such a field for a source that does
    # not read it is refused: config.data_readers)
    reads: tuple[str, ...] = ()
    # what data.scale=auto means for it (data/scale.py): "auto" (no map), or a map its values always need
    scale: str = "auto"


# data.path: the user's files, or for a built-in set another copy of them (Fashion-MNIST's IDX files, the emoji font)
PATH_READS = ("path",)
SEQUENCE_READS = ("seq_len",)
SCALE_READS = ("scale", "scale_lo", "scale_hi")  # data.scale: the sources whose values are in the user's units
SIGNAL_READS = ("signal_length",)  # the sources that give 1-D signals (an array of (N, C, L) among its kinds)
SOURCES: dict[str, Source] = {
    "mnist5k": Source(load_mnist5k),
    "digits": Source(load_digits),
    "fashion_mnist": Source(load_fashion_mnist, load_fashion_mnist_test, reads=PATH_READS),
    "emoji": Source(load_emoji, reads=(*PATH_READS, "emoji_size", "emoji_set")),
    "folder": Source(load_folder, reads=(*PATH_READS, *SCALE_READS)),
    "array": Source(load_array, reads=(*PATH_READS, "layout", "labels_path", *SCALE_READS, *SIGNAL_READS)),
    "toy": Source(load_toy, reads=("toy", "toy_size")),
    "csv": Source(load_csv_table, reads=(*PATH_READS, "categorical", "target")),
    **{f"sklearn:{name}": Source(sklearn_loader(name), reads=("target",)) for name in SKLEARN_TABLES},
    "text": Source(load_text, reads=(*PATH_READS, *SEQUENCE_READS)),
    "fasta": Source(load_fasta, reads=(*PATH_READS, *SEQUENCE_READS)),
    "sklearn_text": Source(load_sklearn_text, reads=SEQUENCE_READS),
    "python_docs": Source(load_python_docs, reads=SEQUENCE_READS),
    "shapes3d": Source(load_shapes3d, reads=("volume_size", "volume_count")),
    "nifti": Source(load_nifti, reads=(*PATH_READS, *SCALE_READS), scale="percentile"),  # a scanner's units
    # a microscope's z-stacks
    "tiff_stack": Source(load_tiff_stacks, reads=(*PATH_READS, *SCALE_READS), scale="percentile"),
    "signal_csv": Source(load_signal_csv, reads=(*PATH_READS, "target", *SIGNAL_READS)),
    "wav": Source(load_wav, reads=(*PATH_READS, *SIGNAL_READS)),
    **{f"ucr:{name}": Source(ucr_loader(name), reads=SIGNAL_READS) for name in UCR_SETS},
}
SPLITS = ("train", "holdout", "test")


def split_indices(n: int, holdout: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, holdout) index tensors: a permutation of 0..n-1 seeded with ``seed``, its last ``holdout`` kept out."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: n - holdout], perm[n - holdout :]


def split_groups(groups: torch.Tensor, holdout: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, holdout) index tensors that keep each group whole: the groups in a permutation seeded with ``seed``,
    the last ones kept out until they hold at least ``holdout`` examples; examples in that group order."""
    ids, inverse = torch.unique(groups, return_inverse=True)
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    idx = torch.argsort(rank[inverse] * len(groups) + torch.arange(len(groups)))  # grouped, stable
    sizes = torch.bincount(inverse, minlength=len(ids))[order]
    kept_out = min(len(ids), int((sizes.flip(0).cumsum(0) < holdout).sum()) + 1) if holdout > 0 else 0
    n_out = int(sizes[len(sizes) - kept_out :].sum()) if kept_out else 0
    return idx[: len(groups) - n_out], idx[len(groups) - n_out :]


def data_seed(cfg: DataConfig, seed: int) -> int:
    """The seed of the data (its train/holdout split, toy points): ``data.seed`` when set, else the run's ``seed``."""
    return seed if cfg.seed is None else cfg.seed


def scale_of(cfg: DataConfig) -> str:
    """The map ``data.scale`` means for the source ``cfg.source``: its setting, or for ``auto`` the source's own
    (``Source.scale``); "auto" (no map) for a source that does not read it."""
    src = SOURCES.get(cfg.source)
    if src is None or "scale" not in src.reads:
        return "auto"
    return src.scale if cfg.scale == "auto" else cfg.scale


def load_data(cfg: DataConfig, split: str = "train", seed: int = 0) -> TensorData:
    """The ``split`` of the source ``cfg.source`` as (N, C, H, W) images in [-1, 1] or (N, D) vectors.

    Args:
        cfg: the data section of the run config.
        split: "train", "holdout" or "test" (see the module docstring).
        seed: seeds the train/holdout permutation (and the draw of toy points) unless ``cfg.seed`` is set.

    Raises:
        DataError: unknown source or split, bad holdout/limit, or a source that cannot be read.
    """
    if cfg.source not in SOURCES:
        raise DataError(f"unknown data source {cfg.source!r}; choose from {', '.join(SOURCES)}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if cfg.holdout < 0:
        raise DataError(f"data.holdout must be >= 0, got {cfg.holdout}")
    if cfg.limit is not None and cfg.limit < 1:
        raise DataError(f"data.limit must be >= 1, got {cfg.limit}")
    if cfg.seed is not None and not 0 <= cfg.seed <= MAX_SEED:
        raise DataError(f"data.seed must be in [0, 2^62] or unset, got {cfg.seed}")
    size = check_size(cfg.image_size)
    for ok, message in scale_checks(cfg):  # also for commands whose configs are not RunConfigs (train-autoencoder)
        if not ok:
            raise DataError(message)
    if cfg.channels not in (None, 1, 3):
        raise DataError(f"data.channels must be 1 or 3, got {cfg.channels}")
    src = SOURCES[cfg.source]
    seed = data_seed(cfg, seed)

    if split == "test":
        if src.load_test is None:
            raise DataError(f"the {cfg.source} source has no test split; use split=holdout with data.holdout=N")
        data = src.load_test(cfg)
        check_kind_settings(cfg, data)
    else:
        data = src.load(cfg, seed)
        check_kind_settings(cfg, data)
        n = len(data)
        if split == "holdout" and cfg.holdout == 0:
            raise DataError("the holdout split is empty; set data.holdout=N")
        if cfg.holdout >= n:
            raise DataError(f"data.holdout={cfg.holdout} leaves no training examples out of {n}")
        if data.groups is None:
            train_idx, holdout_idx = split_indices(n, cfg.holdout, seed)
        else:  # variants of one item (an emoji's skin tones) stay on one side
            train_idx, holdout_idx = split_groups(data.groups, cfg.holdout, seed)
            if len(train_idx) == 0:
                raise DataError(f"data.holdout={cfg.holdout} leaves no training examples out of {n}")
        idx = holdout_idx if split == "holdout" else train_idx[: cfg.limit]
        if data.kind == "table":  # quantile knots from the training rows only, for every split
            data = normalise_table(data, train_idx[: cfg.limit])
        how = scale_of(cfg)
        if how != "auto":  # the data's own units -> [-1, 1], by the training rows
            data = scale_data(data, cfg, train_idx[: cfg.limit], how)
        data = data.select(idx)
        if split == "train":
            data.held_out = len(holdout_idx)  # (more than data.holdout where whole groups are held out)

    if data.kind == "image":
        x = match_channels(resize_crop(data.x, size), cfg.channels)
        if x is not data.x:
            data.x = x.contiguous()
    elif data.kind == "signal" and cfg.signal_length is not None:
        data.x = resample(data.x, cfg.signal_length)
    return data


# The data settings that reshape one kind of data (load_data): set for data of another kind they would change
# nothing, so they are refused (an array's kind comes from its shape, data.layout).
KIND_SETTINGS = {"image_size": "image", "channels": "image", "signal_length": "signal"}
_PLURAL = {"image": "images", "signal": "signals"}


def check_kind_settings(cfg: DataConfig, data: TensorData) -> None:
    """DataError when a setting of ``KIND_SETTINGS`` is set for data of another kind, or ``data.channels`` would
    convert the channels of scaled data (``data.scale``): gray/RGB/alpha conversion is defined for pictures'
    values, not for a data set's own units."""
    src = SOURCES[cfg.source]
    # (a setting only some sources read, data.signal_length, is the command line's to refuse for the others:
    # config.refuse_unread; here it is checked where the source reads it, whatever kind its data turns out to be)
    some = {k for source in SOURCES.values() for k in source.reads}
    for kind in dict.fromkeys(KIND_SETTINGS.values()):
        names = [f"data.{k}" for k, v in KIND_SETTINGS.items() if v == kind]
        given = [n for n in names if getattr(cfg, n[5:]) is not None and (n[5:] not in some or n[5:] in src.reads)]
        if data.kind != kind and given:
            verb = "apply" if len(names) > 1 else "applies"
            raise DataError(f"{' and '.join(names)} {verb} to {_PLURAL[kind]}; this {data.kind} data keeps its shape")
    how = scale_of(cfg)
    if data.kind == "image" and how != "auto" and cfg.channels not in (None, data.x.shape[1]):
        c = data.x.shape[1]
        raise DataError(
            f"data.channels={cfg.channels} would convert these {c}-channel images, but data.scale={how} keeps each "
            f"channel in its own units (channel conversion is for pictures): drop data.channels, or convert the "
            f"array to {cfg.channels} channel{'s' * (cfg.channels != 1)} yourself"
        )


def fit_conditioning(cfg: RunConfig, data: TensorData) -> RunConfig:
    """``cfg`` with ``model.context_dim`` taken from ``data`` when it is -1 (``K`` of its (N, K) context rows).

    Raises:
        ConfigError: ``model.context_dim=-1`` but the data has no context vectors, or a labels file
            (``data.labels_path``) is given to a model with no class, context or text input, which would
            silently train an unconditional model.
    """
    m = cfg.model
    context = getattr(data, "context", None)
    if m.context_dim == -1:
        if context is None:
            raise ConfigError(
                "model.context_dim=-1 takes the context width from the data, but it has no context vectors"
            )
        return replace(cfg, model=replace(m, context_dim=int(context.shape[-1])))
    if cfg.data.labels_path and m.num_classes == 0 and m.context_dim == 0 and m.text_dim == 0:
        labels = getattr(data, "labels", None)
        if context is not None:
            fix = f"model.context_dim={int(context.shape[-1])} (or -1 to read it from the labels)"
        else:
            fix = f"model.num_classes={int(labels.max()) + 1 if labels is not None and len(labels) else 'K'}"
        raise ConfigError(
            f"data.labels_path is set but the model takes no conditioning: set {fix}, or drop data.labels_path"
        )
    return cfg


def fit_kind(cfg: RunConfig, data: TensorData) -> RunConfig:
    """``cfg`` with what the data kind decides: a table's category counts (``model.categories``) and a sequence's
    vocabulary size (``model.vocab``), both from the data, an array's value bounds (``data.scale_lo``,
    ``data.scale_hi``, data/scale.py) and a U-Net's attention sizes (``model.attn_resolutions``: a size matching no
    level of the network for this data moved to the nearest level's, nets/unet.py ``fit_attention``); the network
    must be the kind's (``NET_OF_KIND``).

    Raises:
        ConfigError: a table or sequence trained with another network, or a table/sequence network on other data.
    """
    kind, m = data.kind, cfg.model
    wanted = NET_OF_KIND.get(kind)
    special = ("table", "transformer")
    if (kind in ("table", "sequence") or m.net in special) and m.net != wanted:
        raise ConfigError(f"{kind} data is modelled by model.net={wanted}, not model.net={m.net}")
    if data.value_range is not None:  # data.scale: the bounds fitted to the training rows, recorded in config.json
        cfg = replace(cfg, data=recorded(cfg.data, data, scale_of(cfg.data)))
    if m.net == "unet" and len(data.shape) in (2, 3, 4):  # attention at the data's levels (a preset's on other sizes)
        from ..nets.unet import fit_attention

        attn = fit_attention(m, tuple(data.shape))
        if attn != tuple(m.attn_resolutions):
            m = replace(m, attn_resolutions=attn)
            cfg = replace(cfg, model=m)
    if kind == "table":
        return replace(cfg, model=replace(m, categories=data.schema.num_categories))
    if kind == "sequence":
        return replace(cfg, model=replace(m, vocab=len(data.schema)))
    return cfg
