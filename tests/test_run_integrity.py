"""Nothing lost, nothing mixed up: state digests and fallback, weights that run.json vouches for, the run-folder
lock, refused resumes that change nothing, runs that learned nothing, workers that die with their launcher."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from damage import KINDS, damage
from procs import gone
from test_training_worker import TINY, InjectNaN, tiny_data
from torchdiffusion.config import ConfigError, override
from torchdiffusion.presets import get_preset
from torchdiffusion.training import CheckpointError, TrainingError, load_state, train
from torchdiffusion.training.checkpoint import (
    WEIGHTS_KEY,
    list_states,
    newest_intact_state,
    safetensors_bytes,
    verify_state,
)
from torchdiffusion.training.runlock import RunFolderBusy, RunLock

EXPORTS = ("model.safetensors", "ema.safetensors")


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cfg(*sets: str):
    return override(get_preset("digits-test"), TINY + list(sets))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An uninterrupted tiny run (states at 96 and 128 images) and the sha256 of its weights files."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    run = train(tiny_cfg(), tmp_path_factory.mktemp("ref") / "run", data=tiny_data(), progress=False)
    torch.set_num_threads(n)
    return run, {name: sha(run / name) for name in EXPORTS}


def _copy(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    return dst


def test_run_json_vouches_for_the_weights_and_they_are_the_final_state(finished):
    run, digests = finished
    info = json.loads((run / "run.json").read_text())
    assert info["finished"] and info["images_seen"] == 128 and info[WEIGHTS_KEY] == digests
    state = load_state(run / "checkpoints" / "state-000000128.pt")
    for name, key in zip(EXPORTS, ("model", "ema")):
        assert hashlib.sha256(safetensors_bytes(state[key])).hexdigest() == digests[name]


def test_every_random_damage_to_the_latest_state_is_detected_and_the_previous_one_is_used(finished, tmp_path):
    run, _ = finished
    folder = _copy(run / "checkpoints", tmp_path / "ckpt")
    latest, previous = (p for _, p in reversed(list_states(folder)))
    original = {p: p.read_bytes() for p in folder.iterdir()}
    rng = random.Random(0)
    kinds = set()
    for i in range(100):
        kinds.add(damage(latest, rng))
        assert verify_state(latest) is not None
        if i % 10:  # detection is a sha256; the fallback below loads a state (slow): checked every 10th time
            latest.write_bytes(original[latest])
            continue
        warnings: list[str] = []
        path, state = newest_intact_state(folder, warn=warnings.append)
        assert path == previous and state["images_seen"] == 96
        assert len(warnings) == 1 and "\n" not in warnings[0] and latest.name in warnings[0]
        assert not latest.exists() and latest.with_name(latest.name + ".damaged").is_file()
        assert (folder / "latest").read_text().strip() == previous.name
        latest.with_name(latest.name + ".damaged").unlink()
        for p, data in original.items():
            p.write_bytes(data)
    assert kinds == set(KINDS)


@pytest.mark.parametrize("kind", ["bit_flip", "truncate"])
def test_a_damaged_latest_state_resumes_from_the_previous_one_to_the_same_weights(finished, tmp_path, kind, capfd):
    run, digests = finished
    work = _copy(run, tmp_path / "run")
    damage(work / "checkpoints" / "state-000000128.pt", random.Random(kind), kind)
    train(tiny_cfg(), work, data=tiny_data(), progress=False)
    err = capfd.readouterr().err
    assert "state-000000128.pt is damaged" in err and "resuming from state-000000096.pt" in err
    assert {name: sha(work / name) for name in EXPORTS} == digests
    assert verify_state(work / "checkpoints" / "state-000000128.pt") is None  # written again, intact


def test_a_damaged_digest_file_counts_as_a_damaged_state(finished, tmp_path):
    run, _ = finished
    work = _copy(run / "checkpoints", tmp_path / "ckpt")
    (work / "state-000000128.pt.sha256").write_text("0" * 64 + "  state-000000128.pt\n")
    path, _ = newest_intact_state(work, warn=lambda s: None)
    assert path.name == "state-000000096.pt"


def test_when_every_state_is_damaged_resume_is_refused_in_one_line(finished, tmp_path):
    run, _ = finished
    work = _copy(run, tmp_path / "run")
    for _, p in list_states(work / "checkpoints"):
        damage(p, random.Random(1), "bit_flip")
    with pytest.raises(CheckpointError, match="no earlier intact state") as e:
        train(tiny_cfg(), work, data=tiny_data(), progress=False)
    assert "\n" not in str(e.value) and "--no-resume" in str(e.value)


def test_load_run_refuses_weights_files_that_run_json_does_not_vouch_for(finished, tmp_path):
    from torchdiffusion.generate import RunError, load_run

    run, _ = finished
    work = _copy(run, tmp_path / "run")
    load_run(work)  # as written: fine
    older = load_state(work / "checkpoints" / "state-000000096.pt")
    (work / "ema.safetensors").write_bytes(safetensors_bytes(older["ema"]))  # a kill between export and run.json
    with pytest.raises(RunError, match="sha256") as e:
        load_run(work)
    assert "\n" not in str(e.value)
    load_run(work, weights="model")  # the other file is still the one recorded
    info = json.loads((work / "run.json").read_text())
    del info[WEIGHTS_KEY]  # a run folder written before digests were recorded
    (work / "run.json").write_text(json.dumps(info))
    load_run(work)


def test_a_missing_ema_that_run_json_records_is_refused_not_replaced_by_the_raw_weights(finished, tmp_path):
    from torchdiffusion.generate import RunError, load_run

    run, _ = finished
    work = _copy(run, tmp_path / "run")
    (work / "ema.safetensors").unlink()
    with pytest.raises(RunError, match="ema.safetensors is missing.*--weights model") as e:
        load_run(work)
    assert "\n" not in str(e.value)
    assert load_run(work, weights="model").weights_file == "model.safetensors"  # asked for: fine
    guided = _copy(run, tmp_path / "guided")  # a guide model that run.json records, gone
    info = json.loads((guided / "run.json").read_text())
    info[WEIGHTS_KEY]["guide.safetensors"] = info[WEIGHTS_KEY]["ema.safetensors"]
    (guided / "run.json").write_text(json.dumps(info))
    with pytest.raises(RunError, match="guide.safetensors is missing, though run.json records it"):
        load_run(guided)
    info = json.loads((work / "run.json").read_text())
    del info[WEIGHTS_KEY]["ema.safetensors"]  # a run that kept no EMA: the raw weights are its weights
    (work / "run.json").write_text(json.dumps(info))
    assert load_run(work).weights_file == "model.safetensors"


@pytest.mark.parametrize("change", ["train.batch_size=8", "train.seed=7"])
def test_a_refused_resume_leaves_the_run_folder_as_it_was(finished, tmp_path, change):
    run, _ = finished
    work = _copy(run, tmp_path / "run")
    before = {p.relative_to(work): p.read_bytes() for p in sorted(work.rglob("*")) if p.is_file()}
    with pytest.raises(CheckpointError, match=change.split("=")[0]):
        train(tiny_cfg(change), work, data=tiny_data(), progress=False)
    after = {p.relative_to(work): p.read_bytes() for p in sorted(work.rglob("*")) if p.is_file()}
    assert after == before


@pytest.mark.parametrize(
    "change",
    ["train.lr=0.001", "train.precision=bf16", "train.ema_halflife_images=64", "objective.ct_steps_end=20"],
)
def test_a_resume_with_other_trajectory_settings_is_refused_and_changes_nothing(finished, tmp_path, change):
    """The rest of the run trained with another learning rate, arithmetic, EMA or objective setting, under a
    config.json that claimed it for the whole run, would mix two runs; refused in one line, the folder as it was.
    The length, limits, threads and cadences may change (test_training, test_time_limits)."""
    run, _ = finished
    work = _copy(run, tmp_path / "run")
    before = {p.relative_to(work): p.read_bytes() for p in sorted(work.rglob("*")) if p.is_file()}
    key, value = change.split("=")
    with pytest.raises(ConfigError, match=rf"(trained with|holds a run of) {key}=.*, not '?{value}'?;"):
        train(tiny_cfg(change, "train.threads=2", "train.log_every_images=64"), work, data=tiny_data(), progress=False)
    after = {p.relative_to(work): p.read_bytes() for p in sorted(work.rglob("*")) if p.is_file()}
    assert after == before
    train(tiny_cfg("train.threads=2", "train.log_every_images=64"), work, data=tiny_data(), progress=False)  # taken


def test_another_length_is_refused_where_the_schedule_is_laid_out_over_it(tmp_path):
    """A longer run continues (test_training), unless the learning rate decays over the length, or the guide model
    of autoguidance (the EMA at guide_at x images) would be kept at another point (test_autoguidance resumes one
    whose guide stays at 48 images: 0.5 of 96, 0.375 of 128)."""
    run = train(tiny_cfg("train.guide_at=0.5", "train.images=64"), tmp_path / "g", data=tiny_data(), progress=False)
    with pytest.raises(ConfigError, match="keeps its guide model at 32 images .* not 64"):
        train(tiny_cfg("train.guide_at=0.5", "train.images=128"), run, data=tiny_data(), progress=False)
    run = train(tiny_cfg("train.lr_decay=cosine", "train.images=64"), tmp_path / "c", data=tiny_data(), progress=False)
    with pytest.raises(ConfigError, match="train.lr_decay=cosine, whose schedule is laid out"):
        train(tiny_cfg("train.lr_decay=cosine", "train.images=96"), run, data=tiny_data(), progress=False)


@pytest.mark.parametrize("config", ["{ not json", '{"model": 5}'])
def test_a_damaged_config_json_refuses_the_resume_in_one_line_and_changes_nothing(finished, tmp_path, config):
    """The states beside an unreadable config.json cannot be checked against the new run: refused before any state
    is loaded (a state of another network would fail later with a load_state_dict message), the folder as it was;
    --no-resume starts over."""
    from torchdiffusion.config import ConfigError

    run, _ = finished
    work = _copy(run, tmp_path / "run")
    (work / "config.json").write_text(config)
    before = {p.relative_to(work): p.read_bytes() for p in sorted(work.rglob("*")) if p.is_file()}
    with pytest.raises(ConfigError, match="config.json is damaged .*--no-resume") as e:
        train(tiny_cfg(), work, data=tiny_data(), progress=False)
    assert "\n" not in str(e.value)
    assert {p.relative_to(work): p.read_bytes() for p in sorted(work.rglob("*")) if p.is_file()} == before
    train(tiny_cfg(), work, data=tiny_data(), progress=False, resume=False)
    assert json.loads((work / "config.json").read_text())["preset"] == "digits-test"


def test_starting_over_keeps_nothing_the_old_run_drew(tmp_path):
    """--no-resume: the old run's sample grids, guide model and TensorBoard events go with its states. A kept
    grid-<images>.png was never drawn again by the new run (its name was taken), so the folder showed the old
    run's pictures under the new run's weights."""
    grids = lambda r: {p.name: p.read_bytes() for p in (r / "samples").glob("grid-*.png")}  # noqa: E731
    old = tiny_cfg("train.guide_at=0.5", "train.sample_every_images=32", "train.images=64")
    run = train(old, tmp_path / "run", data=tiny_data(), progress=False)
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events.out.tfevents.1.host").write_bytes(b"old curves")
    assert (run / "guide.safetensors").is_file() and len(grids(run)) == 2
    new = tiny_cfg("train.images=64", "train.lr=5e-3", "train.sample_every_images=32")
    train(new, run, data=tiny_data(), progress=False, resume=False)
    fresh = train(new, tmp_path / "fresh", data=tiny_data(), progress=False)
    assert grids(run) == grids(fresh) and len(grids(run)) == 2
    assert not (run / "guide.safetensors").exists() and not any((run / "tensorboard").iterdir())


def test_tensorboard_keeps_one_point_per_step_across_a_resume(tmp_path):
    """A run killed after logging past its last state logs those images again when resumed: metrics.jsonl is
    truncated at the state, and TensorBoard is told to drop the killed run's points past it (purge_step)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(tiny_cfg("train.images=64"), tmp_path / "run", data=tiny_data(), progress=False, tensorboard=True)
    for p in (run / "checkpoints").glob("state-000000064*"):  # as if killed after logging 64, before its state
        p.unlink()
    (run / "checkpoints" / "latest").unlink(missing_ok=True)
    train(tiny_cfg("train.images=64"), run, data=tiny_data(), progress=False, tensorboard=True)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == [32, 64], steps


