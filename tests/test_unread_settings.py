"""A --set that nothing reads is refused (config.refuse_unread), and the table behind it tells the truth.

The oracle: on tiny runs of each network kind, every setting the table calls unread is changed at once, and the
run trains to bit-identical weights and draws bit-identical samples. A table entry that claimed a setting unread
where something does read it would change the weights or the samples here.
"""

import hashlib
from pathlib import Path

import pytest
import torch

from tinyruns import cli
from torchdiffusion.config import (
    RUN_READ_WHEN,
    ConfigError,
    data_readers,
    override,
    refuse_unread,
    unread_setting,
    validate,
)
from torchdiffusion.presets import PRESETS, get_preset
from torchdiffusion.training import train

# A value for every setting of the tables: valid, and other than the tiny runs' own (checked where it is changed).
CHANGED = {
    "data.path": "no-such-data",
    "data.toy": "moons",
    "data.toy_size": "300",
    "data.emoji_size": "32",
    "data.emoji_set": "sequences",
    "data.layout": "NHWC",
    "data.labels_path": "no-such-labels.npy",
    "data.scale": "minmax",
    "data.scale_lo": "-5",
    "data.scale_hi": "5",
    "data.seq_len": "20",
    "data.signal_length": "20",
    "data.volume_size": "8,8,8",
    "data.volume_count": "17",
    "data.categorical": "a,b",
    "data.target": "kind",
    "model.channels": "24",
    "model.channel_mult": "1,1",
    "model.num_res_blocks": "2",
    "model.attn_resolutions": "2",
    "model.groups": "2",
    "model.checkpoint": "true",
    "model.head_channels": "4",
    "model.patch": "4",
    "model.depth": "3",
    "model.pos_embedding": "learned",
    "model.mlp_width": "48",
    "model.mlp_depth": "3",
    "model.rotary": "true",
    "model.retrieval_input": "channels",
    "diffusion.schedule": "sigmoid",
    "diffusion.T": "37",
    "diffusion.beta_start": "0.0003",
    "diffusion.beta_end": "0.03",
    "diffusion.sigma_min": "0.011",
    "diffusion.sigma_max": "33",
    "diffusion.P_mean": "-0.7",
    "diffusion.P_std": "0.9",
    "diffusion.parameterization": "v",
    "diffusion.sigma_data": "0.7",
    "diffusion.noise_conditioning": "log_sigma",
    "diffusion.weighting": "min_snr",
    "diffusion.min_snr_gamma": "2.5",
    "diffusion.discrete": "uniform",
    "diffusion.masked_bound": "anchored",
    "train.channels_last": "true",
    "train.lr_cooldown": "0.45",
    "train.ema_warmup_ratio": "0.3",
    "train.eval_n": "17",
    "train.eval_classifier": "mnist5k",
    "train.cond_drop_prob": "0.35",
    "sample.guidance": "3.5",
    "sample.guidance_rescale": "0.5",
    "sample.guidance_interval": "0.1,2",
    "sample.sampler": "heun",
    "sample.grid": "karras",
    "sample.settings.eta": "0.5",
    "sample.settings.s_churn": "1",
    "sample.settings.s_tmin": "0.1",
    "sample.settings.s_tmax": "10",
    "sample.settings.s_noise": "1.01",
    "sample.settings.order": "2",
    "sample.settings.r": "0.4",
    "sample.settings.variance": "beta",
    "sample.settings.add_noise": "false",
    "sample.settings.snr": "0.2",
    "sample.settings.corrector_steps": "2",
    "sample.settings.steps_per_level": "2",
    "sample.settings.step_lr": "0.1",
    "sample.settings.rtol": "0.01",
    "sample.settings.atol": "0.01",
    "sample.clip_denoised": "true",
    "sample.rho": "3",
    "sample.spacing": "linspace",
    "objective.teacher": "runs/no-such-teacher",
    "objective.guidance": "2.5",
    "objective.autoguidance": "1.5",
    "objective.teacher_steps": "16",
    "objective.teacher_grid": "karras",
    "objective.stage_teacher": "runs/no-such-stage",
    "objective.ct_steps_start": "20",
    "objective.ct_steps_end": "640",
    "objective.ct_P_mean": "-0.8",
    "objective.ct_P_std": "1.7",
    "objective.reflow_pairs": "99",
    "objective.dmd_fake_updates": "2",
    "objective.dmd_fake_lr": "0.0007",
}
KEYS = [*(f"data.{k}" for k in data_readers()), *RUN_READ_WHEN]
CHECKED_AT_START = ("data.labels_path", "train.eval_classifier")


