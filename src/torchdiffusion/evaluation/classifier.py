"""A small CNN classifier per built-in data set: class accuracy of samples, and a feature network.

The network maps ``(B, C, H, W)`` images in [-1, 1] (any C, any H, W >= 8) to class logits (with
``ClassifierConfig.dims = 1`` the same layers in Conv1d read 1-D signals ``(B, C, L)``: evaluation/signals.py);
its penultimate
layer (:meth:`SmallClassifier.features`, a ``(B, F)`` vector after global average pooling and a ReLU
layer) is the project's own feature space for a Fréchet distance (named ``FD-<Data>clf``, never "FID").

Shipped weights live in ``evaluation/weights/<name>-classifier.safetensors`` beside a JSON card holding
the held-out accuracy and the exact command that produced them (``scripts/train_classifier.py``).

    >>> labels, conf = classify(images)            # images: (N, 1, 28, 28) in [-1, 1], MNIST-5k weights
    >>> report = digit_report(images)              # fraction confident >= 0.9, class histogram, balance
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..io import save_safetensors, write_json

WEIGHTS_DIR = Path(__file__).parent / "weights"


class ClassifierError(ValueError):
    """Unusable classifier input (unknown name, missing weights, wrong image shape); one-line message."""


@dataclass(frozen=True)
class ClassifierConfig:
    in_channels: int = 1  # image channels C
    num_classes: int = 10  # classes K
    width: int = 32  # channels of the middle stage; stages are (w/2, w, 2w) and the head is 3w
    feature_dim: int = 128  # F: width of the penultimate (feature) layer
    dropout: float = 0.2  # dropout before the last layer (training only)
    dims: int = 2  # spatial dimensions: 2 for images (N, C, H, W), 1 for signals (N, C, L)


class SmallClassifier(nn.Module):
    """Three conv stages (full, 1/2, 1/4 resolution), global average pool, one hidden layer, logits.

    ~90k parameters for 1-channel 28x28 inputs with the default width. Works for any H, W because the spatial
    dimensions are averaged away before the dense layers.
    """

    def __init__(self, cfg: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        c1, c2, c3, c4 = w // 2, w, 2 * w, 3 * w
        conv = nn.Conv1d if cfg.dims == 1 else nn.Conv2d
        self.body = nn.Sequential(
            conv(cfg.in_channels, c1, 3, padding=1),
            nn.SiLU(),
            conv(c1, c2, 3, stride=2, padding=1),
            nn.SiLU(),  # H/2
            conv(c2, c2, 3, padding=1),
            nn.SiLU(),
            conv(c2, c3, 3, stride=2, padding=1),
            nn.SiLU(),  # H/4
            conv(c3, c4, 3, padding=1),
            nn.SiLU(),
        )
        self.hidden = nn.Linear(c4, cfg.feature_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.feature_dim, cfg.num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features ``(B, F)`` of images ``x: (B, C, H, W)`` in [-1, 1] (signals: (B, C, L))."""
        h = self.body(x).flatten(2).mean(2)  # global average pool -> (B, 3w)
        return F.silu(self.hidden(h))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, K)``."""
        return self.out(self.drop(self.features(x)))


# Training


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image by an integer offset in [-max_shift, max_shift]^2, filling with background -1."""
    if max_shift <= 0:
        return x
    B, _, H, W = x.shape
    p = max_shift
    padded = F.pad(x, (p, p, p, p), value=-1.0)
    dy = torch.randint(0, 2 * p + 1, (B,), generator=generator)
    dx = torch.randint(0, 2 * p + 1, (B,), generator=generator)
    rows = dy[:, None] + torch.arange(H)[None]  # (B, H)
    cols = dx[:, None] + torch.arange(W)[None]  # (B, W)
    idx_b = torch.arange(B)[:, None, None]
    return padded.permute(0, 2, 3, 1)[idx_b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


Batch = tuple[tuple[Tensor, ...], Tensor]  # (network inputs, labels (B,) long)


def fit(
    net: nn.Module,
    batch: Callable[[int], Batch],
    steps: int,
    *,
    lr: float,
    weight_decay: float = 1e-4,
    on_step: Callable[[int, Tensor, Tensor, Tensor], None] | None = None,
) -> nn.Module:
    """Cross-entropy training shared by the classifiers: AdamW, learning rate decayed to 0 by a cosine.

    ``batch(step) -> (inputs, labels)`` draws step ``step``'s batch; the logits are ``net(*inputs)``.
    ``on_step(step, loss, logits, labels)`` runs after each update. Returns ``net`` in eval mode.
    """
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    net.train()
    for step in range(steps):
        inputs, y = batch(step)
        logits = net(*inputs)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if on_step is not None:
            on_step(step, loss.detach(), logits.detach(), y)
    return net.eval()


def train_classifier(
    x: Tensor,
    labels: Tensor,
    *,
    cfg: ClassifierConfig | None = None,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    max_shift: int = 2,
    noise_std: float = 0.05,
    seed: int = 0,
    log=None,
) -> SmallClassifier:
    """Train a :class:`SmallClassifier` on ``x: (N, C, H, W)`` in [-1, 1] with ``labels: (N,)`` long.

    AdamW with a cosine learning-rate decay; light augmentation (random shifts of up to ``max_shift`` pixels
    and small Gaussian pixel noise) so that slightly off-centre or grainy generated images are still read.
    Deterministic for a given seed on one thread. ``log(epoch, loss)`` is called after every epoch.
    """
    if x.ndim != 4 or labels.shape != (x.shape[0],):
        raise ClassifierError(
            f"expected x: (N, C, H, W) and labels: (N,), got {tuple(x.shape)} and {tuple(labels.shape)}"
        )
    labels = labels.long()
    if cfg is None:
        cfg = ClassifierConfig(in_channels=x.shape[1], num_classes=int(labels.max()) + 1)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # initialisation and dropout
    net = SmallClassifier(cfg)
    n = x.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    perm, running = torch.empty(0, dtype=torch.long), [0.0]

    def batch(step: int) -> Batch:
        nonlocal perm
        i = step % steps_per_epoch
        if i == 0:  # a new epoch: a new permutation
            perm = torch.randperm(n, generator=g)
        idx = perm[i * batch_size : (i + 1) * batch_size]
        xb = random_shift(x[idx], max_shift, g)
        if noise_std > 0:
            xb = (xb + noise_std * torch.randn(xb.shape, generator=g)).clamp(-1, 1)
        return (xb,), labels[idx]

    def on_step(step: int, loss: Tensor, logits: Tensor, y: Tensor) -> None:
        running[0] += loss.item() * len(y)
        if (step + 1) % steps_per_epoch == 0:  # the end of an epoch: its mean loss
            if log is not None:
                log(step // steps_per_epoch, running[0] / n)
            running[0] = 0.0

    return fit(net, batch, epochs * steps_per_epoch, lr=lr, weight_decay=weight_decay, on_step=on_step)


@torch.no_grad()
def predict(net: SmallClassifier, x: Tensor, batch_size: int = 512) -> Tensor:
    """Class probabilities ``(N, K)`` of ``x: (N, C, H, W)``, in batches, eval mode."""
    net.eval()
    p = next(net.parameters())
    out = [
        torch.softmax(net(x[i : i + batch_size].to(p.device, p.dtype)).float(), -1).cpu()
        for i in range(0, x.shape[0], batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, net.cfg.num_classes)


def accuracy(net: SmallClassifier, x: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy of ``net`` on ``(x, labels)``."""
    return float((predict(net, x).argmax(-1) == labels.long().cpu()).float().mean())


# Shipped weights


def weights_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}-classifier.safetensors"


def card_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}-classifier.json"


def save_classifier(net: nn.Module, path: str | Path, card: dict | None = None) -> Path:
    """Write a classifier's weights (safetensors, its ``cfg`` dataclass as JSON in the metadata) and an optional
    JSON card beside them (``path`` with .json), atomically."""
    path = Path(path)
    save_safetensors(net.state_dict(), path, metadata={"config": json.dumps(asdict(net.cfg))})
    if card is not None:
        write_json(card, path.with_suffix(".json"))
    return path


def read_classifier_file(path: Path) -> tuple[dict[str, str], dict[str, Tensor]]:
    """The metadata (``"config"``: the network's config as JSON) and the tensors of a classifier file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return meta, load_file(str(path))
    except Exception as e:  # random bytes, a pickle, a truncated file: safetensors' own error types
        raise ClassifierError(f"{path} is not a safetensors weights file ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    return next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)


def load_classifier_file(path: str | Path) -> SmallClassifier:
    """A :class:`SmallClassifier` from a safetensors file written by :func:`save_classifier`, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise ClassifierError(f"no classifier weights at {path}")
    meta, state = read_classifier_file(path)
    if "config" not in meta:
        raise ClassifierError(f"{path} has no classifier config in its metadata")
    try:
        config = json.loads(meta["config"])
        if isinstance(config, dict) and "sigma_data" in config:  # NoisyClassifierConfig's: the other kind
            raise ClassifierError(
                f"{path} is a noise-aware classifier (for 'sample --classifier'); this needs an evaluation "
                "classifier of clean images ('torchdiffusion train-classifier RUN --evaluation')"
            )
        net = SmallClassifier(ClassifierConfig(**config))
        net.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as e:  # another network's weights or config
        if isinstance(e, ClassifierError):
            raise
        raise ClassifierError(f"{path} does not hold this classifier ({_first_line(e)})") from None
    return net.eval()


EVAL_CLASSIFIER_FILE = "eval-classifier.safetensors"  # what 'train-classifier --evaluation' writes in its folder


def is_classifier_file_spec(spec: str) -> bool:
    """A path (a ``.safetensors`` file, or a folder holding eval-classifier.safetensors), not a shipped name."""
    return (
        spec.endswith(".safetensors") or os.sep in spec or (Path(spec).is_dir() and spec not in available_classifiers())
    )


def classifier_file(spec: str | Path) -> Path:
    """The weights file a path names: the file itself, or a train-classifier folder's eval-classifier.safetensors."""
    path = Path(spec)
    if path.is_dir():
        if not (path / EVAL_CLASSIFIER_FILE).is_file():
            raise ClassifierError(
                f"{path} holds no {EVAL_CLASSIFIER_FILE} (train one with 'torchdiffusion train-classifier RUN "
                "--evaluation')"
            )
        return path / EVAL_CLASSIFIER_FILE
    return path


def classifier_from(spec: str) -> SmallClassifier:
    """A shipped classifier by name (``mnist5k``), one from a ``.safetensors`` path, or a train-classifier folder's
    evaluation classifier."""
    if is_classifier_file_spec(spec):
        return load_classifier_file(classifier_file(spec))
    return load_classifier(spec)


def classifier_card_of(spec: str) -> dict:
    """The JSON card (held-out accuracy, data) of a shipped classifier or of a file's ``.json`` beside it."""
    if not is_classifier_file_spec(spec):
        return classifier_card(spec)
    card = classifier_file(spec).with_suffix(".json")
    try:
        return json.loads(card.read_text())
    except (OSError, ValueError):
        return {}


_CACHE: dict[str, SmallClassifier] = {}


def available_classifiers() -> list[str]:
    """Names with shipped weights, e.g. ``["mnist5k"]``."""
    return sorted(p.name[: -len("-classifier.safetensors")] for p in WEIGHTS_DIR.glob("*-classifier.safetensors"))


def load_classifier(name: str = "mnist5k") -> SmallClassifier:
    """The shipped classifier for a built-in data set (``mnist5k``, ``fashion_mnist``, ...), cached, eval mode."""
    if name not in _CACHE:
        path = weights_path(name)
        if not path.is_file():
            have = ", ".join(available_classifiers()) or "none"
            raise ClassifierError(
                f"no shipped classifier for {name!r} data (shipped: {have}); train one on a run's data with "
                "'torchdiffusion train-classifier RUN --evaluation' and pass the file it prints as --classifier"
            )
        _CACHE[name] = load_classifier_file(path)
    return _CACHE[name]


def classifier_card(name: str = "mnist5k") -> dict:
    """The JSON card of a shipped classifier: held-out accuracy, command, data split, and the names of the
    classes it tells apart (those of the built-in data set it was trained on)."""
    from ..data.builtin import DIGIT_NAMES, FASHION_NAMES

    p = card_path(name)
    card = json.loads(p.read_text()) if p.is_file() else {}
    names = {"mnist5k": DIGIT_NAMES, "fashion_mnist": FASHION_NAMES}
    if card.get("data") in names:
        card.setdefault("classes", list(names[card["data"]]))
    return card


def _check_images(images: Tensor, net: SmallClassifier) -> Tensor:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != net.cfg.in_channels:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ClassifierError(f"expected images (N, {net.cfg.in_channels}, H, W) in [-1, 1], got {shape}")
    return images.float()


def classify(images: Tensor, classifier: str | SmallClassifier = "mnist5k") -> tuple[Tensor, Tensor]:
    """Predicted labels ``(N,)`` long and their confidences ``(N,)`` (max softmax probability).

    ``images: (N, C, H, W)`` in [-1, 1] (values outside are clamped, as a sampler's output may overshoot).
    """
    net = load_classifier(classifier) if isinstance(classifier, str) else classifier
    x = _check_images(images, net).clamp(-1, 1)
    probs = predict(net, x)
    conf, labels = probs.max(-1)
    return labels, conf


def class_report(
    images: Tensor,
    classifier: str | SmallClassifier = "mnist5k",
    threshold: float = 0.9,
    min_fraction: float = 0.03,
    labels: Tensor | None = None,
) -> dict:
    """Confidence and class balance of generated images (and accuracy when the intended ``labels`` are known).

    Returns a JSON-ready dict: ``n``, ``confident_fraction`` (share with confidence >= ``threshold``),
    ``mean_confidence``, ``histogram`` (share of each predicted class, list of K), ``min_class_fraction``,
    ``all_classes_present`` (every class >= ``min_fraction``) and, with ``labels`` (N,) given (a
    class-conditional model), ``accuracy`` and ``per_class_accuracy``.
    """
    net = load_classifier(classifier) if isinstance(classifier, str) else classifier
    pred, conf = classify(images, net)
    K = net.cfg.num_classes
    n = int(pred.shape[0])
    if n == 0:
        raise ClassifierError("class_report needs at least one image")
    hist = torch.bincount(pred, minlength=K).double() / n
    out = {
        "n": n,
        "threshold": threshold,
        "confident_fraction": float((conf >= threshold).double().mean()),
        "mean_confidence": float(conf.double().mean()),
        "histogram": [round(float(h), 6) for h in hist],
        "min_class_fraction": float(hist.min()),
        "min_fraction": min_fraction,
        "all_classes_present": bool((hist >= min_fraction).all()),
    }
    if labels is not None:
        labels = labels.long().cpu()
        out["accuracy"] = float((pred == labels).double().mean())
        out["per_class_accuracy"] = [
            float((pred[labels == k] == k).double().mean()) if (labels == k).any() else None for k in range(K)
        ]
    return out


def digit_report(images: Tensor, threshold: float = 0.9, min_fraction: float = 0.03) -> dict:
    """The demo's digit check on ``images: (N, 1, 28, 28)`` in [-1, 1] with the MNIST-5k classifier.

    ``passes`` is True when ``confident_fraction >= 0.7`` and every digit makes up >= ``min_fraction``.
    """
    rep = class_report(images, "mnist5k", threshold=threshold, min_fraction=min_fraction)
    rep["passes"] = bool(rep["confident_fraction"] >= 0.7 and rep["all_classes_present"])
    rep["classifier_heldout_accuracy"] = classifier_card("mnist5k").get("heldout_accuracy")
    return rep
