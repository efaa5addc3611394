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
from ..io import atomic_folder, routed
from ..progress import step_bar
from ..provenance import note_artefact
from ..types import append_dims

FORMATS = ("diffusers", "onnx")


def is_export(folder: Path) -> bool:
    """Whether ``folder`` holds an export this module wrote (a diffusers folder naming our network, or an ONNX
    denoiser), which a new export may replace."""
    import json

    from .onnx import ONNX_FILE

    if (folder / ONNX_FILE).is_file():
        return True
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(index, dict) and index.get("unet") == [
        "torchdiffusion.interop.diffusers_out",
        "TorchdiffusionUNet",
    ]


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
    return f"read back from {folder}: {target.DIFFERENCE_OF} {diff:.2e}"
