"""Pictures: image grids, GIFs of the denoising, scatter plots of vector data, line plots of 1-D signals.
Pillow + numpy (+ matplotlib). :func:`save_samples` picks the picture by data kind, in one place.

Images of other than 1 or 3 channels are shown by their first 3 (or first 1, for 2 channels); see
:func:`channel_note`.

All writers are atomic (:mod:`torchdiffusion.io`): a crash never leaves a half-written file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .io import atomic_write


def shown_channels(channels: int) -> int:
    """How many leading channels a picture shows: 1 or 3 as they are, the first 3 of more, the first 1 of 2."""
    return channels if channels in (1, 3) else (3 if channels > 3 else 1)


def channel_note(channels: int) -> str | None:
    """One line saying which channels a picture of ``channels``-channel images shows, or None when all."""
    shown = shown_channels(channels)
    if shown == channels:
        return None
    which = "channels 1-3 as RGB" if shown == 3 else "channel 1 as grayscale"
    return f"the pictures show {which} of the {channels} channels (the .npy output holds all of them)"


def to_uint8_hwc(images: Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> (B, H, W, C) uint8 of the :func:`shown_channels` leading channels."""
    x = images.detach().to(torch.float32).cpu().clamp(-1, 1)
    x = x[:, : shown_channels(x.shape[1])]
    x = ((x + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def make_grid(images: Tensor, nrow: int | None = None, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile (B, C, H, W) images in [-1, 1] into one (H', W', C) uint8 array, ``nrow`` images per row."""
    arr = to_uint8_hwc(images)
    B, H, W, C = arr.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(B))))
    ncol_rows = int(math.ceil(B / nrow))
    grid = np.full((ncol_rows * (H + pad) + pad, nrow * (W + pad) + pad, C), pad_value, dtype=np.uint8)
    for k in range(B):
        r, c = divmod(k, nrow)
        grid[pad + r * (H + pad) : pad + r * (H + pad) + H, pad + c * (W + pad) : pad + c * (W + pad) + W] = arr[k]
    return grid


def _pil(arr: np.ndarray, scale: int = 1):
    from PIL import Image

    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None, scale: int | None = None) -> Path:
    """Write a PNG grid of (B, C, H, W) images in [-1, 1]; ``scale`` (default: 4 for images up to 31 px high,
    3 up to 42, 2 up to 63, else 1 - no jump from 4x to 1x at 32 px) enlarges it, nearest neighbour."""
    scale = scale if scale is not None else max(1, min(4, 127 // max(1, images.shape[-2])))
    img = _pil(make_grid(images, nrow), scale)
    return atomic_write(path, lambda f: img.save(f, format="PNG"))


def save_gif(
    frames: Sequence[np.ndarray], path: str | Path, duration_ms: int = 120, scale: int = 1, hold_last_ms: int = 1500
) -> Path:
    """Write an animated GIF from (H, W, C) uint8 frames; the last frame is held a little longer."""
    imgs = [_pil(f, scale) for f in frames]
    durations = [duration_ms] * (len(imgs) - 1) + [hold_last_ms]
    return atomic_write(
        path,
        lambda f: imgs[0].save(f, format="GIF", save_all=True, append_images=imgs[1:], duration=durations, loop=0),
    )


def trajectory_frames(xs: Sequence[Tensor], x0s: Sequence[Tensor], nrow: int | None = None) -> list[np.ndarray]:
    """Frames showing, at each step, the noisy x_t grid (left) beside the predicted x0_hat grid (right).

    ``xs[i]`` and ``x0s[i]`` are (B, C, H, W) in data units; x_t is shown scaled into [-1, 1] by its own
    VP factor by the caller (see :func:`torchdiffusion.generate.trajectory`).
    """
    frames = []
    for x, x0 in zip(xs, x0s):
        left, right = make_grid(x, nrow), make_grid(x0, nrow)
        gap = np.full((left.shape[0], 8, left.shape[2]), 255, dtype=np.uint8)
        frames.append(np.concatenate([left, gap, right], axis=1))
    return frames


def save_scatter(
    points: Tensor, path: str | Path, reference: Tensor | None = None, title: str = "", lim: float | None = None
) -> Path:
    """Scatter plot of 2-D samples (N, 2), optionally over reference data, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = points.detach().cpu().to(torch.float32).numpy()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    if reference is not None:
        r = reference.detach().cpu().to(torch.float32).numpy()
        ax.scatter(r[:, 0], r[:, 1], s=2, alpha=0.3, c="tab:gray", label="data")
    ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.6, c="tab:blue", label="samples")
    if lim is not None:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    if reference is not None:
        ax.legend(loc="upper right", markerscale=4)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    return Path(path)


def save_scatter_gif(
    frames: Sequence[Tensor],
    path: str | Path,
    lim: float = 4.0,
    titles: Sequence[str] | None = None,
    duration_ms: int = 150,
) -> Path:
    """Animated scatter of 2-D points along a trajectory (one (N, 2) tensor per frame)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for k, pts in enumerate(frames):
        fig, ax = plt.subplots(figsize=(4, 4), dpi=80)
        p = pts.detach().cpu().to(torch.float32).numpy()
        ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.6)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        if titles is not None:
            ax.set_title(titles[k])
        fig.tight_layout()
        fig.canvas.draw()
        out.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
        plt.close(fig)
    return save_gif(out, path, duration_ms=duration_ms)


def save_signals(
    signals: Tensor, path: str | Path, reference: Tensor | None = None, title: str = "", max_plots: int = 16
) -> Path:
    """Line plots of (B, C, L) 1-D signals as PNG: one panel per example (at most ``max_plots``), one line per
    channel (at most 4; the title says when more exist), optionally a training example in grey behind each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = signals.detach().cpu().to(torch.float32)
    B, C, L = x.shape
    k = min(B, max_plots)
    cols = int(math.ceil(math.sqrt(k)))
    rows = int(math.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 1.6 * rows), dpi=100, squeeze=False, sharey=True)
    t = np.arange(L)
    for i, ax in enumerate(axes.flat):
        if i >= k:
            ax.axis("off")
            continue
        if reference is not None:
            for c in range(min(C, 4)):
                ax.plot(t, reference[i % len(reference), c].cpu().float().numpy(), c="0.75", lw=0.8)
        for c in range(min(C, 4)):
            ax.plot(t, x[i, c].numpy(), lw=0.9, c=f"C{c}")
        ax.tick_params(labelsize=6)
    note = f" (channels 1-4 of {C})" if C > 4 else ""
    if title or note:
        fig.suptitle(title + note, fontsize=9)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)


