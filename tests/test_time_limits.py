"""train.cpu_minutes / train.minutes: a run ends at a time limit as at its normal end (final state, EMA weights,
sample grid, metrics, run.json naming the limit); cpu_s / wall_s are cumulative and survive an exact resume; under
torchrun rank 0 decides and every rank stops at the same step; a negative limit is refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_training_worker import TINY, tiny_data
from tinyruns import cli
from torchdiffusion.config import override
from torchdiffusion.generate import load_run
from torchdiffusion.presets import get_preset
from torchdiffusion.training import load_state, train
from torchdiffusion.training.callbacks import Callback

pytestmark = pytest.mark.usefixtures("one_thread")

WORKER = str(Path(__file__).with_name("test_training_worker.py"))
LONG = "train.images=160000"  # 10,000 steps of 16: a limit must end these runs long before


def tiny_cfg(*sets: str):
    return override(get_preset("digits-test"), TINY + list(sets))


def metrics(run: Path) -> list[dict]:
    return [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]


class BurnCPU(Callback):
    """Spend ``seconds`` of this process's CPU time after every step (a busy loop: sleeping costs no CPU)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def after_step(self, state, stats) -> None:
        t0 = time.process_time()
        while time.process_time() - t0 < self.seconds:
            pass


def test_cpu_limit_ends_the_run_with_a_complete_loadable_folder(tmp_path, capsys):
    run = train(
        tiny_cfg(LONG, "train.cpu_minutes=0.01"), tmp_path, data=tiny_data(), progress=False, callbacks=[BurnCPU(0.05)]
    )
    info = json.loads((run / "run.json").read_text())
    seen = info["images_seen"]
    assert info["finished"] and info["stopped_by"] == "train.cpu_minutes"
    assert 16 <= seen < 160_000 and info["cpu_s"] >= 0.6  # 0.01 CPU minutes = 0.6 s
    assert 0.6 <= info["cpu_s"] < 0.6 + 5.0  # it stopped at the first step past the limit (a few of slack)
    m = metrics(run)
    assert m[-1]["images_seen"] == seen and m[-1]["cpu_s"] >= 0.6  # the final metrics line
    assert all(a["cpu_s"] <= b["cpu_s"] and a["wall_s"] <= b["wall_s"] for a, b in zip(m, m[1:]))
    assert (run / "checkpoints/latest").read_text().strip() == f"state-{seen:09d}.pt"  # the final state
    assert (run / "samples" / f"grid-{seen:09d}.png").is_file()  # the final sample grid
    loaded = load_run(run)  # the EMA weights, vouched for by run.json
    assert loaded.model is not None
    assert "train.cpu_minutes=0.01 reached after" in capsys.readouterr().err


def test_wall_limit_is_recorded_as_such(tmp_path):
    from test_training_worker import StepDelay

    run = train(
        tiny_cfg(LONG, "train.minutes=0.01"), tmp_path, data=tiny_data(), progress=False, callbacks=[StepDelay(0.1)]
    )
    info = json.loads((run / "run.json").read_text())
    assert info["finished"] and info["stopped_by"] == "train.minutes" and info["wall_s"] >= 0.6
    assert info["images_seen"] < 160_000 and metrics(run)[-1]["wall_s"] >= 0.6


def test_counters_continue_across_a_resume_and_a_spent_limit_stays_finished(tmp_path):
    a = tmp_path / "a"
    train(tiny_cfg("train.images=64"), a, data=tiny_data(), progress=False, callbacks=[BurnCPU(0.05)])
    saved = load_state(a / "checkpoints" / "state-000000064.pt")["clock"]
    assert saved["cpu_s"] >= 0.2 and saved["wall_s"] > 0
    train(tiny_cfg("train.images=128"), a, data=tiny_data(), progress=False)  # an exact resume, 64 more images
    m = metrics(a)
    assert [r["images_seen"] for r in m] == [32, 64, 96, 128]
    assert m[2]["cpu_s"] > saved["cpu_s"] and m[2]["wall_s"] > saved["wall_s"]  # continued, not restarted
    assert m[3]["cpu_s"] >= m[2]["cpu_s"]
    # the finished run again, with a time limit it has long passed: train.images ended it, and run.json says so
    train(tiny_cfg("train.images=128", "train.cpu_minutes=0.0001"), a, data=tiny_data(), progress=False)
    assert json.loads((a / "run.json").read_text())["stopped_by"] is None

    # a run ended by its limit: the same command again adds nothing; a raised limit continues it
    b = tmp_path / "b"
    train(tiny_cfg(LONG, "train.cpu_minutes=0.005"), b, data=tiny_data(), progress=False, callbacks=[BurnCPU(0.05)])
    first = json.loads((b / "run.json").read_text())
    train(tiny_cfg(LONG, "train.cpu_minutes=0.005"), b, data=tiny_data(), progress=False)
    again = json.loads((b / "run.json").read_text())
    assert again["images_seen"] == first["images_seen"] and again["stopped_by"] == "train.cpu_minutes"
    # raised by 1.2 CPU seconds above what the run has spent so far (every start, resumes included, counts its
    # loading time, which can pass a fixed limit on a loaded machine before a single step)
    assert again["cpu_s"] >= first["cpu_s"]
    raised = (again["cpu_s"] + 1.2) / 60
    train(tiny_cfg(LONG, f"train.cpu_minutes={raised}"), b, data=tiny_data(), progress=False, callbacks=[BurnCPU(0.05)])
    more = json.loads((b / "run.json").read_text())
    assert more["images_seen"] > first["images_seen"] and more["finished"]
    assert more["cpu_s"] >= again["cpu_s"] + 1.2 and more["stopped_by"] == "train.cpu_minutes"


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1")


