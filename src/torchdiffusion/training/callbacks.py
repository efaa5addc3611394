"""What the loop does besides stepping, on cadences counted in images seen.

Every callback is called on every rank, in list order: ``before_step(state, batch)`` after the batch is drawn,
``after_step(state, stats)`` after the step is applied or skipped, ``end(state)`` after the last step (or a
stop). The built-in ones, in the order :func:`default_callbacks` lists them:

    LogMetrics      tqdm bar; metrics.jsonl (+ TensorBoard) every train.log_every_images, at the end, on a stop
    SampleGrids     a grid of EMA samples every train.sample_every_images, and one at the end
    QuickEval       evaluation.quick_eval of the EMA model every train.eval_every_images, and at the end
    SaveCheckpoint  the training state and weights every train.checkpoint_every_images, at the end, on a stop

``train(..., callbacks=[...])`` appends more: e.g. a test that poisons a batch, slows the steps down or dumps
each rank's weights. Sampling uses its own per-image seeds and every step reseeds the global RNG, so a
callback that samples leaves the training trajectory bit-identical.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .. import distributed as dist
from ..cond import cond_from_data, run_labels
from ..config import RunConfig
from ..io import append_text, first_line, json_text
from ..precond import Precond
from ..progress import Stopped, bars_enabled, step_bar
from .lr import learning_rate
from .run_folder import save_checkpoint
from .state import Batch, Setup, StepStats, TrainState, Window


class Callback:
    """A hook into the loop; override the methods you need (each runs on every rank)."""

    def before_step(self, state: TrainState, batch: Batch) -> None:
        """After this rank's share of global batch ``state.step`` is drawn, before the forward pass."""

    def after_step(self, state: TrainState, stats: StepStats) -> None:
        """After the step was applied or skipped (``state.step`` already counts it)."""

    def end(self, state: TrainState) -> None:
        """After the loop: the run is finished, or stopped by a signal."""


def crossed(state: TrainState, every: int) -> bool:
    """Whether the step that just brought images_seen up by one batch passed a multiple of ``every``."""
    seen = state.images_seen
    return every > 0 and seen // every > (seen - state.batch_size) // every


def default_callbacks(setup: Setup, state: TrainState, *, progress: bool, tensorboard: bool) -> list[Callback]:
    """Log, sample, evaluate, checkpoint: in this order after every step."""
    log = LogMetrics(setup, state, progress=progress, tensorboard=tensorboard)
    return [log, SampleGrids(setup, progress=progress), QuickEval(setup, log), SaveCheckpoint(setup)]


class LogMetrics(Callback):
    """The progress bar (rank 0) and one metrics.jsonl line per window of train.log_every_images images."""

    def __init__(self, setup: Setup, state: TrainState, *, progress: bool, tensorboard: bool):
        self.setup = setup
        path = setup.out / "metrics.jsonl"
        first = not path.is_file() or path.stat().st_size == 0
        self.writer = None
        if setup.main:  # rank 0 writes; a resumed run's TensorBoard drops what was logged past its state
            self.writer = MetricsWriter(setup, first=first, tensorboard=tensorboard, resumed_at=state.images_seen)
        self.bar = None
        if setup.main and bars_enabled(progress):  # a terminal, or TORCHDIFFUSION_PROGRESS=1 (progress.py)
            from tqdm.auto import tqdm

            total, initial = setup.total_images, state.images_seen
            self.bar = tqdm(total=total, initial=initial, unit="img", unit_scale=True, dynamic_ncols=True, desc="train")
        self.t_window = time.perf_counter()

    def after_step(self, state: TrainState, stats: StepStats) -> None:
        if self.bar is not None:
            self.bar.update(state.batch_size)
        last = self.setup.finished(state)
        if not (crossed(state, self.setup.cfg.train.log_every_images) or last or stats.stop):
            return
        w = state.window
        if self.writer is not None and w.examples + w.skipped > 0:
            # the lr of the last applied update
            lr = learning_rate(self.setup.cfg.train, max(state.updates - 1, 0), self.setup.total_images)
            rec = self.writer.log(w, state, lr=lr, dt=time.perf_counter() - self.t_window)
            if self.bar is not None and rec.get("loss") is not None:
                self.bar.set_postfix(loss=f"{rec['loss']:.4f}")
        state.window = Window.empty(len(w.bucket_sums))
        self.t_window = time.perf_counter()

    def end(self, state: TrainState) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


