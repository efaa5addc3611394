"""Configs: every preset is valid and survives the JSON round trip; overrides are typed."""

import pytest

from torchdiffusion.config import PRESETS, ConfigError, from_json, get_preset, override, to_json, validate


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_validates_and_round_trips(name):
    cfg = PRESETS[name]
    assert cfg.preset == name
    assert validate(cfg) == cfg
    assert from_json(to_json(cfg)) == cfg


def test_text_preset_width_is_the_text_encoders():
    from torchdiffusion.text import TEXT_DIM

    assert get_preset("emoji-text").model.text_dim == TEXT_DIM


def test_demo_ema_reaches_its_named_half_life_at_the_end():
    """The demo's EMA ramp (h = r n) meets train.ema_halflife_images at its last image, so the half-life the preset
    names is the one it averages with at the end (and training prints no 'not reached' note)."""
    from torchdiffusion.training.ema import ema_halflife

    t = get_preset("mnist-cpu").train
    assert ema_halflife(t.images, t.ema_halflife_images, t.ema_warmup_ratio) == pytest.approx(t.ema_halflife_images)
    assert ema_halflife(t.images // 2, t.ema_halflife_images, t.ema_warmup_ratio) < t.ema_halflife_images


def test_overrides_are_typed():
    cfg = override(get_preset("mnist-cpu"), ["train.lr=5e-4", "model.channel_mult=1,2", "data.image_size=32,32"])
    assert cfg.train.lr == 5e-4 and cfg.model.channel_mult == (1, 2) and cfg.data.image_size == (32, 32)
    with pytest.raises(ConfigError, match="train.images"):
        override(cfg, ["train.images=many"])
