"""Metrics of generated volumes (N, C, D, H, W) against held-out real ones, and the Gaussian baseline.

* ``energy`` - the energy distance (Szekely & Rizzo 2013) between the two sets' features,
  ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (within-set means over distinct pairs); 0 iff the laws are equal.
* ``mmd2`` - the unbiased squared maximum mean discrepancy (Gretton et al. 2012, Eq. 3) with a Gaussian kernel
  ``k(a, b) = exp(-|a - b|^2 / (2 h^2))``, h the median distance between real features (median heuristic).
* the features: the 64-d penultimate layer of a small 3-D CNN (:class:`VolumeClassifier`) trained on the
  real training volumes to tell their classes apart (without labels: to tell a volume from its voxels shuffled
  within slices, so that the features still see shape); its held-out accuracy is reported beside.
* ``class_accuracy`` - for class-conditional samples: the share that the classifier assigns to the class asked.
* ``profile_mean_error`` / ``profile_var_error`` - the mean and variance of the voxels of each slice, along each
  axis (D, H, W), for both sets: mean absolute difference of the profiles (the profiles themselves are
  reported too).

The baseline (:func:`gaussian_pca`): a Gaussian with the training volumes' mean and covariance, sampled in the
PCA basis of the training set, ``x = mu + V diag(s / sqrt(N - 1)) z``, z ~ N(0, I) - exactly N(mu, Sigma_hat)
(rank N - 1) without forming the V x V covariance.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FEATURE_DIM = 64


class VolumeClassifier(nn.Module):
    """Three Conv3d - GroupNorm - SiLU - max-pool stages (16, 32, 64 channels), global average pooling -> 64
    features, then a linear head over ``classes``."""

    def __init__(self, in_ch: int, classes: int):
        super().__init__()
        layers, c = [], in_ch
        for width in (16, 32, FEATURE_DIM):
            layers += [nn.Conv3d(c, width, 3, padding=1), nn.GroupNorm(4, width), nn.SiLU(), nn.MaxPool3d(2)]
            c = width
        self.body = nn.Sequential(*layers[:-1])  # no pooling after the last stage: global average instead
        self.head = nn.Linear(FEATURE_DIM, classes)

    def features(self, x: Tensor) -> Tensor:
        """(B, C, D, H, W) -> (B, 64)."""
        return self.body(x).mean(dim=(2, 3, 4))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def shuffled_in_slices(x: Tensor, g: torch.Generator) -> Tensor:
    """Each volume's voxels permuted within each D-slice: the same slice profiles, no shape (the unlabelled
    classifier's negative class)."""
    B, C, D, H, W = x.shape
    flat = x.reshape(B, C, D, H * W)
    idx = torch.argsort(torch.rand(B, 1, D, H * W, generator=g), dim=-1).expand_as(flat)
    return flat.gather(-1, idx).reshape(x.shape)


# The seed of the feature network's training in `evaluate` (the default evaluation seed, so default reports keep
# their features): one fixed feature space per run, whatever seed draws the samples. A small classifier's
# features move with its seed (held-out accuracy 0.56-0.65 here), and the distances in them with it.
FEATURE_SEED = 10_000


