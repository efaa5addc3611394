"""Latent diffusion on the training/sampling path: a tiny autoencoder (random weights, 8x8 digits -> 2x4x4
latents), a diffusion run on its cached latents, decoded sampling, editing in latents, and the refusals.

Commands run through the CLI's ``main`` in this process (``tinyruns.cli``: the same parsing, code and one-line
errors as ``python -m torchdiffusion``, without a torch import each)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tinyruns import cli
from torchdiffusion.autoencoder import WEIGHTS_FILE, save_autoencoder
from torchdiffusion.config import ConfigError, DataConfig, override
from torchdiffusion.nets.autoencoder import AutoencoderKL, AutoencoderNetConfig
from torchdiffusion.presets import get_preset

pytestmark = pytest.mark.usefixtures("one_thread")

LATENT_RUN = ["train.images=128", "data.holdout=50", "model.attn_resolutions=2", "sample.steps=3", "sample.n=4"]


def make_autoencoder(folder: Path, *, channels: int = 1, size: int = 8, seed: int = 0, scale: float = 1.5) -> Path:
    """An autoencoder run folder as train-autoencoder writes its weights: f = 2, c = 2, random weights."""
    torch.manual_seed(seed)
    net = AutoencoderKL(
        AutoencoderNetConfig(in_channels=channels, latent_channels=2, channels=8, channel_mult=(1, 2), groups=4)
    )
    folder.mkdir(parents=True, exist_ok=True)
    save_autoencoder(net, folder / WEIGHTS_FILE, scale, (channels, size, size))
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The autoencoder, a latent run trained on its latents (by the CLI, as a user would), and the cache folder."""
    root = tmp_path_factory.mktemp("latent")
    env = {"TORCHDIFFUSION_CACHE": str(root / "cache")}
    ae = make_autoencoder(root / "ae")
    sets = [f"data.latents_of={ae}", *LATENT_RUN]
    code, _, err = cli("train", "--preset", "digits-test", "--out", root / "ldm", "--no-progress",
                       *[a for s in sets for a in ("--set", s)], env=env)  # fmt: skip
    assert code == 0, err
    return {"root": root, "ae": ae, "run": root / "ldm", "env": env, "sets": sets}


@pytest.fixture
def cache_env(world, monkeypatch):
    monkeypatch.setenv("TORCHDIFFUSION_CACHE", world["env"]["TORCHDIFFUSION_CACHE"])


def test_the_run_records_its_autoencoder_and_trains_on_latents(world):
    from torchdiffusion.autoencoder import load_autoencoder

    info = json.loads((world["run"] / "run.json").read_text())
    ae = load_autoencoder(world["ae"])
    assert info["latents_of"] == {"path": str(world["ae"].resolve()), "sha256": ae.sha256, "relative": "../ae"}
    assert info["data_shape"] == [2, 4, 4] and info["image_shape"] == [1, 8, 8]
    cfg = json.loads((world["run"] / "config.json").read_text())
    assert cfg["data"]["latents_of"] == str(world["ae"])
    assert cfg["sample"]["clip_denoised"] is False  # latents have no [-1, 1] range; decoded images are clamped


def test_sampling_decodes_to_images(world, cache_env):
    from torchdiffusion.generate import generate, load_run

    run = load_run(world["run"])
    assert run.codec is not None and run.data_shape == (2, 4, 4) and run.image_shape == (1, 8, 8)
    x = generate(run.model, range(6), run.config.sample, run.data_shape, codec=run.codec)
    assert x.shape == (6, 1, 8, 8) and x.min() >= -1 and x.max() <= 1
    # the decode is the last step: the same seeds without the codec give latents that decode to the same images
    z = generate(run.model, range(6), run.config.sample, run.data_shape)
    assert z.shape == (6, 2, 4, 4)
    torch.testing.assert_close(run.codec.decode(z), x)
    # per-image seeds: image k does not depend on the batch size
    x2 = generate(run.model, range(6), run.config.sample.__class__(**{**vars(run.config.sample), "batch_size": 2}),
                  run.data_shape, codec=run.codec)  # fmt: skip
    torch.testing.assert_close(x2, x)


def test_sample_command_writes_decoded_images(world, tmp_path):
    out = tmp_path / "s.png"
    code, stdout, err = cli("sample", world["run"], "--n", "5", "--out", out, "--save-npy", env=world["env"])
    assert code == 0, err
    x = np.load(out.with_suffix(".npy"))
    assert x.shape == (5, 1, 8, 8) and x.min() >= -1 and x.max() <= 1


