"""torchdiffusion distill and train --objective on tiny runs: students are ordinary run folders that refuse more
steps than they were distilled for; teachers a method cannot use are refused in one line, nothing written."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tinyruns import cli, train_text_run, write_run
from torchdiffusion.cli import main
from torchdiffusion.config import ConfigError
from torchdiffusion.generate import generate, load_run

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--images", "64", "--batch-size", "32", "--no-progress"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """An 8x8 digits model (eps, discrete cosine process, T = 100), random weights."""
    return write_run(tmp_path_factory.mktemp("runs") / "teacher", "digits-test", ["sample.steps=3"])


def _one_line_error(rc, err, *words):
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert all(w in lines[0] for w in words), lines[0]


def test_progressive_student_is_a_run_that_refuses_more_steps(teacher, tmp_path):
    out = tmp_path / "pd2"
    assert (
        main(
            [
                "distill",
                str(teacher),
                "--method",
                "progressive",
                "--steps",
                "2",
                "--teacher-steps",
                "4",
                "--out",
                str(out),
                *TINY,
            ]
        )
        == 0
    )
    student = load_run(out)
    o, s = student.config.objective, student.config.sample
    assert (o.name, o.max_steps, o.teacher_steps, s.sampler, s.steps, s.grid) == (
        "progressive",
        2,
        4,
        "ddim",
        2,
        "tuned",
    )
    grid = json.loads((out / "grids" / "ddim-nfe2.json").read_text())["sigmas"]
    assert len(grid) == 3 and grid[-1] == 0 and not (out / "stages").exists()  # one halving: 4 -> 2
    x = generate(student.model, range(3), s, student.data_shape, grid_dir=out / "grids")
    assert x.shape == (3, 1, 8, 8) and bool(torch.isfinite(x).all())
    rc, _, err = cli("sample", out, "--steps", "4", "--n", "2")
    _one_line_error(rc, err, "distilled for at most 2")


def test_progressive_on_another_teacher_grid(teacher, tmp_path):
    """--grid gives the first halving another teacher grid, built as sampling builds it: the student's grid is every
    other level of it and the config records it; later halvings take the previous student's grid; other methods
    and unknown grids are refused in one line, nothing written."""
    from torchdiffusion.generate import clamps_x0, make_grid_sigmas
    from torchdiffusion.shortcuts.progressive import halve_grid

    out = tmp_path / "pd-ut"
    args = ["--method", "progressive", "--steps", "2", "--teacher-steps", "8", "--out", str(out), *TINY]
    assert main(["distill", str(teacher), *args, "--grid", "uniform_t"]) == 0
    t = load_run(teacher)
    clip = clamps_x0(t.config.sample, t.data_shape, t.codec)
    own = make_grid_sigmas(t.model, replace(t.config.sample, sampler="ddim", steps=8), clamped=clip)
    other = make_grid_sigmas(t.model, replace(t.config.sample, sampler="ddim", steps=8, grid="uniform_t"), clamped=clip)
    assert t.config.sample.grid != "uniform_t" and not torch.allclose(own, other)
    first = out / "stages" / "0004-steps"
    got = torch.tensor(json.loads((first / "grids" / "ddim-nfe4.json").read_text())["sigmas"], dtype=other.dtype)
    assert torch.allclose(got, halve_grid(other), rtol=1e-6)
    assert load_run(first).config.objective.teacher_grid == "uniform_t"
    # the second halving learned on the 4-step student's own grid; the record names the first teacher's
    assert load_run(out).config.objective.teacher_grid == "uniform_t"
    name = f"{load_run(teacher).config.preset}-progressive"  # the method named once, whatever the halvings
    assert load_run(first).config.preset == load_run(out).config.preset == name
    last = torch.tensor(json.loads((out / "grids" / "ddim-nfe2.json").read_text())["sigmas"], dtype=other.dtype)
    assert torch.allclose(last, halve_grid(halve_grid(other)), rtol=1e-6)
    for bad, words in (
        (["--method", "reflow", "--grid", "karras"], "progressive"),
        (["--grid", "zigzag"], "grid"),
        (["--teacher-steps", "8", "--grid", "tuned"], "no grid tuned for ddim at 8 steps"),  # left stages/ behind
    ):
        args = ["--method", "progressive", "--steps", "2", "--out", tmp_path / "bad", *TINY, *bad]
        rc, _, err = cli("distill", teacher, *args)
        _one_line_error(rc, err, words)
        assert not (tmp_path / "bad").exists()


def test_students_take_the_teachers_threads_unless_told(tmp_path):
    """A student is distilled on its teacher's train.threads unless --threads says otherwise."""
    teacher = write_run(tmp_path / "teacher", "digits-test", ["sample.steps=3", "train.threads=2"])
    threads = {}
    for flag in ([], ["--threads", "1"]):
        out = tmp_path / f"reflow{len(flag)}"
        args = ["--method", "reflow", "--steps", "1", "--pairs", "16", "--out", out, *TINY, *flag]
        rc, _, err = cli("distill", teacher, *args)
        assert rc == 0, err
        threads[tuple(flag)] = load_run(out).config.train.threads
    assert threads == {(): 2, ("--threads", "1"): 1}