def train_classifier(
    x: Tensor, labels: Tensor | None, *, steps: int = 200, batch: int = 64, seed: int = 0
) -> VolumeClassifier:
    """The feature network, trained with Adam (lr 3e-3, ``steps`` batches of ``batch``) on ``x`` for its classes,
    or (``labels=None``) on real versus slice-shuffled volumes."""
    g = torch.Generator().manual_seed(seed)
    if labels is None:
        x = torch.cat([x, shuffled_in_slices(x, g)])
        labels = torch.cat([torch.zeros(len(x) // 2), torch.ones(len(x) // 2)]).long()
    torch.manual_seed(seed)
    net = VolumeClassifier(x.shape[1], int(labels.max()) + 1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    order = torch.cat([torch.randperm(len(x), generator=g) for _ in range(-(-steps * batch // len(x)))])
    for idx in order[: steps * batch].split(batch):
        loss = F.cross_entropy(net(x[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


@torch.no_grad()
def _apply(fn, x: Tensor, batch: int = 128) -> Tensor:
    return torch.cat([fn(x[i : i + batch]) for i in range(0, len(x), batch)])


def energy_distance(a: Tensor, b: Tensor) -> float:
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| over rows of a (n, d) and b (m, d); within-set means over distinct
    pairs (the unbiased U-statistics): :func:`metrics.energy_distance`."""
    from .metrics import energy_distance as energy

    return energy(a, b, unbiased=True)


def mmd2(a: Tensor, b: Tensor, bandwidth: float) -> float:
    """Unbiased MMD^2 with k(u, v) = exp(-|u - v|^2 / (2 h^2)) (Gretton et al. 2012, Eq. 3):
    :func:`metrics.mmd2_unbiased` with :func:`metrics.rbf_kernel`."""
    from .metrics import mmd2_unbiased, rbf_kernel

    return mmd2_unbiased(a, b, rbf_kernel(bandwidth))[0]


def median_distance(z: Tensor) -> float:
    """The median distance between distinct rows (the median heuristic's bandwidth)."""
    d = torch.cdist(z.double(), z.double())
    return float(d[~torch.eye(len(z), dtype=torch.bool)].median())


def slice_profiles(x: Tensor) -> dict[str, dict[str, list[float]]]:
    """Per axis D, H, W: the mean and the variance of the voxels in each slice, over the whole set."""
    out = {}
    for axis, name in ((2, "D"), (3, "H"), (4, "W")):
        v = x.double().movedim(axis, 0).reshape(x.shape[axis], -1)
        out[name] = {"mean": v.mean(1).tolist(), "var": v.var(1).tolist()}
    return out


def profile_errors(x: Tensor, ref: Tensor) -> dict[str, float]:
    """Mean absolute difference of the slice-mean and slice-variance profiles, averaged over the three axes."""
    p, q = slice_profiles(x), slice_profiles(ref)
    err = {}
    for stat in ("mean", "var"):
        diffs = [torch.tensor(p[a][stat]) - torch.tensor(q[a][stat]) for a in "DHW"]
        err[f"profile_{stat}_error"] = float(torch.stack([d.abs().mean() for d in diffs]).mean())
    return err


def gaussian_pca(x: Tensor, n: int, seed: int = 0) -> Tensor:
    """n draws of N(mu, Sigma_hat) fitted to the rows of x (any shape (N, ...)), sampled in its PCA basis."""
    flat = x.reshape(len(x), -1).double()
    mu = flat.mean(0)
    _, s, vh = torch.linalg.svd(flat - mu, full_matrices=False)  # principal axes vh, variances s^2 / (N - 1)
    z = torch.randn(n, len(s), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (mu + (z * s / math.sqrt(len(x) - 1)) @ vh).float().reshape(n, *x.shape[1:])


def volume_metrics(
    real_train: Tensor,
    train_labels: Tensor | None,
    heldout: Tensor,
    heldout_labels: Tensor | None,
    candidates: dict[str, tuple[Tensor, Tensor | None]],
    *,
    seed: int = 0,
) -> dict:
    """The metrics of each candidate set ``name -> (volumes, the classes asked or None)`` against ``heldout``,
    in the features of a classifier trained on ``real_train``."""
    net = train_classifier(real_train, train_labels, seed=seed)
    if heldout_labels is not None:
        accuracy = float((_apply(net, heldout).argmax(1) == heldout_labels).float().mean())
    else:
        accuracy = None
    ref = _apply(net.features, heldout)
    h = median_distance(ref)
    out: dict = {"classifier_heldout_accuracy": accuracy, "bandwidth": h, "n_heldout": len(heldout)}
    for name, (x, asked) in candidates.items():
        f = _apply(net.features, x)
        r = {"n": len(x), "energy": energy_distance(f, ref), "mmd2": mmd2(f, ref, h), **profile_errors(x, heldout)}
        if asked is not None and heldout_labels is not None:
            r["class_accuracy"] = float((_apply(net, x).argmax(1) == asked).float().mean())
        out[name] = r
    out["profiles"] = {"heldout": slice_profiles(heldout)}
    return out
