"""Data sources: shapes, value ranges, labels, splits, file formats and their error messages."""

from __future__ import annotations

import math
import os
import unicodedata

import numpy as np
import pytest
import torch
from PIL import Image

from torchdiffusion.analytic import eight_gaussians
from torchdiffusion.config import DataConfig
from torchdiffusion.data import DataError, TensorData, load_data, read_image, to_uint8
from torchdiffusion.data import emoji as emoji_mod
from torchdiffusion.data.base import from_uint8, resize_crop
from torchdiffusion.data.builtin import FASHION_DIR

HAS_FASHION = os.path.isfile(os.path.join(FASHION_DIR, "t10k-images-idx3-ubyte.gz"))
HAS_EMOJI_FONT = os.path.isfile(emoji_mod.EMOJI_FONT)


def _hashes(x: torch.Tensor) -> list[bytes]:
    return [bytes(row) for row in to_uint8(x).reshape(len(x), -1)]


# Built-in sources


def test_mnist5k_shapes_labels_and_balance():
    d = load_data(DataConfig(source="mnist5k"))
    assert len(d) == 5000 and d.shape == (1, 28, 28) and d.kind == "image"
    assert d.x.dtype == torch.float32 and d.x.min() == -1 and d.x.max() == 1
    assert torch.bincount(d.labels, minlength=10).tolist() == [500] * 10
    assert d.class_names == [str(i) for i in range(10)]
    # 8-bit pixels: every value is u / 127.5 - 1 for an integer u
    u = (d.x[:50] + 1) * 127.5
    assert torch.allclose(u, u.round(), atol=1e-4)


def test_mnist5k_holdout_is_disjoint_balanced_and_seeded():
    cfg = DataConfig(source="mnist5k", holdout=500)
    train, hold = load_data(cfg, "train", seed=0), load_data(cfg, "holdout", seed=0)
    assert len(train) == 4500 and len(hold) == 500
    assert not set(_hashes(train.x)) & set(_hashes(hold.x))
    # together they are the whole data set: 500 per class
    counts = torch.bincount(train.labels, minlength=10) + torch.bincount(hold.labels, minlength=10)
    assert counts.tolist() == [500] * 10
    per_class = torch.bincount(hold.labels, minlength=10)
    assert per_class.min() >= 25 and per_class.max() <= 80  # expected 50 +- 7 (the file is sorted by class)
    assert torch.equal(load_data(cfg, "holdout", seed=0).x, hold.x)
    assert not torch.equal(load_data(cfg, "holdout", seed=1).labels, hold.labels)


def test_data_seed_keeps_one_split_whatever_the_run_seed():
    held = {s: load_data(DataConfig(source="mnist5k", holdout=500), "holdout", seed=s).x for s in (0, 1)}
    fixed = DataConfig(source="mnist5k", holdout=500, seed=0)
    for run_seed in (0, 1, 7):  # data.seed wins over the run's train.seed
        assert torch.equal(load_data(fixed, "holdout", seed=run_seed).x, held[0])
    assert torch.equal(load_data(DataConfig(source="mnist5k", holdout=500, seed=1), "holdout", seed=0).x, held[1])
    assert not torch.equal(held[0], held[1])
    # the toy points are the data too
    toy = DataConfig(source="toy", toy_size=64, seed=3)
    assert torch.equal(load_data(toy, seed=0).x, load_data(DataConfig(source="toy", toy_size=64), seed=3).x)


def test_caches_of_images_are_named_by_the_images_themselves():
    from torchdiffusion.evaluation.evaluate import reference_key
    from torchdiffusion.io import sha256_tensor
    from torchdiffusion.latent import cache_key

    x = load_data(DataConfig(source="digits", limit=64)).x
    changed = x.clone()
    changed[5, 0, 3, 3] += 1e-6  # one pixel of one image, as a file edited on disk under the same name
    digest = sha256_tensor(x)
    assert digest == sha256_tensor(x.clone()) == sha256_tensor(x.transpose(2, 3).contiguous().transpose(2, 3))
    others = [changed, x[:63], x.reshape(64, 1, 64, 1), x.double()]
    assert len({digest, *map(sha256_tensor, others)}) == 1 + len(others)  # values, count, shape and dtype count
    # the latent cache and the evaluation's reference features follow the images
    assert cache_key(digest, "a" * 64) != cache_key(sha256_tensor(changed), "a" * 64) != cache_key(digest, "b" * 64)
    assert reference_key("folder", x) == reference_key("folder", x.clone()) != reference_key("folder", changed)