def test_a_state_of_another_network_names_what_differs():
    from torchdiffusion.io import state_dict_mismatch

    net = torch.nn.Linear(2, 3)
    with pytest.raises(RuntimeError) as e:
        net.load_state_dict({"weight": torch.zeros(4, 2), "bias": torch.zeros(3)})
    assert state_dict_mismatch(e.value).startswith("size mismatch for weight: copying a param with shape")
    with pytest.raises(RuntimeError) as e:
        net.load_state_dict({"weight": torch.zeros(3, 2)})
    assert state_dict_mismatch(e.value) == 'Missing key(s) in state_dict: "bias".'
    assert len(state_dict_mismatch(RuntimeError("x" * 1000))) == 240


def test_a_run_in_which_every_step_is_non_finite_fails(tmp_path):
    cfg = tiny_cfg("train.images=32", "train.max_nonfinite=5")
    with pytest.raises(TrainingError, match="every one of the 2 steps") as e:
        train(cfg, tmp_path / "run", data=tiny_data(), progress=False, callbacks=[InjectNaN("0,1")])
    assert "\n" not in str(e.value)


def test_a_second_writer_is_refused_and_a_released_folder_is_free(tmp_path):
    run = tmp_path / "run"
    with RunLock(run):
        with pytest.raises(RunFolderBusy, match=f"pid {os.getpid()}") as e:
            RunLock(run).acquire()
        assert "\n" not in str(e.value)
        with pytest.raises(RunFolderBusy):
            train(tiny_cfg("train.images=16"), run, data=tiny_data(), progress=False)
        assert sorted(p.name for p in run.iterdir()) == [".train.lock"]  # the refused run wrote nothing
    assert not run.exists()  # the folder was the lock's own and is empty: removed
    with RunLock(run):
        pass


