"""Model and data cards: compute from metrics.jsonl, the evaluation beside its floor, memorisation with its grid,
class balance against the data, Hugging Face front matter; bad run folders refused in one line (exit 2)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinyruns import td, write_run
from torchdiffusion import cards as C
from torchdiffusion.cli import main


def front_matter(text: str) -> dict:
    import yaml

    m = re.match(r"^---\n(.*?)\n---\n", text, flags=re.S)
    assert m, text[:200]
    return yaml.safe_load(m.group(1))


def test_training_compute_sums_windows_over_their_throughput(tmp_path):
    lines = [
        {"images_seen": 1000, "images_per_s": 100.0},  # 10 s
        {"images_seen": 3000, "images_per_s": 200.0},  # 10 s
        "{half a line from a kill",
        {"images_seen": 500, "images_per_s": 50.0},  # a new attempt from zero: 10 s
    ]
    text = "\n".join(json.dumps(d) if isinstance(d, dict) else d for d in lines)
    (tmp_path / "metrics.jsonl").write_text(text + "\n")
    c = C.training_compute(tmp_path / "metrics.jsonl", world_size=4)
    assert c["hours"] == pytest.approx(30 / 3600) and c["device_hours"] == pytest.approx(4 * 30 / 3600)
    assert c["attempts"] == 2 and c["median_images_per_s"] == 100.0


@pytest.fixture
def evaluated(tmp_path):
    """A tiny digits run with the files 'evaluate' writes: report.json (floors, memorisation, classes) and grids."""
    run = write_run(tmp_path / "run", "digits-test", ["sample.steps=2"])
    info = json.loads((run / "run.json").read_text())
    info.update(images_seen=6400, train_examples=1797, device="cpu", world_size=1)
    (run / "run.json").write_text(json.dumps(info))
    (run / "metrics.jsonl").write_text(json.dumps({"images_seen": 6400, "images_per_s": 32.0}) + "\n")
    (run / "eval").mkdir()
    report = {
        "n": 100,
        "sampling": {"sampler": "euler", "steps": 2, "seed": 10000, "seconds": 1.0},
        "feature_metrics": {
            "clf:digits": {"samples": {"n": 100, "FD-x": 12.5, "KID-x": 0.25}, "heldout": {"FD-x": 3.5, "KID-x": 0.0}}
        },
        "memorisation": {"rule": "d1/d2 < 0.3333", "copy_fraction": 0.02, "nn_distance_median": 4.0}
        | {"holdout_copy_fraction": 0.01, "holdout_nn_distance_median": 4.5},
        "classes": {"histogram": [0.5] + [0.5 / 9] * 9, "confident_fraction": 0.9},
    }
    (run / "eval" / "report.json").write_text(json.dumps(report))
    for name in ("closest_pairs.png", "samples.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(run / "eval" / name)
    return run


def test_model_card_reports_evaluation_memorisation_and_balance(evaluated, tmp_path):
    out = tmp_path / "docs" / "card.md"
    assert main(["card", str(evaluated), "--out", str(out)]) == 0
    text = out.read_text()
    fm = front_matter(text)
    assert fm["license"] == "apache-2.0" and fm["library_name"] == "torchdiffusion" and "unconditional" in fm["tags"]
    assert "| FD-x | 12.5 | 3.5 |" in text and "| KID-x | 0.25 | 0 |" in text  # each metric beside its floor
    assert "**2.00%** (held-out real images: 1.00%)" in text
    assert "(card-closest_pairs.png)" in text and (out.parent / "card-closest_pairs.png").is_file()  # copied
    assert "(card-samples.png)" in text
    assert "**0.06 CPU-hours**" in text  # 6400 images at 32 images/s = 200 s
    shares = C.data_class_shares(C.read_run(evaluated)[1])
    assert sum(shares) == pytest.approx(1) and len(shares) == 10
    assert f"| 0 | {shares[0]:.1%} | 50.0% |" in text and "largest gap: class 0" in text
    assert "CC BY 4.0" in text and "@misc{alpaydin1998optical" in text
    for section in ("Model details", "Intended use", "Training data", "Training compute", "Evaluation"):
        assert f"\n## {section}\n" in text
    assert main(["card", str(evaluated)]) == 0  # inside the run folder: relative links, no copies
    text = (evaluated / "MODEL_CARD.md").read_text()
    assert "(eval/closest_pairs.png)" in text and not list(evaluated.glob("MODEL_CARD-*"))


def test_card_without_report_says_how_to_make_one(tmp_path):
    run = write_run(tmp_path / "run", "digits-test", [])
    text = C.model_card(run)
    assert f"torchdiffusion evaluate {run}" in text and "not recorded in run.json" in text


@pytest.mark.parametrize("classes", [2, 10])
def test_the_cards_sample_command_runs_on_its_run(tmp_path, capsys, classes):
    """The card's 'torchdiffusion sample' line named class 3 for every class model: exit 2 on one of 2 classes."""
    run = write_run(tmp_path / "run", "digits-test", [f"model.num_classes={classes}", "sample.steps=2"])
    line = next(ln for ln in C.model_card(run).splitlines() if ln.startswith("torchdiffusion sample "))
    args = line.split()[2:]
    assert "--class" in args
    assert main(["sample", *args, "--n", "2", "--out", str(tmp_path / "s.png")]) == 0, capsys.readouterr().err


