#!/bin/sh
# The acceptance benchmark of issue 3 (docs/samplers.md): both analytic mixtures, ours vs diffusers, 1 thread.
# The 64-D case (about 1 s per denoiser call at 10k samples on the shared 2-core machine) uses 10k samples,
# NFE 5/10/20 and a subset of our samplers to fit the time available.
set -e
torchdiffusion bench-samplers --case 8gaussians --n 20000 --out docs/bench/8gaussians
torchdiffusion bench-samplers --case mixture64 --n 10000 --nfe 5,10,20 --samplers euler,dpmpp_2m,dpmpp_3m,unipc \
    --grids uniform_t,tuned --fit-n 300 --tune-maxfev 400 --out docs/bench/mixture64
