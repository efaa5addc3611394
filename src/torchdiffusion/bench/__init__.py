"""The sampler benchmark: quality against NFE for our samplers and grids, and for diffusers' schedulers on the
same exact denoiser (analytic Gaussian mixtures) or on a trained run folder. Entry point:
:func:`torchdiffusion.bench.harness.run_bench`; CLI: ``torchdiffusion bench-samplers``."""
