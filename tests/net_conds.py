"""Conditionings a network takes, each with the model settings that ask for it: shared by the U-Net and DiT
tests (every kind must matter for every sample, and a dropped sample must equal the unconditional output)."""

from __future__ import annotations

import torch

CONDS = {
    "class": (dict(num_classes=5), lambda B: {"class": torch.tensor([0, 3, 4])[:B]}),
    "context": (dict(context_dim=4), lambda B: {"context": torch.rand(B, 4)}),
    "text": (
        dict(text_dim=6),
        lambda B: {"text": torch.randn(B, 3, 6), "text_mask": torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]]).bool()},
    ),
    "text_pooled": (
        dict(text_dim=6, text_pooled=True),
        lambda B: {"text": torch.randn(B, 3, 6), "text_mask": torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]]).bool()},
    ),
    "text_retrieval": (  # retrieval.py: the mean of the prompt's retrieved training examples, (B, 2 * 8 * 8)
        dict(text_dim=6, text_retrieval=2),
        lambda B: {"text": torch.randn(B, 3, 6), "neighbours": torch.randn(B, 128)},
    ),
    "text_retrieval_channels": (  # the same, as two extra input channels
        dict(text_dim=6, text_retrieval=2, retrieval_input="channels"),
        lambda B: {"text": torch.randn(B, 3, 6), "neighbours": torch.randn(B, 128)},
    ),
}
