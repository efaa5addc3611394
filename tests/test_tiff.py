"""TIFFs: 16-bit colour and gray ones at full precision, floats of 16, 32 and 64 bits, BigTIFFs - files written
by an independent writer (tifffile, see scripts/tiff_fixtures.py) read back sample for sample, the LZW and
PackBits decoders against Pillow's encoders, the orientations against Pillow's; stacks and many-channel files
refused; damaged files as one clear line."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from test_cli_errors import assert_clean_error
from tinyruns import cli
from torchdiffusion.config import DataConfig
from torchdiffusion.data import DataError, load_data, read_image
from torchdiffusion.data.tiff import ORIENT, _ifd, lzw_decode, packbits_decode, read_tiff, tiff_kind

FIXTURES = Path(__file__).parent / "data" / "tiff"
INDEX = json.loads((FIXTURES / "index.json").read_text())


KINDS = {"uint16": "u16", "float16": "f16", "float32": "f32", "float64": "f64", "int16": "i16", "uint32": "u32"}
KINDS["int32"] = "i32"


def _expected(case: dict) -> np.ndarray:
    """The array the fixture's seed gives, as read_tiff returns it (float16 widened to float32)."""
    rng = np.random.default_rng(case["seed"])
    dtype = case.get("dtype", "uint16")
    if dtype in ("int16", "uint32", "int32"):
        lo, hi = case.get("span") or (np.iinfo(dtype).min, int(np.iinfo(dtype).max) + 1)
        a = rng.integers(lo, hi, case["shape"], dtype=np.int64).astype(dtype)
        if "alpha_span" in case:
            a[..., -1] = rng.integers(*case["alpha_span"], case["shape"][:2], dtype=np.int64).astype(dtype)
        if case.get("opaque"):
            a[..., -1] = np.iinfo(dtype).max
        return a
    if dtype != "uint16":
        lo, span = case.get("units", (0.0, 1.0))
        a = lo + span * rng.random(case["shape"], dtype=np.float64 if dtype == "float64" else np.float32)
        return a.astype(dtype).astype(np.float64 if dtype == "float64" else np.float32)
    a = rng.integers(0, 65536, case["shape"], dtype=np.uint16)
    if case["photometric"] == "miniswhite":  # 0 is white: read back inverted, alpha as it is
        a[:, :, 0] = 65535 - a[:, :, 0]
    return ORIENT[case["orientation"]](a) if case["orientation"] else a


@pytest.mark.parametrize("case", INDEX, ids=[c["file"] for c in INDEX])
def test_every_layout_reads_back_sample_for_sample(case):
    """Strips and tiles, interleaved and planar, both byte orders, none/LZW/Deflate/PackBits, predictors 2 and 3,
    alpha, RGB and gray (white-is-zero inverted), 16-bit integers, 16-, 32- and 64-bit floats, TIFF and BigTIFF."""
    path = FIXTURES / case["file"]
    assert tiff_kind(path.read_bytes()) == KINDS[case.get("dtype", "uint16")]
    a, associated = read_tiff(path.read_bytes())
    want = _expected(case)
    assert a.dtype == want.dtype and a.shape == want.shape and np.array_equal(a, want)
    assert associated == (case.get("extrasamples") == "assocalpha")


def test_float_colour_tiffs_pillow_cannot_open_are_read_and_bounded_as_float_gray_is(tmp_path):
    """Float RGB(A), and gray of 16 or 64 bits: read (Pillow: "cannot identify image file"), composited over white;
    values beyond [0, 1] are refused unless data.scale reads the stored numbers."""
    for name in ("float_rgb.tif", "float_predictor3.tif", "float64_rgb.tif", "float16_gray.tif"):
        case = next(c for c in INDEX if c["file"] == name)
        with pytest.raises(OSError):
            Image.open(FIXTURES / name)
        x = read_image(FIXTURES / name).double().numpy().transpose(1, 2, 0)
        assert np.allclose((x + 1) / 2, _expected(case), atol=1e-6)
    kelvin = next(c for c in INDEX if c["file"] == "float_kelvin.tif")
    with pytest.raises(DataError, match=r"float pixels span \[2\d\d, 3\d\d\]; expected \[0, 1\], or set data.scale"):
        read_image(FIXTURES / "float_kelvin.tif")
    raw = read_image(FIXTURES / "float_kelvin.tif", raw=True).numpy().transpose(1, 2, 0)
    assert np.array_equal(raw, _expected(kelvin))  # data.scale: the stored kelvins, to be mapped by the run


