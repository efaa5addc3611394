"""data.scale: an array in its own units (kelvins, volts, counts) mapped per channel to [-1, 1] and back - the
bounds from the training rows alone, recorded in the run's config, and every output written in data units."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from test_cli_errors import assert_clean_error
from tinyruns import cli
from torchdiffusion.config import ConfigError, DataConfig, RunConfig, validate
from torchdiffusion.data import DataError, load_data, split_indices
from torchdiffusion.data.scale import PERCENTILES, fit_range, to_data_units, to_model_units
from torchdiffusion.generate import generate, load_run

pytestmark = pytest.mark.usefixtures("one_thread")


def _units(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """(N, 3, ...) float32: channel 0 in kelvins (~250-320), channel 1 in millivolts (~1e-3), channel 2 constant."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    a[:, 0] = 285 + 12 * a[:, 0]
    a[:, 1] = 2e-3 * a[:, 1]
    a[:, 2] = 7.0
    return a.astype(np.float32)


def test_minmax_sends_each_channels_extremes_to_minus_one_and_one_and_back():
    a = _units((40, 3, 5, 6))
    lo, hi = fit_range(a, "minmax")
    x = to_model_units(torch.from_numpy(a), lo, hi)
    for c in range(2):
        assert (lo[c], hi[c]) == (float(a[:, c].min()), float(a[:, c].max()))
        assert float(x[:, c].min()) == pytest.approx(-1, abs=1e-6) and float(x[:, c].max()) == pytest.approx(
            1, abs=1e-6
        )
    assert (lo[2], hi[2]) == (6.0, 8.0) and torch.all(x[:, 2] == 0)  # a constant channel: centred, width 2
    back = to_data_units(x.double(), lo, hi)
    assert torch.allclose(back, torch.from_numpy(a).double(), rtol=1e-6, atol=1e-9)


def test_percentile_bounds_clamp_the_outliers_only():
    a = _units((200, 3, 8))
    a[0, 0, 0] = 1e6  # one wild reading
    lo, hi = fit_range(a, "percentile")
    want = np.percentile(a[:, 0].astype(np.float64).ravel(), PERCENTILES)
    assert (lo[0], hi[0]) == pytest.approx(tuple(want)) and hi[0] < 400
    x = to_model_units(torch.from_numpy(a), lo, hi, clamp=True)
    assert float(x.abs().max()) == 1.0 and x[0, 0, 0] == 1.0
    inside = (a[:, 0] > lo[0]) & (a[:, 0] < hi[0])
    assert inside.mean() == pytest.approx(0.99, abs=0.01)  # 1 % of the values lie beyond the two bounds


@pytest.mark.parametrize(
    "shape, layout, kind",
    [
        ((30, 3, 6, 5), "auto", "image"),
        ((30, 6, 5, 3), "NHWC", "image"),
        ((30, 3, 40), "auto", "signal"),
        ((30, 3, 4, 4, 4), "auto", "volume"),
        ((30, 3), "auto", "vector"),
    ],
)
def test_every_kind_of_array_is_scaled_by_its_training_rows(tmp_path, shape, layout, kind):
    chw = (shape[0], shape[3], shape[1], shape[2]) if layout == "NHWC" else shape
    a = _units(chw)
    np.save(tmp_path / "a.npy", a.transpose(0, 2, 3, 1) if layout == "NHWC" else a)
    cfg = DataConfig(source="array", path=str(tmp_path / "a.npy"), layout=layout, scale="minmax", holdout=6)
    d = load_data(cfg, "train", seed=3)
    train_idx, held_idx = split_indices(30, 6, 3)
    lo, hi = d.value_range
    assert d.kind == kind and lo[0] == float(a[train_idx, 0].min()) and hi[0] == float(a[train_idx, 0].max())
    assert float(d.x.min()) >= -1 - 1e-6 and float(d.x.max()) <= 1 + 1e-6
    assert torch.allclose(to_data_units(d.x, lo, hi), torch.from_numpy(a[train_idx]), rtol=1e-5, atol=1e-7)
    held = load_data(cfg, "holdout", seed=3)  # mapped by the training rows' bounds, not its own
    assert held.value_range == d.value_range
    assert torch.allclose(to_data_units(held.x, lo, hi), torch.from_numpy(a[held_idx]), rtol=1e-5, atol=1e-7)
    fixed = DataConfig(**{**cfg.__dict__, "scale_lo": (0.0, 0.0, 0.0), "scale_hi": (1000.0, 1.0, 10.0)})
    x = load_data(fixed, "train", seed=3).x  # recorded bounds are used as they are
    assert torch.allclose(x[:, 0], torch.from_numpy(a[train_idx, 0]) / 500 - 1, atol=1e-6)