def test_the_cache_is_reused_and_a_changed_autoencoder_invalidates_it(world, cache_env, monkeypatch, tmp_path):
    from torchdiffusion import latent

    cfg = override(get_preset("digits-test"), [f"data.latents_of={world['ae']}", *LATENT_RUN]).data
    files = sorted((Path(world["env"]["TORCHDIFFUSION_CACHE"]) / "latents").glob("*.npy"))
    assert len(files) == 1  # encoded once, by the training
    before = files[0].read_bytes()

    def never(*a, **k):
        raise AssertionError("encoded again although the cache holds these latents")

    with monkeypatch.context() as m:
        m.setattr(latent.LatentCodec, "encode", never)
        data = latent.load_latents(cfg, "train", 0, progress=False)
    assert not data.x.numpy().flags.owndata  # memory-mapped from the cache file
    assert data.x.shape == (1747, 2, 4, 4) and data.labels is not None
    # the cached latents are s * mean(q(z | x)) of the pixel data
    from torchdiffusion.data import load_data

    pixels = load_data(cfg, "train", 0).x[:16]
    codec = latent.open_codec(world["ae"])
    mean, _ = codec.autoencoder.encode(pixels)
    torch.testing.assert_close(data.x[:16], codec.scale_factor * mean)

    # the same folder, new weights: another sha256, so another cache file; the old one is left as it was
    ae2 = make_autoencoder(tmp_path / "ae", seed=1)
    moved = replace_weights(world["ae"], ae2)
    try:
        data2 = latent.load_latents(cfg, "train", 0, progress=False)
        files2 = sorted((Path(world["env"]["TORCHDIFFUSION_CACHE"]) / "latents").glob("*.npy"))
        assert len(files2) == 2 and files[0].read_bytes() == before
        assert not torch.allclose(data2.x[:16], data.x[:16])
    finally:
        restore_weights(world["ae"], moved)


def replace_weights(folder: Path, other: Path) -> bytes:
    old = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    return old


def restore_weights(folder: Path, old: bytes) -> None:
    (folder / WEIGHTS_FILE).write_bytes(old)


def test_images_changed_on_disk_are_encoded_again_not_read_from_the_cache(world, cache_env, tmp_path):
    """A folder whose files change under the same path and settings: the cache is named by the pixels."""
    from PIL import Image

    from torchdiffusion import latent

    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    cfg = DataConfig(source="folder", path=str(tmp_path), latents_of=str(world["ae"]))
    latents = Path(world["env"]["TORCHDIFFUSION_CACHE"]) / "latents"
    cached = len(list(latents.glob("*.npy")))
    first = latent.load_latents(cfg, progress=False).x.clone()
    Image.fromarray(np.full((8, 8), 255, dtype=np.uint8)).save(tmp_path / "3.png")  # one file edited
    again = latent.load_latents(cfg, progress=False).x.clone()
    assert len(list(latents.glob("*.npy"))) == cached + 2  # one file for each version of the images
    assert not torch.equal(first, again)


def test_a_cache_that_disagrees_with_its_record_is_refused(world, cache_env):
    from torchdiffusion import latent
    from torchdiffusion.config import ConfigError
    from torchdiffusion.data import load_data
    from torchdiffusion.io import sha256_tensor

    cfg = override(get_preset("digits-test"), [f"data.latents_of={world['ae']}", *LATENT_RUN]).data
    codec = latent.open_codec(world["ae"])
    path = (
        Path(world["env"]["TORCHDIFFUSION_CACHE"])
        / "latents"
        / f"{latent.cache_key(sha256_tensor(load_data(cfg, 'train', 0).x), codec.sha256)}.npy"
    )
    rec = path.with_suffix(".json")
    old = rec.read_text()
    try:
        rec.write_text(json.dumps({**json.loads(old), "npy_sha256": "0" * 64}))
        with pytest.raises(ConfigError, match="does not hold the latents"):
            latent.load_latents(cfg, "train", 0, progress=False)
    finally:
        rec.write_text(old)


def test_a_run_whose_autoencoder_changed_is_refused(world, tmp_path):
    moved = replace_weights(world["ae"], make_autoencoder(tmp_path / "ae", seed=2))
    try:
        code, _, err = cli("sample", world["run"], "--n", "2", "--out", tmp_path / "s.png", env=world["env"])
        assert code == 2 and "stale" in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "s.png").exists()
        before = {p: p.stat().st_mtime_ns for p in world["run"].rglob("*")}
        sets = [a for s in world["sets"] for a in ("--set", s)]
        code, _, err = cli("train", "--preset", "digits-test", "--out", world["run"], "--no-progress", *sets,
                           "--set", "train.images=256", env=world["env"])  # fmt: skip
        assert code == 2 and "stale" in err and len(err.strip().splitlines()) == 1
        assert {p: p.stat().st_mtime_ns for p in world["run"].rglob("*")} == before
    finally:
        restore_weights(world["ae"], moved)


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda root: make_autoencoder(root / "ae16", size=16), "encodes 1x16x16 images"),
        (lambda root: make_autoencoder(root / "ae3", channels=3), "encodes 3x8x8 images"),
        (lambda root: (root / "notae").mkdir() or (root / "notae"), "is not an autoencoder run"),
        (lambda root: root / "missing", "no such run folder"),
    ],
)
def test_bad_latents_of_is_one_line_exit_2_nothing_written(make, needle, world, tmp_path):
    ae = make(tmp_path)
    cache = tmp_path / "cache"
    code, _, err = cli("train", "--preset", "digits-test", "--out", tmp_path / "run", "--no-progress",
                       "--set", f"data.latents_of={ae}", env={"TORCHDIFFUSION_CACHE": str(cache)})  # fmt: skip
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists() and not cache.exists()