def test_every_setting_of_the_tables_is_a_real_one_that_some_run_reads():
    """The tables name real settings (the override applies), and no entry refuses its setting for every run (a
    condition no run meets would make a setting impossible to set): each is read by a preset, or by a preset with
    another data source, objective, retrieval conditioning, learning-rate decay or quick evaluations."""
    from torchdiffusion.config import OBJECTIVES
    from torchdiffusion.data import SOURCES

    assert sorted(CHANGED) == sorted(KEYS)
    presets = [get_preset(name) for name in PRESETS]
    runs = [*presets, *(override(presets[0], [f"data.source={s}"]) for s in SOURCES)]
    runs += [override(c, [f"objective.name={o}"]) for c in presets for o in OBJECTIVES]
    others = ("model.text_retrieval=2", "train.lr_decay=cooldown", "train.eval_every_images=1000")
    runs += [override(c, [s]) for c in presets for s in others]
    for key in KEYS:
        override(presets[0], [f"{key}={CHANGED[key]}"])
        assert any(unread_setting(c, key) is None for c in runs), key


# The data settings every source reads (what data, how much of it, the held-out split, a kind's shape): any other
# data setting is one some sources read, named beside their loaders (data.SOURCES, Source.reads)
READ_BY_EVERY_SOURCE = {"source", "image_size", "channels", "holdout", "seed", "limit", "latents_of"}


def test_every_data_setting_is_read_by_every_source_or_named_by_the_sources_that_read_it():
    """A data setting in neither group would be taken silently by a source that never reads it (data.path on the
    digits)."""
    from dataclasses import fields

    from torchdiffusion.config import DataConfig

    named = set(data_readers())
    assert not named & READ_BY_EVERY_SOURCE
    assert {f.name for f in fields(DataConfig)} == named | READ_BY_EVERY_SOURCE


TINY_TEXT = "abcab cabca bcabc " * 40
BASES = {  # (preset, settings): one tiny run of each network kind
    "unet": ("digits-test", ["model.channels=8", "model.groups=4", "sample.grid=auto"]),
    "dit": (
        "digits-test",
        ["model.net=dit", "model.channels=16", "model.depth=1", "model.head_channels=8", "model.patch=2"],
    ),
    "mlp": ("toy-2d", ["data.toy_size=256", "model.mlp_width=32", "model.mlp_depth=1", "sample.n=16"]),
    "table": ("table-iris", ["model.mlp_width=16", "model.mlp_depth=1", "sample.n=16"]),
    "sequence": (
        "text-chars",
        ["data.source=text", "data.seq_len=12", "data.holdout=8", "model.mlp_width=32", "model.mlp_depth=1"],
    ),
}
COMMON = ["train.images=96", "train.batch_size=32", "train.warmup_images=32", "train.ema_halflife_images=64"]
COMMON += ["train.log_every_images=32", "train.checkpoint_every_images=96", "sample.steps=3", "train.precision=fp32"]


