"""The editing and explain commands end to end on an untrained tiny run folder (files written, bad input -> exit 2)."""

import json

import pytest
import torch
from PIL import Image

from pictures import TAB_BLUE, TAB_ORANGE, assert_plot
from torchdiffusion.cli import main
from torchdiffusion.config import get_preset, override, to_json
from torchdiffusion.model import build_model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder like `train` writes, with random weights: 8x8 digits, tiny U-Net, 3 Euler steps."""
    d = tmp_path_factory.mktemp("run")
    cfg = override(get_preset("digits-test"), ["sample.steps=3"])
    torch.manual_seed(0)
    model = build_model(cfg, (1, 8, 8))
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "ema.safetensors"))
    (d / "config.json").write_text(to_json(cfg))
    (d / "run.json").write_text(json.dumps({"data_shape": [1, 8, 8], "kind": "image", "finished": True}))
    return d


def _png_size(path):
    with Image.open(path) as im:
        return im.size


@pytest.mark.parametrize(
    "argv,rows",
    [
        (["inpaint", "--n", "3", "--mask", "centre"], 3),
        (["inpaint", "--n", "3", "--resample", "2", "--jump", "1"], 3),
        (["inpaint", "--n", "3", "--pseudoinverse", "1", "--pseudoinverse-sigma-max", "100"], 3),
        (["outpaint", "--n", "3", "--right", "4"], 2),
        (["img2img", "--n", "3", "--strength", "0", "0.5"], 3),
        (["interpolate", "--seeds", "1", "2", "--frames", "3", "--steps", "2"], 1),
        (["interpolate", "--data-index", "0", "1", "--frames", "3", "--steps", "2", "--method", "euler"], 1),
    ],
)
def test_edit_commands_write_before_after_grids(run_dir, tmp_path, argv, rows, capsys):
    out = tmp_path / "o.png"
    assert main(argv[:1] + [str(run_dir)] + argv[1:] + ["--out", str(out)]) == 0
    assert out.is_file() and not list(tmp_path.glob("*.tmp*"))
    w, h = _png_size(out)
    assert h == 4 * (rows * (8 + 2) + 2)  # `rows` rows of 8-px images, 2-px padding, shown at 4x


def test_img2img_strength_zero_row_is_the_input(run_dir, tmp_path):
    out = tmp_path / "o.png"
    assert main(["img2img", str(run_dir), "--n", "2", "--strength", "0", "--out", str(out)]) == 0
    import numpy as np

    a = np.asarray(Image.open(out))
    assert np.array_equal(a[4 * 2 : 4 * 10], a[4 * 12 : 4 * 20])  # row 1 (input) == row 2 (strength 0)


def test_pseudoinverse_changes_the_repainted_rows_only(run_dir, tmp_path):
    """--pseudoinverse alters the result row; the original and masked-input rows stay as they were. The U-Net's
    zero-initialised output layer would make D(x) = x (no pixel depends on another), so its weights get noise."""
    import shutil

    import numpy as np
    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    g = torch.Generator().manual_seed(0)
    weights = load_file(str(run / "ema.safetensors"))
    weights = {
        k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in weights.items()
    }
    save_file(weights, str(run / "ema.safetensors"))
    rows = {}
    for name, extra in (("plain", []), ("guided", ["--pseudoinverse", "1", "--pseudoinverse-sigma-max", "100"])):
        out = tmp_path / f"{name}.png"
        assert main(["inpaint", str(run), "--n", "2", "--out", str(out), *extra]) == 0
        rows[name] = np.asarray(Image.open(out)).astype(int)
    a, b = rows["plain"], rows["guided"]
    assert np.array_equal(a[: 4 * 20], b[: 4 * 20])  # rows 1-2: originals and inputs
    assert np.abs(a[4 * 22 :] - b[4 * 22 :]).max() > 0  # row 3: the repainted images


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["inpaint", "{run}", "--mask", "box:1,2"], "box mask"),
        (["inpaint", "{run}", "--mask", "hole.png"], "does not exist"),
        (["img2img", "{run}", "--strength", "1.5"], "strength"),
        (["outpaint", "{run}"], "margins"),
        (["interpolate", "{run}", "--frames", "1"], "frames"),
        (["explain", "field", "{run}"], "2-D run"),
        (["explain", "loss", "{run}"], "metrics.jsonl"),
        (["explain", "ablation"], "needs a run folder"),
        (["inpaint", "/nonexistent/run"], "does not exist"),
        (["inpaint", "{run}", "--pseudoinverse", "-1"], "--pseudoinverse"),
        (["inpaint", "{run}", "--pseudoinverse", "1", "--pseudoinverse-sigma-max", "0"], "--pseudoinverse-sigma-max"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run_dir, tmp_path, argv, msg, capsys):
    argv = [a.format(run=run_dir) for a in argv] + ["--out", str(tmp_path / "x.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_explain_schedules_and_ablation(run_dir, tmp_path):
    assert main(["explain", "schedules", "--T", "50", "--out", str(tmp_path / "s.png")]) == 0
    assert (
        main(["explain", "ablation", str(run_dir), "--n", "4", "--ddpm-steps", "3", "--out", str(tmp_path / "a.png")])
        == 0
    )
    assert_plot(tmp_path / "s.png", min_aspect=2.5, colours=(TAB_BLUE, TAB_ORANGE))  # three panels of curves
    assert_plot(tmp_path / "a.png")
