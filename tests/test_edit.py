"""Editing (inpaint, RePaint, outpaint, img2img, inversion, interpolation) and masks, on exact Gaussian oracles."""

import math

import pytest
import torch

from torchdiffusion.analytic import IsotropicGaussian
from torchdiffusion.edit import (
    EditError,
    img2img,
    inpaint,
    interpolate,
    interpolate_images,
    invert,
    known_region,
    outpaint_canvas,
    pseudoinverse_guided,
    psnr,
    repaint_moves,
    slerp,
    strength_sigmas,
)
from torchdiffusion.masks import MaskError, make_mask, save_mask_png
from torchdiffusion.samplers import SAMPLERS, get_sampler
from torchdiffusion.schedules import karras_sigmas
from torchdiffusion.types import NoiseSource

DATA = IsotropicGaussian(0.3, 0.5)
SHAPE = (1, 6, 6)
SIGMAS = karras_sigmas(12, 0.002, 80.0)


def _noise(seeds, shape=SHAPE):
    return NoiseSource(seeds, shape, dtype=torch.float64)


def _known(b=4):
    g = torch.Generator().manual_seed(123)
    return DATA.sample((b,) + SHAPE, generator=g)


# -- inpainting ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("resample", [1, 3])
def test_inpaint_keeps_known_region_exactly(name, resample):
    x_known = _known()
    mask = make_mask("half:bottom", 6, 6).double()
    ns = _noise(range(4))
    x = inpaint(
        get_sampler(name),
        DATA.denoise,
        ns.initial() * SIGMAS[0].item(),
        SIGMAS,
        x_known,
        mask,
        jump=4,
        resample=resample,
        noise=ns,
    )
    keep = mask.expand_as(x).bool()
    assert torch.equal(x[keep], x_known[keep])
    assert not torch.allclose(x[~keep], x_known[~keep])  # the hole was really generated
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("name", ["ddpm", "heun", "ddim"])
def test_all_zero_mask_is_plain_sampling(name):
    sampler = get_sampler(name)
    x_known = _known()
    zero = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    a_ns, b_ns = _noise(range(4)), _noise(range(4))
    a = inpaint(sampler, DATA.denoise, a_ns.initial() * SIGMAS[0].item(), SIGMAS, x_known, zero, noise=a_ns)
    b = sampler(DATA.denoise, b_ns.initial() * SIGMAS[0].item(), SIGMAS, noise=b_ns)
    assert torch.equal(a, b)


def test_known_region_wrapper_noises_known_pixels_to_the_current_level():
    seen = {}

    def D(x, sigma):
        seen["x"] = x
        return torch.zeros_like(x)

    x_known = torch.full((2, 1, 4, 4), 0.5, dtype=torch.float64)
    mask = make_mask("half:left", 4, 4).double()
    n = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    out = known_region(D, x_known, mask, noise=lambda: n)(torch.full_like(x_known, 7.0), torch.full((2,), 2.0))
    keep = mask.expand_as(out).bool()
    assert torch.allclose(seen["x"][keep], (x_known + 2.0 * n)[keep])
    assert torch.equal(seen["x"][~keep], torch.full_like(x_known, 7.0)[~keep])
    assert torch.equal(out[keep], x_known[keep]) and torch.equal(out[~keep], torch.zeros_like(out)[~keep])


def test_repaint_schedule_visits_every_segment_resample_times():
    n, jump, r = 10, 3, 4
    moves = repaint_moves(n, jump, r)
    down = sum(b - a for a, b in moves if b > a)
    up = sum(a - b for a, b in moves if a > b)
    assert down == r * n and up == (r - 1) * n
    pos = 0
    for a, b in moves:  # the moves chain: each starts where the last ended, and the walk ends at sigma = 0
        assert a == pos
        pos = b
    assert pos == n
    assert repaint_moves(n, n, 1) == [(0, n)]
    with pytest.raises(EditError):
        repaint_moves(n, 0, 1)


