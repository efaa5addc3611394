"""The latent presets' sampling grid: x0_hat is not clamped for latents, so sampling must not start at the cosine
schedule's last step, where sigma is ~2e4 and x0_hat = x - sigma * eps_hat amplifies the network's error 2e4-fold.
The presets that leave the grid at auto get that from the auto grid itself (generate.resolve_grid)."""

from __future__ import annotations

import pytest
import torch

from torchdiffusion.generate import clamps_x0, make_grid_sigmas
from torchdiffusion.model import build_model
from torchdiffusion.presets import get_preset


@pytest.mark.parametrize("preset", ["emoji64-ldm", "emoji64-dit", "emoji64-ldm-text"])
def test_latent_presets_start_sampling_below_the_schedule_s_last_step(preset):
    cfg = get_preset(preset)
    assert not cfg.sample.clip_denoised
    torch.manual_seed(0)
    model = build_model(cfg, (3, 16, 16))
    assert not clamps_x0(cfg.sample, (3, 16, 16))  # also without the codec a latent run is loaded with
    sigmas = make_grid_sigmas(model, cfg.sample, clamped=False)
    assert model.sigma_max > 1e4  # the cosine schedule's t = T
    assert sigmas[0] < 100 and float(sigmas[-1]) == 0.0 and len(sigmas) == cfg.sample.steps + 1
    assert bool((sigmas[:-1] > sigmas[1:]).all())  # decreasing
