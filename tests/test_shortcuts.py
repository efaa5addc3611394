"""Few-step students checked against exact answers: rectified flow, progressive distillation, consistency models,
distribution matching."""

import pytest
import torch
from torch import nn

from torchdiffusion.analytic import IsotropicGaussian, eight_gaussians
from torchdiffusion.config import ObjectiveConfig
from torchdiffusion.losses import precond_loss, sample_sigmas
from torchdiffusion.precond import Precond
from torchdiffusion.process import add_noise, rf_sigma_to_t, rf_t_to_sigma, rf_to_ve, rf_velocity, ve_to_rf
from torchdiffusion.samplers import sample_consistency, sample_ddim
from torchdiffusion.schedules import karras_sigmas
from torchdiffusion.shortcuts import consistency as cm
from torchdiffusion.shortcuts import dmd
from torchdiffusion.shortcuts import progressive as pd
from torchdiffusion.shortcuts.objectives import Consistency, Progressive
from torchdiffusion.shortcuts.reflow import straight_line
from torchdiffusion.shortcuts.straightness import straightness
from torchdiffusion.training.state import MicroBatch

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only contend

MU, S = 0.7, 0.5


def test_rf_and_ve_views_are_the_same_straight_path():
    """x_t = (1 - t) x0 + t n is x0 + sigma n scaled by 1 - t, with sigma = t/(1 - t); v = n - x0 and D = x_t - t v."""
    g = torch.Generator().manual_seed(0)
    x0, n = torch.randn(16, 3, generator=g, dtype=torch.float64), torch.randn(16, 3, generator=g, dtype=torch.float64)
    t = torch.rand(16, generator=g, dtype=torch.float64) * 0.98 + 0.01
    sigma = rf_t_to_sigma(t)
    assert torch.allclose(rf_sigma_to_t(sigma), t)
    x = add_noise(x0, sigma, n)
    assert torch.allclose(ve_to_rf(x, sigma), straight_line(x0, n, t))
    assert torch.allclose(rf_to_ve(ve_to_rf(x, sigma), sigma), x)
    assert torch.allclose(rf_velocity(x, sigma, x0), n - x0)  # the denoiser that knows x0 gives v = n - x0


def test_flow_matching_loss_is_the_plain_velocity_mse():
    """The flow parameterization's uniform weighting is Liu et al.'s ||(n - x0) - v_hat(x_t, t)||^2 exactly."""
    net = nn.Linear(3, 3, dtype=torch.float64)

    class Net(nn.Module):
        def forward(self, x, c_noise, cond=None):
            return net(x) * (1 + c_noise[:, None])

    model = Precond(Net(), "flow")
    g = torch.Generator().manual_seed(1)
    x0, n = torch.randn(32, 3, generator=g, dtype=torch.float64), torch.randn(32, 3, generator=g, dtype=torch.float64)
    sigma = sample_sigmas("rf_uniform", 32, generator=g).double()
    assert bool((sigma >= 0.002 * 0.999).all() and (sigma <= 80 * 1.001).all())
    t = rf_sigma_to_t(sigma)
    v_hat = Net()(straight_line(x0, n, t), sigma.log() / 4)
    textbook = ((n - x0) - v_hat).pow(2).mean(1)
    assert torch.allclose(precond_loss(model, x0, sigma, n), textbook, rtol=1e-10)


