#!/bin/sh
# The sampler benchmark of docs/samplers.md: each case's tables into docs/benchmarks/samplers/<case>/ and its
# plot into docs/images/samplers-<case>.png. One thread; times are for a shared 2-core CPU.
#   sh scripts/bench_samplers.sh                      # every case
#   sh scripts/bench_samplers.sh 8gaussians toy-run   # some of them
# Cases: 8gaussians, mixture64 (exact denoisers, ours vs diffusers); toy-run (needs runs/toy: torchdiffusion train --preset toy-2d --out runs/toy); demo-run (needs
# runs/demo: make demo). The 64-D case costs about 1 s per denoiser call at 10k samples, hence 10k samples,
# NFE 5/10/20 and four of our samplers. The tuned grids of these pages are RMS fits (--fit-objective rms
# --no-stop-short; bench-samplers' default for unclamped data is now the sliced-Wasserstein fit that stops short).
set -e
TD=${TD:-torchdiffusion}
OUT=docs/benchmarks/samplers
RMS="--fit-objective rms --no-stop-short"
bench() {  # bench CASE ARGS...: run into $OUT/CASE, move the plot to docs/images
  name=$1; shift
  $TD bench-samplers --threads 1 "$@" --out "$OUT/$name"
  mv "$OUT/$name/plot.png" "docs/images/samplers-$name.png"
}
for c in ${*:-8gaussians mixture64 toy-run demo-run}; do
  case $c in
    8gaussians) bench 8gaussians --case 8gaussians --n 20000 $RMS ;;
    mixture64) bench mixture64 --case mixture64 --n 10000 --nfe 5,10,20 --samplers euler,dpmpp_2m,dpmpp_3m,unipc \
        --grids uniform_t,tuned --fit-n 300 --tune-maxfev 400 $RMS ;;
    toy-run) bench toy-run --run runs/toy --n 2000 --samplers euler,heun,dpmpp_2m,dpmpp_3m,unipc,dpmpp_2m_sde \
        --grids karras,exponential,tuned --tuned-samplers unipc --tune-maxfev 150 --fit-n 200 --no-diffusers $RMS ;;
    demo-run) bench demo-run --run runs/demo --reference data --features clf:mnist5k --n 500 --nfe 10,20 \
        --samplers euler,heun,heun_sde,ddpm,euler_ancestral,dpmpp_2m,dpmpp_2m_sde,unipc --grids karras,uniform_t \
        --tuned-samplers '' --no-diffusers ;;
    *) echo "unknown case $c" >&2; exit 2 ;;
  esac
done
