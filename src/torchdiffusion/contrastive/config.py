"""Typed configuration of a contrastive text-image run: its sections, presets and checks.

    cfg = override(get_clip_preset("emoji32-clip"), ["train.images=50000"])
    check_clip_config(cfg)                      # ConfigError (one line) for a value that cannot be used

The data section is the diffusion runs' own :class:`~torchdiffusion.config.DataConfig` (any source with
captions; ``data.holdout`` emoji are kept out of training, whole, for the retrieval and zero-shot report).
Lengths are counted in images seen, as in ``train``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import MAX_BATCH, MAX_IMAGES, MAX_WIDTH, ConfigError, DataConfig

IMAGE_BACKBONES = ("conv", "effnet_lite0")  # "conv" trains from scratch; the others are frozen feature networks


@dataclass(frozen=True)
class TowerConfig:
    embed_dim: int = 128  # D: width of the shared, L2-normalised embedding space
    # The image tower: "conv", the residual conv net below, trained from scratch; or a frozen pretrained feature
    # network (IMAGE_BACKBONES; "effnet_lite0": EfficientNet-Lite0's 1280-d ImageNet features, the eval extra)
    # under a trained head, "locked-image tuning" (LiT, Zhai et al. 2022)
    image_backbone: str = "conv"
    image_hidden: int = 0  # hidden width of the head MLP over a frozen backbone's features; 0 = one linear map
    width: int = 32  # channels of the image tower's first stage
    channel_mult: tuple[int, ...] = (1, 2, 4)  # width multiplier per stage; every stage halves H and W
    groups: int = 8  # GroupNorm groups of the image tower (capped by the channel count)
    dropout: float = 0.1  # dropout inside the image tower's residual blocks and the text projection
    text_hidden: int = 0  # hidden width of a text projection MLP over the frozen MiniLM; 0 = one linear map (less
    # overfitting on ~1,150 captions: held-out top-1 12.0 % vs 9.0 % with 512, docs/contrastive.md)
    text_layers: int = 0  # trainable transformer layers over the frozen MiniLM tokens before pooling (0 = none)
    init_temperature: float = 0.07  # tau at initialisation (CLIP: logit scale 1/0.07)
    max_logit_scale: float = 100.0  # 1/tau is clamped to [1, max_logit_scale] (CLIP: 100)


@dataclass(frozen=True)
class ContrastiveTrainConfig:
    images: int = 40_000  # length of training, in images seen (~35 passes over the ~1,150 training emoji)
    batch_size: int = 128  # pairs per step: the B x B similarity matrix of InfoNCE
    lr: float = 1e-3  # AdamW peak learning rate (cosine decay to 0 after warm-up)
    weight_decay: float = 0.1  # AdamW decoupled weight decay (CLIP: 0.2); not on the temperature
    warmup_images: int = 5_000  # linear learning-rate warm-up, in images
    max_shift: int = 2  # augmentation: random translation of up to this many pixels (background filled in)
    # caption augmentation: each training pair reads its caption through one of these templates, drawn at random
    # per pair and step; "{caption}" is the caption, "{category}" the name of its class (data.class_names), so a
    # template with {category} puts the category into the training text (zero-shot then no longer is: see
    # docs/contrastive.md). The held-out report always uses the plain captions.
    templates: tuple[str, ...] = ("{caption}",)
    seed: int = 0  # initialisation, batches and augmentation
    log_every_images: int = 6_000  # metrics.jsonl cadence (loss, temperature, held-out retrieval)
    threads: int = 0  # torch intra-op threads; 0 = leave torch's default


@dataclass(frozen=True)
class ContrastiveConfig:
    preset: str = "custom"
    data: DataConfig = field(default_factory=lambda: DataConfig(source="emoji", emoji_size=32, holdout=200))
    model: TowerConfig = field(default_factory=TowerConfig)
    train: ContrastiveTrainConfig = field(default_factory=ContrastiveTrainConfig)


_CONV_TOWER = (lambda c: c.model.image_backbone == "conv", "the trained conv tower", ("model.image_backbone",))
# Settings only some text-image models read (config.unread_setting): a --set of one where it is not read is refused.
ContrastiveConfig.READ_WHEN = {
    "model.image_hidden": (
        lambda c: c.model.image_backbone != "conv",
        "the head over a frozen backbone (model.image_backbone other than conv)",
        ("model.image_backbone",),
    ),
    "model.width": _CONV_TOWER,
    "model.channel_mult": _CONV_TOWER,
    "model.groups": _CONV_TOWER,
}


# Presets: one dict literal. 200 of the ~1,350 emoji are held out whole (never seen in training).
CLIP_PRESETS: dict[str, ContrastiveConfig] = {
    "emoji32-clip": ContrastiveConfig(preset="emoji32-clip"),
    # The judge of the emoji64 family (emoji64-ae, emoji64-ldm-text): the same ~3,760 emoji and skin-tone/ZWJ
    # sequences and the same held-out whole emoji, read at 32 px; half of the training texts name the emoji's
    # category (so its category accuracy is not zero-shot; docs/contrastive.md)
    "emoji32-seq-clip": ContrastiveConfig(
        preset="emoji32-seq-clip",
        data=DataConfig(source="emoji", emoji_size=32, emoji_set="sequences", holdout=300),
        train=ContrastiveTrainConfig(
            images=70_000,
            log_every_images=10_000,
            templates=("{caption}", "an emoji of {caption}", "{caption}: {category}", "a {category} emoji: {caption}"),
        ),
    ),
    # A judge that reads categories well: the same data at 64 px, the frozen ImageNet EfficientNet-Lite0 features
    # under a trained 2-layer head (LiT), and the same templates. The frozen features are computed once (cached
    # per machine), so each step trains the two heads only: seconds per 10,000 pairs.
    "emoji64-lit": ContrastiveConfig(
        preset="emoji64-lit",
        data=DataConfig(source="emoji", emoji_size=64, emoji_set="sequences", holdout=300),
        model=TowerConfig(image_backbone="effnet_lite0", image_hidden=512, text_hidden=512, dropout=0.2),
        train=ContrastiveTrainConfig(
            images=100_000,
            max_shift=0,
            log_every_images=0,
            templates=("{caption}", "an emoji of {caption}", "{caption}: {category}", "a {category} emoji: {caption}"),
        ),
    ),
    "emoji16-clip": ContrastiveConfig(
        preset="emoji16-clip",
        data=DataConfig(source="emoji", emoji_size=16, holdout=200),
        model=TowerConfig(channel_mult=(1, 2)),
        train=ContrastiveTrainConfig(max_shift=1),
    ),
    # seconds: for trying the command and for tests
    "emoji16-clip-tiny": ContrastiveConfig(
        preset="emoji16-clip-tiny",
        data=DataConfig(source="emoji", emoji_size=16, holdout=64, limit=256),
        model=TowerConfig(embed_dim=32, width=8, channel_mult=(1, 2)),
        train=ContrastiveTrainConfig(images=2_048, batch_size=64, warmup_images=256, log_every_images=1_024),
    ),
}


def get_clip_preset(name: str) -> ContrastiveConfig:
    from ..config import pick_preset

    return pick_preset(CLIP_PRESETS, name)


def check_clip_config(cfg: ContrastiveConfig) -> ContrastiveConfig:
    """``cfg`` itself when every value can be used; else ConfigError naming the first bad one."""
    from ..config import MAX_SEED, MAX_THREADS, _between, _data_checks, _finite_numbers, typed_fields

    typed_fields(cfg)
    m, t = cfg.model, cfg.train
    checks = [
        *_finite_numbers(cfg),
        *_data_checks(cfg.data),  # as train checks it
        (1 <= m.embed_dim <= MAX_WIDTH, f"model.embed_dim must be in [1, {MAX_WIDTH}], got {m.embed_dim}"),
        (1 <= m.width <= MAX_WIDTH, f"model.width must be in [1, {MAX_WIDTH}], got {m.width}"),
        (
            1 <= len(m.channel_mult) <= 6 and all(1 <= v * m.width <= MAX_WIDTH for v in m.channel_mult),
            f"model.channel_mult must hold 1 to 6 positive multipliers, got {m.channel_mult}",
        ),
        (m.groups >= 1, f"model.groups must be >= 1, got {m.groups}"),
        (
            m.image_backbone in IMAGE_BACKBONES,
            f"model.image_backbone must be one of {', '.join(IMAGE_BACKBONES)}, got {m.image_backbone!r}",
        ),
        (0 <= m.image_hidden <= MAX_WIDTH, f"model.image_hidden must be in [0, {MAX_WIDTH}], got {m.image_hidden}"),
        (
            m.image_backbone == "conv" or t.max_shift == 0,
            f"train.max_shift must be 0 with the frozen model.image_backbone={m.image_backbone} (its features are "
            "computed once, so shifted copies are never seen)",
        ),
        (0 <= m.dropout < 1, f"model.dropout must be in [0, 1), got {m.dropout}"),
        (0 <= m.text_hidden <= MAX_WIDTH, f"model.text_hidden must be in [0, {MAX_WIDTH}], got {m.text_hidden}"),
        (0 <= m.text_layers <= 12, f"model.text_layers must be in [0, 12], got {m.text_layers}"),
        (0 < m.init_temperature <= 1, f"model.init_temperature must be in (0, 1], got {m.init_temperature}"),
        (
            1 <= m.max_logit_scale <= 1e4 and 1 / m.init_temperature <= m.max_logit_scale,
            f"model.max_logit_scale must be in [1/init_temperature, 1e4], got {m.max_logit_scale}",
        ),
        (1 <= t.images <= MAX_IMAGES, f"train.images must be in [1, {MAX_IMAGES}], got {t.images}"),
        (2 <= t.batch_size <= MAX_BATCH, f"train.batch_size must be in [2, {MAX_BATCH}], got {t.batch_size}"),
        (0 < t.lr <= 1, f"train.lr must be in (0, 1], got {t.lr}"),
        (t.weight_decay >= 0, f"train.weight_decay must be >= 0, got {t.weight_decay}"),
        (0 <= t.warmup_images <= MAX_IMAGES, f"train.warmup_images must be >= 0, got {t.warmup_images}"),
        (0 <= t.max_shift <= 64, f"train.max_shift must be in [0, 64], got {t.max_shift}"),
        (
            1 <= len(t.templates) <= 16 and all(_template_ok(s) for s in t.templates),
            "train.templates must hold 1 to 16 strings, each naming {caption} and no field but {caption} and "
            f"{{category}}, got {t.templates}",
        ),
        _between(t.seed, 0, MAX_SEED, "train.seed"),
        (0 <= t.log_every_images <= MAX_IMAGES, f"train.log_every_images must be >= 0, got {t.log_every_images}"),
        _between(t.threads, 0, MAX_THREADS, "train.threads"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
    return cfg


def _template_ok(template: str) -> bool:
    """A caption template names {caption}, and no format field but {caption} and {category}."""
    import string

    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError:  # an unmatched brace
        return False
    return "caption" in fields and fields <= {"caption", "category"}


def clip_config_from_json(text: str) -> ContrastiveConfig:
    """The config of a contrastive run's config.json (ConfigError when it is not one)."""
    from ..config import from_dict, json_object

    return from_dict(ContrastiveConfig, json_object(text))
