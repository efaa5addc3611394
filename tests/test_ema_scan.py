"""scripts/ema_length_scan.py: the EMAs it keeps beside a run are the run's own EMA at the same ratio, bit for bit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import ema_length_scan  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "model.channels=8",
    "model.groups=4",
    "train.images=256",
    "train.batch_size=32",
    "train.guide_at=0.5",
    "train.log_every_images=128",
    "train.checkpoint_every_images=0",
]


def test_scan_keeps_the_runs_own_ema_at_its_ratio_and_refuses_bad_input(tmp_path, capsys):
    sets = [a for s in [*TINY, "train.ema_warmup_ratio=0.15"] for a in ("--set", s)]
    args = ["--out", str(tmp_path / "scan"), *sets, "--ratios", "0.15,0.5", "--n", "8", "--threads", "1"]
    assert ema_length_scan.main(args) == 0
    out = tmp_path / "scan"
    # the run itself averages at ratio 0.15 (its half-life cap, 22,500 images, is never reached in 256)
    assert (out / "ratio-0.15" / "ema.safetensors").read_bytes() == (out / "run" / "ema.safetensors").read_bytes()
    assert (out / "ratio-0.5" / "ema.safetensors").read_bytes() != (out / "run" / "ema.safetensors").read_bytes()
    for name in ("model.safetensors", "guide.safetensors"):  # the same raw weights and guide for every ratio
        assert (out / "ratio-0.5" / name).read_bytes() == (out / "run" / name).read_bytes()
    record = json.loads((out / "ema-scan.json").read_text())
    assert [r["ratio"] for r in record["rows"]] == [0.15, 0.5]
    assert all(0 <= r["confident_fraction"] <= 1 and r["w"] == 1.5 for r in record["rows"])
    assert "| 0.5 | 128 |" in (out / "ema-scan.md").read_text()
    capsys.readouterr()
    assert ema_length_scan.main(args) == 2  # the run exists: its extra EMAs are gone with the process that kept them
    assert "exists" in capsys.readouterr().err
    for bad in (["--ratios", "0.1,-1"], ["--set", "train.batch_size=0"]):
        assert ema_length_scan.main(["--out", str(tmp_path / "bad"), *bad]) == 2
        assert "error:" in capsys.readouterr().err and not (tmp_path / "bad").exists()