class MetricsWriter:
    """metrics.jsonl (always) and TensorBoard (optional), on rank 0."""

    def __init__(self, setup: Setup, *, first: bool, tensorboard: bool, resumed_at: int = 0):
        self.path = setup.out / "metrics.jsonl"
        self.first, self.unit, self.edges = first, setup.unit, setup.edges
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # a resumed run logs the images after its state again: TensorBoard drops what a killed run logged
                # past it (as metrics.jsonl is truncated there), instead of drawing those points twice
                purge = resumed_at + 1 if resumed_at > 0 else None
                self.tb = SummaryWriter(str(setup.out / "tensorboard"), purge_step=purge)
            except ImportError:
                from ..extras import missing

                dist.print0(missing("tensorboard", "TensorBoard logging skipped (metrics.jsonl only)"))

    def log(self, w: Window, state: TrainState, *, lr: float, dt: float) -> dict:
        """The window's line: mean loss and gradient norm, lr, throughput, mean loss by noise-level bucket."""
        n, n_up = float(w.examples), float(w.updates)
        seen = state.images_seen
        rec: dict[str, Any] = {
            "images_seen": seen,
            "step": state.step,
            "loss": w.loss_sum / n if n > 0 else None,
            "grad_norm": w.grad_norm_sum / n_up if n_up > 0 else None,
            "lr": lr,
            "images_per_s": (n + float(w.skipped) * state.batch_size) / dt if dt > 0 else None,  # skips cost time too
            "skipped_steps": state.skipped,
            "cpu_s": round(state.clock.cpu_s(), 3),  # cumulative for the run (resumes continue them)
            "wall_s": round(state.clock.wall_s(), 3),
            "loss_by_sigma": [
                float(s / c) if c > 0 else None for s, c in zip(w.bucket_sums.tolist(), w.bucket_counts.tolist())
            ],
        }
        if self.first:
            rec["loss_by_sigma_unit"] = self.unit
            rec["loss_by_sigma_edges"] = self.edges
            self.first = False
        self._append(rec)
        if self.tb is not None:
            for key in ("loss", "grad_norm", "lr", "images_per_s", "skipped_steps"):
                if rec[key] is not None:
                    self.tb.add_scalar(f"train/{key}", rec[key], seen)
            for k, v in enumerate(rec["loss_by_sigma"]):
                if v is not None:
                    self.tb.add_scalar(f"loss_by_{self.unit}/bucket{k}", v, seen)
        return rec

    def write(self, rec: dict, seen: int) -> None:
        """One extra metrics.jsonl line (e.g. a quick evaluation); its numbers also go to TensorBoard."""
        self._append(rec)
        if self.tb is not None:
            for key, v in rec.items():
                if "/" in key and isinstance(v, (int, float)):
                    self.tb.add_scalar(key, v, seen)

    def _append(self, rec: dict) -> None:
        from .runlock import check_held

        try:
            append_text(self.path, json_text(rec) + "\n")
        except FileNotFoundError:  # the run folder went away: say that, not which of its files
            check_held(self.path.parent)
            raise

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


GRID = "grid-{:09d}.png"  # samples/: the grid drawn at that many images
PENDING_GRID = "." + GRID.replace(".png", ".pending.safetensors")  # samples/: the EMA of a grid a stop cut short