def test_a_folder_of_float_tiffs_in_kelvins_is_scaled_by_its_training_images(tmp_path):
    from PIL import Image

    a = _units((12, 3, 6, 7))[:, 0]
    (tmp_path / "pics").mkdir()
    for i, im in enumerate(a):
        Image.fromarray(im, mode="F").save(tmp_path / "pics" / f"{i:02d}.tiff")
    with pytest.raises(DataError, match="set data.scale=minmax or percentile"):
        load_data(DataConfig(source="folder", path=str(tmp_path / "pics")))
    cfg = DataConfig(source="folder", path=str(tmp_path / "pics"), scale="minmax", holdout=3)
    d = load_data(cfg, seed=1)
    train_idx, _ = split_indices(12, 3, 1)
    assert d.value_range == ((float(a[train_idx].min()),), (float(a[train_idx].max()),))
    assert torch.allclose(to_data_units(d.x, *d.value_range)[:, 0], torch.from_numpy(a[train_idx]), rtol=1e-6)
    assert float(d.x.min()) == pytest.approx(-1) and float(d.x.max()) == pytest.approx(1)


def test_a_folder_in_its_own_units_is_read_as_the_numbers_stored_in_it(tmp_path):
    """Signed 16-bit TIFFs (a CT's Hounsfield units, -1000..3000), 16-bit PNG counts and 8-bit PNGs: refused or
    read as pixels without data.scale; with it, each file's stored numbers, the range of the training ones mapped."""
    from PIL import Image

    rng = np.random.default_rng(3)
    hu = rng.integers(-1000, 3000, (8, 6, 7)).astype(np.int16)
    counts = rng.integers(0, 65536, (8, 6, 7)).astype(np.uint16)
    gray = rng.integers(0, 256, (8, 6, 7)).astype(np.uint8)
    for name, stack in (("hu", hu), ("counts", counts), ("gray", gray)):
        (tmp_path / name).mkdir()
        for i, im in enumerate(stack):
            Image.fromarray(im.astype(np.int32) if name == "hu" else im).save(
                tmp_path / name / f"{i}.{'tif' if name == 'hu' else 'png'}"
            )
    with pytest.raises(DataError, match=r"integer pixels span \[-\d+, \d+\], beyond 16 bits.*set data.scale=minmax"):
        load_data(DataConfig(source="folder", path=str(tmp_path / "hu")))
    train_idx, _ = split_indices(8, 2, 0)
    for name, stack in (("hu", hu), ("counts", counts), ("gray", gray)):
        d = load_data(DataConfig(source="folder", path=str(tmp_path / name), scale="minmax", holdout=2))
        rows = stack[train_idx.numpy()].astype(np.float64)
        assert d.value_range == ((rows.min(),), (rows.max(),)), name
        back = to_data_units(d.x, *d.value_range)[:, 0].double().numpy()
        assert sorted(map(bytes, np.round(back).astype(np.int64))) == sorted(map(bytes, rows.astype(np.int64)))


def test_a_folder_mixing_8_and_16_bit_files_is_refused_under_data_scale_naming_one_of_each(tmp_path):
    """Under data.scale each file is its stored numbers: 0..255 beside 0..65535 would be mapped by one range, the
    8-bit pictures crushed to -1; refused in one line, naming a file of each depth."""
    from test_data_kinds import _mixed_depths

    _mixed_depths(tmp_path / "mix")
    with pytest.raises(DataError, match=r"mixes 8-bit \(a_8bit.png\) and 16-bit or wider integer \(b_16bit.png\)"):
        load_data(DataConfig(source="folder", path=str(tmp_path / "mix"), scale="minmax"))
    rc, _, err = cli("train", "--preset", "digits-test", "--set", "data.source=folder",
                     "--set", f"data.path={tmp_path / 'mix'}", "--set", "data.image_size=null",
                     "--set", "data.scale=percentile", "--set", "data.holdout=0", "--set", "model.num_classes=0",
                     "--out", tmp_path / "run")  # fmt: skip
    assert_clean_error(rc, err, "a_8bit.png")
    assert not (tmp_path / "run").exists()


