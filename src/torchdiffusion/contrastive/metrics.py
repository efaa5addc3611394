"""What the contrastive model measures: retrieval, zero-shot classification, and the contrastive score.

    ranks = retrieval_ranks(sim, target)                 # rank of the right item per query (0 = first)
    topk = top_k(ranks, (1, 5))                          # {"top1": ..., "top5": ...}
    rep = heldout_report(model, data)                    # caption->image retrieval + zero-shot categories
    cls = caption_vote_classes(model, x, captions, y, K)  # categories read through the k nearest captions
    s = contrastive_score(model, images, prompts)        # cosine of each image with its prompt

Every number is named for the model's own weights ("contrastive score (torchdiffusion emoji model)"): it is
not OpenAI's CLIP score (Hessel et al. 2021), which uses OpenAI's weights and w = 2.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from .model import ContrastiveModel

SCORE_NAME = "contrastive score (torchdiffusion emoji model)"
SHIPPED = Path(__file__).resolve().parents[1] / "evaluation" / "weights" / "emoji32-contrastive.safetensors"


def default_contrastive_model(weights: str | Path | None = None, data_shape=None) -> tuple[ContrastiveModel, dict]:
    """(model, card) from ``weights`` (a train-clip run folder or its .safetensors), else the shipped emoji
    model; ContrastiveError when there is none or its channels differ from ``data_shape``'s."""
    from .model import ContrastiveError, load_contrastive

    if weights is None and not SHIPPED.is_file():
        raise ContrastiveError("no shipped contrastive model; train one with 'torchdiffusion train-clip' and pass it")
    model, card = load_contrastive(weights if weights is not None else SHIPPED)
    card = {**card, "source": str(weights) if weights is not None else f"shipped: {SHIPPED.name}"}
    if data_shape is not None and (len(data_shape) != 3 or data_shape[0] != model.in_channels):
        raise ContrastiveError(
            f"the contrastive model reads ({model.in_channels}, H, W) images; this run makes {tuple(data_shape)}"
        )
    return model, card


def retrieval_ranks(sim: Tensor, target: Tensor) -> Tensor:
    """(Q,) long: for query q, how many candidates score at least as high as the right one, ``target[q]``
    (ties count against the query, so a model that scores everything alike ranks last, not first).

    ``sim``: (Q, N) similarities of Q queries with N candidates; ``target``: (Q,) index of each query's match.
    """
    right = sim.gather(1, target[:, None].long())  # (Q, 1)
    return (sim >= right).sum(1) - 1


