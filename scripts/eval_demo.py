"""The demo's acceptance check: are generated digits confidently readable and every class present?

    .venv/bin/python scripts/eval_demo.py samples.npy      # (N, 1, 28, 28) floats in [-1, 1] or uint8 0..255

From Python: ``torchdiffusion.evaluation.classifier.digit_report(images)`` on a (N, 1, 28, 28) tensor in
[-1, 1]. Prints a JSON report: the share with confidence >= 0.9 (needs >= 0.7), the per-class histogram
(every class needs >= 3 %), ``passes``, and the classifier's own held-out accuracy.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from torchdiffusion.evaluation.classifier import digit_report


def load_images(path: str) -> torch.Tensor:
    a = np.load(path)
    x = torch.from_numpy(a)
    if x.dtype == torch.uint8:
        x = x.float() / 127.5 - 1
    if x.ndim == 3:
        x = x[:, None]
    return x.float()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    try:
        rep = digit_report(load_images(argv[0]))
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(rep, indent=2))
    return 0 if rep["passes"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
