"""The denoiser network as an ONNX graph, and ONNX Runtime running it under any of our samplers.

    export(load_run("runs/demo"), "onnx", Path("runs/demo-onnx"))  # runs/demo-onnx/denoiser.onnx
    run = load_run("runs/demo-onnx")                               # or load_onnx(...): a LoadedRun
    x = generate(run.model, seeds=range(16), sample=run.config.sample, data_shape=run.data_shape)

What is exported is the raw network ``F(x_in, c_noise) -> (B, *data_shape)`` with a dynamic batch dimension
(inputs ``x_in`` float32 ``(B, *data_shape)`` and ``c_noise`` float32 ``(B,)``; a class-conditional run also takes
``class_labels`` int64 ``(B,)``, 0..K-1, and K for the learned null class), nothing else: the
preconditioning ``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise(sigma))`` (``precond.py``), the sigma grid and
the sampler stay ours, so every sampler, guidance-free wrapper and grid works around the exported graph unchanged.
The run's whole config.json and its data shape travel inside the file (ONNX metadata ``torchdiffusion.config``,
``torchdiffusion.data_shape``, ``torchdiffusion.kind``): one ``.onnx`` file is a complete model. A run sampled on
tuned grids (``sample.grid = "tuned"``: a distilled student) has them copied beside it, ``grids/<sampler>-nfe<N>.json``,
so that the export folder samples as the run does.

Unconditional and class-conditional runs are exported (the null class is one more label, so classifier-free guidance
and ``sample.labels`` work around the graph); conditioning by context vectors or text is not (their null embeddings
and the text encoder would have to be in the graph), and such a run is refused in one line.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..cond import drop_mask
from ..config import ConfigError, from_json, to_json, validate, without_guide
from ..extras import missing
from ..generate import LoadedRun, RunError
from ..io import atomic_path, first_line
from ..model import wrap_net
from ..nets.layers import class_rows
from ..provenance import note_input, note_run

ONNX_FILE = "denoiser.onnx"  # the file in an export folder
OPSET = 18  # ONNX opset of the export (GroupNorm with per-channel affine, LayerNorm, attention ops)
META_CONFIG, META_SHAPE, META_KIND = "torchdiffusion.config", "torchdiffusion.data_shape", "torchdiffusion.kind"


class _Unconditional(nn.Module):
    """``F(x_in, c_noise)``: the network with ``cond = None``, the signature the graph is traced with."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x_in: Tensor, c_noise: Tensor) -> Tensor:
        return self.net(x_in, c_noise, None)


class _ClassConditional(nn.Module):
    """``F(x_in, c_noise, class_labels)``: labels 0..K-1 select a class, K the learned null class (``drop``)."""

    def __init__(self, net: nn.Module, num_classes: int):
        super().__init__()
        self.net = net
        self.num_classes = num_classes

    def forward(self, x_in: Tensor, c_noise: Tensor, labels: Tensor) -> Tensor:
        drop = labels == self.num_classes
        return self.net(x_in, c_noise, {"class": torch.where(drop, 0, labels), "drop": drop})


def check_exportable(run: LoadedRun) -> None:
    m = run.config.model
    if m.context_dim != 0 or m.text_dim > 0:
        raise ConfigError(
            f"{run.path} is a context- or text-conditioned run; the ONNX export covers unconditional and "
            "class-conditional runs"
        )


