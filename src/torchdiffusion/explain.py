"""Pictures of how diffusion works, each from the library's own pieces (no formula is re-derived here).

Every function returns the arrays it drew and, given ``path``, writes the picture atomically (PNG, or GIF/MP4 for
animations). The ``torchdiffusion explain`` command is a thin shell over them:

* :func:`forward_strip` - the forward process q(x_t | x_0) on real images, x_0 to pure noise at chosen t, for
  several variance schedules side by side (``process.DiscreteVP.q_sample``), or a run's own process
  (:class:`ForwardProcess`: its schedule and T, x_0 + sigma n, or rectified flow's interpolation);
* :func:`schedule_curves` / :func:`plot_schedules` - alpha_bar_t, SNR(t) = alpha_bar/(1 - alpha_bar) = 1/sigma^2
  (log scale) and sigma(t) for the linear, cosine and sigmoid schedules and EDM's sampling ramp;
* :func:`denoising_trajectory` - x_t and the predicted x0_hat at every step of any sampler, as GIF (+ MP4 when
  ``imageio-ffmpeg`` is installed) and a PNG strip;
* :func:`plot_loss_by_noise` - the per-noise-level training loss from ``metrics.jsonl``: the mean loss
  plateaus while the low-noise buckets keep improving;
* :func:`plot_field` - for 2-D data: the denoiser field x -> D(x, sigma) - x at several sigma with probability-flow
  trajectories, learned beside exact (the analytic mixture, or the empirical data set's exact denoiser);
* :func:`volume_forward` - the forward process of a 3-D volume, slice by slice (and its projections);
* :func:`ablation` - teaching switches: DDPM with and without its re-added noise (the "incorrect" sampler of
  the DeepLearning.AI short course "How Diffusion Models Work"), one-shot denoising D(sigma n, sigma) at the first
  level of the grid versus iterative sampling.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .analytic import GaussianMixture
from .io import atomic_path, atomic_write
from .process import DiscreteVP, add_noise, rf_sigma_to_t, sigma_to_alpha_bar, ve_to_rf, ve_to_vp
from .schedules import karras_sigmas
from .types import Denoiser, NoiseSource
from .viz import make_grid


class ExplainError(ValueError):
    """A picture that cannot be drawn from the given input (no metrics, wrong data kind...); one line."""


# Small drawing helpers (matplotlib is imported lazily, Agg backend)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_fig(fig, path: str | Path | None, dpi: int = 110) -> Path | None:
    plt = _plt()
    if path is None:
        plt.close(fig)
        return None
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=dpi))
    plt.close(fig)
    return path


def _show_grid(ax, images: Tensor, nrow: int, title: str = "") -> None:
    arr = make_grid(images, nrow=nrow, pad=1)
    ax.imshow(arr[..., 0] if arr.shape[-1] == 1 else arr, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def _plane(x: Tensor) -> np.ndarray:
    """The first two coordinates of (N, D) points; one coordinate is drawn against 0."""
    p = x.float().reshape(len(x), -1).numpy()
    return p[:, :2] if p.shape[1] >= 2 else np.concatenate([p, np.zeros_like(p)], axis=1)


def _show_points(ax, pts: Tensor, title: str = "", lim: float = 4.0, ref: Tensor | None = None) -> None:
    if ref is not None:
        r = _plane(ref)
        ax.scatter(r[:, 0], r[:, 1], s=1, c="0.75")
    p = _plane(pts)
    ax.scatter(p[:, 0], p[:, 1], s=2, c="tab:blue", alpha=0.6)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


# 1. The forward process on real images


def _check_timesteps(ts: Sequence[int], T: int) -> None:
    """Whole timesteps in [0, T - 1] (10.5 was drawn as 10, under its own label)."""
    if any(isinstance(t, bool) or not isinstance(t, numbers.Integral) for t in ts):
        raise ExplainError(f"timesteps are whole numbers, got {list(ts)}")
    if any(not 0 <= t < T for t in ts):
        raise ExplainError(f"timesteps must lie in [0, {T - 1}], got {list(ts)}")


@dataclass(frozen=True)
class ForwardProcess:
    """The forward process a strip draws, built from the library's own process (process.py), never re-derived:

    * ``kind="discrete"``: a DiscreteVP ``vp``; levels are timesteps t (0-based, < T) and
      x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) n (Ho et al. Eq. 4, ``DiscreteVP.q_sample``);
    * ``kind="ve"``: a continuous sigma process (EDM, VE); levels are sigma >= 0 and x = x_0 + sigma n
      (Karras et al. Eq. 2 sampled, ``process.add_noise``), shown in VP scale x / sqrt(1 + sigma^2)
      (``process.ve_to_vp``: the DDPM x_t of the same signal-to-noise ratio) so every column keeps a unit range;
    * ``kind="flow"``: rectified flow; levels are sigma >= 0 and x_t = (1 - t) x_0 + t n with t = sigma/(1 + sigma)
      (Liu et al. 2022 Eq. 1; ``process.ve_to_rf`` of x_0 + sigma n).
    """

    kind: str
    vp: DiscreteVP | None = None

    @property
    def name(self) -> str:
        """The schedule's name for a discrete process, else ``ve`` or ``flow``."""
        return self.vp.schedule if self.kind == "discrete" else self.kind

    @property
    def title(self) -> str:
        if self.kind == "discrete":
            return f"{self.vp.schedule} schedule, T = {self.vp.T}"
        return "rectified flow: (1 - t) x_0 + t n" if self.kind == "flow" else "x_0 + sigma n (VP scale)"

    def record(self, levels: Sequence) -> dict:
        """What a manifest keeps of the process drawn at ``levels``: for a discrete process its schedule, T, the
        timesteps and the alpha_bar_t each column was drawn with; for a continuous one the sigmas."""
        if self.kind == "discrete":
            return {
                "process": "discrete",
                "schedule": self.vp.schedule,
                "T": self.vp.T,
                "levels": list(levels),
                "alpha_bars": [float(self.vp.alpha_bars[t]) for t in levels],
            }
        return {
            "process": "rectified flow" if self.kind == "flow" else "continuous (x_0 + sigma n)",
            "levels": list(levels),
        }

    def check(self, levels: Sequence) -> None:
        """ExplainError (one line) for levels the process has not: timesteps outside [0, T - 1], sigmas < 0."""
        if self.kind == "discrete":
            _check_timesteps(levels, self.vp.T)
        elif any(not isinstance(s, numbers.Real) or not math.isfinite(s) or s < 0 for s in levels):
            raise ExplainError(f"noise levels sigma are finite numbers >= 0, got {list(levels)}")

    def sample(self, x0: Tensor, level, n: Tensor) -> Tensor:
        """x_0 noised to ``level`` with the noise ``n``, as drawn (see the class docstring)."""
        if self.kind == "discrete":
            return self.vp.q_sample(x0, torch.full((len(x0),), level, dtype=torch.long), n).float()
        x = add_noise(x0, float(level), n)
        return (ve_to_rf(x, float(level)) if self.kind == "flow" else ve_to_vp(x, float(level))).float()

    def label(self, level, sep: str = "\n") -> str:
        if self.kind == "discrete":
            return f"t={level}{sep}abar={float(self.vp.alpha_bars[level]):.2f}"
        if self.kind == "flow":
            return f"sigma={level:.3g}{sep}t={float(rf_sigma_to_t(torch.tensor(float(level)))):.2f}"
        return f"sigma={level:.3g}"