def test_signed_and_32_bit_colour_tiffs_are_16_bit_values_or_data_scale_numbers(tmp_path):
    """RGB of int16, uint32 or int32 (Pillow: "cannot identify image file"): read as 16-bit values when they lie in
    0..65535, refused beyond unless data.scale reads the stored numbers."""
    for name in ("int16_rgb.tif", "uint32_rgb_lzw.tif", "int32_rgb_planar.tif"):
        case = next(c for c in INDEX if c["file"] == name)
        with pytest.raises(OSError):
            Image.open(FIXTURES / name)
        with pytest.raises(DataError, match=rf"{name}: integer pixels span .*beyond 16 bits .*data.scale"):
            read_image(FIXTURES / name)
        raw = read_image(FIXTURES / name, raw=True).numpy().transpose(1, 2, 0)
        assert np.array_equal(raw, _expected(case).astype(np.float32))  # the stored numbers, as float32 holds them
    case = next(c for c in INDEX if c["file"] == "uint32_rgb_16bit_values.tif")  # 0..65535 in 32 bits
    x = read_image(FIXTURES / case["file"]).double().numpy().transpose(1, 2, 0)
    assert np.allclose((x + 1) / 2 * 65535, _expected(case), atol=1e-6)


@pytest.mark.parametrize("name", ["plain.tif", "bigtiff.tif"])
def test_the_folder_source_keeps_16_bits_where_pillow_keeps_8(tmp_path, name):
    """A 16-bit RGB TIFF, classic or BigTIFF: Pillow keeps the high byte of each sample, the folder source all 16."""
    for case in INDEX:
        if case["file"] in (name, "lzw_predictor.tif", "tiles.tif"):
            shutil.copy(FIXTURES / case["file"], tmp_path / case["file"])
    case = next(c for c in INDEX if c["file"] == name)
    with Image.open(tmp_path / name) as im:  # Pillow itself keeps the high byte only
        assert np.array_equal(np.asarray(im.convert("RGB")), (_expected(case) >> 8).astype(np.uint8))
    x = read_image(tmp_path / name).double().numpy()
    back = np.round((x + 1) / 2 * 65535).astype(np.uint16).transpose(1, 2, 0)
    assert np.array_equal(back, _expected(case))
    d = load_data(DataConfig(source="folder", path=str(tmp_path), image_size=(8, 8)))
    assert d.x.shape == (3, 3, 8, 8)


def test_alpha_is_composited_over_white_premultiplied_or_not():
    """Alpha is a fraction of its type's largest value (1 for floats); integer colours are 16-bit values; a
    premultiplied colour above its alpha (random fixtures hold some) is held at white."""
    checked = set()
    for case in INDEX:
        if case.get("extrasamples") is None or case.get("opaque"):
            continue
        dtype = case.get("dtype", "uint16")
        a = _expected(case).astype(np.float64)
        alpha = a[..., -1:] / (np.iinfo(dtype).max if dtype.startswith(("int", "uint")) else 1)
        a = a[..., :-1] / (65535 if dtype.startswith(("int", "uint")) else 1)
        colour = np.minimum(a + 1 - alpha, 1) if case["extrasamples"] == "assocalpha" else a * alpha + 1 - alpha
        x = read_image(FIXTURES / case["file"]).double().numpy().transpose(1, 2, 0)
        assert x.shape[-1] == colour.shape[-1] and np.allclose((x + 1) / 2, colour, atol=1e-6), case["file"]
        checked.add(dtype)
    assert checked == {"uint16", "float32", "int16", "uint32"}


def test_integer_alpha_under_data_scale_is_dropped_when_opaque_and_refused_when_not():
    """data.scale reads the stored numbers, which have no white: an alpha opaque everywhere is dropped, a
    transparent pixel is one clear line."""
    case = next(c for c in INDEX if c["file"] == "int32_rgba_opaque.tif")
    raw = read_image(FIXTURES / case["file"], raw=True).numpy().transpose(1, 2, 0)
    assert np.array_equal(raw, _expected(case)[..., :3].astype(np.float32))
    with pytest.raises(DataError, match=r"int32_rgba_opaque.tif: integer pixels span .*beyond 16 bits"):
        read_image(FIXTURES / case["file"])
    with pytest.raises(DataError, match=r"int16_rgba.tif: it has transparent pixels, and data.scale reads the stored"):
        read_image(FIXTURES / "int16_rgba.tif", raw=True)


