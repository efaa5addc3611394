"""Subprocess entry for the distributed distillation test: ``python tests/dmd_worker.py TEACHER OUT [distill args]``.

Runs ``torchdiffusion distill TEACHER --method dmd --out OUT ...`` in this process (one of torchrun's workers,
or alone) and then writes the fake denoiser D_fake this rank trained alongside the student to
``OUT/debug/fake-<rank>.safetensors``: the state that a checkpoint keeps only from rank 0.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    import torch
    from safetensors.torch import save_file

    from torchdiffusion.cli import main as cli
    from torchdiffusion.shortcuts import objectives

    torch.set_num_threads(1)
    made = []
    init = objectives.DistributionMatching.__init__

    def recording_init(self, *args, **kwargs):  # the objective train() builds, kept to read its D_fake afterwards
        init(self, *args, **kwargs)
        made.append(self)

    objectives.DistributionMatching.__init__ = recording_init
    teacher, out, *rest = argv
    rc = cli(["distill", teacher, "--method", "dmd", "--out", out, "--no-progress", *rest])
    if rc == 0:
        debug = Path(out) / "debug"
        debug.mkdir(exist_ok=True)
        state = {k: v.contiguous() for k, v in made[-1].fake.net.state_dict().items()}
        save_file(state, str(debug / f"fake-{os.environ.get('RANK', '0')}.safetensors"))
    return rc


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