def column_ticks(width: int, K: int, pad: int = 1) -> list[float]:
    """The x positions of the centres of the K columns of a ``make_grid`` of images ``width`` pixels wide."""
    return [pad + (width + pad) * k + (width - 1) / 2 for k in range(K)]


def forward_strip(
    images: Tensor,
    ts: Sequence,
    *,
    schedules: Sequence[str] = ("linear", "cosine"),
    T: int = 1000,
    seed: int = 0,
    path: str | Path | None = None,
    processes: Sequence[ForwardProcess] | None = None,
    decode=None,
) -> dict[str, Tensor]:
    """Noise ``images: (B, C, H, W)`` in [-1, 1] to the levels ``ts`` under each process.

    ``processes`` (default: a DiscreteVP of each of ``schedules`` with T steps, levels 0-based timesteps < T): see
    :class:`ForwardProcess`. The same noise n for every process and level, so only the process differs. ``decode``
    (a latent run's ``codec.decode``) turns noised latents into images before they are drawn and returned.
    Returns ``{name: (B, len(ts), C, H, W)}`` (:attr:`ForwardProcess.name`) and draws one block per process
    (rows = images, columns = levels).
    """
    if processes is None:
        processes = [ForwardProcess("discrete", DiscreteVP(name, T)) for name in schedules]
    for proc in processes:
        proc.check(ts)
    g = torch.Generator().manual_seed(seed)
    n = torch.randn(images.shape, generator=g)
    out = {}
    for proc in processes:
        cols = [proc.sample(images, t, n) for t in ts]
        if decode is not None:
            cols = [decode(c) for c in cols]
        out[proc.name] = torch.stack(cols, 1)
    if path is not None:
        plt = _plt()
        B, K = images.shape[0], len(ts)
        fig, axes = plt.subplots(
            1, len(processes), figsize=(1.0 + 0.75 * K * len(processes), 0.9 + 0.75 * B), squeeze=False
        )
        for ax, proc in zip(axes[0], processes):
            shown = out[proc.name]
            _show_grid(ax, shown.flatten(0, 1), nrow=K, title=proc.title)
            ax.set_xticks(column_ticks(shown.shape[-1], K))  # columns are as wide as the images (not as high)
            ax.set_xticklabels([proc.label(t) for t in ts], fontsize=7)
        axes[0, 0].set_ylabel("x_t  (column: noise level)", fontsize=8)
        fig.tight_layout()
        _save_fig(fig, path)
    return out