def test_a_latent_run_reads_the_images_its_autoencoder_was_trained_on_split_the_same_way(world, tmp_path):
    """Only the image shape was checked: a latent run on its autoencoder's images with another holdout or another
    split seed (it would train on images the autoencoder held out) passed. Each is refused in one line, nothing
    written; the same split, or the autoencoder's split seed given as data.seed, pass - and so do other images of
    the same shape (an autoencoder serving another data set)."""
    import shutil
    from dataclasses import asdict, replace

    from torchdiffusion.latent import check_same_images, open_codec

    ae = tmp_path / "ae"
    shutil.copytree(world["ae"], ae)
    run = override(get_preset("digits-test"), [f"data.latents_of={ae}", *LATENT_RUN])
    trained = {"preset": "tiny-ae", "data": asdict(replace(run.data, latents_of=None)), "train": {"seed": 7}}
    (ae / "config.json").write_text(json.dumps(trained))
    codec = open_codec(ae)
    check_same_images(override(run, ["data.seed=7"]), codec)  # the autoencoder's split, another train.seed
    check_same_images(override(run, ["train.seed=7"]), codec)
    check_same_images(override(run, ["data.source=mnist5k", "data.holdout=60"]), codec)  # other images
    check_same_images(override(run, ["data.limit=20", "data.seed=7"]), codec)  # a subset of its training images
    for sets, needle in [
        (["data.holdout=60", "data.seed=7"], "data.holdout=60, but the autoencoder"),
        ([], "with seed 0, its autoencoder"),  # train.seed 0 splits otherwise than the autoencoder's 7
    ]:
        with pytest.raises(ConfigError, match=needle):
            check_same_images(override(run, sets), codec)
    code, _, err = cli("train", "--preset", "digits-test", "--out", tmp_path / "run", "--no-progress",
                       *[a for s in [f"data.latents_of={ae}", *LATENT_RUN] for a in ("--set", s)],
                       env=world["env"])  # fmt: skip
    assert code == 2 and "--set data.seed=7" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "source, leftovers",
    [
        ("folder", ["data.emoji_size=64", "data.emoji_set=sequences"]),  # the emoji preset's, unread by a folder
        ("digits", ["data.path=/some/other/folder"]),  # the digits source reads no file
    ],
)
def test_the_split_check_compares_only_the_fields_the_source_reads(source, leftovers, world, tmp_path):
    """An autoencoder and a latent run started from different presets on the same images differ in fields their
    source does not read (an emoji size under data.source=folder): they are still the same images, so another
    holdout is refused in one line, not passed as other images."""
    import shutil
    from dataclasses import asdict, replace

    from torchdiffusion.latent import check_same_images, open_codec

    ae = tmp_path / "ae"
    shutil.copytree(world["ae"], ae)
    path = [f"data.path={tmp_path}"] if source == "folder" else []
    run = override(get_preset("digits-test"), [f"data.latents_of={ae}", f"data.source={source}", *path, *LATENT_RUN])
    theirs = override(run, leftovers)
    trained = {"data": asdict(replace(theirs.data, latents_of=None)), "train": {"seed": 0}}
    (ae / "config.json").write_text(json.dumps(trained))
    codec = open_codec(ae)
    check_same_images(run, codec)  # the same split
    with pytest.raises(ConfigError, match="data.holdout=60, but the autoencoder"):
        check_same_images(override(run, ["data.holdout=60"]), codec)
    check_same_images(override(run, ["data.source=mnist5k", "data.holdout=60"]), codec)  # other images


def test_a_latent_run_moved_with_its_autoencoder_still_samples(world, tmp_path):
    """run.json names the autoencoder by its absolute path and by its path from the run: moved together, the run
    finds it there (its sha256 still checked) and samples as before; moved alone, it is refused in one line."""
    import shutil

    moved = tmp_path / "elsewhere"
    shutil.copytree(world["run"], moved / "ldm")
    shutil.copytree(world["ae"], moved / "ae")
    rel = json.loads((moved / "ldm" / "run.json").read_text())["latents_of"]["relative"]
    assert (moved / "ldm" / rel).resolve() == (moved / "ae").resolve()
    info = json.loads((moved / "ldm" / "run.json").read_text())
    info["latents_of"]["path"] = str(tmp_path / "gone")  # as if the original folders were moved away
    (moved / "ldm" / "run.json").write_text(json.dumps(info))
    args = ["--n", "2", "--sampler", "ddim", "--steps", "2", "--save-npy"]
    code, _, err = cli("sample", moved / "ldm", *args, "--out", tmp_path / "a.png", env=world["env"])
    assert code == 0, err
    code, _, err = cli("sample", world["run"], *args, "--out", tmp_path / "b.png", env=world["env"])
    assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    shutil.rmtree(moved / "ae")
    code, _, err = cli("sample", moved / "ldm", *args, "--out", tmp_path / "c.png", env=world["env"])
    assert code == 2 and "cannot be loaded" in err and len(err.strip().splitlines()) == 1, err


