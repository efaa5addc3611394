"""Users' files whose fields lie, whose sizes are bombs or whose values overflow float32: one clear line (exit 2 from
the command line), never a traceback, nothing written; odd but valid files (a tag with no values, a folder name that
is not UTF-8, a large photo) read as they should."""

import io
import math
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from test_cli_errors import assert_clean_error
from test_data_kinds import write_png16
from tinyruns import cli
from torchdiffusion.data.base import DataError
from torchdiffusion.data.files import read_image

pytestmark = pytest.mark.usefixtures("one_thread")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _with_ihdr(png: bytes, body: bytes) -> bytes:
    """``png`` with its IHDR chunk's body replaced (lengths and CRC made right: only the fields lie)."""
    at = png.index(b"IHDR") - 4
    (n,) = struct.unpack(">I", png[at : at + 4])
    return png[:at] + _chunk(b"IHDR", body) + png[at + 12 + n :]


def test_16bit_pngs_whose_header_lies_are_one_line(tmp_path):
    good = tmp_path / "good.png"
    write_png16(good, np.full((8, 8, 3), 40000, dtype=np.uint16))
    png = good.read_bytes()
    ihdr = lambda w, h: struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)  # noqa: E731
    cases = {
        "short.png": (png[:8] + struct.pack(">I", 5) + png[12:], "IHDR chunk is 5 bytes"),  # its length field lies
        "zero.png": (_with_ihdr(png, ihdr(0, 8)), "0x8 pixels"),
        "bomb.png": (_with_ihdr(png, ihdr(40000, 40000)), "40000x40000 pixels"),
    }
    for name, (data, words) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=rf"cannot read image .*{name}: .*{words}"):
            read_image(tmp_path / name, size=(8, 8))
    assert read_image(good).shape == (1, 8, 8)  # colourless RGB: one channel


def _gray_tiff(pages: list[np.ndarray]) -> bytes:
    buf = io.BytesIO()
    first, *rest = [Image.fromarray(p) for p in pages]
    first.save(buf, format="TIFF", save_all=bool(rest), append_images=rest)
    return buf.getvalue()


def _patch_tags(data: bytes, patch: dict[int, tuple[int | None, int | None]]) -> bytes:
    """A little-endian classic TIFF with, in every IFD, tag -> (new count, new inline value) (None: kept)."""
    out = bytearray(data)
    assert out[:2] == b"II"
    (pos,) = struct.unpack("<I", out[4:8])
    while pos:
        (n,) = struct.unpack("<H", out[pos : pos + 2])
        for k in range(n):
            e = pos + 2 + 12 * k
            tag, typ = struct.unpack("<HH", out[e : e + 4])
            if tag in patch:
                count, value = patch[tag]
                if count is not None:
                    out[e + 4 : e + 8] = struct.pack("<I", count)
                if value is not None:
                    out[e + 8 : e + 12] = struct.pack("<H" if typ == 3 else "<I", value) + b"\0" * (
                        2 if typ == 3 else 0
                    )
        (pos,) = struct.unpack("<I", out[pos + 2 + 12 * n : pos + 6 + 12 * n])
    return bytes(out)


def test_a_tiff_tag_without_values_is_as_if_absent_and_bomb_sized_stacks_are_one_line(tmp_path):
    from torchdiffusion.data.volume import read_tiff_stack

    a = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    (tmp_path / "one.tif").write_bytes(_patch_tags(_gray_tiff([a]), {262: (0, None)}))  # PhotometricInterpretation
    got = (read_image(tmp_path / "one.tif")[0].numpy() + 1) * 127.5  # no photometric: Pillow's choice of sense
    assert np.allclose(got, a, atol=1e-3) or np.allclose(got, 255 - a.astype(float), atol=1e-3)
    (tmp_path / "stack.tif").write_bytes(_patch_tags(_gray_tiff([a, a[::-1]]), {262: (0, None)}))
    vol, want = read_tiff_stack(tmp_path / "stack.tif"), np.stack([a, a[::-1]]).astype(np.float64)
    assert np.array_equal(vol, want) or np.array_equal(vol, 255 - want)
    (tmp_path / "bomb.tif").write_bytes(_patch_tags(_gray_tiff([a, a]), {256: (None, 20000), 257: (None, 20000)}))
    with pytest.raises(DataError, match=r"cannot read .*bomb.tif: .*exceeds limit"):
        read_tiff_stack(tmp_path / "bomb.tif")


def test_a_mask_of_a_bomb_size_is_one_line_and_a_large_photo_reads_without_warnings(tmp_path):
    from torchdiffusion.masks import MaskError, make_mask

    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png")  # 400 megapixels, a few kB
    with pytest.raises(MaskError, match=r"cannot read mask image .*bomb.png \(Image size \(400000000 pixels\)"):
        make_mask(str(tmp_path / "bomb.png"), 8, 8)
    Image.new("L", (10000, 10000), 128).save(tmp_path / "photo.png")  # 100 megapixels: Pillow's warning size
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        x = read_image(tmp_path / "photo.png", size=(8, 8))
        mask = make_mask(str(tmp_path / "photo.png"), 8, 8)
    assert x.shape == (1, 8, 8) and mask.shape[-2:] == (8, 8)
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]


def _float64_wav(path, x: np.ndarray, rate: int = 100) -> None:
    """A mono 64-bit float WAV (format tag 3)."""
    body = x.astype("<f8").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 8, 8, 64)
    path.write_bytes(
        b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(body)) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(body)) + body
    )  # fmt: skip