def signal_forward(
    x: Tensor,
    ts: Sequence,
    *,
    schedule: str = "cosine",
    T: int = 1000,
    seed: int = 0,
    path=None,
    process: ForwardProcess | None = None,
) -> Tensor:
    """The forward process of 1-D signals ``x: (B, C, L)`` at each level of ``ts``, the same noise n at every
    level: ``process`` (:class:`ForwardProcess`; default the DiscreteVP of ``schedule`` with T steps, x_t =
    sqrt(abar_t) x_0 + sqrt(1 - abar_t) n, Ho et al. Eq. 4); one panel per level with the first channel of each
    series as a curve (x_0 in grey behind). Returns (B, len(ts), C, L)."""
    process = process or ForwardProcess("discrete", DiscreteVP(schedule, T))
    process.check(ts)
    n = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    cols = torch.stack([process.sample(x, t, n) for t in ts], 1)
    if path is not None:
        plt = _plt()
        width = max(1.9 * len(ts), 6.4)  # the title is read whole with two panels too
        fig, axes = plt.subplots(1, len(ts), figsize=(width, 2.0), sharey=True, squeeze=False)
        for j, t in enumerate(ts):
            ax = axes[0, j]
            for i in range(len(x)):
                ax.plot(x[i, 0].numpy(), c="0.8", lw=0.7)
                ax.plot(cols[i, j, 0].numpy(), c=f"C{i}", lw=0.8)
            ax.set_title(process.label(t, ", "), fontsize=7)
            ax.tick_params(labelsize=6)
        fig.suptitle(f"forward process of signals ({process.title}): x_t in colour, x_0 in grey", fontsize=8)
        fig.tight_layout()
        _save_fig(fig, path)
    return cols


# 2. Schedule curves


def schedule_curves(
    T: int = 1000,
    schedules: Sequence[str] = ("linear", "cosine", "sigmoid"),
    edm: tuple[float, float, float] | None = (0.002, 80.0, 7.0),
) -> dict[str, dict[str, np.ndarray]]:
    """alpha_bar, log10 SNR and sigma against normalised time u in [0, 1] (u = t/T; 1 = most noise).

    Discrete schedules come from :class:`~torchdiffusion.process.DiscreteVP`; EDM (sigma_min, sigma_max, rho) is
    its sampling ramp (Karras et al. Eq. 5) read with u = 1 at sigma_max, mapped to alpha_bar = 1/(1 + sigma^2).
    SNR = alpha_bar / (1 - alpha_bar) = 1/sigma^2.
    """
    curves = {}
    for name in schedules:
        vp = DiscreteVP(name, T)
        sig = vp.sigmas
        curves[name] = {
            "u": (torch.arange(T, dtype=torch.float64) + 1).numpy() / T,
            "alpha_bar": vp.alpha_bars.numpy(),
            "sigma": sig.numpy(),
            "log10_snr": (-2 * sig.log10()).numpy(),
        }
    if edm is not None:
        s_min, s_max, rho = edm
        sig = karras_sigmas(T, s_min, s_max, rho)[:-1].flip(0)  # increasing with u
        curves["edm"] = {
            "u": (torch.arange(T, dtype=torch.float64) + 1).numpy() / T,
            "alpha_bar": sigma_to_alpha_bar(sig).numpy(),
            "sigma": sig.numpy(),
            "log10_snr": (-2 * sig.log10()).numpy(),
        }
    return curves