def test_repaint_fits_the_conditional_of_a_correlated_gaussian():
    """Two pixels with correlation rho: inpainting pixel 2 given pixel 1 = a must sample
    N(rho a, 1 - rho^2). Plain replacement is biased towards the prior; RePaint resampling closes the gap."""
    rho, a = 0.9, 1.5
    cov = torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64)
    eye = torch.eye(2, dtype=torch.float64)

    def D(x, sigma):  # exact denoiser of N(0, cov): cov (cov + sigma^2 I)^-1 x, one sigma per batch here
        s2 = float(sigma.reshape(-1)[0]) ** 2
        return x @ torch.linalg.solve(cov + s2 * eye, cov)

    N = 2000
    x_known = torch.zeros(N, 2, dtype=torch.float64)
    x_known[:, 0] = a
    mask = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    sig = karras_sigmas(20, 0.01, 20.0)
    torch.manual_seed(1)
    errs = {}
    for r in (1, 8):
        x = inpaint(
            get_sampler("ddpm"),
            D,
            sig[0].item() * torch.randn(N, 2, dtype=torch.float64),
            sig,
            x_known,
            mask,
            jump=2,
            resample=r,
        )
        errs[r] = abs(x[:, 1].mean().item() - rho * a)
        if r > 1:
            assert abs(x[:, 1].var().item() - (1 - rho**2)) < 0.05
    assert errs[8] < 0.1 and errs[8] < errs[1] / 4, errs


def _correlated_pair(rho):
    cov = torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64)
    eye = torch.eye(2, dtype=torch.float64)

    def D(x, sigma):  # exact denoiser of N(0, cov): cov (cov + sigma^2 I)^-1 x, one sigma per batch here
        s2 = float(sigma.reshape(-1)[0]) ** 2
        return x @ torch.linalg.solve(cov + s2 * eye, cov)

    return cov, D


