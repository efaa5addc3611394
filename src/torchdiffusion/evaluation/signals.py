"""Metrics of 1-D signals ``(N, C, L)`` and their naive baseline (docs/signals.md).

* ``fd``: the Fréchet distance (metrics.frechet_distance) between generated and held-out real series in the
  features of a small classifier trained on the real training series - the project's MNIST recipe
  (classifier.SmallClassifier, in Conv1d; ``FD-<set>clf``, named for its features);
* ``tstr``: train-on-synthetic/test-on-real - the same classifier trained on generated series (with the class
  each was generated for) and scored on the held-out real ones, beside ``trtr`` (trained on the real training
  series, the ceiling);
* ``fd_train``: the FD of all the real training series (``n_train`` of them, whatever the number of samples)
  against the held-out ones: what a generator that draws exactly from the data scores with ``n_train`` draws
  (FD is biased upwards at small n: the model's FD at fewer samples sits higher for that alone).

The baseline is a Gaussian process per class (:func:`fit_gp`): its mean is the class mean series, its
covariance a stationary squared-exponential kernel ``k(tau) = s^2 exp(-tau^2 / (2 l^2))`` per channel whose
variance ``s^2`` and length-scale ``l`` are moment-fitted to the pooled residuals (``l``: the lag where their
autocorrelation falls to ``exp(-1/2)``, as it does for this kernel). A Gaussian has an exact denoiser, so the
baseline is also an :class:`analytic.GaussianMixture` (tests use it as an oracle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..analytic import GaussianMixture
from ..config import SampleConfig
from .classifier import ClassifierConfig, SmallClassifier, accuracy, fit
from .metrics import FeatureStats, frechet_distance

FEATURES = 32  # F: the width of the signal classifier's feature layer (small: held-out sets have tens of series)
FEATURE_SEED = 0  # the seed of the feature classifier's training, whatever the samples' seed
NUGGET = 1e-4  # the GP covariance's diagonal jitter, as a fraction of s^2 (keeps the Cholesky factor finite)


@dataclass(frozen=True)
class GaussianProcess:
    """Per class k, ``x ~ N(mean[k], K)`` on the L time points of each channel (channels independent)."""

    mean: Tensor  # (K, C, L) class mean series
    variance: Tensor  # (C,) s^2 per channel
    length_scale: Tensor  # (C,) l per channel, in time points

    def covariance(self, c: int) -> Tensor:
        """K_ij = s^2 exp(-(i - j)^2 / (2 l^2)) + NUGGET s^2 delta_ij for channel c, (L, L) float64."""
        L = self.mean.shape[-1]
        t = torch.arange(L, dtype=torch.float64)
        s2, ell = float(self.variance[c]), float(self.length_scale[c])
        k = s2 * torch.exp(-((t[:, None] - t[None]) ** 2) / (2 * ell**2))
        return k + NUGGET * s2 * torch.eye(L, dtype=torch.float64)

    def sample(self, labels: Tensor, seed: int = 0) -> Tensor:
        """(n, C, L) float32 draws, series i of class ``labels[i]``."""
        g = torch.Generator().manual_seed(seed)
        n, (_, C, L) = len(labels), self.mean.shape
        z = torch.randn(n, C, L, generator=g, dtype=torch.float64)
        chol = torch.stack([torch.linalg.cholesky(self.covariance(c)) for c in range(C)])  # (C, L, L)
        return (self.mean[labels.long()] + torch.einsum("cij,ncj->nci", chol, z)).float()

    def mixture(self) -> GaussianMixture:
        """The (unconditional) GP as a mixture of K Gaussians over the flattened (C L,) series: exact denoiser."""
        K, C, L = self.mean.shape
        cov = torch.block_diag(*[self.covariance(c) for c in range(C)])
        return GaussianMixture(self.mean.reshape(K, C * L), cov.expand(K, -1, -1))


def fit_gp(x: Tensor, labels: Tensor, num_classes: int) -> GaussianProcess:
    """Fit the baseline to training series ``x: (N, C, L)`` of classes ``labels: (N,)`` (module docstring)."""
    x = x.double()
    N, C, L = x.shape
    mean = torch.stack([x[labels == k].mean(0) if (labels == k).any() else x.mean(0) for k in range(num_classes)])
    r = x - mean[labels.long()]  # residuals (N, C, L)
    s2 = r.pow(2).mean((0, 2)).clamp(min=1e-12)
    ells = []
    for c in range(C):
        rho = torch.stack([(r[:, c, : L - tau] * r[:, c, tau:]).mean() for tau in range(L)]) / s2[c]
        ells.append(_crossing(rho, math.exp(-0.5)))
    return GaussianProcess(mean, s2, torch.tensor(ells, dtype=torch.float64))


def _crossing(rho: Tensor, level: float) -> float:
    """The first lag (linearly interpolated) where the autocorrelation ``rho`` falls below ``level``."""
    below = (rho < level).nonzero()
    if len(below) == 0:
        return float(len(rho))  # never decorrelates within the window: the longest scale seen
    j = int(below[0])
    if j == 0:
        return 0.5
    a, b = float(rho[j - 1]), float(rho[j])
    return max(0.5, (j - 1) + (a - level) / (a - b))


def random_time_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Shift each series by an integer offset in [-max_shift, max_shift], repeating its end values."""
    if max_shift <= 0:
        return x
    B, C, L = x.shape
    padded = torch.nn.functional.pad(x, (max_shift, max_shift), mode="replicate")
    d = torch.randint(0, 2 * max_shift + 1, (B,), generator=generator)
    idx = (d[:, None] + torch.arange(L)[None]).unsqueeze(1).expand(B, C, L)
    return padded.gather(2, idx)


