"""The spread of the masked bound's two estimators (categorical.py) on one trained sequence run: the training loss of
a batch of 32 held-out windows with t ~ U(0, 1) or stratified t, weighted (1/t) or anchored; and the evaluation
bound (``sequences.bound_bits``, 4 and 16 stratified times per window) across seeds. Both estimators are unbiased
for the same bound, so their means agree and only their spread differs. Prints JSON.

python scripts/sequence_variance.py runs/text-chars > docs/benchmarks/kinds/variance-text-chars.json
"""

import argparse
import json
import math
import statistics

import torch

from torchdiffusion.data import load_data
from torchdiffusion.generate import load_run
from torchdiffusion.losses import sample_sigmas
from torchdiffusion.sequences import bound_bits

BATCHES, SEEDS = 200, 8


def spread(values: list[float]) -> dict:
    return {"mean": round(statistics.mean(values), 4), "std": round(statistics.stdev(values), 4)}


@torch.no_grad()
def main(path: str) -> dict:
    torch.set_num_threads(1)
    run = load_run(path)
    model = run.model
    held = load_data(run.config.data, "holdout", run.config.train.seed).x
    out = {"run": path, "batch_windows": 32, "batches": BATCHES, "bound_windows": 64, "bound_seeds": SEEDS}
    for estimator in ("weighted", "anchored"):
        model.anchored = estimator == "anchored"
        for times in ("uniform", "stratified"):
            g = torch.Generator().manual_seed(0)
            losses = []
            for _ in range(BATCHES):
                t = sample_sigmas(times, 32, generator=g)
                loss = model.training_loss(held[:32], t, torch.randn(held[:32].shape, generator=g))
                losses.append(float(loss.mean()) / math.log(2))
            out[f"batch_loss_bits_{estimator}_{times}"] = spread(losses)
        for samples in (4, 16):
            bounds = [bound_bits(model, held[:64], samples=samples, seed=s) for s in range(SEEDS)]
            out[f"bound_bits_{estimator}_{samples}_times"] = spread(bounds)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a sequence run folder")
    run = p.parse_args().run
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(lambda: print(json.dumps(main(run), indent=1))))