def top_k(ranks: Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Recall@k: the share of queries whose match is among the first k candidates (rank < k)."""
    return {f"top{k}": float((ranks < k).double().mean()) for k in ks}


@torch.no_grad()
def embed_images(model: ContrastiveModel, x: Tensor, batch_size: int = 256) -> Tensor:
    """z_I of (N, C, H, W) images in [-1, 1], in batches: (N, D). Images of another size are first resized to
    the size the model was trained on (scale to cover, centre-crop: ``data.resize_crop``)."""
    from ..data.base import resize_crop

    model.eval()
    S = model.image_size
    z = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].float().clamp(-1, 1)
        z.append(model.encode_image(resize_crop(xb, (S, S)) if S > 0 else xb))
    return torch.cat(z)


@torch.no_grad()
def embed_texts(model: ContrastiveModel, texts: Sequence[str]) -> Tensor:
    """z_T of strings through the frozen MiniLM (cached features) and the text tower: (N, D)."""
    from ..text import caption_features

    model.eval()
    tokens, mask = caption_features(list(texts))
    return model.encode_text(tokens, mask)


# Prompt templates of the category prompts (CLIP's prompt engineering, Sec. 3.1.4): the plain names, and for a
# model trained with train.templates the forms its training texts took ("a food emoji", "an emoji of food")
PLAIN_PROMPTS: tuple[str, ...] = ("{}",)
EMOJI_PROMPTS: tuple[str, ...] = ("{}", "a {} emoji", "an emoji of {}")


def class_prompts(name: str, templates: Sequence[str] = PLAIN_PROMPTS) -> list[str]:
    """The prompts of a category: its name and each of its parts ("food & drink" -> that, "food", "drink"),
    each through every template ("{}" keeps it as it is)."""
    parts = [p.strip() for p in name.replace("&", ",").split(",") if p.strip()]
    names = [name, *parts] if len(parts) > 1 else [name]
    return [t.format(p) for p in names for t in templates]


@torch.no_grad()
def class_embeddings(
    model: ContrastiveModel, class_names: Sequence[str], templates: Sequence[str] = PLAIN_PROMPTS
) -> Tensor:
    """(K, D): per class, the normalised mean of its prompts' z_T (CLIP's prompt ensembling, Sec. 3.1.4)."""
    rows = [embed_texts(model, class_prompts(c, templates)).mean(0) for c in class_names]
    return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


def zero_shot_classes(
    model: ContrastiveModel, x: Tensor, class_names: Sequence[str], templates: Sequence[str] = PLAIN_PROMPTS
) -> Tensor:
    """(N,) the zero-shot category of each image: the class whose prompt embedding is nearest (cosine)."""
    return (embed_images(model, x) @ class_embeddings(model, class_names, templates).T).argmax(1)


@torch.no_grad()
def caption_vote_classes(
    model: ContrastiveModel, x: Tensor, captions: Sequence[str], labels: Tensor, num_classes: int, k: int = 5
) -> Tensor:
    """(N,) the category of each image read by retrieval: its ``k`` nearest ``captions`` (cosine of z_I and z_T)
    vote for their own category (``labels``), each vote weighted by its similarity; the heaviest category wins.

    A k-nearest-neighbour classifier in the shared space (CLIP's retrieval, Radford et al. 2021, Sec. 3.1, with a
    captioned gallery in place of class prompts): a category is then read through every caption that belongs to
    it, not through its name alone. The gallery should be training captions, never the images' own.
    """
    if not 1 <= k <= len(captions) or len(labels) != len(captions):
        raise ValueError(f"need 1 <= k <= {len(captions)} captions, one label each; got k={k}, {len(labels)} labels")
    sim = embed_images(model, x) @ embed_texts(model, captions).T  # (N, M)
    top, where = sim.topk(k, dim=1)
    votes = torch.zeros(len(x), num_classes).scatter_add_(1, labels.long().cpu()[where], top)
    return votes.argmax(1)


def zero_shot(
    model: ContrastiveModel,
    x: Tensor,
    labels: Tensor,
    class_names: Sequence[str],
    templates: Sequence[str] = PLAIN_PROMPTS,
) -> dict:
    """Zero-shot category accuracy: each image gets the class whose prompt embedding is nearest (cosine).

    Reports ``accuracy``, ``per_class`` accuracies, and the two baselines it must beat: ``chance`` (1/K) and
    ``majority`` (always the most frequent class).
    """
    pred = zero_shot_classes(model, x, class_names, templates)
    labels = labels.long().cpu()
    K = len(class_names)
    counts = torch.bincount(labels, minlength=K)
    return {
        "accuracy": float((pred == labels).double().mean()),
        "per_class": {
            c: float((pred[labels == k] == k).double().mean()) for k, c in enumerate(class_names) if counts[k] > 0
        },
        "chance": 1.0 / K,
        "majority": float(counts.max() / counts.sum()),
        "prompts": {c: class_prompts(c, templates) for c in class_names},
    }


def retrieval(model: ContrastiveModel, x: Tensor, captions: Sequence[str], ks: Sequence[int] = (1, 5)) -> dict:
    """Caption->image and image->caption retrieval among N (image, caption) pairs: recall@k, chance k/N.

    Captions that occur more than once (two images with one name) count a hit on any image of that caption.
    """
    z_img, z_txt = embed_images(model, x), embed_texts(model, captions)
    sim = z_txt @ z_img.T  # (N captions, N images)
    same = torch.tensor([[a == b for b in captions] for a in captions])
    best_right = torch.where(same, sim, torch.full_like(sim, -torch.inf)).max(1).values  # any image of the caption
    ranks_t2i = (torch.where(same, torch.full_like(sim, -torch.inf), sim) >= best_right[:, None]).sum(1)
    ranks_i2t = retrieval_ranks(sim.T, torch.arange(len(captions)))
    n = len(captions)
    return {
        "n": n,
        "caption_to_image": top_k(ranks_t2i, ks),
        "image_to_caption": top_k(ranks_i2t, ks),
        "chance": {f"top{k}": min(k, n) / n for k in ks},
        "median_rank_caption_to_image": int(ranks_t2i.median()) + 1,
    }


def heldout_report(model: ContrastiveModel, data) -> dict:
    """Retrieval and zero-shot category accuracy of a TensorData (the held-out emoji, never seen in training)."""
    out = {"retrieval": retrieval(model, data.x, data.captions)}
    if data.labels is not None and data.class_names:
        out["zero_shot"] = zero_shot(model, data.x, data.labels, data.class_names)
    return out


@torch.no_grad()
def contrastive_score(model: ContrastiveModel, images: Tensor, prompts: Sequence[str], prompt_index: Tensor) -> dict:
    """How well images match the prompts they were made from, in the model's embedding space.

    ``images`` (N, C, H, W), ``prompts`` P strings, ``prompt_index`` (N,) the prompt of each image. Reports the
    mean cosine ``cos(z_I, z_T)`` x 100 (``score``) and ``prompt_top1``: the share of images whose own prompt is
    the nearest of the P prompts (chance 1/P).
    """
    z_img, z_txt = embed_images(model, images), embed_texts(model, prompts)
    idx = prompt_index.long().cpu()
    sim = z_img @ z_txt.T  # (N, P)
    own = sim.gather(1, idx[:, None])[:, 0]
    return {
        "name": SCORE_NAME,
        "score": float(100 * own.double().mean()),
        "prompt_top1": top_k(retrieval_ranks(sim, idx), (1,))["top1"],
        "chance": 1.0 / len(prompts),
        "n": int(images.shape[0]),
        "prompts": len(prompts),
    }
