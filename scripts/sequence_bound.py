"""The bound in bits per symbol of a sequence run on its held-out windows (``sequences.bound_bits``), alone: the
quick figure the short runs of docs/sequences.md's table of levers were compared by. Prints JSON.

python scripts/sequence_bound.py runs/text-chars [times per window, default 8]
"""

import json
import sys

import torch

from torchdiffusion.data import load_data
from torchdiffusion.generate import load_run
from torchdiffusion.sequences import bound_bits

if __name__ == "__main__":
    torch.set_num_threads(1)
    run = load_run(sys.argv[1])
    held = load_data(run.config.data, "holdout", run.config.train.seed)
    times = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    bits = bound_bits(run.model, held.x, samples=times)
    print(json.dumps({"run": sys.argv[1], "bound_bits_per_symbol": round(bits, 4), "held_out": list(held.x.shape)}))
