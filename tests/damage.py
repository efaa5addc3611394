"""Ways a file on disk gets damaged, drawn at random: used by the checkpoint tests and scripts/damaged_states.py."""

from __future__ import annotations

import random
from pathlib import Path

KINDS = ("bit_flip", "byte_run", "zero_block", "truncate", "append", "swap_halves", "empty")


def damage(path: Path, rng: random.Random, kind: str | None = None) -> str:
    """Damage ``path`` in place in one of KINDS (random when None) so that its bytes change; returns the kind."""
    kind = kind or rng.choice(KINDS)
    data = bytearray(path.read_bytes())
    n = len(data)
    if kind == "bit_flip":  # one bit, anywhere: the hardest to notice
        i = rng.randrange(n)
        data[i] ^= 1 << rng.randrange(8)
    elif kind == "byte_run":
        i = rng.randrange(n)
        run = rng.randint(1, 64)
        data[i : i + run] = bytes((b + rng.randint(1, 255)) % 256 for b in data[i : i + run])
    elif kind == "zero_block":  # a lost 4 KiB page (skipped if it already is all zeros)
        i = rng.randrange(0, n, 4096)
        block = data[i : i + 4096]
        data[i : i + 4096] = bytes(len(block)) if any(block) else bytes([1]) * len(block)
    elif kind == "truncate":
        data = data[: rng.randrange(n)]
    elif kind == "append":
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == "swap_halves":
        data = data[n // 2 :] + data[: n // 2]
    elif kind == "empty":
        data = bytearray()
    else:
        raise ValueError(f"unknown kind of damage {kind!r}")
    path.write_bytes(bytes(data))
    return kind