def _digests(run: Path) -> dict[str, str]:
    """sha256 of the weights and of every sample file the run wrote."""
    files = [run / "ema.safetensors", run / "model.safetensors", *sorted((run / "samples").iterdir())]
    return {f.relative_to(run).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.mark.parametrize("base", list(BASES))
def test_settings_called_unread_change_neither_the_weights_nor_the_samples(base, tmp_path):
    preset, sets = BASES[base]
    text = tmp_path / "text.txt"
    text.write_text(TINY_TEXT)
    sets = [*sets, *COMMON, *([f"data.path={text}"] if base == "sequence" else [])]
    cfg = validate(override(get_preset(preset), sets))
    unread = [k for k in KEYS if unread_setting(cfg, k) is not None]
    # Checked when training starts even where nothing else reads them (a clear error, not silence): a labels file
    # for a model without conditioning, the quick evaluation's classifier on data that are not images
    unread = [k for k in unread if k not in CHECKED_AT_START]
    assert all(override(cfg, [f"{k}={CHANGED[k]}"]) != cfg for k in unread)  # each one a change
    changed = validate(override(cfg, [f"{k}={CHANGED[k]}" for k in unread]))
    assert changed != cfg and all(unread_setting(changed, k) is not None for k in unread)
    assert len(unread) >= 15, unread  # most of the table applies to any one run
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        digests = [_digests(train(c, tmp_path / name, progress=False)) for c, name in ((cfg, "a"), (changed, "b"))]
    finally:
        torch.set_num_threads(threads)
    assert any(k.startswith("samples/") for k in digests[0])
    assert digests[0] == digests[1]


def test_a_setting_that_is_read_changes_the_run(tmp_path):
    """The oracle can fail: one setting the unet base reads (model.channels) changes its weights."""
    preset, sets = BASES["unet"]
    cfg = validate(override(get_preset(preset), [*sets, *COMMON]))
    assert unread_setting(cfg, "model.channels") is None
    other = override(cfg, ["model.channels=12"])
    torch.set_num_threads(1)
    a = _digests(train(cfg, tmp_path / "a", progress=False))
    b = _digests(train(other, tmp_path / "b", progress=False))
    assert a["ema.safetensors"] != b["ema.safetensors"]


@pytest.mark.parametrize(
    ("preset", "setting", "names"),
    [
        ("mnist-cpu", "model.patch=4", ("model.patch", "model.net=unet")),
        ("mnist-cpu", "data.toy=moons", ("data.toy", "data.source=mnist5k")),
        ("digits-test", "data.path=/nonexistent/xyz", ("data.path", "data.source=digits", "folder | array")),
        ("mnist-cpu", "diffusion.beta_end=0.03", ("diffusion.beta_end", "diffusion.schedule=cosine")),
        ("mnist-cpu", "train.eval_n=64", ("train.eval_n", "train.eval_every_images=0")),
        ("mnist-cpu-uncond", "sample.guidance=3", ("sample.guidance", "model.num_classes=0")),
        ("mnist-cpu", "objective.ct_steps_end=100", ("objective.ct_steps_end", "objective.name=denoising")),
        ("toy-2d", "model.channels=64", ("model.channels", "model.net=mlp")),
        ("toy-2d", "diffusion.T=500", ("diffusion.T", "diffusion.process=continuous")),
        ("mnist-class", "model.rotary=true", ("model.rotary", "model.net=unet")),
    ],
)
def test_train_refuses_a_setting_nothing_reads_in_one_line(tmp_path, preset, setting, names):
    rc, out, err = cli("train", "--preset", preset, "--set", setting, "--out", tmp_path / "run")
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "changes nothing" in err
    assert all(n in err for n in names), err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "sets",
    [
        ["model.net=dit", "model.patch=4"],  # read once the network is the DiT, in either order
        ["model.patch=4", "model.net=dit"],
        ["train.lr_cooldown=0.3", "train.lr_decay=cooldown"],
        ["data.source=toy", "data.toy=moons", "model.net=mlp"],
        ["model.num_classes=0", "model.num_classes=10", "sample.guidance=3"],
        ["sample.grid=karras", "sample.rho=5"],
    ],
)
def test_train_takes_a_setting_once_the_run_reads_it(sets):
    args = [a for s in sets for a in ("--set", s)]
    rc, _, err = cli("train", "--preset", "digits-test", *args, "--dry-run")
    assert rc == 0, err


def test_a_config_file_keeps_its_own_values_and_only_the_sets_are_checked(tmp_path):
    """Every config.json holds every setting, read or not; only what --set changes is checked."""
    from torchdiffusion.config import to_json

    path = tmp_path / "config.json"
    path.write_text(to_json(get_preset("mnist-cpu")))
    assert cli("train", "--config", path, "--set", "train.lr=1e-3", "--dry-run")[0] == 0
    rc, _, err = cli("train", "--config", path, "--set", "data.emoji_size=32", "--dry-run")
    assert rc == 2 and "data.emoji_size" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["train-autoencoder", "--preset", "tiny-ae", "--set", "data.toy_size=100"],
        ["train-autoencoder", "--preset", "tiny-ae", "--set", "data.path=/nonexistent"],  # the digits read no file
        ["train-clip", "--preset", "emoji32-clip", "--set", "data.seq_len=32"],
        ["demo", "--set", "model.depth=3"],
        ["train-classifier", "digits-test", "--set", "data.volume_count=10"],
        ["train", "--preset", "digits-test", "--set", "data.signal_length=20"],  # only signals are resampled
        ["train-autoencoder", "--preset", "tiny-ae", "--set", "loss.perceptual_blocks=1"],  # no perceptual loss
        ["train-autoencoder", "--preset", "tiny-ae", "--set", "model.head_channels=8"],  # no attention
        ["train-clip", "--preset", "emoji16-clip-tiny", "--set", "model.image_hidden=512"],  # the conv tower
        ["train-clip", "--preset", "emoji64-lit", "--set", "model.width=64"],  # a frozen backbone
    ],
)
def test_the_other_training_commands_refuse_a_setting_nothing_reads(tmp_path, argv):
    rc, out, err = cli(*argv, "--out", tmp_path / "out")
    assert rc == 2 and "changes nothing" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_refuse_unread_passes_what_is_read_and_names_what_is_not():
    cfg = get_preset("toy-2d")
    assert refuse_unread(cfg, ["data.toy=moons", "model.mlp_width=64"]) is cfg
    with pytest.raises(ConfigError, match=r"^--set model.groups=2 changes nothing: model.groups is read only by"):
        refuse_unread(cfg, ["model.groups=2"])


