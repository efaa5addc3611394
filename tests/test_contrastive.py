"""The contrastive text-image model: InfoNCE against a hand-computed case, the temperature clamp, retrieval
ranks on constructed similarities, save/load, augmentation, and train-clip end to end and on bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tinyruns import cli, write_run
from torchdiffusion.contrastive import metrics as CM
from torchdiffusion.contrastive.config import TowerConfig
from torchdiffusion.contrastive.model import (
    ContrastiveError,
    ContrastiveModel,
    FrozenBackboneTower,
    info_nce,
    load_contrastive,
    save_contrastive,
)
from torchdiffusion.contrastive.train import random_translate, templated_captions, text_features

torch.set_num_threads(1)
TINY = TowerConfig(embed_dim=8, width=4, channel_mult=(1, 2), groups=2, text_hidden=0, dropout=0.0)


def test_info_nce_against_a_hand_computed_2x2_case():
    # Unit vectors with S = z_I z_T^T = [[1, 0], [0.6, 0.8]] and s = 1:
    #   image 0 -> text: -log(e^1 / (e^1 + e^0))       = log(1 + e^-1)
    #   image 1 -> text: -log(e^0.8 / (e^0.6 + e^0.8))  = log(1 + e^-0.2)
    #   text 0 -> image (column 0: 1, 0.6):             = log(1 + e^-0.4)
    #   text 1 -> image (column 1: 0, 0.8):             = log(1 + e^-0.8)
    z_img = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    z_txt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    i2t = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-0.2))) / 2
    t2i = (math.log(1 + math.exp(-0.4)) + math.log(1 + math.exp(-0.8))) / 2
    assert info_nce(z_img @ z_txt.T).item() == pytest.approx((i2t + t2i) / 2, abs=1e-6)
    assert (i2t + t2i) / 2 == pytest.approx(0.448879, abs=1e-6)  # the same numbers, added by hand


def test_info_nce_3x3_limits():
    # a perfect match at a huge scale costs nothing; all-equal logits cost log B in both directions
    assert info_nce(100.0 * torch.eye(3)).item() == pytest.approx(0.0, abs=1e-6)
    assert info_nce(torch.full((3, 3), 0.3)).item() == pytest.approx(math.log(3), abs=1e-6)
    # a swapped pair: image 0 is nearest caption 1 -> one row and one column pay log(1 + e^s)
    s = 2.0
    S = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]) * s
    # rows 0 and 1: -log(e^0 / (e^s + 2)); row 2: -log(e^s / (e^s + 2)); S is symmetric, so columns = rows
    hand = (2 * math.log(math.exp(s) + 2) + math.log(math.exp(s) + 2) - s) / 3
    assert info_nce(S).item() == pytest.approx(hand, abs=1e-6)


def test_temperature_stays_in_its_clamp():
    torch.manual_seed(0)
    model = ContrastiveModel(TINY)
    assert model.logit_scale().item() == pytest.approx(1 / 0.07, rel=1e-6)
    opt = torch.optim.SGD([model.log_scale], lr=1e3)
    for sign in (-1.0, 1.0):  # push 1/tau far past both ends of [1, 100]
        for _ in range(3):
            opt.zero_grad()
            (sign * model.log_scale).backward()
            opt.step()
            model.clamp_temperature_()
            assert 0.0 <= model.log_scale.item() <= math.log(100) + 1e-6
            assert 1.0 - 1e-6 <= model.logit_scale().item() <= 100.0 + 1e-4
    assert model.logit_scale().item() == pytest.approx(1.0)  # pushed down last: at the lower end
    with torch.no_grad():
        model.log_scale.fill_(50.0)  # even unclamped, the scale used is capped
    assert model.logit_scale().item() == pytest.approx(100.0, rel=1e-5)


def test_retrieval_ranks_and_top_k_on_a_constructed_case():
    # 4 queries x 6 candidates; the right candidate ranks 0, 2, 5 and 1 (with a tie, counted against the query)
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.2, 0.3, 0.0, 0.0],
            [0.5, 0.9, 0.6, 0.7, 0.1, 0.2],
            [0.5, 0.6, 0.7, 0.8, 0.9, 0.1],
            [0.3, 0.3, 0.1, 0.0, 0.0, 0.0],
        ]
    )
    ranks = CM.retrieval_ranks(sim, torch.tensor([0, 2, 5, 1]))
    assert ranks.tolist() == [0, 2, 5, 1]
    assert CM.top_k(ranks, (1, 2, 5)) == {"top1": 0.25, "top2": 0.5, "top5": 0.75}
    flat = CM.retrieval_ranks(torch.zeros(3, 3), torch.arange(3))  # a model that tells nothing apart
    assert flat.tolist() == [2, 2, 2]


def test_retrieval_counts_any_image_of_a_repeated_caption(monkeypatch):
    # images embed as e0..e3; captions 1 and 2 are the same string, so images 1 and 2 both match it
    caps = ["cat", "dog", "dog", "sun"]
    z_txt = torch.tensor(
        [
            [0.5, 0.0, 0.0, 0.9],  # cat: image 3 scores above its image 0 -> rank 1
            [0.1, 0.2, 0.8, 0.0],  # dog: image 2 is a "dog" image and scores highest -> rank 0
            [0.1, 0.2, 0.8, 0.0],  # dog again -> rank 0
            [0.9, 0.3, 0.0, 0.1],  # sun: images 0 and 1 score above its image 3 -> rank 2
        ]
    )
    monkeypatch.setattr(CM, "embed_images", lambda model, x: torch.eye(4))
    monkeypatch.setattr(CM, "embed_texts", lambda model, texts: z_txt)
    r = CM.retrieval(None, torch.zeros(4, 3, 2, 2), caps, ks=(1, 2, 3))
    assert r["caption_to_image"] == {"top1": 0.5, "top2": 0.75, "top3": 1.0}
    assert r["chance"] == {"top1": 0.25, "top2": 0.5, "top3": 0.75}


def test_zero_shot_picks_the_nearest_class_prompt(monkeypatch):
    z_img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [0.6, 0.8]])
    monkeypatch.setattr(CM, "embed_images", lambda model, x: z_img)
    monkeypatch.setattr(CM, "class_embeddings", lambda model, names, templates: torch.eye(2))
    z = CM.zero_shot(None, torch.zeros(4, 3, 2, 2), torch.tensor([0, 1, 1, 1]), ["food & drink", "animals"])
    assert z["accuracy"] == 0.75 and z["per_class"] == {"food & drink": 1.0, "animals": 2 / 3}
    assert z["majority"] == 0.75 and z["chance"] == 0.5
    assert CM.class_prompts("food & drink") == ["food & drink", "food", "drink"]
    assert CM.class_prompts("food & drink", ("{}", "a {} emoji")) == [
        "food & drink", "a food & drink emoji", "food", "a food emoji", "drink", "a drink emoji"
    ]  # fmt: skip


def test_caption_votes_weigh_the_k_nearest_captions_by_similarity(monkeypatch):
    # 2 images, 4 gallery captions of categories 0, 1, 1, 2. Image 0: nearest caption is category 0 (0.9), but its
    # 3 nearest hold two of category 1 (0.5 + 0.45 = 0.95 > 0.9): k=1 reads 0, k=3 reads 1.
    sim = torch.tensor([[0.9, 0.5, 0.45, 0.1], [0.0, 0.3, 0.2, 0.8]])
    monkeypatch.setattr(CM, "embed_images", lambda model, x: sim)
    monkeypatch.setattr(CM, "embed_texts", lambda model, texts: torch.eye(4))
    caps, labels, x = ["a", "b", "c", "d"], torch.tensor([0, 1, 1, 2]), torch.zeros(2, 3, 2, 2)
    assert CM.caption_vote_classes(None, x, caps, labels, 3, k=1).tolist() == [0, 2]
    # image 1 at k=3: category 2 holds 0.8, category 1 only 0.3 + 0.2 = 0.5
    assert CM.caption_vote_classes(None, x, caps, labels, 3, k=3).tolist() == [1, 2]
    with pytest.raises(ValueError):
        CM.caption_vote_classes(None, x, caps, labels, 3, k=5)


def test_save_load_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = ContrastiveModel(TINY).eval()
    path = save_contrastive(model, tmp_path / "contrastive.safetensors", card={"preset": "x"})
    back, card = load_contrastive(tmp_path)
    x = torch.rand(3, 3, 8, 8) * 2 - 1
    tokens, mask = torch.randn(3, 5, 384), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]).bool()
    assert torch.equal(model(x, tokens, mask), back(x, tokens, mask)) and card == {"preset": "x"}
    path.write_bytes(b"not weights")
    with pytest.raises(ContrastiveError):
        load_contrastive(path)
    with pytest.raises(ContrastiveError):
        model.encode_image(torch.zeros(2, 1, 8, 8))


def test_random_translate_moves_content_and_repeats_the_border():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 9, 9)
    assert torch.equal(random_translate(x, 0, g), x)
    y = random_translate(x, 2, g)
    assert y.shape == x.shape
    for b in range(16):  # each image is x shifted by some (dy, dx) in [-2, 2]^2: the centre 5x5 is found in x
        hits = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(y[b, :, 2:7, 2:7], x[b, :, 2 + dy : 7 + dy, 2 + dx : 7 + dx])
        ]
        assert hits, b


def test_train_clip_end_to_end(tmp_path):
    out = tmp_path / "clip"
    rc, stdout, err = cli(
        "train-clip", "--preset", "emoji16-clip-tiny", "--images", "256", "--out", out, "--no-progress"
    )
    assert rc == 0, err
    assert {p.name for p in out.iterdir()} == {"config.json", "metrics.jsonl", "contrastive.safetensors", "report.json"}
    report = json.loads((out / "report.json").read_text())
    r = report["heldout"]["retrieval"]
    assert r["n"] == 64 and set(r["caption_to_image"]) == {"top1", "top5"} and r["chance"]["top1"] == 1 / 64
    assert 0 <= report["heldout"]["zero_shot"]["accuracy"] <= 1
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines and lines[-1]["images_seen"] == report["images_seen"] == 256
    assert json.loads(stdout)["heldout_n"] == 64
    model, _ = load_contrastive(out)
    assert model.in_channels == 3 and model.cfg.embed_dim == 32
    # a diffusion run into the text encoder's folder is refused, --no-resume or not, the folder unchanged
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for extra in ([], ["--no-resume"]):
        rc, _, err = cli("train", "--preset", "digits-test", "--set", "train.images=32", "--out", out, *extra)
        assert rc == 2 and "holds a text encoder (train-clip)" in err and len(err.strip().splitlines()) == 1, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_train_clip_templates_are_recorded_and_change_the_training_texts(tmp_path):
    """train.templates: recorded in config.json, each training caption read through one of them, and the training
    moves with them (other losses and weights at the same seed); the held-out report keeps the plain captions."""
    from safetensors.torch import load_file

    base = ["--preset", "emoji16-clip-tiny", "--images", "128", "--no-progress"]
    runs = {}
    for name, extra in (("plain", []), ("templated", ["--set", "train.templates={caption},an emoji of {caption}"])):
        out = tmp_path / name
        rc, stdout, err = cli("train-clip", *base, *extra, "--out", out)
        assert rc == 0, err
        runs[name] = {
            "config": json.loads((out / "config.json").read_text()),
            "loss": [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()],
            "weights": load_file(out / "contrastive.safetensors"),
            "heldout_n": json.loads(stdout)["heldout_n"],
            "log": err,
        }
    plain, templated = runs["plain"], runs["templated"]
    assert plain["config"]["train"]["templates"] == ["{caption}"]
    assert templated["config"]["train"]["templates"] == ["{caption}", "an emoji of {caption}"]
    templated["config"]["train"]["templates"] = ["{caption}"]
    assert templated["config"] == plain["config"]  # the one setting that differs
    assert "x 1 templates" in plain["log"] and "x 2 templates" in templated["log"]
    assert len(plain["loss"]) == len(templated["loss"]) == 1 and plain["loss"] != templated["loss"]
    assert set(plain["weights"]) == set(templated["weights"])
    assert any(not torch.equal(plain["weights"][k], templated["weights"][k]) for k in plain["weights"])
    assert plain["heldout_n"] == templated["heldout_n"] == 64


def test_locked_image_tower_trains_the_heads_only_and_round_trips(tmp_path):
    """model.image_backbone=effnet_lite0 (LiT): the frozen ImageNet features under a trained head. The weights file
    holds the heads and the temperature only (never the backbone); the loss falls; the reloaded model gives the
    held-out report of the run again."""
    from safetensors.torch import load_file

    base = ["--preset", "emoji16-clip-tiny", "--set", "data.limit=96", "--set", "data.holdout=16"]
    lit = ["--set", "model.image_backbone=effnet_lite0", "--set", "model.image_hidden=32", "--set", "train.max_shift=0"]
    out = tmp_path / "lit"
    rc, _, err = cli(
        "train-clip",
        *base,
        *lit,
        "--images",
        "1024",
        "--set",
        "train.warmup_images=128",
        "--set",
        "train.log_every_images=256",
        "--out",
        out,
        "--no-progress",
    )
    assert rc == 0, err
    weights = load_file(out / "contrastive.safetensors")
    assert weights and all(k.startswith(("image.head.", "text.", "log_scale")) for k in weights), sorted(weights)
    losses = [json.loads(s)["loss"] for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0], losses
    model, _ = load_contrastive(out)
    assert model.cfg.image_backbone == "effnet_lite0" and isinstance(model.image, FrozenBackboneTower)
    report = json.loads((out / "report.json").read_text())["heldout"]
    from torchdiffusion.contrastive.config import clip_config_from_json
    from torchdiffusion.contrastive.train import load_caption_data

    _, holdout = load_caption_data(clip_config_from_json((out / "config.json").read_text()))
    again = CM.heldout_report(model, holdout)
    assert again["retrieval"] == report["retrieval"] and again["zero_shot"] == report["zero_shot"]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--set", "data.source=digits"], "no captions"),
        (["--set", "model.embed_dim=0"], "model.embed_dim"),
        (["--set", "train.batch_size=1"], "train.batch_size"),
        (["--set", "train.templates=an emoji"], "train.templates"),
        (["--set", "train.templates={caption} {colour}"], "train.templates"),
        (["--preset", "nope"], "unknown preset"),
        (["--set", "model.image_backbone=resnet50"], "model.image_backbone"),
        (["--set", "model.image_backbone=effnet_lite0"], "train.max_shift must be 0"),
    ],
)
def test_train_clip_bad_input_writes_nothing(tmp_path, args, needle):
    rc, _, err = cli("train-clip", "--preset", "emoji16-clip-tiny", *args, "--out", tmp_path / "a" / "b", cwd=tmp_path)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("torchdiffusion train-clip: error:"), err
    assert needle in lines[0]
    assert not (tmp_path / "a").exists()


def test_train_clip_never_writes_into_a_folder_holding_something(tmp_path):
    """train-clip does not resume: a folder that holds anything (a diffusion run, an earlier contrastive run) is
    refused in one line before any work, its files unchanged."""
    run = write_run(tmp_path / "run", "digits-test", ["model.channels=8", "model.channel_mult=1,2"], (1, 8, 8))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    rc, _, err = cli("train-clip", "--preset", "emoji16-clip-tiny", "--images", "64", "--out", run)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "is not empty; give a new or empty folder" in lines[0], err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_train_clip_starts_over_where_a_killed_run_left_its_files(tmp_path):
    """What train-clip leaves when killed (its config.json and metrics.jsonl, the run lock's file, a half-written
    temporary file; no report.json) is its own: the same command starts over there and says so. The same files with
    another command's config.json are not."""
    args = ("train-clip", "--preset", "emoji16-clip-tiny", "--images", "64", "--no-progress")
    rc, config, _ = cli(*args, "--dry-run")
    assert rc == 0
    out = tmp_path / "clip"
    out.mkdir()
    (out / ".train.lock").write_text("pid 1 on a machine\n")  # killed before it wrote its config
    rc, _, err = cli(*args, "--out", out)
    assert rc == 0 and "starting it again" not in err, err  # the lock file alone: nothing to say
    for p in out.iterdir():
        p.unlink()
    (out / "config.json").write_text(json.dumps({**json.loads(config), "sample": {}}))  # not train-clip's config
    (out / "metrics.jsonl").write_text("")
    rc, _, err = cli(*args, "--out", out)
    assert rc == 2 and "is not empty" in err, err
    (out / "config.json").write_text(config)
    (out / ".train.lock").write_text("pid 1 on a machine\n")
    (out / ".contrastive.safetensors.tmp-1234").write_bytes(b"half a file")
    rc, _, err = cli(*args, "--out", out)
    assert rc == 0, err
    assert "(.contrastive.safetensors.tmp-1234, config.json, metrics.jsonl): starting it again" in err, err
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "contrastive.safetensors",
        "metrics.jsonl",
        "report.json",
    ]