def test_images_resized_in_their_own_units_are_the_pixels_resized(tmp_path):
    """Resizing commutes with the map to pixels: an 8-bit and a 16-bit PNG read at another size as their stored
    numbers (data.scale, and the editing commands' files of such a run) equal the pixels read at that size, mapped
    back by the format's full scale - not clamped to the pixel range."""
    from PIL import Image

    from torchdiffusion.data import read_image

    rng = np.random.default_rng(5)
    for name, full, a in (
        ("u8.png", 255, rng.integers(0, 256, (40, 60)).astype(np.uint8)),
        ("u16.png", 65535, rng.integers(0, 65536, (50, 30)).astype(np.uint16)),
    ):
        folder = tmp_path / name[:-4]  # a folder of each depth (a mix is refused under data.scale)
        folder.mkdir()
        Image.fromarray(a).save(folder / name)
        for size in ((28, 28), (80, 96)):  # down and up
            raw = read_image(folder / name, size=size, raw=True).double()
            pixels = read_image(folder / name, size=size).double()
            assert raw.max() > 1 and torch.allclose((pixels + 1) / 2 * full, raw, rtol=1e-5, atol=1e-3 * full)
        d = load_data(DataConfig(source="folder", path=str(folder), scale="minmax", image_size=(20, 20)))
        assert d.x.shape == (1, 1, 20, 20) and float(d.x.max() - d.x.min()) > 1e-4  # not one flat value


def test_float_images_beyond_the_pixel_ranges_name_the_setting(tmp_path):
    np.save(tmp_path / "k.npy", _units((4, 3, 8, 8)))
    np.save(tmp_path / "u16.npy", np.arange(4 * 64, dtype=np.uint16).reshape(4, 8, 8) * 200)  # 16-bit counts
    for name in ("k.npy", "u16.npy"):
        with pytest.raises(DataError, match="set data.scale=minmax or percentile"):
            load_data(DataConfig(source="array", path=str(tmp_path / name)))
    d = load_data(DataConfig(source="array", path=str(tmp_path / "u16.npy"), scale="minmax"))
    assert d.shape == (1, 8, 8) and d.value_range == ((0.0,), (51000.0,))
    cfg = DataConfig(source="array", path=str(tmp_path / "k.npy"), scale="minmax", scale_lo=(0.0,), scale_hi=(1.0,))
    with pytest.raises(DataError, match="bounds for 1 channel; the data has 3"):
        load_data(cfg)
    for lo, hi in (((1e39,) * 3, (1e40,) * 3), ((0.0,) * 3, (1e-45, 1.0, 1.0))):  # beyond float32 either way
        with pytest.raises(DataError, match="beyond float32's range"):
            load_data(
                DataConfig(source="array", path=str(tmp_path / "k.npy"), scale="minmax", scale_lo=lo, scale_hi=hi)
            )


@pytest.mark.parametrize(
    "data, needle",
    [
        (dict(source="array", scale="zscore"), "data.scale must be one of auto, minmax, percentile"),
        (dict(source="array", scale_lo=(0.0,), scale_hi=(1.0,)), "need data.scale=minmax or percentile"),
        (dict(source="array", scale="minmax", scale_lo=(0.0, 1.0), scale_hi=(1.0,)), "one bound per channel"),
        (dict(source="array", scale="minmax", scale_lo=(2.0,), scale_hi=(1.0,)), "every hi above its lo"),
    ],
)
def test_bad_scale_settings_are_refused(data, needle):
    with pytest.raises(ConfigError, match=needle):
        validate(RunConfig(data=DataConfig(**data)))
    with pytest.raises(DataError, match=needle):  # and by load_data, for configs of other commands
        load_data(DataConfig(**{"path": "never.npy", **data}))


@pytest.mark.parametrize("command", ["train", "train-autoencoder"])
def test_a_source_with_its_own_range_refuses_the_setting(command):
    preset = "digits-test" if command == "train" else "tiny-ae"
    rc, _, err = cli(command, "--preset", preset, "--set", "data.scale=minmax", "--dry-run")
    assert_clean_error(rc, err, "data.scale is read only by data.source=folder | array")