def plot_schedules(
    path: str | Path | None = None,
    T: int = 1000,
    schedules: Sequence[str] = ("linear", "cosine", "sigmoid"),
    edm: bool = True,
) -> dict:
    """Three panels: alpha_bar(u), SNR(u) (log scale), sigma(u) (log scale) for each schedule."""
    curves = schedule_curves(T, schedules, (0.002, 80.0, 7.0) if edm else None)
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for name, c in curves.items():
        label = "EDM (sampling ramp, rho = 7)" if name == "edm" else name
        axes[0].plot(c["u"], c["alpha_bar"], label=label)
        axes[1].plot(c["u"], 10 ** c["log10_snr"], label=label)
        axes[2].plot(c["u"], c["sigma"], label=label)
    axes[0].set_title("signal kept: alpha_bar_t")
    axes[1].set_title("SNR(t) = alpha_bar / (1 - alpha_bar)")
    axes[1].set_yscale("log")
    axes[2].set_title("VE noise level\nsigma_t = sqrt((1 - alpha_bar) / alpha_bar)")  # two lines: fits its panel
    axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("t / T  (1 = pure noise)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    _save_fig(fig, path)
    return curves


# 3. The denoising trajectory


def denoising_trajectory(
    model,
    sample,
    data_shape: Sequence[int],
    seeds: Sequence[int],
    *,
    gif: str | Path | None = None,
    png: str | Path | None = None,
    frames: int = 30,
    strip: int = 8,
    mp4: bool = True,
    callback=None,
    codec=None,
    grid_dir: str | Path | None = None,
) -> dict:
    """Sample ``seeds`` with ``sample`` (any sampler) recording x_t (VP scale) and x0_hat at every step
    (``grid_dir``: the run folder's ``grids/``, for its tuned grids, e.g. a distilled student's).

    Writes the GIF (left x_t, right x0_hat; + an MP4 beside it when imageio-ffmpeg is installed) and a PNG strip
    of ``strip`` evenly spaced steps for the first few images (rows: x_t, x0_hat). Returns the recorded lists,
    decoded to images for a latent run (its ``codec``).
    """
    from .generate import trajectory
    from .viz import middle_slices, save_gif, trajectory_frames

    x, xs, x0s, sig, sig0 = trajectory(
        model, seeds, sample, data_shape, frames=frames, callback=callback, codec=codec, grid_dir=grid_dir
    )
    out = {"x": x, "xs": xs, "x0s": x0s, "sigmas": sig, "x0_sigmas": sig0, "files": []}
    both = [f"x_t at sigma = {s:.3g}, x0_hat = D(x, {s0:.3g})" for s, s0 in zip(sig, sig0)]
    image, signal = len(data_shape) in (3, 4), len(data_shape) == 2
    xs, x0s = middle_slices(xs), middle_slices(x0s)  # a volume's middle slice, drawn as an image
    if gif is not None:
        if signal:
            from .viz import signal_frames

            out["files"].append(save_gif(signal_frames(xs, x0s, titles=both), gif))
        elif image:
            nrow = max(1, int(math.sqrt(len(seeds))))
            fr = trajectory_frames(xs, x0s, nrow=nrow)
            out["files"].append(save_gif(fr, gif, scale=3))
            if mp4:
                p = _save_mp4(fr, Path(gif).with_suffix(".mp4"))
                if p is not None:
                    out["files"].append(p)
        else:
            from .viz import save_scatter_gif

            out["files"].append(save_scatter_gif(xs, gif, titles=[f"sigma = {s:.3g}" for s in sig]))
    if png is not None:
        keep = sorted(set(np.linspace(0, len(xs) - 1, min(strip, len(xs))).round().astype(int).tolist()))
        plt = _plt()
        if image:
            k = min(len(seeds), 4)
            fig, axes = plt.subplots(2, len(keep), figsize=(1.3 * len(keep), 0.8 + 1.25 * k * 2 / 2), squeeze=False)
            for j, i in enumerate(keep):
                _show_grid(axes[0, j], xs[i][:k], nrow=1, title=f"sigma={sig[i]:.3g}")
                _show_grid(axes[1, j], x0s[i][:k], nrow=1)
                axes[1, j].set_xlabel(f"D(x, {sig0[i]:.3g})", fontsize=8)  # denoised where the step began
            axes[0, 0].set_ylabel("x_t (VP scale)")
            axes[1, 0].set_ylabel("predicted x0_hat")
        elif signal:
            fig, axes = plt.subplots(1, len(keep), figsize=(1.9 * len(keep), 2.0), sharey=True, squeeze=False)
            for j, i in enumerate(keep):
                for k in range(min(len(seeds), 3)):
                    axes[0, j].plot(xs[i][k, 0].numpy(), c="0.75", lw=0.6)
                    axes[0, j].plot(x0s[i][k, 0].numpy(), c=f"C{k}", lw=0.9)
                axes[0, j].set_title(f"sigma={sig[i]:.3g}\nx0_hat: D(x, {sig0[i]:.3g})", fontsize=7)
                axes[0, j].tick_params(labelsize=6)
            axes[0, 0].set_ylabel("x_t grey, x0_hat colour", fontsize=7)
        else:
            fig, axes = plt.subplots(1, len(keep), figsize=(2.2 * len(keep), 2.5), squeeze=False)
            for j, i in enumerate(keep):
                _show_points(axes[0, j], xs[i], title=f"sigma={sig[i]:.3g}")
        fig.suptitle(f"{sample.sampler}, {sample.steps} steps ({sample.grid} grid)", fontsize=10)
        fig.tight_layout()
        out["files"].append(_save_fig(fig, png))
    return out


def _save_mp4(frames: Sequence[np.ndarray], path: Path, fps: int = 8) -> Path | None:
    """MP4 via imageio + imageio-ffmpeg when both are installed; None otherwise (the GIF is always written)."""
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        import sys

        from .extras import missing

        print(missing("video", f"{path.name} not written (the GIF is)"), file=sys.stderr)
        return None
    # H.264 wants even sizes: pad by one white row/column where needed; scale x3 like the GIF.
    with (
        atomic_path(path) as tmp,
        imageio.get_writer(tmp, fps=fps, format="FFMPEG", codec="libx264", quality=8, macro_block_size=1) as w,
    ):
        for f in frames:
            f = np.repeat(np.repeat(f, 3, 0), 3, 1)
            f = np.pad(f, ((0, f.shape[0] % 2), (0, f.shape[1] % 2), (0, 0)), constant_values=255)
            w.append_data(f if f.shape[-1] == 3 else np.repeat(f, 3, -1))
    return path


# 4. Loss by noise level


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_loss_by_noise(metrics: str | Path) -> dict:
    """Read ``metrics.jsonl`` (a run folder or the file): images seen, mean loss, per-bucket loss (W, K), edges."""
    p = Path(metrics)
    if p.is_dir():
        p = p / "metrics.jsonl"
    if not p.is_file():
        raise ExplainError(f"{p} does not exist (train a run first)")
    from .provenance import note_input

    note_input(p)  # a command's manifest records the files it read (provenance.py)
    seen, loss, rows, unit, edges = [], [], [], None, None
    try:
        text = p.read_text()
    except UnicodeDecodeError:
        raise ExplainError(f"{p} is not a training run's metrics.jsonl (not text)") from None
    for k, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue  # a line being written
        if not isinstance(rec, dict):
            raise ExplainError(f"{p} is not a training run's metrics.jsonl (line {k} is not a JSON object)")
        if "loss_by_sigma_edges" in rec:
            unit, edges = rec.get("loss_by_sigma_unit"), rec["loss_by_sigma_edges"]
        if rec.get("loss") is None or "loss_by_sigma" not in rec:
            continue
        row = rec["loss_by_sigma"]
        numbers = isinstance(row, list) and all(v is None or _is_number(v) for v in row)
        if not (numbers and _is_number(rec.get("images_seen")) and _is_number(rec["loss"])) or (
            rows and len(row) != len(rows[0])
        ):
            raise ExplainError(f"{p} is not a training run's metrics.jsonl (line {k}: loss records of another form)")
        seen.append(rec["images_seen"])
        loss.append(rec["loss"])
        rows.append([np.nan if v is None else v for v in row])
    if not rows:
        raise ExplainError(f"{p} has no loss_by_sigma records yet")
    return {
        "images_seen": np.asarray(seen),
        "loss": np.asarray(loss),
        "by_noise": np.asarray(rows, dtype=float),
        "unit": unit or "bucket",
        "edges": edges,
    }


def plot_loss_by_noise(metrics: str | Path, path: str | Path | None = None) -> dict:
    """Left: the mean training loss against images seen (it plateaus early). Right: the loss of each noise bucket
    divided by its own first value (log scale) - the low-noise buckets keep improving long after the mean looks
    flat, because the mean is dominated by the high-loss buckets."""
    d = read_loss_by_noise(metrics)
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    axes[0].plot(d["images_seen"], d["loss"], color="k")
    axes[0].set_title("mean training loss")
    axes[0].set_xlabel("images seen")
    axes[0].grid(alpha=0.3)
    K = d["by_noise"].shape[1]
    cmap = plt.get_cmap("viridis")
    first = np.array([col[np.isfinite(col)][0] if np.isfinite(col).any() else np.nan for col in d["by_noise"].T])
    first[~(first > 0)] = np.nan  # a bucket whose first loss is 0 (or negative) has no ratio on a log scale: not drawn
    for k in range(K):
        if d["edges"] is not None:
            lo, hi = d["edges"][k], d["edges"][k + 1]
            label = f"{d['unit']} in [{lo:.3g}, {hi:.3g})"
        else:
            label = f"bucket {k}"
        axes[1].plot(d["images_seen"], d["by_noise"][:, k] / first[k], color=cmap(k / max(K - 1, 1)), label=label)
    axes[1].set_yscale("log")
    axes[1].set_title("loss per noise level / its first value (low noise = dark)")
    axes[1].set_xlabel("images seen")
    axes[1].grid(alpha=0.3)
    axes[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    _save_fig(fig, path)
    return d


# 5. The denoiser / score field of 2-D data


def exact_denoiser_for(points: Tensor, toy: str | None = None, max_points: int = 2000) -> tuple[Denoiser, str]:
    """The exact denoiser to compare with: the analytic eight-Gaussian mixture for ``toy="8gaussians"``, else
    the empirical distribution of ``points: (N, 2)`` (a mixture of near-deltas, the ideal denoiser of the
    training set itself)."""
    if toy == "8gaussians":
        from .analytic import eight_gaussians

        return eight_gaussians().denoise, "exact (8 Gaussians)"
    pts = points[:max_points].to(torch.float64)
    mix = GaussianMixture(pts, torch.full((len(pts),), 1e-6, dtype=torch.float64))
    return mix.denoise, f"exact ({len(pts)} data pts)"


FIELD_PATHS = 24  # the probability-flow (Heun) paths of the field picture, from seeds 0..FIELD_PATHS - 1


def field_data(
    denoise: Denoiser,
    sigma_levels: Sequence[float],
    *,
    lim: float = 4.0,
    grid: int = 17,
    traj_sigmas: Tensor | None = None,
    n_traj: int = FIELD_PATHS,
    seed: int = 0,
    callback=None,
) -> dict:
    """Arrows D(x, sigma) - x on a ``grid x grid`` lattice per sigma, and probability-flow (Heun) paths
    (``callback``: the Heun sampler's StepInfo callback, e.g. a progress bar)."""
    from .samplers import sample_heun

    g = torch.linspace(-lim, lim, grid, dtype=torch.float64)
    xy = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    arrows = []
    with torch.no_grad():
        for s in sigma_levels:
            d = denoise(xy.float(), torch.full((len(xy),), float(s))).to(torch.float64)
            arrows.append(d - xy)
    paths = None
    if traj_sigmas is not None:
        ns = NoiseSource(range(seed, seed + n_traj), (2,))
        steps = [ns.initial() * float(traj_sigmas[0])]
        sample_heun(
            lambda x, s: denoise(x, s).float(),
            steps[0],
            traj_sigmas,
            callback=lambda info: (steps.append(info.x.float()), callback and callback(info)),
        )
        paths = torch.stack(steps, 1)  # (n_traj, n_steps + 1, 2)
    return {"xy": xy, "arrows": arrows, "paths": paths}


def plot_field(
    learned: Denoiser,
    exact: Denoiser | None,
    sigma_levels: Sequence[float],
    traj_sigmas: Tensor,
    *,
    data: Tensor | None = None,
    exact_label: str = "exact",
    lim: float = 4.0,
    path: str | Path | None = None,
    callback=None,
) -> dict:
    """Rows: learned, exact. Columns: the field D(x, sigma) - x at each sigma (arrows point where the denoiser
    would move x; the score is that divided by sigma^2), then probability-flow trajectories over the data."""
    rows = [("learned", learned)] + ([(exact_label, exact)] if exact is not None else [])
    res = {name: field_data(D, sigma_levels, lim=lim, traj_sigmas=traj_sigmas, callback=callback) for name, D in rows}
    plt = _plt()
    ncol = len(sigma_levels) + 1
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.6 * ncol, 2.7 * len(rows)), squeeze=False)
    for r, (name, _) in enumerate(rows):
        d = res[name]
        xy = d["xy"].numpy()
        for c, s in enumerate(sigma_levels):
            ax = axes[r, c]
            if data is not None:
                ax.scatter(data[:, 0], data[:, 1], s=0.5, c="0.8")
            a = d["arrows"][c].numpy()
            ax.quiver(xy[:, 0], xy[:, 1], a[:, 0], a[:, 1], angles="xy", color="tab:red", width=0.004)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}: D(x, {s:g}) - x", fontsize=8)
        ax = axes[r, -1]
        if data is not None:
            ax.scatter(data[:, 0], data[:, 1], s=0.5, c="0.8")
        for p in d["paths"].numpy():
            ax.plot(p[:, 0], p[:, 1], lw=0.8, color="tab:blue", alpha=0.8)
            ax.plot(p[-1, 0], p[-1, 1], "o", ms=2, color="k")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{name}: probability-flow paths", fontsize=8)
    fig.tight_layout()
    _save_fig(fig, path)
    return res


