"""Data kinds in the library: 1-D signals, images of any channel count, 16-bit and float image files, the
context width taken from the data, and the synthetic course sprites."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from torchdiffusion.config import ConfigError, DataConfig, DiffusionConfig, ModelConfig, RunConfig
from torchdiffusion.data import DataError, TensorData, fit_conditioning, kind_of_shape, load_data
from torchdiffusion.data.files import array_layout
from torchdiffusion.data.sprites import SPRITE_CLASSES, make_sprites, write_sprites
from torchdiffusion.losses import precond_loss
from torchdiffusion.model import build_model
from torchdiffusion.viz import channel_note, save_samples, to_uint8_hwc


def sines(n: int, channels: int = 2, length: int = 32, seed: int = 0) -> np.ndarray:
    """(n, channels, length) sinusoids of random phase, amplitude 0.8; channel c has frequency c + 1."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, length, endpoint=False)
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    freq = np.arange(1, channels + 1)[None, :, None]
    return (0.8 * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


@pytest.mark.parametrize(
    "shape, layout",
    [
        ((10, 3), "ND"),
        ((10, 1, 64), "NCL"),
        ((10, 4, 32), "NCL"),  # L = 8 C: signals
        ((10, 28, 28), "NHW"),
        ((10, 8, 60), "NHW"),  # L < 8 C: a grayscale picture
        ((10, 16, 16, 3), "NHWC"),  # the course's sprites
        ((10, 3, 32, 32), "NCHW"),
        ((10, 6, 8, 8), "NCHW"),  # many channels, either side
        ((10, 8, 8, 6), "NHWC"),
        ((10, 3, 4, 4), "NHWC"),  # both <= 4: channels-last, as before
    ],
)
def test_array_layout_by_shape(shape, layout):
    assert array_layout(shape) == layout


@pytest.mark.parametrize("shape", [(6, 1, 0), (6, 0, 8), (5, 8, 0, 3), (4, 0)])
def test_arrays_whose_examples_hold_no_values_are_refused(tmp_path, shape):
    """An axis of size 0 beyond N (a series of no points, images of no channels) is one line, not a crash in the
    network; the U-Net refuses such a shape itself, for library callers."""
    np.save(tmp_path / "a.npy", np.zeros(shape, dtype=np.float32))
    with pytest.raises(DataError, match=r"a.npy has an axis of size 0 .*: its examples hold no values"):
        load_data(DataConfig(source="array", path=str(tmp_path / "a.npy"), holdout=0))
    with pytest.raises(ConfigError, match="holds no points"):
        build_model(RunConfig(model=ModelConfig(channels=8, groups=4, channel_mult=(1, 2))), (1, 0))


def test_class_names_of_an_array_file_name_every_class_of_its_labels(tmp_path):
    """class_names that do not match the labels were recorded (a 3-class model's card said 'classes: a, b')."""
    x = np.random.default_rng(0).random((12, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "ok.npz", x=x, labels=np.arange(12) % 3, class_names=np.array(["a", "b", "c"]))
    assert load_data(DataConfig(source="array", path=str(tmp_path / "ok.npz"), holdout=0)).class_names == [
        "a",
        "b",
        "c",
    ]
    for name, extra, says in [
        (
            "short",
            {"labels": np.arange(12) % 3, "class_names": np.array(["a", "b"])},
            "has 2 names, and its labels run over 3",
        ),
        (
            "long",
            {"labels": np.arange(12) % 2, "class_names": np.array(["a", "b", "c"])},
            "has 3 names, and its labels run over 2",
        ),
        ("none", {"class_names": np.array(["a", "b"])}, "has class_names and no labels"),
    ]:
        np.savez(tmp_path / f"{name}.npz", x=x, **extra)
        with pytest.raises(DataError, match=says):
            load_data(DataConfig(source="array", path=str(tmp_path / f"{name}.npz"), holdout=0))


def test_array_layout_ambiguous_and_named():
    with pytest.raises(DataError, match="data.layout=NCHW or NHWC"):
        array_layout((10, 8, 8, 8))
    assert array_layout((10, 8, 8, 8), "NCHW") == "NCHW"
    assert array_layout((10, 1, 64), "NHW") == "NHW"
    with pytest.raises(DataError, match="needs a 3-D array"):
        array_layout((10, 8, 8, 8), "NCL")
    with pytest.raises(DataError, match="data.layout must be one of"):
        array_layout((10, 8), "HWC")


def test_signals_load_with_values_kept(tmp_path):
    a = sines(12, channels=3, length=40) * 3  # beyond [-1, 1]: signals are not pixels
    np.save(tmp_path / "s.npy", a)
    d = load_data(DataConfig(source="array", path=str(tmp_path / "s.npy")))
    assert d.kind == "signal" and d.shape == (3, 40) and len(d) == 12
    assert sorted(map(bytes, d.x.numpy())) == sorted(map(bytes, a))  # exact values, shuffled rows
    assert kind_of_shape(d.shape) == "signal"
    with pytest.raises(DataError, match="apply to images"):
        load_data(DataConfig(source="array", path=str(tmp_path / "s.npy"), image_size=(8, 8)))
    np.save(tmp_path / "u.npy", a / 3)
    g = load_data(DataConfig(source="array", path=str(tmp_path / "u.npy"), layout="NHW"))
    assert g.kind == "image" and g.shape == (1, 3, 40)


def test_many_channel_images_either_layout_round_trip(tmp_path):
    u = np.random.default_rng(3).integers(0, 256, (5, 6, 8, 10), dtype=np.uint8)  # (N, C, H, W), C = 6
    np.save(tmp_path / "first.npy", u)
    np.save(tmp_path / "last.npy", u.transpose(0, 2, 3, 1))
    a = load_data(DataConfig(source="array", path=str(tmp_path / "first.npy")))
    b = load_data(DataConfig(source="array", path=str(tmp_path / "last.npy")))
    assert a.kind == b.kind == "image" and a.shape == b.shape == (6, 8, 10)
    assert torch.equal(a.x, b.x)
    back = np.round((a.x.numpy() + 1) * 127.5).astype(np.uint8)
    assert sorted(map(bytes, back)) == sorted(map(bytes, u))
    with pytest.raises(DataError, match="cannot convert 6-channel"):
        load_data(DataConfig(source="array", path=str(tmp_path / "first.npy"), channels=3))


def test_pictures_of_many_channels_show_the_first_three(tmp_path):
    x = torch.rand(2, 6, 4, 4) * 2 - 1
    assert np.array_equal(to_uint8_hwc(x), to_uint8_hwc(x[:, :3]))
    assert "channels 1-3" in channel_note(6) and "of the 6 channels" in channel_note(6)
    assert "channel 1" in channel_note(2) and channel_note(3) is None and channel_note(1) is None
    p = save_samples(torch.from_numpy(sines(5)), "signal", tmp_path / "s.png", title="t")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _u16(seed: int, hi: int = 65536) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, hi, (6, 5), dtype=np.uint16)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff"])
def test_16bit_gray_files_keep_16bit_precision(tmp_path, suffix):
    imgs = [_u16(0), _u16(1), _u16(2, hi=200)]  # the last one is dark: scaled by 65535 all the same
    for i, a in enumerate(imgs):
        Image.fromarray(a).save(tmp_path / f"im{i}{suffix}")
        with Image.open(tmp_path / f"im{i}{suffix}") as im:
            assert im.mode.startswith("I;16")
    d = load_data(DataConfig(source="folder", path=str(tmp_path)))
    assert d.shape == (1, 6, 5) and len(d) == 3
    back = np.round((d.x[:, 0].double().numpy() + 1) / 2 * 65535).astype(np.uint16)
    assert sorted(map(bytes, back)) == sorted(map(bytes, imgs))
    assert float(d.x.max()) > 0.9 and float(d.x.min()) < -0.9
    dark = d.x[[int(a.max()) < 256 for a in back]]
    assert len(dark) == 1 and float(dark.max()) < -0.99  # 199/65535, not 199/255


def _mixed_depths(folder, colour: bool = False) -> None:
    """A folder of one 8-bit and one 16-bit PNG of the same picture (the 16-bit one's values 257 times the 8-bit
    one's: the same fractions of white), gray or RGB."""
    folder.mkdir()
    a8 = np.random.default_rng(5).integers(0, 256, (6, 5, 3) if colour else (6, 5), dtype=np.uint8)
    Image.fromarray(a8).save(folder / "a_8bit.png")
    a16 = a8.astype(np.uint16) * 257
    if colour:  # 16-bit RGB: Pillow cannot write it; a plain PNG of colour type 2, depth 16
        import struct
        import zlib

        def chunk(kind: bytes, body: bytes) -> bytes:
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

        rows = b"".join(b"\x00" + r.astype(">u2").tobytes() for r in a16)
        head = struct.pack(">IIBBBBB", 5, 6, 16, 2, 0, 0, 0)
        data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
        (folder / "b_16bit.png").write_bytes(data)
    else:
        Image.fromarray(a16).save(folder / "b_16bit.png")
        with Image.open(folder / "b_16bit.png") as im:
            assert im.mode.startswith("I;16")


@pytest.mark.parametrize("colour", [False, True])
def test_a_folder_mixing_8_and_16_bit_files_scales_each_by_its_own_bit_depth(tmp_path, colour):
    _mixed_depths(tmp_path / "mix", colour)
    d = load_data(DataConfig(source="folder", path=str(tmp_path / "mix")))
    assert len(d) == 2 and d.shape[0] == (3 if colour else 1)
    torch.testing.assert_close(d.x[0], d.x[1], rtol=0, atol=1e-6)  # v / 255 = 257 v / 65535
    assert float(d.x.max()) > 0.9 and float(d.x.min()) < -0.9  # neither squeezed by the other's range


def test_float_tiff_in_unit_range_and_out_of_range(tmp_path):
    a = np.random.default_rng(4).random((4, 6)).astype(np.float32)
    Image.fromarray(a, "F").save(tmp_path / "f.tif")
    d = load_data(DataConfig(source="folder", path=str(tmp_path)))
    assert torch.allclose(d.x[0, 0], torch.from_numpy(a) * 2 - 1, atol=1e-6)
    Image.fromarray(a * 5, "F").save(tmp_path / "g.tif")
    with pytest.raises(DataError, match=r"g.tif.*expected \[0, 1\]"):
        load_data(DataConfig(source="folder", path=str(tmp_path)))


def _cfg(context_dim: int = 0, labels_path: str | None = None, num_classes: int = 0) -> RunConfig:
    return RunConfig(
        data=DataConfig(source="array", path="x.npy", labels_path=labels_path),
        model=ModelConfig(context_dim=context_dim, num_classes=num_classes),
    )


def test_context_width_from_the_data_or_refused():
    data = TensorData(torch.zeros(4, 3, 8, 8), context=torch.eye(7)[:4])
    assert fit_conditioning(_cfg(-1), data).model.context_dim == 7
    assert fit_conditioning(_cfg(7, "y.npy"), data).model.context_dim == 7
    with pytest.raises(ConfigError, match="model.context_dim=7"):
        fit_conditioning(_cfg(0, "y.npy"), data)
    labelled = TensorData(torch.zeros(4, 3, 8, 8), labels=torch.tensor([0, 2, 1, 2]))
    with pytest.raises(ConfigError, match="model.num_classes=3"):
        fit_conditioning(_cfg(0, "y.npy"), labelled)
    assert fit_conditioning(_cfg(0, "y.npy", num_classes=3), labelled).model.num_classes == 3
    with pytest.raises(ConfigError, match="no context vectors"):
        fit_conditioning(_cfg(-1), labelled)
    assert fit_conditioning(_cfg(0), data) == _cfg(0)  # no labels file: an unconditional model is a choice


def test_unet_on_signals_learns():
    """A small 1-D U-Net's denoising loss on held-fixed noise falls by 40 % within 60 steps on sinusoids."""
    cfg = RunConfig(
        model=ModelConfig(channels=8, channel_mult=(1, 2), attn_resolutions=(8,), groups=4, head_channels=8),
        diffusion=DiffusionConfig(parameterization="edm", process="continuous", noise_conditioning="log_sigma"),
    )
    model = build_model(cfg, (2, 16))
    x = torch.from_numpy(sines(256, length=16))
    g = torch.Generator().manual_seed(0)
    x_eval, n_eval = x[:64], torch.randn(64, 2, 16, generator=g)
    s_eval = (torch.randn(64, generator=g) * 1.2 - 1.2).exp()  # EDM's log-normal training sigmas

    def eval_loss() -> float:
        with torch.no_grad():
            return float(precond_loss(model, x_eval, s_eval, n_eval, weighting="edm").mean())

    before = eval_loss()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(60):
        idx = torch.randint(0, len(x), (32,), generator=g)
        sigma = (torch.randn(32, generator=g) * 1.2 - 1.2).exp()
        loss = precond_loss(model, x[idx], sigma, torch.randn(32, 2, 16, generator=g), weighting="edm").mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model(x_eval, s_eval).shape == x_eval.shape
    assert eval_loss() < 0.6 * before


def test_sprites_format_balance_and_seed(tmp_path):
    s, y = make_sprites(50, seed=1)
    assert s.shape == (50, 16, 16, 3) and s.dtype == np.uint8
    assert y.shape == (50, 5) and y.dtype == np.float64 and np.array_equal(y.sum(1), np.ones(50))
    assert np.bincount(y.argmax(1)).tolist() == [10] * 5
    assert np.array_equal(make_sprites(50, seed=1)[0], s) and not np.array_equal(make_sprites(50, seed=2)[0], s)
    a, b = write_sprites(tmp_path, 20)
    assert (a.name, b.name) == ("sprites_1788_16x16.npy", "sprite_labels_nc_1788_16x5.npy")
    d = load_data(DataConfig(source="array", path=str(a), labels_path=str(b)))
    assert d.shape == (3, 16, 16) and d.context.shape == (20, 5) and torch.equal(d.labels, d.context.argmax(1))


def test_sprite_classes_are_told_apart_by_their_pixels():
    """Nearest class mean (fitted on one draw) names the class of >= 95 % of a fresh draw."""
    s, y = make_sprites(500, seed=0)
    t, z = make_sprites(250, seed=1)
    feats = lambda a: a.reshape(len(a), -1).astype(np.float64)
    means = np.stack([feats(s)[y.argmax(1) == k].mean(0) for k in range(len(SPRITE_CLASSES))])
    dist = ((feats(t)[:, None] - means[None]) ** 2).sum(-1)
    assert (dist.argmin(1) == z.argmax(1)).mean() >= 0.95


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _filtered(a: np.ndarray) -> bytearray:
    """The scanlines of (h, w, c) uint16 samples, row y filtered with type y % 5 (None, Sub, Up, Average, Paeth)."""
    h, w, c = a.shape
    rows = [a[y].astype(">u2").tobytes() for y in range(h)]
    bpp, out = 2 * c, bytearray()
    for y, row in enumerate(rows):
        prev = rows[y - 1] if y else bytes(len(row))
        kind = y % 5
        out.append(kind)
        for x, v in enumerate(row):
            left, up = (row[x - bpp] if x >= bpp else 0), prev[x]
            upleft = prev[x - bpp] if x >= bpp else 0
            pred = [0, left, up, (left + up) // 2, _paeth(left, up, upleft)][kind]
            out.append((v - pred) % 256)
    return out


def write_png16(path, a: np.ndarray, interlace: bool = False, key: tuple[int, ...] | None = None) -> None:
    """A reference 16-bit gray, gray + alpha, RGB or RGBA PNG writer, written byte by byte from the PNG
    specification; ``interlace``: Adam7, the seven passes' reduced images (Sec. 8.2) one after the other, each
    filtered on its own; ``key``: a tRNS chunk naming that gray level or RGB colour transparent."""
    import struct
    import zlib

    h, w, c = a.shape
    if interlace:
        passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
        out = bytearray()
        for x0, y0, dx, dy in passes:
            sub = a[y0::dy, x0::dx]
            if sub.size:
                out += _filtered(sub)
    else:
        out = _filtered(a)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, int(interlace))
    trns = chunk(b"tRNS", struct.pack(f">{len(key)}H", *key)) if key is not None else b""
    data = chunk(b"IHDR", ihdr) + trns + chunk(b"IDAT", zlib.compress(bytes(out))) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)


