"""``distill(teacher, method, steps, out)``: a few-step student as an ordinary run folder.

    progressive   halvings teacher_steps -> ... -> steps, each a training run (the last one into ``out``,
                  the others into ``out/stages/<N>-steps``); DDIM on the halved grid (grids/ddim-nfe<N>.json)
    consistency   consistency distillation from the teacher's Heun steps; multistep consistency sampling
    dmd           distribution matching distillation (DMD2, dmd.py): a generator sampled by multistep consistency
                  sampling on fixed levels, pushed toward the teacher's distribution by a fake denoiser trained
                  alongside
    reflow        (noise, teacher sample) pairs, then the denoising loss on them; Euler on a uniform-t grid

Every student starts from its teacher's weights, trains through ``train()`` (progress bar, metrics.jsonl,
periodic evaluation, checkpoints, exact resume) and records in config.json the steps it was distilled for
(objective.max_steps; more are refused) and the sampler and grid it samples with (sample.*, grids/).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..cond import run_labels
from ..config import ConfigError, ObjectiveConfig, RunConfig, SampleConfig, validate
from ..samplers.optimize_grid import grid_path, save_grid
from .objectives import Teacher

METHODS = ("progressive", "consistency", "dmd", "reflow")


@dataclass(frozen=True)
class DistillSettings:
    images: int = 20_000  # images seen per training run (each halving of progressive is one run)
    batch_size: int = 64
    lr: float | None = None  # None: 2e-4 (small: the student starts from the teacher's weights), dmd's generator 1e-4
    teacher_steps: int = 0  # progressive: the first teacher's DDIM steps (0: steps x 2^3)
    grid: str | None = None  # progressive: the first teacher's grid, a sample.grid name (None: its own sample.grid)
    levels: int = 40  # consistency: the fixed discretisation N of consistency distillation
    pairs: int = 5_000  # reflow: (noise, teacher sample) pairs
    guidance: float | None = None  # conditional teachers: the CFG scale distilled (None: the teacher's default)
    # the teacher steered from its run's guide model at this w (None: the model alone; any given value needs a guide)
    autoguidance: float | None = None
    fake_updates: int = 3  # dmd: fake-denoiser updates per generator update
    fake_lr: float = 2e-4  # dmd: the fake denoiser's learning rate
    eval_every_images: int = 0  # quick evaluation cadence, as in training
    seed: int = 0
    # torch threads of the distillation (0: the torch default); None keeps the teacher's train.threads, which a
    # teacher trained with e.g. threads=2 would impose on students distilled side by side, one core each
    threads: int | None = None


def check_teacher(teacher: Teacher, method: str, steps: int) -> None:
    """Refuse, in one line, a teacher the method cannot learn from."""
    cfg, where = teacher.run.config, teacher.run.path
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if "onnx" in teacher.run.info:
        raise ConfigError(
            f"{where} is an ONNX export: its network runs in ONNX Runtime, which a student cannot be trained from "
            f"or initialised with; distil the run folder it came from ({method})"
        )
    if not 1 <= steps <= 1024:
        raise ConfigError(f"--steps must be in [1, 1024], got {steps}")
    if cfg.diffusion.process == "categorical":
        raise ConfigError(
            f"{where} models discrete tokens (diffusion.process=categorical): it has no probability-flow ODE or "
            f"score to distil ({method})"
        )
    if teacher.run.kind == "table" and teacher.run.model.categories:
        raise ConfigError(
            f"{where} is a table with {len(teacher.run.model.categories)} categorical column(s): distillation takes a "
            "model that is one denoiser D(x, sigma) (images, signals, volumes, points, tables of numeric columns), "
            f"and this one also draws its categorical columns by a process of their own ({method})"
        )
    if cfg.model.text_dim > 0:
        raise ConfigError(
            f"{where} is text-conditioned: distillation draws no prompts, so it takes unconditional and "
            f"class-conditional teachers ({method})"
        )
    if cfg.diffusion.boundary == "consistency":
        raise ConfigError(f"{where} is a consistency model: it has no probability-flow ODE to distil ({method})")
    limit = cfg.objective.max_steps  # a student: sampled in at most this many steps, as sample refuses more
    if limit > 0 and method in ("consistency", "dmd"):
        raise ConfigError(
            f"{where} is a student distilled for at most {limit} sampling steps: {method} reads its denoiser along "
            "the whole probability-flow ODE, which it was not trained for; distil the run it learned from"
        )
    from ..samplers import DETERMINISTIC

    if limit > 0 and method == "reflow" and cfg.sample.sampler not in DETERMINISTIC:
        raise ConfigError(
            f"{where} is a student sampled by {cfg.sample.sampler} in at most {limit} steps: reflow draws its pairs "
            "with a deterministic ODE solver, 18 Heun steps here; distil the run it learned from"
        )
    if method == "progressive" and cfg.diffusion.parameterization == "eps" and steps == 1:
        raise ConfigError(
            f"{where} predicts eps: a one-step progressive student cannot use it (x0 = x - sigma eps is unstable at "
            "sigma_max, Salimans & Ho 2022 Sec. 4); distil to 2 steps or train the teacher with "
            "diffusion.parameterization=v"
        )


def student_config(
    teacher: Teacher,
    objective: ObjectiveConfig,
    sample: SampleConfig,
    s: DistillSettings,
    boundary: str = "none",
    lr: float = 2e-4,
) -> RunConfig:
    """The teacher's config with the student's objective, sampler and a short fine-tuning schedule."""
    cfg = teacher.run.config
    diffusion = replace(cfg.diffusion, boundary=boundary)
    train = replace(
        cfg.train,
        images=s.images,
        batch_size=s.batch_size,
        grad_accum=1,
        lr=s.lr if s.lr is not None else lr,
        warmup_images=min(1_000, s.images),
        lr_decay="none",
        ema_halflife_images=max(1, s.images // 10),
        cond_drop_prob=0.0,  # the student learns the guided teacher at a fixed w (objectives.py)
        eval_every_images=s.eval_every_images,
        checkpoint_every_images=max(s.images // 2, s.batch_size),
        sample_every_images=0,
        seed=s.seed,
        threads=cfg.train.threads if s.threads is None else s.threads,
        guide_at=0.0,  # a student keeps no autoguidance guide: it learns the teacher's model alone
    )
    suffix = f"-{objective.name}"  # once: a later progressive halving's teacher is already a student
    name = cfg.preset if cfg.preset.endswith(suffix) else cfg.preset + suffix
    return validate(replace(cfg, preset=name, diffusion=diffusion, train=train, sample=sample, objective=objective))


def write_grids(out: Path, sampler: str, grids: Sequence[torch.Tensor], about: str) -> None:
    for g in grids:
        save_grid(grid_path(out, sampler, len(g) - 1), g, {"sampler": sampler, "about": about})


def consistency_grid(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Multistep consistency sampling at ``steps`` levels: the top ``steps`` of a (steps + 1)-level Karras grid."""
    from ..schedules import karras_sigmas

    g = karras_sigmas(steps + 1, sigma_min, sigma_max)
    return torch.cat([g[:steps], g.new_zeros(1)])