def test_the_lock_of_a_killed_owner_is_free(tmp_path):
    run = tmp_path / "run"
    code = (
        "import sys, time; from torchdiffusion.training.runlock import RunLock; "
        "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)"
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"held"
        with pytest.raises(RunFolderBusy, match=f"pid {p.pid}"):
            RunLock(run).acquire()
    finally:
        p.kill()
        p.wait()
    with RunLock(run):  # the kernel dropped the dead owner's lock
        pass


def test_a_worker_dies_with_its_launcher():
    """A launcher killed with SIGKILL, whose child asked to die with it: the child stops on its own."""
    child = (
        "import signal, sys, time; from torchdiffusion.distributed import die_with_parent; "
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); die_with_parent(); print('armed', flush=True); "
        "time.sleep(600)"
    )
    launcher = (
        "import subprocess, sys; "
        f"p = subprocess.Popen([sys.executable, '-c', {child!r}], start_new_session=True); "
        "print(p.pid, flush=True); p.wait()"
    )
    lp = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, start_new_session=True)
    worker = int(lp.stdout.readline())
    assert lp.stdout.readline().strip() == b"armed"  # the child shares the launcher's stdout
    os.killpg(lp.pid, signal.SIGKILL)  # the launcher's group: the worker is in a session of its own
    lp.wait()
    assert gone(worker, 30), "the worker outlived its launcher"


