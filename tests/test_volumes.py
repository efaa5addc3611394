"""3-D volumes (N, C, D, H, W): the 3-D U-Net, activation checkpointing, data, pictures, metrics, the CLI."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pictures import assert_plot
from test_cli_errors import assert_clean_error
from tinyruns import cli, write_run
from torchdiffusion.config import ConfigError, DataConfig, ModelConfig
from torchdiffusion.data import DataError, load_data
from torchdiffusion.data.volume import random_rotations, shapes3d, signed_distance
from torchdiffusion.nets import build_net

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ModelConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), groups=4, head_channels=8)


@pytest.mark.parametrize("shape", [(1, 8, 8, 8), (2, 4, 8, 16), (1, 16, 4, 8)])
def test_unet3d_keeps_anisotropic_shapes(shape):
    net = build_net(TINY, shape)
    x = torch.randn(3, *shape)
    out = net(x, torch.rand(3))
    assert out.shape == x.shape
    assert any(isinstance(m, torch.nn.Conv3d) for m in net.modules())


def test_unet3d_size_not_divisible_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"volume size \(D x H x W\) 8x7x8 is not divisible by 2"):
        build_net(TINY, (1, 8, 7, 8))


def test_unet3d_learns_its_per_sample_outputs_independently():
    """Sample k's output depends on sample k alone (no batch statistics leak across samples)."""
    net = build_net(TINY, (1, 4, 8, 8)).eval()
    for p in net.out_conv.parameters():  # the zero-initialised output would hide any leak
        torch.nn.init.normal_(p)
    x, c = torch.randn(4, 1, 4, 8, 8), torch.rand(4)
    with torch.no_grad():
        whole = net(x, c)
        alone = torch.cat([net(x[i : i + 1], c[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(whole, alone, rtol=1e-5, atol=1e-5)


def test_checkpointing_gives_the_same_gradients():
    """Activation checkpointing recomputes the stages in backward: outputs and every gradient are unchanged."""
    shape = (1, 4, 8, 8)
    model = ModelConfig(**{**TINY.__dict__, "num_classes": 3, "dropout": 0.1})
    torch.manual_seed(0)
    plain = build_net(model, shape)
    ckpt = build_net(ModelConfig(**{**model.__dict__, "checkpoint": True}), shape)
    ckpt.load_state_dict(plain.state_dict())
    for p in list(plain.parameters()) + list(ckpt.parameters()):  # so that zero-initialised layers pass gradients
        torch.nn.init.normal_(p, std=0.2) if p.ndim > 1 else None
    ckpt.load_state_dict(plain.state_dict())
    x, c, y = torch.randn(2, *shape), torch.rand(2), {"class": torch.tensor([0, 2])}
    outs, grads = [], []
    for net in (plain, ckpt):
        torch.manual_seed(1)  # the same dropout masks (checkpoint replays the RNG state in its recomputation)
        out = net(x, c, y)
        (out**2).mean().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in net.parameters()])
    torch.testing.assert_close(outs[0], outs[1])
    assert len(grads[0]) == len(grads[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert sum(float(g.abs().sum()) for g in grads[1]) > 0


def test_rotations_are_uniform_proper_rotations():
    g = torch.Generator().manual_seed(0)
    R = random_rotations(4000, g)
    eye = torch.eye(3, dtype=R.dtype).expand_as(R)
    torch.testing.assert_close(R @ R.transpose(1, 2), eye)
    assert torch.allclose(torch.linalg.det(R), torch.ones(4000, dtype=R.dtype))
    # uniform on SO(3): E[R] = 0 and E[R_ij^2] = 1/3 (each column is uniform on the sphere)
    assert R.mean(0).abs().max() < 0.05 and ((R**2).mean(0) - 1 / 3).abs().max() < 0.03


def test_signed_distances_at_known_points():
    p = torch.tensor([[[0.0, 0, 0], [0.5, 0, 0], [0.3, 0.4, 0], [1.0, 1.0, 1.0]]], dtype=torch.float64)
    a = torch.tensor([[0.5, 0.5, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(signed_distance("sphere", p, a)[0], torch.tensor([-0.5, 0, 0, 3**0.5 - 0.5]).double())
    # the cube of half-side 0.5: -0.5 at the centre, 0 on a face, sqrt(3) * 0.5 from a corner to (1, 1, 1)
    torch.testing.assert_close(signed_distance("cube", p, a)[0], torch.tensor([-0.5, 0, -0.1, 0.75**0.5]).double())
    ring = torch.tensor([[0.4, 0.1, 0.0]], dtype=torch.float64)  # ring radius 0.4, tube 0.1
    q = torch.tensor([[[0.4, 0, 0], [0.5, 0, 0], [0, 0, 0], [0, 0.4, 0.1]]], dtype=torch.float64)
    torch.testing.assert_close(signed_distance("torus", q, ring)[0], torch.tensor([-0.1, 0, 0.3, 0]).double())
    axes = torch.tensor([[0.2, 0.4, 0.8]], dtype=torch.float64)
    on = torch.tensor([[[0.2, 0, 0], [0, 0.4, 0], [0, 0, 0.8], [0, 0, 0]]], dtype=torch.float64)
    torch.testing.assert_close(signed_distance("ellipsoid", on, axes)[0], torch.tensor([0, 0, 0, -0.2]).double())


def test_shapes3d_is_fixed_labelled_and_fills_the_right_volume():
    x, y = shapes3d(8, (8, 16, 12))
    x2, y2 = shapes3d(8, (8, 16, 12))
    assert x.shape == (8, 1, 8, 16, 12) and torch.equal(x, x2) and torch.equal(y, y2)
    assert y.tolist() == [0, 1, 2, 3, 0, 1, 2, 3] and x.min() >= -1 and x.max() <= 1
    # a sphere of radius r on a fine grid over [-1, 1]^3: the occupancy integrates to (4/3) pi r^3 (edge
    # voxels count by their soft occupancy; the soft edge is symmetric about the surface)
    g = torch.Generator().manual_seed(0)
    n = 48
    axes = [torch.linspace(-1, 1, n, dtype=torch.float64)] * 3
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(1, -1, 3)
    r = 0.3 + 0.3 * torch.rand(1, generator=g, dtype=torch.float64)
    occ = torch.sigmoid(-signed_distance("sphere", grid, r.expand(1, 3)) / (1 / (n - 1)))
    h = 2 / (n - 1)
    assert abs(float(occ.sum()) * h**3 / (4 / 3 * math.pi * float(r) ** 3) - 1) < 0.05


def test_volumes_from_npy_and_the_wrong_rank(tmp_path):
    a = np.random.default_rng(0).normal(size=(5, 2, 4, 8, 8)).astype(np.float32)
    np.save(tmp_path / "v.npy", a)
    d = load_data(DataConfig(source="array", path=str(tmp_path / "v.npy")))
    assert d.kind == "volume" and d.x.shape == (5, 2, 4, 8, 8)
    torch.testing.assert_close(d.x.sort(0).values, torch.from_numpy(a).sort(0).values)  # values kept as they are
    np.save(tmp_path / "m.npy", a[:, 0])
    d = load_data(DataConfig(source="array", path=str(tmp_path / "m.npy"), layout="NDHW"))
    assert d.kind == "volume" and d.x.shape == (5, 1, 4, 8, 8)
    np.save(tmp_path / "bad.npy", a[..., None])
    with pytest.raises(DataError, match=r"6-D array of shape"):
        load_data(DataConfig(source="array", path=str(tmp_path / "bad.npy")))
    np.save(tmp_path / "three.npy", a[:, 0, 0])
    with pytest.raises(DataError, match=r"data.layout=NDHW needs a 4-D array"):
        load_data(DataConfig(source="array", path=str(tmp_path / "three.npy"), layout="NDHW"))


def test_nifti_files_read_as_axial_volumes_scaled_to_unit_range(tmp_path):
    nib = pytest.importorskip("nibabel")
    vol = np.zeros((6, 8, 4), dtype=np.float32)  # (X, Y, Z)
    vol[1, 2, 3] = 100.0
    series = np.random.default_rng(0).uniform(0, 100, size=(6, 8, 4, 3)).astype(np.float32)
    (tmp_path / "d").mkdir()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "d" / "a.nii")
    nib.save(nib.Nifti1Image(series, np.eye(4)), tmp_path / "d" / "b.nii.gz")
    d = load_data(DataConfig(source="nifti", path=str(tmp_path / "d")))
    assert d.kind == "volume" and d.x.shape == (4, 1, 4, 8, 6)  # one volume + a series of 3, as (Z, Y, X)
    assert d.x.min() == -1 and d.x.max() == 1
    assert int(d.x[0, 0].argmax()) == np.ravel_multi_index((3, 2, 1), (4, 8, 6))  # the marked voxel, axes reversed
    nib.save(nib.Nifti1Image(np.zeros((4, 4), np.float32), np.eye(4)), tmp_path / "flat.nii")
    with pytest.raises(DataError, match=r"flat.nii is 2-D .* must be \(X, Y, Z\) or \(X, Y, Z, N\)"):
        load_data(DataConfig(source="nifti", path=str(tmp_path / "flat.nii")))
    (tmp_path / "junk.nii").write_bytes(b"not a volume")
    with pytest.raises(DataError, match="cannot read NIfTI file junk.nii"):
        load_data(DataConfig(source="nifti", path=str(tmp_path / "junk.nii")))


def tiny_volume_settings(source: str, path: Path, *, holdout: int, images: int) -> list[str]:
    """The settings of a tiny unconditional volume run (8 channels, 2 sampling steps) on the user's files ``path``
    read by ``source``."""
    tiny = [f"data.source={source}", f"data.path={path}", f"data.holdout={holdout}", "model.num_classes=0"]
    tiny += [f"train.images={images}", "model.channels=8", "model.channel_mult=1,2", "sample.steps=2", "sample.n=2"]
    return tiny


def train_tiny_volume_run(run: Path, tiny: list[str]) -> Path:
    """``train --preset volume-shapes`` with ``tiny`` (tiny_volume_settings) into ``run``."""
    rc, _, err = cli("train", "--preset", "volume-shapes", "--out", run, "--no-progress", *[f"--set={a}" for a in tiny])
    assert rc == 0, err
    return run


def test_nifti_scans_are_scaled_by_their_training_volumes_and_sampled_back_in_their_units(tmp_path):
    """A scanner's intensities (here about 300-1,300): data.scale=auto means percentile for NIfTI, fitted to the
    training volumes only and recorded in config.json; sample --save-npy writes the scanner's units again."""
    nib = pytest.importorskip("nibabel")
    from torchdiffusion.data import split_indices

    rng = np.random.default_rng(0)
    series = (800 + 250 * rng.standard_normal((8, 8, 8, 12))).astype(np.float32)  # (X, Y, Z, N)
    train_idx, holdout_idx = split_indices(12, 3, seed=0)
    series[..., int(holdout_idx[0])] += 5_000  # a bright held-out volume: it must not move the bounds
    affine = np.array([[0.9, 0, 0, -40.0], [0, 1.1, 0, 12.5], [0, 0, 2.5, 7.0], [0, 0, 0, 1]])  # voxels in mm
    nib.save(nib.Nifti1Image(series, affine), tmp_path / "scan.nii.gz")
    rows = np.moveaxis(series, (3, 2, 1, 0), (0, 1, 2, 3))[train_idx.numpy()]  # (N, Z, Y, X), the training ones
    cfg = DataConfig(source="nifti", path=str(tmp_path / "scan.nii.gz"), holdout=3)
    train = load_data(cfg, split="train")
    (lo,), (hi,) = train.value_range
    assert np.allclose([lo, hi], np.percentile(rows, [0.5, 99.5]), rtol=1e-5) and hi < 2_000
    assert train.x.min() == -1 and train.x.max() == 1  # clamped beyond the percentiles
    assert load_data(replace(cfg, scale="minmax"), split="train").value_range == ((rows.min(),), (rows.max(),))
    tiny = tiny_volume_settings("nifti", tmp_path / "scan.nii.gz", holdout=3, images=24)
    run = train_tiny_volume_run(tmp_path / "run", tiny)
    d = json.loads((run / "config.json").read_text())["data"]
    assert d["scale"] == "percentile" and np.allclose([d["scale_lo"][0], d["scale_hi"][0]], [lo, hi])
    rc, _, err = cli(
        "sample", run, "--n", "2", "--steps", "2", "--save-npy", "--save-nifti", "--out", tmp_path / "s.png"
    )
    assert rc == 0, err
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (2, 1, 8, 8, 8) and lo - 1e-3 <= s.min() and s.max() <= hi + 1e-3 and s.max() > 100
    back = nib.load(tmp_path / "s.nii.gz")  # the samples as a series on the scans' grid, as a viewer opens them
    scan_affine = nib.load(tmp_path / "scan.nii.gz").affine  # as the file holds it (float32)
    assert np.array_equal(back.affine, scan_affine) and np.allclose(scan_affine, affine) and back.shape == (8, 8, 8, 2)
    assert np.array_equal(np.asarray(back.dataobj), s[:, 0].transpose(3, 2, 1, 0))
    assert (tmp_path / "s.nii.gz.manifest.json").is_file()
    image_run = write_run(tmp_path / "image", "digits-test", ["model.num_classes=0"])
    rc, _, err = cli("sample", image_run, "--n", "1", "--steps", "1", "--save-nifti", "--out", tmp_path / "i.png")
    assert_clean_error(rc, err, "--save-nifti writes one-channel volumes")
    assert not (tmp_path / "i.png").exists()


def test_nibabels_own_functional_series_loads():
    nib = pytest.importorskip("nibabel")
    path = Path(nib.__file__).parent / "tests" / "data" / "functional.nii"
    d = load_data(DataConfig(source="nifti", path=str(path)))
    assert d.x.shape == (20, 1, 3, 21, 17)  # 20 time points of a 17 x 21 x 3 scan


def test_pictures_and_explain_of_volumes(tmp_path):
    from torchdiffusion.explain import volume_forward
    from torchdiffusion.viz import save_samples, volume_panels

    x, _ = shapes3d(3, (8, 12, 16))
    panels = volume_panels(x[0, 0], slices=4)
    assert [p[0] for p in panels[-3:]] == ["MIP D", "MIP H", "MIP W"] and len(panels) == 7
    assert [p[1].shape for p in panels[-3:]] == [(12, 16), (8, 16), (8, 12)]
    torch.testing.assert_close(torch.from_numpy(panels[-3][1]), x[0, 0].amax(0))
    assert save_samples(x, "volume", tmp_path / "s.png").stat().st_size > 5_000
    assert volume_forward(x[0], [0.1, 1.0, 5.0], path=tmp_path / "f.png").stat().st_size > 5_000
    rc, _, err = cli("explain", "volume-forward", "--data", "digits", "--out", tmp_path / "g.png")
    assert rc == 2 and "needs volume data" in err and len(err.strip().splitlines()) == 1


def _bands(mask: np.ndarray) -> list[tuple[int, int]]:
    """The [start, stop) runs of True in a 1-D mask."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def test_volume_picture_tiles_are_the_upscaled_slices_and_projections(tmp_path):
    """Every tile of save_volumes' picture is its panel (volume_panels) mapped [-1, 1] -> [0, 255] and upscaled by
    one integer factor: one row per volume (at most max_rows), labels drawn above the columns and left of the rows."""
    from PIL import Image

    from torchdiffusion.viz import save_volumes, volume_panels

    g = torch.Generator().manual_seed(0)
    x = torch.rand(10, 2, 8, 12, 16, generator=g) * 1.9 - 1  # in [-1, 0.9]: no tile pixel is white like the gaps
    path = save_volumes(x, tmp_path / "v.png", title="ten volumes", max_rows=4, row_labels=list("abcd"))
    img = np.asarray(Image.open(path).convert("L"))
    dark = img < 255
    rows = [b for b in _bands(dark.mean(1) > 0.5) if b[1] - b[0] > 20]
    assert len(rows) == 4  # max_rows of the 10 volumes
    for i, (r0, r1) in enumerate(rows):
        panels = volume_panels(x[i, 0], slices=6)
        tiles = [b for b in _bands(dark[r0:r1].mean(0) > 0.5) if b[1] - b[0] > 20]
        assert len(tiles) == len(panels) == 9
        for (c0, c1), (label, a) in zip(tiles, panels):
            ys = np.flatnonzero(dark[r0:r1, c0:c1].all(1))
            tile = img[r0 + ys[0] : r0 + ys[-1] + 1, c0:c1].astype(np.int16)
            s = tile.shape[1] // a.shape[1]
            assert s >= 4 and tile.shape == (a.shape[0] * s, a.shape[1] * s), label
            want = np.round((a + 1) * 127.5).repeat(s, 0).repeat(s, 1)
            assert np.abs(tile - want).max() <= 1, (i, label)
    c0 = [b for b in _bands(dark[rows[0][0] : rows[0][1]].mean(0) > 0.5) if b[1] - b[0] > 20][0][0]
    assert dark[: rows[0][0] - 2].sum() > 200  # the title and the column labels
    assert all(dark[r0:r1, : c0 - 2].sum() > 10 for r0, r1 in rows)  # the row labels


def test_cli_trains_samples_and_refuses_a_volume_of_the_wrong_rank(tmp_path):
    run = tmp_path / "run"
    tiny = ["data.volume_size=8,8,8", "data.volume_count=64", "data.holdout=16", "train.images=64"]
    tiny += ["model.channels=8", "model.channel_mult=1,2", "sample.steps=3", "sample.n=4", "model.checkpoint=true"]
    rc, _, err = cli("train", "--preset", "volume-shapes", "--out", run, "--no-progress", *[f"--set={a}" for a in tiny])
    assert rc == 0, err
    rc, out, err = cli(
        "sample", run, "--n", "4", "--steps", "3", "--save-npy", "--save-nifti", "--gif", "--out", tmp_path / "s.png"
    )
    assert rc == 0, err
    nib = pytest.importorskip("nibabel")
    series = nib.load(tmp_path / "s.nii.gz")  # shapes3d has no scanner grid: the identity affine
    assert np.array_equal(series.affine, np.eye(4)) and series.shape == (8, 8, 8, 4)
    assert (tmp_path / "s.gif").read_bytes()[:6] == b"GIF89a"  # the middle slices' trajectory
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (4, 1, 8, 8, 8) and np.isfinite(x).all() and (tmp_path / "s.png").stat().st_size > 5_000
    for what, extra in (("trajectory", []), ("ablation", ["--ddpm-steps", "3"])):  # the middle slices, as images
        rc, _, err = cli("explain", what, run, "--n", "4", *extra, "--out", tmp_path / f"{what}.png")
        assert rc == 0, err
        assert_plot(tmp_path / f"{what}.png")
    rc, out, err = cli("evaluate", run, "--n", "8", "--steps", "3", "--out", tmp_path / "ev")
    assert rc == 0, err
    whole = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert not {"features", "heldout_n"} & set(whole)  # the image metrics' feature nets and floor: not measured
    report = whole["volume"]
    assert {"model", "gaussian_pca", "training_volumes"} <= set(report) and report["model"]["n"] == 8
    assert all(math.isfinite(report[k]["energy"]) for k in ("model", "gaussian_pca", "training_volumes"))
    assert all((tmp_path / "ev" / f).is_file() for f in ("samples.png", "gaussian_pca.png", "profiles.png"))
    # another --seed draws other samples, in the same feature space (the classifier does not move with it)
    rc, out, err = cli("evaluate", run, "--n", "8", "--steps", "3", "--seed", "3", "--out", tmp_path / "ev3")
    assert rc == 0, err
    other = json.loads((tmp_path / "ev3" / "report.json").read_text())["volume"]
    assert other["bandwidth"] == report["bandwidth"]
    assert other["classifier_heldout_accuracy"] == report["classifier_heldout_accuracy"]
    # --guidance overrides the run's scale (2 in the preset): recorded, and other samples from the same noises
    rc, out, err = cli(
        "evaluate", run, "--n", "8", "--steps", "3", "--seed", "3", "--guidance", "0", "--out", tmp_path / "g0"
    )
    assert rc == 0, err
    unguided = json.loads((tmp_path / "g0" / "report.json").read_text())
    guided = json.loads((tmp_path / "ev3" / "report.json").read_text())
    assert unguided["sampling"]["guidance"] == 0 and guided["sampling"]["guidance"] == 2
    assert unguided["volume"]["model"]["energy"] != other["model"]["energy"]
    np.save(tmp_path / "six.npy", np.zeros((4, 1, 8, 8, 8, 1), np.float32))
    np.save(tmp_path / "counts.npy", np.tile(np.linspace(0, 10, 512, dtype=np.float32), 32).reshape(32, 1, 8, 8, 8))
    for settings, msg in [
        # values in their own units, unmapped: sampled volumes are clamped to [-1, 1], so training is refused
        (["data.source=array", f"data.path={tmp_path / 'counts.npy'}"], "the training volumes run from 0 to 10"),
        (["data.source=array", f"data.path={tmp_path / 'six.npy'}"], "got a 6-D array of shape (4, 1, 8, 8, 8, 1)"),
        (["data.source=array", f"data.path={tmp_path / 's.npy'}", "data.layout=NDHW"], "NDHW needs a 4-D array"),
        (["data.volume_size=8,8,5"], "volume size (D x H x W) 8x8x5 is not divisible by 2"),
    ]:
        own = [a for a in tiny if not a.startswith("data.volume_")] if "data.source=array" in settings else tiny
        args = [f"--set={a}" for a in own + settings]  # (the shapes3d sizes are refused for an array: unread)
        rc, _, err = cli("train", "--preset", "volume-shapes", "--out", tmp_path / "r2", "--no-progress", *args)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and msg in err, err
    assert not (tmp_path / "r2" / "config.json").exists()


def test_gaussian_volumes_exact_denoiser_through_precond_and_a_sampler():
    """N(mu, s^2 I) volumes: an oracle eps-network behind Precond gives the exact denoiser on (B, 1, D, H, W), and
    Heun's ODE steps reach the exact probability-flow solution x(0) = mu + (x - mu) s / sqrt(s^2 + sigma_max^2)."""
    from torchdiffusion.analytic import IsotropicGaussian
    from torchdiffusion.precond import Precond
    from torchdiffusion.process import DiscreteVP
    from torchdiffusion.samplers import get_sampler
    from torchdiffusion.schedules import karras_sigmas

    data, process = IsotropicGaussian(0.3, 0.6), DiscreteVP("cosine", T=1000)

    class EpsOracle(torch.nn.Module):  # sees x_vp and the timestep, predicts eps = (x_vp - sqrt(ab) D) / sqrt(1 - ab)
        def forward(self, x_in, c_noise, cond=None):
            sigma = process.t_to_sigma(c_noise.double()).reshape(-1, 1, 1, 1, 1)
            x, ab = x_in * (1 + sigma**2).sqrt(), 1 / (1 + sigma**2)
            return (x_in - ab.sqrt() * data.denoise(x, sigma.flatten())) / (1 - ab).sqrt()

    model = Precond(EpsOracle(), "eps", process=process, noise_conditioning="timestep")
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(6, 1, 4, 6, 8, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.1, 0.5, 1.0, 5.0, 50.0], dtype=torch.float64)
    torch.testing.assert_close(model(x, sigma).double(), data.denoise(x, sigma), rtol=1e-7, atol=1e-7)
    smax = 40.0
    x_T = smax * torch.randn(6, 1, 4, 6, 8, generator=g, dtype=torch.float64)
    out = get_sampler("heun")(data.denoise, x_T, karras_sigmas(64, 0.002, smax))
    assert (out - data.ode_solution(x_T, smax, 0.0)).abs().max() < 1e-2


def test_energy_distance_and_mmd_against_their_closed_forms():
    from torchdiffusion.evaluation.volumes import energy_distance, mmd2

    g = torch.Generator().manual_seed(0)
    n, mu = 3000, 1.0
    a, b = torch.randn(n, 1, generator=g), mu + torch.randn(n, 1, generator=g)
    # 1-D N(0, 1) vs N(mu, 1): 2 E|N(mu, 2)| - 2 E|N(0, 2)|, E|N(m, v)| = sqrt(2v/pi) e^{-m^2/2v} + m erf(m/sqrt(2v))
    e_abs = lambda m, v: math.sqrt(2 * v / math.pi) * math.exp(-(m**2) / (2 * v)) + m * math.erf(m / math.sqrt(2 * v))
    assert energy_distance(a, b) == pytest.approx(2 * e_abs(mu, 2) - 2 * e_abs(0, 2), abs=0.02)
    assert abs(energy_distance(a, torch.randn(n, 1, generator=g))) < 0.01
    # d-dim N(0, I) vs N(m, I), Gaussian kernel of width h: MMD^2 = 2 (h^2/(h^2+2))^{d/2} (1 - e^{-|m|^2/(2(h^2+2))})
    d, h = 4, 2.0
    a, b = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g) + 0.5
    exact = 2 * (h**2 / (h**2 + 2)) ** (d / 2) * (1 - math.exp(-(0.25 * d) / (2 * (h**2 + 2))))
    assert mmd2(a, b, h) == pytest.approx(exact, rel=0.1)
    assert abs(mmd2(a, torch.randn(n, d, generator=g), h)) < 0.1 * exact


def test_gaussian_pca_baseline_has_the_data_mean_and_covariance():
    from torchdiffusion.evaluation.volumes import gaussian_pca, profile_errors, slice_profiles

    x, _ = shapes3d(64, (4, 4, 8))
    flat = x.reshape(64, -1).double()
    base = gaussian_pca(x, 40_000, seed=1)
    assert base.shape == (40_000, 1, 4, 4, 8)
    fb = base.reshape(40_000, -1).double()
    torch.testing.assert_close(fb.mean(0), flat.mean(0), atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(fb.T), torch.cov(flat.T), atol=0.03, rtol=0)
    prof = slice_profiles(x)
    assert len(prof["D"]["mean"]) == 4 and len(prof["W"]["var"]) == 8
    torch.testing.assert_close(torch.tensor(prof["W"]["mean"], dtype=torch.float64), x.double().mean(dim=(0, 1, 2, 3)))
    assert profile_errors(x, x) == {"profile_mean_error": 0.0, "profile_var_error": 0.0}
    assert profile_errors(base, x)["profile_mean_error"] < 0.01


def test_volume_metrics_tell_real_from_blurred_volumes():
    """Held-out real volumes score near the floor; the same volumes blurred and the Gaussian baseline score far."""
    from torchdiffusion.evaluation.volumes import gaussian_pca, volume_metrics

    x, y = shapes3d(480, (8, 8, 8))
    train, ty, held, hy = x[:320], y[:320], x[320:], y[320:]
    real2, r2y = shapes3d(160, (8, 8, 8), seed=5)
    blurred = torch.nn.functional.avg_pool3d(real2, 3, stride=1, padding=1, count_include_pad=False)
    cands = {"real": (real2, r2y), "blurred": (blurred, r2y), "gaussian": (gaussian_pca(train, 160), None)}
    m = volume_metrics(train, ty, held, hy, cands, seed=0)
    assert m["classifier_heldout_accuracy"] > 0.8
    assert m["real"]["energy"] < 0.5 * m["blurred"]["energy"] and m["real"]["energy"] < 0.5 * m["gaussian"]["energy"]
    assert m["real"]["mmd2"] < m["gaussian"]["mmd2"] and m["real"]["class_accuracy"] > 0.8


def test_sampled_volumes_are_clamped_to_the_data_range():
    """x0_hat of an eps-network is x - sigma eps_hat: at the cosine schedule's sigma_max (~2e4) any error in eps_hat
    is multiplied by it, so volumes, like images, are sampled with x0_hat clamped to [-1, 1]; so are those of the
    preset's EDM network (D = c_skip x + c_out F is bounded only as far as F is)."""
    from dataclasses import replace

    from torchdiffusion.config import DiffusionConfig, SampleConfig
    from torchdiffusion.generate import generate
    from torchdiffusion.model import build_model
    from torchdiffusion.presets import get_preset

    cfg = get_preset("volume-shapes")
    eps_cosine = DiffusionConfig(parameterization="eps", schedule="cosine", T=100, weighting="min_snr")
    for diffusion, sample in [
        (eps_cosine, SampleConfig(sampler="dpmpp_2m", grid="uniform_t", steps=4)),
        (cfg.diffusion, replace(cfg.sample, steps=4)),
    ]:
        run = replace(cfg, model=replace(TINY, num_classes=4), diffusion=diffusion)
        model = build_model(run, (1, 4, 8, 8)).eval()
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.3)
        cond = {"class": torch.tensor([0, 1])}
        x = generate(model, [0, 1], sample, (1, 4, 8, 8), cond=cond)
        assert x.shape == (2, 1, 4, 8, 8) and x.abs().max() <= 1
        wild = generate(model, [0, 1], replace(sample, clip_denoised=False), (1, 4, 8, 8), cond=cond)
        assert wild.abs().max() > 1


TIFF_STACKS = Path(__file__).parent / "data" / "tiff" / "stacks"
STACKS = json.loads((TIFF_STACKS / "stacks.json").read_text())


def _stack_values(case: dict) -> np.ndarray:
    """A stack fixture's values from its seed, as scripts/tiff_fixtures.py drew them (white-is-zero inverted)."""
    rng = np.random.default_rng(case["seed"])
    dtype, shape = case["dtype"], tuple(case["shape"])
    if dtype.startswith("float"):
        a = (250 + 100 * rng.random(shape)).astype(dtype)
    else:
        lo, hi = (-(10**6), 10**6) if dtype == "int32" else (0, np.iinfo(dtype).max + 1)
        a = rng.integers(lo, hi, shape).astype(dtype)
    a = a.astype(np.float64)
    return 65535 - a if case["photometric"] == "miniswhite" else a


@pytest.mark.parametrize("name", sorted(STACKS))
def test_tiff_stacks_read_back_slice_for_slice_or_are_refused(name):
    """z-stacks written by tifffile: 8/16/32-bit integer and 32/64-bit float pages, LZW/Deflate, the floating-point
    predictor, BigTIFF, white-is-zero; reduced-resolution previews between the slices are not slices. A colour
    stack or a single page is one line."""
    from torchdiffusion.data.volume import read_tiff_stack

    case = STACKS[name]
    if case["error"]:
        with pytest.raises(DataError, match=case["error"]):
            read_tiff_stack(TIFF_STACKS / name)
        return
    v = read_tiff_stack(TIFF_STACKS / name)
    assert v.shape == tuple(case["shape"]) and np.array_equal(v, _stack_values(case))


def test_a_folder_of_microscope_stacks_trains_in_their_units(tmp_path):
    """data.source=tiff_stack on 16-bit stacks Pillow writes (an independent writer): one volume per file, the
    counts mapped by the training volumes' percentiles (data.scale=auto), recorded, and sampled back in counts;
    stacks of two sizes, and the folder source given a stack, are one line."""
    from PIL import Image

    rng = np.random.default_rng(3)
    (tmp_path / "stacks").mkdir()
    for i in range(6):
        vol = (1_000 + 400 * rng.random((8, 8, 8))).astype(np.uint16)  # (D, H, W) counts
        pages = [Image.fromarray(page) for page in vol]
        pages[0].save(tmp_path / "stacks" / f"cell{i}.tif", save_all=True, append_images=pages[1:])
        if i == 0:
            first = vol
    d = load_data(DataConfig(source="tiff_stack", path=str(tmp_path / "stacks"), holdout=0, scale="minmax"))
    assert d.x.shape == (6, 1, 8, 8, 8) and d.kind == "volume"
    (lo,), (hi,) = d.value_range
    want = torch.from_numpy(2 * (first - lo) / (hi - lo) - 1).float()  # the first file, mapped (in a permutation)
    assert any(torch.allclose(v[0], want, atol=1e-6) for v in d.x)
    tiny = tiny_volume_settings("tiff_stack", tmp_path / "stacks", holdout=2, images=16)
    run = train_tiny_volume_run(tmp_path / "run", tiny)
    data = json.loads((run / "config.json").read_text())["data"]
    assert data["scale"] == "percentile" and 1_000 <= data["scale_lo"][0] < data["scale_hi"][0] <= 1_400
    assert cli("card", run)[0] == 0 and "user-provided volumes (TIFF z-stacks)" in (run / "MODEL_CARD.md").read_text()
    rc, _, err = cli("sample", run, "--n", "2", "--steps", "2", "--save-npy", "--out", tmp_path / "s.png")
    assert rc == 0, err
    s = np.load(tmp_path / "s.npy")
    (lo,), (hi,) = data["scale_lo"], data["scale_hi"]
    assert s.shape == (2, 1, 8, 8, 8) and lo - 1e-3 <= s.min() and s.max() <= hi + 1e-3
    pages = [Image.fromarray(np.zeros((4, 8), np.uint16))] * 8
    pages[0].save(tmp_path / "stacks" / "flat.tif", save_all=True, append_images=pages[1:])
    rc, _, err = cli("train", "--preset", "volume-shapes", "--out", tmp_path / "r2", "--no-progress",
                     *[f"--set={a}" for a in tiny])  # fmt: skip
    assert_clean_error(rc, err, "flat.tif is a volume of size (8, 4, 8), the first file (8, 8, 8)")
    (tmp_path / "stacks" / "flat.tif").unlink()
    rc, _, err = cli("train", "--preset", "digits-test", "--set", "data.source=folder", "--set",
                     f"data.path={tmp_path / 'stacks'}", "--out", tmp_path / "r3")  # fmt: skip
    assert_clean_error(rc, err, "it holds 8 images (a stack or a series); the folder source reads one image per file")
    assert "data.source=tiff_stack" in err and not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()
