"""Bad input at the command line: one line on stderr, exit code 2, no traceback, nothing half-written. Commands run
through the CLI's ``main`` in this process (``tinyruns.cli``); test_bad_inputs.py runs such cases as real processes."""

import json

import pytest

from tinyruns import cli


def assert_clean_error(rc, err, needle):
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert needle in lines[0], lines[0]


def test_unknown_preset():
    rc, _, err = cli("train", "--preset", "nope", "--dry-run")
    assert_clean_error(rc, err, "unknown preset")


def test_bad_override_and_steps():
    rc, _, err = cli("train", "--set", "train.lr=fast", "--dry-run")
    assert_clean_error(rc, err, "train.lr")
    rc, _, err = cli("train", "--set", "sample.steps=0", "--dry-run")
    assert_clean_error(rc, err, "steps")
    rc, _, err = cli("train", "--set", "sample.sampler=magic", "--dry-run")
    assert_clean_error(rc, err, "unknown sampler")
    rc, _, err = cli("train", "--set", "nosection.x=1", "--dry-run")
    assert_clean_error(rc, err, "unknown config key")


def test_dry_run_prints_resolved_config():
    rc, out, err = cli("train", "--preset", "course", "--set", "train.lr=5e-4", "--dry-run")
    assert rc == 0, err
    cfg = json.loads(out)
    assert cfg["train"]["lr"] == 5e-4 and cfg["diffusion"]["T"] == 500 and cfg["diffusion"]["beta_end"] == 0.02
    assert "precision=auto" not in err  # an fp32 preset: nothing to decide


def test_train_with_auto_precision_records_and_trains_what_the_cpu_allows(tmp_path, monkeypatch):
    """``train --set train.precision=auto`` on the command line: config.json and the weights follow the CPU flags
    (bf16 + channels-last with avx512_bf16, the fp32 run's weights without)."""
    import torchdiffusion.training.precision as P

    base = ["train", "--preset", "digits-test", "--no-progress", "--set", "train.images=64", "--set", "sample.n=4"]
    runs = {}
    for name, sets, flags in (
        ("fp32", [], set()),
        ("auto-bf16", ["--set", "train.precision=auto"], {"avx512_bf16"}),
        ("auto-fp32", ["--set", "train.precision=auto"], set()),
    ):
        monkeypatch.setattr(P, "cpu_flags", lambda f=flags: f)
        rc, _, err = cli(*base, *sets, "--out", str(tmp_path / name))
        assert rc == 0, err
        saved = json.loads((tmp_path / name / "config.json").read_text())["train"]
        runs[name] = (saved["precision"], saved["channels_last"], (tmp_path / name / "model.safetensors").read_bytes())
    assert runs["auto-bf16"][:2] == ("bf16", True) and runs["auto-fp32"][:2] == ("fp32", False)
    assert runs["auto-fp32"][2] == runs["fp32"][2] and runs["auto-bf16"][2] != runs["fp32"][2]


def test_space_to_depth_trains_a_folded_network_and_refuses_what_it_cannot_fold(tmp_path):
    """``--set model.space_to_depth=2``: the run trains and samples at full size with the network's first layer
    taking 4 channels of half the size; a size it cannot fold, or another network kind, is one line."""
    from safetensors import safe_open

    base = ["train", "--preset", "digits-test", "--no-progress", "--set", "train.images=64", "--set", "sample.n=4"]
    for name, sets in (("plain", []), ("s2d", ["--set", "model.space_to_depth=2"])):
        rc, _, err = cli(*base, *sets, "--out", str(tmp_path / name))
        assert rc == 0, err
    shapes = {}
    for name in ("plain", "s2d"):
        with safe_open(str(tmp_path / name / "model.safetensors"), "pt") as f:
            shapes[name] = tuple(f.get_slice("net.input_conv.weight").get_shape())
    assert shapes["plain"][1] == 1 and shapes["s2d"][1] == 4, shapes
    assert json.loads((tmp_path / "s2d" / "config.json").read_text())["model"]["space_to_depth"] == 2
    rc, _, err = cli(*base, "--set", "model.space_to_depth=3", "--out", str(tmp_path / "bad"))
    assert_clean_error(rc, err, "not divisible")
    assert not (tmp_path / "bad").exists()
    rc, _, err = cli("train", "--preset", "mnist-dit", "--set", "model.space_to_depth=2", "--dry-run")
    assert_clean_error(rc, err, "model.space_to_depth is for the U-Net")


def test_dry_run_says_what_auto_precision_would_take_here(monkeypatch):
    import torchdiffusion.training.precision as P

    for flags, want in (({"avx512_bf16"}, "bf16, channels-last on this machine"), (set(), "fp32 on this machine")):
        monkeypatch.setattr(P, "cpu_flags", lambda f=flags: f)
        monkeypatch.setattr("torch.cuda.is_available", lambda: False)
        rc, out, err = cli("train", "--preset", "mnist-cpu", "--dry-run")
        assert rc == 0, err
        assert json.loads(out)["train"]["precision"] == "auto"  # decided when training starts
        assert want in err, err


