"""Retrieval-augmented text conditioning (retrieval.py): the neighbours retrieved, the groups they skip, the
database file, and the neighbours' path into the network."""

from __future__ import annotations

import re

import pytest
import torch

from torchdiffusion.data.base import TensorData
from torchdiffusion.retrieval import (
    FILE,
    Database,
    RetrievalError,
    attach_neighbours,
    load_database,
    save_database,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_neighbours_are_the_mean_of_the_k_values_whose_keys_are_nearest():
    keys = torch.eye(4)[[0, 1, 2, 3]].half()  # orthonormal keys: the similarity of a query to key j is its entry j
    values = torch.arange(8.0).reshape(4, 2).half()
    db = Database(keys=keys, values=values, k=2)
    q = torch.tensor([[0.1, 0.9, 0.5, 0.0], [0.7, 0.0, 0.0, 0.8]])
    # query 0: keys 1 (0.9) and 2 (0.5) -> mean of rows 1 and 2; query 1: keys 3 and 0
    expected = torch.stack([(values[1] + values[2]).float() / 2, (values[3] + values[0]).float() / 2])
    torch.testing.assert_close(db.neighbours(q), expected)
    # an excluded key is never retrieved, however near
    exclude = torch.tensor([[False, True, False, False], [False, False, False, False]])
    torch.testing.assert_close(db.neighbours(q, exclude)[0], (values[2] + values[0]).float() / 2)
    # fewer than k left after the exclusion: the mean of those there are, never an excluded one
    only_3 = torch.tensor([[True, True, True, False]] * 2)
    torch.testing.assert_close(db.neighbours(q, only_3), values[3].float().expand(2, 2))


def _captioned(captions, groups) -> TensorData:
    x = torch.randn(len(captions), 1, 2, 2)
    return TensorData(x=x, kind="image", name="toy", captions=list(captions), groups=torch.tensor(groups))


def test_a_training_example_never_retrieves_its_own_group():
    """Two emoji with their variants: an example's neighbours come from the other emoji, never its own variants,
    though its own variants have the very same caption (the nearest possible)."""
    data = _captioned(["red apple", "red apple", "green apple", "green apple", "rocket"], [0, 0, 1, 1, 2])
    data = attach_neighbours(data, k=2)
    x = data.x.reshape(5, -1).half().float()
    # "red apple" -> the two "green apple" variants (nearer than "rocket"), and the other way round
    for i in (0, 1):
        torch.testing.assert_close(data.neighbours[i], (x[2] + x[3]) / 2)
    for i in (2, 3):
        torch.testing.assert_close(data.neighbours[i], (x[0] + x[1]) / 2)
    assert data.retrieval.keys.shape == (5, 384) and data.retrieval.values.shape == (5, 4)
    # the same captions without groups: an example skips only itself, so its twin comes first
    twins = attach_neighbours(_captioned(data.captions, [0, 1, 2, 3, 4]), k=1)
    xt = twins.x.reshape(5, -1).half().float()
    torch.testing.assert_close(twins.neighbours[0], xt[1])
    torch.testing.assert_close(twins.neighbours[3], xt[2])


def test_data_without_captions_is_refused_in_one_line():
    data = TensorData(x=torch.randn(4, 1, 2, 2), kind="image", name="toy")
    with pytest.raises(RetrievalError, match="captions"):
        attach_neighbours(data, k=2)


def test_the_database_file_round_trips_and_a_bad_one_is_refused(tmp_path):
    db = Database(keys=torch.randn(3, 5).half(), values=torch.randn(3, 4).half(), k=2)
    save_database(db, tmp_path)
    back = load_database(tmp_path, 2, 4)
    assert torch.equal(back.keys, db.keys) and torch.equal(back.values, db.values) and back.k == 2
    with pytest.raises(RetrievalError, match="does not fit"):
        load_database(tmp_path, 2, 8)  # a model of another data shape
    (tmp_path / FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(RetrievalError, match="unreadable"):
        load_database(tmp_path, 2, 4)
    with pytest.raises(RetrievalError, match="missing"):
        load_database(tmp_path / "elsewhere", 2, 4)


def test_the_neighbours_reach_the_embedding_and_dropped_samples_get_the_null_vector():
    from torchdiffusion.nets.layers import CondEmbedding

    torch.manual_seed(0)
    emb = CondEmbedding(8, neighbour_dim=4)
    torch.nn.init.normal_(emb.neighbour_mlp[2].weight)  # past initialisation (its last layer starts at zero)
    torch.nn.init.normal_(emb.neighbour_null)
    nb = torch.randn(3, 4)
    drop = torch.tensor([False, True, False])
    e = emb({"neighbours": nb}, drop, 3)
    torch.testing.assert_close(e[1], emb.neighbour_null.detach())
    torch.testing.assert_close(e[0], emb.neighbour_mlp(nb[:1])[0])
    assert (emb({"neighbours": nb * 2}, drop, 3)[0] - e[0]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="neighbours"):
        emb({"text": torch.zeros(3, 2, 384)}, torch.zeros(3, dtype=torch.bool), 3)  # a prompt without them
    torch.testing.assert_close(emb(None, torch.ones(3, dtype=torch.bool), 3), emb.neighbour_null.expand(3, 8))


def test_the_retrieval_settings_are_checked():
    from torchdiffusion.config import ConfigError, get_preset, override, validate

    base = ["data.latents_of=runs/ae", "model.text_retrieval=2"]
    for bad, words in (
        (["model.retrieval_input=pixels"], "model.retrieval_input must be one of embedding, channels"),
        (["model.text_dim=0"], "needs a text-conditioned model"),
        (["model.text_retrieval=-1"], "model.text_retrieval must be in [0, 1024]"),
    ):
        with pytest.raises(ConfigError, match=re.escape(words)):
            validate(override(get_preset("emoji64-ldm-text"), base + bad))


def test_channel_neighbours_are_the_example_shaped_input_beside_x_and_zero_when_dropped():
    from torchdiffusion.nets.layers import with_neighbour_channels

    x = torch.randn(3, 2, 4, 4).contiguous(memory_format=torch.channels_last)
    nb = torch.randn(3, 32)
    drop = torch.tensor([False, True, False])
    out = with_neighbour_channels(x, {"neighbours": nb}, drop)
    assert out.shape == (3, 4, 4, 4) and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out[:, :2], x)
    torch.testing.assert_close(out[0, 2:], nb[0].reshape(2, 4, 4))
    assert torch.equal(out[1, 2:], torch.zeros(2, 4, 4))
    assert torch.equal(
        with_neighbour_channels(x, None, torch.ones(3, dtype=torch.bool))[:, 2:], torch.zeros(3, 2, 4, 4)
    )
    with pytest.raises(ValueError, match="neighbours"):
        with_neighbour_channels(x, {"text": torch.zeros(3, 1, 384)}, torch.zeros(3, dtype=torch.bool))