def train_signal_classifier(
    x: Tensor, labels: Tensor, num_classes: int, *, epochs: int = 200, batch_size: int = 32, seed: int = 0
) -> SmallClassifier:
    """A Conv1d :class:`SmallClassifier` trained on ``x: (N, C, L)`` with light augmentation (time shifts of up
    to 2 % of L, Gaussian noise of 0.05 times the data's standard deviation). Deterministic for a seed."""
    labels = labels.long()
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = SmallClassifier(
        ClassifierConfig(in_channels=x.shape[1], num_classes=num_classes, feature_dim=FEATURES, dims=1)
    )
    n, shift, noise = x.shape[0], max(1, x.shape[-1] // 50), 0.05 * float(x.std())
    per_epoch = math.ceil(n / batch_size)
    perm = torch.empty(0, dtype=torch.long)

    def batch(step: int):
        nonlocal perm
        i = step % per_epoch
        if i == 0:
            perm = torch.randperm(n, generator=g)
        idx = perm[i * batch_size : (i + 1) * batch_size]
        xb = random_time_shift(x[idx], shift, g)
        return (xb + noise * torch.randn(xb.shape, generator=g),), labels[idx]

    return fit(net, batch, epochs * per_epoch, lr=2e-3)


@torch.no_grad()
def features(net: SmallClassifier, x: Tensor) -> Tensor:
    """(N, F) classifier features of series ``x: (N, C, L)``."""
    net.eval()
    return torch.cat([net.features(x[i : i + 512].float()) for i in range(0, len(x), 512)])


def signal_metrics(
    net: SmallClassifier,
    train: tuple[Tensor, Tensor],
    held: tuple[Tensor, Tensor],
    synth: tuple[Tensor, Tensor],
    num_classes: int,
    seed: int = 0,
    epochs: int = 200,
) -> dict:
    """FD against the held-out series and train-on-synthetic accuracy of ``synth = (x, labels)``.

    ``net``: the classifier trained on ``train`` (its features, and its held-out accuracy = ``trtr``); the
    train-on-synthetic classifier gets ``epochs`` epochs over ``synth``."""
    ref = FeatureStats.of(features(net, held[0]))
    tstr_net = train_signal_classifier(*synth, num_classes, epochs=epochs, seed=seed)
    return {
        "fd": frechet_distance(FeatureStats.of(features(net, synth[0])), ref),
        "tstr": accuracy(tstr_net, *held),
        "n": len(synth[0]),
    }


def real_reference(net: SmallClassifier, train: tuple[Tensor, Tensor], held: tuple[Tensor, Tensor]) -> dict:
    """What the real data scores: FD of the training series against the held-out ones, and ``trtr``."""
    ref = FeatureStats.of(features(net, held[0]))
    return {
        "fd_train": frechet_distance(FeatureStats.of(features(net, train[0])), ref),
        "trtr": accuracy(net, *held),
        "n_train": len(train[0]),
        "n_heldout": len(held[0]),
    }


def evaluate_signal_run(run, n: int, seed: int, sample: SampleConfig | None = None, progress: bool = True) -> dict:
    """The metrics of a signal run and of the GP baseline (module docstring), from its training and held-out
    series, its samples drawn by ``sample`` (None: the run's own sampling); also ``samples`` (the model's,
    (n, C, L)) and ``reference`` (held-out series) for the picture."""
    from ..cond import cycled_classes, run_labels
    from ..data import DataError, load_data
    from ..generate import generate
    from ..progress import step_bar

    cfg = run.config
    if cfg.data.holdout == 0:
        raise DataError("evaluating a signal run needs held-out series: train with data.holdout=N")
    train = load_data(cfg.data, "train", cfg.train.seed)
    held = load_data(cfg.data, "holdout", cfg.train.seed)
    K = int(cfg.model.num_classes)
    if K > 0 and (train.labels is None or held.labels is None):
        raise DataError("a class-conditional signal run needs labelled series")
    ytr = train.labels if train.labels is not None else torch.zeros(len(train), dtype=torch.long)
    yho = held.labels if held.labels is not None else torch.zeros(len(held), dtype=torch.long)
    k_metric = int(max(ytr.max(), yho.max())) + 1
    y = run_labels(K, run.info, n)  # the classes the training series held, as every sample of the run asks for
    sample = cfg.sample if sample is None else sample
    with step_bar(math.ceil(n / sample.batch_size) * sample.steps, f"sampling {n} series", show=progress) as bar:
        x = generate(
            run.model,
            range(seed, seed + n),
            sample,
            run.data_shape,
            cond=None if y is None else {"class": y},
            callback=bar.step,
            grid_dir=run.path / "grids",  # its tuned grids, as sample takes them
        )
    y_eval = y if y is not None else _nearest_class(x, train.x, ytr)
    gp = fit_gp(train.x, ytr, k_metric)
    gp_y = y if y is not None else cycled_classes(torch.unique(ytr).tolist(), n)  # (a class of training series)
    # the feature network is the same for every --seed (as the volume metrics' FEATURE_SEED): a seed draws other
    # samples and baseline series, never another feature space or another floor
    net = train_signal_classifier(train.x, ytr, k_metric, seed=FEATURE_SEED)
    return {
        "model": signal_metrics(net, (train.x, ytr), (held.x, yho), (x, y_eval), k_metric, seed),
        "gaussian_process": signal_metrics(
            net, (train.x, ytr), (held.x, yho), (gp.sample(gp_y, seed), gp_y), k_metric, seed
        ),
        "real": real_reference(net, (train.x, ytr), (held.x, yho)),
        "steps": sample.steps,
        "sampler": sample.sampler,
        "samples": x,
        "reference": held.x,
    }


def _nearest_class(x: Tensor, train: Tensor, labels: Tensor) -> Tensor:
    """Unconditional samples get the class of their nearest training series (for train-on-synthetic)."""
    d = torch.cdist(x.flatten(1).double(), train.flatten(1).double())
    return labels[d.argmin(1)]