def test_16bit_colour_png_keeps_16bit_precision(tmp_path):
    rng = np.random.default_rng(5)
    imgs = [rng.integers(0, 65536, (7, 6, 3), dtype=np.uint16) for _ in range(2)]
    for i, a in enumerate(imgs):
        write_png16(tmp_path / f"c{i}.png", a)
    with Image.open(tmp_path / "c0.png") as im:  # Pillow itself would keep the high byte only
        assert np.array_equal(np.asarray(im.convert("RGB")), (imgs[0] >> 8).astype(np.uint8))
    d = load_data(DataConfig(source="folder", path=str(tmp_path)))
    assert d.shape == (3, 7, 6)
    back = np.round((d.x.double().numpy() + 1) / 2 * 65535).astype(np.uint16).transpose(0, 2, 3, 1)
    assert sorted(map(bytes, back)) == sorted(map(bytes, imgs))
    rgba = np.concatenate([imgs[0], np.zeros((7, 6, 1), np.uint16)], -1)  # fully transparent: white, gray
    write_png16(tmp_path / "t.png", rgba)
    from torchdiffusion.data import read_image

    assert torch.equal(read_image(tmp_path / "t.png"), torch.ones(1, 7, 6))
    (tmp_path / "t.png").write_bytes((tmp_path / "t.png").read_bytes()[:60])
    with pytest.raises(DataError, match="t.png"):
        read_image(tmp_path / "t.png")