TRAIN = [sys.executable, "-m", "torchdiffusion", "train", "--preset", "digits-test", "--no-progress"]
SMALL = ["model.channels=8", "data.limit=64", "train.images=1000000", "train.batch_size=16"]
SMALL += ["train.checkpoint_every_images=16", "train.log_every_images=16", "train.sample_every_images=0"]


def _train_cli(run: Path, seed: int) -> subprocess.Popen:
    """A training too long to end by itself (the test stops it with SIGTERM once the other writer is done)."""
    args = [a for s in (*SMALL, f"train.seed={seed}") for a in ("--set", s)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([*TRAIN, "--out", str(run), *args], env=env, stderr=subprocess.PIPE, text=True)


def _intact(run: Path, seed: int) -> None:
    """One run's files only: its config, weights = its newest state, one metrics line per log point."""
    info = json.loads((run / "run.json").read_text())
    assert info[WEIGHTS_KEY] == {n: sha(run / n) for n in EXPORTS}
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == seed
    state = load_state(run / "checkpoints" / f"state-{info['images_seen']:09d}.pt")
    assert state["data"]["seed"] == seed
    for name, key in zip(EXPORTS, ("model", "ema")):
        assert hashlib.sha256(safetensors_bytes(state[key])).hexdigest() == info[WEIGHTS_KEY][name]
    seen = [json.loads(s)["images_seen"] for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert seen == sorted(set(seen)) and seen[-1] == info["images_seen"]
    assert not list(run.rglob("*.tmp*")) and not (run / ".train.lock").exists()


def _refused(err: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "is being trained by another process" in lines[0], err[-2000:]


def _stop(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGTERM)  # checkpoint at the current step, exit 128 + SIGTERM
    assert p.wait(timeout=300) == 128 + signal.SIGTERM, p.stderr.read()[-2000:]


@pytest.mark.slow
def test_two_writers_at_the_same_moment_with_different_seeds(tmp_path):
    run = tmp_path / "run"
    procs = [_train_cli(run, seed) for seed in (1, 2)]
    while all(p.poll() is None for p in procs):
        time.sleep(0.05)
    loser = next(i for i, p in enumerate(procs) if p.poll() is not None)
    assert procs[loser].returncode == 2
    _refused(procs[loser].stderr.read())
    while not (run / "checkpoints" / "latest").exists():  # the winner trains on
        assert procs[1 - loser].poll() is None, procs[1 - loser].stderr.read()[-2000:]
        time.sleep(0.05)
    _stop(procs[1 - loser])
    _intact(run, seed=2 - loser)


@pytest.mark.slow
def test_a_second_writer_started_during_training_is_refused(tmp_path):
    run = tmp_path / "run"
    first = _train_cli(run, seed=1)
    while not (run / "checkpoints" / "latest").exists():
        assert first.poll() is None, first.stderr.read()[-2000:]
        time.sleep(0.05)
    second = _train_cli(run, seed=1)  # the very same command, rerun too early
    assert second.wait(timeout=300) == 2
    _refused(second.stderr.read())
    assert first.poll() is None
    _stop(first)
    _intact(run, seed=1)


def test_a_run_folder_deleted_while_training_stops_it_and_is_not_made_again(tmp_path):
    """rm -rf of the folder under a training: it made the folder again without its config (exit 0), and a second
    trainer started into the new folder was not refused (the lock had gone with the old one): both wrote into it."""
    import shutil

    run = tmp_path / "run"
    first = _train_cli(run, seed=1)
    while not (run / "checkpoints" / "latest").exists():
        assert first.poll() is None, first.stderr.read()[-2000:]
        time.sleep(0.05)
    # rm -rf, made atomic for the test: a plain rmtree races the trainer's writes and may itself fail (a file it
    # listed renamed away, or one written behind it) - the folder vanishes at once here, and its files after
    shutil.rmtree(run.rename(tmp_path / "trash"))
    assert first.wait(timeout=300) == 1
    err = first.stderr.read().strip().splitlines()
    assert err[-1].endswith("was deleted or replaced while training; stopped without writing into it again"), err
    assert not run.exists(), sorted(str(p.relative_to(run)) for p in run.rglob("*"))


def test_a_held_lock_knows_when_its_file_is_replaced(tmp_path):
    from torchdiffusion.training.runlock import RunFolderGone, check_held, hold_run_folder

    run = tmp_path / "run"
    with hold_run_folder(run):
        check_held(run)
        (run / ".train.lock").unlink()
        other = RunLock(run)
        other.acquire()  # a new trainer into the recreated folder locks a new file
        with pytest.raises(RunFolderGone, match="deleted or replaced while training"):
            check_held(run)
    assert (run / ".train.lock").exists()  # the other's lock file is not deleted by the first one's exit
    other.release()


def test_starting_over_removes_the_grids_tuned_for_the_old_weights(finished, tmp_path, capfd):
    """Sampling uses a run's tuned grids without asking (grid auto), so grids fitted to weights that --no-resume
    discards must go with them; a resume keeps them, and other files in grids/ stay."""
    from torchdiffusion.generate import load_run, resolve_grid
    from torchdiffusion.samplers.optimize_grid import grid_path, save_grid

    run, _ = finished
    work = _copy(run, tmp_path / "run")
    tuned = torch.tensor([5.0, 1.0, 0.2, 0.0], dtype=torch.float64)
    save_grid(grid_path(work, "euler", 3), tuned, {"sampler": "euler", "nfe": 3})
    (work / "grids" / "notes.txt").write_text("kept\n")

    def grid_used():
        r = load_run(work)
        sample = dataclasses.replace(r.config.sample, sampler="euler", grid="auto")
        return resolve_grid(r.model, sample, 3, clamped=True, grid_dir=work / "grids")[1]["grid"]

    assert grid_used() == "tuned"
    train(tiny_cfg(), work, data=tiny_data(), progress=False)  # a resume (here: nothing left to train)
    assert grid_path(work, "euler", 3).is_file()
    capfd.readouterr()
    train(tiny_cfg(), work, data=tiny_data(), progress=False, resume=False)
    assert "removed the earlier run's 1 tuned grid(s)" in capfd.readouterr().err
    assert not grid_path(work, "euler", 3).exists() and (work / "grids" / "notes.txt").is_file()
    assert grid_used() != "tuned"


def test_a_resume_shorter_than_what_the_run_has_seen_is_refused(tmp_path):
    """A run that has seen 64 images resumed with train.images=32: refused in one line, its config.json unchanged
    (it said 32 while its weights had seen 64)."""
    from tinyruns import cli

    out = tmp_path / "r"
    base = ("train", "--preset", "digits-test", "--set", "train.batch_size=16", "--no-progress", "--out", out)
    rc, _, err = cli(*base, "--set", "train.images=64")
    assert rc == 0, err
    config = (out / "config.json").read_bytes()
    rc, _, err = cli(*base, "--set", "train.images=32")
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "has already seen 64 images; train.images=32 is shorter" in err, err
    assert (out / "config.json").read_bytes() == config


def test_weights_with_metadata_are_the_same_bytes_in_every_process(tmp_path):
    """safetensors writes its metadata map in a random order per process: an autoencoder's or text encoder's
    weights (several metadata keys) had another sha256 each time the same command ran, and a latent run keyed
    on that sha256 refused the retrained, identical autoencoder as stale. The same tensors and metadata now give
    the same bytes in fresh processes, which read back as saved."""
    code = (
        "import hashlib, sys, torch\n"
        "from torchdiffusion.io import save_safetensors\n"
        "meta = {k: str(i) for i, k in enumerate(['scale', 'config', 'kind', 'version', 'sha', 'caf\\u00e9'])}\n"
        "save_safetensors({'w': torch.arange(6.0).reshape(2, 3), 'n': torch.ones(4, dtype=torch.int64)},"
        " sys.argv[1], metadata=meta)\n"
    )
    blobs = []
    for i in range(3):
        path = tmp_path / f"w{i}.safetensors"
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=120)
        blobs.append(path.read_bytes())
    assert blobs[0] == blobs[1] == blobs[2]
    from safetensors import safe_open

    with safe_open(str(tmp_path / "w0.safetensors"), "pt") as f:
        assert f.metadata() == {k: str(i) for i, k in enumerate(["scale", "config", "kind", "version", "sha", "café"])}
        assert torch.equal(f.get_tensor("w"), torch.arange(6.0).reshape(2, 3))
        assert torch.equal(f.get_tensor("n"), torch.ones(4, dtype=torch.int64))


def test_a_stop_while_a_periodic_grid_is_drawn_loses_no_grid(tmp_path, monkeypatch):
    """Ctrl-C while the grid at 32 images is drawn ends the drawing at once and the run stops a step later; the
    resumed run draws the grid at 32 from the EMA kept for it, so the folder ends with every grid an
    uninterrupted run has, byte for byte."""
    import signal

    from torchdiffusion.training import callbacks

    cfg = tiny_cfg("train.images=96", "train.sample_every_images=32")
    whole = train(cfg, tmp_path / "whole", data=tiny_data(), progress=False)
    drawn = callbacks._sample_grid

    def interrupted(model, cfg, data, info, path, **kw):
        if path.name == "grid-000000032.png" and not (tmp_path / "pressed").exists():
            (tmp_path / "pressed").touch()
            signal.raise_signal(signal.SIGINT)  # the stop flag is set; the grid's sampler stops at its next step
        return drawn(model, cfg, data, info, path, **kw)

    monkeypatch.setattr(callbacks, "_sample_grid", interrupted)
    run = tmp_path / "run"
    train(cfg, run, data=tiny_data(), progress=False)
    assert not (run / "samples" / "grid-000000032.png").exists()
    assert (run / "samples" / ".grid-000000032.pending.safetensors").is_file()
    train(cfg, run, data=tiny_data(), progress=False)
    grids = lambda r: {p.name: p.read_bytes() for p in (r / "samples").iterdir()}  # noqa: E731
    assert grids(run) == grids(whole) and len(grids(run)) == 3  # 32, 64 and the final 96