def write(run: LoadedRun, folder: Path, *, batch: int = 2) -> Path:
    """Write ``folder/denoiser.onnx`` (atomically): the run's network with a dynamic batch, plus its config."""
    import onnx

    check_exportable(run)
    K = run.config.model.num_classes
    net = (_ClassConditional(run.model.net, K) if K > 0 else _Unconditional(run.model.net)).eval()
    x = torch.randn(batch, *run.data_shape)
    c_noise = run.model.c_noise(torch.linspace(run.model.sigma_max, run.model.sigma_min, batch))
    inputs, names = (x, c_noise.float()), ["x_in", "c_noise"]
    if K > 0:  # traced with a real class and the null class, so both paths of torch.where are in the graph
        inputs, names = (*inputs, torch.arange(batch) % (K + 1)), [*names, "class_labels"]
    path = folder / ONNX_FILE
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        # The TorchScript-based exporter: seconds where torch.export-based one (dynamo=True) takes a minute on
        # a small CPU, with the same graph and outputs (checked by the tests at batch 1 and 5).
        torch.onnx.export(
            net,
            inputs,
            str(tmp),
            input_names=names,
            output_names=["F"],
            dynamic_axes={**{n: {0: "batch"} for n in names}, "F": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
        model = onnx.load_model(str(tmp))
        config = to_json(without_guide(run.config))  # the export carries no guide model: it samples unguided
        meta = {META_CONFIG: config, META_SHAPE: json.dumps(list(run.data_shape)), META_KIND: run.kind}
        for k, v in meta.items():
            model.metadata_props.add(key=k, value=v)
        onnx.save_model(model, str(tmp))
    for grid in needed_grids(run):  # sampling reads them (grid tuned or auto), so they travel along
        dest = folder / "grids" / grid.name
        dest.parent.mkdir(exist_ok=True)
        shutil.copyfile(grid, dest)
        note_input(grid)  # the manifest names each grid the export carries, with its sha256
    return path


def needed_grids(run: LoadedRun) -> list[Path]:
    """Every tuned grid file of the run (``grids/<sampler>-nfe<N>.json``: a distilled student's, or grids fitted by
    bench-samplers): sampling the run reads the one of its sampler and steps under ``sample.grid = "tuned"``, and
    under ``"auto"`` (the default) whenever one matches, whichever sampler a command line names - so the export
    carries them all, and samples as the run does."""
    from ..samplers.optimize_grid import tuned_grid_files

    return tuned_grid_files(run.path / "grids")


class OnnxNet(nn.Module):
    """An ONNX Runtime session behind our network signature ``F(x_in, c_noise, cond) -> Tensor`` (CPU).

    It holds one empty parameter so that code asking a model for its device (``next(model.parameters())``)
    finds the CPU, where the session returns its outputs.
    """

    def __init__(self, session, num_classes: int = 0):
        super().__init__()
        self.session = session
        self.num_classes = num_classes  # K > 0: the graph takes class_labels (K = the null class)
        self.anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, x_in: Tensor, c_noise: Tensor, cond: dict | None = None) -> Tensor:
        B, K = x_in.shape[0], self.num_classes
        other = sorted(k for k in (cond or {}) if k not in ("class", "drop"))
        if other or (cond and "class" in cond and K == 0):
            what = "an unconditional run" if K == 0 else "a class-conditional run"
            raise ValueError(f"the ONNX export is of {what}; it takes no {', '.join(other) or 'class'} conditioning")
        feeds = {
            "x_in": x_in.detach().to("cpu", torch.float32).contiguous().numpy(),
            "c_noise": c_noise.detach().to("cpu", torch.float32).reshape(-1).expand(B).contiguous().numpy(),
        }
        if K > 0:  # the class table row the PyTorch network would read: K where dropped or unlabelled
            drop = drop_mask(cond, B, torch.device("cpu"))
            labels = class_rows(None if cond is None else cond.get("class"), drop, K, B)
            feeds["class_labels"] = labels.detach().contiguous().numpy()
        (F,) = self.session.run(["F"], feeds)
        return torch.from_numpy(np.ascontiguousarray(F)).to(x_in.device)


# What the read-back check measures: the exported network F. The denoiser D = c_skip x + c_out F multiplies F's
# float32 rounding by c_out = -sigma (up to 2e4 on a cosine table of 1000 steps), in PyTorch as in ONNX Runtime.
DIFFERENCE_OF = "max |F_onnx - F_torch| of the network at batch 1 and 5 ="


@torch.no_grad()
def max_difference(run: LoadedRun, folder: Path) -> float:
    """Load the written file in ONNX Runtime and compare its network with the run's at batch 1 and 5, on noisy
    inputs over the whole sigma range."""
    from .export import probe

    net = load_onnx(folder).model.net
    K = run.config.model.num_classes
    worst = 0.0
    for batch in (1, 5):
        x_in, c_noise = probe(run, batch, seed=batch)
        conds = [None] + ([{"class": torch.arange(batch) % K}] if K > 0 else [])  # and the null class
        for cond in conds:
            worst = max(worst, float((net(x_in, c_noise, cond) - run.model.net(x_in, c_noise, cond)).abs().max()))
    return worst


def onnx_file(path: str | Path) -> Path | None:
    """The ONNX file a path names: the file itself, or ``denoiser.onnx`` in an export folder; else None."""
    p = Path(path)
    if p.is_file() and p.suffix == ".onnx":
        return p
    if p.is_dir() and (p / ONNX_FILE).is_file():
        return p / ONNX_FILE
    return None


def load_onnx(path: str | Path, *, threads: int = 0) -> LoadedRun:
    """A LoadedRun whose model is our Precond around an ONNX Runtime session (``generate`` and every sampler
    take it). ``path``: an export folder or its ``.onnx`` file; ``threads``: ONNX Runtime intra-op threads
    (0 = its default)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RunError(missing("onnx", f"{path}: running an ONNX export")) from None

    f = onnx_file(path)
    if f is None:
        raise RunError(f"{path} is neither an ONNX file nor a folder holding {ONNX_FILE}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3  # errors only
    try:
        session = ort.InferenceSession(str(f), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for a damaged file
        raise RunError(f"{f} is not a readable ONNX model ({first_line(e)[:200]})") from None
    meta = session.get_modelmeta().custom_metadata_map
    if META_CONFIG not in meta or META_SHAPE not in meta:
        raise RunError(f"{f} was not written by 'torchdiffusion export' (no {META_CONFIG} metadata)")
    try:
        cfg = validate(from_json(meta[META_CONFIG]))
        data_shape = tuple(int(s) for s in json.loads(meta[META_SHAPE]))
    except (ConfigError, ValueError, TypeError) as e:
        raise RunError(f"{f} carries a damaged config ({e})") from None
    inputs = {i.name for i in session.get_inputs()}
    K = cfg.model.num_classes
    if (K > 0) != ("class_labels" in inputs):
        raise RunError(f"{f}: its config and its graph disagree on class conditioning (model.num_classes = {K})")
    model = wrap_net(cfg, OnnxNet(session, K)).eval()
    info = {"data_shape": list(data_shape), "kind": meta.get(META_KIND, "image"), "onnx": f.name}
    run = LoadedRun(path=f.parent, config=cfg, model=model, data_shape=data_shape, info=info, weights_file=f.name)
    note_run(run)  # for the manifests of what a command writes from it (provenance.py)
    return run
