#!/usr/bin/env bash
# 1-D signals (docs/signals.md): train the signal presets, evaluate each run (FD and train-on-synthetic beside the
# Gaussian-process baseline), measure imputation against linear interpolation and draw the forecast, and draw the
# explain pictures. Run folders go under $RUNS (default runs/); reports go to docs/benchmarks/signals/, pictures to
# docs/images/. One intra-op thread: on a shared 2-core machine more threads only make the small networks crawl.
set -euo pipefail
RUNS=${RUNS:-runs}
TD="python -m torchdiffusion"
export OMP_NUM_THREADS=1
mkdir -p docs/benchmarks/signals docs/images
for preset in signal-gunpoint signal-italypower; do
  /usr/bin/time -f "$preset %e s wall %U s user %S s sys" $TD train --preset "$preset" --out "$RUNS/$preset" \
    --set train.threads=1 --no-progress 2>> docs/benchmarks/signals/train-times.txt
  $TD evaluate "$RUNS/$preset" --n 500 --threads 1 --out "$RUNS/$preset/eval" > /dev/null
  cp "$RUNS/$preset/eval/report.json" "docs/benchmarks/signals/$preset.json"
done
cp "$RUNS/signal-gunpoint/eval/samples.png" docs/images/signal-gunpoint-samples.png
cp "$RUNS/signal-italypower/eval/samples.png" docs/images/signal-italypower-samples.png
python scripts/signals_impute.py "$RUNS/signal-gunpoint" --json docs/benchmarks/signals/signal-gunpoint-impute.json \
  --impute-png docs/images/signal-impute.png --forecast-png docs/images/signal-forecast.png > /dev/null
python scripts/signals_impute.py "$RUNS/signal-italypower" \
  --json docs/benchmarks/signals/signal-italypower-impute.json > /dev/null
$TD explain forward --data ucr:GunPoint --t 0 100 300 500 700 900 --out docs/images/signal-forward.png
$TD explain trajectory "$RUNS/signal-gunpoint" --n 3 --out docs/images/signal-trajectory.png
python scripts/signals_table.py docs/benchmarks/signals > docs/benchmarks/signals/summary.md