def test_a_prompt_for_a_model_trained_without_text(tmp_path):
    run = write_run(tmp_path / "run", "digits-test", ["model.channels=8", "model.channel_mult=1,2"], (1, 8, 8))
    before = sorted(p.name for p in run.rglob("*"))
    rc, _, err = cli("sample", run, "--prompt", "red apple", "--n", "2", "--steps", "2", "--out", tmp_path / "s.png")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "not text-conditioned" in lines[0], err
    assert sorted(p.name for p in run.rglob("*")) == before and not (tmp_path / "s.png").exists()


@pytest.fixture(scope="module")
def text_run_and_scorer(tmp_path_factory):
    root = tmp_path_factory.mktemp("contrastive-eval")
    settings = ["model.channels=8", "model.channel_mult=1,2", "model.attn_resolutions=", "data.holdout=40"]
    run = write_run(root / "run", "emoji-text", settings, (3, 16, 16))
    torch.manual_seed(0)
    save_contrastive(ContrastiveModel(TINY, image_size=32), root / "clip" / "contrastive.safetensors")
    return run, root / "clip"


def test_evaluate_scores_samples_of_the_heldout_captions(text_run_and_scorer, tmp_path, capsys):
    from torchdiffusion.cli import main

    run, clip = text_run_and_scorer
    argv = ["evaluate", str(run), "--metrics", "contrastive", "--n", "6", "--steps", "2", "--out", str(tmp_path)]
    assert main([*argv, "--contrastive", str(clip)]) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "report.json").read_text())
    c = report["contrastive"]
    prompts = report["sampling"]["prompts"]
    assert len(prompts) == len(set(prompts)) == 40  # the held-out emoji's captions, one prompt each
    assert c["name"] == CM.SCORE_NAME and c["n"] == 6 and c["prompts"] == 40 and c["chance"] == 1 / 40
    assert -100 <= c["score"] <= 100 and c["real_images"]["n"] == 40 and 0 <= c["real_images"]["prompt_top1"] <= 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["contrastive_score"] == round(c["score"], 3)


