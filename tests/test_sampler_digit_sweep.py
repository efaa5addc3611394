"""scripts/sampler_digit_sweep.py: each candidate's extra ``key=value`` settings reach the samples it scores, and a
candidate the sampler cannot take is refused before anything is sampled or written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tinyruns import write_run

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import sampler_digit_sweep  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

MNIST = ["data.source=mnist5k", "data.limit=48", "data.holdout=8", "model.channels=8"]


def test_candidate_syntax():
    assert sampler_digit_sweep.parse_candidates("ddpm:uniform_t:3, dpmpp_2m_sde:karras:4:settings.eta=0.5") == [
        ("ddpm", "uniform_t", 3, ()),
        ("dpmpp_2m_sde", "karras", 4, ("settings.eta=0.5",)),
    ]
    name = sampler_digit_sweep.candidate_name("dpmpp_2m_sde", "karras", 4, ("settings.eta=0.5", "autoguidance=1.3"))
    assert name == "dpmpp_2m_sde-karras-4-eta=0.5-autoguidance=1.3"
    for bad in ("ddpm:uniform_t", "ddpm:uniform_t:three", "ddpm:uniform_t:3:eta"):
        with pytest.raises(ValueError, match="candidate"):
            sampler_digit_sweep.parse_candidates(bad)


def test_settings_reach_the_samples_and_bad_ones_are_refused(tmp_path, capsys):
    run = write_run(tmp_path / "run", "digits-test", MNIST, (1, 28, 28))
    out = tmp_path / "sweep"
    bad_args = [
        ["--candidates", "dpmpp_2m_sde:uniform_t:3:settings.order=2"],
        ["--candidates", "dpmpp_2m_sde:uniform_t:3:sample.nope=1"],
        ["--candidates", "ddpm:uniform_t:3", "--seed", "-1"],
    ]
    for bad in bad_args:
        assert sampler_digit_sweep.main([str(run), "--out", str(out), *bad, "--n", "8"]) == 2
        assert "error:" in capsys.readouterr().err and not out.exists()  # nothing sampled, nothing written
    cands = "dpmpp_2m_sde:uniform_t:3,dpmpp_2m_sde:uniform_t:3:settings.eta=0,dpmpp_2m_sde:uniform_t:3"
    assert sampler_digit_sweep.main([str(run), "--out", str(out), "--candidates", cands, "--n", "8"]) == 0
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [r["settings"] for r in rows] == [[], ["settings.eta=0"], []]
    assert all(len(r["digit_counts"]) == 10 and sum(r["digit_counts"]) == 8 for r in rows)
    assert rows[0]["FD-MNIST5kclf"] == rows[2]["FD-MNIST5kclf"]  # same candidate, same seeds: the same samples
    assert rows[1]["FD-MNIST5kclf"] != rows[0]["FD-MNIST5kclf"]  # eta 0 (the ODE) draws other samples
    assert (out / "dpmpp_2m_sde-uniform_t-3-eta=0").is_dir()
    assert "| settings.eta=0 |" in (out / "sweep.md").read_text()


def test_seed_draws_other_samples(tmp_path):
    run = write_run(tmp_path / "run", "digits-test", MNIST, (1, 28, 28))
    fd = {}
    for seed in (0, 4, 0):
        out = tmp_path / f"sweep-{seed}"
        args = [str(run), "--out", str(out), "--candidates", "ddpm:uniform_t:3", "--n", "8", "--seed", str(seed)]
        assert sampler_digit_sweep.main(args) == 0
        record = json.loads((out / "sweep.json").read_text())
        assert record["seed"] == seed and f"seeds {seed}-{seed + 7}" in (out / "sweep.md").read_text()
        fd.setdefault(seed, []).append(record["rows"][0]["FD-MNIST5kclf"])
    assert fd[0][0] == fd[0][1] != fd[4][0]  # seeds 0-7 again give the same samples; seeds 4-11 do not


def test_precision_bf16_samples_in_bf16_and_is_not_resumed_into_fp32_rows(tmp_path):
    run = write_run(tmp_path / "run", "digits-test", MNIST, (1, 28, 28))
    out = tmp_path / "sweep"
    base = [str(run), "--out", str(out), "--candidates", "ddpm:uniform_t:3", "--n", "8"]
    assert sampler_digit_sweep.main(base) == 0
    fp32 = json.loads((out / "sweep.json").read_text())
    assert sampler_digit_sweep.main([*base, "--precision", "bf16", "--resume"]) == 0  # fp32 rows are not kept
    bf16 = json.loads((out / "sweep.json").read_text())
    assert fp32["precision"] == "fp32" and bf16["precision"] == "bf16"
    assert bf16["rows"][0]["FD-MNIST5kclf"] != fp32["rows"][0]["FD-MNIST5kclf"]  # sampled again, in bf16
    assert "sampled in bf16" in (out / "sweep.md").read_text()