def test_limit_takes_a_spread_of_classes_and_resize_channels_apply():
    d = load_data(DataConfig(source="mnist5k", limit=200, image_size=(32, 32), channels=3))
    assert len(d) == 200 and d.shape == (3, 32, 32)
    assert len(torch.unique(d.labels)) == 10
    assert torch.equal(d.x[:, 0], d.x[:, 2])  # grayscale repeated into RGB
    assert d.x.min() >= -1 and d.x.max() <= 1


def test_digits():
    d = load_data(DataConfig(source="digits"))
    assert len(d) == 1797 and d.shape == (1, 8, 8)
    assert d.x.min() == -1 and d.x.max() == 1
    v = (d.x + 1) * 8  # values 0..16
    assert torch.equal(v, v.round())
    assert torch.bincount(d.labels).min() >= 170


@pytest.mark.skipif(not HAS_FASHION, reason="needs the Debian package dataset-fashion-mnist")
def test_fashion_mnist_train_and_test():
    test = load_data(DataConfig(source="fashion_mnist"), "test")
    assert len(test) == 10_000 and test.shape == (1, 28, 28)
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert test.class_names[0] == "T-shirt/top" and len(test.class_names) == 10
    train = load_data(DataConfig(source="fashion_mnist", holdout=1000, limit=300))
    assert len(train) == 300 and train.x.min() >= -1 and train.x.max() <= 1
    assert len(torch.unique(train.labels)) == 10


def test_fashion_mnist_missing_names_the_apt_command(tmp_path):
    with pytest.raises(DataError, match="apt-get install -y dataset-fashion-mnist"):
        load_data(DataConfig(source="fashion_mnist", path=str(tmp_path)))


def test_split_and_config_errors():
    with pytest.raises(DataError, match="unknown data source"):
        load_data(DataConfig(source="cifar10"))
    with pytest.raises(DataError, match="unknown split"):
        load_data(DataConfig(source="digits"), "val")
    with pytest.raises(DataError, match="no test split"):
        load_data(DataConfig(source="digits"), "test")
    with pytest.raises(DataError, match="holdout split is empty"):
        load_data(DataConfig(source="digits"), "holdout")
    with pytest.raises(DataError, match="leaves no training"):
        load_data(DataConfig(source="digits", holdout=1797))
    with pytest.raises(DataError, match="channels"):
        load_data(DataConfig(source="digits", channels=2))
    with pytest.raises(DataError, match="limit"):
        load_data(DataConfig(source="digits", limit=0))


# Pixel helpers and TensorData


def test_uint8_round_trip_and_select():
    u = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    x = from_uint8(u)
    assert x.min() == -1 and x.max() == 1
    assert np.array_equal(to_uint8(x)[..., 0], u[:, 0].numpy())
    assert to_uint8(x.expand(2, 3, 16, 16)).shape == (2, 16, 16, 3)
    with pytest.raises(DataError):
        to_uint8(x[0])
    d = TensorData(torch.zeros(3, 2), labels=torch.tensor([0, 1, 2]), captions=["a", "b", "c"], kind="vector")
    s = d.select(torch.tensor([2, 0]))
    assert s.captions == ["c", "a"] and s.labels.tolist() == [2, 0] and s.shape == (2,) and len(s) == 2
    with pytest.raises(DataError, match="captions"):
        TensorData(torch.zeros(3, 1, 4, 4), captions=["a"])


def test_resize_crop_covers_and_centres():
    # 20 x 40 (H x W): left half -1, right half +1; covering 10 x 10 scales by 1/2 and crops the centre columns
    x = torch.cat([-torch.ones(1, 1, 20, 20), torch.ones(1, 1, 20, 20)], dim=-1)
    y = resize_crop(x, (10, 10))
    assert y.shape == (1, 1, 10, 10)
    assert (y[..., :, :4] < -0.99).all() and (y[..., :, 6:] > 0.99).all()
    assert torch.equal(resize_crop(torch.full((2, 3, 7, 9), 0.25), (5, 12)), torch.full((2, 3, 5, 12), 0.25))


# Folder source and read_image


