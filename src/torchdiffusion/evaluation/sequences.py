"""Metrics of a sequence model (every metric named here):

* ``bound_bits_per_symbol``: the model's bound on -log2 p(x) per symbol on held-out sequences (sequences.py:
  the continuous-time masked bound, or the T-step uniform bound), a Monte Carlo estimate.
* ``ngram_bits_per_symbol``: the baseline, a fitted n-gram model of order ``NGRAM_ORDER``: its cross-entropy
  on the same held-out sequences (each symbol predicted from the previous n-1 symbols of its sequence, fewer at
  its start). Smoothing: each order backs off to the next lower one with a Dirichlet prior,
  p_k(c | h) = (N(h, c) + beta p_{k-1}(c | h')) / (N(h) + beta), p_0 uniform over V (MacKay & Peto 1995),
  beta = ``NGRAM_BETA``.
* ``ngram_tv``: the n-gram distance - total variation 1/2 sum_g |p(g) - q(g)| between the frequencies of the
  n-grams (n = ``NGRAM_ORDER``) inside the generated sequences and inside the held-out ones; beside it the same
  distance for sequences drawn from the n-gram baseline (``ngram_tv_baseline``) and for the training sequences
  (``ngram_tv_train``, the floor that finite samples leave), all with as many symbols as the samples.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch
from torch import Tensor

NGRAM_ORDER = 3
NGRAM_BETA = 2.0


class NGram:
    """A smoothed n-gram model over symbols 0..V-1 (module docstring)."""

    def __init__(self, order: int, vocab: int, beta: float = NGRAM_BETA):
        self.order, self.V, self.beta = order, vocab, beta
        self.counts = [Counter() for _ in range(order)]  # k -> (context of k symbols, symbol) counts
        self.totals = [Counter() for _ in range(order)]  # k -> context counts

    def fit(self, seqs: list[list[int]]) -> NGram:
        for s in seqs:
            for i, c in enumerate(s):
                for k in range(min(i, self.order - 1) + 1):
                    h = tuple(s[i - k : i])
                    self.counts[k][h, c] += 1
                    self.totals[k][h] += 1
        return self

    def prob(self, h: tuple[int, ...], c: int) -> float:
        p = 1.0 / self.V
        for k in range(len(h) + 1):
            hk = h[len(h) - k :] if k else ()
            p = (self.counts[k][hk, c] + self.beta * p) / (self.totals[k][hk] + self.beta)
        return p

    def bits(self, seqs: list[list[int]]) -> float:
        """Cross-entropy in bits per symbol."""
        total, n = 0.0, 0
        for s in seqs:
            for i, c in enumerate(s):
                total -= math.log2(self.prob(tuple(s[max(0, i - self.order + 1) : i]), c))
                n += 1
        return total / max(1, n)

    def sample(self, n: int, length: int, seed: int = 0) -> list[list[int]]:
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            s: list[int] = []
            for i in range(length):
                h = tuple(s[max(0, i - self.order + 1) : i])
                p = np.array([self.prob(h, c) for c in range(self.V)])
                s.append(int(rng.choice(self.V, p=p / p.sum())))
            out.append(s)
        return out


def ngram_frequencies(seqs: list[list[int]], n: int) -> Counter:
    return Counter(tuple(s[i : i + n]) for s in seqs for i in range(len(s) - n + 1))


def ngram_tv(a: list[list[int]], b: list[list[int]], n: int = NGRAM_ORDER) -> float:
    """Total variation between the n-gram frequencies of two sets of sequences."""
    fa, fb = ngram_frequencies(a, n), ngram_frequencies(b, n)
    na, nb = sum(fa.values()), sum(fb.values())
    return 0.5 * sum(abs(fa[g] / na - fb[g] / nb) for g in set(fa) | set(fb))


def _lists(x: Tensor) -> list[list[int]]:
    return x.round().long().tolist()


def sequence_metrics(model, train: Tensor, held: Tensor, samples: Tensor, vocab: int, *, seed: int = 0) -> dict:
    """Every metric of the module docstring."""
    from ..sequences import bound_bits

    tr, he, sa = _lists(train), _lists(held), _lists(samples)
    ngram = NGram(NGRAM_ORDER, vocab).fit(tr)
    g = torch.Generator().manual_seed(seed)
    floor = [tr[i] for i in torch.randperm(len(tr), generator=g)[: len(sa)].tolist()]
    return {
        "bound_bits_per_symbol": bound_bits(model, held, seed=seed),
        "ngram_bits_per_symbol": ngram.bits(he),
        "ngram_order": NGRAM_ORDER,
        "ngram_tv": ngram_tv(sa, he),
        "ngram_tv_baseline": ngram_tv(ngram.sample(len(sa), len(sa[0]), seed), he),
        "ngram_tv_train": ngram_tv(floor, he),
        "held_out_sequences": len(he),
    }
