"""Write the TIFF test files (tests/data/tiff/) with tifffile, an independent TIFF writer.

Each file holds ``np.random.default_rng(seed).integers(0, 65536, (H, W, S), dtype=np.uint16)`` (or integers over
the whole range of the int16, uint32 or int32 ``dtype`` it names, or ``.random`` float fractions of the float32 or
float64 one, or float32 ones rounded to float16), stored as the index
(tests/data/tiff/index.json) says: photometric (RGB, or gray where 0 is black or white), compression, predictor (2,
or the floating-point 3), strips or tiles, planar configuration, byte order, extra samples (alpha), orientation and
BigTIFF. tests/test_tiff.py regenerates each array from its seed and compares it with what ``data.tiff.read_tiff``
reads. Needs ``tifffile`` and
``imagecodecs`` (for LZW and PackBits), which torchdiffusion itself does not: ``pip install tifffile imagecodecs``.

    python scripts/tiff_fixtures.py --out tests/data/tiff
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

CASES = [
    dict(name="plain", shape=(11, 13, 3), rowsperstrip=3),
    dict(name="lzw_predictor", shape=(40, 50, 3), compression="lzw", predictor=True, rowsperstrip=7),
    dict(name="lzw_long", shape=(64, 64, 3), compression="lzw"),  # random data: the code table fills and clears
    dict(name="deflate_bigendian", shape=(21, 17, 3), compression="zlib", predictor=True, byteorder=">"),
    dict(name="old_deflate", shape=(9, 10, 3), compression="deflate"),  # tag value 32946
    dict(name="packbits", shape=(12, 19, 3), compression="packbits", rowsperstrip=5),
    dict(name="planar", shape=(23, 15, 3), compression="zlib", planarconfig="separate", rowsperstrip=8),
    dict(name="tiles", shape=(20, 35, 3), compression="lzw", tile=(16, 16)),
    dict(
        name="tiles_planar",
        shape=(18, 33, 3),
        compression="zlib",
        tile=(16, 16),
        planarconfig="separate",
        byteorder=">",
    ),
    dict(name="rgba", shape=(10, 12, 4), compression="zlib", extrasamples="unassalpha"),
    dict(name="rgba_premultiplied", shape=(10, 12, 4), extrasamples="assocalpha"),
    dict(name="gray_alpha", shape=(9, 14, 2), photometric="minisblack", extrasamples="unassalpha"),
    dict(name="white_is_zero", shape=(12, 9, 1), photometric="miniswhite", compression="lzw", predictor=True),
    dict(name="white_is_zero_alpha", shape=(7, 8, 2), photometric="miniswhite", extrasamples="assocalpha"),
    dict(name="orientation6", shape=(6, 10, 3), orientation=6),
    dict(name="orientation7", shape=(6, 10, 3), orientation=7),
    dict(name="tiles_predictor", shape=(19, 40, 3), compression="zlib", predictor=True, tile=(16, 16)),
    dict(name="float_rgb", shape=(9, 11, 3), dtype="float32", compression="zlib"),
    dict(name="float_rgba_bigendian", shape=(8, 6, 4), dtype="float32", extrasamples="unassalpha", byteorder=">"),
    dict(
        name="float_gray_alpha_tiles",
        shape=(20, 18, 2),
        dtype="float32",
        photometric="minisblack",
        extrasamples="unassalpha",
        tile=(16, 16),
    ),
    dict(name="float_predictor3", shape=(5, 7, 3), dtype="float32", compression="zlib", predictor=3),
    dict(name="float_kelvin", shape=(6, 5, 3), dtype="float32", units=(260.0, 50.0)),  # 260 + 50 u, in kelvins
    dict(
        name="float_predictor3_tiles_bigendian",
        shape=(20, 18, 3),
        dtype="float32",
        compression="zlib",
        predictor=3,
        tile=(16, 16),
        byteorder=">",
    ),
    dict(
        name="float_predictor3_planar",
        shape=(7, 9, 3),
        dtype="float32",
        compression="lzw",
        predictor=3,
        planarconfig="separate",
        rowsperstrip=3,
    ),
    dict(
        name="float64_gray_predictor3",
        shape=(9, 7, 1),
        dtype="float64",
        photometric="minisblack",
        compression="lzw",
        predictor=3,
        units=(-40.0, 90.0),
    ),
    dict(name="float64_rgb", shape=(5, 6, 3), dtype="float64"),
    dict(name="float16_gray", shape=(8, 5, 1), dtype="float16", photometric="minisblack"),
    dict(name="float16_rgb_predictor3", shape=(6, 9, 3), dtype="float16", compression="zlib", predictor=3),
    dict(name="bigtiff", shape=(12, 10, 3), compression="zlib", predictor=True, bigtiff=True),
    dict(name="bigtiff_tiles_bigendian", shape=(20, 17, 3), tile=(16, 16), bigtiff=True, byteorder=">"),
    dict(
        name="bigtiff_float_gray_alpha",
        shape=(6, 7, 2),
        dtype="float32",
        photometric="minisblack",
        extrasamples="unassalpha",
        bigtiff=True,
    ),
    dict(name="int16_rgb", shape=(7, 9, 3), dtype="int16", compression="zlib", predictor=True),
    dict(name="uint32_rgb_lzw", shape=(6, 5, 3), dtype="uint32", compression="lzw", predictor=True, byteorder=">"),
    dict(name="int32_rgb_planar", shape=(5, 8, 3), dtype="int32", planarconfig="separate"),
    dict(name="uint32_rgb_16bit_values", shape=(4, 6, 3), dtype="uint32", span=(0, 65536)),
    # integers with alpha (its full scale: the type's largest value): colours of 16-bit values, alpha over its range
    dict(name="int16_rgba", shape=(6, 7, 4), dtype="int16", span=(0, 32768), extrasamples="unassalpha"),
    dict(
        name="uint32_gray_alpha_planar",
        shape=(5, 6, 2),
        dtype="uint32",
        photometric="minisblack",
        extrasamples="assocalpha",
        planarconfig="separate",
        span=(0, 65536),
        alpha_span=(0, 2**32),
    ),
    dict(name="int32_rgba_opaque", shape=(4, 5, 4), dtype="int32", extrasamples="unassalpha", opaque=True),
    dict(name="lzma", shape=(6, 7, 3), compression="lzma", predictor=True),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("tests/data/tiff"))
    args = p.parse_args()
    import tifffile  # not a dependency of torchdiffusion: pip install tifffile imagecodecs

    args.out.mkdir(parents=True, exist_ok=True)
    index = []
    for seed, case in enumerate(CASES):
        case = dict(case)
        name, shape = case.pop("name"), case.pop("shape")
        rng = np.random.default_rng(seed)
        dtype = case.pop("dtype", "uint16")
        if dtype in ("int16", "uint32", "int32"):  # integers over the type's whole range, or the case's span
            lo, hi = case.pop("span", None) or (np.iinfo(dtype).min, int(np.iinfo(dtype).max) + 1)
            a, case["dtype"] = rng.integers(lo, hi, shape, dtype=np.int64).astype(dtype), dtype
            case["span"] = [int(lo), int(hi)]
            if "alpha_span" in case:  # the alpha sample drawn over its own span after the colours'
                a[..., -1] = rng.integers(*case["alpha_span"], shape[:2], dtype=np.int64).astype(dtype)
                case["alpha_span"] = [int(v) for v in case["alpha_span"]]
            if case.get("opaque"):  # alpha at its full scale everywhere
                a[..., -1] = np.iinfo(dtype).max
        elif dtype != "uint16":  # fractions in [0, 1], as float TIFFs of pictures hold
            a, case["dtype"] = rng.random(shape, dtype=np.float64 if dtype == "float64" else np.float32), dtype
            if "units" in case:  # or lo + span u: a scientific image in its own units
                a = case["units"][0] + case["units"][1] * a
            a = a.astype(dtype)
        else:
            a = rng.integers(0, 65536, shape, dtype=np.uint16)
        orientation = case.pop("orientation", None)
        extra = [(274, "H", 1, orientation, True)] if orientation else []
        stored = np.moveaxis(a, 2, 0) if case.get("planarconfig") == "separate" else a  # (S, H, W) for planes
        if shape[2] == 1:
            stored = a[:, :, 0]
        case.setdefault("photometric", "rgb")
        written = {k: v for k, v in case.items() if k not in ("dtype", "units", "span", "alpha_span", "opaque")}
        tifffile.imwrite(args.out / f"{name}.tif", stored, extratags=extra, metadata=None, **written)
        index.append({"file": f"{name}.tif", "seed": seed, "shape": list(shape), **case, "orientation": orientation})
    (args.out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    layouts(tifffile, args.out / "layouts")
    stacks(tifffile, args.out / "stacks")
    print(f"{len(index)} files in {args.out}, and the layouts and stacks in its folders layouts/ and stacks/")


def layouts(tifffile, out: Path) -> None:
    """8-bit TIFFs of the layouts the folder source refuses (a stack, many channels) and of those it reads (a
    reduced-resolution preview after the image, an unnamed 4th sample after RGB); layouts.json says which."""
    out.mkdir(parents=True, exist_ok=True)
    g = (np.arange(6 * 8).reshape(6, 8) * 5).astype(np.uint8)
    tifffile.imwrite(out / "stack.tif", np.stack([g] * 4), photometric="minisblack", metadata=None)
    big = dict(photometric="minisblack", metadata=None, bigtiff=True)
    tifffile.imwrite(out / "stack_bigtiff.tif", np.stack([g] * 3), **big)
    tifffile.imwrite(out / "channels5.tif", np.stack([g] * 5, -1), photometric="minisblack", planarconfig="contig")
    tifffile.imwrite(out / "channels5_planar.tif", np.stack([g] * 5), photometric="minisblack", planarconfig="separate")
    tifffile.imwrite(out / "rgbx.tif", np.stack([g] * 4, -1), photometric="rgb", extrasamples=["unspecified"])
    with tifffile.TiffWriter(out / "preview.tif") as t:
        t.write(np.stack([g] * 3, -1), photometric="rgb", metadata=None)
        t.write(np.stack([g[:3, :4]] * 3, -1), photometric="rgb", subfiletype=1, metadata=None)  # reduced resolution
    expect = {
        "stack.tif": "it holds 4 images",
        "stack_bigtiff.tif": "it holds 3 images",
        "channels5.tif": "it holds 5 samples per pixel",
        "channels5_planar.tif": "it holds 5 samples per pixel",
        "rgbx.tif": None,
        "preview.tif": None,
    }
    (out / "layouts.json").write_text(json.dumps(expect, indent=1) + "\n")


STACKS = [  # z-stacks for the tiff_stack volume source: (D, H, W) gray, values from the seed as below
    dict(name="u16.tif", dtype="uint16", shape=(5, 6, 8), compression="zlib"),
    dict(name="u8_lzw.tif", dtype="uint8", shape=(4, 6, 8), compression="lzw"),
    dict(name="i32.tif", dtype="int32", shape=(3, 6, 8)),
    dict(name="f32_previews.tif", dtype="float32", shape=(4, 6, 8), previews=True),
    dict(name="f64_bigtiff.tif", dtype="float64", shape=(3, 6, 8), bigtiff=True, compression="lzw", predictor=3),
    dict(name="u16_miniswhite.tif", dtype="uint16", shape=(3, 6, 8), photometric="miniswhite"),
    dict(name="rgb.tif", dtype="uint8", shape=(3, 6, 8, 3), photometric="rgb", error="samples per pixel"),
    dict(name="single.tif", dtype="uint16", shape=(1, 6, 8), error="holds one image, not a stack"),
]


def stack_values(seed: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """The values of a stack fixture: integers over the type's range (int32: +-10^6), floats in kelvins."""
    rng = np.random.default_rng(seed)
    if dtype.startswith("float"):
        return (250 + 100 * rng.random(shape)).astype(dtype)
    lo, hi = (-(10**6), 10**6) if dtype == "int32" else (0, np.iinfo(dtype).max + 1)
    return rng.integers(lo, hi, shape).astype(dtype)


def stacks(tifffile, out: Path) -> None:
    """The z-stacks of STACKS (stacks.json: each file's seed, dtype, shape, photometric and expected refusal)."""
    out.mkdir(parents=True, exist_ok=True)
    index = {}
    for seed, case in enumerate(STACKS, 100):
        case = dict(case)
        name, dtype, shape = case.pop("name"), case.pop("dtype"), tuple(case.pop("shape"))
        error, previews = case.pop("error", None), case.pop("previews", False)
        a = stack_values(seed, dtype, shape)
        case.setdefault("photometric", "minisblack")
        if previews:  # each slice followed by a reduced-resolution page, which is not a slice
            with tifffile.TiffWriter(out / name) as t:
                for page in a:
                    t.write(page, metadata=None, **case)
                    t.write(page[::2, ::2], subfiletype=1, metadata=None, **case)
        else:
            tifffile.imwrite(out / name, a[0] if shape[0] == 1 else a, metadata=None, **case)
        index[name] = {"seed": seed, "dtype": dtype, "shape": list(shape), "photometric": case["photometric"],
                       "error": error}  # fmt: skip
    (out / "stacks.json").write_text(json.dumps(index, indent=1) + "\n")


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