def uniform_t_grid(steps: int, sigma_max: float) -> torch.Tensor:
    """Euler steps uniform in rectified flow's t, from t(sigma_max) to 0 (the grid a straight flow wants)."""
    from ..process import rf_sigma_to_t, rf_t_to_sigma

    t0 = float(rf_sigma_to_t(torch.tensor(sigma_max, dtype=torch.float64)))
    t = torch.linspace(t0, 0.0, steps + 1, dtype=torch.float64)
    return rf_t_to_sigma(t)


# distill's options and the train settings student_config sets from each, the option's own first (a resume may
# change train.images itself, not the EMA half-life and warm-up derived from it)
FROM_OPTIONS = {
    "--images": ("images", "ema_halflife_images", "warmup_images"),
    "--batch-size": ("batch_size",),
    "--seed": ("seed",),
    "--lr": ("lr",),
}
WHY = {"--images": " (the student's EMA half-life and warm-up are set from it)"}


def check_out_folder(out: Path, cfg: RunConfig) -> None:
    """Refuse an ``out`` that holds another run before writing the student's grids or pairs into it. A student of
    another --images, --batch-size, --seed or --lr is refused by that option's name (the first that differs), not
    by the train.* settings set from it, which distill has no option for; any other difference as train names it.
    (The batch size and seed, which config.json's check lets change, are held by the training states: a resume
    of other ones is refused there, training.checkpoint.)"""
    from ..config import shown
    from ..training.checkpoint import list_states
    from ..training.run_folder import check_out_folder as check
    from ..training.run_folder import saved_config

    try:
        check(out, cfg)
        refused = None
    except ConfigError as e:
        refused = e
    old = saved_config(out) if list_states(out / "checkpoints") else None
    changed = lambda keys: old is not None and getattr(old.train, keys[0]) != getattr(cfg.train, keys[0])
    differ = [o for o, keys in FROM_OPTIONS.items() if changed(keys)]
    if refused is not None:
        if not differ:
            raise refused
        kept = {k: getattr(old.train, k) for o in differ for k in FROM_OPTIONS[o]}
        try:  # the same student but for these options: named so
            check(out, replace(cfg, train=replace(cfg.train, **kept)))
        except ConfigError:
            raise refused from None  # another difference too: the first one, as train names it
    differ = differ if refused is not None else [o for o in differ if FROM_OPTIONS[o][0] in ("batch_size", "seed")]
    if differ:
        option, key = differ[0], FROM_OPTIONS[differ[0]][0]
        was, now = shown(getattr(old.train, key)), shown(getattr(cfg.train, key))
        raise ConfigError(
            f"{out} was distilled with {option} {was}, not {now}{WHY.get(option, '')}; resume with the same value, "
            "or choose another --out"
        ) from None


