"""Emoji at 64 px with multi-code-point sequences, and the held-out split that keeps whole emoji (groups) apart."""

import importlib.util
import os

import pytest
import torch

from torchdiffusion.config import DataConfig
from torchdiffusion.data import emoji as emoji_mod
from torchdiffusion.data import load_data, split_groups
from torchdiffusion.data.emoji_sequences import caption, group_key, sequence_category

HAS_FONT = os.path.isfile(emoji_mod.EMOJI_FONT)
HAS_EMOJI = importlib.util.find_spec("emoji") is not None
needs_data = pytest.mark.skipif(not (HAS_FONT and HAS_EMOJI), reason="needs fonts-noto-color-emoji and emoji")


@pytest.mark.parametrize("holdout", [0, 1, 7, 30, 59])
def test_split_groups_keeps_groups_whole_and_holds_out_enough(holdout):
    g = torch.Generator().manual_seed(3)
    groups = torch.randint(0, 20, (60,), generator=g)
    train, held = split_groups(groups, holdout, seed=5)
    assert sorted(torch.cat([train, held]).tolist()) == list(range(60))
    assert not set(groups[train].tolist()) & set(groups[held].tolist())
    assert len(held) >= holdout
    # the fewest last groups: without the first held-out group there would be too few
    if holdout > 0:
        first = groups[held[0]]
        assert int((groups[held] != first).sum()) < holdout
    again = split_groups(groups, holdout, seed=5)
    assert torch.equal(train, again[0]) and torch.equal(held, again[1])


def test_group_key_category_and_caption():
    wave, medium = "\U0001f44b", "\U0001f3fd"
    assert group_key(wave + medium) == wave
    technologist = "\U0001f468\u200d\U0001f4bb"
    assert group_key("\U0001f468\U0001f3fb\u200d\U0001f4bb") == technologist
    faces = emoji_mod.EMOJI_CLASSES.index("faces & people")
    assert sequence_category(wave + medium) == sequence_category(technologist) == faces
    assert emoji_mod.EMOJI_CLASSES[sequence_category("\U0001f1ef\U0001f1f5")] == "symbols & flags"
    assert emoji_mod.EMOJI_CLASSES[sequence_category("#\ufe0f\u20e3")] == "symbols & flags"
    assert caption(wave + medium, ":waving_hand_medium_skin_tone:") == "waving hand medium skin tone"
    assert caption("\U0001f1ef\U0001f1f5", ":Japan:") == "flag: japan"


@needs_data
def test_emoji64_sequences_extend_the_single_set_and_hold_out_whole_emoji():
    cfg = DataConfig(source="emoji", emoji_size=64, emoji_set="sequences", holdout=300)
    train, held = load_data(cfg, "train", seed=0), load_data(cfg, "holdout", seed=0)
    assert train.x.shape[1:] == (3, 64, 64) and held.x.shape[1:] == (3, 64, 64)
    assert len(held) >= 300 and not set(train.groups.tolist()) & set(held.groups.tolist())
    assert train.held_out == len(held)  # what run.json records for the card (not data.holdout's 300)
    assert len(train) + len(held) > 3000  # ~1,357 single code points and ~2,400 sequences with font 2.042
    # the single-code-point sprites come first, unchanged, each its own group
    single = emoji_mod.emoji_tensor_data(emoji_mod.emoji_arrays(64))
    from torchdiffusion.data.emoji_sequences import emoji_sequence_data

    full = emoji_sequence_data(64, emoji_mod.EMOJI_FONT)
    n = len(single)
    assert torch.equal(full.x[:n], single.x) and full.captions[:n] == single.captions
    assert len(set(full.groups[:n].tolist())) == n
    # a skin-tone variant shares its base emoji's group and category, and looks different from it
    i = full.captions.index("waving hand sign")
    j = full.captions.index("waving hand medium skin tone")
    assert full.groups[i] == full.groups[j] and full.labels[i] == full.labels[j]
    assert (full.x[i] - full.x[j]).abs().mean() > 0.01
    # every sequence is drawn (not a blank white square) and captioned
    assert all(c for c in full.captions[n:])
    assert bool(((full.x[n:] < 0.9).flatten(1).float().mean(1) > 0.02).all())


@needs_data
def test_existing_emoji_sizes_load_the_single_set():
    x16 = load_data(DataConfig(source="emoji", emoji_size=16), "train", seed=0)
    assert x16.groups is None and x16.x.shape[1:] == (3, 16, 16)