def signal_frames(xs: Sequence[Tensor], x0s: Sequence[Tensor], titles: Sequence[str] | None = None) -> list[np.ndarray]:
    """GIF frames of 1-D signals along a trajectory: per step, x_t (grey) and x0_hat (colour) of the first
    4 examples' first channel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = []
    lim = max(1.0, max(float(x0[:4, 0].abs().max()) for x0 in x0s)) * 1.1
    for j, (x, x0) in enumerate(zip(xs, x0s)):
        k = min(4, x.shape[0])
        fig, axes = plt.subplots(k, 1, figsize=(5, 1.2 * k), dpi=80, squeeze=False, sharex=True)
        for i in range(k):
            ax = axes[i, 0]
            ax.plot(x[i, 0].float().numpy(), c="0.7", lw=0.8)
            ax.plot(x0[i, 0].float().numpy(), c="C0", lw=1.0)
            ax.set_ylim(-lim, lim)
            ax.tick_params(labelsize=6)
        if titles is not None:
            fig.suptitle(titles[j], fontsize=8)
        fig.tight_layout()
        fig.canvas.draw()
        frames.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
        plt.close(fig)
    return frames


def save_samples(
    x: Tensor, kind: str, path: str | Path, reference: Tensor | None = None, title: str = "", schema=None
) -> Path:
    """The picture of samples ``x`` by data kind: a grid of images, line plots of signals, a scatter of the
    first two coordinates of vectors (``reference``: training data drawn behind, for signals and vectors), the
    column marginals of a table against ``reference`` rows, the text of sequences (``schema``: the table's
    TableSchema or the sequences' Vocabulary), slices and maximum-intensity projections of volumes."""
    if kind == "image":
        return save_grid(x, path)
    if kind == "signal":
        return save_signals(x, path, reference=reference, title=title)
    if kind == "vector":
        return save_scatter(x[:, :2], path, reference=None if reference is None else reference[:, :2], title=title)
    if kind == "table":
        return save_table_marginals(x, reference, schema, path, title=title)
    if kind == "sequence":
        return save_text([schema.decode(row) for row in x.round().long()], path, title=title)
    if kind == "volume":
        return save_volumes(x, path, title=title)
    raise ValueError(f"no picture for data kind {kind!r}")


def middle_slices(xs: Sequence[Tensor]) -> list[Tensor]:
    """Volumes (N, C, D, H, W): their middle slice along D, (N, C, H, W), to draw as images (the denoising GIF of
    ``sample --gif``, ``explain trajectory`` and ``ablation``); other data unchanged."""
    return [x[:, :, x.shape[2] // 2] if x.ndim == 5 else x for x in xs]


def volume_panels(v: Tensor, slices: int = 6) -> list[tuple[str, np.ndarray]]:
    """(D, H, W) -> ``slices`` evenly spaced slices along D (each H x W), then the maximum-intensity projections
    along D, H and W (H x W, D x W, D x H), as (label, array) pairs."""
    D = v.shape[0]
    ks = sorted({round(i) for i in np.linspace(0, D - 1, min(slices, D) + 2)[1:-1]}) or [D // 2]
    panels = [(f"slice {k}", v[k].numpy()) for k in ks]
    return panels + [(f"MIP {a}", v.amax(dim=i).numpy()) for i, a in enumerate("DHW")]


def save_volumes(
    volumes: Tensor, path: str | Path, title: str = "", max_rows: int = 8, slices: int = 6, row_labels=None
) -> Path:
    """(B, C, D, H, W) volumes as PNG: one row per volume (at most ``max_rows``, channel 0), its slices along D
    and its maximum-intensity projections along D, H and W, grey on the data range [-1, 1]."""
    x = volumes.detach().cpu().to(torch.float32)[:max_rows, 0]
    rows = [volume_panels(v, slices) for v in x]
    labels = None if row_labels is None else [str(r) for r in row_labels]
    img = panel_picture(rows, title=title, row_labels=labels)
    return atomic_write(path, lambda f: img.save(f, format="PNG"))


def panel_picture(
    rows: Sequence[Sequence[tuple[str, np.ndarray]]],
    title: str = "",
    row_labels: Sequence[str] | None = None,
    tile: int = 112,
):
    """A greyscale Pillow image of rows of labelled 2-D panels in [-1, 1] (:func:`volume_panels`), black to white:
    each panel upscaled by one integer factor (nearest) to about ``tile`` pixels and centred in its cell, the
    first row's labels above the columns, ``row_labels`` left of the rows, ``title`` on top. One array and a
    few text calls, so a picture of 8 rows of 9 panels costs milliseconds, not a second of matplotlib."""
    from PIL import Image, ImageDraw

    ch = max(a.shape[0] for r in rows for _, a in r)
    cw = max(a.shape[1] for r in rows for _, a in r)
    s = max(1, tile // max(ch, cw))
    ch, cw, pad = ch * s, cw * s, 8
    font = _font(13)
    line = _text_box(font, "Mg")[3] + 6
    left = pad + (max(_text_box(font, t)[2] for t in row_labels) + pad if row_labels else 0)
    top = pad + (line + pad if title else 0) + line
    cols = max(len(r) for r in rows)
    canvas = np.full((top + len(rows) * (ch + pad), left + cols * (cw + pad)), 255, dtype=np.uint8)
    for i, panels in enumerate(rows):
        for j, (_, a) in enumerate(panels):
            g = to_uint8_hwc(torch.as_tensor(a)[None, None])[0, ..., 0].repeat(s, 0).repeat(s, 1)
            y = top + i * (ch + pad) + (ch - g.shape[0]) // 2
            x = left + j * (cw + pad) + (cw - g.shape[1]) // 2
            canvas[y : y + g.shape[0], x : x + g.shape[1]] = g
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    if title:
        draw.text(((img.width - _text_box(font, title)[2]) // 2, pad), title, fill=0, font=font)
    for j, (label, _) in enumerate(rows[0]):
        draw.text((left + j * (cw + pad) + (cw - _text_box(font, label)[2]) // 2, top - line), label, 0, font)
    for i, label in enumerate(row_labels or []):
        draw.text((left - pad - _text_box(font, label)[2], top + i * (ch + pad) + (ch - line) // 2), label, 0, font)
    return img


def _text_box(font, text: str) -> tuple[int, int, int, int]:
    return tuple(int(v) for v in font.getbbox(text))


def _font(size: int):
    """Pillow's built-in font at ``size`` pixels (its fixed bitmap font where Pillow is older than 10.1)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def save_profiles(profiles: dict, path: str | Path, title: str = "") -> Path:
    """Slice profiles (evaluation/volumes.slice_profiles) of several sets, ``{name: {axis: {"mean": [...],
    "var": [...]}}}``: the mean (top) and variance (bottom) of each slice along D, H and W, one line per set."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(9, 4.2), squeeze=False)
    for k, (name, prof) in enumerate(profiles.items()):
        for j, axis in enumerate("DHW"):
            for i, stat in enumerate(("mean", "var")):
                ax = axes[i][j]
                style = {"c": "0.5", "lw": 2.5} if k == 0 else {"c": f"C{k - 1}", "lw": 1.2}
                ax.plot(prof[axis][stat], label=name, **style)
                ax.set_title(f"voxel {stat} by slice along {axis}", fontsize=8)
                ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save_figure(fig, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_table_marginals(x: Tensor, reference: Tensor | None, schema, path: str | Path, title: str = "") -> Path:
    """One panel per column (at most 16): histograms of the encoded numeric values (quantile-normal units) and
    category shares, samples over the ``reference`` rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [*schema.numeric, *schema.categorical][:16]
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.0 * rows), squeeze=False)
    for k, name in enumerate(names):
        ax = axes[k // cols][k % cols]
        _marginal_panel(ax, x[:, k], None if reference is None else reference[:, k], k, schema)
        ax.set_title(name[:28], fontsize=7)
        ax.tick_params(labelsize=6)
    for k in range(len(names), rows * cols):
        axes[k // cols][k % cols].axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save_figure(fig, path)


def _marginal_panel(ax, v: Tensor, ref: Tensor | None, k: int, schema, mask_label: str | None = None) -> None:
    """One column's marginal: a histogram (numeric) or bars (categorical; a mask share if ``mask_label``)."""
    if k < schema.num_numeric:
        bins = np.linspace(-4, 4, 33)

        def shown(t: Tensor) -> np.ndarray:  # the values in the panel's range: a density of none is 0 / 0
            a = t.numpy()
            return a[(a >= bins[0]) & (a <= bins[-1])]

        if ref is not None and shown(ref).size:
            ax.hist(shown(ref), bins=bins, density=True, color="0.75", label="real")
        if shown(v).size:
            ax.hist(shown(v), bins=bins, density=True, histtype="step", color="C0", label="samples")
        else:
            ax.text(0.5, 0.5, "all beyond ±4", transform=ax.transAxes, ha="center", va="center", fontsize=6)
        return
    cats = list(schema.categories[k - schema.num_numeric])
    K = len(cats) + (1 if mask_label else 0)
    codes = v.round().long().clamp(0, K - 1).numpy()
    share = np.bincount(codes, minlength=K) / max(1, len(codes))
    pos = np.arange(K)
    if ref is not None:
        ref_share = np.bincount(ref.round().long().clamp(0, K - 1).numpy(), minlength=K) / max(1, len(ref))
        ax.bar(pos - 0.2, ref_share, 0.4, color="0.75", label="real")
    ax.bar(pos + (0.2 if ref is not None else 0), share, 0.4, color="C0", label="samples")
    ax.set_xticks(pos, [c[:8] for c in cats] + ([mask_label] if mask_label else []), fontsize=5, rotation=30)


def save_text(lines: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Text lines drawn in a monospaced font (line breaks shown as ⏎), one row each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [ln.replace("\n", "⏎") for ln in lines[:32]]
    width = max((len(ln) for ln in shown), default=10)
    fig = plt.figure(figsize=(max(4.0, 0.11 * width), 0.25 * len(shown) + (0.5 if title else 0.2)))
    for i, ln in enumerate(shown):
        fig.text(0.01, 1 - (i + 1.2) / (len(shown) + (2 if title else 1)), ln, family="monospace", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save_figure(fig, path)


def _save_figure(fig, path: str | Path) -> Path:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return atomic_write(path, buf.getvalue())


def save_forecast(
    history: Tensor, samples: Tensor, path: str | Path, truth: Tensor | None = None, title: str = ""
) -> Path:
    """A forecast with uncertainty bands: ``history: (N, C, L0)`` in black, the S continuations ``samples:
    (N, S, C, L)`` (L > L0) as their median with 25-75 % and 5-95 % bands, ``truth: (N, C, L')`` dashed if
    known; one panel per series (first channel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    N, L0, L = history.shape[0], history.shape[-1], samples.shape[-1]
    fig, axes = plt.subplots(1, N, figsize=(3.2 * N, 2.3), dpi=100, squeeze=False, sharey=True)
    t = np.arange(L0 - 1, L)
    for i, ax in enumerate(axes[0]):
        s = samples[i, :, 0, L0 - 1 :].double()
        q = torch.quantile(s, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64), dim=0).numpy()
        ax.fill_between(t, q[0], q[4], color="C0", alpha=0.2, lw=0, label="5-95 %")
        ax.fill_between(t, q[1], q[3], color="C0", alpha=0.4, lw=0, label="25-75 %")
        ax.plot(t, q[2], c="C0", lw=1.0, label="median")
        if truth is not None:
            known = truth[i, 0].float().numpy()[:L]  # the truth over the points it has (--right may pass --cut)
            ax.plot(np.arange(len(known)), known, c="C3", lw=0.9, ls="--", label="truth")
        ax.plot(np.arange(L0), history[i, 0].float().numpy(), c="k", lw=1.0, label="history")
        ax.axvline(L0 - 0.5, c="0.6", lw=0.6)
        ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=6, loc="best")
    fig.suptitle(title or f"forecast: {samples.shape[1]} samples per series", fontsize=9)
    fig.tight_layout()
    return _save_figure(fig, path)