def test_a_latent_run_moved_with_its_autoencoder_resumes_and_records_where_it_found_it(world, tmp_path):
    """Moved together (mkdir mv && mv ldm ae mv/), a latent run resumes from its own config.json - the autoencoder
    found from the run, as sampling finds it - or with data.latents_of naming the new place: the same weights
    (sha256) are the same data. config.json and run.json then name the new place; other weights are refused."""
    import shutil

    orig, mv = tmp_path / "orig", tmp_path / "mv"
    shutil.copytree(world["ae"], orig / "ae")
    shutil.copytree(world["run"], orig / "ldm")
    for name, key in (("config.json", "data"), ("run.json", "latents_of")):  # as if trained on orig/ae
        info = json.loads((orig / "ldm" / name).read_text())
        info[key]["latents_of" if key == "data" else "path"] = str(orig / "ae")
        (orig / "ldm" / name).write_text(json.dumps(info))
    orig.rename(mv)

    def resume(images, *sets):
        sets = [f"train.images={images}", *sets]
        return cli("train", "--config", mv / "ldm" / "config.json", "--out", mv / "ldm", "--no-progress",
                   *[a for s in sets for a in ("--set", s)], env=world["env"])  # fmt: skip

    code, _, err = resume(192)
    assert code == 0, err
    assert json.loads((mv / "ldm" / "config.json").read_text())["data"]["latents_of"] == str((mv / "ae").resolve())
    assert json.loads((mv / "ldm" / "run.json").read_text())["latents_of"]["path"] == str((mv / "ae").resolve())
    assert json.loads((mv / "ldm" / "run.json").read_text())["images_seen"] == 192
    (mv / "ldm" / "config.json").write_text(
        (mv / "ldm" / "config.json").read_text().replace(str((mv / "ae").resolve()), str(orig / "ae"))
    )
    code, _, err = resume(256, f"data.latents_of={mv / 'ae'}")
    assert code == 0, err
    other = make_autoencoder(tmp_path / "other", seed=1)
    code, _, err = resume(320, f"data.latents_of={other}")
    assert code == 2 and "the latents are stale" in err and len(err.strip().splitlines()) == 1, err


def test_the_card_of_a_latent_run_names_its_images_and_its_autoencoder(world, tmp_path):
    from torchdiffusion.autoencoder import load_autoencoder

    code, _, err = cli("card", world["run"], "--out", tmp_path / "CARD.md", env=world["env"])
    assert code == 0, err
    text = (tmp_path / "CARD.md").read_text()
    assert "| data shape | 1 x 8 x 8 images, diffused as 2 x 4 x 4 latents |" in text
    assert f"sha256 `{load_autoencoder(world['ae']).sha256}`), needed to sample" in text
    assert "It draws 1 x 8 x 8 examples" in text


def test_a_diffusion_run_is_not_an_autoencoder(world, tmp_path):
    code, _, err = cli("train", "--preset", "digits-test", "--out", tmp_path / "run", "--no-progress",
                       "--set", f"data.latents_of={world['run']}", env=world["env"])  # fmt: skip
    assert code == 2 and "not an autoencoder run" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_latent_mask_is_known_only_where_every_pixel_is():
    from torchdiffusion.latent import latent_mask

    m = torch.ones(1, 1, 8, 8)
    m[..., 3:6, 0:2] = 0  # a hole over rows 3..5, columns 0..1
    mz = latent_mask(m, (4, 4))
    want = torch.ones(1, 1, 4, 4)
    want[..., 1:3, 0] = 0  # latent rows 1 (pixels 2, 3) and 2 (pixels 4, 5) touch the hole; column 0 only
    assert torch.equal(mz, want)
    assert torch.equal(latent_mask(torch.ones(1, 1, 8, 8), (4, 4)), torch.ones(1, 1, 4, 4))


def test_latent_inpainting_keeps_the_known_pixels_exactly(world, cache_env):
    from torchdiffusion.commands.inpaint import inpaint_images
    from torchdiffusion.data import load_data
    from torchdiffusion.generate import clamps_x0, load_run, make_grid_sigmas
    from torchdiffusion.latent import edit_in_latents, latent_mask
    from torchdiffusion.masks import make_mask
    from torchdiffusion.samplers import get_sampler

    run = load_run(world["run"])
    x = load_data(run.config.data, "holdout", 0).x[:4]
    mask = make_mask("centre", 8, 8)
    sigmas = make_grid_sigmas(
        run.model, run.config.sample, clamped=clamps_x0(run.config.sample, run.data_shape, run.codec)
    )
    D, sampler = run.model.bind(None), get_sampler(run.config.sample.sampler)
    m_z = latent_mask(mask, (4, 4))
    kw = dict(seed=0, jump=None, resample=1, knobs={})
    out = edit_in_latents(run.codec, x, lambda z: inpaint_images(sampler, D, z, sigmas, m_z, **kw), mask=mask)
    assert out.shape == x.shape
    known = mask.expand_as(x).bool()
    assert torch.equal(out[known], x[known])  # bit for bit
    assert not torch.equal(out[~known], x[~known])  # the hole was generated


def test_inpaint_and_img2img_commands_on_a_latent_run(world, tmp_path):
    from PIL import Image

    for cmd, extra in (("inpaint", ["--mask", "centre"]), ("img2img", ["--strength", "0", "0.7"])):
        out = tmp_path / f"{cmd}.png"
        code, _, err = cli(cmd, world["run"], "--n", "3", "--out", out, *extra, env=world["env"])
        assert code == 0, err
        grid = np.asarray(Image.open(out))
        assert grid.shape[0] > 8 * 3  # three rows of 8x8 images (with padding)