def test_an_autoencoder_of_an_array_in_its_own_units_records_its_bounds(tmp_path):
    np.save(tmp_path / "k.npy", _units((48, 3, 8, 8)))
    out = tmp_path / "ae"
    rc, _, err = cli("train-autoencoder", "--preset", "tiny-ae", "--set", "data.source=array",
                     "--set", f"data.path={tmp_path / 'k.npy'}", "--set", "data.image_size=null", "--set",
                     "data.holdout=8", "--set", "data.scale=minmax", "--set", "model.in_channels=3",
                     "--set", "train.images=32", "--out", out, "--no-progress")  # fmt: skip
    assert rc == 0, err
    cfg = json.loads((out / "config.json").read_text())
    train = load_data(
        DataConfig(source="array", path=str(tmp_path / "k.npy"), holdout=8, scale="minmax"), seed=cfg["train"]["seed"]
    )
    assert (tuple(cfg["data"]["scale_lo"]), tuple(cfg["data"]["scale_hi"])) == train.value_range
    assert cfg["data"]["scale_lo"][2] == 6.0 and 200 < cfg["data"]["scale_lo"][0] < cfg["data"]["scale_hi"][0] < 400


SMALL = ["--set", "model.channels=8", "--set", "model.groups=4", "--set", "model.head_channels=8",
         "--set", "train.images=32", "--set", "train.batch_size=8", "--set", "train.warmup_images=0",
         "--set", "sample.n=2", "--set", "sample.steps=2", "--no-progress"]  # fmt: skip


SIGNALS = ["--set", "data.signal_length=null", "--set", "data.holdout=4", "--set", "model.num_classes=0"]


def test_a_run_on_an_array_in_its_own_units_writes_its_outputs_in_them(tmp_path):
    """Signals in kelvins and millivolts: the bounds land in config.json; sample --save-npy, impute and outpaint's
    .npy are in the data's units (the given points of impute exactly as given), not the model's [-1, 1]."""
    t = np.arange(32) / 32
    rng = np.random.default_rng(0)
    a = np.stack([np.stack([285 + 12 * np.sin(2 * np.pi * (t + p)), 2e-3 * np.cos(2 * np.pi * (t + p))])
                  for p in rng.random(24)]).astype(np.float32)  # fmt: skip
    np.save(tmp_path / "a.npy", a)
    run = tmp_path / "run"
    rc, _, err = cli("train", "--preset", "signal-gunpoint", "--set", "data.source=array",
                     "--set", f"data.path={tmp_path / 'a.npy'}", *SIGNALS, "--set", "data.scale=minmax",
                     "--set", "model.attn_resolutions=", *SMALL, "--out", run)  # fmt: skip
    assert rc == 0, err
    d = json.loads((run / "config.json").read_text())["data"]
    assert d["scale_lo"][0] == pytest.approx(273, abs=0.1) and d["scale_hi"][1] == pytest.approx(2e-3, rel=1e-3)
    rc, _, err = cli("sample", run, "--n", "3", "--steps", "2", "--save-npy", "--out", tmp_path / "s.png")
    assert rc == 0, err
    s = np.load(tmp_path / "s.npy")
    loaded = load_run(run)
    x = generate(loaded.model, range(3), replace(loaded.config.sample, steps=2), loaded.data_shape)
    assert s.shape == (3, 2, 32) and np.allclose(s, loaded.to_data_units(x).numpy(), rtol=1e-5)
    assert s[:, 0].std() / s[:, 1].std() > 500  # kelvins against millivolts (about 6,000 : 1), not [-1, 1] twice
    assert cli("card", run)[0] == 0
    assert (
        f"(`data.scale=minmax`): [{d['scale_lo'][0]:.4g}, {d['scale_hi'][0]:.4g}]"
        in (run / "MODEL_CARD.md").read_text()
    )
    gaps = a[:2].copy()
    gaps[:, :, 10:20] = np.nan
    np.save(tmp_path / "gaps.npy", gaps)
    rc, _, err = cli("impute", run, "--series", tmp_path / "gaps.npy", "--steps", "2", "--out", tmp_path / "f.npy")
    assert rc == 0, err
    f, known = np.load(tmp_path / "f.npy"), ~np.isnan(gaps)
    assert np.array_equal(f[known], gaps[known]) and f[:, 0, 10:20].std() / f[:, 1, 10:20].std() > 500
    rc, _, err = cli("outpaint", run, "--series", tmp_path / "s.npy", "--right", "8", "--samples", "2", "--steps",
                     "2", "--out", tmp_path / "fc.png")  # fmt: skip
    assert rc == 0, err
    fc = np.load(tmp_path / "fc.npy")
    assert fc.shape == (3, 2, 2, 40) and np.allclose(fc[:, :, :, :32], s[:, None], rtol=1e-4, atol=1e-6)
    rc, _, err = cli("train", "--preset", "signal-gunpoint", "--set", "data.source=array",
                     "--set", f"data.path={tmp_path / 'a.npy'}", *SIGNALS, "--set", "data.scale=minmax",
                     "--set", "model.attn_resolutions=", "--set", "data.scale_lo=1,2", "--set", "data.scale_hi=3,4",
                     *SMALL, "--out", run)  # fmt: skip
    assert_clean_error(rc, err, "different data section")  # a resume may not change the recorded map
    rc, _, err = cli("train", "--preset", "signal-gunpoint", "--set", "data.source=array",
                     "--set", f"data.path={tmp_path / 'a.npy'}", *SIGNALS, "--set", "data.scale=minmax",
                     "--set", "model.attn_resolutions=", *SMALL, "--set", "train.images=40", "--out", run)  # fmt: skip
    assert rc == 0 and "resuming" in err, err  # the same command again: the bounds fitted again are the recorded