def test_evaluate_contrastive_needs_a_text_run(tmp_path, capsys):
    from torchdiffusion.cli import main

    run = write_run(tmp_path / "run", "digits-test", ["model.channels=8", "model.channel_mult=1,2"], (1, 8, 8))
    rc = main(
        ["evaluate", str(run), "--metrics", "contrastive", "--n", "2", "--steps", "2", "--out", str(tmp_path / "e")]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "text-conditioned" in err and "sampling" not in err, err
    assert not (tmp_path / "e" / "report.json").exists()


def test_caption_templates_fill_the_caption_and_its_category():
    from types import SimpleNamespace

    data = SimpleNamespace(captions=["red apple", "rocket"], labels=torch.tensor([2, 3]), class_names=list("abcd"))
    texts = templated_captions(data, ("{caption}", "{caption}: {category}", "a {category} emoji: {caption}"))
    assert texts == [
        ["red apple", "rocket"],
        ["red apple: c", "rocket: d"],
        ["a c emoji: red apple", "a d emoji: rocket"],
    ]
    with pytest.raises(ValueError, match="class labels"):
        templated_captions(SimpleNamespace(captions=["x"], labels=None, class_names=None), ("{caption} {category}",))
    short = SimpleNamespace(captions=["a", "b"], labels=torch.tensor([0, 4]), class_names=["x", "y"])
    assert templated_captions(short, ("{caption}",)) == [["a", "b"]]  # labels beyond the names: not read here
    with pytest.raises(ValueError, match="labels run to 4 and it names 2 classes"):  # an IndexError traceback
        templated_captions(short, ("{caption}", "{category}"))


def test_a_batch_larger_than_the_pairs_is_recorded_as_it_ran(tmp_path):
    """InfoNCE needs distinct pairs: a batch of 1000 over 32 training pairs runs at 32, and config.json says 32
    (it said 1000)."""
    import numpy as np

    r = np.random.default_rng(0)
    x = (r.random((40, 8, 8, 3)) * 255).astype("uint8")
    np.savez(tmp_path / "cap.npz", x=x, captions=np.array([f"thing {i}" for i in range(40)]))
    out = tmp_path / "c"
    sets = ["data.source=array", f"data.path={tmp_path / 'cap.npz'}", "data.holdout=8", "data.limit=none"]
    rc, _, err = cli("train-clip", "--preset", "emoji16-clip-tiny", "--images", "64", "--batch-size", "1000",
                     "--out", out, "--no-progress", *[a for s in sets for a in ("--set", s)])  # fmt: skip
    assert rc == 0, err
    assert "train.batch_size=1000 capped at the 32 training pairs" in err
    assert json.loads((out / "config.json").read_text())["train"]["batch_size"] == 32


def test_pooled_text_features_give_the_text_tower_the_same_output():
    """A tower without transformer layers reads only the mean of its tokens: one pooled token per text is exact."""
    texts = [["red apple", "a rocket in the sky at night"], ["green apple", "rocket"]]
    full, full_mask = text_features(texts, pool=False)  # (K, N, L, E)
    one, one_mask = text_features(texts, pool=True)  # (K, N, 1, E)
    assert one.shape[:3] == (2, 2, 1) and one_mask.all()
    torch.manual_seed(0)
    tower = ContrastiveModel(TINY).eval()
    for k in range(2):
        torch.testing.assert_close(tower.encode_text(one[k], one_mask[k]), tower.encode_text(full[k], full_mask[k]))
