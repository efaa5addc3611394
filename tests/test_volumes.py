"""3-D volumes (N, C, D, H, W): the 3-D U-Net, activation checkpointing, data, pictures, metrics, the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tinyruns import td
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
    rc, _, err = td("explain", "volume-forward", "--data", "digits", "--out", tmp_path / "g.png")
    assert rc == 2 and "needs volume data" in err and len(err.strip().splitlines()) == 1


def test_cli_trains_samples_and_refuses_a_volume_of_the_wrong_rank(tmp_path):
    run = tmp_path / "run"
    tiny = ["data.volume_size=8,8,8", "data.volume_count=64", "data.holdout=16", "train.images=64"]
    tiny += ["model.channels=8", "model.channel_mult=1,2", "sample.steps=3", "sample.n=4", "model.checkpoint=true"]
    rc, _, err = td("train", "--preset", "volume-shapes", "--out", run, "--no-progress", *[f"--set={a}" for a in tiny])
    assert rc == 0, err
    rc, out, err = td("sample", run, "--n", "4", "--steps", "3", "--save-npy", "--out", tmp_path / "s.png")
    assert rc == 0, err
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (4, 1, 8, 8, 8) and np.isfinite(x).all() and (tmp_path / "s.png").stat().st_size > 5_000
    np.save(tmp_path / "six.npy", np.zeros((4, 1, 8, 8, 8, 1), np.float32))
    for settings, msg in [
        (["data.source=array", f"data.path={tmp_path / 'six.npy'}"], "got a 6-D array of shape (4, 1, 8, 8, 8, 1)"),
        (["data.source=array", f"data.path={tmp_path / 's.npy'}", "data.layout=NDHW"], "NDHW needs a 4-D array"),
        (["data.volume_size=8,8,5"], "volume size (D x H x W) 8x8x5 is not divisible by 2"),
    ]:
        args = [f"--set={a}" for a in tiny + settings]
        rc, _, err = td("train", "--preset", "volume-shapes", "--out", tmp_path / "r2", "--no-progress", *args)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and msg in err, err
    assert not (tmp_path / "r2" / "config.json").exists()
