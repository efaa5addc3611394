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
python scripts/sequence_variance.py "$RUNS/text-chars" > docs/benchmarks/kinds/variance-text-chars.json
# the same preset on the 10x smaller corpus, 128 windows held out (a quarter as many training windows per epoch,
# so a quarter of the images)
train text-sklearn --set data.source=sklearn_text --set data.holdout=128 --set train.images=100000 \
  --set train.ema_halflife_images=10000
evaluate text-sklearn
# EARLIER=1: also the earlier preset (learned positions, the 1/t-weighted bound, uniform times, fp32, windows of
# 32 characters of scikit-learn's descriptions) at its budget and 5x longer: text-earlier-sklearn-32*.json
if [ "${EARLIER:-0}" = 1 ]; then
  old=(--set data.source=sklearn_text --set data.seq_len=32 --set data.holdout=128 --set model.rotary=false
    --set diffusion.masked_bound=weighted --set diffusion.sigma_sampling=uniform --set train.precision=fp32
    --set train.lr_decay=none --set train.warmup_images=2000 --set sample.steps=32)
  train text-earlier-sklearn-32 "${old[@]}" --set train.images=64000 --set train.lr=1e-3 --set train.ema_halflife_images=8000
  evaluate text-earlier-sklearn-32
  train text-earlier-sklearn-32-long "${old[@]}" --set train.images=320000 --set train.batch_size=64 --set train.lr=2e-3 \
    --set train.warmup_images=10000 --set train.ema_halflife_images=30000
  evaluate text-earlier-sklearn-32-long
fi
cp "$RUNS/text-chars/eval/samples.png" docs/images/text-chars-samples.png
$TD explain sequence-forward "$RUNS/text-chars" --out docs/images/sequence-forward.png
rm -f docs/images/sequence-forward.png.manifest.json  # the pictures in docs are shown, not reproduced
python scripts/kinds_table.py docs/benchmarks/kinds > docs/benchmarks/kinds/summary.md