def test_consistency_student_keeps_the_boundary_and_cannot_be_distilled_again(teacher, tmp_path):
    out = tmp_path / "cd"
    assert (
        main(
            [
                "distill",
                str(teacher),
                "--method",
                "consistency",
                "--steps",
                "2",
                "--levels",
                "6",
                "--out",
                str(out),
                *TINY,
            ]
        )
        == 0
    )
    student = load_run(out)
    assert student.config.diffusion.boundary == "consistency" and student.config.sample.sampler == "consistency"
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(student.model(x, torch.full((4,), student.model.sigma_min)), x)  # f(x, sigma_min) = x
    rc, _, err = cli("distill", out, "--method", "reflow", "--steps", "1", "--out", tmp_path / "again", *TINY)
    _one_line_error(rc, err, "consistency model")
    assert not (tmp_path / "again").exists()


def test_bad_teachers_are_refused_in_one_line(teacher, tmp_path):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for f in ("config.json", "run.json"):
        (damaged / f).write_bytes((teacher / f).read_bytes())
    (damaged / "ema.safetensors").write_bytes(b"\x00not a safetensors file")
    rc, _, err = cli("distill", damaged, "--method", "progressive", "--steps", "2", "--out", tmp_path / "s1", *TINY)
    _one_line_error(rc, err, "damaged")
    rc, _, err = cli("distill", teacher, "--method", "progressive", "--steps", "1", "--out", tmp_path / "s2", *TINY)
    _one_line_error(rc, err, "predicts eps")
    assert not (tmp_path / "s1").exists() and not (tmp_path / "s2").exists()


def test_a_discrete_token_teacher_is_refused_by_every_method_in_one_line(tmp_path):
    run = train_text_run(tmp_path / "text")
    for method in ("progressive", "consistency", "dmd", "reflow"):
        rc, _, err = cli("distill", run, "--method", method, "--steps", "2", "--out", tmp_path / method, *TINY)
        _one_line_error(rc, err, "discrete tokens", method)
        assert not (tmp_path / method).exists()


def test_a_text_conditioned_teacher_is_refused_in_one_line(tmp_path):
    """Distillation samples its teacher without prompts: a caption-conditioned teacher (with or without retrieved
    neighbours) would be distilled as an unconditional one, so it is refused before anything is written."""
    for name, extra in (("text", []), ("retrieval", ["model.text_retrieval=2"])):
        run = write_run(
            tmp_path / name, "emoji-text", ["model.channels=8", "model.head_channels=8", *extra], (3, 16, 16)
        )
        if extra:  # the run's retrieval database, as training writes it
            from torchdiffusion.retrieval import Database, save_database

            save_database(Database(torch.randn(4, 384).half(), torch.randn(4, 3 * 16 * 16).half(), 2), run)
        rc, _, err = cli("distill", run, "--method", "dmd", "--steps", "2", "--out", tmp_path / f"{name}-s", *TINY)
        _one_line_error(rc, err, "text-conditioned")
        assert not (tmp_path / f"{name}-s").exists()


