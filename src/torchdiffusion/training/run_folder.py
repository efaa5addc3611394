"""The run folder of a training run: resume or start over, training states, run.json, metrics truncation.

    config.json                         the whole resolved config (written once a start or resume is accepted)
    run.json                            data shape/kind/classes, images seen, finished, loss_by_sigma buckets,
                                        and the sha256 of both weights files (written last: it vouches for them)
    model.safetensors, ema.safetensors  raw and averaged weights, written with every checkpoint
    checkpoints/state-<images>.pt       the TrainState plus every RNG, with its sha256 beside it (checkpoint.py)
    metrics.jsonl                       one line per log window (callbacks.LogMetrics)
    .train.lock                         held while training (runlock.py): one writer at a time

Rank 0 writes every file; the other ranks read the same (shared) folder.
"""

from __future__ import annotations

import json
import random
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch

from .. import __version__ as VERSION
from .. import distributed as dist
from ..config import ConfigError, RunConfig, from_json, recorded_json, shown, to_dict
from ..io import atomic_write, first_line, state_dict_mismatch
from .checkpoint import (
    DAMAGED_SUFFIX,
    DIGEST_SUFFIX,
    EXPORTS,
    GUIDE_FILE,
    STATE_FORMAT,
    STATE_VERSION,
    WEIGHTS_KEY,
    CheckpointError,
    export_weights,
    list_states,
    load_state,
    newest_intact_state,
    save_state,
    state_name,
    write_run_info,
)
from .lr import learning_rate
from .state import Setup, TrainingError, TrainState, Window, guide_images, steps_of_run


def open_run_folder(out: Path, cfg: RunConfig, resume: bool) -> Path | None:
    """The state to resume from, if any (rank 0 decides, every rank follows).

    With ``resume`` the newest intact state is used (damaged newer ones are set aside with a one-line warning),
    provided the folder holds the same run (same data, model and diffusion sections); without it the old
    states and metrics are deleted. config.json is written later (:func:`write_config`), once the state has
    been accepted, so a refused resume leaves the folder as it was.
    """
    ckpt_dir = out / "checkpoints"

    def decide() -> Path | None:  # rank 0's checks; a refusal is raised on every rank (dist.main_decides)
        _refuse_shared_folder(out, cfg)
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            _discard_states(out, ckpt_dir)
            return None
        found = newest_intact_state(ckpt_dir, warn=dist.print0)
        if found is None:
            _refuse_weights_without_state(out, "choose another --out, or start over there (train: --no-resume)")
            return None
        _check_same_run(out, cfg)
        return found[0]

    state_path = dist.main_decides(decide)
    resume_images = dist.broadcast_int(int(state_path.name[6:-3]) if state_path is not None else -1)
    if resume_images >= 0 and state_path is None:
        state_path = ckpt_dir / state_name(resume_images)
    return state_path


