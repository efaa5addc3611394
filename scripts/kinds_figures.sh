#!/usr/bin/env bash
# Tables (docs/tables.md): train every table preset, evaluate
# each run (metrics beside their baselines), and draw the explain pictures. Run folders go under $RUNS
# (default runs/); reports are copied to docs/benchmarks/kinds/, pictures to docs/images/.
# One intra-op thread: on a shared 2-core machine more threads only make the small networks crawl.
set -euo pipefail
RUNS=${RUNS:-runs}
TD="python -m torchdiffusion"
export OMP_NUM_THREADS=1
mkdir -p docs/benchmarks/kinds docs/images
for preset in table-wine table-breast-cancer table-iris; do
  /usr/bin/time -f "$preset %e s wall" $TD train --preset "$preset" --out "$RUNS/$preset" --set train.threads=1 --no-progress \
    2>> docs/benchmarks/kinds/train-times.txt
  $TD evaluate "$RUNS/$preset" --n 1000 --threads 1 --out "$RUNS/$preset/eval" > /dev/null
  cp "$RUNS/$preset/eval/report.json" "docs/benchmarks/kinds/$preset.json"
done
cp "$RUNS/table-wine/eval/samples.png" docs/images/table-wine-marginals.png
$TD explain table-forward --data sklearn:wine --out docs/images/table-forward.png
$TD explain table-forward "$RUNS/table-wine" --sigmas 0.01 0.5 1 2 8 --out docs/images/table-forward-reverse.png
python scripts/kinds_table.py docs/benchmarks/kinds > docs/benchmarks/kinds/summary.md
RUNS="$RUNS" bash scripts/sequence_figures.sh  # sequences (docs/sequences.md)
RUNS="$RUNS" bash scripts/volume_figures.sh  # volumes (docs/volumes.md); also rewrites summary.md
