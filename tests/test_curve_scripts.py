"""The time axis of the quality-against-training-time scripts (scripts/dit_vs_unet.py, scripts/preset_curves.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from torchdiffusion.config import override, validate
from torchdiffusion.presets import get_preset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import dit_vs_unet  # noqa: E402
import preset_curves  # noqa: E402


def write_metrics(run: Path, records: list[dict]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_training_seconds_leave_out_the_evaluations(tmp_path):
    """Two evaluations of 20 s and 30 s: the run's clock at each (logged before it runs) less the evaluations
    before it; a run that evaluates more often is not made to look slower."""
    write_metrics(
        tmp_path,
        [
            {"images_seen": 1000, "loss": 0.1, "images_per_s": 10.0, "wall_s": 100.0},
            {"images_seen": 1000, "wall_s": 100.0, "eval/FD-x@8": 5.0, "eval/confident_fraction": 0.5,
             "eval/seconds": 20.0},
            {"images_seen": 2000, "loss": 0.1, "images_per_s": 8.3, "wall_s": 220.0},  # window includes the eval
            {"images_seen": 2000, "wall_s": 220.0, "eval/FD-x@8": 4.0, "eval/seconds": 30.0},
            {"images_seen": 3000, "loss": 0.1, "images_per_s": 7.7, "wall_s": 350.0},
            {"images_seen": 3000, "wall_s": 350.0, "eval/FD-x@8": 3.0, "eval/seconds": 20.0},
        ],
    )  # fmt: skip
    pts = dit_vs_unet.curve(tmp_path)
    assert [p["images"] for p in pts] == [1000, 2000, 3000]
    assert [p["train_seconds"] for p in pts] == pytest.approx([100.0, 200.0, 300.0])
    assert [p["fd"] for p in pts] == [5.0, 4.0, 3.0] and pts[0]["confident_fraction"] == 0.5


def test_training_seconds_of_old_runs_sum_the_log_windows(tmp_path):
    write_metrics(
        tmp_path,
        [
            {"images_seen": 1000, "images_per_s": 10.0},
            {"images_seen": 1000, "eval/FD-x@8": 5.0},
            {"images_seen": 3000, "images_per_s": 20.0},
            {"images_seen": 3000, "eval/FD-x@8": 4.0},
        ],
    )
    assert [p["train_seconds"] for p in dit_vs_unet.curve(tmp_path)] == pytest.approx([100.0, 200.0])


def test_preset_candidates_parse_and_bad_ones_are_refused():
    assert preset_curves.parse("wide=mnist-cpu,model.channels=48,train.precision=bf16") == (
        "wide",
        "mnist-cpu",
        ["model.channels=48", "train.precision=bf16"],
    )
    assert preset_curves.parse("plain=mnist-cpu") == ("plain", "mnist-cpu", [])
    assert preset_curves.parse("s2d=mnist-cpu,model.channel_mult=1,2,2,model.space_to_depth=1") == (
        "s2d",
        "mnist-cpu",
        ["model.channel_mult=1,2,2", "model.space_to_depth=1"],
    )
    for bad in ("mnist-cpu", "=mnist-cpu", "name="):
        with pytest.raises(SystemExit):
            preset_curves.parse(bad)
    for spec in preset_curves.CANDIDATES:  # the default candidates name a preset and valid overrides
        _, preset, sets = preset_curves.parse(spec)
        validate(override(get_preset(preset), sets))


def test_the_chosen_star_sits_where_the_presets_own_run_stops():
    """The star of the chosen curve marks the evaluation where its preset's ``train.images`` is reached (what
    ``make demo`` trains), not the end of the clock-stopped run; a curve that ends earlier is starred at its end."""
    pts = [{"images": n} for n in (15_040, 30_016, 150_016, 165_056)]
    assert preset_curves.star_index(pts, 150_000) == 2
    assert preset_curves.star_index(pts, 15_040) == 0
    assert preset_curves.star_index(pts, 500_000) == 3
    assert preset_curves.star_index(pts, None) == 3
    assert preset_curves.preset_images("mnist-cpu", []) == get_preset("mnist-cpu").train.images
    assert preset_curves.preset_images("mnist-cpu", ["model.channels=48", "train.images=200000"]) == 200_000
    assert preset_curves.autoguided("mnist-cpu-uncond", []) and not preset_curves.autoguided("mnist-cpu", [])