class SampleGrids(Callback):
    """``samples/grid-<images>.png`` from the EMA model every train.sample_every_images, and at the end (rank 0).

    A stop while a periodic grid is drawn ends the drawing at once; the EMA it was drawing from is kept beside
    the grids (:data:`PENDING_GRID`), and the resumed run draws that grid first - so an interrupted run ends with
    the grids an uninterrupted one has."""

    def __init__(self, setup: Setup, progress: bool = False):
        self.setup, self.progress = setup, progress
        self.pending_done = False

    def before_step(self, state: TrainState, batch: Batch) -> None:
        if not self.pending_done:
            self.pending_done = True
            self.draw_pending(state)

    def after_step(self, state: TrainState, stats: StepStats) -> None:
        last = self.setup.finished(state)
        if self.setup.main and crossed(state, self.setup.cfg.train.sample_every_images) and not last:
            try:
                self.draw(state)
            except Stopped:  # the next step checkpoints and returns; the resumed run draws this grid first
                from ..io import save_safetensors

                pending = self.path(state).parent / PENDING_GRID.format(state.images_seen)
                save_safetensors({k: v.detach().cpu() for k, v in state.ema.module.state_dict().items()}, pending)

    def end(self, state: TrainState) -> None:
        """The final grid, with a bar; a stop while it is drawn raises Stopped (the next call draws it)."""
        if not self.setup.stop.requested:
            self.draw_pending(state)  # a resumed run that had no step left to take
        if self.setup.main and self.setup.finished(state) and not self.path(state).is_file():
            self.draw(state, progress=self.progress)

    def draw_pending(self, state: TrainState) -> None:
        """The periodic grids a stop cut short, from the EMA kept for each (rank 0); a stop leaves them pending."""
        import copy

        from safetensors.torch import load_file

        if not self.setup.main:
            return
        s = self.setup
        for pending in sorted((s.out / "samples").glob(PENDING_GRID.replace("{:09d}", "*"))):
            target = pending.parent / pending.name[1:].replace(".pending.safetensors", ".png")
            if not target.is_file():
                ema = copy.deepcopy(state.ema.module)
                try:
                    ema.load_state_dict(load_file(pending))
                except Exception as e:  # a damaged file: the grid is a convenience, the run goes on
                    dist.print0(f"warning: could not draw {target.name} from {pending.name}: {first_line(e)}")
                else:
                    try:
                        _sample_grid(ema, s.cfg, s.data, s.info, target, stop=s.stop)
                    except Stopped:
                        return  # still pending: the next start draws it
            pending.unlink(missing_ok=True)

    def path(self, state: TrainState) -> Path:
        return self.setup.out / "samples" / GRID.format(state.images_seen)

    def draw(self, state: TrainState, progress: bool = False) -> None:
        s = self.setup
        _sample_grid(state.ema.module, s.cfg, s.data, s.info, self.path(state), stop=s.stop, progress=progress)