def test_latent_img2img_strength_0_is_the_input_and_1_is_decoded_sampling(world, cache_env):
    from torchdiffusion.commands.img2img import img2img_images
    from torchdiffusion.data import load_data
    from torchdiffusion.generate import clamps_x0, generate, load_run, make_grid_sigmas
    from torchdiffusion.samplers import get_sampler

    run = load_run(world["run"])
    sample = run.config.sample
    x = load_data(run.config.data, "holdout", 0).x[:3]
    sigmas = make_grid_sigmas(run.model, sample, clamped=clamps_x0(sample, run.data_shape, run.codec))
    D, sampler = run.model.bind(None), get_sampler(sample.sampler)
    kw = dict(seeds=range(3), knobs={})
    assert torch.equal(img2img_images(run, sampler, D, x, sigmas, 0.0, **kw), x)  # the input, not its reconstruction
    full = img2img_images(run, sampler, D, x, sigmas, 1.0, **kw)  # the input ignored: plain sampling, decoded
    torch.testing.assert_close(full, generate(run.model, range(3), sample, run.data_shape, codec=run.codec))
    half = img2img_images(run, sampler, D, x, sigmas, 0.5, **kw)
    assert half.shape == x.shape and half.min() >= -1 and half.max() <= 1


def test_outpaint_refuses_a_latent_run(world, tmp_path):
    code, _, err = cli("outpaint", world["run"], "--left", "4", "--out", tmp_path / "o.png", env=world["env"])
    assert code == 2 and "latents" in err and not (tmp_path / "o.png").exists()


def test_explain_and_evaluate_decode(world, tmp_path, cache_env):
    code, _, err = cli("explain", "trajectory", world["run"], "--n", "4", "--out", tmp_path / "t.png", env=world["env"])
    assert code == 0, err
    from torchdiffusion.evaluation.evaluate import quick_eval
    from torchdiffusion.generate import load_run

    run = load_run(world["run"])
    z = torch.randn(32, 2, 4, 4)
    rec = quick_eval(run.model, run.config, run.data_shape, z, n=8, codec=run.codec)
    assert all(np.isfinite(v) for v in rec.values())


def test_the_forward_strip_of_a_latent_run_noises_its_latents_and_decodes_them(world, tmp_path, monkeypatch):
    from torchdiffusion import explain as ex
    from torchdiffusion.generate import load_run

    strips = []
    real = ex.forward_strip
    monkeypatch.setattr(ex, "forward_strip", lambda *a, **k: strips.append((a, real(*a, **k))) or strips[-1][1])
    out = tmp_path / "f.png"
    code, _, err = cli("explain", "forward", world["run"], "--images", "2", "--t", "0", "99", "--out", out,
                       env=world["env"])  # fmt: skip
    assert code == 0, err
    (z, ts), drawn = strips[-1]
    assert z.shape[1:] == (2, 4, 4)  # the latents are noised ...
    assert drawn["cosine"].shape == (2, 2, 1, 8, 8)  # ... and drawn as the images they decode to
    vp = load_run(world["run"]).model.process
    x0 = vp.q_sample(z, torch.zeros(2, dtype=torch.long), torch.zeros_like(z))  # t = 0: sqrt(abar_0) z, nearly z
    torch.testing.assert_close(drawn["cosine"][:, 0], load_run(world["run"]).codec.decode(x0), atol=0.05, rtol=0)