def test_pseudoinverse_guidance_is_the_denoiser_plus_the_analytic_vector_jacobian_product():
    """D' = D + w (sigma^2 + s^2) / s^2 J^T m (y - D) with J = cov (cov + sigma^2 I)^-1 for the Gaussian oracle."""
    rho, w, s = 0.7, 0.8, 0.6
    cov, D = _correlated_pair(rho)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 2, generator=g, dtype=torch.float64), torch.randn(5, 2, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    for sigma in (0.05, 1.0, 30.0):
        sig = torch.full((5,), sigma, dtype=torch.float64)
        J = torch.linalg.solve(cov + sigma**2 * torch.eye(2, dtype=torch.float64), cov)  # symmetric here
        expected = D(x, sig) + w * (sigma**2 + s**2) / s**2 * (mask * (y - D(x, sig))) @ J
        got = pseudoinverse_guided(D, y, mask, sigma_data=s, weight=w)(x, sig)
        assert torch.allclose(got, expected, atol=1e-12), sigma
    assert torch.equal(pseudoinverse_guided(D, y, mask, 0.5, weight=0.0)(x, sig), D(x, sig))

    # the cutoff is per image: a batch at mixed levels (the adaptive solver's) guides each row as it would alone
    def D_rows(x, sigma):  # the oracle at each row's own level
        return torch.cat([D(x[i : i + 1], sigma[i : i + 1]) for i in range(len(x))])

    mixed = torch.tensor([0.05, 1.0, 30.0, 1.0, 0.05], dtype=torch.float64)
    together = pseudoinverse_guided(D_rows, y, mask, sigma_data=s, weight=w, sigma_max=10.0)(x, mixed)
    for k in range(5):
        one = pseudoinverse_guided(D_rows, y[k : k + 1], mask, sigma_data=s, weight=w, sigma_max=10.0)
        alone = one(x[k : k + 1], mixed[k : k + 1])
        assert torch.allclose(together[k], alone[0], atol=1e-12), k
    assert torch.allclose(together[2], D_rows(x, mixed)[2], atol=1e-15)  # above sigma_max: the plain denoiser


@pytest.mark.parametrize("name", ["ddpm", "euler", "euler_ancestral", "dpmpp_2m", "heun"])
def test_pseudoinverse_guidance_brings_one_pass_inpainting_near_the_exact_conditional(name):
    """Pixel 2 given pixel 1 = a under correlation rho is N(rho a, 1 - rho^2). Plain replacement (one pass) misses
    the conditional mean by ~0.45-0.77; pseudoinverse guidance (its r^2 an isotropic approximation of the true
    posterior covariance, so not exact) brings the miss under 0.15 with every sampler."""
    rho, a, N = 0.9, 1.5, 2000
    _, D = _correlated_pair(rho)
    x_known = torch.zeros(N, 2, dtype=torch.float64)
    x_known[:, 0] = a
    mask = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    sig = karras_sigmas(20, 0.01, 20.0)
    miss = {}
    for w in (0.0, 1.0):
        torch.manual_seed(1)
        x0 = sig[0].item() * torch.randn(N, 2, dtype=torch.float64)
        x = inpaint(get_sampler(name), D, x0, sig, x_known, mask, guidance=w, sigma_data=1.0)
        miss[w] = abs(x[:, 1].mean().item() - rho * a)
    assert miss[1.0] < 0.15 and miss[1.0] < miss[0.0] / 4, miss


def test_outpaint_canvas_and_mask():
    x = torch.rand(2, 3, 5, 4)
    canvas, mask = outpaint_canvas(x, left=2, bottom=3)
    assert canvas.shape == (2, 3, 8, 6) and mask.shape == (1, 1, 8, 6)
    assert torch.equal(canvas[:, :, :5, 2:], x) and mask.sum() == 20 and mask[0, 0, :5, 2:].all()
    with pytest.raises(EditError):
        outpaint_canvas(x)


# -- img2img ------------------------------------------------------------------------------------------------


def test_img2img_strength_zero_returns_input_and_one_ignores_it():
    sampler = get_sampler("heun")
    x0 = _known()
    assert torch.equal(img2img(sampler, DATA.denoise, x0, SIGMAS, 0.0), x0)
    n = torch.randn_like(x0)
    a = img2img(sampler, DATA.denoise, x0, SIGMAS, 1.0, initial=n)
    b = img2img(sampler, DATA.denoise, -3 * x0, SIGMAS, 1.0, initial=n)
    c = sampler(DATA.denoise, SIGMAS[0].item() * n, SIGMAS)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_img2img_cuts_the_grid_and_strength_is_monotone():
    assert len(strength_sigmas(SIGMAS, 0.5)) == 7 and torch.equal(strength_sigmas(SIGMAS, 0.5), SIGMAS[6:])
    with pytest.raises(EditError):
        strength_sigmas(SIGMAS, 1.5)
    x0 = _known()
    n = torch.randn_like(x0)
    dist = [
        (img2img(get_sampler("euler"), DATA.denoise, x0, SIGMAS, s, initial=n) - x0).norm().item()
        for s in (0.25, 0.5, 0.75)
    ]
    assert dist[0] < dist[1] < dist[2]


# -- inversion and interpolation ----------------------------------------------------------------------------


@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2)])
def test_inversion_converges_to_the_exact_ode_map_at_the_method_order(method, order):
    x0 = _known(8)
    errs, trips = [], []
    for n in (50, 100):
        sig = karras_sigmas(n, 0.002, 80.0)
        z = invert(DATA.denoise, x0, sig, method=method)
        exact = DATA.ode_solution(x0, float(sig[-2]), float(sig[0]))  # x0 taken as the state at sigmas[-2]
        errs.append(((z - exact).abs().max() / exact.abs().max()).item())
        trips.append((get_sampler(method)(DATA.denoise, z, sig) - x0).abs().max().item())
    assert abs(math.log2(errs[0] / errs[1]) - order) < 0.25, errs
    assert trips[1] < trips[0]
    if method == "heun":  # invert then sample back reconstructs the input
        assert trips[0] < 5e-3, trips
        sig = karras_sigmas(50, 0.002, 80.0)
        back = get_sampler("heun")(DATA.denoise, invert(DATA.denoise, x0, sig, method="heun"), sig)
        assert psnr(back, x0).min().item() > 40


def test_slerp_endpoints_and_norm():
    a, b = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    b_eq = b / b.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1) * a.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
    mid = slerp(a, b_eq, 0.5)
    assert torch.allclose(mid.flatten(1).norm(dim=1), a.flatten(1).norm(dim=1), rtol=1e-5)
    assert torch.allclose(slerp(a, a, 0.3), a, atol=1e-5)  # parallel: straight-line fallback