def test_editing_a_run_of_float_tiffs_in_kelvins_reads_new_tiffs_in_kelvins(tmp_path):
    """--images of a run whose data.scale mapped float TIFFs: the files are read in the data's units and mapped by
    the run's recorded bounds (a float TIFF beyond [0, 1] was refused, naming a setting editing cannot take)."""
    from PIL import Image

    from torchdiffusion.commands.inpaint import load_inputs

    a = _units((16, 3, 8, 8))[:, 0]
    (tmp_path / "pics").mkdir()
    for i, im in enumerate(a):
        Image.fromarray(im, mode="F").save(tmp_path / "pics" / f"{i:02d}.tiff")
    new = (a[0] + 3).astype(np.float32)
    Image.fromarray(new, mode="F").save(tmp_path / "new.tiff")
    run = tmp_path / "run"
    rc, _, err = cli("train", "--preset", "digits-test", "--set", "data.source=folder",
                     "--set", f"data.path={tmp_path / 'pics'}", "--set", "data.image_size=null", "--set",
                     "data.scale=minmax", "--set", "data.holdout=4", "--set", "model.num_classes=0",
                     "--set", "model.channel_mult=1,2", "--set", "model.attn_resolutions=", *SMALL,
                     "--out", run)  # fmt: skip
    assert rc == 0, err
    loaded = load_run(run)
    (lo,), (hi,) = loaded.config.data.scale_lo, loaded.config.data.scale_hi
    x = load_inputs(loaded, argparse.Namespace(images=[tmp_path / "new.tiff"]))
    torch.testing.assert_close(x[0, 0], 2 * (torch.from_numpy(new) - lo) / (hi - lo) - 1)
    for command, extra in (("inpaint", ["--mask", "box:0,0,4,8"]), ("img2img", ["--strength", "0.5"])):
        rc, _, err = cli(command, run, "--images", tmp_path / "new.tiff", *extra, "--steps", "2",
                         "--out", tmp_path / f"{command}.png")  # fmt: skip
        assert rc == 0, err


