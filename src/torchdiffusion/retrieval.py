"""Retrieval-augmented text conditioning: a prompt brings its nearest training examples with it.

A text-to-image model trained on a few thousand captioned images draws the captions it has seen, but an unseen
caption ("spouting whale" with no whale among the training emoji) reaches it only through the text encoder.
Semi-parametric models keep the training set beside the network and condition on what a query retrieves from
it: kNN-Diffusion (Sheynin et al. 2022) and retrieval-augmented diffusion, RDM (Blattmann et al. 2022, "Semi-
Parametric Neural Image Synthesis"). Here, with ``model.text_retrieval = k``:

    q(c)  = normalise(mean of the caption's MiniLM token features)        the query (text.pooled)
    N(c)  = the k training examples whose captions' q are nearest q(c)   (cosine similarity)
    n(c)  = mean over N(c) of the training examples x_j (flattened)      cond["neighbours"], (B, D)

and ``n(c)`` reaches the network through a 2-layer MLP added to the noise embedding (``layers.CondEmbedding``),
beside the caption's tokens (cross-attention). In training an example never retrieves itself or any example of
its own group (an emoji's skin-tone variants), so the network learns to use neighbours that are *other* images,
as an unseen caption's will be. Classifier-free dropout drops n(c) with the caption (the learned null vector).

The database - every training example's query ``keys`` (N, 384) and the example ``values`` (N, D), float16 - is
saved in the run folder as ``retrieval.safetensors``, so ``sample --prompt`` retrieves from the training set
the run saw without the data; :func:`with_neighbours` does it for prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

FILE = "retrieval.safetensors"


class RetrievalError(ValueError):
    """A retrieval database that is missing, damaged or does not fit the model; one line."""


@dataclass
class Database:
    keys: Tensor  # (N, E) float16, L2-normalised pooled caption embeddings of the training examples
    values: Tensor  # (N, D) float16, the training examples (as the model sees them: latents for a latent run)
    k: int  # neighbours per query

    def neighbours(self, queries: Tensor, exclude: Tensor | None = None) -> Tensor:
        """n(c): (B, D) float32, the mean of the ``k`` values whose keys are nearest each (B, E) query.

        ``exclude``: (B, N) bool, True where a query may not retrieve that example (its own group in training).
        """
        sim = queries.float() @ self.keys.float().T  # (B, N) cosine similarities
        if exclude is not None:
            sim = sim.masked_fill(exclude, -math.inf)
        k = min(self.k, self.keys.shape[0])
        near, top = sim.topk(k, dim=1)  # (B, k)
        # fewer than k examples left after the exclusion: the mean of those there are
        w = (near > -math.inf).float()
        w = torch.where(w.sum(1, keepdim=True) > 0, w, torch.ones_like(w))
        return (self.values.float()[top] * w[..., None]).sum(1) / w.sum(1, keepdim=True)


def caption_keys(captions: Sequence[str]) -> Tensor:
    """q(c) of every caption: (N, 384) float32, L2-normalised mean of its MiniLM token features (cached)."""
    from .text import caption_features, pooled

    text, mask = caption_features(list(captions))
    return pooled(text, mask)


def build_database(data, k: int) -> Database:
    """The database of a training set with captions (``data.captions``; ``data.x`` as the model sees it)."""
    captions = getattr(data, "captions", None)
    if captions is None:
        raise RetrievalError("model.text_retrieval needs a data set with captions (e.g. data.source=emoji)")
    if len(data) < 2:
        raise RetrievalError("model.text_retrieval needs at least two training examples")
    keys = caption_keys(captions).half()
    return Database(keys=keys, values=data.x.reshape(len(data), -1).half(), k=int(k))


def training_neighbours(data, db: Database, batch: int = 1024) -> Tensor:
    """n(c) of every training example, (N, D) float32, retrieved among the *other* groups' examples.

    An example's own group (``data.groups``: an emoji and its skin-tone variants) is excluded, itself included;
    without groups only the example itself is. Where every other example shares its group nothing is excluded.
    """
    N = len(data)
    groups = getattr(data, "groups", None)
    groups = torch.arange(N) if groups is None else torch.as_tensor(groups).reshape(N)
    out = []
    for s in range(0, N, batch):
        g = groups[s : s + batch]
        exclude = g[:, None] == groups[None, :]
        exclude &= ~exclude.all(1, keepdim=True)  # a single-group data set: retrieve from itself
        out.append(db.neighbours(db.keys[s : s + batch], exclude))
    return torch.cat(out)


def attach_neighbours(data, k: int):
    """``data`` with ``data.neighbours`` (N, D) (read per batch by ``cond.cond_from_data``) and its database
    ``data.retrieval`` set."""
    data.retrieval = build_database(data, k)
    data.neighbours = training_neighbours(data, data.retrieval)
    return data


def save_database(db: Database, out: str | Path) -> Path:
    """``out/retrieval.safetensors`` (written atomically)."""
    from .io import save_safetensors

    return save_safetensors(
        {"keys": db.keys.contiguous(), "values": db.values.contiguous()}, Path(out) / FILE, {"k": str(db.k)}
    )


def load_database(run_dir: str | Path, k: int, dim: int) -> Database:
    """The run folder's database, checked against the model (``k`` neighbours of ``dim`` values each)."""
    from safetensors import safe_open

    path = Path(run_dir) / FILE
    if not path.is_file():
        raise RetrievalError(
            f"{run_dir}: this model retrieves training examples for its prompts, but {FILE} is missing"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            keys, values = f.get_tensor("keys"), f.get_tensor("values")
    except Exception as e:  # a damaged file: one line
        raise RetrievalError(f"{path}: unreadable retrieval database ({type(e).__name__})") from None
    if keys.ndim != 2 or values.ndim != 2 or keys.shape[0] != values.shape[0] or values.shape[1] != dim:
        raise RetrievalError(f"{path}: the database does not fit this model (values of width {dim} expected)")
    return Database(keys=keys, values=values, k=int(k))


def with_neighbours(cond: dict, db: Database) -> dict:
    """``cond`` with ``cond["neighbours"]``, (B, D) float32: n(c) of each sample's prompt, queried with q(c) of the
    token features ``cond`` already holds (``text`` / ``text_mask``, as ``text.prompt_cond`` gives them), so the
    text encoder runs once."""
    from .text import pooled

    return {**cond, "neighbours": db.neighbours(pooled(cond["text"], cond["text_mask"]))}
