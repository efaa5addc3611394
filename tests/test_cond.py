"""Conditioning operations: normal form, broadcast, batch concatenation and slicing are each other's inverses."""

from __future__ import annotations

import pytest
import torch

from torchdiffusion.cond import (
    CondError,
    as_cond,
    build_cond,
    cat_cond,
    drop_mask,
    expand_cond,
    parse_classes,
    parse_vectors,
    slice_cond,
    unconditional,
)
from torchdiffusion.config import ModelConfig


def _cond(B: int = 3) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"class": torch.arange(B), "context": torch.randn(B, 4, generator=g)}


def test_a_bare_tensor_is_read_by_its_shape():
    labels, ctx, text = torch.tensor([1, 2]), torch.randn(2, 5), torch.randn(2, 3, 6)
    assert as_cond(labels)["class"] is labels and as_cond(ctx)["context"] is ctx and as_cond(text)["text"] is text
    assert as_cond(None) is None
    with pytest.raises(CondError):
        as_cond(torch.randn(2))  # a float (B,) tensor is neither labels nor vectors


def test_cat_then_slice_gives_back_both_halves():
    a, b = _cond(3), unconditional(_cond(2))
    c = cat_cond(a, b)
    first, second = slice_cond(c, slice(0, 3)), slice_cond(c, slice(3, 5))
    assert first["drop"].tolist() == [False] * 3 and second["drop"].tolist() == [True] * 2
    for k in ("class", "context"):
        assert torch.equal(first[k], a[k]) and torch.equal(second[k], b[k])


def test_expand_broadcasts_batch_one_and_checks_other_sizes():
    one = slice_cond(_cond(3), slice(1, 2))
    e = expand_cond(one, 4)
    assert all(torch.equal(e[k], one[k].expand(4, *one[k].shape[1:])) for k in one)
    assert expand_cond(_cond(3), 3)["class"].tolist() == [0, 1, 2]
    with pytest.raises(CondError):
        expand_cond(_cond(3), 4)


def test_drop_mask_of_none_plain_and_dropped():
    dev = torch.device("cpu")
    assert drop_mask(None, 2, dev).tolist() == [True, True]
    assert drop_mask(_cond(2), 2, dev).tolist() == [False, False]
    assert drop_mask(unconditional(_cond(2)), 2, dev).tolist() == [True, True]


def test_build_cond_cycles_each_list_and_checks_the_model():
    m = ModelConfig(num_classes=3, context_dim=2)
    c = build_cond(m, 5, classes=[2, 0], contexts=parse_vectors("1,0;0,1;1,1"))
    assert c["class"].tolist() == [2, 0, 2, 0, 2]
    assert c["context"].tolist() == [[1, 0], [0, 1], [1, 1], [1, 0], [0, 1]]
    assert build_cond(m, 5) is None
    with pytest.raises(CondError, match="out of range"):
        build_cond(m, 2, classes=[3])
    with pytest.raises(CondError, match="needs 2"):
        build_cond(m, 2, contexts=[[1.0]])
    with pytest.raises(CondError):
        parse_vectors("1,x")
    for text in ("1,nan", "0,1;inf,0", "-inf"):  # a non-finite context makes every output NaN
        with pytest.raises(CondError, match="not a finite number"):
            parse_vectors(text)
    assert parse_vectors("0.5,inf", finite=False) == [[0.5, float("inf")]]  # a sigma interval's open top


def test_classes_are_whole_numbers():
    assert parse_classes("7") == [7] and parse_classes(" 0, 1,2 ") == [0, 1, 2]
    for text in ("1.5", "2.0", "inf", "1e999", "1;2", "x", "\u00b2"):  # never rounded, truncated or split
        with pytest.raises(CondError, match="not a whole number"):
            parse_classes(text)
    for text in ("", ",", "1,,2"):
        with pytest.raises(CondError, match="whole numbers separated by commas"):
            parse_classes(text)