def test_a_latent_run_maps_its_images_by_its_autoencoders_data_scale(tmp_path, monkeypatch):
    """An autoencoder trained on float TIFFs in kelvins (data.scale) lends a latent run its map: the run's images
    (here a subset, without the autoencoder's hottest image) are encoded as the autoencoder saw them, the bounds
    recorded are the autoencoder's, samples come back in kelvins by them, and editing inputs come in by them. A
    map of the run's own is refused, as is one given to an autoencoder of pictures."""
    from PIL import Image

    from torchdiffusion.commands.inpaint import load_inputs

    monkeypatch.setenv("TORCHDIFFUSION_CACHE", str(tmp_path / "cache"))
    a = _units((16, 3, 8, 8))[:, 0]
    a[0] += 60  # the hottest image: only the autoencoder's data has it
    for folder, images in (("all", a), ("cool", a[1:])):
        (tmp_path / folder).mkdir()
        for i, im in enumerate(images):
            Image.fromarray(im, mode="F").save(tmp_path / folder / f"{i:02d}.tiff")
    pixels = ["--set", "data.source=folder", "--set", "data.image_size=null", "--set", "data.holdout=4"]
    ae = tmp_path / "ae"
    rc, _, err = cli("train-autoencoder", "--preset", "tiny-ae", *pixels, "--set", f"data.path={tmp_path / 'all'}",
                     "--set", "data.scale=minmax", "--set", "train.images=64", "--no-progress",
                     "--out", ae)  # fmt: skip
    assert rc == 0, err
    ae_data = json.loads((ae / "config.json").read_text())["data"]
    assert ae_data["scale"] == "minmax" and ae_data["scale_hi"][0] == pytest.approx(float(a.max()))
    latent = [*pixels, "--set", f"data.path={tmp_path / 'cool'}", "--set", f"data.latents_of={ae}",
              "--set", "model.num_classes=0", "--set", "model.channel_mult=1,2", "--set", "model.attn_resolutions=",
              *SMALL]  # fmt: skip
    run = tmp_path / "run"
    rc, _, err = cli("train", "--preset", "digits-test", *latent, "--out", run)
    assert rc == 0, err  # float pixels beyond [0, 1] were refused, naming a data.scale of the run's own
    data = json.loads((run / "config.json").read_text())["data"]
    assert (data["scale"], data["scale_lo"], data["scale_hi"]) == ("minmax", ae_data["scale_lo"], ae_data["scale_hi"])
    assert data["scale_hi"][0] > float(a[1:].max()) + 30  # the autoencoder's bounds, not the run's own images'
    loaded = load_run(run)
    rc, _, err = cli("sample", run, "--n", "3", "--steps", "2", "--save-npy", "--save-tiff",
                     "--out", tmp_path / "s.png")  # fmt: skip
    assert rc == 0, err
    s = np.load(tmp_path / "s.npy")
    (lo,), (hi,) = data["scale_lo"], data["scale_hi"]
    assert s.shape == (3, 1, 8, 8) and lo - 1e-3 <= s.min() and s.max() <= hi + 1e-3 and s.mean() > 200  # kelvins
    with Image.open(tmp_path / "s.tif") as im:  # the float TIFF in kelvins too, as the training files were
        for k in range(3):
            im.seek(k)
            assert np.array_equal(np.asarray(im), s[k, 0].astype(np.float32))
    new = (a[3] + 2).astype(np.float32)
    Image.fromarray(new, mode="F").save(tmp_path / "new.tiff")
    x = load_inputs(loaded, argparse.Namespace(images=[tmp_path / "new.tiff"]))
    torch.testing.assert_close(x[0, 0], 2 * (torch.from_numpy(new) - lo) / (hi - lo) - 1)
    rc, _, err = cli("img2img", run, "--images", tmp_path / "new.tiff", "--strength", "0.5", "--steps", "2",
                     "--out", tmp_path / "edit.png")  # fmt: skip
    assert rc == 0, err
    for extra, words in (
        (["--set", "data.scale=percentile"], "maps its images by data.scale=minmax"),
        (["--set", "data.scale=minmax", "--set", "data.scale_lo=0", "--set", "data.scale_hi=1"], "leave data.scale"),
    ):
        rc, _, err = cli("train", "--preset", "digits-test", *latent, *extra, "--out", tmp_path / "other")
        assert_clean_error(rc, err, words)
        assert not (tmp_path / "other").exists()
    rc, _, err = cli("train", "--preset", "digits-test", *latent, "--set", "data.scale=minmax",
                     "--out", tmp_path / "same")  # fmt: skip
    assert rc == 0, err  # the autoencoder's own scale, named: its bounds all the same
    assert json.loads((tmp_path / "same" / "config.json").read_text())["data"]["scale_hi"] == data["scale_hi"]
    from test_latent import make_autoencoder

    pictures = make_autoencoder(tmp_path / "pictures-ae")  # weights alone: images read as pictures
    mapped = [*latent, "--set", f"data.latents_of={pictures}", "--set", "data.scale=minmax"]
    rc, _, err = cli("train", "--preset", "digits-test", *mapped, "--out", tmp_path / "other")
    assert_clean_error(rc, err, "was trained on images read as pictures (no data.scale)")
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("channels, shape", [(1, (12, 3, 8, 8)), (3, (12, 4, 8, 8)), (3, (12, 1, 8, 8))])
def test_data_channels_that_would_convert_scaled_images_is_refused_before_anything_is_written(
    tmp_path, channels, shape
):
    """Gray/RGB/alpha conversion is for pictures: on data in its own units (data.scale) it would mix or composite
    kelvins and volts, and the bounds (one per input channel) would not match the channels trained on."""
    np.save(tmp_path / "u.npy", _units(shape) if shape[1] == 3 else np.full(shape, 250.0, np.float32))
    cfg = DataConfig(source="array", path=str(tmp_path / "u.npy"), scale="minmax", channels=channels)
    with pytest.raises(DataError, match=f"data.channels={channels} would convert"):
        load_data(cfg)
    run = tmp_path / "run"
    rc, _, err = cli("train", "--preset", "digits-test", "--set", "data.source=array",
                     "--set", f"data.path={tmp_path / 'u.npy'}", "--set", "data.scale=minmax",
                     "--set", f"data.channels={channels}", *SMALL, "--out", run)  # fmt: skip
    assert_clean_error(rc, err, "data.scale=minmax keeps each channel in its own units")
    assert not run.exists()
    assert load_data(replace(cfg, channels=shape[1] if shape[1] in (1, 3) else None)).x.shape[1] == shape[1]