def test_interpolation_endpoints_equal_the_inputs():
    sampler = get_sampler("heun")
    za, zb = 80.0 * torch.randn(1, *SHAPE, dtype=torch.float64), 80.0 * torch.randn(1, *SHAPE, dtype=torch.float64)
    path = interpolate(sampler, DATA.denoise, za, zb, SIGMAS, [0.0, 0.5, 1.0])
    assert torch.equal(path[0], sampler(DATA.denoise, za, SIGMAS)[0])
    assert torch.equal(path[2], sampler(DATA.denoise, zb, SIGMAS)[0])
    xa, xb = _known(2).split(1)
    sig = karras_sigmas(40, 0.002, 80.0)
    imgs = interpolate_images(sampler, DATA.denoise, xa, xb, sig, [0.0, 0.5, 1.0], method="heun")
    assert (imgs[0] - xa[0]).abs().max() < 0.05 and (imgs[2] - xb[0]).abs().max() < 0.05


# -- masks --------------------------------------------------------------------------------------------------


def test_mask_shapes():
    m = make_mask("half:bottom", 28, 28)
    assert m.shape == (1, 1, 28, 28) and m[0, 0, :14].all() and not m[0, 0, 14:].any()
    assert make_mask("half:left", 4, 5)[0, 0, :, 3:].all() and not make_mask("half:left", 4, 5)[0, 0, :, :3].any()
    c = make_mask("centre", 8, 8)
    assert c.sum() == 64 - 16 and not c[0, 0, 2:6, 2:6].any()
    b = make_mask("box:1,2,4,3", 5, 5)
    assert b.sum() == 25 - 3 and not b[0, 0, 2, 1:4].any()
    assert torch.equal(make_mask("box:0.0,0.0,0.5,0.5", 4, 4), make_mask("box:0,0,2,2", 4, 4))
    assert torch.equal(make_mask("invert:centre", 8, 8), 1 - c)
    assert make_mask("none", 3, 3).all() and not make_mask("all", 3, 3).any()


@pytest.mark.parametrize(
    "spec", ["box:1,2,3", "box:3,0,1,2", "box:0,0,9,2", "half:middle", "blob", "box:a,b,c,d", "missing.png"]
)
def test_bad_mask_specs_raise_one_line_value_errors(spec):
    with pytest.raises(MaskError) as e:
        make_mask(spec, 5, 5)
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)


def test_mask_png_round_trip(tmp_path):
    m = make_mask("box:1,1,4,3", 6, 7)
    p = save_mask_png(m, tmp_path / "mask.png")
    assert torch.equal(make_mask(str(p), 6, 7), m)
    big = make_mask(str(p), 12, 14)  # nearest-neighbour resize
    assert big.sum() == 4 * m.sum()


def test_bad_mask_shape_is_an_edit_error():
    with pytest.raises(EditError):
        inpaint(
            get_sampler("euler"),
            DATA.denoise,
            torch.randn(2, 1, 6, 6),
            SIGMAS,
            torch.zeros(2, 1, 6, 6),
            torch.ones(1, 1, 5, 5),
        )


def test_psnr():
    value = psnr(torch.zeros(1, 4), torch.full((1, 4), 0.2)).item()
    assert math.isclose(value, 10 * math.log10(4 / 0.04), rel_tol=1e-6)


def test_tiled_denoiser_is_exact_for_a_pixelwise_denoiser_and_covers_the_canvas():
    from torchdiffusion.edit import tiled

    x = torch.randn(2, 1, 11, 14, dtype=torch.float64)
    sigma = torch.full((2,), 0.7)
    calls = []

    def D(z, s):
        assert z.shape[-2:] == (6, 6)  # the network only ever sees its own size
        calls.append(1)
        return DATA.denoise(z, s)

    out = tiled(D, (6, 6), stride=4)(x, sigma)
    assert torch.allclose(out, DATA.denoise(x, sigma)) and len(calls) == 3 * 3  # rows 0, 4, 5; columns 0, 4, 8
    with pytest.raises(EditError):
        tiled(D, (6, 6))(torch.randn(1, 1, 5, 8), torch.ones(1))


