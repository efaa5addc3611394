"""The KL autoencoder: shapes, the KL term against its closed form, a round trip a tiny net learns, the latent scale
factor, loading a run, and `train-autoencoder` end to end (through the CLI's ``main`` in this process)."""

import json
import math

import pytest
import torch

from tinyruns import cli
from torchdiffusion.autoencoder import (
    AUTOENCODER_PRESETS,
    Autoencoder,
    AutoencoderError,
    AutoencoderLossConfig,
    AutoencoderRunConfig,
    AutoencoderTrainConfig,
    autoencoder_loss,
    kl_divergence,
    latent_scale_factor,
    load_autoencoder,
    reconstruction_loss,
    sample_latent,
)
from torchdiffusion.config import DataConfig
from torchdiffusion.io import sha256_file
from torchdiffusion.nets.autoencoder import AutoencoderKL, AutoencoderNetConfig
from torchdiffusion.training.autoencoder import SCALE_SEED, train_autoencoder

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw) -> AutoencoderNetConfig:
    base = dict(in_channels=3, latent_channels=2, channels=8, channel_mult=(1, 2, 2), groups=4)
    return AutoencoderNetConfig(**{**base, **kw})


@pytest.mark.parametrize("mult,f", [((1,), 1), ((1, 2), 2), ((1, 2, 2), 4), ((1, 1, 2, 2), 8)])
@pytest.mark.parametrize("attention", [False, True])
def test_encode_decode_shapes(mult, f, attention):
    net = AutoencoderKL(tiny(channel_mult=mult, attention=attention))
    assert net.cfg.factor == f
    x = torch.rand(2, 3, 16, 24) * 2 - 1
    mean, logvar = net.encode(x)
    assert mean.shape == logvar.shape == (2, 2, 16 // f, 24 // f)
    assert net.decode(mean).shape == x.shape
    ae = Autoencoder(net, 1.0, (3, 16, 24))
    assert ae.latent_shape((3, 16, 24)) == (2, 16 // f, 24 // f)
    assert ae.decode(ae.encode(x)[0]).shape == x.shape


def test_latent_shape_and_encode_refuse_other_images():
    ae = Autoencoder(AutoencoderKL(tiny()), 1.0, (3, 16, 16))
    with pytest.raises(ValueError, match="multiples of 4"):
        ae.latent_shape((3, 18, 16))
    with pytest.raises(ValueError, match="3, H, W"):
        ae.latent_shape((1, 16, 16))
    with pytest.raises(ValueError, match="trained on"):
        ae.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="latents"):
        ae.decode(torch.zeros(1, 5, 4, 4))


def test_kl_matches_the_closed_form_by_hand_and_torch_distributions():
    # by hand: one dimension, mu = 1, sigma^2 = e: 1/2 (1 + e - 1 - 1) = (e - 1) / 2
    kl = kl_divergence(torch.tensor([[1.0]]), torch.tensor([[1.0]]))
    assert kl.shape == (1,) and math.isclose(float(kl), (math.e - 1) / 2, rel_tol=1e-6)
    # the posterior equal to the prior has KL 0
    assert float(kl_divergence(torch.zeros(1, 3), torch.zeros(1, 3))) == 0.0
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    logvar = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    torch.testing.assert_close(kl_divergence(mean, logvar), expected)


def test_reparameterised_draws_have_the_posterior_moments():
    mean, logvar = torch.full((200_000,), 0.7), torch.full((200_000,), math.log(0.25))
    z = sample_latent(mean, logvar, torch.Generator().manual_seed(1))
    assert abs(float(z.mean()) - 0.7) < 0.005 and abs(float(z.std()) - 0.5) < 0.005


def test_loss_is_reconstruction_plus_beta_kl():
    net = AutoencoderKL(tiny(channel_mult=(1, 2)))
    x = torch.rand(3, 3, 8, 8) * 2 - 1
    cfg = AutoencoderLossConfig(reconstruction="l2", beta=0.3)
    loss, parts = autoencoder_loss(net, x, cfg, torch.Generator().manual_seed(5))
    mean, logvar = net.encode(x)
    z = sample_latent(mean, logvar, torch.Generator().manual_seed(5))
    expected = (reconstruction_loss(x, net.decode(z), "l2") + 0.3 * kl_divergence(mean, logvar)).mean()
    torch.testing.assert_close(loss, expected)
    assert math.isclose(parts["kl"], float(kl_divergence(mean, logvar).detach().mean()), rel_tol=1e-5)


def trivial_images(n: int = 64) -> torch.Tensor:
    """Four 8x8 two-colour patterns (halves and quarters), repeated: a set a tiny autoencoder can memorise."""
    yy, xx = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    masks = [xx < 4, yy < 4, (xx < 4) ^ (yy < 4), (xx + yy) < 8]
    imgs = torch.stack([torch.where(m, 1.0, -1.0) for m in masks])[:, None].expand(-1, 3, -1, -1)
    colours = torch.tensor([[1.0, -0.5, 0.2], [-1.0, 0.5, 1.0], [0.3, 1.0, -1.0], [1.0, 1.0, -1.0]])
    imgs = imgs * colours[:, :, None, None]
    return imgs.repeat(n // 4, 1, 1, 1)


def test_a_tiny_autoencoder_learns_a_round_trip_and_its_scale_factor(tmp_path):
    x = trivial_images()
    cfg = AutoencoderRunConfig(
        model=tiny(channel_mult=(1, 2), channels=8),
        loss=AutoencoderLossConfig(reconstruction="l2", beta=1e-4),
        train=AutoencoderTrainConfig(images=2_000, batch_size=16, lr=3e-3, warmup_images=200, log_every_images=1000),
    )
    torch.manual_seed(cfg.train.seed)
    before = AutoencoderKL(cfg.model)  # the initialisation train_autoencoder starts from (same seed)
    summary = train_autoencoder(cfg, tmp_path, x, x[:8], progress=False)
    ae = load_autoencoder(tmp_path)
    with torch.no_grad():
        err_before = float(((before.decode(before.encode(x)[0]) - x) ** 2).mean())
    err_after = float(((ae.decode(ae.encode(x)[0]) - x) ** 2).mean())
    assert err_after < 0.01 < err_before / 10
    assert summary["holdout_psnr_db"] > 25
    # the scale factor is 1 / std of the training latents, z ~ q(z | x) drawn with the run's seed
    mean, logvar = ae.encode(x)
    z = ae.sample_latent(mean, logvar, torch.Generator().manual_seed(SCALE_SEED))
    assert math.isclose(ae.scale_factor, 1 / float(z.double().std()), rel_tol=1e-5)
    assert math.isclose(float((ae.scale_factor * z).std()), 1.0, rel_tol=1e-5)
    assert ae.data_shape == (3, 8, 8) and ae.sha256 == sha256_file(tmp_path / "autoencoder.safetensors")
    assert json.loads((tmp_path / "autoencoder.json").read_text())["scale_factor"] == ae.scale_factor
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["images_seen"] for r in rows] == [1008, 2000]


def test_latent_scale_factor_is_one_over_std():
    z = torch.randn(1000, 4, 2, 2) * 3 + 1
    assert math.isclose(latent_scale_factor(z), 1 / float(z.double().std()), rel_tol=1e-12)


def test_load_autoencoder_refuses_what_is_not_one(tmp_path):
    with pytest.raises(AutoencoderError, match="is missing"):
        load_autoencoder(tmp_path)
    (tmp_path / "autoencoder.safetensors").write_bytes(b"not weights at all")
    with pytest.raises(AutoencoderError, match="does not hold"):
        load_autoencoder(tmp_path)


def test_emoji64_preset_is_f4_on_64px_emoji():
    cfg = AUTOENCODER_PRESETS["emoji64-ae"]
    assert cfg.data.source == "emoji" and cfg.data.emoji_size == 64 and cfg.model.factor == 4
    assert isinstance(cfg.data, DataConfig) and cfg.data.holdout > 0


def test_train_autoencoder_command_writes_a_run_folder(tmp_path):
    out = tmp_path / "ae"
    rc, stdout, err = cli(
        *("train-autoencoder", "--preset", "tiny-ae", "--out", out, "--no-progress"),
        *("--set", "train.images=256", "--set", "train.log_every_images=128"),
    )
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "autoencoder.json",
        "autoencoder.safetensors",
        "config.json",
        "metrics.jsonl",
        "reconstructions.png",
    ]
    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == "tiny-ae" and config["train"]["images"] == 256
    ae = load_autoencoder(out)
    assert ae.data_shape == (1, 8, 8) and f"scale factor {ae.scale_factor:.4f}" in stdout
    # the folder is an autoencoder's: a diffusion run (which would rewrite its config.json) or another autoencoder
    # started there is refused in one line, the folder unchanged
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for argv, words in (
        (["train", "--preset", "digits-test", "--set", "train.images=32"], "holds an autoencoder (train-autoencoder)"),
        # --no-resume (which the refusal used to suggest) wrote a diffusion run's config.json over the autoencoder's
        (["train", "--preset", "digits-test", "--set", "train.images=32", "--no-resume"], "holds an autoencoder"),
        (["train-autoencoder", "--preset", "tiny-ae"], "is not empty"),
    ):
        rc, _, err = cli(*argv, "--out", out, "--no-progress")
        assert rc == 2 and len(err.strip().splitlines()) == 1 and words in err, err
    # given where a diffusion run goes, it is named for what it is (its config.json was called damaged)
    for argv in (["sample", out, "--n", "2"], ["evaluate", out], ["card", out], ["train-classifier", out]):
        rc, _, err = cli(*argv)
        assert rc == 2 and "holds an autoencoder (train-autoencoder), not a diffusion run" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    rc, stdout, _ = cli("train-autoencoder", "--preset", "tiny-ae", "--set", "loss.beta=0.5", "--dry-run")
    assert rc == 0 and json.loads(stdout)["loss"]["beta"] == 0.5