def test_values_beyond_float32s_range_are_refused_before_any_work(tmp_path):
    """Finite float64 values above ~3.4e38 would become infinities in the float32 tensors: the array, WAV, series
    and NIfTI readers refuse them in one line, where a training run would otherwise fail after writing its folder
    and impute would write a file of infinities."""
    from torchdiffusion.data.signal import read_signal_file

    rng = np.random.default_rng(0)
    np.save(tmp_path / "sig.npy", rng.random((8, 1, 32)) * 1e300)
    rc, _, err = cli("train", "--preset", "digits-test", "--set", "data.source=array",
                     "--set", f"data.path={tmp_path / 'sig.npy'}", "--out", tmp_path / "run")  # fmt: skip
    assert_clean_error(rc, err, "beyond float32's range")
    assert not (tmp_path / "run").exists()
    _float64_wav(tmp_path / "big.wav", rng.standard_normal(32) * 1e300)
    with pytest.raises(DataError, match=r"big.wav holds values up to .*beyond float32's range"):
        read_signal_file(tmp_path / "big.wav")
    series = rng.random((2, 1, 32))
    series[0, 0, :4] = np.nan  # missing points: what impute fills, not refused
    assert np.isnan(read_signal_file(_saved(tmp_path / "gaps.npy", series))[0]).sum() == 4
    series[1, 0, 5] = -np.inf
    with pytest.raises(DataError, match="gaps.npy holds infinite values"):
        read_signal_file(_saved(tmp_path / "gaps.npy", series))
    nib = pytest.importorskip("nibabel")
    from torchdiffusion.data.volume import read_nifti

    nib.save(nib.Nifti1Image(rng.random((4, 4, 4)) * 1e300, np.eye(4)), str(tmp_path / "big.nii"))
    with pytest.raises(DataError, match="big.nii holds values up to"):
        read_nifti(tmp_path / "big.nii")


def _saved(path, a):
    np.save(path, a)
    return path


def test_tables_refuse_infinite_cells_and_givens_and_write_whole_numbers_whole(tmp_path):
    from torchdiffusion.data.table import read_csv, write_csv
    from torchdiffusion.kinds import given_cells

    rows = [f"{v},{'ab'[i % 2]}" for i, v in enumerate(np.random.default_rng(1).normal(5, 1, 12).round(3))]
    (tmp_path / "t.csv").write_text("x,region\n" + "\n".join(rows) + "\n")
    table = read_csv(tmp_path / "t.csv")
    assert list(table.numeric) == ["x"]
    for bad in ("inf", "-Infinity", "1e400"):
        rows_bad = [*rows[:3], f"{bad},a", *rows[3:]]
        (tmp_path / "bad.csv").write_text("x,region\n" + "\n".join(rows_bad) + "\n")
        with pytest.raises(DataError, match=rf"column 'x' holds '{bad}' in row 5; its numbers must be finite"):
            read_csv(tmp_path / "bad.csv")
    (tmp_path / "cats.csv").write_text("level,n\ninf,1\nsup,2\n")  # a category that happens to read "inf"
    assert read_csv(tmp_path / "cats.csv").categorical["level"] == ["inf", "sup"]

    schema = _schema_of(table)
    assert given_cells(schema, ["x=4"], 2)[1].any()
    for bad in ("nan", "inf", "-inf", "1e400"):
        with pytest.raises(ValueError, match=rf"--given x='{bad}': the value of a numeric column must be a finite"):
            given_cells(schema, [f"x={bad}"], 2)

    write_csv(tmp_path / "out.csv", [[99678123.0, "a"], [-12.0, "b"], [1234567.25, "a"], [0.1234567, "b"]], schema)
    cells = [r.split(",")[0] for r in (tmp_path / "out.csv").read_text().splitlines()[1:]]
    assert cells == ["99678123", "-12", "1234567", "0.123457"]
    assert math.isclose(float(cells[2]), 1234567.25, rel_tol=1e-6)


def _schema_of(table):
    from torchdiffusion.data.table import normalise_table, raw_to_tensor

    data = raw_to_tensor(table, "t", None)
    return normalise_table(data, torch.arange(len(data))).schema


def test_a_class_folder_whose_name_is_not_utf8_is_named_by_its_escaped_bytes(tmp_path):
    """Linux file names are bytes: a class subfolder that is not UTF-8 trains, its class is named "caf\\xe9", and
    the run's card and JSON files are written (they were refused for the name's lone surrogate)."""
    root = os.fsencode(tmp_path / "cls")
    for name in (b"caf\xe9", b"tea"):
        os.makedirs(os.path.join(root, name))
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i + (100 if name == b"tea" else 0), np.uint8)).save(
                os.path.join(root, name, b"%d.png" % i)
            )
    run = tmp_path / "run"
    rc, _, err = cli("train", "--preset", "digits-test", "--set", "data.source=folder",
                     "--set", f"data.path={tmp_path / 'cls'}", "--set", "train.images=16", "--no-progress",
                     "--out", run)  # fmt: skip
    assert rc == 0, err
    import json

    assert json.loads((run / "run.json").read_text())["class_names"] == ["caf\\xe9", "tea"]
    rc, _, err = cli("card", run)
    assert rc == 0, err
    assert "caf\\xe9" in (run / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert torch.is_tensor(read_image(os.fsdecode(os.path.join(root, b"caf\xe9", b"0.png"))))