def test_gray_tiffs_pillow_misreads_are_read_right():
    """16-bit gray with alpha Pillow cannot open; 16-bit white-is-zero gray it reads as a negative."""
    with pytest.raises(OSError):
        Image.open(FIXTURES / "gray_alpha.tif")
    case = next(c for c in INDEX if c["file"] == "white_is_zero.tif")
    with Image.open(FIXTURES / "white_is_zero.tif") as im:
        stored = np.asarray(im)
    assert np.array_equal(stored, 65535 - _expected(case)[..., 0])  # Pillow: the stored values, not inverted
    x = read_image(FIXTURES / "white_is_zero.tif").double().numpy()[0]
    assert np.array_equal(np.round((x + 1) / 2 * 65535).astype(np.uint16), _expected(case)[..., 0])


def _strips(path: Path) -> bytes:
    """The strips of a TIFF Pillow wrote, concatenated as stored (compressed)."""
    data = path.read_bytes()
    _, tags = _ifd(data)
    return [data[o : o + n] for o, n in zip(tags[273], tags[279])]


@pytest.mark.parametrize("compression, decode", [("tiff_lzw", lzw_decode), ("packbits", packbits_decode)])
def test_the_decoders_undo_pillows_encoders(tmp_path, compression, decode):
    """An 8-bit RGB image large enough for LZW's table to fill and clear, with runs for PackBits."""
    rng = np.random.default_rng(0)
    a = np.repeat(rng.integers(0, 256, (120, 40, 3), dtype=np.uint8), 3, axis=1)  # runs of three
    a[::7] = rng.integers(0, 256, a[::7].shape, dtype=np.uint8)  # and noise
    Image.fromarray(a).save(tmp_path / "c.tif", compression=compression)
    raw = b"".join(decode(s) for s in _strips(tmp_path / "c.tif"))
    assert raw == a.tobytes()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientations_turn_as_pillows_exif_transpose(orientation):
    a = np.arange(6 * 10, dtype=np.uint8).reshape(6, 10)
    im = Image.fromarray(a)
    im.getexif()[0x0112] = orientation
    assert np.array_equal(ORIENT[orientation](a[..., None])[..., 0], np.asarray(ImageOps.exif_transpose(im)))


def test_damaged_and_unread_files_are_one_clear_line(tmp_path):
    data = (FIXTURES / "lzw_predictor.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cannot read image .*cut.tif: "):
        read_image(tmp_path / "cut.tif")
    plain = bytearray((FIXTURES / "plain.tif").read_bytes())
    bo, tags = _ifd(bytes(plain))
    (pos,) = struct.unpack(bo + "I", plain[4:8])
    (n,) = struct.unpack(bo + "H", plain[pos : pos + 2])
    for k in range(n):  # Compression = 7 (JPEG), which this reader does not decode (Pillow reads 8-bit ones)
        e = pos + 2 + 12 * k
        if struct.unpack(bo + "H", plain[e : e + 2])[0] == 259:
            plain[e + 8 : e + 10] = struct.pack(bo + "H", 7)
    (tmp_path / "jpeg.tif").write_bytes(bytes(plain))
    with pytest.raises(DataError, match="TIFF compression 7 is not read"):
        read_image(tmp_path / "jpeg.tif")
    floats = bytearray((FIXTURES / "float_predictor3.tif").read_bytes())
    at = floats.index(struct.pack("<HHIH", 317, 3, 1, 3))  # Predictor = 3 -> 2, meant for integers only
    floats[at + 8 : at + 10] = struct.pack("<H", 2)
    (tmp_path / "float_predictor2.tif").write_bytes(bytes(floats))
    with pytest.raises(DataError, match="float_predictor2.tif: TIFF predictor 2 .* is not read for f32 samples"):
        read_image(tmp_path / "float_predictor2.tif")
    big = (FIXTURES / "bigtiff.tif").read_bytes()
    (tmp_path / "big_cut.tif").write_bytes(big[: len(big) - 40])
    with pytest.raises(DataError, match=r"cannot read image .*big_cut.tif: "):
        read_image(tmp_path / "big_cut.tif")
    (tmp_path / "d").mkdir()
    shutil.copy(tmp_path / "cut.tif", tmp_path / "d" / "cut.tif")
    rc, _, err = cli("train", "--preset", "digits-test", "--set", "data.source=folder", "--set",
                     f"data.path={tmp_path / 'd'}", "--out", tmp_path / "run")  # fmt: skip
    assert_clean_error(rc, err, "cut.tif")
    assert not (tmp_path / "run").exists()


