"""The editing and explain commands end to end on an untrained tiny run folder (files written, bad input -> exit 2)."""

import json

import pytest
import torch
from PIL import Image

from pictures import TAB_BLUE, TAB_ORANGE, assert_plot
from torchdiffusion.cli import main
from torchdiffusion.config import override, to_json
from torchdiffusion.model import build_model
from torchdiffusion.presets import get_preset


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


def test_interpolates_manifest_names_the_noises_it_drew(run_dir, tmp_path):
    """The manifest said seed 0 (n = 1) for a path between seeds 5 and 9, and seed 0 for a path between images."""
    out = tmp_path / "i.png"
    assert (
        main(["interpolate", str(run_dir), "--seeds", "5", "9", "--frames", "3", "--steps", "2", "--out", str(out)])
        == 0
    )
    drawn = json.loads((tmp_path / "i.png.manifest.json").read_text())["sampling"][0]
    assert drawn["seeds"] == [[5, 5], [9, 9]] and drawn["n"] == 2 and drawn["wrappers"][0]["seeds"] == [5, 9]
    args = ["--data-index", "0", "1", "--frames", "3", "--steps", "2", "--method", "euler"]
    assert main(["interpolate", str(run_dir), *args, "--out", str(out)]) == 0
    drawn = json.loads((tmp_path / "i.png.manifest.json").read_text())["sampling"][0]
    assert drawn["seeds"] is None and drawn["wrappers"][0]["data_index"] == [0, 1]


def test_inpaints_manifest_records_the_values_used_for_flags_left_out(run_dir, tmp_path):
    """RePaint's jump (steps // 4) and the pseudoinverse cap (20 sigma_data) were left out of the manifest when
    their flags were: a reader could not tell what ran."""
    out = tmp_path / "r.png"
    args = ["--n", "2", "--steps", "8", "--resample", "2", "--pseudoinverse", "1", "--out", str(out)]
    assert main(["inpaint", str(run_dir), *args]) == 0
    edit = json.loads((tmp_path / "r.png.manifest.json").read_text())["sampling"][0]["wrappers"][0]
    assert edit["jump"] == 2 and edit["pseudoinverse_sigma_max"] > 0 and edit["resample"] == 2


def test_img2img_strength_zero_row_is_the_input(run_dir, tmp_path):
    out = tmp_path / "o.png"
    assert main(["img2img", str(run_dir), "--n", "2", "--strength", "0", "--out", str(out)]) == 0
    import numpy as np

    a = np.asarray(Image.open(out))
    assert np.array_equal(a[4 * 2 : 4 * 10], a[4 * 12 : 4 * 20])  # row 1 (input) == row 2 (strength 0)


def test_edits_save_the_edited_examples_as_arrays(run_dir, tmp_path, capsys):
    """--save-npy: the edited examples beside the PNG in the data's units - inpaint's keep the known pixels of its
    inputs exactly, img2img's hold one row per strength (strength 0: the inputs), outpaint's the grown canvas - with
    the .npy in the picture's manifest; a forecast, which writes its .npy anyway, refuses the flag."""
    import numpy as np

    img = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "in.png")
    x = img.astype(np.float32) / 127.5 - 1
    out = tmp_path / "i.png"
    args = ["--images", str(tmp_path / "in.png"), "--steps", "2", "--save-npy"]
    assert main(["inpaint", str(run_dir), *args, "--mask", "half:bottom", "--out", str(out)]) == 0
    got = np.load(out.with_suffix(".npy"))
    assert got.shape == (1, 1, 8, 8) and np.allclose(got[0, 0, :4], x[:4], atol=1e-6)  # the known half, as read
    assert "i.npy" in json.loads((tmp_path / "i.png.manifest.json").read_text())["files"]
    assert main(["img2img", str(run_dir), *args, "--strength", "0", "0.5", "--out", str(tmp_path / "s.png")]) == 0
    got = np.load(tmp_path / "s.npy")
    assert got.shape == (2, 1, 1, 8, 8) and np.allclose(got[0, 0, 0], x, atol=1e-6)
    assert main(["outpaint", str(run_dir), *args, "--right", "4", "--out", str(tmp_path / "o.png")]) == 0
    assert np.load(tmp_path / "o.npy").shape == (1, 1, 8, 12)
    assert main(["inpaint", str(run_dir), "--steps", "2", "--out", str(tmp_path / "plain.png")]) == 0
    assert not (tmp_path / "plain.npy").exists()  # only when asked for


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


@pytest.fixture(scope="module")
def class_run_dir(tmp_path_factory):
    """A class-conditional run folder (10 classes, 8x8 digits) whose weights carry noise, so the class matters."""
    from tinyruns import write_run

    folder = tmp_path_factory.mktemp("edit-class") / "run"
    return write_run(folder, "digits-test", ["model.num_classes=10", "sample.steps=3"], (1, 8, 8), jitter=0.05)


def _cells(path, rows: int, cols: int, h: int = 8, w: int = 8):
    """The h x w images of a grid PNG (2-px padding, shown at 4x) as a (rows, cols, 4h, 4w) int array."""
    import numpy as np

    a = np.asarray(Image.open(path).convert("L")).astype(int)
    ys, xs = [4 * (2 + (h + 2) * r) for r in range(rows)], [4 * (2 + (w + 2) * c) for c in range(cols)]
    return np.array([[a[y : y + 4 * h, x : x + 4 * w] for x in xs] for y in ys])