def _train(cfg: RunConfig, out: Path, teacher: Teacher, data, progress: bool, objective=None) -> Path:
    from ..training import train

    init = {k: v.detach().clone() for k, v in teacher.run.model.state_dict().items()}
    return train(cfg, out, data=data, progress=progress, init_weights=init, raise_on_stop=True, objective=objective)


def _teacher_data(teacher: Teacher, seed: int):
    """The teacher's training data: a latent teacher's are its autoencoder's latents (cached), with that codec, so
    the student is a latent run of the same autoencoder (run.json records it; sampling decodes)."""
    from .. import distributed as dist
    from ..data import load_data

    if teacher.run.codec is not None:
        from ..latent import load_latents

        return load_latents(teacher.run.config.data, "train", seed, codec=teacher.run.codec, progress=dist.is_main())
    return load_data(teacher.run.config.data, split="train", seed=seed)


def _load_teacher(path: Path, method: str, steps: int, s: DistillSettings) -> Teacher:
    """The teacher run, checked for the method, guided at ``s.guidance`` (a conditional teacher's default if None).
    A --guidance or --autoguidance the teacher cannot read is refused whatever its value, as sample refuses it."""
    from ..config import unread_flag
    from ..generate import guide_of

    teacher = Teacher(path, 1.0, "cpu")  # its autoguidance set once --autoguidance is checked (below)
    check_teacher(teacher, method, steps)
    cfg = teacher.run.config
    if s.guidance is not None and (why := unread_flag(cfg, "sample.guidance", "--guidance")):
        raise ConfigError(why)
    if s.autoguidance is not None and guide_of(teacher.run.model) is None:
        raise ConfigError(
            f"--autoguidance changes nothing: {path} keeps no guide model (it was trained with train.guide_at=0), "
            "and autoguidance steers the teacher away from one; leave --autoguidance out"
        )
    teacher.autoguidance = 1.0 if s.autoguidance is None else float(s.autoguidance)
    conditional = cfg.model.conditional
    teacher.guidance = float(s.guidance) if s.guidance is not None else (cfg.sample.guidance if conditional else 1.0)
    return teacher


def _objective(name: str, teacher_path: Path, teacher: Teacher, steps: int, **settings) -> ObjectiveConfig:
    """A student's objective: its teacher's folder (absolute: the same distill resumes from any working folder), the
    guidance it distils that teacher at, the steps it samples."""
    return ObjectiveConfig(
        name=name,
        teacher=str(Path(teacher_path).resolve()),
        guidance=teacher.guidance,
        autoguidance=teacher.autoguidance,
        max_steps=steps,
        **settings,
    )


def _student_sample(teacher: Teacher, sampler: str, steps: int) -> SampleConfig:
    from ..config import SamplerSettings

    base = teacher.run.config.sample
    return replace(
        base, sampler=sampler, grid="tuned", steps=steps, guidance=1.0, autoguidance=1.0, settings=SamplerSettings()
    )