def test_train_objectives_resolve_to_their_settings(capsys):
    assert main(["train", "--preset", "toy-2d", "--objective", "rectified_flow", "--dry-run"]) == 0
    d = json.loads(capsys.readouterr().out)["diffusion"]
    assert (d["parameterization"], d["sigma_sampling"], d["weighting"]) == ("flow", "rf_uniform", "uniform")
    assert main(["train", "--preset", "digits-test", "--objective", "consistency", "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["objective"]["name"] == "consistency_training" and cfg["diffusion"]["boundary"] == "consistency"
    with pytest.raises(ConfigError, match="needs objective.teacher"):
        from torchdiffusion.config import override, validate
        from torchdiffusion.presets import get_preset

        validate(override(get_preset("digits-test"), ["objective.name=reflow"]))


def test_a_student_is_sampled_within_the_network_evaluations_it_was_distilled_for(teacher, tmp_path):
    """The limit was checked against sample.steps alone: an adaptive solver (56 evaluations) or Heun (3 on 2 steps)
    ran a 2-step student, and explain ablation drew its DDPM rows in 100 steps. Now those samplers are refused in
    one line, and the ablation's DDPM rows walk the student's own grid."""
    from torchdiffusion.provenance import read_manifest

    out = tmp_path / "cd"
    rc, _, err = cli("distill", teacher, "--method", "consistency", "--steps", "2", "--out", out, *TINY)
    assert rc == 0, err
    for args, words in [
        (["--sampler", "adaptive", "--grid", "karras"], "sample.sampler=adaptive chooses its own steps"),
        (["--sampler", "heun", "--grid", "karras"], "sample.sampler=heun spends 3 on sample.steps=2"),
    ]:
        rc, _, err = cli("sample", out, "--n", "2", *args, "--out", tmp_path / "s.png")
        _one_line_error(rc, err, "distilled for at most 2 sampling steps", words)
        assert not (tmp_path / "s.png").exists()
    rc, _, err = cli("sample", out, "--n", "2", "--sampler", "heun", "--grid", "karras", "--steps", "1",
                     "--out", tmp_path / "h.png")  # fmt: skip
    assert rc == 0, err  # Heun on one step: one evaluation
    rc, _, err = cli("explain", "ablation", out, "--n", "4", "--out", tmp_path / "a.png")
    assert rc == 0, err
    drawn = read_manifest(tmp_path / "a.png.manifest.json")["sampling"]
    grid = json.loads((out / "grids" / "consistency-nfe2.json").read_text())["sigmas"]
    assert [(d["sampler"], d["steps"]) for d in drawn] == [("ddpm", 2), ("consistency", 2)]
    assert all(d["grid_used"]["sigmas"] == grid for d in drawn)
    rc, _, err = cli("explain", "ablation", out, "--ddpm-steps", "4", "--out", tmp_path / "b.png")
    _one_line_error(rc, err, "--ddpm-steps changes nothing", "its own grid")
    assert not (tmp_path / "b.png").exists()


def test_a_finished_student_or_run_keeps_the_config_it_ran_with(teacher, tmp_path):
    """The finished student's command again with --eval-every added resumed, trained nothing and evaluated nothing,
    yet rewrote config.json with eval_every_images=64: config.json stays as it ran, and a note says the setting
    changes nothing; the same for a finished train run given another log cadence."""
    out = tmp_path / "cd"
    args = ["distill", teacher, "--method", "consistency", "--steps", "2", "--out", out, *TINY]
    rc, _, err = cli(*args)
    assert rc == 0, err
    before = (out / "config.json").read_bytes()
    rc, said, err = cli(*args, "--eval-every", "64")
    assert rc == 0, err
    assert "is finished (64 images seen): train.eval_every_images=64 changes nothing" in said + err
    assert (out / "config.json").read_bytes() == before
    assert not [line for line in (out / "metrics.jsonl").read_text().splitlines() if '"eval' in line]
    run = tmp_path / "run"
    base = ["train", "--preset", "digits-test", "--set", "train.images=64", "--set", "train.batch_size=32",
            "--out", run, "--no-progress"]  # fmt: skip
    rc, _, err = cli(*base)
    assert rc == 0, err
    before = (run / "config.json").read_bytes()
    rc, said, err = cli(*base, "--set", "train.log_every_images=32")
    assert rc == 0 and "train.log_every_images=32 changes nothing" in said + err, err
    assert (run / "config.json").read_bytes() == before


def test_a_reflow_student_is_distilled_progressively_on_its_own_euler_grid(teacher, tmp_path):
    """Progressive distillation of a reflow student was refused for want of a DDIM grid ("it has none for ddim;
    grids for euler"): the teacher's DDIM steps (eta = 0) are the Euler steps its grid was made for, so the halved
    student walks every other level of that grid."""
    from torchdiffusion.samplers.ddpm import sample_ddim
    from torchdiffusion.samplers.euler import sample_euler

    reflow = tmp_path / "reflow"
    rc, _, err = cli("distill", teacher, "--method", "reflow", "--steps", "4", "--pairs", "16", "--out", reflow, *TINY)
    assert rc == 0, err
    euler = torch.tensor(json.loads((reflow / "grids" / "euler-nfe4.json").read_text())["sigmas"], dtype=torch.float64)
    run = load_run(reflow)
    D, x = run.model, torch.randn(3, 1, 8, 8, dtype=torch.float64) * float(euler[0])
    with torch.no_grad():
        assert torch.allclose(sample_ddim(D, x, euler), sample_euler(D, x, euler), atol=1e-6)  # the same steps
    out = tmp_path / "pd"
    rc, _, err = cli("distill", reflow, "--method", "progressive", "--steps", "2", "--teacher-steps", "4", "--out",
                     out, *TINY)  # fmt: skip
    assert rc == 0, err
    student = torch.tensor(json.loads((out / "grids" / "ddim-nfe2.json").read_text())["sigmas"], dtype=torch.float64)
    assert torch.allclose(student, euler[::2])
    rc, _, err = cli("sample", out, "--n", "2", "--out", tmp_path / "s.png")
    assert rc == 0, err


@pytest.mark.parametrize("grid", ["karras", "uniform_t"])
def test_a_teacher_grid_under_another_objective_changes_nothing(tmp_path, grid):
    """objective.teacher_grid on a denoising run was refused as if its value were not a grid ("must be one of
    (..., 'karras', ...), got 'karras'"): it is refused as the setting that changes nothing, as teacher_steps is."""
    rc, _, err = cli("train", "--preset", "digits-test", "--set", "train.images=64", "--set",
                     f"objective.teacher_grid={grid}", "--out", tmp_path / "y")  # fmt: skip
    _one_line_error(rc, err, f"objective.teacher_grid={grid} changes nothing", "objective.name=denoising")
    assert "must be one of" not in err and not (tmp_path / "y").exists()
    rc, _, err = cli("train", "--preset", "digits-test", "--set", "objective.teacher_grid=bogus", "--dry-run")
    _one_line_error(rc, err, "objective.teacher_grid must be one of", "got 'bogus'")


def test_consistency_training_from_data_trains(tmp_path):
    """train --objective consistency (iCT) runs through the ordinary loop and writes a one-step model."""
    out = tmp_path / "ct"
    args = ["--set", "train.images=64", "--set", "train.batch_size=32", "--set", "sample.n=2", "--no-progress"]
    assert main(["train", "--preset", "digits-test", "--objective", "consistency", "--out", str(out), *args]) == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in lines if "loss" in r)
    assert load_run(out).config.sample.steps == 1


def test_class_conditional_student_learns_the_guided_teacher_at_a_fixed_scale(tmp_path):
    """CFG is baked in: the student records the teacher's scale, trains without conditioning dropout and samples
    at guidance 1 with its class labels (the CFG wrapper still applies to it)."""
    teacher = write_run(tmp_path / "class", "digits-test", ["model.num_classes=10", "sample.guidance=3.0"])
    out = tmp_path / "reflow"
    args = ["--steps", "2", "--pairs", "16", "--out", str(out), *TINY]
    assert main(["distill", str(teacher), "--method", "reflow", *args]) == 0
    student = load_run(out)
    cfg = student.config
    assert (cfg.objective.guidance, cfg.sample.guidance, cfg.train.cond_drop_prob) == (3.0, 1.0, 0.0)
    x = generate(
        student.model, range(4), cfg.sample, student.data_shape, cond={"class": torch.arange(4)}, grid_dir=out / "grids"
    )
    assert x.shape == (4, 1, 8, 8) and bool(torch.isfinite(x).all())


def test_evaluate_refuses_more_steps_than_a_student_was_distilled_for(teacher, tmp_path):
    out = tmp_path / "reflow"
    assert (
        main(["distill", str(teacher), "--method", "reflow", "--steps", "1", "--pairs", "16", "--out", str(out), *TINY])
        == 0
    )
    rc, _, err = cli("evaluate", out, "--metrics", "fd", "--features", "raw", "--n", "4", "--steps", "3")
    _one_line_error(rc, err, "distilled for at most 1")


def test_dmd_student_samples_on_the_prefixes_of_its_levels_and_resumes_exactly(teacher, tmp_path):
    """distill --method dmd: a run folder sampled by multistep consistency sampling on the first k of its K levels
    (the top of a Karras grid, a discrete teacher's capped at 80); the fake denoiser trained alongside is part of
    the checkpoint, so a distillation stopped half-way and resumed ends on the same weights bit for bit."""
    from torchdiffusion.data import load_data
    from torchdiffusion.shortcuts.dmd import teacher_levels
    from torchdiffusion.training import train

    out = tmp_path / "dmd"
    rc, _, err = cli("distill", teacher, "--method", "dmd", "--steps", "3", "--out", out, "--fake-updates", "2", *TINY)
    assert rc == 0, err
    student = load_run(out)
    o, s = student.config.objective, student.config.sample
    assert (o.name, o.max_steps, o.dmd_fake_updates) == ("distribution_matching", 3, 2)
    assert (s.sampler, s.steps, s.grid) == ("consistency", 3, "tuned")
    levels = teacher_levels(load_run(teacher).model, 3)
    assert float(levels[0]) == 80.0
    for k in (1, 2, 3):
        doc = json.loads((out / "grids" / f"consistency-nfe{k}.json").read_text())
        grid = torch.tensor(doc["sigmas"], dtype=torch.float64)
        torch.testing.assert_close(grid, torch.cat([levels[:k], torch.zeros(1, dtype=levels.dtype)]))
    x = generate(student.model, range(4), replace(s, steps=2), student.data_shape, grid_dir=out / "grids")
    assert x.shape == (4, 1, 8, 8) and bool(torch.isfinite(x).all())
    rc, _, err = cli("sample", out, "--steps", "4", "--n", "2", "--out", tmp_path / "more")
    _one_line_error(rc, err, "distilled for at most 3")

    cfg = student.config
    data = load_data(load_run(teacher).config.data, split="train", seed=0)
    init = {k: v.clone() for k, v in load_run(teacher).model.state_dict().items()}
    half = tmp_path / "half"
    short = replace(cfg, train=replace(cfg.train, images=32))
    train(short, half, data=data, progress=False, init_weights=init)
    train(cfg, half, data=data, progress=False, init_weights=init)
    assert (half / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


DMD_WORKER = str(Path(__file__).with_name("dmd_worker.py"))
DMD_ARGS = ["--steps", "2", "--images", "96", "--batch-size", "16", "--fake-lr", "1e-3"]


def _dmd(cmd: list[str]) -> None:
    r = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope="module")
def dmd_runs(teacher, tmp_path_factory):
    """One DMD student distilled by one process and one by two torchrun processes, alike otherwise."""
    root = tmp_path_factory.mktemp("dmd")
    _dmd([sys.executable, DMD_WORKER, str(teacher), str(root / "dmd1"), *DMD_ARGS])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", DMD_WORKER]
    _dmd([*torchrun, str(teacher), str(root / "dmd2"), *DMD_ARGS])
    return root / "dmd1", root / "dmd2"


@pytest.mark.slow
def test_dmd_under_torchrun_keeps_the_fake_denoisers_of_all_ranks_identical(teacher, dmd_runs):
    """Two torchrun processes distil one student: the ranks see different examples, and each rank's D_fake takes
    the gradient averaged over the ranks, so both copies end bit for bit equal, away from the teacher's weights."""
    out = dmd_runs[1]
    f0, f1 = (load_file(out / "debug" / f"fake-{rank}.safetensors") for rank in (0, 1))
    assert f0.keys() == f1.keys() and all(torch.equal(f0[k], f1[k]) for k in f0)
    start = load_run(teacher).model.state_dict()
    assert max(float((f0[k] - start[k]).abs().max()) for k in f0) > 1e-4  # D_fake was trained
    student = load_run(out)
    x = generate(student.model, range(4), student.config.sample, student.data_shape, grid_dir=out / "grids")
    assert x.shape == (4, 1, 8, 8) and bool(torch.isfinite(x).all())


@pytest.mark.slow
def test_dmd_on_two_processes_distils_the_same_student_as_on_one(teacher, dmd_runs):
    """As for train: every draw of an example (its noise, the renoising of earlier stages, the matching level and
    noise, D_fake's stages, levels and noise) depends on its position in the global batch, never on the rank, so
    the student and D_fake of two processes are those of one, up to float summation order."""
    one, two = dmd_runs
    m1, m2 = ([json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()] for run in dmd_runs)
    assert [r["images_seen"] for r in m1] == [r["images_seen"] for r in m2]
    assert m1[0]["loss"] == pytest.approx(m2[0]["loss"], rel=1e-4)
    start = load_run(teacher).model.state_dict()
    for name in ("model.safetensors", "debug/fake-0.safetensors"):
        a, b = load_file(one / name), load_file(two / name)
        moved = sum(((a[k] - start[k]).double() ** 2).sum() for k in a).sqrt()
        diff = sum(((a[k] - b[k]).double() ** 2).sum() for k in a).sqrt()
        assert diff < 1e-2 * moved, (name, float(diff), float(moved))


@pytest.mark.slow
def test_progressive_distillation_under_torchrun_trains_every_halving(teacher, tmp_path):
    """Several training stages in one torchrun job: 8 -> 4 -> 2 steps, each stage a finished run (the process group
    lives across the stages; one created and destroyed per stage left the workers hanging at the second)."""
    out = tmp_path / "pd"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "torchdiffusion"]
    args = ["distill", str(teacher), "--method", "progressive", "--steps", "2", "--out", str(out), *TINY[:4]]
    r = subprocess.run(
        [*cmd, *args, "--no-progress"],
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for stage in (out / "stages" / "0004-steps", out):
        assert json.loads((stage / "run.json").read_text())["finished"]
    assert load_run(out).config.sample.steps == 2


def test_dmd_fake_denoiser_options_change_the_student(teacher, tmp_path):
    """--fake-updates and --fake-lr reach the fake denoiser: recorded in config.json, and the student's weights differ
    (two generator steps: the second sees the fake denoiser the first step's updates made)."""
    weights, objectives = {}, {}
    for name, flags in {"base": [], "updates": ["--fake-updates", "1"], "lr": ["--fake-lr", "1e-3"]}.items():
        out = tmp_path / name
        rc, _, err = cli("distill", teacher, "--method", "dmd", "--steps", "2", "--out", out, *TINY, *flags)
        assert rc == 0, err
        weights[name] = (out / "model.safetensors").read_bytes()
        objectives[name] = load_run(out).config.objective
    assert (objectives["base"].dmd_fake_updates, objectives["base"].dmd_fake_lr) == (3, 2e-4)
    assert objectives["updates"].dmd_fake_updates == 1 and objectives["lr"].dmd_fake_lr == 1e-3
    assert weights["updates"] != weights["base"] and weights["lr"] != weights["base"]


def test_autoguided_teacher_is_its_guide_steered_and_needs_one(teacher, tmp_path):
    """--autoguidance w distils D_guide + w (D - D_guide) (both clamped), as sampling steers the teacher; a teacher
    that keeps no guide model is refused in one line, nothing written."""
    from torchdiffusion.generate import guide_of
    from torchdiffusion.shortcuts.objectives import Teacher

    rc, _, err = cli("distill", teacher, "--method", "dmd", "--autoguidance", "1.5", "--out", tmp_path / "s", *TINY)
    _one_line_error(rc, err, "keeps no guide model")
    assert not (tmp_path / "s").exists()
    with pytest.raises(ConfigError, match="keeps no guide model") as refused:  # the API: advises no value
        Teacher(teacher, 1.0, "cpu", autoguidance=1.5)
    assert "use 1" not in str(refused.value) and "without autoguidance" in str(refused.value)

    guided = tmp_path / "guided"
    shutil.copytree(teacher, guided)
    torch.manual_seed(1)
    guide = {k: (v + 0.05 * torch.randn_like(v)).contiguous() for k, v in load_run(teacher).model.state_dict().items()}
    save_file(guide, str(guided / "guide.safetensors"))
    info = json.loads((guided / "run.json").read_text())
    files = ("ema.safetensors", "model.safetensors", "guide.safetensors")
    info["weights_sha256"] = {f: hashlib.sha256((guided / f).read_bytes()).hexdigest() for f in files}
    (guided / "run.json").write_text(json.dumps(info))

    t = Teacher(guided, 1.0, "cpu", autoguidance=2.0)
    x, sigma = 3 * torch.randn(4, 1, 8, 8), torch.full((4,), 2.0)
    D, D_0 = t.run.model(x, sigma).clamp(-1, 1), guide_of(t.run.model)(x, sigma).clamp(-1, 1)
    assert not torch.allclose(D, D_0)
    torch.testing.assert_close(t.denoiser(None)(x, sigma), (D_0 + 2.0 * (D - D_0)).clamp(-1, 1))

    out = tmp_path / "dmd-ag"
    rc, _, err = cli("distill", guided, "--method", "dmd", "--steps", "2", "--autoguidance", "1.5", "--out", out, *TINY)
    assert rc == 0, err
    assert load_run(out).config.objective.autoguidance == 1.5
    plain = tmp_path / "dmd-plain"
    rc, _, err = cli("distill", guided, "--method", "dmd", "--steps", "2", "--out", plain, *TINY)
    assert rc == 0, err
    assert (plain / "model.safetensors").read_bytes() != (out / "model.safetensors").read_bytes()
    # progressive: the first halving learns the steered teacher, the later ones its guide-less students
    pd = tmp_path / "pd-ag"
    args = ["--method", "progressive", "--steps", "2", "--teacher-steps", "8", "--autoguidance", "1.5", "--out", pd]
    rc, _, err = cli("distill", guided, *args, *TINY)
    assert rc == 0, err
    first, last = load_run(pd / "stages" / "0004-steps").config.objective, load_run(pd).config.objective
    assert (first.autoguidance, first.stage_teacher) == (1.5, "")
    # the last halving learned from the guide-less first student; its record names what the distillation started from
    assert (last.autoguidance, last.teacher, last.stage_teacher) == (
        1.5,
        str(guided.resolve()),
        str((pd / "stages" / "0004-steps").resolve()),
    )


def _files(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_student_is_never_written_into_a_folder_holding_another_run(teacher, tmp_path):
    """--out the teacher itself, a folder holding another student (of another method, another teacher, another
    number of teacher steps) or a run's weights without its training states: one line, exit 2, before any file is
    written there. The same command again resumes its own student."""
    before = _files(teacher)
    rc, _, err = cli("distill", teacher, "--method", "progressive", "--steps", "2", "--out", teacher, *TINY)
    _one_line_error(rc, err, "teacher's run folder")
    assert _files(teacher) == before
    pd = tmp_path / "pd"
    args = ["--method", "progressive", "--steps", "2", "--teacher-steps", "8", "--out", pd, *TINY]
    rc, _, err = cli("distill", teacher, *args)
    assert rc == 0, err
    rc, out, err = cli("distill", teacher, *args)  # the same command: its own finished student, resumed
    assert rc == 0 and "resuming" in out + err, err
    held = _files(pd)
    twin = tmp_path / "twin"  # the same teacher in another folder: another teacher to the student
    shutil.copytree(teacher, twin)
    for other, words in (
        (["--method", "consistency", "--steps", "2"], "holds a run with a different diffusion section"),
        (["--method", "progressive", "--steps", "2", "--teacher-steps", "4"], "objective.teacher"),
    ):
        for source in (teacher, twin):
            rc, _, err = cli("distill", source, *other, "--out", pd, *TINY)
            _one_line_error(rc, err, words)
            assert _files(pd) == held
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "ema.safetensors").write_bytes((teacher / "ema.safetensors").read_bytes())
    for method in ("progressive", "reflow"):
        rc, _, err = cli("distill", teacher, "--method", method, "--steps", "2", "--out", weights, *TINY)
        _one_line_error(rc, err, "ema.safetensors", "no training state")
        assert sorted(p.name for p in weights.iterdir()) == ["ema.safetensors"]
    rc, _, err = cli("train", "--preset", "digits-test", "--set", "train.images=32", "--out", weights)
    _one_line_error(rc, err, "no training state", "--no-resume")
    assert sorted(p.name for p in weights.iterdir()) == ["ema.safetensors"]


def test_a_progressive_students_config_records_what_was_distilled(tmp_path):
    """The last halving's objective names the teacher run, its first DDIM steps and grid and the guidance baked in,
    and (objective.stage_teacher) the previous halving it learned from; every student records only the settings its
    method reads. A student whose config.json was written before (its teacher the previous halving, every setting)
    still resumes, and is recorded anew."""
    teacher = write_run(tmp_path / "class", "digits-test", ["model.num_classes=10", "sample.guidance=3.0"])
    pd = tmp_path / "pd"
    args = ["--method", "progressive", "--steps", "2", "--teacher-steps", "8", "--guidance", "2", "--out", pd, *TINY]
    rc, _, err = cli("distill", teacher, *args)
    assert rc == 0, err
    stage = pd / "stages" / "0004-steps"
    recorded = json.loads((pd / "config.json").read_text())["objective"]
    want = {"name": "progressive", "teacher": str(teacher.resolve()), "teacher_steps": 8, "teacher_grid": "karras",
            "stage_teacher": str(stage.resolve()), "guidance": 2.0, "autoguidance": 1.0, "max_steps": 2}  # fmt: skip
    assert recorded == want
    first = json.loads((stage / "config.json").read_text())["objective"]
    assert first == {**want, "stage_teacher": "", "max_steps": 4}
    rc, _, err = cli("distill", teacher, "--method", "dmd", "--steps", "1", "--out", tmp_path / "dmd", *TINY)
    assert rc == 0, err
    dmd = json.loads((tmp_path / "dmd" / "config.json").read_text())["objective"]
    assert set(dmd) == {"name", "teacher", "guidance", "autoguidance", "max_steps", "dmd_fake_updates", "dmd_fake_lr"}
    # the record of an older version: the last halving's teacher the 4-step student at guidance 1, every setting
    old = {**want, "teacher": str(stage.resolve()), "teacher_steps": 4, "teacher_grid": "", "guidance": 1.0,
           "ct_steps_start": 10}  # fmt: skip
    del old["stage_teacher"]
    whole = json.loads((pd / "config.json").read_text())
    (pd / "config.json").write_text(json.dumps({**whole, "objective": old}))
    rc, out, err = cli("distill", teacher, *args)
    assert rc == 0 and "resuming" in out + err, err
    assert json.loads((pd / "config.json").read_text())["objective"] == want


def test_a_rerun_with_other_images_is_refused_by_that_option(teacher, tmp_path):
    """The same distill command with another --images is refused naming --images (not the EMA half-life or warm-up
    derived from it), nothing written; another difference too is named as train names it."""
    out = tmp_path / "cd"
    args = ["--method", "consistency", "--steps", "1", "--batch-size", "32", "--no-progress", "--out", out]
    rc, _, err = cli("distill", teacher, *args, "--images", "64")
    assert rc == 0, err
    held = _files(out)
    rc, _, err = cli("distill", teacher, *args, "--images", "128")
    _one_line_error(rc, err, f"{out} was distilled with --images 64, not 128", "choose another --out")
    assert "train." not in err
    for option, value, was in (("--batch-size", "16", "32"), ("--seed", "3", "0"), ("--lr", "0.001", "0.0002")):
        rc, _, err = cli("distill", teacher, *args, "--images", "64", option, value)
        _one_line_error(rc, err, f"{out} was distilled with {option} {was}, not {value}", "choose another --out")
        assert "train." not in err and "no-resume" not in err
    rc, _, err = cli("distill", teacher, *args, "--images", "128", "--lr", "1e-3")  # the first option that differs
    _one_line_error(rc, err, f"{out} was distilled with --images 64, not 128")
    assert "train." not in err
    assert _files(out) == held


def test_progressive_records_the_grid_it_walked_and_resumes_when_it_is_named(teacher, tmp_path):
    """Without --grid the first halving walks the teacher's own sample.grid, and config.json names it: the same
    command with --grid naming that grid resumes the run (another grid is refused). A student folder whose
    config.json recorded "" for the teacher's own grid resumes with it named or not, and is recorded anew."""
    out = tmp_path / "pd"
    args = ["--method", "progressive", "--steps", "2", "--teacher-steps", "4", "--out", out, *TINY]
    rc, _, err = cli("distill", teacher, *args)
    assert rc == 0, err
    assert load_run(out).config.objective.teacher_grid == "karras"  # the teacher's sample.grid
    rc, log, err = cli("distill", teacher, *args, "--grid", "karras")
    assert rc == 0 and "resuming" in log + err, err
    for named in ([], ["--grid", "karras"]):
        whole = json.loads((out / "config.json").read_text())
        whole["objective"]["teacher_grid"] = ""  # an older record of the teacher's own grid
        (out / "config.json").write_text(json.dumps(whole))
        rc, log, err = cli("distill", teacher, *args, *named)
        assert rc == 0 and "resuming" in log + err, err
        assert json.loads((out / "config.json").read_text())["objective"]["teacher_grid"] == "karras"
    rc, _, err = cli("distill", teacher, *args, "--grid", "exponential")
    _one_line_error(rc, err, "objective.teacher_grid='karras', not 'exponential'")


def test_guidance_flags_the_teacher_cannot_read_are_refused_at_any_value(teacher, tmp_path):
    """--guidance on an unconditional teacher and --autoguidance on one without a guide change nothing at any value,
    1 included: refused in one line (sample's wording for --guidance), nothing written; the refusal of any value
    says the same (it advised --autoguidance 1, itself refused)."""
    for method, flags, words in (
        ("reflow", ["--guidance", "2"], ["--guidance changes nothing", "class-, context- or text-conditioned"]),
        ("consistency", ["--guidance", "1"], ["--guidance changes nothing", "class-, context- or text-conditioned"]),
        ("dmd", ["--autoguidance", "1"], ["--autoguidance changes nothing", "keeps no guide model"]),
        ("dmd", ["--autoguidance", "1.5"], ["--autoguidance changes nothing", "leave --autoguidance out"]),
        ("progressive", ["--autoguidance", "1"], ["--autoguidance changes nothing", "keeps no guide model"]),
        ("progressive", ["--autoguidance", "2"], ["--autoguidance changes nothing", "leave --autoguidance out"]),
    ):
        rc, _, err = cli("distill", teacher, "--method", method, "--steps", "2", *flags, "--out", tmp_path / "s")
        _one_line_error(rc, err, *words)
        assert "use 1" not in err
        assert not (tmp_path / "s").exists()


def test_every_sampling_picture_of_a_student_walks_its_tuned_grid(teacher, tmp_path):
    """A progressive student samples only on its tuned DDIM grid (sample.grid = tuned): explain's trajectory and
    ablation take it as sample does, and interpolate's Euler solver walks it (DDIM with eta = 0 is the Euler step)."""
    from torchdiffusion import explain as ex

    out = tmp_path / "pd"
    assert main(["distill", str(teacher), "--method", "progressive", "--steps", "2", "--teacher-steps", "4",
                 "--out", str(out), *TINY]) == 0  # fmt: skip
    student = load_run(out)
    s, grids = student.config.sample, out / "grids"
    want = generate(student.model, range(4), s, student.data_shape, grid_dir=grids)
    res = ex.denoising_trajectory(student.model, s, student.data_shape, range(4), grid_dir=grids)
    assert torch.equal(res["x"], want) and len(res["sigmas"]) == 2
    panels = ex.ablation(student.model, s, student.data_shape, range(4), ddpm_steps=4, grid_dir=grids)
    assert torch.equal(panels["ddim, 2 steps (iterative)"], want)
    for what in ("trajectory", "ablation", "loss"):
        rc, _, err = cli("explain", what, out, "--out", tmp_path / f"{what}.png")
        assert rc == 0 and (tmp_path / f"{what}.png").is_file(), err
    rc, _, err = cli("interpolate", out, "--seeds", "1", "2", "--frames", "3", "--out", tmp_path / "lerp.png")
    assert rc == 0, err
    rc, _, err = cli("interpolate", out, "--seeds", "1", "2", "--method", "heun", "--out", tmp_path / "h.png")
    _one_line_error(rc, err, "distilled for at most 2 sampling steps", "heun spends 3 on sample.steps=2")
    rc, _, err = cli("interpolate", out, "--seeds", "1", "2", "--method", "heun", "--steps", "1",
                     "--out", tmp_path / "h.png")  # fmt: skip
    _one_line_error(rc, err, "no grid tuned for heun at 1 steps")


def test_a_distill_resumes_from_another_working_folder(teacher, tmp_path):
    """The student recorded its teacher as the path given, relative to where distill ran, and a resume from another
    folder (the same teacher by another path) was refused as another teacher: it is recorded absolute now."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(teacher, work / "teacher")
    args = ["--method", "consistency", "--steps", "2", *TINY]
    rc, _, err = cli("distill", "teacher", *args, "--out", "student", cwd=work)
    assert rc == 0, err
    assert load_run(work / "student").config.objective.teacher == str((work / "teacher").resolve())
    rc, out, err = cli("distill", "work/teacher", *args, "--out", "work/student", cwd=tmp_path)
    assert rc == 0 and "resuming" in out + err, err


def test_a_student_as_teacher_is_run_within_the_steps_it_was_distilled_for(teacher, tmp_path):
    """A 4-step progressive student, taken as a teacher, was stepped across the whole ODE (consistency distillation:
    40 levels; DMD; a progressive --teacher-steps 16): refused in one line, nothing written - as sample refuses more
    steps than a student was distilled for."""
    pd = tmp_path / "pd"
    rc, _, err = cli("distill", teacher, "--method", "progressive", "--steps", "4", "--teacher-steps", "8",
                     "--out", pd, *TINY)  # fmt: skip
    assert rc == 0, err
    for args, words in [
        (["--method", "consistency", "--steps", "2"], "distilled for at most 4 sampling steps: consistency"),
        (["--method", "dmd", "--steps", "1"], "distilled for at most 4 sampling steps: dmd"),
        (["--method", "progressive", "--steps", "2", "--teacher-steps", "16"], "--teacher-steps 16 asks for more"),
    ]:
        rc, _, err = cli("distill", pd, *args, "--out", tmp_path / "next", *TINY)
        _one_line_error(rc, err, words)
        assert not (tmp_path / "next").exists()
