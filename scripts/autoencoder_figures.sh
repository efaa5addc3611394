#!/usr/bin/env bash
# The autoencoder part of docs/latent.md: train emoji64-ae with and without the perceptual term, a 64-px emoji
# category classifier on the same training split, then the held-out figures (PSNR, category accuracy on
# originals vs reconstructions) and pictures. Run folders go under $RUNS (default runs/); figures to
# docs/benchmarks/autoencoder/, pictures to docs/images/. IMAGES shortens the trainings (the preset: 60000).
# One intra-op thread: on a shared 2-core machine more threads only make the small networks crawl.
set -euo pipefail
RUNS=${RUNS:-runs}
IMAGES=${IMAGES:-60000}
TD="python -m torchdiffusion"
export OMP_NUM_THREADS=1
mkdir -p docs/benchmarks/autoencoder docs/images
SET=(--set train.images="$IMAGES" --set train.batch_size=8 --set train.log_every_images=1000 --set train.threads=1)
$TD train-autoencoder --preset emoji64-ae "${SET[@]}" --out "$RUNS/emoji64-ae" --no-progress
$TD train-autoencoder --preset emoji64-ae "${SET[@]}" --set loss.perceptual=1 --out "$RUNS/emoji64-ae-perceptual" \
  --no-progress
# the category classifier: the autoencoder's training split (same data.holdout and seed), never its held-out emoji
$TD train-classifier emoji-context --evaluation --set data.emoji_size=64 --set data.emoji_set=sequences \
  --set data.holdout=300 --width 16 --epochs 6 --batch-size 64 --holdout 300 --threads 1 --out "$RUNS/emoji64-classifier"
python scripts/autoencoder_figures.py "$RUNS/emoji64-ae" "$RUNS/emoji64-ae-perceptual" \
  --classifier "$RUNS/emoji64-classifier/eval-classifier.safetensors" --out docs/benchmarks/autoencoder
cp docs/benchmarks/autoencoder/reconstructions.png docs/images/latent-autoencoder-reconstructions.png
cp docs/benchmarks/autoencoder/effect.png docs/images/latent-autoencoder-perceptual.png