@pytest.mark.parametrize("key", ["train.cpu_minutes", "train.minutes"])
def test_a_negative_limit_is_refused_in_one_line_before_anything_is_written(tmp_path, key):
    out = tmp_path / "run"
    rc, _, err = cli("train", "--preset", "digits-test", "--set", f"{key}=-1", "--out", out, "--no-progress")
    assert rc == 2 and "Traceback" not in err
    assert err.strip().count("\n") == 0 and f"{key} must be >= 0" in err
    assert not out.exists()


@pytest.mark.slow
def test_under_torchrun_rank_0_decides_and_every_rank_stops_at_the_same_step(tmp_path):
    out = tmp_path / "two"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", WORKER]
    cmd = [*torchrun, str(out), LONG, "train.minutes=0.03", "--step-delay", "0.1", "--dump-ranks"]
    r = subprocess.run(cmd, env=_env(), capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    info = json.loads((out / "run.json").read_text())
    ranks = [json.loads((out / "debug" / f"rank-{k}.json").read_text()) for k in (0, 1)]
    assert info["finished"] and info["stopped_by"] == "train.minutes" and info["images_seen"] < 160_000
    assert ranks[0]["step"] == ranks[1]["step"] == info["images_seen"] // 16


def test_autoencoder_training_ends_at_its_cpu_limit_with_a_complete_run_folder(tmp_path):
    from test_autoencoder import trivial_images
    from torchdiffusion.autoencoder import (
        AutoencoderNetConfig,
        AutoencoderRunConfig,
        AutoencoderTrainConfig,
        load_autoencoder,
    )
    from torchdiffusion.training.autoencoder import train_autoencoder

    x = trivial_images()
    model = AutoencoderNetConfig(latent_channels=2, channels=8, channel_mult=(1, 2), groups=4)
    cfg = AutoencoderRunConfig(
        model=model, train=AutoencoderTrainConfig(images=10**7, batch_size=16, log_every_images=10**6, cpu_minutes=0.01)
    )
    summary = train_autoencoder(cfg, tmp_path, x, x[:8], progress=False)
    assert summary["stopped_by"] == "train.cpu_minutes" and 0 < summary["images_seen"] < 10**7
    assert summary["cpu_s"] >= 0.6 and "holdout_psnr_db" in summary
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["images_seen"] == summary["images_seen"] and rows[-1]["cpu_s"] >= 0.6  # the last line
    assert load_autoencoder(tmp_path).data_shape == (3, 8, 8)


@pytest.mark.parametrize("key", ["train.cpu_minutes", "train.minutes"])
def test_autoencoder_refuses_a_negative_limit_in_one_line(tmp_path, key):
    out = tmp_path / "ae"
    rc, _, err = cli("train-autoencoder", "--preset", "tiny-ae", "--set", f"{key}=-0.5", "--out", out, "--no-progress")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "must be >= 0" in err
    assert not out.exists()


def test_a_rerun_of_a_finished_run_continues_the_counters_run_json_recorded(tmp_path):
    """run.json is written after the last state (the final exports and grid come between), so it counts more CPU and
    wall seconds than the state holds: a rerun that found nothing left to train restarted from the state's and wrote
    smaller counters than the run had recorded (flaky on a loaded machine, where that work takes longest)."""
    run = tmp_path / "run"
    train(tiny_cfg("train.images=64"), run, data=tiny_data(), progress=False)
    info = json.loads((run / "run.json").read_text())
    info["cpu_s"], info["wall_s"] = info["cpu_s"] + 50.0, info["wall_s"] + 70.0  # the work after the last state
    (run / "run.json").write_text(json.dumps(info))
    train(tiny_cfg("train.images=64"), run, data=tiny_data(), progress=False)
    again = json.loads((run / "run.json").read_text())
    assert again["cpu_s"] >= info["cpu_s"] and again["wall_s"] >= info["wall_s"]
