#!/usr/bin/env bash
# Short runs behind the volume-shapes preset (docs/volumes.md, "How the preset was chosen"): 8,000 volumes each,
# EDM preconditioning with sigma_data = 1 (the voxels' root mean square) or 0.3 (their standard deviation), batch
# 32 or 16; each evaluated on 128 samples (Heun, 18 steps on a Karras grid; classifier-free guidance 1, and 2 for
# the last EDM run) beside the Gaussian baseline and 128 training volumes. The previous preset's recipe (eps on the cosine table, 12,000 volumes in batches of 32) is the
# last row. Run folders under $RUNS (default runs/), reports to docs/benchmarks/kinds/volume-*.json; one thread.
set -euo pipefail
RUNS=${RUNS:-runs}
TD="python -m torchdiffusion"
export OMP_NUM_THREADS=1
EDM="diffusion.parameterization=edm diffusion.process=continuous diffusion.noise_conditioning=log_sigma"
EDM="$EDM diffusion.sigma_sampling=lognormal diffusion.weighting=edm sample.sampler=heun sample.grid=karras"
EDM="$EDM sample.steps=18 sample.guidance=1.0 train.images=8000 train.ema_halflife_images=2000 train.log_every_images=1000"
EPS="diffusion.parameterization=eps diffusion.process=discrete diffusion.schedule=cosine diffusion.T=1000"
EPS="$EPS diffusion.weighting=min_snr diffusion.noise_conditioning=timestep diffusion.sigma_sampling=discrete"
EPS="$EPS sample.sampler=dpmpp_2m sample.grid=uniform_t sample.steps=20 train.images=12000 train.batch_size=32"
EPS="$EPS train.ema_halflife_images=2000 sample.guidance=1.0"
for run in "8k-edm-sd1-b32:$EDM diffusion.sigma_data=1.0 train.batch_size=32" \
           "8k-edm-sd03-b32:$EDM diffusion.sigma_data=0.3 train.batch_size=32" \
           "8k-edm-sd1-b16:$EDM diffusion.sigma_data=1.0 train.batch_size=16" \
           "8k-edm-sd1-b16-guidance2:$EDM diffusion.sigma_data=1.0 train.batch_size=16 sample.guidance=2.0" \
           "eps-cosine-12k:$EPS"; do
  name=${run%%:*}
  sets=()
  for s in ${run#*:}; do sets+=(--set "$s"); done
  /usr/bin/time -f "volume-$name %e s wall %U s user %S s sys %M KB max RSS" $TD train --preset volume-shapes \
    --out "$RUNS/volume-$name" --set train.threads=1 "${sets[@]}" --no-progress \
    2>> docs/benchmarks/kinds/train-times.txt
  n=128; [ "$name" = eps-cosine-12k ] && n=200
  $TD evaluate "$RUNS/volume-$name" --n $n --threads 1 --out "$RUNS/volume-$name/eval" > /dev/null
  cp "$RUNS/volume-$name/eval/report.json" "docs/benchmarks/kinds/volume-$name.json"
done
# the batch-16 model sampled by a stochastic sampler instead
$TD evaluate "$RUNS/volume-8k-edm-sd1-b16" --n 128 --threads 1 --sampler euler_ancestral --steps 20 \
  --out "$RUNS/volume-8k-edm-sd1-b16/eval-euler-ancestral-20" > /dev/null
cp "$RUNS/volume-8k-edm-sd1-b16/eval-euler-ancestral-20/report.json" \
  docs/benchmarks/kinds/volume-8k-edm-sd1-b16-euler-ancestral-20.json
# the preset before its CPU-minute budget: 16,000 volumes in fp32 at a constant learning rate
/usr/bin/time -f "volume-16k-fp32-constant-lr %e s wall %U s user %S s sys %M KB max RSS" $TD train \
  --preset volume-shapes --out "$RUNS/volume-16k-fp32-constant-lr" --set train.threads=1 --set train.images=16000 \
  --set train.cpu_minutes=0 --set train.precision=fp32 --set train.lr_decay=none \
  --set train.checkpoint_every_images=8000 --no-progress 2>> docs/benchmarks/kinds/train-times.txt
$TD evaluate "$RUNS/volume-16k-fp32-constant-lr" --n 200 --threads 1 --out "$RUNS/volume-16k-fp32-constant-lr/eval" \
  > /dev/null
cp "$RUNS/volume-16k-fp32-constant-lr/eval/report.json" docs/benchmarks/kinds/volume-16k-fp32-constant-lr.json
# the preset's recipe on 8,000 procedural volumes instead of 2,000 (measured in its own feature space)
$TD train --preset volume-shapes --out "$RUNS/volume-8000-volumes" --set train.threads=1 \
  --set data.volume_count=8000 --no-progress
python scripts/volume_guidance.py "$RUNS/volume-8000-volumes" --guidance 2 --seeds 10000 --n 200 \
  --json docs/benchmarks/kinds/volume-8000-volumes-seeds.json
python scripts/kinds_table.py docs/benchmarks/kinds > docs/benchmarks/kinds/summary.md