def test_data_cards(tmp_path):
    text = C.data_card("sprites")
    assert "| hero | 358 |" in text and "| side-facing | 357 |" in text and "1,788 examples" in text
    assert "exactly balanced" not in text and "differ by at most one" in text  # 358 against 357
    assert "16, 32 or 64" in C.data_card("emoji")
    fashion = C.data_card("fashion_mnist")
    if "Not available here" not in fashion:  # 60,000 training images under a title of 70,000: said which they are
        assert "60,000 examples (the training split)" in fashion
    emoji = C.data_card("emoji")
    assert "SIL Open Font License 1.1" in emoji and "Unicode character names" in emoji
    assert front_matter(emoji)["tags"] == ["torchdiffusion", "image", "text-to-image"]
    if "Not available here" not in emoji:  # the font is installed: counts per category and captions
        assert "Example captions:" in emoji and "| food & drink |" in emoji
    for user in ("folder", "wav", "csv", "nifti"):  # a user's data: no card of ours (there was one, of emoji's licence)
        with pytest.raises(C.CardError, match="no data card"):
            C.data_card(user)


@pytest.mark.parametrize("source", ["sklearn:iris", "sklearn:diabetes", "ucr:GunPoint", "python_docs", "csv"])
def test_every_data_source_is_described_in_model_cards(source):
    """A model card says where its training data comes from and under which licence, for every source the data
    module reads (an iris run's card said "not described by torchdiffusion"); a UCR set is named in its entry."""
    from torchdiffusion.data import SOURCES

    assert set(SOURCES) <= set(C.DATA_SOURCES) | {s for s in SOURCES if s.startswith("ucr:")}
    src = C.data_source(source)
    assert src is not None and src.licence and src.origin
    if source.startswith("ucr:"):
        assert "GunPoint" in src.title and "GunPoint" in src.origin and "Dau" in src.cite