# 6. Teaching ablations


def ablation(
    model,
    sample,
    data_shape: Sequence[int],
    seeds: Sequence[int],
    *,
    ddpm_steps: int | None = 100,
    path: str | Path | None = None,
    callback=None,
    codec=None,
    grid_dir: str | Path | None = None,
) -> dict[str, Tensor]:
    """The same seeds sampled four ways: DDPM ancestral (correct), DDPM without the re-added noise z (the "incorrect"
    sampler of the course "How Diffusion Models Work"), one-shot denoising x0_hat = D(sigma n, sigma) at the DDPM grid's
    first level sigma (named in the panel), and the run's own sampler (iterative). Returns ``{label: (N,
    *data_shape)}``, decoded images ``(N, *codec.image_shape)`` for a latent run. All four see the conditioning
    ``generate`` gives each seed (a class-conditional model: the class ``sample.labels`` draws from it) and its
    guidance. The run's own sampler takes its tuned grid from ``grid_dir`` where it has one; the DDPM panels, on a grid
    of their own step count, take the default grid in place of ``grid = "tuned"`` (fitted for the run's sampler only).
    ``ddpm_steps=None``: the DDPM panels walk the run's own sampler's grid instead, its ``sample.steps`` steps (a
    distilled student, whose denoiser is trained for those levels and that many evaluations only).
    """
    from .cond import with_seed_labels
    from .config import SamplerSettings
    from .generate import clamped, clamps_x0, generate, guidance_of, label_classes, make_grid_sigmas, sampling_plan
    from .guidance import guided_denoiser
    from .latent import as_pixels
    from .samplers import sample_ddpm
    from .viz import middle_slices

    sample = replace(sample, autoguidance=1.0)  # four samplers on one denoiser: the model alone, no guide
    grid = "auto" if sample.grid == "tuned" else sample.grid
    if grid == "uniform_t" and model.process is None:
        grid = "karras"
    plan = None
    if ddpm_steps is None:  # the run's own grid (a student's tuned one), walked by DDPM with its defaults
        own, _, record = sampling_plan(model, sample, clamped=clamps_x0(sample, data_shape, codec), grid_dir=grid_dir)
        ddpm_steps, record = len(own) - 1, {k: v for k, v in record.items() if k != "settings"}
        ddpm = replace(sample, sampler="ddpm", steps=ddpm_steps, settings=SamplerSettings(), batch_size=len(seeds))
        plan = (own, {}, record)
    else:
        ddpm = replace(sample, sampler="ddpm", steps=ddpm_steps, grid=grid, batch_size=len(seeds))
    ddpm_label = f"DDPM, {ddpm_steps} steps (noise re-added)"
    out = {
        ddpm_label: generate(
            model, seeds, ddpm, data_shape, callback=callback, codec=codec, grid_dir=grid_dir, plan=plan
        )
    }
    clip = clamps_x0(ddpm, data_shape, codec)
    # the grid of the first picture
    sigmas = plan[0] if plan is not None else make_grid_sigmas(model, ddpm, clamped=clip, grid_dir=grid_dir)
    image = len(data_shape) in (3, 4)  # a volume: its middle slice, drawn as an image
    with torch.no_grad():
        ns = NoiseSource(seeds, data_shape)
        cond = with_seed_labels(None, [int(s) for s in seeds], label_classes(model), sample.labels)
        D = guided_denoiser(model, cond, **guidance_of(sample))
        if clip:
            D = clamped(D)
        z = ns.initial()
        x = sample_ddpm(D, z * float(sigmas[0]), sigmas, add_noise=False, callback=callback)
        out["DDPM without re-added noise"] = as_pixels(x.float(), codec)
        s0 = torch.full((len(seeds),), float(sigmas[0]))
        # at the grid's first level, which the panel names: the run's sigma_max, or a grid's cap (Karras: 80)
        label = f"one shot: D(sigma n, sigma), sigma = {float(sigmas[0]):.4g}"
        out[label] = as_pixels(D(z * float(sigmas[0]), s0).float(), codec)
    out[f"{sample.sampler}, {sample.steps} steps (iterative)"] = generate(
        model,
        seeds,
        replace(sample, batch_size=len(seeds)),
        data_shape,
        callback=callback,
        codec=codec,
        grid_dir=grid_dir,
    )
    if path is not None:
        plt = _plt()
        fig, axes = plt.subplots(1, len(out), figsize=(3.0 * len(out), 3.4), squeeze=False)
        nrow = max(1, int(math.sqrt(len(seeds))))
        for ax, (label, x) in zip(axes[0], out.items()):
            if image:
                _show_grid(ax, middle_slices([x])[0].clamp(-1, 1), nrow=nrow, title=label)
            elif len(data_shape) == 2:  # signals: the first few series, channel 0
                for k in range(min(len(x), 4)):
                    ax.plot(x[k, 0].float().numpy(), lw=0.8)
                ax.set_title(label, fontsize=9)
                ax.tick_params(labelsize=6)
            else:
                _show_points(ax, x, title=label)
        fig.tight_layout()
        _save_fig(fig, path)
    return out


