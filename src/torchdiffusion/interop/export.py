"""``export(run, format, folder)``: write a run in another tool's format, read it back, and measure the difference.

Both formats are written into a temporary folder beside ``folder`` and renamed into place only after the
written files have been loaded again and compared with the run (``io.atomic_folder``): a failed or interrupted
export leaves nothing. Under the command line the folder is one artefact with a manifest beside it,
``<folder>.manifest.json`` (provenance.py: the run, its config and weights digests, every file's sha256, the
command, package versions).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..extras import missing
from ..generate import LoadedRun
from ..io import atomic_folder, first_line, routed
from ..progress import step_bar
from ..provenance import note_artefact, note_extra
from ..types import append_dims

FORMATS = ("diffusers", "onnx")


def is_export(folder: Path) -> bool:
    """Whether ``folder`` holds an export this module wrote (a diffusers folder naming our network, or an ONNX
    denoiser), which a new export may replace."""
    from .onnx import ONNX_FILE

    return (folder / ONNX_FILE).is_file() or is_diffusers_export(folder)


# The files an export folder holds: a diffusers pipeline's save_pretrained layout, or the ONNX denoiser (with the
# external-data file ONNX writes beside a model over 2 GB)
EXPORT_FILES = frozenset(
    {
        "model_index.json",
        "scheduler/scheduler_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "denoiser.onnx",
        "denoiser.onnx.data",
    }
)


def is_export_file(name: str) -> bool:
    """Whether the relative path ``name`` is one an export writes: EXPORT_FILES, or a tuned grid the ONNX export
    copies from a run sampled on one (``grids/<sampler>-nfe<N>.json``, onnx.needed_grids)."""
    parts = name.split("/")
    grid = len(parts) == 2 and parts[0] == "grids" and "-nfe" in parts[1] and parts[1].endswith(".json")
    return name in EXPORT_FILES or grid


def foreign_files(folder: Path) -> list[Path]:
    """The files under ``folder`` no export writes (a run trained there, notes beside it or inside ``unet/``):
    replacing the folder with a new export would delete them."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not is_export_file(p.relative_to(folder).as_posix()))


def is_diffusers_export(folder: Path) -> bool:
    """Whether ``folder`` is a diffusers folder whose ``model_index.json`` names our network class."""
    import json

    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(index, dict) and index.get("unet") == [
        "torchdiffusion.interop.diffusers_out",
        "TorchdiffusionUNet",
    ]


UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"  # where save_pretrained puts our network's weights


def load_diffusers_export(folder: Path, device: str | torch.device = "cpu") -> LoadedRun:
    """A diffusers folder written by :func:`export` read back as the run it came from, without diffusers:
    ``unet/config.json`` carries the run's whole config and data shape, the safetensors file our network's
    weights (under ``denoiser.``)."""
    import json

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..config import ConfigError, from_json, validate
    from ..generate import RunError
    from ..model import build_model
    from ..provenance import note_run

    try:
        unet = json.loads((folder / "unet" / "config.json").read_text())
        cfg = validate(from_json(json.dumps(unet["run_config"])))
        data_shape = tuple(int(s) for s in unet["data_shape"])
        state = load_file(str(folder / UNET_WEIGHTS), device=str(device))
        model = build_model(cfg, data_shape)
        model.load_state_dict({k.removeprefix("denoiser."): v for k, v in state.items()}, strict=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError, ConfigError) as e:
        msg = first_line(e)
        raise RunError(f"{folder} is a damaged export of ours ({msg})") from None
    model.to(device).eval().requires_grad_(False)
    info = {"data_shape": list(data_shape), "kind": "image", "source": "torchdiffusion export --format diffusers"}
    run = LoadedRun(path=folder, config=cfg, model=model, data_shape=data_shape, info=info, weights_file=UNET_WEIGHTS)
    note_run(run)
    return run


def _require(module: str, extra: str, what: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ValueError(missing(extra, what))


def probe(run: LoadedRun, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's inputs ``(c_in x, c_noise)`` at noisy data ``x = x0 + sigma n`` (x0 ~ U[-1, 1]) with ``batch``
    sigmas log-uniform over the run's whole range."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand((batch, *run.data_shape), generator=g) * 2 - 1
    lo, hi = torch.tensor([run.model.sigma_min, run.model.sigma_max], dtype=torch.float64).log()
    sigma = (lo + (hi - lo) * torch.rand(batch, generator=g, dtype=torch.float64)).exp().float()
    c = run.model.coefficients(sigma)
    x = x0 + append_dims(sigma, x0.ndim) * torch.randn(x0.shape, generator=g)
    return append_dims(c.c_in, x0.ndim) * x, c.c_noise.float()


def export(run: LoadedRun, fmt: str, folder: Path, *, progress: bool = True) -> str:
    """Export ``run`` as ``fmt`` (diffusers | onnx) to the new folder ``folder``; returns one line on the check."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "diffusers":
        _require("diffusers", "bench", "export --format diffusers")
        from . import diffusers_out as target
    else:
        _require("onnxruntime", "onnx", "export --format onnx")
        _require("onnx", "onnx", "export --format onnx")
        from . import onnx as target
    target.check_exportable(run)  # refuse before any work
    with step_bar(2, f"export {fmt}", unit="stage", show=progress) as bar, atomic_folder(folder) as tmp:
        target.write(run, tmp)
        bar.update(1)
        diff = target.max_difference(run, tmp)
        bar.update(1)
    note_artefact(routed(folder))  # under 'torchdiffusion export': one manifest beside the folder
    note_extra(format=fmt)
    return f"read back from {folder}: {target.DIFFERENCE_OF} {diff:.2e}"
