"""Evaluation: feature networks, sample-quality metrics, bits/dim, memorisation, and run-level reports.

* :mod:`.metrics` - Fréchet distance, KID (+ s.e.), precision/recall, energy distance, sliced Wasserstein, MMD
* :mod:`.features` - EfficientNet-Lite0, the project's classifiers, a user-supplied Inception, raw values
* :mod:`.classifier` - small CNN per data set (shipped weights), ``classify``, ``class_report``, ``digit_report``
* :mod:`.noisy_classifier` - the noise-aware classifier p(y | x, sigma) of classifier guidance (same training code)
* :mod:`.guidance_sweep` - class accuracy and diversity against the classifier-free guidance scale
* :mod:`.likelihood` - bits/dim by the probability-flow ODE and by the discrete VP bound
* :mod:`.memorisation` - nearest training images, copy detection, closest-pairs grid
* :mod:`.evaluate` - ``evaluate(run, metrics, n)`` -> report.json + summary.html (the CLI's ``evaluate``)
"""

from .classifier import class_report, classify, digit_report, load_classifier
from .evaluate import evaluate
from .metrics import FeatureStats, energy_distance, frechet_distance, kid, mmd, precision_recall, sliced_wasserstein

__all__ = [
    "FeatureStats",
    "class_report",
    "classify",
    "digit_report",
    "energy_distance",
    "evaluate",
    "frechet_distance",
    "kid",
    "load_classifier",
    "mmd",
    "precision_recall",
    "sliced_wasserstein",
]
