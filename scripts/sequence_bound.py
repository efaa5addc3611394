"""The bound in bits per symbol of a sequence run on its held-out windows (``sequences.bound_bits``), alone: the
quick figure the short runs of docs/sequences.md's table of levers were compared by. Prints JSON.

python scripts/sequence_bound.py runs/text-chars [times per window, default 8]
"""

import argparse
import json

import torch

from torchdiffusion.data import load_data
from torchdiffusion.generate import load_run
from torchdiffusion.sequences import bound_bits

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a sequence run folder")
    p.add_argument("times", nargs="?", type=int, default=8, help="times per window (default 8)")
    args = p.parse_args()
    torch.set_num_threads(1)

    def main() -> None:
        run = load_run(args.run)
        held = load_data(run.config.data, "holdout", run.config.train.seed)
        bits = bound_bits(run.model, held.x, samples=args.times)
        print(json.dumps({"run": args.run, "bound_bits_per_symbol": round(bits, 4), "held_out": list(held.x.shape)}))

    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