def test_bad_run_folders_are_refused_in_one_line(tmp_path, capsys):
    run = write_run(tmp_path / "run", "digits-test", [])
    (run / "run.json").unlink()
    for args, says in [((str(run),), "run.json is missing"), ((str(run), "--data", "emoji"), "one of the two")]:
        assert main(["card", *args]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and says in err, err
    (run / "run.json").write_text(json.dumps({"data_shape": [1, 8, 8], "images_seen": "abc"}))
    assert main(["card", str(run)]) == 2  # "invalid literal for int() with base 10: 'abc'"
    err = capsys.readouterr().err
    assert "run.json is damaged: images_seen is 'abc', not a count" in err and len(err.strip().splitlines()) == 1
    (run / "run.json").write_text("{}")
    (run / "config.json").write_text("{ damaged")
    for args, says in [((tmp_path / "nowhere",), "does not exist"), ((run,), "config.json is damaged")]:
        rc, _, err = td("card", *args)  # the real command line: one line, exit 2, no traceback
        assert rc == 2 and len(err.strip().splitlines()) == 1 and says in err and "Traceback" not in err, err
    assert not (run / "MODEL_CARD.md").exists() and not list(Path(run).glob(".*tmp*"))


@pytest.mark.parametrize(
    "settings, tag",
    [([], "unconditional-image-generation"), (["model.num_classes=10"], None), (["model.text_dim=8"], "text-to-image")],
)
def test_the_pipeline_tag_is_huggingfaces_for_what_the_run_does(settings, tag):
    """An unconditional image run is unconditional-image-generation, a text-conditioned one text-to-image; class
    conditioning has no Hugging Face pipeline, so no tag (rather than a wrong one)."""
    from torchdiffusion.config import override
    from torchdiffusion.presets import get_preset

    cfg = override(get_preset("digits-test"), settings)
    assert front_matter(C.front_matter(cfg, {"kind": "image"}, "mit")).get("pipeline_tag") == tag


@pytest.mark.parametrize(
    "preset, objective, network, cites",
    [
        ("toy-2d", "denoising", "mlp, width 256, depth 4", "karras2022elucidating"),
        ("toy-2d", "rectified_flow", "mlp, width 256, depth 4", "liu2023flow"),
        ("digits-test", "consistency", "unet, base width", "song2023consistency"),
        ("digits-test", "denoising", "unet, base width", "ho2020denoising"),
        ("text-chars", None, "transformer", "sahoo2024simple"),  # masked diffusion of symbols
    ],
)
def test_the_card_names_the_networks_own_sizes_and_the_method_it_trained_by(preset, objective, network, cites):
    """An MLP's card showed the U-Net's base width (model.channels, which it never reads), and a rectified-flow
    run cited EDM as its method."""
    from torchdiffusion.config import override, validate
    from torchdiffusion.presets import TRAIN_OBJECTIVES, get_preset

    cfg = validate(override(get_preset(preset), TRAIN_OBJECTIVES[objective] if objective else []))
    assert C.network_size(cfg.model).startswith(network)
    assert cites in C.citation(cfg) and sum(k in C.citation(cfg) for k in C.METHOD_CITES.values()) == 1


def test_card_help_lists_the_data_cards_there_are():
    """``card --data``'s help names the data sets cards.DATA_CARDS describes (written out: the parser is built
    without importing the cards module), so the two cannot drift apart."""
    import argparse

    from torchdiffusion.cards import DATA_CARDS
    from torchdiffusion.commands import card

    p = argparse.ArgumentParser()
    card.add_arguments(p)
    helped = next(a.help for a in p._actions if "--data" in a.option_strings)
    assert helped.endswith(": " + ", ".join(DATA_CARDS))


@pytest.mark.parametrize(
    "preset, sets",
    [
        ("table-iris", ["model.mlp_width=16", "model.mlp_depth=1", "sample.steps=4", "train.images=128"]),
        (
            "text-chars",
            [
                "data.source=text",
                "data.seq_len=12",
                "data.holdout=8",
                "model.mlp_width=32",
                "model.mlp_depth=1",
                "train.images=64",
                "train.batch_size=32",
                "sample.steps=4",
            ],  # fmt: skip
        ),
    ],
)
def test_card_evaluate_on_tables_and_sequences_reports_their_own_metrics(preset, sets, tmp_path, capsys):
    """card --evaluate asked a table or sequence run for image metrics (a traceback, exit 1), and the card's
    Evaluation table had no rows for any run but an image one: now the kind's own evaluation, one row per metric,
    beside the report's baselines; the Memorisation section does not send the reader to a refused command."""
    text = tmp_path / "t.txt"
    text.write_text("abcab cabca bcabc " * 40)
    sets = sets + ([f"data.path={text}"] if preset == "text-chars" else [])
    run = tmp_path / "run"
    assert main(["train", "--preset", preset, "--out", str(run), "--no-progress",
                 *[a for s in sets for a in ("--set", s)]]) == 0  # fmt: skip
    assert main(["card", str(run), "--evaluate", "--n", "8"]) == 0
    card = (run / "MODEL_CARD.md").read_text()
    section = card.split("## Evaluation", 1)[1].split("## Memorisation", 1)[0]
    report = json.loads((run / "eval" / "report.json").read_text())
    if preset == "table-iris":
        assert "| metric | model | independent marginals | training rows fed back |" in section
        assert f"| tstr | {C._num(report['model']['tstr'])} |" in section
    else:
        assert f"| bound bits per symbol | {C._num(report['bound_bits_per_symbol'])} |" in section
    assert "--metrics memorisation" not in card.split("## Memorisation", 1)[1]


def test_the_card_states_the_runs_own_data_facts():
    """The 64-px emoji presets' sequences (skin tones, ZWJ, flags; CLDR names) were described as single code points
    with Unicode names; the held-out count was data.holdout where whole emoji held out more; a 2-D toy run "trained
    on 4,096 images" and "draws 2 examples"."""
    from torchdiffusion.config import override
    from torchdiffusion.presets import get_preset

    emoji = override(get_preset("digits-test"), ["data.source=emoji", "data.emoji_set=sequences", "data.holdout=300"])
    info = {"kind": "image", "data_shape": [3, 8, 8], "train_examples": 3440, "holdout_examples": 319}
    text = C.training_data(emoji, info) + C.limitations(emoji, info, None)
    assert "skin-tone" in text and "CLDR" in text and "single code points" in text and "319 held out" in text
    assert "Unicode character names" not in text
    toy = get_preset("toy-2d")
    info = {"kind": "vector", "data_shape": [2], "images_seen": 4096, "finished": True}
    assert C.trained_on(info) == "4,096 examples" and "2-dimensional points" in C.limitations(toy, info, None)
    assert C.trained_on({**info, "kind": "image"}) == "4,096 images"


def test_a_students_card_says_it_is_one_and_its_sample_command_runs(tmp_path, capsys):
    """A student's card called it a diffusion model trained on its last stage's images, named no teacher, method
    or step count, cited DDPM alone, counted the compute of its last halving only, and told it to sample with
    --guidance 2, though the guidance is baked in (guidance again would read a null class it never learned)."""
    teacher = write_run(tmp_path / "teacher", "digits-test", ["model.num_classes=10", "sample.guidance=2"])
    tiny = ["--images", "64", "--batch-size", "32", "--no-progress"]
    pd = tmp_path / "pd"
    argv = ["distill", str(teacher), "--method", "progressive", "--steps", "2", "--teacher-steps", "8"]
    assert main([*argv, "--out", str(pd), *tiny]) == 0, capsys.readouterr().err
    text = C.model_card(pd)
    assert "A few-step student" in text and "A diffusion model trained" not in text
    assert f"| teacher | `{teacher.resolve()}` |" in text
    assert "| distillation | progressive distillation (Salimans & Ho 2022), 8 -> 4 -> 2 steps |" in text
    assert "classifier-free guidance at w = 2 baked in" in text and "at most 2 steps" in text
    assert "128 images over its 2 training stages (64, 64)" in text
    assert "salimans2022progressive" in text and "ho2020denoising" in text
    both = [C.training_compute(p / "metrics.jsonl")["hours"] for p in (pd / "stages" / "0004-steps", pd)]
    assert f"({sum(both):.2f} h wall clock" in text and "summed over its 2 distillation stages" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("torchdiffusion sample "))
    args = line.split()[2:]
    assert "--class" in args and "--guidance" not in args
    assert main(["sample", *args, "--n", "2", "--out", str(tmp_path / "s.png")]) == 0, capsys.readouterr().err
    # an unconditional teacher's consistency student, trained on labelled digits: no class to name
    cd = tmp_path / "cd"
    plain = write_run(tmp_path / "plain", "digits-test", [])
    assert main(["distill", str(plain), "--method", "consistency", "--steps", "2", "--out", str(cd), *tiny]) == 0
    text = C.model_card(cd)
    assert "consistency distillation (Song et al. 2023), 2 steps" in text and "| guidance |" not in text
    assert text.count("song2023consistency") == 1
    line = next(ln for ln in text.splitlines() if ln.startswith("torchdiffusion sample "))
    assert main(["sample", *line.split()[2:], "--n", "2", "--out", str(tmp_path / "c.png")]) == 0