def _sample_grid(
    model: Precond, cfg: RunConfig, data: Any, info: dict, path: Path, *, stop, progress: bool = False
) -> None:
    """A small grid (images), line plots (signals) or scatter (2-D vectors) from the EMA model (viz.save_samples).

    A stop asked while it is drawn ends it at the next sampler step (:class:`Stopped`; nothing is written)."""
    try:
        from ..generate import before_guide, generate
        from ..viz import save_samples
    except ImportError:
        return
    from ..kinds import DISCRETE_KINDS

    if info["kind"] in DISCRETE_KINDS:
        return _sample_discrete(model, cfg, data, info, path, stop=stop, progress=progress)
    vector = info["kind"] == "vector"
    if vector and info["data_shape"] != [2]:
        return
    n = min(cfg.sample.n, 2000 if vector else 64)
    seeds = range(cfg.sample.seed, cfg.sample.seed + n)
    device = next(model.parameters()).device
    cond = cond_from_data(data, torch.arange(n) % data.x.shape[0], torch.zeros(n, dtype=torch.bool), cfg.model, device)
    if cond is not None and "class" in cond:  # the classes the training data held, as the run's samples ask for
        cond["class"] = run_labels(cfg.model.num_classes, info, n).to(device)
    sample = before_guide(replace(cfg.sample, n=n), model)  # unguided until the run keeps its guide model
    try:
        total = -(-n // max(1, sample.batch_size)) * sample.steps
        with step_bar(total, f"sample grid ({sample.sampler}, {n} images)", show=progress) as bar:
            x = generate(
                model,
                seeds,
                sample,
                tuple(info["data_shape"]),
                cond=cond,
                precision=cfg.train.precision,
                callback=lambda i: (stop.check(), bar.step(i)),
                grid_dir=path.parent.parent / "grids",  # the run folder's (a distilled student's grid)
                codec=getattr(data, "codec", None),  # a latent run's grid shows decoded images
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        save_samples(x, info["kind"], path, reference=data.x[:2000] if vector else None)
    except Exception as e:  # a grid is a convenience: report it, never lose a training run over it
        dist.print0(f"warning: could not draw {path.name}: {first_line(e)}")


def _sample_discrete(model, cfg: RunConfig, data: Any, info: dict, path: Path, *, stop, progress: bool) -> None:
    """A table's marginals (samples over the training rows) or a few sequences as text, from the EMA model."""
    from ..kinds import draw
    from ..viz import save_samples

    n = min(cfg.sample.n, 1000 if info["kind"] == "table" else 16)
    try:
        seeds = range(cfg.sample.seed, cfg.sample.seed + n)
        grids = path.parent.parent / "grids"  # the run folder's (a distilled student's grid)
        x = draw(model, info["kind"], seeds, cfg.sample, progress=progress, stop=stop, grid_dir=grids)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_samples(x, info["kind"], path, reference=data.x, schema=data.schema, title=f"{n} samples")
    except Stopped:
        raise
    except Exception as e:  # a picture is a convenience: report it, never lose a training run over it
        dist.print0(f"warning: could not draw {path.name}: {first_line(e)}")


class QuickEval(Callback):
    """``train.eval_every_images``: evaluation.quick_eval of the EMA model, one metrics.jsonl line (rank 0).

    An evaluation that fails is logged (one line on stderr and an ``eval/error`` record) and training goes
    on: a metric must not end a long run.
    """

    def __init__(self, setup: Setup, log: LogMetrics):
        self.setup, self.log = setup, log

    def after_step(self, state: TrainState, stats: StepStats) -> None:
        every = self.setup.cfg.train.eval_every_images
        last = self.setup.finished(state)
        if self.setup.main and (crossed(state, every) or (last and every > 0)):
            self.evaluate(state)

    def evaluate(self, state: TrainState) -> None:
        from ..evaluation.evaluate import quick_eval

        s, seen = self.setup, state.images_seen
        t0 = time.perf_counter()
        spent = {"cpu_s": round(state.clock.cpu_s(), 3), "wall_s": round(state.clock.wall_s(), 3)}  # before it
        try:
            rec = quick_eval(
                state.ema.module,
                s.cfg,
                s.data_shape,
                s.X,
                n=s.cfg.train.eval_n,
                grid_dir=s.out / "grids",
                codec=getattr(s.data, "codec", None),  # a latent run: decoded samples and references
                classifier=s.cfg.train.eval_classifier,
                data_classes=s.info.get("num_classes"),  # the data's classes (run.json)
                classes_without_examples=s.info.get("classes_without_examples") or (),
            )
        except Exception as e:  # reported, not raised (see above)
            msg = first_line(e)
            dist.print0(f"quick evaluation at {seen} images failed ({msg}); training continues")
            rec = {"eval/error": msg}
        rec = {"images_seen": seen, "step": state.step, **spent, **rec, "eval/seconds": time.perf_counter() - t0}
        self.log.writer.write(rec, seen)


class SaveCheckpoint(Callback):
    """run_folder.save_checkpoint every train.checkpoint_every_images, at the end and on a stop (every rank)."""

    def __init__(self, setup: Setup):
        self.setup = setup

    def after_step(self, state: TrainState, stats: StepStats) -> None:
        last = self.setup.finished(state)
        if crossed(state, self.setup.cfg.train.checkpoint_every_images) or last or stats.stop:
            save_checkpoint(state, self.setup, finished=last)
