#!/bin/sh
# The acceptance benchmark of issue 3 (docs/samplers.md): both analytic mixtures, ours vs diffusers.
# One thread; the 64-D case uses 10k samples and a subset of our samplers to fit a shared 2-core machine.
set -e
torchdiffusion bench-samplers --case 8gaussians --n 20000 --out docs/bench/8gaussians
torchdiffusion bench-samplers --case mixture64 --n 10000 --samplers euler,heun,ddim,dpmpp_2m,dpmpp_3m,unipc,dpmpp_2m_sde \
    --grids karras,uniform_t,tuned --fit-n 300 --tune-maxfev 400 --out docs/bench/mixture64
