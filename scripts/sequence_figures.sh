#!/usr/bin/env bash
# Sequences (docs/sequences.md): train the text-chars preset on its default corpus (the Python documentation) and
# on scikit-learn's descriptions, evaluate each (the bound beside the 3-gram baseline, n-gram distances of 128
# samples), measure the spread of the bound's estimators, and draw the pictures. Run folders go under $RUNS
# (default runs/); reports to docs/benchmarks/kinds/, pictures to docs/images/. Process CPU time (user + sys) of
# each training is appended to docs/benchmarks/kinds/train-times.txt.
# One intra-op thread: on a shared 2-core machine more threads only make the small networks crawl.
set -euo pipefail
RUNS=${RUNS:-runs}
TD="python -m torchdiffusion"
export OMP_NUM_THREADS=1
mkdir -p docs/benchmarks/kinds docs/images
train() {
  local name=$1
  shift
  /usr/bin/time -o "$RUNS/$name.time" -f "$name %U s user %S s sys %e s wall" \
    $TD train --preset text-chars --out "$RUNS/$name" --set train.threads=1 --no-progress "$@"
  cat "$RUNS/$name.time" >> docs/benchmarks/kinds/train-times.txt
}
evaluate() {
  $TD evaluate "$RUNS/$1" --n 128 --threads 1 --out "$RUNS/$1/eval" > /dev/null
  cp "$RUNS/$1/eval/report.json" "docs/benchmarks/kinds/$1.json"
}
mkdir -p "$RUNS"
train text-chars
evaluate text-chars
python scripts/sequence_variance.py "$RUNS/text-chars" > docs/benchmarks/kinds/text-chars-variance.json
# the same preset on the 10x smaller corpus, 128 windows held out (a quarter as many training windows per epoch,
# so a quarter of the images)
train text-sklearn --set data.source=sklearn_text --set data.holdout=128 --set train.images=100000 \
  --set train.ema_halflife_images=10000
evaluate text-sklearn
cp "$RUNS/text-chars/eval/samples.png" docs/images/text-chars-samples.png
$TD explain sequence-forward "$RUNS/text-chars" --out docs/images/sequence-forward.png
python scripts/kinds_table.py docs/benchmarks/kinds > docs/benchmarks/kinds/summary.md