def test_a_closed_stdout_ends_the_command_quietly():
    """A command whose stdout reader has gone ('| head' having read its line) stops with 141, as a process SIGPIPE
    ends, and nothing on stderr (it was "error: [Errno 32] Broken pipe", exit 2)."""
    import os
    import subprocess
    import sys

    r, w = os.pipe()
    os.close(r)  # the reader is gone before the command writes
    try:
        done = subprocess.run(
            [sys.executable, "-m", "torchdiffusion", "sample", "--list-samplers"],
            stdout=w,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    finally:
        os.close(w)
    assert done.returncode == 141 and done.stderr == b"", done.stderr


def test_sample_missing_or_damaged_run(tmp_path):
    rc, _, err = cli("sample", str(tmp_path / "missing"))
    assert_clean_error(rc, err, "does not exist")
    run = tmp_path / "run"
    run.mkdir()
    rc, _, err = cli("sample", str(run))
    assert_clean_error(rc, err, "config.json is missing")
    (run / "config.json").write_text("{ not json")
    rc, _, err = cli("sample", str(run))
    assert_clean_error(rc, err, "damaged")
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]  # nothing written


def test_missing_data_path_writes_nothing(tmp_path):
    out = tmp_path / "run"
    rc, _, err = cli(
        "train",
        "--preset",
        "digits-test",
        "--set",
        "data.source=folder",
        "--set",
        f"data.path={tmp_path / 'nope'}",
        "--out",
        str(out),
    )
    assert_clean_error(rc, err, "nope")
    assert not out.exists()


@pytest.mark.parametrize("cmd", ["train", "sample", "demo"])
def test_help_has_examples(cmd):
    rc, out, _ = cli(cmd, "--help")
    assert rc == 0 and "examples:" in out


def test_no_help_imports_torch():
    """``torchdiffusion CMD --help`` answers without importing torch (2 CPU s), for every command: one new Python
    reads every command's help and names those after which torch was loaded."""
    import subprocess
    import sys

    code = (
        "import sys, contextlib, io\n"
        "from torchdiffusion.cli import COMMANDS, main\n"
        "bad = []\n"
        "for name in COMMANDS:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main([name, '--help'])\n"
        "    if 'torch' in sys.modules:\n"
        "        bad.append(name); break\n"
        "print(len(COMMANDS), ' '.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) > 10 and out[1:] == [], f"--help of {out[1:]} imports torch"


def test_scripts_keep_the_command_lines_error_contract(tmp_path):
    """Every script whose entry point is a main() runs it through cli.run_script: a missing run is one line
    'NAME: error: ...' and exit 2, not a traceback (checked on one script in a real process)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    scripts = Path(__file__).parents[1] / "scripts"
    for f in sorted(scripts.glob("*.py")):
        block = f.read_text().split('\nif __name__ == "__main__":\n')[-1]
        if re.search(r"\bmain\(\)", block):
            assert "run_script(main)" in block, f.name
    done = subprocess.run(
        [
            sys.executable,
            str(scripts / "text_to_image_check.py"),
            "--clip",
            str(tmp_path / "none"),
            "--run",
            str(tmp_path / "none"),
            "--json",
            str(tmp_path / "x.json"),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1 and err[0].startswith("text_to_image_check.py: error: "), err
    assert not (tmp_path / "x.json").exists()


def test_a_dry_run_prints_the_config_json_the_run_records(tmp_path):
    """--dry-run prints what config.json will hold: the settings fitted to the data, and an objective block with only
    the settings that objective reads (a consistency run records no distillation teacher or fake-denoiser updates)."""
    args = ["train", "--preset", "digits-test", "--objective", "consistency", "--set", "train.images=32"]
    args += ["--set", "sample.n=4", "--set", "train.precision=fp32"]
    rc, out, err = cli(*args, "--dry-run")
    assert rc == 0, err
    rc, _, err = cli(*args, "--no-progress", "--out", str(tmp_path / "run"))
    assert rc == 0, err
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert json.loads(out) == recorded
    assert "dmd_fake_updates" not in recorded["objective"] and "teacher" not in recorded["objective"]


def test_a_process_that_does_not_fit_its_noise_level_sampling_names_both_as_the_run_has_them():
    """--set diffusion.process=continuous on a sequence preset was refused as 'diffusion.process=categorical goes
    with ...': the line named a process the user had just replaced and not the setting that clashed."""
    rc, _, err = cli("train", "--preset", "text-chars", "--set", "diffusion.process=continuous", "--dry-run")
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "this run has diffusion.process=continuous and diffusion.sigma_sampling=stratified" in err, err


def test_every_command_but_the_distributed_ones_is_refused_under_torchrun(tmp_path):
    """WORLD_SIZE > 1 (torchrun's environment): a command that runs in one process is refused in one line naming
    those that run under torchrun, before it reads its arguments or writes anything (each rank used to run it whole,
    into the same files). test_distributed_refusals.py runs one under a real torchrun."""
    from torchdiffusion.cli import COMMANDS, DISTRIBUTED_COMMANDS, build_parser

    assert set(DISTRIBUTED_COMMANDS) == {"train", "distill"}
    for name in COMMANDS.keys() - set(DISTRIBUTED_COMMANDS):
        sub = build_parser(only=name)._subparsers._group_actions[0].choices[name]
        argv = [name]
        for a in sub._actions:  # a value for each positional argument and required option
            if a.required:
                argv += [*a.option_strings[:1], str(next(iter(a.choices)) if a.choices else tmp_path / "x")]
        argv += ["--out", str(tmp_path / name)] if "--out" in sub._option_string_actions else []
        rc, out, err = cli(*argv, env={"WORLD_SIZE": "2", "RANK": "0"})
        assert_clean_error(rc, err, f"torchdiffusion {name}: error: {name} runs in one process: start it without")
        assert "train and distill" in err and not out and not (tmp_path / name).exists(), argv
