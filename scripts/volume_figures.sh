#!/usr/bin/env bash
# Volumes (docs/volumes.md): train the volume-shapes preset, evaluate it (the volume metrics beside the Gaussian
# baseline), draw the explain picture and the samples, measure the memory of a 32^3 step with and without
# checkpointing. Run folders go under $RUNS (default runs/); reports go to docs/benchmarks/kinds/, pictures to
# docs/images/. One intra-op thread: on a shared 2-core machine more threads only make the small networks crawl.
set -euo pipefail
RUNS=${RUNS:-runs}
TD="python -m torchdiffusion"
export OMP_NUM_THREADS=1
mkdir -p docs/benchmarks/kinds docs/images
/usr/bin/time -f "volume-shapes %e s wall %U s user %S s sys %M KB max RSS" $TD train --preset volume-shapes \
  --out "$RUNS/volume-shapes" --set train.threads=1 --no-progress 2>> docs/benchmarks/kinds/train-times.txt
$TD evaluate "$RUNS/volume-shapes" --n 200 --threads 1 --out "$RUNS/volume-shapes/eval" > /dev/null
cp "$RUNS/volume-shapes/eval/report.json" docs/benchmarks/kinds/volume-shapes.json
# the same run at three evaluation seeds (one n = 200 evaluation moves with the seed): mean and standard error
python scripts/volume_guidance.py "$RUNS/volume-shapes" --guidance 2 --seeds 10000,20000,30000 --n 200 \
  --json docs/benchmarks/kinds/volume-shapes-seeds.json
cp "$RUNS/volume-shapes/eval/samples.png" docs/images/volume-shapes-samples.png
cp "$RUNS/volume-shapes/eval/gaussian_pca.png" docs/images/volume-shapes-gaussian.png
cp "$RUNS/volume-shapes/eval/profiles.png" docs/images/volume-shapes-profiles.png
$TD explain volume-forward --data shapes3d --sigmas 0.05 0.2 0.5 1 2 5 --out docs/images/volume-forward.png
rm -f docs/images/volume-forward.png.manifest.json  # the pictures in docs are shown, not reproduced
python scripts/volume_memory.py --size 32 --batch 32 --steps 1 > docs/benchmarks/kinds/volume-memory.json
python scripts/kinds_table.py docs/benchmarks/kinds > docs/benchmarks/kinds/summary.md