# 7. Shortcuts: curved teacher paths, straightened reflow paths, consistency jumps


def plot_shortcuts(toy, path: str | Path | None = None, *, n: int = 24, seed: int = 0, numbers: dict | None = None):
    """One figure, the same noises in three panels, in rectified flow's coordinates x_t = x / (1 + sigma): the exact
    teacher's probability-flow paths (curved), the reflowed student's (straighter), and the consistency student's
    one-evaluation jumps x_t0 -> f(x, sigma_max) (shortcuts/toy.py). ``numbers``: straightness to print."""
    from .shortcuts.straightness import rf_path
    from .shortcuts.toy import float64_denoiser

    noise = NoiseSource(range(seed, seed + n), (2,)).initial().double()
    data = toy.teacher.mixture.sample(2000, torch.Generator().manual_seed(seed)).numpy()
    with torch.no_grad():
        paths = {
            "teacher (exact 8 Gaussians)": rf_path(toy.teacher.denoiser(), noise, toy.sigma_max, 48)[1],
            "reflowed student": rf_path(float64_denoiser(toy.reflow), noise, toy.sigma_max, 48)[1],
        }
        x = (noise * toy.sigma_max).float()
        jump = toy.consistency(x, torch.full((n,), toy.sigma_max))
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 4.2))
    start = paths["teacher (exact 8 Gaussians)"][0].numpy()
    for ax, (name, p) in zip(axes, paths.items()):
        ax.scatter(data[:, 0], data[:, 1], s=0.5, c="0.8")
        for k in range(n):
            ax.plot(p[:, k, 0].numpy(), p[:, k, 1].numpy(), lw=1.4 if k == 0 else 0.7, color="tab:blue" if k else "k")
        ax.plot(p[0, :, 0].numpy(), p[0, :, 1].numpy(), ".", ms=3, color="0.4")  # the noises
        ax.plot(p[-1, :, 0].numpy(), p[-1, :, 1].numpy(), "o", ms=2.5, color="k")  # the samples
        key = "teacher" if name.startswith("teacher") else "reflow"
        S = ""
        if numbers and key in numbers:
            S = f"\nS = {numbers[key]['S']:.3f}, length/chord = {numbers[key]['length_ratio']:.2f}"
        ax.set_title(f"{name}{S}", fontsize=9)
    ax = axes[2]
    ax.scatter(data[:, 0], data[:, 1], s=0.5, c="0.8")
    j = jump.numpy()
    for k in range(n):
        ax.annotate(
            "", j[k], start[k], arrowprops={"arrowstyle": "->", "color": "k" if k == 0 else "tab:red", "lw": 0.7}
        )
    ax.plot(start[:, 0], start[:, 1], ".", ms=3, color="0.4")
    ax.plot(j[:, 0], j[:, 1], "o", ms=2.5, color="k")
    ax.set_title("consistency student: one evaluation\nx(sigma_max) -> f(x, sigma_max)", fontsize=9)
    for ax in axes:
        ax.set_xlim(-3.5, 3.5)
        ax.set_ylim(-3.5, 3.5)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return _save_fig(fig, path)


