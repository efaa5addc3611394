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


def test_overrides_are_typed():
    cfg = override(get_preset("mnist-cpu"), ["train.lr=5e-4", "model.channel_mult=1,2", "data.image_size=32,32"])
    assert cfg.train.lr == 5e-4 and cfg.model.channel_mult == (1, 2) and cfg.data.image_size == (32, 32)
    with pytest.raises(ConfigError, match="train.images"):
        override(cfg, ["train.images=many"])
