"""scripts/shortcuts_table.py on a tiny class-conditional MNIST-shaped teacher: students distilled in a separate
--distill-only pass (on the script's thread count, not the teacher's) are reused, not distilled again, and the
table scores every row with the requested-digit accuracy, the teacher at its CFG scale and the student at
guidance 1 (the scale baked in)."""

import json
import sys
from pathlib import Path

import pytest

from tinyruns import write_run

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import shortcuts_table  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = [
    "model.channels=8",
    "model.attn_resolutions=",
    "model.groups=4",
    "diffusion.T=50",
    "sample.steps=2",
    "train.threads=2",
]


def test_class_conditional_table_with_requested_digit_accuracy(tmp_path):
    teacher = write_run(
        tmp_path / "teacher", "mnist-class", [*SMALL, "sample.guidance=2.5"], data_shape=(1, 28, 28), jitter=0.02
    )
    out = tmp_path / "students"
    common = [str(teacher), "--out", str(out), "--images", "32", "--pairs", "8", "--methods", "reflow"]
    common += ["--guidance", "3"]  # not the teacher's own 2.5: teacher rows and students both take it
    assert shortcuts_table.main([*common, "--distill-only"]) == 0
    student = out / "reflow"
    assert json.loads((student / "run.json").read_text())["finished"]
    # distilled on this process's one thread, not the teacher's two (side-by-side students would oversubscribe)
    cfg = json.loads((student / "config.json").read_text())
    assert cfg["train"]["threads"] == 1 and cfg["objective"]["guidance"] == 3.0
    assert not (out / "table.json").exists()  # distil only: nothing scored
    cost = json.loads((student / "distill-cpu.json").read_text())
    stamp = (student / "ema.safetensors").stat().st_mtime_ns

    assert shortcuts_table.main([*common, "--n", "20", "--teacher-samplers", "ddim"]) == 0
    assert (student / "ema.safetensors").stat().st_mtime_ns == stamp  # reused, not distilled again
    record = json.loads((out / "table.json").read_text())
    assert record["distill"]["guidance"] == 3.0
    rows = record["rows"]
    assert [(r["model"], r["nfe"]) for r in rows] == [("teacher (ddim)", n) for n in (1, 2, 4, 20)] + [
        ("reflow student", n) for n in (1, 2, 4)
    ]
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["confident"] <= 1.0 and r["fd_clf"] >= 0.0
    assert {r["guidance"] for r in rows[:4]} == {3.0} and {r["guidance"] for r in rows[4:]} == {1.0}
    assert all(r["cpu_s"] == cost["cpu_s"] for r in rows[4:])
    head = (out / "table.md").read_text().splitlines()[0]
    assert "requested digit" in head