def test_16bit_gray_png_with_alpha_keeps_16bit_precision(tmp_path):
    """Colour type 4: Pillow reads it as 8-bit RGBA; composited over white at full precision here."""
    from torchdiffusion.data import read_image

    a = np.random.default_rng(6).integers(0, 65536, (5, 7, 2), dtype=np.uint16)
    write_png16(tmp_path / "la.png", a)
    with Image.open(tmp_path / "la.png") as im:
        assert im.mode == "RGBA" and np.array_equal(np.asarray(im)[..., 0], (a[..., 0] >> 8).astype(np.uint8))
    x = read_image(tmp_path / "la.png").double().numpy()
    g, alpha = a[..., 0] / 65535, a[..., 1] / 65535
    assert x.shape == (1, 5, 7) and np.allclose((x[0] + 1) / 2, g * alpha + 1 - alpha, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
def test_a_16bit_png_s_transparent_colour_key_is_composited_over_white(tmp_path, channels):
    """tRNS of a 16-bit gray or RGB PNG: the pixels of exactly that level or colour are transparent (white here,
    as alpha 0 is); a pixel one step off the key stays as it is. Pillow drops the gray key; a 16-bit gray PNG
    without one is still read by Pillow, at full precision."""
    from torchdiffusion.data import read_image

    rng = np.random.default_rng(channels)
    a = rng.integers(0, 60000, (6, 9, channels), dtype=np.uint16)
    key = tuple(int(v) for v in a[2, 3])
    a[4, 1] = a[2, 3]
    a[5, 5] = a[2, 3] + 1  # one step off in every sample: opaque
    write_png16(tmp_path / "k.png", a, key=key)
    with Image.open(tmp_path / "k.png") as im:
        pillow = np.asarray(im.convert("I") if channels == 1 else im.convert("RGB"))
    x = read_image(tmp_path / "k.png").double().numpy().transpose(1, 2, 0)
    want = a / 65535
    want[2, 3] = want[4, 1] = 1.0  # transparent over white
    assert x.shape == want.shape and np.allclose((x + 1) / 2, want, atol=1e-6)
    if channels == 1:
        assert pillow[2, 3] == a[2, 3, 0]  # Pillow: the key's pixels as they are stored, not transparent
    raw = read_image(tmp_path / "k.png", raw=True).double().numpy().transpose(1, 2, 0)
    assert np.allclose(raw, want * 65535, atol=1e-3)  # data.scale: the stored numbers, the key's pixels white
    write_png16(tmp_path / "plain.png", a)  # no key: nothing transparent
    assert np.allclose((read_image(tmp_path / "plain.png").double().numpy().transpose(1, 2, 0) + 1) / 2, a / 65535)


@pytest.mark.parametrize("h, w", [(13, 11), (1, 1), (3, 9), (8, 8), (2, 17)])
def test_interlaced_16bit_colour_png_is_read_at_full_precision(tmp_path, h, w):
    """Adam7: sizes that leave some of the seven passes empty (1 x 1 has only the first) read back sample for
    sample; Pillow's own decoding of the same file (8 bits) gives the high bytes, so the pass layout is PNG's."""
    from torchdiffusion.data.png16 import read_png16

    a = np.random.default_rng(h * w).integers(0, 65536, (h, w, 4), dtype=np.uint16)
    write_png16(tmp_path / "i.png", a, interlace=True)
    assert np.array_equal(read_png16(tmp_path / "i.png"), a)
    with Image.open(tmp_path / "i.png") as im:
        assert im.info.get("interlace") == 1
        assert np.array_equal(np.asarray(im.convert("RGBA")), (a >> 8).astype(np.uint8))
    (tmp_path / "i.png").write_bytes((tmp_path / "i.png").read_bytes()[:-40])  # the last pass cut short
    if h * w > 4:
        with pytest.raises(ValueError, match="truncated|corrupt"):
            read_png16(tmp_path / "i.png")


# EXIF orientation -> the turn that shows the stored pixels upright (np.rot90 turns counter-clockwise)
ORIENTED = {
    3: lambda a: np.rot90(a, 2),
    6: lambda a: np.rot90(a, -1),
    8: lambda a: np.rot90(a, 1),
    2: lambda a: a[:, ::-1],
    5: lambda a: np.rot90(a, 1)[::-1],
}


@pytest.mark.parametrize("orientation", sorted(ORIENTED))
@pytest.mark.parametrize("suffix", [".png", ".jpg"])  # (Pillow turns TIFFs by their orientation tag itself)
def test_photos_with_an_exif_orientation_are_read_the_way_up_viewers_show_them(tmp_path, orientation, suffix):
    """A phone stores a portrait photo sideways with an EXIF orientation tag; every viewer turns it. The folder
    source, read_image (editing inputs), masks and studio uploads read it turned the same way."""
    from torchdiffusion.data import read_image
    from torchdiffusion.masks import hole_from_spec
    from torchdiffusion.studio.security import decode_upload

    stored = np.zeros((6, 10), np.uint8)  # a tall-or-wide, asymmetric picture: one bright corner block
    stored[:2, :3] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"photo{suffix}"
    Image.fromarray(stored).save(path, exif=exif, **({"quality": 100} if suffix == ".jpg" else {}))
    want = ORIENTED[orientation](stored)
    got = (read_image(path)[0].numpy() + 1) * 127.5
    assert got.shape == want.shape and np.abs(got - want).max() < 8, (got.round(), want)
    (tmp_path / "f").mkdir()
    path.rename(tmp_path / "f" / path.name)
    data = load_data(DataConfig(source="folder", path=str(tmp_path / "f")))
    assert data.x.shape[2:] == want.shape and np.abs((data.x[0, 0].numpy() + 1) * 127.5 - want).max() < 8
    if suffix == ".png":
        hole = hole_from_spec(str(tmp_path / "f" / path.name), *want.shape)  # white = repaint
        assert np.array_equal(hole.numpy(), (want >= 128).astype(np.float32))
        img = decode_upload((tmp_path / "f" / path.name).read_bytes())
        assert np.array_equal(np.asarray(img.convert("L")), want)


def test_webp_bmp_and_gif_files_are_read_and_animations_are_refused(tmp_path):
    """A folder mixing formats: every image is read (a .webp or .bmp was skipped without a word); an animation is
    one line, not its first frame."""
    rng = np.random.default_rng(7)
    imgs = [rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(3)]
    (tmp_path / "f").mkdir()
    Image.fromarray(imgs[0]).save(tmp_path / "f" / "a.png")
    Image.fromarray(imgs[1]).save(tmp_path / "f" / "b.bmp")
    Image.fromarray(imgs[2]).save(tmp_path / "f" / "c.webp", lossless=True)
    d = load_data(DataConfig(source="folder", path=str(tmp_path / "f")))
    back = np.round((d.x.double().numpy() + 1) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)
    assert sorted(map(bytes, back)) == sorted(map(bytes, imgs))  # lossless WebP and BMP: exact
    frames = [Image.fromarray(im) for im in imgs]
    frames[0].save(tmp_path / "f" / "d.webp", save_all=True, append_images=frames[1:], lossless=True)
    with pytest.raises(DataError, match=r"d.webp: it is an animation of 3 frames"):
        load_data(DataConfig(source="folder", path=str(tmp_path / "f")))
    (tmp_path / "f" / "d.webp").unlink()
    frames[0].save(tmp_path / "f" / "e.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(DataError, match=r"e.gif: it is an animation of 3 frames"):
        load_data(DataConfig(source="folder", path=str(tmp_path / "f")))
    Image.fromarray(imgs[0][..., 0]).save(tmp_path / "f" / "e.gif")  # one gray frame (a palette of grays)
    assert len(load_data(DataConfig(source="folder", path=str(tmp_path / "f")))) == 4


@pytest.mark.parametrize(
    "shape, setting, needle",
    [
        ((12, 5, 8, 8), {"signal_length": 16}, "data.signal_length applies to signals; this image data"),
        ((12, 1, 4, 8, 8), {"signal_length": 16}, "data.signal_length applies to signals; this volume data"),
        ((12, 3), {"signal_length": 16}, "data.signal_length applies to signals; this vector data"),
        ((12, 2, 32), {"image_size": (8, 8)}, "data.image_size and data.channels apply to images; this signal data"),
        ((12, 2, 32), {"channels": 1}, "data.image_size and data.channels apply to images; this signal data"),
        ((12, 1, 4, 8, 8), {"channels": 3}, "data.image_size and data.channels apply to images; this volume data"),
    ],
)
def test_an_array_refuses_the_settings_of_another_data_kind(tmp_path, shape, setting, needle):
    """data.signal_length on images (or volumes, vectors) would change nothing, as data.image_size on signals."""
    a = np.zeros(shape, np.float32)
    np.save(tmp_path / "a.npy", a)
    layout = "NCDHW" if len(shape) == 5 else "auto"
    cfg = DataConfig(source="array", path=str(tmp_path / "a.npy"), layout=layout)
    with pytest.raises(DataError, match=needle):
        load_data(DataConfig(**{**cfg.__dict__, **setting}))
    assert load_data(cfg).x.shape[1:] == shape[1:]