def _discard_states(out: Path, ckpt_dir: Path) -> None:
    """--no-resume: delete the old training states (with their digests and damaged ones), metrics, sample grids,
    guide model and TensorBoard events, and the grids tuned for the old weights (``grids/<sampler>-nfe<N>.json``),
    which sampling would otherwise use for the new ones without asking (``generate.resolve_grid``)."""
    for _, p in list_states(ckpt_dir):
        p.unlink()
    if ckpt_dir.is_dir():
        for p in [*ckpt_dir.glob(f"*{DIGEST_SUFFIX}"), *ckpt_dir.glob(f"*{DAMAGED_SUFFIX}")]:
            p.unlink()
    (ckpt_dir / "latest").unlink(missing_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    # what the old run drew and kept on its way: its sample grids (a grid of the new run's whose name is taken is
    # never drawn), autoguidance's guide and TensorBoard's event files (the new curves would be drawn over them)
    from .callbacks import GRID, PENDING_GRID  # (callbacks imports this module)

    grids = [p for name in (GRID, PENDING_GRID) for p in (out / "samples").glob(name.replace("{:09d}", "*"))]
    old = [out / GUIDE_FILE, *grids, *(out / "tensorboard").glob("events.out.tfevents.*")]
    for p in old:
        p.unlink(missing_ok=True)
    from ..samplers.optimize_grid import tuned_grid_files

    tuned = tuned_grid_files(out / "grids")
    for p in tuned:
        p.unlink()
    if tuned:
        dist.print0(f"removed the earlier run's {len(tuned)} tuned grid(s) from {out / 'grids'}: they fit its weights")


def write_config(out: Path, cfg: RunConfig) -> None:
    """config.json (rank 0), once the start or resume has been accepted."""
    if dist.is_main():
        atomic_write(out / "config.json", recorded_json(cfg) + "\n")


def saved_config(out: Path) -> RunConfig | None:
    """The run folder's config.json as it stands (before this start rewrites it); None if missing or unreadable."""
    path = out / "config.json"
    try:
        return from_json(path.read_text()) if path.is_file() else None
    except (ConfigError, OSError, UnicodeDecodeError):
        return None


# A resume continues one trajectory: every objective setting (what the run learns from and towards: a teacher, its
# grid, a consistency curriculum, DMD's fake-denoiser updates ...) and every train setting but those below must be
# the ones the states were written with; a change would train the rest of the run otherwise and leave a config.json
# that describes neither part. train.batch_size and train.seed are checked against the state itself (restore).
RESUME_MAY_CHANGE = frozenset(
    {
        "images",  # a longer run continues from the finished state (refused where it moves the schedule: below)
        "cpu_minutes",
        "minutes",
        "threads",
        "num_workers",
        "compile",
        "grad_accum",  # the same batch in smaller pieces: float order only
        "log_every_images",
        "sample_every_images",
        "eval_every_images",
        "eval_n",
        "eval_classifier",
        "checkpoint_every_images",
        "keep_checkpoints",
        "max_nonfinite",
        "batch_size",
        "seed",
    }
)


def as_it_ran(out: Path, cfg: RunConfig, images_seen: int) -> RunConfig:
    """``cfg`` for a rerun of a finished run (no training step left to take) with the train settings a resume may
    change (RESUME_MAY_CHANGE: cadences, limits, threads ...) as the run ran with them: no step logs, samples,
    evaluates or checkpoints on new ones, so config.json keeps what ran. A note names those given that change
    nothing."""
    old = saved_config(out)
    if old is None:
        return cfg
    changed = [k for k in sorted(RESUME_MAY_CHANGE) if getattr(old.train, k) != getattr(cfg.train, k)]
    if changed:
        given = ", ".join(f"train.{k}={shown(getattr(cfg.train, k))}" for k in changed)
        dist.print0(
            f"{out} is finished ({images_seen:,} images seen): {given} changes nothing, as no training step is "
            "left; config.json keeps the settings it ran with"
        )
    return replace(cfg, train=replace(cfg.train, **{k: getattr(old.train, k) for k in changed}))


def check_out_folder(out: Path, cfg: RunConfig) -> None:
    """ConfigError (one line) unless ``out`` may receive the run ``cfg`` without losing another: it is new, or
    holds this run's training states (a resume), or holds neither states nor weights. For commands that write
    files of their own into a run folder before :func:`train` opens it (a distilled student's grids and pairs),
    so that a refusal comes before any write."""
    hint = "choose another --out"
    _refuse_shared_folder(out, cfg)
    if list_states(out / "checkpoints"):
        _check_same_run(out, cfg, hint=hint)
    else:
        _refuse_weights_without_state(out, hint)


def refuse_out_in_data(out: Path, data_path: str | None) -> None:
    """ConfigError (one line) when the output folder ``out`` of a training command is its data folder or inside
    it: the data loaders read folders recursively, so what the run writes would become training data."""
    data = Path(data_path).expanduser() if data_path else None
    if data is not None and data.is_dir():
        o, d = Path(out).expanduser().resolve(), data.resolve()
        if o == d or d in o.parents:
            raise ConfigError(
                f"--out {out} is inside the data folder {data}: the run's pictures would be read as training data "
                "there; choose a folder outside it"
            )


def _refuse_shared_folder(out: Path, cfg: RunConfig) -> None:
    """A run needs a folder of its own: not the folder of its own training data (or one inside it), whose images
    are read recursively - the run's sample grids would become training examples at the next resume - and not a
    diffusers pipeline folder, which loading prefers to the run (the run would be hidden behind it)."""
    from ..generate import other_run
    from ..interop.diffusers_in import is_diffusers_folder

    refuse_out_in_data(out, cfg.data.path)
    if out.is_dir() and is_diffusers_folder(out):
        raise ConfigError(f"--out {out} holds a diffusers pipeline (model_index.json); a run needs a folder of its own")
    other = other_run(out)  # an autoencoder's or text encoder's folder: --no-resume would write over its config.json
    if other is not None:
        held = f", {other[0]}" if (out / other[0]).is_file() else ""
        raise ConfigError(f"--out {out} holds {other[1]}{held}; a diffusion run needs a folder of its own")


DATA_PATHS = ("path", "labels_path", "latents_of")  # the data section's files and folders


def with_resolved_paths(cfg):
    """``cfg`` (a RunConfig, or an autoencoder's or text encoder's config: any with a ``data`` section) with its data
    files and folders (:data:`DATA_PATHS`) as absolute paths: the run's config.json then names them from any working
    folder (evaluate, card --evaluate, outpaint of the run's own data, a latent run checking that it splits its
    autoencoder's images the same way), where a path relative to where training ran pointed nowhere - or at
    another folder."""
    d = cfg.data
    paths = {k: str(Path(v).expanduser().resolve()) for k in DATA_PATHS if (v := getattr(d, k, None))}
    return replace(cfg, data=replace(d, **paths)) if paths else cfg


def _refuse_weights_without_state(out: Path, hint: str) -> None:
    """A folder with weights but no training state - a run whose states were deleted: a fresh start there would
    replace them (an autoencoder's or text encoder's folder is refused whatever the flags: _refuse_shared_folder)."""
    # (not the files a run writes before its first state: a reflow student's pairs, a retrieval database)
    held = [f for f in (*EXPORTS, GUIDE_FILE) if (out / f).is_file()]
    if held:
        raise ConfigError(f"{out} holds weights ({held[0]}) but no training state to resume from; {hint}")


def _same_teacher(a: object, b: object) -> bool:
    """Two teacher folders as recorded (relative to where each command ran): equal, or the same folder from here."""
    return a == b or (isinstance(a, str) and isinstance(b, str) and Path(a).resolve() == Path(b).resolve())


def _as_recorded_now(old, new):
    """An older config.json's objective as it is recorded now: a progressive halving after the first named the
    previous halving's student as its teacher (at guidance 1, on its 2 x max_steps grid) before objective.stage_teacher
    held it and the teacher, steps and guidance the distillation started from; when it learned what ``new`` learns,
    the same halving (so it resumes), with ``new``'s record of the start."""
    first = ("teacher", "teacher_steps", "teacher_grid", "guidance", "autoguidance", "stage_teacher")
    if not (old.name == new.name == "progressive" and new.stage_teacher and not old.stage_teacher):
        return old
    if not (_same_teacher(old.teacher, new.stage_teacher) and old.teacher_steps == 2 * old.max_steps):
        return old
    if old.teacher_grid or old.guidance != 1.0 or old.autoguidance != 1.0:
        return old
    return replace(old, **{k: getattr(new, k) for k in first})


def _with_teacher_grid(o):
    """A progressive objective with ``teacher_grid`` "" (the teacher's own sample.grid: how config.json recorded the
    grid walked when --grid was not given, before it named it) naming that grid, read from the teacher's config.json;
    as it was when that cannot be read."""
    if o.name != "progressive" or o.teacher_grid or not o.teacher:
        return o
    try:
        grid = from_json((Path(o.teacher) / "config.json").read_text()).sample.grid
    except (ConfigError, OSError, UnicodeDecodeError):
        return o
    return replace(o, teacher_grid=grid)


def _check_same_run(
    out: Path,
    cfg: RunConfig,
    *,
    hint: str = "choose another --out, or start over there (train: --no-resume)",
) -> None:
    """Resuming is allowed when the data, model, diffusion and objective sections and the train settings that shape
    the trajectory (all but RESUME_MAY_CHANGE) match the saved config.json. A config.json that is there but
    unreadable cannot vouch for the states beside it: refused in one line, as a different run."""
    path = out / "config.json"
    if not path.exists():
        return
    try:
        old = from_json(path.read_text())
    except (ConfigError, OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"{path} is damaged ({first_line(e)}), so the training states "
            f"beside it cannot be checked against this run; {hint}"
        ) from None
    old, cfg = with_resolved_paths(old), with_resolved_paths(cfg)  # a path recorded relative: from here, as before
    from ..latent import same_autoencoder_as_recorded

    now = cfg.data.latents_of
    if now and old.data.latents_of != now and same_autoencoder_as_recorded(out, now):  # moved with its autoencoder
        old = replace(old, data=replace(old.data, latents_of=now))  # (the weights the run recorded: the same latents)
    for section in ("data", "model", "diffusion"):
        if to_dict(getattr(old, section)) != to_dict(getattr(cfg, section)):
            raise ConfigError(f"{out} holds a run with a different {section} section; {hint}")
    old_objective = _with_teacher_grid(_as_recorded_now(old.objective, cfg.objective))
    new_objective = _with_teacher_grid(cfg.objective)
    for key in (f.name for f in fields(old.objective)):
        was, now = getattr(old_objective, key), getattr(new_objective, key)
        if not (_same_teacher(was, now) if key == "teacher" else was == now):
            what = (
                f"a {was} run, not a {now} one" if key == "name" else f"a run of objective.{key}={was!r}, not {now!r}"
            )
            raise ConfigError(f"{out} holds {what}; {hint}")
    t_old, t_new = old.train, cfg.train
    for key in (f.name for f in fields(t_old)):
        was, now = getattr(t_old, key), getattr(t_new, key)
        if key in RESUME_MAY_CHANGE or key == "guide_at" or was == now:  # guide_at: its point in images, below
            continue
        if key in ("precision", "channels_last") and t_new.precision == "auto":
            continue  # auto takes the precision and layout of the run being resumed (training/precision.py)
        raise ConfigError(
            f"{out} was trained with train.{key}={shown(was)}, not {shown(now)}; resume with the same value, or {hint}"
        )
    length = [steps_of_run(t) * t.batch_size for t in (t_old, t_new)]
    seen = _images_seen(out)
    if seen > length[1]:  # its weights are past the new end: config.json would name a length they do not have
        raise ConfigError(
            f"{out} has already seen {seen} images; train.images={t_new.images} is shorter (resume with "
            f"train.images >= {seen}), or {hint}"
        )
    if length[0] != length[1] and t_old.lr_decay != "none":
        raise ConfigError(
            f"{out} was trained for train.images={t_old.images} with train.lr_decay={t_old.lr_decay}, whose schedule "
            f"is laid out over the run's length: another length would change what the first part did; {hint}"
        )
    kept = [guide_images(t, n) for t, n in zip((t_old, t_new), length, strict=True)]
    if kept[0] != kept[1]:  # autoguidance's guide: the EMA kept at guide_at of the run
        raise ConfigError(
            f"{out} keeps its guide model at {kept[0]} images (train.guide_at={t_old.guide_at:g} of "
            f"train.images={t_old.images}), not {kept[1]}; {hint}"
        )


def _images_seen(out: Path) -> int:
    """The most images a run in ``out`` has seen: its run.json's count, or its newest training state's."""
    seen = 0
    try:
        seen = int(json.loads((out / "run.json").read_text()).get("images_seen", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    for p in (out / "checkpoints").glob("state-*.pt"):
        digits = p.stem.split("-", 1)[1]
        if digits.isdigit():
            seen = max(seen, int(digits))
    return seen


def truncate_metrics(path: Path, images_seen: int) -> None:
    """Drop log lines written after the state we resume from (they will be written again)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("images_seen", 0) <= images_seen:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a half-written last line from a kill
    atomic_write(path, "".join(s + "\n" for s in keep))


def publish(state: TrainState, setup: Setup, finished: bool, exported: bool = True) -> None:
    """Both weights files, then run.json with their sha256 and "finished" (rank 0; order: see checkpoint.py).

    ``exported=False`` (a fresh start) writes run.json alone, recording that no weights files exist yet.
    """
    weights = None
    if exported:
        files = dict(zip(EXPORTS, (state.model.state_dict(), state.ema.state_dict())))
        if state.guide is not None:  # autoguidance's guide model (train.guide_at)
            files[GUIDE_FILE] = state.guide.state_dict()
        weights = export_weights(setup.out, files)
    run = dict(
        setup.info,
        images_seen=state.images_seen,
        finished=finished,
        version=VERSION,
        loss_by_sigma={"unit": setup.unit, "edges": setup.edges},
        train_examples=int(setup.X.shape[0]),  # for the model card: what the run learnt from, where
        device=setup.device.type,
        world_size=setup.world_size,
        stopped_by=state.limit,  # "train.cpu_minutes" / "train.minutes" when a time limit ended the run
        cpu_s=round(state.clock.cpu_s(), 3),  # rank 0's process CPU seconds and wall seconds, cumulative
        wall_s=round(state.clock.wall_s(), 3),
        **{WEIGHTS_KEY: weights},
    )
    write_run_info(setup.out, run)


def save_checkpoint(state: TrainState, setup: Setup, finished: bool) -> None:
    """Check that every rank holds the same weights, then (rank 0) the training state, both weight files, run.json."""
    checksum = sum(float(p.detach().double().sum()) for p in state.model.parameters())
    if not dist.ranks_agree(checksum):
        raise TrainingError(f"the processes' weights diverged by step {state.step}; this is a bug, please report it")
    from .runlock import check_held

    dist.main_decides(lambda: check_held(setup.out))  # (rm -rf of the folder: never recreate it without its config)
    if setup.main:
        t = setup.cfg.train
        try:
            save_state(setup.out / "checkpoints", state_dict(state, setup), state.images_seen, keep=t.keep_checkpoints)
            publish(state, setup, finished)
        except FileNotFoundError:  # deleted meanwhile (io.never_recreate): say that, not which of its files
            check_held(setup.out)
            raise


def state_dict(state: TrainState, setup: Setup) -> dict:
    """The training state as plain tensors and containers (loadable with ``weights_only=True``)."""
    epoch, offset = setup.order.position(state.step)
    t = setup.cfg.train
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "images_seen": state.images_seen,
        "step": state.step,
        "updates": state.updates,
        "skipped_steps": state.skipped,
        "consecutive_nonfinite": state.consecutive_nonfinite,
        "model": state.model.state_dict(),
        "ema": state.ema.state_dict(),
        **({"guide": state.guide.state_dict()} if state.guide is not None else {}),
        "optimizer": state.opt.state_dict(),
        **({"objective": own} if (own := setup.objective.state_dict()) is not None else {}),
        "lr_schedule": {"updates": state.updates, "next_lr": learning_rate(t, state.updates, setup.total_images)},
        "data": {"epoch": epoch, "offset": offset, "num_examples": setup.X.shape[0], "seed": t.seed},
        "rng": _rng_state(setup.device),
        "window": state.window.to_tensor(),
        "clock": {"cpu_s": state.clock.cpu_s(), "wall_s": state.clock.wall_s()},
        "world_size": setup.world_size,
    }


def _run_info_at(out: Path, images_seen: int) -> dict:
    """run.json's clock ({"cpu_s", "wall_s"} as numbers) when it was written at ``images_seen``, else {}."""
    try:
        info = json.loads((Path(out) / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(info, dict) or info.get("images_seen") != images_seen:
        return {}
    return {k: float(v) for k in ("cpu_s", "wall_s") if isinstance(v := info.get(k), (int, float)) and v >= 0}


def restore(state: TrainState, path: Path, setup: Setup) -> None:
    """Load a training state written by :func:`save_checkpoint` into ``state`` (and the global RNGs); the caller
    says it resumes."""
    saved = load_state(path)
    try:
        state.model.load_state_dict(saved["model"])
        state.ema.load_state_dict(saved["ema"])
        state.opt.load_state_dict(saved["optimizer"])
        if "guide" in saved:
            state.set_guide(saved["guide"])
        if setup.objective.state_dict() is not None:
            setup.objective.load_state_dict(saved["objective"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path} does not match this model ({state_dict_mismatch(e)})") from None
    state.step, state.updates = int(saved["step"]), int(saved["updates"])
    state.skipped, state.consecutive_nonfinite = int(saved["skipped_steps"]), int(saved["consecutive_nonfinite"])
    if "window" in saved and saved["window"].shape == state.window.to_tensor().shape:
        state.window = Window.from_tensor(saved["window"])
    clock = saved.get("clock", {})
    cpu_s, wall_s = float(clock.get("cpu_s", 0.0)), float(clock.get("wall_s", 0.0))
    info = _run_info_at(setup.out, state.images_seen)  # run.json of the same point counts the work after the state
    cpu_s, wall_s = max(cpu_s, info.get("cpu_s", 0.0)), max(wall_s, info.get("wall_s", 0.0))  # (exports, a grid)
    state.clock.resume(cpu_s, wall_s)
    _set_rng_state(saved["rng"], setup.device)
    _check_same_trajectory(saved, path, state, setup.cfg.train.seed)


def _check_same_trajectory(saved: dict, path: Path, state: TrainState, seed: int) -> None:
    """A resume must continue the same trajectory: the state's global batch size and seed."""
    if state.images_seen != int(saved["images_seen"]):
        old = int(saved["images_seen"]) // max(1, int(saved["step"]))  # the global batch of every step so far
        raise CheckpointError(
            f"{path} was written with train.batch_size={old}, not {state.batch_size}; resume with the same one, or "
            "start over in another --out (train: or --no-resume)"
        )
    old_seed = saved.get("data", {}).get("seed")
    if old_seed is not None and int(old_seed) != seed:
        raise CheckpointError(
            f"{path} was written with train.seed={int(old_seed)}, not {seed}; resume with the same one, or start over "
            "in another --out (train: or --no-resume)"
        )


def _rng_state(device: torch.device) -> dict:
    np_state = np.random.get_state()
    state = {
        "torch_cpu": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [int(v) for v in random.getstate()[1]],
    }
    if device.type == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch_cpu"])
    if device.type == "cuda" and "torch_cuda" in state:
        torch.cuda.set_rng_state(state["torch_cuda"], device)
    n = state.get("numpy")
    if n is not None:
        np.random.set_state(
            ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
        )
    if state.get("python"):
        random.setstate((3, tuple(state["python"]), None))
