"""Train an emoji preset on a machine without the emoji font or the MiniLM encoder (e.g. a GPU box).

    # here (font + text extra installed): the sprites and caption features as two files
    .venv/bin/python scripts/emoji_arrays.py export --to arrays/
    # there (copy the repo and arrays/): the same preset, from those files; CUDA is used when present
    PYTHONPATH=src python3 scripts/emoji_arrays.py train emoji-text runs/emoji-text --from arrays/ \
        [--set train.images=1000000 ...]

``export`` writes ``emoji16.npz`` (the arrays of ``torchdiffusion.data.emoji.emoji_arrays``, in file order) and
``text16.safetensors`` (MiniLM token features of every caption, in the same order, cut to the longest caption
and stored as fp16 to halve the copy; they are cast back to fp32). ``train`` builds the same TensorData that
``load_data(source="emoji")`` + ``encode_captions`` would (``data.emoji.emoji_tensor_data``; without the loader's
seeded permutation, which only changes the order in which examples are drawn) and calls ``train()`` with the
preset. The emoji models of docs/guidance.md that were trained on a GPU were trained this way, stopped by SIGTERM
(a clean save).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch


def export(to: Path, size: int) -> None:
    from safetensors.torch import save_file

    from torchdiffusion.data.emoji import EMOJI_FONT, emoji_arrays
    from torchdiffusion.text import caption_features

    to.mkdir(parents=True, exist_ok=True)
    a = emoji_arrays(size, EMOJI_FONT)
    np.savez(to / f"emoji{size}.npz", **a)
    text, mask = caption_features([str(c) for c in a["captions"]])
    L = int(mask.sum(1).max())
    save_file(
        {"text": text[:, :L].half().contiguous(), "text_mask": mask[:, :L].to(torch.uint8).contiguous()},
        str(to / f"text{size}.safetensors"),
    )
    print(f"{len(a['images'])} sprites, caption features (N, {L}, {text.shape[2]}) -> {to}")


def train_from(preset: str, out: Path, src: Path, overrides: list[str], size: int) -> None:
    from safetensors.torch import load_file

    from torchdiffusion.config import override
    from torchdiffusion.data.emoji import emoji_tensor_data
    from torchdiffusion.presets import get_preset
    from torchdiffusion.training import train

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    with np.load(src / f"emoji{size}.npz", allow_pickle=False) as z:
        data = emoji_tensor_data({k: z[k] for k in z.files})
    cfg = override(get_preset(preset), overrides)
    if cfg.model.text_dim > 0:
        t = load_file(str(src / f"text{size}.safetensors"))
        data.text, data.text_mask = t["text"].float(), t["text_mask"].bool()
    train(cfg, out, progress=sys.stderr.isatty(), data=data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("--to", default="arrays")
    t = sub.add_parser("train")
    t.add_argument("preset", choices=["emoji-context", "emoji-text"])
    t.add_argument("out")
    t.add_argument("--from", dest="src", default="arrays")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--size", type=int, default=16)
    args = ap.parse_args(argv)
    if args.cmd == "export":
        export(Path(args.to), args.size)
    else:
        train_from(args.preset, Path(args.out), Path(args.src), args.set, args.size)
    return 0


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