def test_a_sequence_runs_card_describes_its_discrete_diffusion(tmp_path, capsys):
    """A masked-diffusion text run's card described a Gaussian process ("eps-prediction, continuous, sigma in
    [0.002, 80]") and cited DDPM; uniform (D3PM) corruption cites Austin et al."""
    from tinyruns import train_text_run
    from torchdiffusion.config import override
    from torchdiffusion.presets import get_preset

    run = train_text_run(tmp_path / "text", images=32)
    assert main(["card", str(run)]) == 0
    card = (run / "MODEL_CARD.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith("| diffusion |"))
    assert "categorical over symbols, absorbing-state mask" in row and "sigma" not in row and "eps" not in row
    assert "sahoo2024simple" in card and "ho2020denoising" not in card
    uniform = override(get_preset("text-chars"), ["diffusion.discrete=uniform"])
    assert "austin2021structured" in C.citation(uniform) and "sahoo2024simple" not in C.citation(uniform)


def test_a_picture_copied_beside_a_card_keeps_its_manifest(tmp_path):
    """A card outside its run folder shows a copy of the samples picture: the copy had no manifest beside it (every
    artefact has one), and the picture's own says how those bytes were made - reproduce vouches for the copy."""
    run = write_run(tmp_path / "run", "digits-test", ["sample.steps=2"])
    assert main(["sample", str(run), "--n", "2"]) == 0
    out = tmp_path / "docs" / "card.md"
    assert main(["card", str(run), "--out", str(out)]) == 0
    (copy,) = out.parent.glob("card-*.png")
    assert f"({copy.name})" in out.read_text()
    rc, said, err = td("reproduce", copy.with_name(copy.name + ".manifest.json"))
    assert rc == 0 and "bit-identical" in said + err, err