def test_exact_velocity_of_gaussian_data_gives_the_closed_form_straight_map():
    """Integrating the exact rectified-flow velocity of N(mu, s^2) from t ~ 1 to 0 maps n to mu + s n (Heun's
    method on the uniform t grid converges to the exact ODE solution at second order)."""
    data = IsotropicGaussian(MU, S)
    n = torch.randn(64, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    sigma_max = 1e4
    exact = data.ode_solution(sigma_max * n, sigma_max, 0.0)
    errs = [(straightness(data.denoise, n, sigma_max, steps=k).path[-1] - exact).abs().max() for k in (200, 400)]
    assert errs[1] < 2e-5 and 3.5 < errs[0] / errs[1] < 4.5
    end = straightness(data.denoise, n, sigma_max, steps=400).path[-1]
    assert torch.allclose(end, MU + S * n, atol=1e-4)  # the affine (optimal-transport) map n -> mu + s n


def test_straightness_is_zero_exactly_for_straight_flows():
    """Data at one point mu has the straight flow x_t = (1 - t) mu + t n (D = mu, v = n - mu); a mixture does not."""
    n = torch.randn(256, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    straight = straightness(IsotropicGaussian(MU, 0.0).denoise, n, 80.0, steps=50)
    assert straight.S < 1e-6 and abs(straight.length_ratio - 1) < 1e-4
    curved = straightness(eight_gaussians().denoise, n, 80.0, steps=50)
    assert curved.S > 0.05 and curved.length_ratio > 1.01


def test_ddim_step_is_the_samplers_ddim():
    data = IsotropicGaussian(MU, S)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 3
    grid = torch.tensor([3.0, 0.7], dtype=torch.float64)
    ours = pd.ddim_step(x, grid[:1].expand(8), grid[1:].expand(8), data.denoise(x, grid[:1].expand(8)))
    assert torch.allclose(ours, sample_ddim(data.denoise, x, torch.cat([grid, grid.new_zeros(1)])[:2]))


def _teacher_grid(steps, sigma_min=0.01):
    return karras_sigmas(steps, sigma_min, 20.0)


class ExactTeacher:
    """A teacher with the interface objectives.Progressive/Consistency use: an exact denoiser and a grid plan (which,
    with ``sigma_end``, stops short of 0 as a tuned grid's record may say)."""

    def __init__(self, data, sigma_end=0.0, sigma_min=0.01):
        self.data, self.sigma_end, self.sigma_min = data, sigma_end, sigma_min

    def denoiser(self, cond):
        return lambda x, sigma: self.data.denoise(x, sigma)

    def plan(self, steps, kind=""):
        assert kind == "", "the exact teacher has one grid"
        return _teacher_grid(steps, self.sigma_min).float(), ({"sigma_end": self.sigma_end} if self.sigma_end else {})


@pytest.mark.parametrize("data", [IsotropicGaussian(MU, S), eight_gaussians()], ids=["gaussian", "8gaussians"])
def test_progressive_target_reproduces_the_teachers_two_step_ddim_map(data):
    """A student equal to the exact target x0~ of Alg. 2 samples, on the halved grid, what the teacher samples."""
    grid = _teacher_grid(8)
    sgrid = pd.halve_grid(grid)

    def student(x, sigma):
        i = pd.grid_levels(sgrid, sigma)
        return pd.progressive_target(data.denoise, x, sgrid[i], grid[2 * i + 1], grid[2 * i + 2])

    x = 20.0 * torch.randn(128, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.allclose(sample_ddim(student, x, sgrid), sample_ddim(data.denoise, x, grid), atol=1e-9)


class LevelAffine(nn.Module):
    """F(x_in, c_noise) = a_l x_in + b_l with parameters per noise level l (nearest c_noise): exact for Gaussians."""

    def __init__(self, sigmas, dim):
        super().__init__()
        self.register_buffer("c", torch.as_tensor(sigmas, dtype=torch.float32).log() / 4)
        self.a = nn.Parameter(torch.zeros(len(sigmas)))
        self.b = nn.Parameter(torch.zeros(len(sigmas), dim))

    def forward(self, x_in, c_noise, cond=None):
        level = (c_noise.float()[:, None] - self.c[None]).abs().argmin(1)
        return self.a[level, None] * x_in + self.b[level]


def _fit(objective, model, dim, steps, lr=0.05, batch=256):
    """Adam with a cosine learning rate on the objective's own draws and loss (Gaussian data)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    data = IsotropicGaussian(MU, S)
    g = torch.Generator().manual_seed(6)
    for k in range(steps):
        sigma = objective.draw_sigmas(batch, g, k)
        x0 = data.sample((batch, dim), generator=g, dtype=torch.float32)
        mb = MicroBatch(x0=x0, sigma=sigma, noise=torch.randn(batch, dim, generator=g), cond=None)
        loss = objective.loss(model, mb, k).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
    return model


def _fitted_student_samples(teacher):
    """(noises x, what a v-parameterised student fitted to one halving (8 -> 4 steps) with Alg. 2's loss samples
    from them on its halved grid)."""
    obj = Progressive(teacher, 8)
    model = Precond(LevelAffine(obj.student_grid[:-1], 2), "v", sigma_min=0.01, sigma_max=20.0)
    _fit(obj, model, 2, 300)
    x = 20.0 * torch.randn(256, 2, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return x, sample_ddim(lambda x, s: model(x, s), x, obj.student_grid.float())


def test_fitted_v_student_reproduces_the_teachers_two_step_ddim_map():
    """One halving (8 -> 4 steps) learnt by a v-parameterised student with Alg. 2's loss, exact Gaussian teacher."""
    teacher = ExactTeacher(IsotropicGaussian(MU, S))
    x, student = _fitted_student_samples(teacher)
    teacher_map = sample_ddim(teacher.denoiser(None), x.double(), _teacher_grid(8)).float()
    assert (student - teacher_map).abs().max() < 2e-3 * teacher_map.abs().max()


def test_student_of_a_grid_that_stops_short_lands_where_the_teachers_sampler_does():
    """A teacher grid whose last step stops at sigma_end (a tuned grid's record): the student, fitted with Alg. 2's
    loss, samples on the halved grid ending in 0 what the teacher's DDIM with that last step samples - not the plain
    teacher's map, which the same fit without the stop would give."""
    from torchdiffusion.samplers.optimize_grid import final_step

    grid = _teacher_grid(8, sigma_min=0.3)  # a last level where the data's spread is still partly noise
    end = 0.5 * float(grid[-2])
    teacher = ExactTeacher(IsotropicGaussian(MU, S), sigma_end=end, sigma_min=0.3)
    x, student = _fitted_student_samples(teacher)
    D = teacher.denoiser(None)
    short = sample_ddim(final_step(D, float(grid[-2]), end), x.double(), grid).float()
    plain = sample_ddim(D, x.double(), grid).float()
    scale = short.abs().max()
    assert (short - plain).abs().max() > 0.05 * scale  # the stop matters at this sigma_end
    assert (student - short).abs().max() < 2e-3 * scale


def test_consistency_boundary_is_the_identity_at_sigma_min_at_init():
    net = nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Linear(16, 3))
    model = Precond(lambda x, c, cond=None: net(x) + c[:, None], "edm", boundary="consistency", sigma_min=0.002)
    x = torch.randn(10, 3)
    assert torch.equal(model(x, torch.full((10,), 0.002)), x)
    assert not torch.allclose(model(x, torch.full((10,), 1.0)), x)


def test_ict_curriculum_and_level_distribution():
    K = 1000
    assert cm.curriculum_levels(0, K, 10, 1280) == 11
    assert cm.curriculum_levels(K - 1, K, 10, 1280) == 1281  # doubles log2(s1/s0) + 1 = 8 times over the run
    levels = cm.level_grid(11, 0.002, 80.0)
    assert levels[0] == pytest.approx(0.002) and levels[-1] == pytest.approx(80.0) and bool((levels.diff() > 0).all())
    p = cm.level_probabilities(levels, -1.1, 2.0)
    assert p.sum() == pytest.approx(1.0) and int(p.argmax()) not in (0, len(p) - 1)  # mass in the middle
    from scipy.stats import norm  # the log-normal's mass between levels, normalised (iCT Sec. 3.5)

    for m, s in ((-1.1, 2.0), (2.0, 0.3), (-4.0, 0.7)):
        cdf = norm.cdf((levels.log().numpy() - m) / s)
        want = torch.from_numpy(cdf[1:] - cdf[:-1])
        assert torch.allclose(cm.level_probabilities(levels, m, s), want / want.sum(), rtol=1e-9, atol=1e-15)
    for m, end in ((-30.0, 0), (30.0, len(levels) - 2)):  # centred far off the grid: all mass on the nearest pair
        p = cm.level_probabilities(levels, m, 0.5)
        assert bool(p.isfinite().all()) and p[end] == pytest.approx(1.0)
    a = torch.randn(4, 3, 8)
    assert torch.allclose(cm.pseudo_huber(a, a), torch.zeros(4), atol=1e-7)


CD = ObjectiveConfig(name="consistency_distillation", teacher="exact", ct_steps_start=7, ct_steps_end=7)  # 8 levels


def _heun_chain(denoise, x, levels):
    """The teacher's ODE solver run down every level: what consistency distillation's targets chain together."""
    for j in range(len(levels) - 1, 0, -1):
        x = cm.heun_step(denoise, x, levels[j].expand(len(x)), levels[j - 1].expand(len(x)))
    return x


def test_consistency_function_fitted_to_the_exact_ode_reproduces_its_endpoint():
    """Consistency distillation with the exact Gaussian teacher's Heun steps: f(x, sigma_max) is the end of the
    teacher's ODE solved on the same levels, which converges to the exact ODE's end as the levels get finer."""
    data = IsotropicGaussian(MU, S)
    sigma_min, sigma_max = 0.01, 10.0
    levels = cm.level_grid(8, sigma_min, sigma_max)
    model = Precond(LevelAffine(levels, 2), "edm", boundary="consistency", sigma_min=sigma_min, sigma_max=sigma_max)
    obj = Consistency(CD, sigma_min, sigma_max, 1000, ExactTeacher(data))
    _fit(obj, model, 2, 800)
    x = sigma_max * torch.randn(512, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    solver_end = _heun_chain(data.denoise, x, levels.double()).float()
    with torch.no_grad():
        f = model(x.float(), torch.full((512,), sigma_max))
        one_step = sample_consistency(lambda x, s: model(x, s), x.float(), torch.tensor([sigma_max, 0.0]))
    assert (f - solver_end).abs().max() < 0.02 * solver_end.abs().max()
    assert torch.equal(one_step, f)
    exact = data.ode_solution(x, sigma_max, sigma_min)
    err = [(_heun_chain(data.denoise, x, cm.level_grid(n, sigma_min, sigma_max)) - exact).abs().max() for n in (8, 32)]
    assert err[1] < 0.1 * err[0] and err[1] < 0.01 * exact.abs().max()


def test_multistep_consistency_sampling_with_the_exact_consistency_function_keeps_the_data_law():
    def f(x, sigma):  # the exact consistency function of N(mu, s^2) (sigma_min = 0)
        return MU + (x - MU) * S / (S**2 + sigma.view(-1, 1) ** 2).sqrt()

    g = torch.Generator().manual_seed(9)
    x = 80.0 * torch.randn(20_000, 1, generator=g, dtype=torch.float64)
    out = sample_consistency(
        f,
        x,
        torch.tensor([80.0, 1.0, 0.3, 0.0], dtype=torch.float64),
        noise=lambda: torch.randn(20_000, 1, generator=g, dtype=torch.float64),
    )
    assert float(out.mean()) == pytest.approx(MU, abs=0.02) and float(out.std()) == pytest.approx(S, rel=0.03)


def test_distribution_matching_gradient_moves_a_gaussian_generator_onto_the_data():
    """DMD's update with exact scores (DMD Eq. 7-8): data N(mu, s^2 I), a generator x = m + e^l z with D_real the
    data's exact denoiser and D_fake the exact denoiser of the generator's own law; following the generator loss
    carries (m, e^l) from (-1, 2) onto (mu, s), and the gradient vanishes once the laws agree."""
    torch.manual_seed(0)
    data = IsotropicGaussian(MU, S)
    m = torch.tensor(-1.0, requires_grad=True)
    log_s = torch.tensor(float(torch.tensor(2.0).log()), requires_grad=True)
    opt = torch.optim.Adam([m, log_s], lr=0.05)
    for _ in range(300):
        x0 = m + log_s.exp() * torch.randn(256, 64)
        sigma = torch.exp(torch.empty(256).uniform_(-3, 1.5))
        x = x0.detach() + sigma[:, None] * torch.randn_like(x0)
        fake = IsotropicGaussian(m.detach(), float(log_s.exp()))
        g = dmd.dmd_gradient(x0.detach(), data.denoise(x, sigma), fake.denoise(x, sigma))
        opt.zero_grad()
        dmd.generator_loss(x0, g).mean().backward()
        opt.step()
    assert abs(float(m) - MU) < 0.03 and abs(float(log_s.exp()) - S) < 0.03, (float(m), float(log_s.exp()))
    x0 = data.sample((8, 64)).float()
    x = x0 + torch.randn_like(x0)
    same = data.denoise(x, torch.ones(8))
    assert torch.equal(dmd.dmd_gradient(x0, same, same), torch.zeros_like(x0))


def test_distribution_matching_generator_loss_has_the_normalised_gradient():
    """d/dx0 of 1/2 mean ||x0 - sg(x0 - g)||^2 is g / pixels; the normalisation is mean |x0 - D_real| (Eq. 8)."""
    x0 = torch.randn(3, 2, 4, requires_grad=True)
    d_real, d_fake = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    g = dmd.dmd_gradient(x0.detach(), d_real, d_fake)
    dmd.generator_loss(x0, g).sum().backward()
    torch.testing.assert_close(x0.grad, g / 8)
    scale = (x0.detach() - d_real).abs().mean((1, 2), keepdim=True)
    torch.testing.assert_close(g, (d_fake - d_real) / scale)


def test_fake_denoiser_skips_a_step_whose_gradient_is_not_finite():
    """dmd.FakeScore.update: a finite loss moves the weights; a NaN loss leaves the weights and Adam's state alone."""
    from torchdiffusion.shortcuts.dmd import FakeScore

    fake = FakeScore(nn.Linear(3, 2), lr=1e-2, channels_last=False)
    x = torch.randn(4, 3)
    assert fake.update(fake.net(x).square().mean(), grad_clip=1.0)
    before = {k: v.clone() for k, v in fake.net.state_dict().items()}
    steps = fake.opt.state_dict()["state"][0]["step"].clone()
    assert not fake.update(fake.net(x).square().mean() * float("nan"), grad_clip=1.0)
    assert all(torch.equal(before[k], v) for k, v in fake.net.state_dict().items())
    assert torch.equal(fake.opt.state_dict()["state"][0]["step"], steps)


def test_the_toy_students_are_not_what_a_picture_of_them_came_from(tmp_path):
    """explain shortcuts trains its two toy students in a temporary folder: its manifest named that folder as
    its run (gone at once, so reproduce refused the picture) - nothing of that work is recorded now."""
    from torchdiffusion.provenance import recording
    from torchdiffusion.shortcuts.toy import train_toy_shortcuts

    with recording("explain", ["explain", "shortcuts", "--images", "64"]) as rec:
        toy = train_toy_shortcuts(64, work=tmp_path / "work")
    assert rec.runs == [] and not rec.files and toy.reflow is not None