# Tables and sequences: the forward corruption of the discrete kinds


def table_forward(
    x: Tensor,
    schema,
    sigmas: Sequence[float],
    *,
    columns: int = 3,
    seed: int = 0,
    reverse: Sequence[tuple[float, Tensor]] | None = None,
    path=None,
):
    """The forward process of a table's marginals (tabular.py): for a few numeric and categorical columns
    (rows), their marginal at each sigma (columns): z + sigma n for numeric ones (a histogram in VP scale,
    x / sqrt(1 + sigma^2), so every panel has unit-ish range), and for categorical ones the category shares
    with the mask share 1 - alpha(sigma) = sigma^2 / (1 + sigma^2) beside them.

    ``reverse`` (tabular.reverse_states: a run's sampler seen at the grid level nearest each sigma) adds a row per
    column below: the model's marginal there (blue) over the forward one (grey) - the same when the model is exact.
    """
    from .categorical import alpha_of_sigma, mask_cells, uniform_from_normal
    from .viz import _marginal_panel

    plt = _plt()
    picked = list(range(min(columns, schema.num_numeric)))
    picked += [schema.num_numeric + j for j in range(min(columns, len(schema.categorical)))]
    g = torch.Generator().manual_seed(seed)
    blocks = 2 if reverse is not None else 1
    rows = blocks * len(picked)
    width = max(2.0 * len(sigmas), 7.6)  # the two-line title is read whole with three levels too
    fig, axes = plt.subplots(rows, len(sigmas), figsize=(width, 1.7 * rows), squeeze=False)
    names = [*schema.numeric, *schema.categorical]
    for i, k in enumerate(picked):
        for j, s in enumerate(sigmas):
            n = torch.randn(len(x), generator=g)
            if k < schema.num_numeric:
                v = (x[:, k] + s * n) / math.sqrt(1 + s**2)
                label = None
            else:
                K = schema.num_categories[k - schema.num_numeric]
                keep = alpha_of_sigma(torch.tensor(float(s)))
                v, label = mask_cells(x[:, k].round().long(), keep, uniform_from_normal(n), K).float(), "mask"
            panels = [(axes[i][j], v, None, f"sigma = {s:g}")]
            if reverse is not None:
                s_model, states = reverse[j]
                mine = states[:, k] / math.sqrt(1 + s_model**2) if k < schema.num_numeric else states[:, k]
                panels.append((axes[len(picked) + i][j], mine, v, f"model at sigma = {s_model:.3g}"))
            for b, (ax, values, ref, title) in enumerate(panels):
                _marginal_panel(ax, values, ref, k, schema, mask_label=label)
                ax.tick_params(labelsize=5)
                if i == 0:
                    ax.set_title(title, fontsize=8)
                if j == 0:
                    ax.set_ylabel(("" if b == 0 else "model: ") + names[k][:16], fontsize=7)
    title = "forward process of a table: numeric columns + Gaussian noise, categorical cells masked"
    if reverse is not None:
        title += "\nbelow: the model's reverse process at the nearest level of its grid (blue) over the forward (grey)"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save_fig(fig, path)