def distill_progressive(teacher_path: Path, steps: int, out: Path, s: DistillSettings, progress: bool) -> Path:
    """Halvings teacher_steps -> teacher_steps/2 -> ... -> steps (Salimans & Ho 2022, Alg. 2 repeated)."""
    n = s.teacher_steps or steps * 8
    if n <= steps or n % steps or (n // steps) & (n // steps - 1):
        raise ConfigError(f"--teacher-steps must be --steps times a power of 2 (>= 2x), got {n} and {steps}")
    current, data = teacher_path, None
    while n > steps:
        half = n // 2
        first = data is None
        # checked for the last halving up front; a later teacher is a student: its guidance baked in, no guide model
        teacher = _load_teacher(
            current, "progressive", steps, s if first else replace(s, guidance=None, autoguidance=None)
        )
        limit = teacher.run.config.objective.max_steps  # a student as the first teacher: within its own steps
        if first and limit > 0 and n > limit:
            raise ConfigError(
                f"{current} is a student distilled for at most {limit} sampling steps; --teacher-steps {n} asks for "
                f"more (give at most {limit})"
            )
        grid = (s.grid or "") if current == teacher_path else ""  # later halvings: the previous student's grid
        if first:  # the first teacher: its data for every halving, its CFG scale baked into the first student
            data = _teacher_data(teacher, s.seed)
            walked = grid or teacher.run.config.sample.grid  # recorded by name: a rerun naming it resumes
            start = _objective("progressive", teacher_path, teacher, half, teacher_steps=n, teacher_grid=walked)
        else:
            teacher.guidance = 1.0
        # every halving records the start (teacher run, first steps and grid, guidance baked in); a later one also
        # the previous student it learns from (objective.stage_teacher: at guidance 1, on its own 2 x half steps)
        obj = replace(start, max_steps=half, stage_teacher="" if first else str(Path(current).resolve()))
        cfg = student_config(teacher, obj, _student_sample(teacher, "ddim", half), s)
        stage = out if half == steps else out / "stages" / f"{half:04d}-steps"
        if first and stage != out:  # the last stage, known before any is trained: refused before any is written
            previous = out.resolve() / "stages" / f"{2 * steps:04d}-steps"
            last = replace(obj, stage_teacher=str(previous), max_steps=steps)
            check_out_folder(out, replace(cfg, objective=last))
        check_out_folder(stage, cfg)
        from .progressive import halve_grid

        student_grid = halve_grid(teacher.grid(n, grid))  # a grid the teacher lacks is refused before any folder
        stage.mkdir(parents=True, exist_ok=True)
        write_grids(stage, "ddim", [student_grid], f"progressive distillation from {n} steps")
        _train(cfg, stage, teacher, data, progress)
        current, n = stage, half
    return out


def distill_consistency(teacher_path: Path, steps: int, out: Path, s: DistillSettings, progress: bool) -> Path:
    """Consistency distillation (Song et al. 2023, Alg. 2) with a fixed grid of ``s.levels`` levels."""
    teacher = _load_teacher(teacher_path, "consistency", steps, s)
    obj = _objective(
        "consistency_distillation", teacher_path, teacher, steps, ct_steps_start=s.levels, ct_steps_end=s.levels
    )
    cfg = student_config(teacher, obj, _student_sample(teacher, "consistency", steps), s, boundary="consistency")
    check_out_folder(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    m = teacher.run.model
    grids = [consistency_grid(k, m.sigma_min, m.sigma_max) for k in range(1, steps + 1)]
    write_grids(out, "consistency", grids, "multistep consistency sampling (top levels of a Karras grid)")
    return _train(cfg, out, teacher, _teacher_data(teacher, s.seed), progress)


def distill_dmd(teacher_path: Path, steps: int, out: Path, s: DistillSettings, progress: bool) -> Path:
    """Distribution matching distillation (DMD2: Yin et al. 2024b) into a ``steps``-step generator (dmd.py)."""
    from .dmd import teacher_levels

    teacher = _load_teacher(teacher_path, "dmd", steps, s)
    obj = _objective(
        "distribution_matching", teacher_path, teacher, steps, dmd_fake_updates=s.fake_updates, dmd_fake_lr=s.fake_lr
    )
    cfg = student_config(teacher, obj, _student_sample(teacher, "consistency", steps), s, lr=1e-4)
    # DMD2's Adam betas, for both networks; the EMA of the generator over its last eighth, from the teacher's weights
    train = replace(cfg.train, betas=(0.0, 0.999), ema_halflife_images=max(1, s.images // 8), ema_warmup_ratio=0.0)
    cfg = replace(cfg, train=train)
    check_out_folder(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    levels = teacher_levels(teacher.run.model, steps)
    grids = [torch.cat([levels[:k], levels.new_zeros(1)]) for k in range(1, steps + 1)]
    write_grids(out, "consistency", grids, "the generator's first levels (distribution matching trains every stage)")
    return _train(cfg, out, teacher, _teacher_data(teacher, s.seed), progress)


def draw_pairs(teacher: Teacher, count: int, progress: bool):
    """(x0 (count, ...), noise (count, ...), labels or None): the teacher's deterministic ODE samples."""
    from ..generate import generate
    from ..progress import step_bar
    from ..samplers import DETERMINISTIC
    from .reflow import PAIR_SEED, pair_noise

    run = teacher.run
    sample = replace(run.config.sample, guidance=teacher.guidance, autoguidance=teacher.autoguidance)
    if sample.sampler not in DETERMINISTIC:
        sample = replace(sample, sampler="heun", steps=18, grid="karras", settings=type(sample.settings)())
    labels = run_labels(run.config.model.num_classes, run.info, count)  # the classes the teacher was trained on
    cond = {"class": labels} if labels is not None else None
    total = -(-count // sample.batch_size) * sample.steps
    with step_bar(total, f"reflow pairs ({sample.sampler}, {count} samples)", show=progress) as bar:
        x0 = generate(
            run.model,
            range(PAIR_SEED, PAIR_SEED + count),
            sample,
            run.data_shape,
            cond=cond,
            callback=bar.step,
            grid_dir=run.path / "grids",
        )
    return x0, pair_noise(count, run.data_shape), labels


def distill_reflow(teacher_path: Path, steps: int, out: Path, s: DistillSettings, progress: bool) -> Path:
    """Reflow (Liu et al. 2022): pairs from the teacher's ODE, then the denoising loss with paired noise."""
    from ..data.base import TensorData
    from ..kinds import schema_of
    from .reflow import save_pairs

    teacher = _load_teacher(teacher_path, "reflow", steps, s)
    obj = _objective("reflow", teacher_path, teacher, steps, reflow_pairs=s.pairs)
    cfg = student_config(teacher, obj, _student_sample(teacher, "euler", steps), s)
    check_out_folder(out, cfg)  # before the pairs are drawn (minutes) and written
    x0, noise, labels = draw_pairs(teacher, s.pairs, progress)
    info, kind = teacher.run.info, teacher.run.kind
    schema = schema_of(info, kind) if kind == "table" else None  # the columns' quantile maps, to decode samples
    data = TensorData(x=x0, labels=labels, class_names=info.get("class_names"), kind=kind, schema=schema)
    if teacher.run.codec is not None:  # a latent teacher's samples are latents: the student keeps its autoencoder
        from ..latent import LatentData

        data = LatentData(
            x=x0, labels=labels, class_names=info.get("class_names"), kind="image", codec=teacher.run.codec
        )
    out.mkdir(parents=True, exist_ok=True)
    save_pairs(out, x0, noise, labels)
    sigma_max = teacher.run.model.sigma_max
    write_grids(out, "euler", [uniform_t_grid(k, sigma_max) for k in range(1, steps + 1)], "uniform in RF time t")
    return _train(cfg, out, teacher, data, progress)


def distill(
    teacher: str | Path, method: str, steps: int, out: str | Path, settings: DistillSettings, *, progress: bool = True
) -> Path:
    """Distil the run folder ``teacher`` into a ``steps``-step student in ``out`` (see the module docstring)."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if settings.grid and method != "progressive":
        raise ConfigError(f"a teacher grid (--grid) applies to progressive distillation only, not {method}")
    if Path(out).resolve() == Path(teacher).resolve():
        raise ConfigError(f"--out {out} is the teacher's run folder; the student needs a folder of its own")
    fn = {
        "progressive": distill_progressive,
        "consistency": distill_consistency,
        "dmd": distill_dmd,
        "reflow": distill_reflow,
    }[method]
    from .. import distributed as dist

    # Under torchrun: one process group for every training stage (progressive distillation trains several); a
    # group that train() had to create and destroy per stage could not be joined again by torchrun's workers.
    owns_group = not dist.is_initialized()
    dist.init()
    try:
        return fn(Path(teacher), int(steps), Path(out), settings, progress)
    finally:
        if owns_group:
            dist.shutdown()