def test_evaluate_reads_classes_off_the_decoded_images(world, tmp_path):
    from torchdiffusion.evaluation.classifier import ClassifierConfig, SmallClassifier, save_classifier

    for channels in (1, 2):  # the images' channels, then the latents' (2 x 4 x 4)
        net = SmallClassifier(ClassifierConfig(in_channels=channels, num_classes=10, width=8, feature_dim=16))
        save_classifier(net, tmp_path / f"c{channels}.safetensors")
    ev = ["evaluate", world["run"], "--metrics", "classes", "--n", "4", "--steps", "2"]
    code, _, err = cli(*ev, "--classifier", tmp_path / "c2.safetensors", "--out", tmp_path / "e2", env=world["env"])
    assert code == 2 and "reads 2-channel images; this run makes 1-channel ones" in err
    assert not (tmp_path / "e2").exists()
    code, _, err = cli(*ev, "--classifier", tmp_path / "c1.safetensors", "--out", tmp_path / "e1", env=world["env"])
    assert code == 0, err
    report = json.loads((tmp_path / "e1" / "report.json").read_text())
    assert report["classes"]["n"] == 4 and sum(report["classes"]["histogram"]) == pytest.approx(1.0)
    # bits/dim of a latent run would be its latents': skipped beside other metrics, refused as the only one
    code, _, err = cli("evaluate", world["run"], "--metrics", "nll", "--out", tmp_path / "nll", env=world["env"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nothing to measure on a latent run" in err, err
    assert not (tmp_path / "nll").exists()


def test_data_config_round_trips_latents_of():
    from torchdiffusion.config import from_json, to_json

    cfg = override(get_preset("digits-test"), ["data.latents_of=runs/ae"])
    assert from_json(to_json(cfg)).data == cfg.data
    assert DataConfig().latents_of is None


def test_emoji64_presets_are_one_unet_on_the_autoencoders_latents_and_on_pixels():
    from dataclasses import replace

    from torchdiffusion.autoencoder import AUTOENCODER_PRESETS
    from torchdiffusion.model import build_model

    ldm, pixel, ae = get_preset("emoji64-ldm"), get_preset("emoji64-pixel"), AUTOENCODER_PRESETS["emoji64-ae"]
    assert replace(ldm.data, latents_of=None) == pixel.data == ae.data  # same images, same held-out emoji
    assert ldm.model.num_classes == pixel.model.num_classes == 6 and ldm.train == pixel.train
    f = ae.model.factor
    latent_shape = (ae.model.latent_channels, 64 // f, 64 // f)

    def params(cfg, shape):
        return sum(p.numel() for p in build_model(cfg, shape).parameters())

    assert params(ldm, latent_shape) == params(pixel, (3, 64, 64))


@pytest.mark.parametrize("method", ["progressive", "consistency", "dmd", "reflow"])
def test_a_student_of_a_latent_teacher_is_a_latent_run_of_its_autoencoder(world, cache_env, tmp_path, method):
    """Every distillation method learns a latent teacher on the teacher's latents (progressive, consistency and
    DMD train on them; reflow on the teacher's latent samples): the student records the same autoencoder, does not
    clamp x0_hat, and samples decode to images."""
    from torchdiffusion.generate import generate, load_run

    out = tmp_path / method
    extra = ["--teacher-steps", "4"] if method == "progressive" else ["--pairs", "16"] if method == "reflow" else []
    code, _, err = cli("distill", world["run"], "--method", method, "--steps", "2", *extra, "--images", "32",
                       "--batch-size", "16", "--out", out, "--no-progress")  # fmt: skip
    assert code == 0, err
    teacher, student = load_run(world["run"]), load_run(out)
    assert student.codec is not None and student.codec.sha256 == teacher.codec.sha256
    assert student.data_shape == (2, 4, 4) and student.config.sample.clip_denoised is False
    x = generate(student.model, range(3), student.config.sample, student.data_shape, codec=student.codec,
                 grid_dir=out / "grids")  # fmt: skip
    assert x.shape == (3, 1, 8, 8) and bool(torch.isfinite(x).all())


@pytest.mark.parametrize(
    "args, needle",
    [
        (["export", "{run}", "--format", "diffusers", "--out", "{tmp}/export"], "without its autoencoder"),
        (["sample", "{run}", "--class", "1", "--classifier", "{tmp}/c.safetensors", "--out", "{tmp}/s.png"], "pixels"),
        # the noise-aware classifier it would train there is one sample --classifier refuses
        (["train-classifier", "{run}", "--images", "32", "--out", "{tmp}/clf"], "this run diffuses latents"),
    ],
)
def test_what_a_latent_run_cannot_do_is_refused(args, needle, world, tmp_path):
    (tmp_path / "c.safetensors").write_bytes(b"")
    args = [a.format(run=world["run"], tmp=tmp_path) for a in args]
    code, _, err = cli(*args, env=world["env"])
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not any((tmp_path / name).exists() for name in ("export", "s.png", "clf"))


TEXT_RUN = [
    "data.emoji_size=16", "data.emoji_set=single", "data.holdout=16", "data.limit=48", "model.channels=8",
    "model.channel_mult=1,2", "model.attn_resolutions=4", "model.head_channels=8", "train.images=256",
    "train.batch_size=16", "train.warmup_images=0", "train.lr=1e-2", "train.log_every_images=256", "sample.steps=2",
    "sample.n=4",
]  # fmt: skip


@pytest.fixture(scope="module")
def text_world(tmp_path_factory):
    """A tiny emoji64-ldm-text run: 16 px emoji -> 2 x 8 x 8 latents of a random autoencoder, caption-conditioned."""
    root = tmp_path_factory.mktemp("latent-text")
    env = {"TORCHDIFFUSION_CACHE": str(root / "cache")}
    ae = make_autoencoder(root / "ae", channels=3, size=16)
    sets = [f"data.latents_of={ae}", *TEXT_RUN]
    code, _, err = cli("train", "--preset", "emoji64-ldm-text", "--out", root / "run", "--no-progress",
                       *[a for s in sets for a in ("--set", s)], env=env)  # fmt: skip
    assert code == 0, err
    return {"run": root / "run", "env": env, "root": root}


def sample_npy(world, out: Path, *args) -> np.ndarray:
    code, _, err = cli("sample", world["run"], "--n", "4", "--steps", "2", "--out", out, "--save-npy", *args,
                       env=world["env"])  # fmt: skip
    assert code == 0, err
    return np.load(out.with_suffix(".npy"))


def test_text_to_image_in_latents_samples_from_a_prompt_with_a_negative_prompt(text_world, tmp_path):
    info = json.loads((text_world["run"] / "run.json").read_text())
    assert info["data_shape"] == [2, 8, 8] and info["image_shape"] == [3, 16, 16]
    guided = ["--prompt", "red apple", "--negative-prompt", "green", "--guidance", "5"]
    x = sample_npy(text_world, tmp_path / "a.png", *guided)
    assert x.shape == (4, 3, 16, 16) and np.isfinite(x).all() and x.min() >= -1 and x.max() <= 1
    # the prompt and the negative prompt reach the network: changing either changes the images of the same seeds
    other = sample_npy(text_world, tmp_path / "b.png", "--prompt", "rocket", *guided[2:])
    unneg = sample_npy(text_world, tmp_path / "c.png", *guided[:2], "--guidance", "5")
    assert np.abs(other - x).max() > 1e-3 and np.abs(unneg - x).max() > 1e-3
    # at w = 1 classifier-free guidance is the conditional model alone: the negative prompt, which would have no
    # effect, is refused in one line
    w1 = (*guided[:4], "--guidance", "1", "--out", tmp_path / "d.png")
    code, _, err = cli("sample", text_world["run"], *w1, env=text_world["env"])
    assert code == 2 and "--negative-prompt changes nothing at guidance 1" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "d.png").exists()
    # guidance-sweep scores classes or contexts: a caption run is refused, naming what it does take
    code, _, err = cli("guidance-sweep", text_world["run"], "--scales", "1,3", "--out", tmp_path / "gs")
    assert code == 2 and "takes captions (text" in err and len(err.strip().splitlines()) == 1, err


def test_a_prompt_for_a_latent_model_trained_without_text_is_refused(world, tmp_path):
    code, _, err = cli("sample", world["run"], "--prompt", "red apple", "--negative-prompt", "green",
                       "--out", tmp_path / "s.png", env=world["env"])  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not text-conditioned" in err, err
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def retrieval_world(tmp_path_factory):
    """The tiny text run with model.text_retrieval=2: each caption's two nearest training emoji join it."""
    root = tmp_path_factory.mktemp("latent-retrieval")
    env = {"TORCHDIFFUSION_CACHE": str(root / "cache")}
    ae = make_autoencoder(root / "ae", channels=3, size=16)
    sets = [f"data.latents_of={ae}", *TEXT_RUN, "model.text_retrieval=2"]
    code, _, err = cli("train", "--preset", "emoji64-ldm-text", "--out", root / "run", "--no-progress",
                       *[a for s in sets for a in ("--set", s)], env=env)  # fmt: skip
    assert code == 0, err
    return {"run": root / "run", "env": env, "root": root, "ae": ae}


def test_a_retrieval_run_samples_a_prompt_with_the_neighbours_its_database_gives(retrieval_world, tmp_path):
    import shutil

    from torchdiffusion.retrieval import FILE, Database, load_database, save_database

    run = retrieval_world["run"]
    db = load_database(run, 2, 2 * 8 * 8)  # every training example's caption key and latent (data.limit=48)
    assert db.keys.shape == (48, 384) and db.values.shape == (48, 128)
    x = sample_npy(retrieval_world, tmp_path / "a.png", "--prompt", "red apple", "--guidance", "3")
    assert x.shape == (4, 3, 16, 16) and np.isfinite(x).all()
    # the same weights beside another database: other neighbours for the same prompt, other images
    other = tmp_path / "other-database"
    shutil.copytree(run, other)
    save_database(Database(keys=db.keys, values=-db.values, k=2), other)
    y = sample_npy({**retrieval_world, "run": other}, tmp_path / "b.png", "--prompt", "red apple", "--guidance", "3")
    assert np.abs(y - x).max() > 1e-3
    # evaluate draws the held-out captions, each with its neighbours
    ev = ["evaluate", run, "--metrics", "fd", "--features", "raw", "--n", "4", "--out", tmp_path / "ev"]
    code, _, err = cli(*ev, env=retrieval_world["env"])
    assert code == 0, err
    # without its database the run cannot serve a prompt: one line, exit 2, nothing written
    (other / FILE).unlink()
    out = tmp_path / "none"
    out.mkdir()
    code, _, err = cli("sample", other, "--prompt", "red apple", "--out", out / "c.png", env=retrieval_world["env"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "retrieval.safetensors is missing" in err, err
    assert not list(out.iterdir())


def test_text_retrieval_without_text_is_refused(retrieval_world, tmp_path):
    sets = [f"data.latents_of={retrieval_world['ae']}", *TEXT_RUN, "model.text_dim=0", "model.text_retrieval=2"]
    code, _, err = cli("train", "--preset", "emoji64-ldm-text", "--out", tmp_path / "run", "--no-progress",
                       *[a for s in sets for a in ("--set", s)], env=retrieval_world["env"])  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "needs a text-conditioned model" in err, err
    assert not (tmp_path / "run").exists()


def test_channel_retrieval_from_the_command_line_feeds_the_neighbours_to_the_input(retrieval_world, tmp_path):
    """model.retrieval_input=channels: the input layer reads the latent's channels and as many more (the
    neighbours), no neighbour MLP is built, and another database changes the samples of the same weights."""
    import shutil

    from torchdiffusion.generate import load_run
    from torchdiffusion.retrieval import Database, load_database, save_database

    run = tmp_path / "channels"
    sets = [f"data.latents_of={retrieval_world['ae']}", *TEXT_RUN, "model.text_retrieval=2",
            "model.retrieval_input=channels"]  # fmt: skip
    code, _, err = cli("train", "--preset", "emoji64-ldm-text", "--out", run, "--no-progress",
                       *[a for s in sets for a in ("--set", s)], env=retrieval_world["env"])  # fmt: skip
    assert code == 0, err
    state = load_run(run).model.state_dict()
    assert state["net.input_conv.weight"].shape[1] == 2 + 2 and not any("neighbour_mlp" in k for k in state)
    world = {**retrieval_world, "run": run}
    x = sample_npy(world, tmp_path / "a.png", "--prompt", "red apple", "--guidance", "3")
    other = tmp_path / "other-database"
    shutil.copytree(run, other)
    db = load_database(run, 2, 2 * 8 * 8)
    save_database(Database(keys=db.keys, values=-db.values, k=2), other)
    y = sample_npy({**world, "run": other}, tmp_path / "b.png", "--prompt", "red apple", "--guidance", "3")
    assert np.abs(y - x).max() > 1e-3


def test_retrieval_guidance_from_the_command_line_needs_and_uses_a_caption_dropped_alone(retrieval_world, tmp_path):
    """train.caption_drop_prob > 0 teaches D(x | neighbours); sample.retrieval_guidance then guides towards the
    neighbours at its own scale (three network rows per step) and changes the samples; a run trained without it
    is refused in one line."""
    run = tmp_path / "caption-drop"
    sets = [f"data.latents_of={retrieval_world['ae']}", *TEXT_RUN, "model.text_retrieval=2",
            "train.caption_drop_prob=0.3", "sample.retrieval_guidance=6"]  # fmt: skip
    code, _, err = cli("train", "--preset", "emoji64-ldm-text", "--out", run, "--no-progress",
                       *[a for s in sets for a in ("--set", s)], env=retrieval_world["env"])  # fmt: skip
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["train"]["caption_drop_prob"] == 0.3
    world = {**retrieval_world, "run": run}
    assert list((run / "samples").glob("grid-*.png"))  # the end-of-training grid sampled with it too
    plain = sample_npy(world, tmp_path / "a.png", "--prompt", "red apple", "--guidance", "3",
                       "--set", "sample.retrieval_guidance=0")  # fmt: skip
    guided = sample_npy(world, tmp_path / "b.png", "--prompt", "red apple", "--guidance", "3")  # the run's w_n
    assert np.abs(guided - plain).max() > 1e-3
    meta = json.loads((tmp_path / "b.json").read_text())
    assert meta["sample"]["retrieval_guidance"] == 6 and meta["network_evaluations_per_image"] == 3 * meta["nfe"]
    # w_n = w is classifier-free guidance on caption and neighbours together
    same = sample_npy(world, tmp_path / "c.png", "--prompt", "red apple", "--guidance", "3",
                      "--set", "sample.retrieval_guidance=3")  # fmt: skip
    np.testing.assert_allclose(same, plain, atol=1e-4)
    out = tmp_path / "refused"
    out.mkdir()
    code, _, err = cli("sample", retrieval_world["run"], "--prompt", "red apple", "--out", out / "d.png",
                       "--set", "sample.retrieval_guidance=6", env=retrieval_world["env"])  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "train.caption_drop_prob > 0" in err, err
    assert not list(out.iterdir())


def test_a_size_mismatch_names_the_setting_that_sizes_the_images():
    """An autoencoder of other images than the data's: the refusal names what sizes them (emoji: data.emoji_size)."""
    from types import SimpleNamespace

    from torchdiffusion.config import ConfigError
    from torchdiffusion.latent import check_image_shape

    codec = SimpleNamespace(image_shape=(3, 64, 64), path="runs/ae")
    with pytest.raises(ConfigError, match=r"is 3x32x32; set data.emoji_size to match"):
        check_image_shape(codec, (3, 32, 32), "emoji")
    with pytest.raises(ConfigError, match=r"is 1x28x28; set data.image_size / data.channels to match"):
        check_image_shape(codec, (1, 28, 28), "folder")
    check_image_shape(codec, (3, 64, 64), "emoji")


def test_every_training_command_records_its_data_files_as_absolute_paths(world, tmp_path):
    """train-autoencoder and train-clip recorded data.path as typed ("gray"): a latent run on the same images from
    another working folder read it as other images and skipped its split check; data.latents_of given relative and
    then absolute did not resume (the data sections differed)."""
    (tmp_path / "sub").mkdir()
    for command, preset in (("train-autoencoder", "tiny-ae"), ("train-clip", "emoji16-clip-tiny")):
        code, out, err = cli(command, "--preset", preset, "--dry-run", "--set", "data.source=folder",
                             "--set", "data.path=imgs", cwd=tmp_path / "sub")  # fmt: skip
        assert code == 0, err
        assert json.loads(out)["data"]["path"] == str(tmp_path / "sub" / "imgs"), command
    rel = Path(os.path.relpath(world["ae"], tmp_path))
    code, out, err = cli("train", "--preset", "digits-test", "--dry-run", "--set", f"data.latents_of={rel}",
                         cwd=tmp_path)  # fmt: skip
    assert code == 0 and json.loads(out)["data"]["latents_of"] == str(world["ae"].resolve()), err
    # the world's run, trained with an absolute latents_of, resumes from a relative one (same folder from here)
    run = tmp_path / "ldm"
    import shutil

    shutil.copytree(world["run"], run)
    sets = [f"data.latents_of={rel}", *LATENT_RUN[1:], "train.images=160"]
    code, _, err = cli("train", "--preset", "digits-test", "--out", run, "--no-progress",
                       *[a for s in sets for a in ("--set", s)], cwd=tmp_path, env=world["env"])  # fmt: skip
    assert code == 0 and "different data section" not in err, err
