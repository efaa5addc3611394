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
    from torchdiffusion.config import ConfigError, override, validate
    from torchdiffusion.presets import get_preset

    base = ["data.latents_of=runs/ae", "model.text_retrieval=2"]
    for bad, words in (
        (["model.retrieval_input=pixels"], "model.retrieval_input must be one of embedding, channels"),
        (["model.text_dim=0"], "needs a text-conditioned model"),
        (["model.text_retrieval=-1"], "model.text_retrieval must be in [0, 1024]"),
        (
            ["model.text_retrieval=0", "train.caption_drop_prob=0.1"],
            "train.caption_drop_prob needs model.text_retrieval",
        ),
        (["train.caption_drop_prob=0.95"], "train.cond_drop_prob + train.caption_drop_prob <= 1"),
        (["train.caption_drop_prob=-0.1"], "train.caption_drop_prob must be >= 0"),
        (["sample.retrieval_guidance=3"], "sample.retrieval_guidance needs a model.text_retrieval run trained with"),
        (["train.caption_drop_prob=0.1", "sample.retrieval_guidance=-1"], "sample.retrieval_guidance must be >= 0"),
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


def test_a_caption_dropped_alone_keeps_its_neighbours_in_both_paths():
    """cond["drop_neighbours"]: the neighbours' own drop mask; absent, the neighbours follow "drop"."""
    from torchdiffusion.nets.layers import CondEmbedding, with_neighbour_channels

    torch.manual_seed(0)
    emb = CondEmbedding(8, neighbour_dim=32)
    torch.nn.init.normal_(emb.neighbour_mlp[2].weight)
    nb = torch.randn(3, 32)
    drop = torch.tensor([True, True, False])
    alone = {"neighbours": nb, "drop_neighbours": torch.tensor([False, True, False])}  # sample 0: caption only
    e = emb(alone, drop, 3)
    torch.testing.assert_close(e[0], emb.neighbour_mlp(nb[:1])[0])
    torch.testing.assert_close(e[1], emb.neighbour_null.detach())
    torch.testing.assert_close(
        emb({"neighbours": nb, "drop_neighbours": drop}, drop, 3), emb({"neighbours": nb}, drop, 3)
    )
    x = torch.randn(3, 2, 4, 4)
    out = with_neighbour_channels(x, alone, drop)
    torch.testing.assert_close(out[0, 2:], nb[0].reshape(2, 4, 4))
    assert torch.equal(out[1, 2:], torch.zeros(2, 4, 4))


def _fake_model(a: float = 1.0, b: float = 2.0):
    """D(x | c, n) = 0.5 x + a [caption kept] text + b [neighbours kept] n: affine in both conditions."""
    from torchdiffusion.cond import drop_mask, neighbour_drop_mask

    def model(x, sigma, cond):
        B = x.shape[0]
        drop = drop_mask(cond, B, x.device)
        drop_n = neighbour_drop_mask(cond, drop)
        t = cond["text"].mean((1, 2)).reshape(B, 1)
        n = cond["neighbours"]
        return 0.5 * x + a * (~drop).float()[:, None] * t + b * (~drop_n).float()[:, None] * n

    return model


def test_retrieval_guidance_is_the_two_scale_composition_and_plain_cfg_at_equal_scales():
    from torchdiffusion.guidance import classifier_free, retrieval_guided

    torch.manual_seed(1)
    cond = {"text": torch.randn(4, 3, 5), "neighbours": torch.randn(4, 6)}
    x, sigma = torch.randn(4, 6), torch.full((4,), 2.0)
    model = _fake_model()
    t = cond["text"].mean((1, 2))[:, None]
    for w, w_n in ((3.0, 7.0), (1.5, 0.5), (4.0, 4.0)):
        got = retrieval_guided(model, cond, w, w_n)(x, sigma)
        # D_u = 0.5 x, D_n = D_u + 2 n, D_c = D_n + t:  D_u + w_n 2 n + w t
        torch.testing.assert_close(got, 0.5 * x + w_n * 2 * cond["neighbours"] + w * t)
    torch.testing.assert_close(
        retrieval_guided(model, cond, 4.0, 4.0)(x, sigma), classifier_free(model, cond, 4.0)(x, sigma)
    )
    # outside the guidance interval: the conditional branch alone
    torch.testing.assert_close(
        retrieval_guided(model, cond, 3.0, 7.0, interval=(5.0, 9.0))(x, sigma), model(x, sigma, cond)
    )
    # a negative prompt stands for the caption's null; its own neighbours make the unconditional branch
    neg = {"text": torch.randn(4, 3, 5), "neighbours": torch.randn(4, 6)}
    got = retrieval_guided(model, cond, 3.0, 7.0, uncond=neg)(x, sigma)
    t_neg = neg["text"].mean((1, 2))[:, None]
    D_u = 0.5 * x + t_neg + 2 * neg["neighbours"]
    D_n = 0.5 * x + t_neg + 2 * cond["neighbours"]
    torch.testing.assert_close(got, D_u + 7.0 * (D_n - D_u) + 3.0 * (0.5 * x + t + 2 * cond["neighbours"] - D_n))
    with pytest.raises(ValueError, match="retrieved neighbours"):
        retrieval_guided(model, {"text": cond["text"]}, 3.0, 7.0)


def test_the_caption_drop_draws_drop_the_caption_alone_at_its_rate_and_leave_other_runs_unchanged():
    from torchdiffusion.config import override
    from torchdiffusion.presets import get_preset
    from torchdiffusion.training.loop import draw_batch

    class S:  # the parts of a training Setup that draw_batch reads
        def __init__(self, cfg, data):
            from torchdiffusion.training.loop import DataOrder

            self.cfg, self.data, self.device = cfg, data, torch.device("cpu")
            self.world_size, self.rank, self.micro_batch = 1, 0, cfg.train.batch_size
            self.data_shape, self.X = tuple(data.x.shape[1:]), data.x
            self.order = DataOrder(len(data), cfg.train.batch_size, cfg.train.seed)
            self.objective = type("O", (), {"draw_sigmas": lambda self, B, g, step: torch.rand(B, generator=g)})()

    N = 64
    data = TensorData(x=torch.randn(N, 2, 4, 4))
    data.text, data.text_mask = torch.randn(N, 3, 384), torch.ones(N, 3, dtype=torch.bool)
    data.neighbours = torch.randn(N, 32)
    sets = ["data.latents_of=runs/ae", "model.text_retrieval=2", "train.batch_size=4096", "train.cond_drop_prob=0.2"]
    base = draw_batch(S(override(get_preset("emoji64-ldm-text"), sets), data), 3).micro[0].cond
    c = draw_batch(S(override(get_preset("emoji64-ldm-text"), sets + ["train.caption_drop_prob=0.3"]), data), 3)
    c = c.micro[0].cond
    assert "drop_neighbours" not in base and torch.equal(c["drop_neighbours"], base["drop"])  # the same joint draws
    both = c["drop"] & c["drop_neighbours"]
    caption_only = c["drop"] & ~c["drop_neighbours"]
    assert not (c["drop_neighbours"] & ~c["drop"]).any()  # neighbours are never dropped without the caption
    se = (0.3 * 0.7 / 4096) ** 0.5
    assert abs(both.float().mean().item() - 0.2) < 5 * (0.2 * 0.8 / 4096) ** 0.5
    assert abs(caption_only.float().mean().item() - 0.3) < 5 * se
