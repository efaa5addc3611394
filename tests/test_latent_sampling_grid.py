"""The latent presets' sampling grid: x0_hat is not clamped for latents, so sampling must not start at the cosine
schedule's last step, where sigma is ~2e4 and x0_hat = x - sigma * eps_hat amplifies the network's error 2e4-fold."""

from __future__ import annotations

import pytest
import torch

from torchdiffusion.config import get_preset
from torchdiffusion.generate import make_grid_sigmas
from torchdiffusion.model import build_model


@pytest.mark.parametrize("preset", ["emoji64-ldm", "emoji64-dit"])
def test_latent_presets_start_sampling_below_the_schedule_s_last_step(preset):
    cfg = get_preset(preset)
    assert not cfg.sample.clip_denoised
    torch.manual_seed(0)
    model = build_model(cfg, (3, 16, 16))
    sigmas = make_grid_sigmas(model, cfg.sample)
    assert model.sigma_max > 1e4  # the cosine schedule's t = T
    assert sigmas[0] < 100 and float(sigmas[-1]) == 0.0 and len(sigmas) == cfg.sample.steps + 1
    assert bool((sigmas[:-1] > sigmas[1:]).all())  # decreasing