def test_to_data_units_refuses_values_of_another_channel_count():
    lo, hi = (0.0, 100.0, -5.0), (10.0, 200.0, 5.0)
    with pytest.raises(DataError, match="bounds for 3 channels, but these values have 1"):
        to_data_units(torch.zeros(2, 1, 4, 4), lo, hi)
    assert to_data_units(torch.zeros(2, 3, 4, 4), lo, hi)[:, 1].eq(150).all()


@pytest.mark.parametrize(
    "dtype, values, depth",
    [("uint8", (0, 255), "8-bit"), ("int64", (0, 255), "8-bit"), ("uint16", (0, 255), "8-bit"),
     ("int8", (0, 127), "8-bit"), ("uint16", (0, 65535), "16-bit or wider integer"),
     ("int64", (0, 256), "16-bit or wider integer"), ("int32", (0, 70000), "16-bit or wider integer"),
     ("int16", (-5, 5), "16-bit or wider integer"), ("int8", (-1, 1), "16-bit or wider integer"),
     ("float32", (0, 1), "float"), ("float64", (0, 255), "float"), ("bool", (0, 1), None)],
)  # fmt: skip
def test_an_image_array_records_the_depth_of_the_files_that_store_its_numbers(tmp_path, dtype, values, depth):
    """An image array's stored_depth is that of the image files storing its numbers, as a folder of them records
    it, by the rule that reads integer pixels without data.scale: integers within 0..255 are 8-bit (an 8-bit PNG
    stores them, whatever the dtype: numpy's default int64 included), other integers 16-bit or wider (a 16-bit
    PNG, or a signed or 32-bit TIFF), floats float; a boolean array, which no image file stores, records none."""
    lo, hi = values
    a = np.full((4, 1, 8, 8), lo, dtype=dtype)
    a[-1, 0, 0, 0] = hi
    np.save(tmp_path / "a.npy", a)
    for scale in ("minmax", "auto") if depth in ("8-bit", None) or dtype == "float32" else ("minmax",):
        data = load_data(DataConfig(source="array", path=str(tmp_path / "a.npy"), scale=scale, holdout=0))
        assert data.stored_depth == depth
    np.save(tmp_path / "s.npy", a[:, :, 0])  # a signal: no image file's depth
    assert load_data(DataConfig(source="array", path=str(tmp_path / "s.npy"), holdout=0)).stored_depth is None