LAYOUTS = json.loads((FIXTURES / "layouts" / "layouts.json").read_text())


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_stacks_and_many_channel_tiffs_are_refused_previews_are_not(tmp_path, name):
    """A z-stack read as its first slice, or 5 channels read as one, would be data lost without a word: refused,
    pointing to the array source; a reduced-resolution preview page and an RGBX sample are read as Pillow does."""
    path = FIXTURES / "layouts" / name
    if LAYOUTS[name] is None:
        x = read_image(path)
        assert x.shape == (1, 6, 8)  # gray in RGB: one channel
        assert np.allclose((x[0].numpy() + 1) * 127.5, np.arange(48).reshape(6, 8) * 5, atol=1e-3)
        return
    with pytest.raises(DataError, match=rf"{name}: {LAYOUTS[name]}.*data.source=array"):
        read_image(path)
    (tmp_path / "d").mkdir()
    shutil.copy(path, tmp_path / "d" / name)
    rc, _, err = cli("train", "--preset", "digits-test", "--set", "data.source=folder", "--set",
                     f"data.path={tmp_path / 'd'}", "--out", tmp_path / "run")  # fmt: skip
    assert_clean_error(rc, err, LAYOUTS[name])


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (2, 1, 4, 6, 5), (1, 1, 3, 4)])
def test_samples_written_as_a_tiff_hyperstack_read_back_page_for_page(tmp_path, shape):
    """sample --save-tiff's writer: float32 gray pages in ImageJ's order (channel, then slice, then sample), read by
    Pillow (an independent reader) and by the stack walker, with the description that names the counts."""
    from torchdiffusion.data.tiff import full_pages, hyperstack_bytes

    x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32) * 300
    (tmp_path / "s.tif").write_bytes(hyperstack_bytes(x))
    n, c = shape[:2]
    d = shape[2] if len(shape) == 5 else 1
    want = x.reshape(n, c, d, *shape[-2:]).transpose(0, 2, 1, 3, 4).reshape(-1, *shape[-2:])
    with Image.open(tmp_path / "s.tif") as im:
        assert im.n_frames == n * c * d
        description = im.tag_v2[270]
        for k in range(im.n_frames):
            im.seek(k)
            assert im.mode == "F" and np.array_equal(np.asarray(im), want[k])
    assert f"images={n * c * d}\nchannels={c}\nslices={d}\nframes={n}\nhyperstack=true" in description
    assert len(full_pages((tmp_path / "s.tif").read_bytes())) == n * c * d


def test_sample_writes_its_images_as_a_float_tiff_as_the_folder_source_reads_them(tmp_path):
    """A picture run's samples as fractions in [0, 1] (the folder source's float TIFFs); a signal run refused."""
    from tinyruns import write_run

    run = write_run(tmp_path / "img", "digits-test", ["model.num_classes=0"])
    rc, _, err = cli("sample", run, "--n", "3", "--steps", "2", "--save-npy", "--save-tiff",
                     "--out", tmp_path / "s.png")  # fmt: skip
    assert rc == 0, err
    s = np.load(tmp_path / "s.npy")
    with Image.open(tmp_path / "s.tif") as im:
        pages = []
        for k in range(im.n_frames):
            im.seek(k)
            pages.append(np.asarray(im))
    assert np.allclose(np.stack(pages), (s[:, 0] + 1) / 2, atol=1e-6) and (tmp_path / "s.tif.manifest.json").is_file()
    signal = write_run(tmp_path / "sig", "signal-gunpoint", ["model.num_classes=0", "sample.steps=2"], (1, 16))
    rc, _, err = cli("sample", signal, "--n", "1", "--steps", "1", "--save-tiff", "--out", tmp_path / "g.png")
    assert_clean_error(rc, err, "--save-tiff writes images and volumes; ")
    assert not (tmp_path / "g.png").exists()
