#!/bin/sh
# Re-measure the two samplers fixed after the main 8-Gaussians run (pc corrector step, ancestral 2S SDE),
# then case (b): the trained toy run (runs/toy, preset toy-2d), tuned grids stored in runs/toy/grids.
set -e
torchdiffusion bench-samplers --case 8gaussians --n 20000 --samplers pc,dpmpp_2s_sde --grids karras,exponential,uniform_t \
    --no-diffusers --out docs/bench/8gaussians-fixed
torchdiffusion bench-samplers --run runs/toy --n 2000 --samplers euler,heun,dpmpp_2m,dpmpp_3m,unipc,dpmpp_2m_sde \
    --grids karras,exponential,tuned --tuned-samplers unipc --tune-maxfev 150 --fit-n 200 --no-diffusers --out docs/bench/toy-run