def test_train_autoencoder_killed_runs_again_and_a_running_one_is_not_touched(tmp_path):
    """A real train-autoencoder process: while it trains, a second one into its folder is refused in one line (the
    run lock) and changes nothing; after kill -9 (no clean-up of its own ran) the same command starts over and
    finishes there. A folder that holds anything besides such a run's own files stays refused."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "ae"
    args = ["train-autoencoder", "--preset", "tiny-ae", "--out", str(out), "--no-progress"]
    long = ["--set", "train.images=100000000", "--set", "train.log_every_images=64"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "torchdiffusion", *args, *long], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").stat().st_size):
            assert p.poll() is None and time.monotonic() < deadline, p.stderr.read().decode()[-2000:]
            time.sleep(0.1)
        before = {f.name: f.read_bytes() for f in out.iterdir() if f.name != "metrics.jsonl"}
        rc, _, err = cli(*args, "--set", "train.images=64")
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "being trained by another process" in err, err
        assert {f.name: f.read_bytes() for f in out.iterdir() if f.name != "metrics.jsonl"} == before
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
        p.stderr.close()
    assert p.returncode == -signal.SIGKILL and (out / "config.json").is_file()
    (out / "notes.txt").write_text("mine")  # a file of the user's: the folder is not just a killed run
    rc, _, err = cli(*args, "--set", "train.images=64")
    assert rc == 2 and "is not empty" in err, err
    (out / "notes.txt").unlink()
    rc, stdout, err = cli(*args, "--set", "train.images=64")
    assert rc == 0 and "ended before it finished (config.json, metrics.jsonl): starting it again" in err, err
    assert json.loads((out / "config.json").read_text())["train"]["images"] == 64
    assert json.loads((out / "autoencoder.json").read_text())["images_seen"] == 64
    assert [json.loads(line)["images_seen"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [64]


@pytest.mark.parametrize(
    "settings,needle",
    [
        (["nope.key=1"], "unknown config key 'nope.key'"),
        (["data.source=toy"], "image"),
        (["model.in_channels=3"], "channels"),
        (["data.image_size=7,7"], "f=2 must divide"),
        (["loss.perceptual=1", "loss.perceptual_blocks=16"], "use loss.perceptual_blocks=5 or fewer"),  # a traceback
    ],
)
def test_train_autoencoder_refuses_bad_input_in_one_line(tmp_path, settings, needle):
    out = tmp_path / "new" / "ae"
    rc, stdout, err = cli(
        "train-autoencoder", "--preset", "tiny-ae", "--out", out, *[a for s in settings for a in ("--set", s)]
    )
    assert rc == 2 and stdout == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith("torchdiffusion train-autoencoder: error: ") and needle in err
    assert list(tmp_path.iterdir()) == []


TRAINING_COMMANDS = (("train", "digits-test"), ("train-autoencoder", "tiny-ae"), ("train-clip", "emoji16-clip-tiny"))


@pytest.mark.parametrize(
    "setting",
    [
        "data.channels=2",
        "data.image_size=0,0",
        "data.source=nope",
        "data.holdout=-5",
        "data.limit=0",
        "data.seed=-1",
        "data.toy=nope",
        "data.scale=nope",
    ],
)
def test_every_training_command_refuses_a_data_setting_as_train_does(tmp_path, setting):
    """train-autoencoder and train-clip check the data section as train does (config._data_checks): the same
    one-line refusal, at --dry-run as before a run, with nothing written. They printed such a config at --dry-run
    and refused it only once the data loaded, if at all (data.channels=2)."""
    said = set()
    for command, preset in TRAINING_COMMANDS:
        for extra in (["--dry-run"], ["--out", tmp_path / command, "--no-progress"]):
            rc, out, err = cli(command, "--preset", preset, "--set", setting, *extra)
            assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1, (command, err)
            said.add(err.split(": error: ", 1)[1].strip())
        assert not (tmp_path / command).exists()
    assert len(said) == 1, said


@pytest.mark.parametrize(
    "command, preset, setting, says",
    [
        ("train-autoencoder", "tiny-ae", "train.seed=99999999999999999999999", "train.seed must be in [0, "),
        ("train-clip", "emoji16-clip-tiny", "train.seed=99999999999999999999999", "train.seed must be in [0, "),
        ("train-autoencoder", "tiny-ae", "model.channels=100000", "model.channels must be in [1, 4096]"),
        ("train-autoencoder", "tiny-ae", "model.channel_mult=1,1024", "model.channel_mult"),
        ("train-autoencoder", "tiny-ae", "model.latent_channels=100000", "model.latent_channels must be in [1, 4096]"),
        ("train-autoencoder", "tiny-ae", "model.num_res_blocks=1000", "model.num_res_blocks must be in [1, 64]"),
        ("train-autoencoder", "tiny-ae", "train.batch_size=1000000", "train.batch_size must be in [1, 65536]"),
        ("train-autoencoder", "tiny-ae", "train.threads=100000", "train.threads must be in [0, 4096]"),
    ],
)
def test_the_autoencoder_and_text_encoder_bound_seeds_and_widths_as_train_does(
    tmp_path, command, preset, setting, says
):
    """A seed past 2^62 (train.seed) or a width no machine holds is refused before anything loads: the autoencoder
    took them until its first step ('Overflow when unpacking long long') or an allocation."""
    for extra in (["--dry-run"], ["--out", tmp_path / "run", "--no-progress"]):
        rc, out, err = cli(command, "--preset", preset, "--set", setting, *extra)
        assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and says in err, err
    assert not (tmp_path / "run").exists()


def test_a_batch_larger_than_the_data_trains_the_images_asked_for():
    """batches(): 10 images, batch 32, 100 images asked: batches of 32, 32, 32, 4, each holding every image (it
    cut each batch to the 10 images while counting 32: the run stopped at 34 images and wrote no metrics)."""
    from torchdiffusion.training.autoencoder import batches

    drawn = list(batches(10, 32, 100, seed=0))
    assert [len(b) for b in drawn] == [32, 32, 32, 4]
    assert all(set(b.tolist()) == set(range(10)) for b in drawn[:3])
    small = list(batches(10, 4, 20, seed=0))  # a batch within the data: one permutation at a time, as before
    assert [len(b) for b in small] == [4, 4, 4, 4, 4] and len(set(torch.cat(small[:2]).tolist())) == 8


def test_the_perceptual_distance_takes_rgb_or_grayscale_images_it_can_read():
    from torchdiffusion.nets.perceptual import EfficientNetPerceptual

    p = EfficientNetPerceptual(5)
    p.check_images(1, 8, 8)
    p.check_images(3, 8, 8)
    for shape, says in [((2, 8, 8), "has 2 channels"), ((4, 16, 16), "has 4 channels"), ((3, 1, 1), "larger than")]:
        with pytest.raises(ValueError, match=says):
            p.check_images(*shape)


@pytest.mark.parametrize("command, preset", [("train-autoencoder", "tiny-ae"), ("train-clip", "emoji16-clip-tiny")])
def test_a_killed_autoencoder_or_text_encoder_folder_is_named_as_such(tmp_path, command, preset):
    """A folder a killed train-autoencoder / train-clip left (its config.json, no weights) was called a damaged
    diffusion run ("unknown config key 'loss'") by card and sample."""
    out = tmp_path / "killed"
    out.mkdir()
    rc, cfg, err = cli(command, "--preset", preset, "--dry-run")
    (out / "config.json").write_text(cfg)
    for argv in (["card", out], ["sample", out], ["train", "--preset", "digits-test", "--out", out]):
        rc, _, err = cli(*argv)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "holds an unfinished" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
