#!/usr/bin/env bash
# Tables and sequences (docs/tables.md, docs/sequences.md): train every table preset and text-chars, evaluate
# each run (metrics beside their baselines), and draw the explain pictures. Run folders go under $RUNS
# (default runs/); reports are copied to docs/benchmarks/kinds/, pictures to docs/images/.
# One intra-op thread: on a shared 2-core machine more threads only make the small networks crawl.
set -euo pipefail
RUNS=${RUNS:-runs}
TD="python -m torchdiffusion"
export OMP_NUM_THREADS=1
mkdir -p docs/benchmarks/kinds docs/images
for preset in table-wine table-breast-cancer table-iris text-chars; do
  /usr/bin/time -f "$preset %e s wall" $TD train --preset "$preset" --out "$RUNS/$preset" --set train.threads=1 --no-progress \
    2>> docs/benchmarks/kinds/train-times.txt
  n=1000; [ "$preset" = text-chars ] && n=128
  $TD evaluate "$RUNS/$preset" --n $n --threads 1 --out "$RUNS/$preset/eval" > /dev/null
  cp "$RUNS/$preset/eval/report.json" "docs/benchmarks/kinds/$preset.json"
done
# the same text model trained 5x longer (batch 64, lr 2e-3): the bound is still falling at the preset's budget
/usr/bin/time -f "text-chars-long %e s wall" $TD train --preset text-chars --out "$RUNS/text-chars-long" \
  --set train.threads=1 --set train.images=320000 --set train.batch_size=64 --set train.lr=2e-3 \
  --set train.warmup_images=10000 --set train.ema_halflife_images=30000 --no-progress 2>> docs/benchmarks/kinds/train-times.txt
$TD evaluate "$RUNS/text-chars-long" --n 128 --threads 1 --out "$RUNS/text-chars-long/eval" > /dev/null
cp "$RUNS/text-chars-long/eval/report.json" docs/benchmarks/kinds/text-chars-long.json
cp "$RUNS/table-wine/eval/samples.png" docs/images/table-wine-marginals.png
cp "$RUNS/text-chars/eval/samples.png" docs/images/text-chars-samples.png
$TD explain table-forward --data sklearn:wine --out docs/images/table-forward.png
$TD explain sequence-forward "$RUNS/text-chars" --out docs/images/sequence-forward.png
python scripts/kinds_table.py docs/benchmarks/kinds > docs/benchmarks/kinds/summary.md
RUNS="$RUNS" bash scripts/volume_figures.sh  # volumes (docs/volumes.md); also rewrites summary.md
