"""torchdiffusion export: a run as a diffusers pipeline folder or as an ONNX denoiser, checked after writing."""

from __future__ import annotations

import argparse
from pathlib import Path

from .argtypes import check_output_dir

MANIFESTS = True  # the exported folder gets <folder>.manifest.json (provenance.py)

HELP = "export a run: a diffusers pipeline folder (DDPM/DDIMPipeline) or the denoiser network as ONNX"
EXAMPLES = """examples:
  torchdiffusion export runs/demo --format diffusers --out runs/demo-diffusers
  torchdiffusion export runs/demo --format onnx --out runs/demo-onnx
The diffusers folder loads with DDPMPipeline/DDIMPipeline.from_pretrained after 'import
torchdiffusion.interop.diffusers_out'. The ONNX folder is a run whose network runs in ONNX Runtime: every command
that takes a run takes it, e.g. 'sample runs/demo-onnx --sampler ddim --steps 20'. Each export is read back and
compared with the run before it is kept (the largest difference is printed). docs/interop.md says more."""

FORMATS = ("diffusers", "onnx")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder written by 'torchdiffusion train'")
    p.add_argument("--format", required=True, choices=FORMATS, help="diffusers | onnx")
    p.add_argument("--out", required=True, help="output folder: new, empty, or an earlier export (replaced)")
    p.add_argument("--weights", default="ema", choices=["ema", "model"], help="EMA (default) or raw weights")


def check_out_folder(path: str) -> Path:
    """An output folder that does not exist yet, is empty, or holds an earlier export and nothing else (replaced
    whole); never a folder with other files in it."""
    from ..interop.export import foreign_files, is_export

    out = check_output_dir(path)
    if out.is_dir() and any(out.iterdir()):
        if not is_export(out):
            raise ValueError(f"--out {out} already exists and holds other files; choose a new folder")
        other = foreign_files(out)
        if other:
            raise ValueError(
                f"--out {out} holds an earlier export and other files ({other[0].relative_to(out)}), which replacing "
                "it would delete; choose a new folder"
            )
    return out


def run(args: argparse.Namespace) -> int:
    from ..generate import load_run
    from ..interop.export import export

    out = check_out_folder(args.out)
    run_ = load_run(args.run, weights=args.weights)
    if "onnx" in run_.info:
        from ..config import ConfigError

        raise ConfigError(
            f"{run_.path} is an ONNX export: its network runs in ONNX Runtime, with no PyTorch weights to export "
            "again; export the run folder it came from"
        )
    if run_.info.get("source") == "diffusers":
        from ..config import ConfigError

        raise ConfigError(
            f"{run_.path} is a diffusers pipeline folder already: its scheduler's own noise table and settings are "
            "not what an export rebuilds; use the folder as it is (sample, inpaint ... read it directly)"
        )
    if run_.codec is not None:
        from ..config import ConfigError

        raise ConfigError(f"{run_.path} diffuses latents; export writes a denoiser alone, without its autoencoder")
    if run_.kind in ("table", "sequence"):
        from ..config import ConfigError

        categories = len(getattr(run_.model, "categories", None) or ()) if run_.kind == "table" else 0
        if run_.kind == "sequence" or categories:
            why = "also draws discrete symbols" + (f" ({categories} categorical column(s))" if categories else "")
        else:
            why = "draws rows in encoded units that only the run's table schema maps back to its columns"
        raise ConfigError(
            f"export writes a denoiser D(x, sigma) of images, signals, volumes or points; {run_.path} holds "
            f"{run_.kind} data, whose model {why} (not exportable)"
        )
    report = export(run_, args.format, out)
    print(out)
    print(report)
    return 0