def test_the_autoencoder_and_text_encoder_take_their_settings_where_read():
    from torchdiffusion.autoencoder import get_autoencoder_preset
    from torchdiffusion.contrastive.config import get_clip_preset

    ae = override(get_autoencoder_preset("tiny-ae"), ["loss.perceptual=1", "model.attention=true"])
    assert refuse_unread(
        override(ae, ["loss.perceptual_blocks=2", "model.head_channels=8"]),
        ["loss.perceptual_blocks=2", "model.head_channels=8"],
    )
    lit = get_clip_preset("emoji64-lit")
    assert refuse_unread(override(lit, ["model.image_hidden=64"]), ["model.image_hidden=64"])
    conv = get_clip_preset("emoji16-clip-tiny")
    assert refuse_unread(override(conv, ["model.width=16"]), ["model.width=16"])


@pytest.mark.parametrize("command", ["train", "train-autoencoder", "train-clip"])
def test_a_preset_beside_a_config_file_or_a_flag_beside_its_set_is_refused(tmp_path, command):
    """--preset with --config (the preset was dropped without a word), --config naming a folder, and train-clip's
    --images / --batch-size beside --set of the same setting (the flag won): one line, exit 2."""
    preset = {"train": "digits-test", "train-autoencoder": "tiny-ae", "train-clip": "emoji16-clip-tiny"}[command]
    rc, out, _ = cli(command, "--preset", preset, "--dry-run")
    (tmp_path / "config.json").write_text(out)
    assert cli(command, "--config", tmp_path / "config.json", "--dry-run")[0] == 0
    cases = [
        (["--preset", preset, "--config", tmp_path / "config.json"], "both name the starting config"),
        (["--config", tmp_path], "is a folder; give its config.json"),
    ]
    if command == "train-clip":
        cases += [(["--images", "64", "--set", "train.images=200"], "--images and --set train.images both set"),
                  (["--batch-size", "8", "--set", "train.batch_size=16"], "both set train.batch_size")]  # fmt: skip
    for argv, says in cases:
        rc, _, err = cli(command, *argv, "--dry-run")
        assert rc == 2 and len(err.strip().splitlines()) == 1 and says in err, err


@pytest.mark.parametrize("command", ["train", "train-autoencoder", "train-clip"])
def test_the_preset_a_config_started_from_is_named_by_preset_never_by_set(tmp_path, command):
    """--set preset=... is refused in one line: it named the default run folder (runs/../../evil) and a preset in
    config.json and the model card that did not run. A config file whose preset is a path (or no name at all) is
    refused too, nothing written; one naming a preset of its own (a distilled student's mnist-cpu-progressive, an
    experiment's name) keeps it."""
    import json

    preset = {"train": "digits-test", "train-autoencoder": "tiny-ae", "train-clip": "emoji16-clip-tiny"}[command]
    for value in ("../../evil", preset, "custom"):
        rc, out, err = cli(command, "--preset", preset, "--set", f"preset={value}", "--dry-run")
        assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and "--preset NAME" in err, err
    rc, out, _ = cli(command, "--preset", preset, "--dry-run")
    cfg, path = json.loads(out), tmp_path / "config.json"
    for bad in ("../../evil", "/tmp/evil", "a/b", "a\\b", "..", ".", "", "-x", "two words"):
        path.write_text(json.dumps({**cfg, "preset": bad}))
        for extra in (["--dry-run"], ["--no-progress"]):
            rc, out, err = cli(command, "--config", path, *extra, cwd=tmp_path)
            assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and "preset" in err, (bad, err)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"], bad
    path.write_text(json.dumps({**cfg, "preset": "mnist-cpu-progressive"}))
    rc, out, err = cli(command, "--config", path, "--dry-run")
    assert rc == 0 and json.loads(out)["preset"] == "mnist-cpu-progressive", err
