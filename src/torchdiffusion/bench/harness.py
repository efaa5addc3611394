"""The benchmark: quality against NFE for every (sampler, grid), side by side with diffusers' schedulers.

Case (a), analytic: a Gaussian mixture with its exact denoiser; quality is measured against fresh exact samples.
Case (b), a trained run folder: quality against a many-step reference solve (Heun, 200 steps) from other seeds.
For both the finite-sample floor (the distance between two independent reference sets of the same size) is
reported. Quality: sliced Wasserstein-1 (256 directions) and energy distance (first 2000 points) on flattened
samples. NFE is counted by wrapping the denoiser, never taken from a table.

Grids: every standard grid is the one ``torchdiffusion sample --grid KIND --steps N`` would use on the same
model, built by the same function (:func:`generate.resolve_grid`) over the model's own sigma range; the
analytic cases are sampled as a linear-beta DDPM model (:func:`analytic_model`), the same model diffusers'
schedulers see. diffusers runs at each of its timestep spacings (leading, trailing, linspace).

Seeds: evaluation starting noise uses ``eval_seed``; tuned grids are fit on ``fit_seed`` (a different batch of
starting noise) and never see the evaluation samples; reference samples use ``ref_seed`` and ``ref_seed + 1``.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from ..config import ConfigError, SampleConfig
from ..generate import sampling_plan
from ..io import atomic_write, write_json
from ..precond import Precond
from ..process import DiscreteVP
from ..samplers import DETERMINISTIC, SAMPLERS, get_sampler, steps_for_nfe
from ..samplers.optimize_grid import (
    STOPS_SHORT,
    GridError,
    final_step,
    fit_noise,
    load_grid,
    optimize_grid,
    reference_solution,
    save_grid,
)
from ..types import Denoiser
from . import diffusers_driver
from .metrics import SlicedReference, energy_distance, random_directions

OUR_SAMPLERS = tuple(name for name in SAMPLERS if name != "adaptive")  # adaptive gets its own rows
GRIDS = ("karras", "exponential", "uniform_t", "tuned")


@dataclass(frozen=True)
class BenchConfig:
    nfes: tuple[int, ...] = (5, 10, 20, 50)  # NFE budgets
    n: int = 20_000  # samples per row
    samplers: tuple[str, ...] = OUR_SAMPLERS  # ours
    grids: tuple[str, ...] = GRIDS  # karras | exponential | uniform_t | tuned
    tuned_samplers: tuple[str, ...] = ("dpmpp_2m", "dpmpp_3m", "unipc")  # which samplers get a tuned grid
    tune_up_to_nfe: int = 10  # above this the tuned grid is the best of the standard starts (no search)
    tune_maxfev: int = 120  # Nelder-Mead evaluations per tuned grid (optimize_grid.fit_grid's budget)
    fit_n: int = 128  # starting samples for fitting grids (own seed)
    fit_knots: int = 4  # free knots of the log-sigma warp a tuned grid moves
    fit_tol: float = 1e-4  # tolerance of the reference ODE solve grids are fit to
    # what a tuned grid minimises (optimize_grid.grid_error): rms | sw | auto = sw for a run whose x0_hat is not
    # clamped (vectors, signals, latents: at NFE 5 the RMS fit's samples are blurred, docs/samplers.md), rms otherwise
    fit_objective: str = "auto"
    # tuned grids may stop their last step short of 0 (optimize_grid.final_step); None: when x0_hat is not clamped
    stop_short: bool | None = None
    adaptive_tols: tuple[float, ...] = (1e-2, 1e-3)  # rows for the adaptive solver (its NFE is reported)
    diffusers: tuple[str, ...] = tuple(diffusers_driver.SCHEDULERS)  # empty to skip
    diffusers_spacings: tuple[str, ...] = ("leading", "trailing", "linspace")  # diffusers' timestep_spacing
    eval_seed: int = 0
    fit_seed: int = 1
    ref_seed: int = 2
    n_proj: int = 256  # sliced Wasserstein directions
    energy_n: int = 2000  # points per set in the energy distance


@dataclass
class Row:
    case: str
    family: str  # torchdiffusion | diffusers | floor
    sampler: str
    grid: str
    budget: int  # the NFE budget asked for (0 for the floor row)
    nfe: int  # network evaluations actually made
    sw: float
    energy: float
    seconds: float
    extra: dict = field(default_factory=dict)


class Counter:
    """Wrap a denoiser and count its calls."""

    def __init__(self, denoise: Denoiser):
        self.denoise, self.calls = denoise, 0

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        self.calls += 1
        return self.denoise(x, sigma)


@dataclass(frozen=True)
class GridModel:
    """What :func:`generate.resolve_grid` reads off a model: its sigma range and DDPM table (if any)."""

    sigma_min: float
    sigma_max: float
    process: DiscreteVP | None = None


def analytic_model() -> GridModel:
    """The analytic cases are sampled as a DDPM-trained model would be (the one diffusers' schedulers see):
    T = 1000, linear beta from 1e-4 to 0.02, sigma from 0.01 to 157."""
    p = DiscreteVP("linear", T=1000)
    return GridModel(p.sigma_min, p.sigma_max, p)


def standard_grid(
    kind: str, steps: int, model: GridModel | Precond, sample: SampleConfig, clamped: bool = False
) -> tuple[Tensor, dict] | tuple[None, dict]:
    """The grid ``torchdiffusion sample --sampler SAMPLER --grid KIND --steps STEPS`` uses on this model, whose
    x0_hat is ``clamped`` or not, and the sampler settings it runs with (:func:`generate.sampling_plan`: ``auto``
    brings UniPC's order on an unclamped run); (None, {}) where it is not defined (e.g. uniform_t on a
    continuous model)."""
    try:
        sigmas, knobs, _ = sampling_plan(model, replace(sample, grid=kind, steps=steps), clamped=clamped)
        return sigmas, knobs
    except ConfigError:
        return None, {}


def fit_choice(cfg: BenchConfig, clamped: bool) -> tuple[str, bool]:
    """(objective, stop short) of the tuned grids of a run whose x0_hat is ``clamped`` or not: ``auto`` / None fit
    the sample distribution, stopping short, where nothing is clamped, and each sample's path (rms) where it is."""
    objective = cfg.fit_objective if cfg.fit_objective != "auto" else ("rms" if clamped else "sw")
    return objective, (not clamped) if cfg.stop_short is None else cfg.stop_short


def fit_identity(case: str, sampler: str, nfe: int, cfg: BenchConfig, objective: str, stop_short: bool) -> dict:
    """What a tuned grid was fit for (saved with it as ``fit``): a grid file is reused only where all of it matches."""
    return {
        "case": case,
        "sampler": sampler,
        "nfe": nfe,
        "objective": objective,
        "stop_short": bool(stop_short),
        "fit_n": cfg.fit_n,
        "fit_seed": cfg.fit_seed,
        "maxfev": cfg.tune_maxfev if nfe <= cfg.tune_up_to_nfe else 0,
        "fit_knots": cfg.fit_knots,
        "fit_tol": cfg.fit_tol,
    }


def tuned_grid(
    denoise: Denoiser,
    sampler: str,
    nfe: int,
    shape: tuple[int, ...],
    cfg: BenchConfig,
    model: GridModel | Precond,
    grid_dir: Path,
    cache: dict,
    log: Callable[[str], None],
    clamped: bool = False,
    case: str = "",
) -> tuple[Tensor, float, dict]:
    """Load ``grid_dir/<sampler>-nfe<N>.json`` when it was fit for ``case`` at these settings (its ``fit``:
    :func:`fit_identity`; older files without it are refit), or fit it on the fit seed's starting noise and save
    it (``clamped``: whether ``denoise`` clips x0_hat; for a discrete model that does not, the fit starts where the
    sampler's ``auto`` grid does, below ``schedules.DISCRETE_SIGMA_MAX``, since ``auto`` takes the tuned grid when
    one fits).
    The fit starts from the sampler's ``auto`` grid and runs it at the settings that grid brings (UniPC's order 2 on
    an unclamped run) and at the sampler's own (order 3), keeping the better on the fit's objective; the winning
    settings are saved with the grid (``generate`` runs a tuned grid at them).
    The objective and whether the grid may stop short: :func:`fit_choice`.
    Returns the grid, its ``sigma_end`` (where its last step stops; 0 unless it stops short) and its settings."""
    path = Path(grid_dir) / f"{sampler}-nfe{nfe}.json"
    objective, stop_short = fit_choice(cfg, clamped)
    fit = fit_identity(case, sampler, nfe, cfg, objective, stop_short)
    if path.exists():
        try:
            grid, meta = load_grid(path)
        except GridError:
            meta = {}
        if meta.get("fit") == fit and meta.get("sampler") == sampler and meta.get("nfe") == nfe:
            log(f"  tuned {sampler} nfe={nfe}: reused {path} (fit for the same case and settings)")
            return grid, float(meta.get("sigma_end", 0.0)), dict(meta.get("settings", {}))
        log(f"  tuned {sampler} nfe={nfe}: {path} was fit for other settings or another case; refitting it")
    sigma_min, sigma_max = model.sigma_min, model.sigma_max
    sample = SampleConfig(sampler=sampler)
    default, knobs = standard_grid("auto", steps_for_nfe(sampler, nfe), model, sample, clamped)
    if model.process is not None and not clamped and default is not None:
        sigma_max = float(default[0])  # where this sampler's auto grid starts (below DISCRETE_SIGMA_MAX)
    if "ref" not in cache:
        x_T = fit_noise(shape, cfg.fit_n, cfg.fit_seed, sigma_max).to(torch.float32)  # a network is float32
        cache["x_T"], cache["ref"] = x_T, reference_solution(denoise, x_T, sigma_max, sigma_min, tol=cfg.fit_tol)
    starts = tuple(cache.get(("grid", nfe), ()))
    starts += (default,) if default is not None and float(default[0]) == sigma_max else ()  # never worse
    t0 = time.perf_counter()
    grid, info = optimize_grid(
        denoise,
        sampler,
        nfe,
        cache["x_T"],
        cache["ref"],
        sigma_max=sigma_max,
        sigma_min=sigma_min,
        starts=starts,
        maxfev=cfg.tune_maxfev if nfe <= cfg.tune_up_to_nfe else 0,
        max_free=cfg.fit_knots,
        objective=objective,
        final_step=stop_short and sampler in STOPS_SHORT and steps_for_nfe(sampler, nfe, **knobs) >= 2,
        knobs=knobs,
        other_knobs=({},) if knobs else (),  # and at the sampler's own settings: the fit keeps the better
    )
    cache[("grid", nfe)] = starts + (grid,)
    save_grid(
        path,
        grid,
        {
            "sampler": sampler,
            "nfe": nfe,
            "fit_seed": cfg.fit_seed,
            "fit_n": cfg.fit_n,
            **info,
            "fit": fit,
            "objective": {"rms": "rms error", "sw": "sliced Wasserstein-1"}[objective]
            + " to the accurate ODE solution",
        },
    )
    log(
        f"  tuned {sampler} nfe={nfe}: {objective} {info['rms_start']:.4g} -> {info['rms']:.4g} "
        f"({time.perf_counter() - t0:.0f} s)"
        + (f"; stops at sigma {info['sigma_end']:.3g}" if info["sigma_end"] else "")
    )
    return grid, info["sigma_end"], info["settings"]


@dataclass
class Case:
    """One benchmark case: what is sampled, the grids it is sampled on, and how samples are judged."""

    name: str
    denoise: Denoiser
    shape: tuple[int, ...]
    model: GridModel | Precond  # the sigma range and DDPM table the grids are built from
    sample: SampleConfig  # rho and spacing of the standard grids (the run's own, for a run folder)
    quality: Callable[[Tensor], tuple[float, float]]  # samples -> (sliced Wasserstein, energy distance)
    z: Tensor  # (n, *shape) unit starting noise of the evaluation seed, float64
    clamped: bool = False  # whether ``denoise`` clips x0_hat (generate.clamps_x0): it chooses the auto grid
    identity: str = ""  # what tuned grids record they were fit for (default: the name; a run: its folder)


def run_case(
    case: str,
    denoise: Denoiser,
    shape: tuple[int, ...],
    reference: Tensor,
    reference2: Tensor,
    cfg: BenchConfig,
    grid_dir: str | Path,
    log: Callable[[str], None] = print,
    model: GridModel | Precond | None = None,
    sample: SampleConfig | None = None,
    embed: Callable[[Tensor], Tensor] | None = None,
    clamped: bool = False,
    identity: str = "",
) -> list[Row]:
    """All rows of one case: the floor, our samplers x grids x NFE, adaptive, diffusers x spacings x NFE.

    ``reference`` and ``reference2``: (n, ...) independent reference samples (the second only for the floor),
    already in the space of ``embed`` when one is given (samples are embedded before they are compared).
    ``model`` gives the sigma range (default: :func:`analytic_model`), ``sample`` the grids' rho and spacing,
    ``clamped`` whether ``denoise`` clips x0_hat (the analytic cases do not)."""
    reference = reference.flatten(1)
    sliced = SlicedReference(reference, random_directions(reference.shape[1], cfg.n_proj))

    def quality(x: Tensor, embedded: bool = False) -> tuple[float, float]:
        if not bool(torch.isfinite(x).all()):
            return math.inf, math.inf
        x = (x if embedded or embed is None else embed(x)).flatten(1)
        return sliced.distance(x), energy_distance(x, reference, max_n=cfg.energy_n)

    z = torch.randn((cfg.n, *shape), generator=torch.Generator().manual_seed(cfg.eval_seed), dtype=torch.float64)
    c = Case(case, denoise, shape, model or analytic_model(), sample or SampleConfig(), quality, z, clamped, identity)
    rows = [Row(case, "floor", "reference", "-", 0, 0, *quality(reference2, embedded=True), 0.0)]
    log(f"[{case}] floor: sw {rows[0].sw:.4g}, energy {rows[0].energy:.4g}")
    rows += our_rows(c, cfg, Path(grid_dir), log)
    rows += adaptive_rows(c, cfg, log)
    if cfg.diffusers and not diffusers_driver.available():
        from ..extras import missing

        log(missing("bench", "diffusers schedulers skipped"))
    elif cfg.diffusers:
        rows += diffusers_rows(c, cfg, log)
    return rows


def _timed(c: Case, sampler: Callable, grid_first: float, *args, **kwargs) -> tuple[Tensor, int, float]:
    """Run ``sampler(counter, x, *args, **kwargs)`` from the case's noise at ``grid_first``: (out, NFE, seconds)."""
    counter = Counter(c.denoise)
    t0 = time.perf_counter()
    out = sampler(counter, grid_first * c.z.to(torch.float32), *args, **kwargs)
    return out, counter.calls, time.perf_counter() - t0


def races(name: str, kind: str, cfg: BenchConfig) -> bool:
    """Whether our sampler ``name`` gets rows on grid ``kind``: every grid but ``tuned``, which only the
    deterministic samplers among ``cfg.tuned_samplers`` get."""
    return kind != "tuned" or (name in cfg.tuned_samplers and name in DETERMINISTIC)


def our_rows(c: Case, cfg: BenchConfig, grid_dir: Path, log: Callable[[str], None]) -> list[Row]:
    """Our samplers at their default settings, on every grid and NFE budget that they fit."""
    rows, cache = [], {}
    for name in cfg.samplers:
        for kind in cfg.grids:
            if not races(name, kind, cfg):
                continue
            for budget in cfg.nfes:
                steps = steps_for_nfe(name, budget)
                end = 0.0
                if kind == "tuned":
                    grid, end, knobs = tuned_grid(
                        c.denoise,
                        name,
                        budget,
                        c.shape,
                        cfg,
                        c.model,
                        grid_dir,
                        cache,
                        log,
                        clamped=c.clamped,
                        case=c.identity or c.name,
                    )
                else:
                    grid, knobs = standard_grid(kind, steps, c.model, replace(c.sample, sampler=name), c.clamped)
                if grid is None:
                    continue
                noise_g = torch.Generator().manual_seed(cfg.eval_seed + 1000)
                noise = lambda g=noise_g: torch.randn(c.z.shape, generator=g)
                fn = functools.partial(get_sampler(name), **knobs) if knobs else get_sampler(name)
                if end:  # the tuned grid's last step stops short of 0, as generate() samples it
                    fn = lambda D, x, sig, f=fn, e=end, **kw: f(final_step(D, float(sig[-2]), e), x, sig, **kw)
                out, calls, sec = _timed(c, fn, grid[0].item(), grid, noise=noise)
                if calls > budget:
                    continue  # cannot fit the budget (e.g. Heun at NFE 2)
                extra = {"sigmas": [float(v) for v in grid], **({"sigma_end": end} if end else {})}
                rows.append(Row(c.name, "torchdiffusion", name, kind, budget, calls, *c.quality(out), sec, extra))
                log(f"[{c.name}] {name:16s} {kind:12s} nfe {calls:3d}: sw {rows[-1].sw:.4g} ({sec:.1f} s)")
    return rows


def adaptive_rows(c: Case, cfg: BenchConfig, log: Callable[[str], None]) -> list[Row]:
    """The adaptive solver at each tolerance (its NFE is what it used)."""
    rows = []
    grid = torch.tensor([c.model.sigma_max, c.model.sigma_min, 0.0], dtype=torch.float64)
    for tol in cfg.adaptive_tols:
        out, calls, sec = _timed(c, get_sampler("adaptive"), c.model.sigma_max, grid, rtol=tol, atol=tol)
        rows.append(Row(c.name, "torchdiffusion", "adaptive", f"tol={tol:g}", calls, calls, *c.quality(out), sec))
        log(f"[{c.name}] adaptive tol {tol:g}: nfe {calls}, sw {rows[-1].sw:.4g}")
    return rows


def diffusers_rows(c: Case, cfg: BenchConfig, log: Callable[[str], None]) -> list[Row]:
    """diffusers' schedulers at each timestep spacing and NFE budget, from the same starting noise."""
    rows = []
    process = getattr(c.model, "process", None) or DiscreteVP("linear", T=1000)
    for name in cfg.diffusers:
        for spacing in cfg.diffusers_spacings:
            for budget in cfg.nfes:
                counter = Counter(c.denoise)
                t0 = time.perf_counter()
                out, calls = diffusers_driver.sample_diffusers(
                    name, counter, (cfg.n, *c.shape), budget, cfg.eval_seed, process, z=c.z, spacing=spacing
                )
                sec = time.perf_counter() - t0
                rows.append(Row(c.name, "diffusers", name, spacing, budget, counter.calls, *c.quality(out), sec))
                log(f"[{c.name}] diffusers {name:26s} {spacing:8s} nfe {counter.calls:3d}: sw {rows[-1].sw:.4g}")
    return rows


# Reporting: best-of tables, markdown, JSON, plot


def best(rows: list[Row], family: str, budget: int, metric: str = "sw") -> Row | None:
    """The family's row with the lowest ``metric`` at this NFE budget (sliced Wasserstein by default)."""
    cand = [r for r in rows if r.family == family and r.budget == budget and r.sampler != "adaptive"]
    return min(cand, key=lambda r: getattr(r, metric)) if cand else None


def ranking(rows: list[Row], nfes: tuple[int, ...], exclude_tuned: bool = False) -> list[tuple[str, str, float]]:
    """(sampler, grid, geometric-mean SW over the NFE budgets), best first, for our rows with all budgets."""
    out = []
    keys = {(r.sampler, r.grid) for r in rows if r.family == "torchdiffusion" and r.sampler != "adaptive"}
    for s, gname in keys:
        if exclude_tuned and gname == "tuned":
            continue
        sws = [r.sw for r in rows if (r.sampler, r.grid) == (s, gname) and r.family == "torchdiffusion"]
        if len(sws) == len(nfes) and all(math.isfinite(v) and v > 0 for v in sws):
            out.append((s, gname, math.exp(sum(math.log(v) for v in sws) / len(sws))))
    return sorted(out, key=lambda t: t[2])


def markdown(rows: list[Row], nfes: tuple[int, ...], metric: str = "sw") -> str:
    """One table per case: a line per (family, sampler, grid), a column per NFE budget."""
    lines = []
    for case in dict.fromkeys(r.case for r in rows):
        rs = [r for r in rows if r.case == case]
        floor = next(r for r in rs if r.family == "floor")
        lines += [
            f"**{case}** - {metric} (floor {getattr(floor, metric):.4f}); measured NFE in brackets when "
            f"below the budget; in bold, each family's lowest {metric} at each budget",
            "",
            "| family | sampler | grid | " + " | ".join(f"NFE {b}" for b in nfes) + " |",
            "|---|---|---|" + "---|" * len(nfes),
        ]
        keys = list(
            dict.fromkeys((r.family, r.sampler, r.grid) for r in rs if r.family != "floor" and r.sampler != "adaptive")
        )
        bests = {b: {f: best(rs, f, b, metric) for f in ("torchdiffusion", "diffusers")} for b in nfes}  # in bold
        for fam, s, gname in keys:
            cells = []
            for b in nfes:
                r = next((r for r in rs if (r.family, r.sampler, r.grid, r.budget) == (fam, s, gname, b)), None)
                if r is None:
                    cells.append("-")
                    continue
                v = f"{getattr(r, metric):.4f}" + (f" [{r.nfe}]" if r.nfe < b else "")
                cells.append(f"**{v}**" if bests[b][fam] is r else v)
            lines.append(f"| {fam} | {s} | {gname} | " + " | ".join(cells) + " |")
        for r in rs:
            if r.sampler == "adaptive":
                lines.append(
                    f"| {r.family} | adaptive ({r.grid}) | - | NFE {r.nfe}: {getattr(r, metric):.4f} |"
                    + " |" * (len(nfes) - 1)
                )
        lines.append("")
    return "\n".join(lines)


def summary(rows: list[Row], nfes: tuple[int, ...]) -> str:
    """Best of each family per NFE, and the ranking with the recommended default."""
    lines = []
    for case in dict.fromkeys(r.case for r in rows):
        rs = [r for r in rows if r.case == case]
        lines.append(f"**{case}**: best sliced Wasserstein per NFE (ours vs diffusers)")
        lines.append("")
        lines.append("| NFE | ours | ours: sampler / grid | diffusers | diffusers: scheduler |")
        lines.append("|---|---|---|---|---|")
        for b in nfes:
            o, d = best(rs, "torchdiffusion", b), best(rs, "diffusers", b)
            lines.append(
                f"| {b} | "
                + (f"{o.sw:.4f} | {o.sampler} / {o.grid} | " if o else "- | - | ")
                + (f"{d.sw:.4f} | {d.sampler} |" if d else "- | - |")
            )
        rank = ranking(rs, nfes, exclude_tuned=True)
        b_rec = 20 if 20 in nfes else nfes[len(nfes) // 2]
        std = [r for r in rs if r.family == "torchdiffusion" and r.budget == b_rec and r.grid in GRIDS[:3]]
        if std:
            rec = min(std, key=lambda r: r.sw)
            lines.append("")
            lines.append(
                f"Recommended default (best on a standard grid at NFE {b_rec}): "
                f"**{rec.sampler} / {rec.grid}**, SW {rec.sw:.4f}."
            )
        if rank:
            lines.append("")
            lines.append(
                "Ranking on standard grids (geometric mean of SW over the NFE budgets): "
                + ", ".join(f"{i + 1}. {s}/{g} ({v:.4f})" for i, (s, g, v) in enumerate(rank[:6]))
            )
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[Row], path: str | Path, nfes: tuple[int, ...]) -> None:
    """SW against NFE, one panel per case: our best grid per sampler (solid), diffusers (dashed), the floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r.case for r in rows))
    fig, axes = plt.subplots(1, len(cases), figsize=(7 * len(cases), 5.5), squeeze=False)
    for ax, case in zip(axes[0], cases):
        rs = [r for r in rows if r.case == case]
        for fam, style in (("torchdiffusion", "-"), ("diffusers", "--")):
            for s in dict.fromkeys(r.sampler for r in rs if r.family == fam and r.sampler != "adaptive"):
                pts = []
                for b in nfes:
                    c = [r for r in rs if r.family == fam and r.sampler == s and r.budget == b]
                    if c:
                        r = min(c, key=lambda r: r.sw)
                        pts.append((r.nfe, r.sw))
                if pts:
                    ax.plot(*zip(*pts), style, marker="o" if fam == "diffusers" else ".", label=f"{fam[:5]}: {s}")
        floor = next(r for r in rs if r.family == "floor").sw
        ax.axhline(floor, color="k", lw=0.8, ls=":", label="finite-sample floor")
        ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel="sliced Wasserstein-1", title=case)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


RESULT_FILES = ("results.json", "results.md", "plot.png")  # what write_results writes in its folder
RESULT_RECORD = ("results.json", ("command", "config", "rows"))  # an earlier benchmark's folder: replaced


def write_results(rows: list[Row], cfg: BenchConfig, out_dir: str | Path, command: str = "") -> dict:
    """results.json, results.md and plot.png in ``out_dir`` (each written to a temp name, then replaced)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"command": command, "config": asdict(cfg), "rows": [asdict(r) for r in rows]}
    write_json(doc, out / "results.json", indent=1)
    md = "\n".join(
        [
            f"Command: `{command}`",
            "",
            summary(rows, cfg.nfes),
            "### Sliced Wasserstein-1",
            "",
            markdown(rows, cfg.nfes, "sw"),
            "### Energy distance",
            "",
            markdown(rows, cfg.nfes, "energy"),
            "### Wall-clock seconds per row (rough: shared CPU)",
            "",
            markdown(rows, cfg.nfes, "seconds"),
        ]
    )
    atomic_write(out / "results.md", md)
    plot(rows, out / "plot.png", cfg.nfes)
    return doc