def sequence_forward(model, vocab, x0: Tensor, ts: Sequence[float], *, steps: int = 8, seed: int = 0, path=None):
    """Masked diffusion as text: one sequence noised at times ``ts`` (top block; '_' is the mask), then a
    sample from the model being unmasked in ``steps`` steps (bottom block, one line per step)."""
    from .sequences import sample_sequences

    g = torch.Generator().manual_seed(seed)
    x0 = x0.round().long()[None]
    lines = []
    for t in ts:
        x_t = model.corrupt(x0, torch.tensor([float(t)]), torch.randn(x0.shape, generator=g))
        lines.append((f"t={t:.2f}", x_t[0]))
    frames: list[Tensor] = []
    sample_sequences(model, [seed], steps, callback=lambda i, x: frames.append(x[0].clone()))
    lines += [(f"step {i + 1}", f) for i, f in enumerate(frames)]
    mask = "_" if "_" not in vocab.symbols else "\u2588"

    def show(ids: Tensor) -> str:
        return "".join(mask if k >= len(vocab) else vocab.symbols[k] for k in ids.tolist()).replace("\n", "\u23ce")

    plt = _plt()
    fig = plt.figure(figsize=(0.11 * x0.shape[1] + 1.2, 0.26 * (len(lines) + 3)))
    fig.text(0.01, 0.98, "forward: a held-out sequence masked at time t", fontsize=8, va="top")
    for i, (label, ids) in enumerate(lines):
        y = 0.98 - (i + 1 + (i >= len(ts))) / (len(lines) + 3)
        if i == len(ts):
            fig.text(0.01, y + 1 / (len(lines) + 3), f"reverse: a sample unmasked in {steps} steps", fontsize=8)
        fig.text(0.01, y, f"{label:>8} {show(ids)}", family="monospace", fontsize=8, va="top")
    return _save_fig(fig, path)


# Volumes: the forward process slice by slice


def volume_forward(x: Tensor, sigmas: Sequence[float], *, slices: int = 6, seed: int = 0, path=None):
    """One volume ``x`` (C, D, H, W) under the forward process: a row per noise level sigma, its slices along D
    and maximum-intensity projections (viz.volume_panels) of x_sigma = x + sigma n shown in VP scale,
    x / sqrt(1 + sigma^2) (the DDPM x_t of the same signal-to-noise ratio), so every row keeps a unit-ish range.
    A maximum over a line of D noisy voxels grows with the noise (about sigma sqrt(2 ln D)), so the projections
    whiten and lose the shape at sigma ~ 1, a little before the central slices do."""
    from .viz import volume_panels

    plt = _plt()
    g = torch.Generator().manual_seed(seed)
    n = torch.randn(x.shape, generator=g)
    rows = [volume_panels(((x + s * n) / math.sqrt(1 + s**2))[0].float(), slices) for s in sigmas]
    cols = len(rows[0])
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.1 * cols, 1.1 * len(rows) + 0.4), squeeze=False)
    for i, panels in enumerate(rows):
        for j, (label, a) in enumerate(panels):
            ax = axes[i][j]
            ax.imshow(a, cmap="gray", vmin=-1.5, vmax=1.5, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(label, fontsize=6)
            if j == 0:
                ax.set_ylabel(f"sigma={sigmas[i]:g}", fontsize=6)
    fig.suptitle("forward process of a volume: x + sigma n (VP scale), slices along D and projections", fontsize=8)
    fig.tight_layout()
    return _save_fig(fig, path)