@pytest.mark.parametrize(
    "argv,rows,known",
    [
        (["inpaint", "--resample", "2", "--jump", "1"], 3, 2),
        (["img2img", "--strength", "0.7"], 2, 1),
        (["outpaint", "--right", "4"], 2, 1),
    ],
)
def test_class_edits_follow_the_class_of_each_image(class_run_dir, tmp_path, argv, rows, known):
    """--class k edits towards class k: the result row differs from the null class's and from another class's,
    while the rows shown as given (originals, masked inputs) are untouched; classes are cycled over the images
    and each image's result depends on its own class alone (--class 3,5 = the first image of --class 3 and the
    second of --class 5); sample.guidance applies classifier-free guidance to the class."""
    import numpy as np

    def edit(*extra):
        out = tmp_path / f"{argv[0]}{'_'.join(extra).replace(',', '-')}.png"
        assert main([argv[0], str(class_run_dir), *argv[1:], "--n", "2", "--out", str(out), *extra]) == 0
        return _cells(out, rows, 2, w=12 if argv[0] == "outpaint" else 8)  # outpaint: 8 x (8 + 4) canvases

    null, three, five = edit(), edit("--class", "3"), edit("--class", "5")
    both = edit("--class", "3,5")
    assert np.array_equal(three[:known], null[:known]) and np.array_equal(five[:known], null[:known])
    assert np.abs(three[known:] - null[known:]).max() > 0 and np.abs(three[known:] - five[known:]).max() > 0
    assert np.array_equal(both[known:, 0], three[known:, 0]) and np.array_equal(both[known:, 1], five[known:, 1])
    assert np.array_equal(edit("--class", "3,3"), three)
    assert np.abs(edit("--class", "3", "--set", "sample.guidance=3")[known:] - three[known:]).max() > 0


@pytest.mark.parametrize(
    "which,argv,msg",
    [
        ("plain", ["inpaint", "--class", "3"], "not class-conditional"),
        ("class", ["img2img", "--class", "10"], "class 10 is out of range"),
        ("class", ["outpaint", "--right", "4", "--class", "seven"], "class 'seven' is not a whole number"),
    ],
)
def test_bad_class_for_an_edit_is_one_line_and_exit_2(run_dir, class_run_dir, tmp_path, which, argv, msg, capsys):
    run = run_dir if which == "plain" else class_run_dir
    out = tmp_path / "x.png"
    assert main([argv[0], str(run), *argv[1:], "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.parametrize("command", ["inpaint", "outpaint", "img2img"])
def test_more_classes_than_images_advises_what_the_mode_takes(class_run_dir, tmp_path, command, capsys):
    """More classes than the images edited is refused in one line; its advice was --n, which an edit of --images
    files refuses: with files it asks for more files, from the run's data for a larger --n. The --class help says
    the rule, as sample's does."""
    from torchdiffusion.studio.params import command_parser

    picture = tmp_path / "in.png"
    Image.new("L", (8, 8), 90).save(picture)
    out = tmp_path / "x.png"
    sized = ["--right", "2"] if command == "outpaint" else []
    for inputs, advice in (
        (
            ["--images", str(picture)],
            "2 --class classes for 1 image: image k takes item k mod 2, so 1 would make "
            "none; edit at least 2 files (--images) or give fewer",
        ),
        (
            ["--n", "1"],
            "2 --class classes for 1 image: image k takes item k mod 2, so 1 would make none; ask for "
            "at least 2 images (--n) or give fewer",
        ),
    ):
        argv = [command, str(class_run_dir), *sized, *inputs, "--class", "0,1", "--steps", "2", "--out", str(out)]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith(advice) and len(err.splitlines()) == 1, err
        assert not out.exists()
    help_text = command_parser(command)._option_string_actions["--class"].help
    assert "no more classes than images" in help_text, help_text


def test_grids_of_small_images_are_enlarged_without_a_jump(tmp_path):
    """save_grid's default enlargement: every image under 64 px is shown at least 64 px high (an outpainted 28 px
    digit, 36 px, is not drawn at 1x beside 4x inpaintings), none shrinks, and 64 px and up stay at 1x."""
    from torchdiffusion.viz import save_grid

    for h in (8, 28, 31, 32, 36, 42, 43, 63, 64, 100):
        w, shown = _png_size(save_grid(torch.zeros(1, 1, h, h), tmp_path / f"{h}.png", nrow=1))
        scale = shown // (h + 4)  # one image and its 2-px padding on each side
        assert h * scale >= min(4 * h, 64) and (scale == 1) == (h >= 64), (h, scale)


def test_outpaints_manifest_records_the_repaint_jump_that_ran(run_dir, tmp_path):
    """outpaint --resample 2 ran with RePaint's default jump (steps // 4) and its manifest left it out."""
    out = tmp_path / "o.png"
    assert main(["outpaint", str(run_dir), "--n", "1", "--right", "2", "--steps", "8", "--resample", "2",
                 "--out", str(out)]) == 0  # fmt: skip
    edit = json.loads((tmp_path / "o.png.manifest.json").read_text())["sampling"][0]["wrappers"][0]
    assert edit["jump"] == 2 and edit["resample"] == 2