def test_ddim_inversion_is_euler_and_ddim_sampling_undoes_it():
    x0 = _known(4)
    sig = karras_sigmas(30, 0.002, 80.0)
    z = invert(DATA.denoise, x0, sig, method="ddim")
    assert torch.equal(z, invert(DATA.denoise, x0, sig, method="euler"))
    a, b = get_sampler("ddim")(DATA.denoise, z, sig), get_sampler("euler")(DATA.denoise, z, sig)
    assert torch.allclose(a, b, atol=1e-9)  # DDIM eta = 0 is Euler in VE units
    with pytest.raises(EditError):
        invert(DATA.denoise, x0, sig, method="rk4")


def test_a_mask_of_any_bit_depth_is_read_at_half_its_own_full_scale(tmp_path):
    """A 16-bit mask whose known half is 30 % grey: converting to 8 bits clipped every value above 255 to white,
    so the whole image was repainted. Grey below half of the format's full scale is kept, as in 8 bits."""
    import numpy as np
    from PIL import Image

    from torchdiffusion.masks import hole_from_spec

    for name, top, bottom in (("16.png", 20000, 65535), ("8.png", 77, 255)):
        dtype = {"16.png": np.uint16, "8.png": np.uint8}[name]
        a = np.full((8, 8), bottom, dtype)
        a[:4] = top
        Image.fromarray(a).save(tmp_path / name)
        hole = hole_from_spec(str(tmp_path / name), 8, 8)
        assert hole[:4].sum() == 0 and hole[4:].sum() == 32, name


def test_batches_of_interpolation_are_pairs_and_mismatches_are_refused():
    """interpolate_images of two (2, ...) batches: row t*B + k interpolates pair k (the split took xa[0] against
    xa[1], xb[0], xb[1]); one noise against B slerps to each; batches that do not pair are an EditError."""
    sampler, sig = get_sampler("heun"), karras_sigmas(40, 0.002, 80.0)
    xa, xb = _known(4).split(2)
    both = interpolate_images(sampler, DATA.denoise, xa, xb, sig, [0.0, 1.0], method="heun")
    assert both.shape == (4, *SHAPE)
    for k in range(2):  # the endpoints of pair k are its own inversion round trips
        one = interpolate_images(sampler, DATA.denoise, xa[k : k + 1], xb[k : k + 1], sig, [0.0, 1.0], method="heun")
        assert torch.allclose(both[k], one[0], atol=1e-6) and torch.allclose(both[2 + k], one[1], atol=1e-6)
    za, zb = 80.0 * torch.randn(1, *SHAPE, dtype=torch.float64), 80.0 * torch.randn(3, *SHAPE, dtype=torch.float64)
    path = interpolate(sampler, DATA.denoise, za, zb, SIGMAS, [0.0, 0.5, 1.0])
    assert path.shape == (9, *SHAPE) and torch.equal(path[0], path[1])  # t = 0: za for each of the three
    with pytest.raises(EditError, match="two batches of one shape"):
        interpolate_images(sampler, DATA.denoise, xa, xb[:1], sig, [0.5])
    with pytest.raises(EditError, match="pairs or one against B"):
        slerp(torch.randn(2, 3), torch.randn(3, 3), 0.5)


def test_known_images_must_have_the_shape_of_x_and_bool_masks_are_taken():
    with pytest.raises(EditError, match="x_known of shape"):
        inpaint(get_sampler("euler"), DATA.denoise, torch.randn(2, *SHAPE), SIGMAS, torch.zeros(2, 1, 5, 5),
                torch.ones(1, 1, 6, 6))  # fmt: skip
    x_known, mask = _known(2), torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    mask[..., :3, :] = True
    D = known_region(DATA.denoise, x_known, mask, noise=lambda: torch.zeros_like(x_known))
    out = D(torch.randn(2, *SHAPE, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    assert torch.equal(out[..., :3, :], x_known[..., :3, :])  # bool True = known, as inpaint() reads it


def test_a_tensor_strength_and_fractional_margins():
    """img2img's strength as a 0-d tensor is its number (it raised a TypeError from round()); margins of 2.0
    pixels are refused in one line (a new_full() TypeError)."""
    assert torch.equal(strength_sigmas(SIGMAS, torch.tensor(0.5)), strength_sigmas(SIGMAS, 0.5))
    with pytest.raises(EditError, match="whole pixels"):
        outpaint_canvas(torch.zeros(1, 1, 4, 4), left=2.0)