def _gray(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def test_folder_grayscale_png_round_trip(tmp_path):
    imgs = [_gray(12, 10, s) for s in range(3)]
    for i, a in enumerate(imgs):
        Image.fromarray(a, "L").save(tmp_path / f"img{i}.png")
    d = load_data(DataConfig(source="folder", path=str(tmp_path)))
    assert d.shape == (1, 12, 10) and len(d) == 3 and d.labels is None
    got = {bytes(a) for a in to_uint8(d.x)[..., 0]}
    assert got == {bytes(a) for a in imgs}  # PNG is lossless: exact pixels back (in a shuffled order)


def test_folder_png_and_jpeg_colour_resize_and_labels(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    Image.fromarray(_gray(16, 16, 0), "L").save(tmp_path / "cats" / "a.png")
    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[..., 0] = 200  # red: has colour
    Image.fromarray(rgb, "RGB").save(tmp_path / "dogs" / "b.JPG", quality=95)
    with pytest.raises(DataError, match="image_size"):
        load_data(DataConfig(source="folder", path=str(tmp_path)))
    cfg = DataConfig(source="folder", path=str(tmp_path), image_size=(12, 20))
    d = load_data(cfg, seed=0)
    assert d.shape == (3, 12, 20) and d.class_names == ["cats", "dogs"]
    dog = d.x[d.labels == 1][0]
    assert dog[0].mean() > 0.4 and dog[1].mean() < -0.9  # red stays red through JPEG and resizing
    cat = d.x[d.labels == 0][0]
    assert torch.equal(cat[0], cat[1])  # the grayscale file is repeated into RGB
    gray = load_data(DataConfig(source="folder", path=str(tmp_path), image_size=(12, 20), channels=1))
    assert gray.shape == (1, 12, 20)


def test_read_image_transparency_and_errors(tmp_path):
    Image.new("RGBA", (5, 7), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    x = read_image(tmp_path / "clear.png")
    assert x.shape == (1, 7, 5) and torch.equal(x, torch.ones_like(x))  # transparent -> white, no colour
    assert read_image(tmp_path / "clear.png", size=(4, 4), channels=3).shape == (3, 4, 4)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError, match="bad.png"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(DataError, match="bad.png"):
        load_data(DataConfig(source="folder", path=str(tmp_path)))
    with pytest.raises(DataError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_truncated_jpeg_is_an_error(tmp_path):
    Image.fromarray(_gray(64, 64, 1), "L").save(tmp_path / "t.jpg")
    raw = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="t.jpg"):
        read_image(tmp_path / "t.jpg")


def test_folder_empty_or_missing(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no PNG/JPEG"):
        load_data(DataConfig(source="folder", path=str(tmp_path)))
    with pytest.raises(DataError, match="not found"):
        load_data(DataConfig(source="folder", path=str(tmp_path / "nope")))
    with pytest.raises(DataError, match="data.path"):
        load_data(DataConfig(source="folder"))


# Array source


def test_npy_channels_last_uint8_round_trip(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)  # the course's sprites
    np.save(tmp_path / "sprites.npy", a)
    d = load_data(DataConfig(source="array", path=str(tmp_path / "sprites.npy")))
    assert d.shape == (3, 16, 16) and len(d) == 10
    assert {bytes(v) for v in to_uint8(d.x)} == {bytes(v) for v in a}


def test_array_layouts_and_float_ranges(tmp_path):
    rng = np.random.default_rng(1)
    a01 = rng.random((4, 3, 8, 8)).astype(np.float32)  # channels-first, [0, 1]
    np.save(tmp_path / "a.npy", a01)
    d = load_data(DataConfig(source="array", path=str(tmp_path / "a.npy")))
    x = torch.from_numpy(a01) * 2 - 1
    assert d.shape == (3, 8, 8) and any(torch.allclose(d.x[0], xi) for xi in x)
    am = (rng.random((4, 5, 6)) * 2 - 1).astype(np.float32)  # (N, H, W) in [-1, 1]: kept as is
    np.save(tmp_path / "b.npy", am)
    d = load_data(DataConfig(source="array", path=str(tmp_path / "b.npy")))
    assert d.shape == (1, 5, 6) and sorted(d.x.flatten().tolist()) == sorted(am.flatten().tolist())
    v = rng.normal(size=(20, 3)).astype(np.float32) * 5  # (N, D): vectors, values untouched
    np.save(tmp_path / "v.npy", v)
    d = load_data(DataConfig(source="array", path=str(tmp_path / "v.npy")))
    assert d.kind == "vector" and d.shape == (3,) and torch.allclose(d.x.sum(0), torch.from_numpy(v).sum(0), atol=1e-4)


def test_npz_keys_and_label_files(tmp_path):
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (6, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", other=np.zeros(3), images=imgs, y=np.arange(6) % 3, captions=np.array(list("abcdef")))
    d = load_data(DataConfig(source="array", path=str(tmp_path / "d.npz")))
    assert d.shape == (1, 4, 4)
    for i in range(6):  # labels and captions travel with their images through the shuffle
        k = "abcdef".index(d.captions[i])
        assert d.labels[i] == k % 3 and np.array_equal(to_uint8(d.x[i : i + 1])[0, ..., 0], imgs[k])
    one_hot = np.eye(5, dtype=np.float32)[np.arange(6) % 5]  # the course's sprite_labels format
    np.save(tmp_path / "oh.npy", one_hot)
    d = load_data(DataConfig(source="array", path=str(tmp_path / "d.npz"), labels_path=str(tmp_path / "oh.npy")))
    assert d.context.shape == (6, 5) and torch.equal(d.labels, d.context.argmax(1))
    multi = one_hot.copy()
    multi[:, 0] = 1  # multi-hot rows: context only
    np.save(tmp_path / "mh.npy", multi)
    d = load_data(DataConfig(source="array", path=str(tmp_path / "d.npz"), labels_path=str(tmp_path / "mh.npy")))
    assert d.labels is None and d.context.shape == (6, 5)


def test_npz_of_a_keras_set_and_of_unnamed_arrays(tmp_path):
    """Keras's files hold x_test first: its training examples and their labels are x_train and y_train, not the
    first array and no labels; two arrays of unknown roles are refused, naming them, not guessed."""
    rng = np.random.default_rng(3)
    train, test = rng.integers(0, 256, (6, 4, 4), dtype=np.uint8), rng.integers(0, 256, (2, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "k.npz", x_test=test, x_train=train, y_train=np.arange(6) % 3, y_test=np.arange(2))
    d = load_data(DataConfig(source="array", path=str(tmp_path / "k.npz")))
    assert len(d) == 6 and sorted(d.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    for i in range(6):
        k = next(j for j in range(6) if np.array_equal(to_uint8(d.x[i : i + 1])[0, ..., 0], train[j]))
        assert d.labels[i] == k % 3
    np.savez(tmp_path / "two.npz", first=train, second=train)
    with pytest.raises(DataError, match="two.npz holds the arrays first, second; name the examples 'x'"):
        load_data(DataConfig(source="array", path=str(tmp_path / "two.npz")))
    np.savez(tmp_path / "one.npz", train, labels=np.arange(6) % 2)  # np.savez's arr_0 beside its labels
    assert (
        sorted(load_data(DataConfig(source="array", path=str(tmp_path / "one.npz"))).labels.tolist())
        == [0] * 3 + [1] * 3
    )


@pytest.mark.parametrize(
    "array, match",
    [
        (np.zeros(5, np.uint8), "shape"),  # 1-D
        (np.zeros((2, 1, 2, 3, 4, 5), np.uint8), "shape"),  # 6-D (5-D arrays are volumes)
        (np.zeros((2, 8, 8, 8), np.uint8), "channel axis"),  # second and last axes equal: ambiguous
        (np.full((2, 8, 8), np.nan, np.float32), "NaN"),
        (np.full((2, 8, 8), 255.0, np.float32), r"\[0, 1\] or \[-1, 1\]"),
        (np.full((2, 8, 8), 300, np.int32), "0..255"),
    ],
)
def test_bad_arrays(tmp_path, array, match):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(DataError, match=match):
        load_data(DataConfig(source="array", path=str(tmp_path / "x.npy")))


def test_label_count_mismatch_and_missing_file(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 8, 8, 3), np.uint8))
    np.save(tmp_path / "y.npy", np.zeros(5, np.int64))
    with pytest.raises(DataError, match="5 rows but there are 4"):
        load_data(DataConfig(source="array", path=str(tmp_path / "x.npy"), labels_path=str(tmp_path / "y.npy")))
    with pytest.raises(DataError, match="not found"):
        load_data(DataConfig(source="array", path=str(tmp_path / "none.npy")))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="Python objects"):
        load_data(DataConfig(source="array", path=str(tmp_path / "obj.npy")))


# Toy distributions


def _toy(name: str, n: int = 4000, seed: int = 0) -> torch.Tensor:
    d = load_data(DataConfig(source="toy", toy=name, toy_size=n), seed=seed)
    assert d.kind == "vector" and d.shape == (2,) and len(d) == n and d.x.dtype == torch.float32
    return d.x.double()


def test_toy_8gaussians_near_the_means():
    x = _toy("8gaussians")
    means = eight_gaussians().means  # radius 2
    dist = torch.cdist(x, means)
    nearest = dist.argmin(1)
    assert dist.min(1).values.max() < 0.3  # std 0.05: 6 std is out of reach
    freq = torch.bincount(nearest, minlength=8) / len(x)
    assert (freq - 1 / 8).abs().max() < 0.03
    resid = x - means[nearest]
    assert abs(resid.std().item() - 0.05) < 0.005
    assert torch.equal(_toy("8gaussians", seed=0), x) and not torch.equal(_toy("8gaussians", seed=1), x)


def test_toy_moons_swissroll_checkerboard_geometry():
    m = _toy("moons") / 2 + torch.tensor([0.5, 0.25], dtype=torch.float64)  # back to unit moons
    d_upper = (m.norm(dim=1) - 1).abs()
    d_lower = ((m - torch.tensor([1.0, 0.5], dtype=torch.float64)).norm(dim=1) - 1).abs()
    assert torch.minimum(d_upper, d_lower).mean() < 0.06 and _toy("moons").mean(0).abs().max() < 0.1
    s = _toy("swissroll")
    r = s.norm(dim=1) * 5  # = t, in [1.5 pi, 4.5 pi]
    assert r.min() > 1.5 * math.pi - 1.5 and r.max() < 4.5 * math.pi + 1.5
    c = _toy("checkerboard")
    assert c.abs().max() <= 2
    assert ((c.floor().sum(1) % 2) == 0).all()  # only the dark squares
    assert (c.var(0) - 4 / 3).abs().max() < 0.1  # each marginal is uniform on [-2, 2]
    with pytest.raises(DataError, match="unknown toy"):
        load_data(DataConfig(source="toy", toy="spiral"))


# Emoji sprites


def test_emoji_category_table():
    cat = lambda ch: emoji_mod.EMOJI_CLASSES[emoji_mod.emoji_category(ord(ch))]
    assert cat("\U0001f600") == "faces & people"  # grinning face
    assert cat("\U0001f436") == "animals & nature"  # dog face
    assert cat("\U0001f34e") == "food & drink"  # red apple
    assert cat("\U0001f697") == "travel & places"  # automobile
    assert cat("\u26bd") == "activities & objects"  # soccer ball
    assert cat("\u267b") == "symbols & flags"  # recycling symbol
    assert emoji_mod.emoji_category(ord("A")) is None and emoji_mod.emoji_category(0x1F1E6) is None


def test_emoji_missing_font_names_the_apt_command(tmp_path):
    with pytest.raises(DataError, match="apt-get install -y fonts-noto-color-emoji"):
        load_data(DataConfig(source="emoji", path=str(tmp_path / "NoFont.ttf")))


@pytest.mark.skipif(not HAS_EMOJI_FONT, reason="needs the Debian package fonts-noto-color-emoji")
def test_emoji_sprites_build_cache_and_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHDIFFUSION_CACHE", str(tmp_path))
    emoji_mod.emoji_arrays.cache_clear()
    try:
        d = load_data(DataConfig(source="emoji", emoji_size=16))
        assert list(tmp_path.glob("emoji-v*-16px-*.npz"))  # cached
        assert not list(tmp_path.glob("*.tmp"))  # nothing half-written left behind
        emoji_mod.emoji_arrays.cache_clear()
        again = load_data(DataConfig(source="emoji", emoji_size=16))  # from the cache
        assert torch.equal(again.x, d.x) and again.captions == d.captions
    finally:
        emoji_mod.emoji_arrays.cache_clear()
    assert d.shape == (3, 16, 16) and len(d) > 1200 and d.x.min() >= -1 and d.x.max() <= 1
    K = len(emoji_mod.EMOJI_CLASSES)
    assert d.class_names == emoji_mod.EMOJI_CLASSES and d.context.shape == (len(d), K)
    assert torch.equal(d.context.argmax(1), d.labels) and torch.equal(d.context.sum(1), torch.ones(len(d)))
    assert torch.bincount(d.labels, minlength=K).min() >= 100  # every category learnable
    names = {
        unicodedata.name(chr(cp)).lower() for cp in emoji_mod.emoji_code_points(emoji_mod._font(emoji_mod.EMOJI_FONT))
    }
    assert set(d.captions) <= names and "red apple" in d.captions
    apple = d.x[d.captions.index("red apple")]
    assert apple[0].mean() > apple[1].mean() + 0.2  # red
    corners = d.x[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners > 0.9).float().mean() > 0.75  # white background (square symbols fill their corners)
