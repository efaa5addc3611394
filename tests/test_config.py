"""Configs: every preset is valid and survives the JSON round trip; overrides are typed."""

import pytest

from torchdiffusion.config import ConfigError, from_json, override, to_json, validate
from torchdiffusion.presets import PRESETS, get_preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_validates_and_round_trips(name):
    cfg = PRESETS[name]
    assert cfg.preset == name
    assert validate(cfg) == cfg
    assert from_json(to_json(cfg)) == cfg


def test_the_preset_names_stay_importable_from_config():
    """presets.py holds them; code written against ``torchdiffusion.config`` (and the package root) still finds them,
    and config has no other names than its own."""
    import torchdiffusion
    import torchdiffusion.config as config
    import torchdiffusion.presets as presets

    for name in ("PRESETS", "DIT_SIZES", "TRAIN_OBJECTIVES", "dit_model", "get_preset"):
        assert getattr(config, name) is getattr(presets, name)
    assert torchdiffusion.get_preset is presets.get_preset and torchdiffusion.PRESETS is presets.PRESETS
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        config.nothing  # noqa: B018


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
    for text in ("1,2,2", "(1,2,2)", "[1, 2, 2]", " [1,2,2] "):  # a list as Python or JSON writes it
        assert override(cfg, [f"model.channel_mult={text}"]).model.channel_mult == (1, 2, 2), text
    table = override(get_preset("table-wine"), ["data.categorical=price (usd),colour"])
    assert table.data.categorical == ("price (usd)", "colour")  # brackets inside a name are the name's
    with pytest.raises(ConfigError, match=r"expected an integer, got '\[2\]'"):
        override(cfg, ["model.channel_mult=1,[2]"])
    for text in ('{"preset": null}', '{"preset": true}', '{"data": {"source": ["mnist5k"]}}'):  # "None" -> runs/None
        with pytest.raises(ConfigError, match="expected text, got"):
            from_json(text)
    big = override(cfg, ["sample.seed=9007199254740993", "train.images=1e3", "train.batch_size=6_4"])
    assert big.sample.seed == 2**53 + 1 and big.train.images == 1000 and big.train.batch_size == 64  # (2**53 before)


def _number_fields(cls, where=""):
    """(key, the JSON of a bool in its place) for every field of ``cls`` that holds numbers: int or float, alone,
    optional, or inside a tuple."""
    import dataclasses
    import typing

    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _number_fields(tp, f"{where}{f.name}.")
            continue
        kinds = [a for a in (typing.get_args(tp) or (tp,)) if a is not type(None)]
        elems = [e for k in kinds for e in (typing.get_args(k) if typing.get_origin(k) is tuple else ())]
        if any(k in (int, float) for k in kinds):
            yield f"{where}{f.name}", "true"
        elif any(e in (int, float) for e in elems):
            yield f"{where}{f.name}", "[1, false]"


def test_a_json_bool_is_no_number_in_any_numeric_field():
    """A JSON true/false in a number field (alone, optional or in a list) is refused naming the field, as --set
    train.lr=true is; it was read as 1.0 / 0.0 (a config file's "lr": true trained at lr 1)."""
    import json

    from torchdiffusion.autoencoder import AutoencoderRunConfig, autoencoder_config_from_json
    from torchdiffusion.config import RunConfig
    from torchdiffusion.contrastive.config import ContrastiveConfig, clip_config_from_json

    keys = []
    for cls, read in ((RunConfig, from_json), (AutoencoderRunConfig, autoencoder_config_from_json),
                      (ContrastiveConfig, clip_config_from_json)):  # fmt: skip
        for key, value in _number_fields(cls):
            *sections, name = key.split(".")
            d = inner = {}
            for s in sections:
                inner = inner.setdefault(s, {})
            inner[name] = json.loads(value)
            with pytest.raises(ConfigError, match=rf"^{key}: "):
                read(json.dumps(d))
            keys.append(key)
    assert {"train.lr", "train.images", "sample.settings.eta", "train.betas", "data.image_size"} <= set(keys)
    assert {"data.scale_lo", "sample.guidance_interval", "model.channel_mult", "loss.beta"} <= set(keys)
    with pytest.raises(ConfigError, match=r"^train.lr: expected a number, got true$"):  # as the file writes it
        from_json('{"train": {"lr": true}}')
    assert from_json('{"model": {"text_pooled": true}}').model.text_pooled is True  # a bool field takes it


@pytest.mark.parametrize(
    "sets",
    [
        ["diffusion.P_mean=100"],
        ["diffusion.P_mean=-50"],
        ["diffusion.P_std=1e9"],
        ["diffusion.P_mean=-30", "diffusion.P_std=2"],  # -30 - 6*2 = -42: sigma^2 = e^-84 underflows float32
        ["objective.ct_P_mean=35"],
        ["objective.ct_P_std=7"],
    ],
)
def test_lognormal_levels_outside_float32_are_refused(sets):
    """ln sigma ~ N(P_mean, P_std^2): P_mean +- 6 P_std must stay in [-40, 40], where sigma^2 is a finite,
    normal float32; EDM's (-1.2, 1.2) and iCT's (-1.1, 2.0) are far inside."""
    import math

    cfg = override(get_preset("toy-2d"), sets)
    with pytest.raises(ConfigError, match=sets[0].split("=")[0].rsplit("_", 1)[0] + "_mean"):
        validate(cfg)
    assert math.isfinite(math.exp(40.0) ** 2) and math.exp(-40.0) ** 2 > 1.2e-38  # the bound, in float32's range
    edge = override(get_preset("toy-2d"), ["diffusion.P_mean=-28", "diffusion.P_std=2"])  # exactly -40
    assert validate(edge) == edge


@pytest.mark.parametrize(
    "sets, says",
    [
        (["sample.grid=uniform_t", "sample.steps=200"], "more steps than the model's 100 timesteps"),
        (["sample.sampler=lms", "sample.settings.order=0"], "LMS order must be >= 1"),
        (["sample.sampler=ddim", "sample.settings.eta=2.0"], "DDIM eta must be in [0, 1]"),
        (["sample.sampler=dpmpp_2s", "sample.settings.r=1.5"], "r must be in (0, 1)"),
        (["sample.sampler=ddpm", "sample.settings.variance=big"], "variance must be 'posterior' or 'beta'"),
        (["sample.sampler=euler_ancestral", "sample.settings.s_noise=-1"], "s_noise must be >= 0"),
        (["sample.sampler=heun", "sample.settings.s_churn=1", "sample.settings.s_tmin=2", "sample.settings.s_tmax=1"],
         "s_tmin must be <= s_tmax"),
    ],
)  # fmt: skip
def test_sampling_a_run_cannot_do_is_refused_before_any_work(sets, says, tmp_path):
    """Settings in their sampler's own domain and a uniform_t grid within the model's T are checked by validate
    (a run trained to its end and only then failed to draw its grids); nothing of the run folder is written."""
    import torch

    from tinyruns import cli

    state = torch.random.get_rng_state()
    with pytest.raises(ConfigError, match=__import__("re").escape(says)):
        validate(override(get_preset("digits-test"), sets))
    assert torch.equal(state, torch.random.get_rng_state())  # the check draws from no one's random stream
    rc, _, err = cli("train", "--preset", "digits-test", "--out", tmp_path / "r", *[f"--set={s}" for s in sets])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and says in err, err
    assert not (tmp_path / "r").exists()