def test_editing_a_data_scale_run_of_an_array_refuses_an_input_of_another_bit_depth(tmp_path):
    """A data.scale run of a uint8 array maps the numbers 0..255 an 8-bit PNG stores: a 16-bit input (0..65535) is
    refused in one line as for a folder of 8-bit files, an 8-bit one edited; a run of a float array (kelvins, say)
    refuses both, whose numbers are on another scale than its floats."""
    from PIL import Image

    rng = np.random.default_rng(4)
    u8 = rng.integers(0, 256, (8, 1, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "u8.npy", u8)
    np.save(tmp_path / "f.npy", u8.astype(np.float32) + 250)
    Image.fromarray(u8[0, 0]).save(tmp_path / "in8.png")
    Image.fromarray(u8[0, 0].astype(np.uint16) * 257).save(tmp_path / "in16.png")
    for name, depth, refused in (("u8", "8-bit", ["in16"]), ("f", "float", ["in8", "in16"])):
        run = tmp_path / f"run-{name}"
        rc, _, err = cli("train", "--preset", "digits-test", "--set", "data.source=array",
                         "--set", f"data.path={tmp_path / f'{name}.npy'}", "--set", "data.image_size=null",
                         "--set", "data.scale=minmax", "--set", "data.holdout=0", "--set", "model.num_classes=0",
                         "--set", "model.channel_mult=1,2", "--set", "model.attn_resolutions=", *SMALL,
                         "--out", run)  # fmt: skip
        assert rc == 0, err
        assert json.loads((run / "run.json").read_text())["stored_depth"] == depth
        for given in ("in8", "in16"):
            out = tmp_path / f"{name}-{given}.png"
            rc, _, err = cli("img2img", run, "--images", tmp_path / f"{given}.png", "--strength", "0.5",
                             "--steps", "2", "--out", out)  # fmt: skip
            if given in refused:
                assert_clean_error(rc, err, f"{given}.png holds")
                assert f"the {depth} images it was trained on" in err and not out.exists()
            else:
                assert rc == 0 and out.exists(), err


def test_editing_a_data_scale_run_refuses_an_input_of_another_bit_depth_than_its_data(tmp_path):
    """A data.scale run of 16-bit PNGs maps the numbers 0..65535 they store; run.json records that depth, and an
    8-bit input (its numbers 0..255, crushed to about -1 by that map) is refused in one line naming both depths,
    a 16-bit one edited. A run whose run.json records no depth reads the input as before."""
    from PIL import Image

    from torchdiffusion.commands.inpaint import load_inputs
    from torchdiffusion.edit import EditError

    rng = np.random.default_rng(3)
    (tmp_path / "pics").mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 65536, (8, 8)).astype(np.uint16)).save(tmp_path / "pics" / f"{i}.png")
    a8 = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(a8).save(tmp_path / "in8.png")
    Image.fromarray(a8.astype(np.uint16) * 257).save(tmp_path / "in16.png")
    run = tmp_path / "run"
    rc, _, err = cli("train", "--preset", "digits-test", "--set", "data.source=folder",
                     "--set", f"data.path={tmp_path / 'pics'}", "--set", "data.image_size=null",
                     "--set", "data.scale=minmax", "--set", "data.holdout=0", "--set", "model.num_classes=0",
                     "--set", "model.channel_mult=1,2", "--set", "model.attn_resolutions=", *SMALL,
                     "--out", run)  # fmt: skip
    assert rc == 0, err
    info = json.loads((run / "run.json").read_text())
    assert info["stored_depth"] == "16-bit or wider integer"
    for command, extra in (("img2img", ["--strength", "0.5"]), ("inpaint", ["--mask", "box:0,0,4,8"])):
        out = tmp_path / f"{command}.png"
        rc, _, err = cli(command, run, "--images", tmp_path / "in8.png", *extra, "--steps", "2", "--out", out)
        assert_clean_error(rc, err, "in8.png holds 8-bit pixels")
        assert "16-bit or wider integer images it was trained on" in err and not out.exists()
    rc, _, err = cli("img2img", run, "--images", tmp_path / "in16.png", "--strength", "0.5", "--steps", "2",
                     "--out", tmp_path / "ok.png")  # fmt: skip
    assert rc == 0, err
    loaded = load_run(run)
    with pytest.raises(EditError, match="16-bit or wider integer"):
        load_inputs(
            replace(loaded, info={**info, "stored_depth": "8-bit"}), argparse.Namespace(images=[tmp_path / "in16.png"])
        )
    del info["stored_depth"]  # a run from before the record: read as before
    x = load_inputs(replace(loaded, info=info), argparse.Namespace(images=[tmp_path / "in8.png"]))
    assert x.shape == (1, 1, 8, 8)
