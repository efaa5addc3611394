"""Every command's --help examples, run as written on tiny runs: each exits 0, and each long one draws a progress
bar and stops cleanly on Ctrl-C (exit 130, one line, nothing half-written). docs/cli.md holds the table.

The examples are parsed from the commands' help epilogs; run folders named in them (runs/demo, runs/toy ...) are
tiny run folders of the same kind, and sizes (--n, --steps, --images, train.images ...) are shrunk to seconds.
"""

import importlib.util
import io
import re
import shlex
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tinyruns import write_diffusers_folder, write_run
from torchdiffusion.cli import COMMANDS, main
from torchdiffusion.config import unread_setting

ROOT = Path(__file__).resolve().parents[1]
INSTANT = ("--dry-run", "--list-samplers")  # examples that only print: no long work, no bar
# Examples that need a file the repository cannot ship: TorchScript Inception-v3 weights.
NEEDS_EXTERNAL = ("TORCHDIFFUSION_INCEPTION=",)
HAS_DIFFUSERS = importlib.util.find_spec("diffusers") is not None  # the 'bench' extra: diffusers folders as runs

# Sizes: flag -> tiny value (replacing the example's value, or appended when the command takes the flag).
TINY_FLAGS = {
    "--n": "4",
    "--steps": "3",
    "--images": "64",
    "--n-per-class": "1",
    "--nll-n": "2",
    "--vlb-timesteps": "2",
    "--ode-steps": "2",
    "--resample": "2",
    "--frames": "3",
    "--nfe": "3",
    "--ddpm-steps": "3",
    "--epochs": "1",
    "--holdout": "16",
    "--width": "8",
    "--batch-size": "4",
    "--ref-steps": "4",
    "--tune-maxfev": "4",
    "--fit-n": "16",
    "--windows": "1",
    "--warmup": "0",
    "--peak-size": "64",
    "--pairs": "32",
}
TINY_SETTINGS = {
    "train.images": "64",
    "train.batch_size": "32",
    "train.sample_every_images": "0",
    "data.limit": "64",
    "data.holdout": "0",
    "data.toy_size": "256",
    "sample.n": "2",
    "sample.steps": "2",
}
# train-autoencoder's config has its own sections: these keys only
TINY_AE_SETTINGS = {
    "train.images": "32",
    "train.batch_size": "16",
    "data.limit": "32",
    "data.holdout": "0",
    "model.channels": "8",  # a narrow net: the examples' levels (channel_mult) stay as written
}
# Values replaced where an example gives them, never appended: one thread (more only spin on a tiny model).
TINY_GIVEN = {"--threads": "1"}
# bench-train times the preset's U-Net: a narrow one (the example's flags, shape and settings stay as written)
TINY_BENCH_TRAIN = ["--set", "model.channels=8"]


def examples(name: str) -> list[str]:
    """The example command lines of a command's --help ('torchdiffusion ...', continuation lines joined)."""
    text = COMMANDS[name].EXAMPLES.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.split("  #")[0].strip()
        m = re.match(r"^((?:[A-Z_]+=\S+ )*)torchdiffusion (.*)$", line)
        if m and not any(m.group(1).startswith(e) for e in NEEDS_EXTERNAL):
            out.append(m.group(2))
    return out


def tiny(command: str, argv: list[str], numeric_flags: set[str], command_flags: set[str]) -> list[str]:
    """The example with tiny sizes: values of TINY_FLAGS/TINY_SETTINGS replaced, missing ones appended
    (``numeric_flags``: the command's flags that take a number, ``command_flags``: all its flags)."""
    argv = list(argv)
    if any(a in ("--list-samplers", "--list-presets") for a in argv):  # a listing reads no other option: as given
        return argv
    # as few images, yet no fewer than the example's classes, contexts or prompts (more than images are refused)
    given = [len(v.split(",")) for a, v in zip(argv, argv[1:]) if a == "--class"] + [argv.count("--prompt")]
    given += [len(v.split(";")) for a, v in zip(argv, argv[1:]) if a == "--context"]
    sizes = {**TINY_FLAGS, "--n": str(max(int(TINY_FLAGS["--n"]), *given))}
    for i, a in enumerate(argv[:-1]):
        if a in TINY_GIVEN and a in numeric_flags:
            argv[i + 1] = TINY_GIVEN[a]
        if a in sizes and a in numeric_flags:
            argv[i + 1] = sizes[a]
            j = i + 2
            while j < len(argv) and re.fullmatch(r"[\d.]+", argv[j]) and a not in ("--n", "--steps"):
                j += 1  # nargs="+" flags: keep one value
            del argv[i + 2 : j]
        if a == "--set" and argv[i + 1].split("=")[0] in TINY_SETTINGS:
            key = argv[i + 1].split("=")[0]
            argv[i + 1] = f"{key}={TINY_SETTINGS[key]}"
    if command == "train-classifier" and "--evaluation" not in argv:  # --epochs is --evaluation's alone
        numeric_flags = numeric_flags - {"--epochs"}
    if command == "interpolate":  # its frames, seeds and batch are its own flags: it refuses --n, --batch-size
        numeric_flags = numeric_flags - {"--n", "--batch-size"}
    if command == "evaluate":  # the sampling steps are read only where a metric draws samples
        from torchdiffusion.evaluation.evaluate import SAMPLE_METRICS

        metrics = argv[argv.index("--metrics") + 1].split(",") if "--metrics" in argv else list(SAMPLE_METRICS)
        if not set(metrics) & set(SAMPLE_METRICS):  # and the images per call of sampling and features
            numeric_flags = numeric_flags - {"--steps", "--batch-size"}
        if "nll" not in metrics:  # bits/dim's own settings; straightness reads the ODE steps too
            numeric_flags = numeric_flags - {"--nll-n", "--vlb-timesteps"}
            if "straightness" not in metrics:
                numeric_flags = numeric_flags - {"--ode-steps"}
    if command in ("inpaint", "outpaint", "img2img") and ("--images" in argv or "--series" in argv):  # files: no --n
        numeric_flags = numeric_flags - {"--n"}
    if command == "card" and "--evaluate" not in argv:  # --n is --evaluate's alone
        numeric_flags = numeric_flags - {"--n"}
    if command == "impute" and "--series" not in argv:  # RePaint passes: the signal runs' alone
        numeric_flags = numeric_flags - {"--resample", "--jump"}
    if command == "distill":  # a method refuses another method's options: shrink only its own
        from torchdiffusion.commands.distill import METHOD_OPTIONS

        method = argv[argv.index("--method") + 1] if "--method" in argv else "progressive"
        other = {"--" + d.replace("_", "-") for d, m in METHOD_OPTIONS.items() if m != method}
        numeric_flags = numeric_flags - other
    if command == "bench-samplers":  # an option this benchmark does not read is refused: shrink only those it reads
        from torchdiffusion.cli import build_parser
        from torchdiffusion.commands.bench_samplers import READ_WHEN

        example = build_parser().parse_args([command, *argv])
        unread = {"--" + d.replace("_", "-") for d, (read, _) in READ_WHEN.items() if not read(example)}
        numeric_flags = numeric_flags - unread
    if command == "explain":  # a picture refuses the options it does not read: shrink only those it reads
        from torchdiffusion.commands.explain import options_read

        numeric_flags = numeric_flags & options_read(argv[0])
        if "--images" in numeric_flags and "--images" not in argv and argv[0] == "forward":
            argv += ["--images", "2"]  # explain forward: images in the strip
    for flag, value in sizes.items():
        if flag in numeric_flags and flag not in argv:
            argv += [flag, value]
    if command in ("train", "demo", "train-autoencoder"):
        example = _example_config(command, argv)  # a run refuses a setting it does not read: append only the read
        for key, value in (TINY_AE_SETTINGS if command == "train-autoencoder" else TINY_SETTINGS).items():
            if f"--set {key}=" not in " ".join(argv) and unread_setting(example, key) is None:
                argv += ["--set", f"{key}={value}"]
    if command == "bench-train" and "model.channels=" not in " ".join(argv):
        argv += TINY_BENCH_TRAIN
    for flag in ("--no-reference", "--no-diffusers"):
        if flag in command_flags and flag not in argv and "--diffusers" not in argv:
            argv.append(flag)
    return argv


def _example_config(command: str, argv: list[str]):
    """The config an example of train, demo or train-autoencoder starts from: its preset and its --set."""
    from torchdiffusion.autoencoder import get_autoencoder_preset
    from torchdiffusion.cli import build_parser
    from torchdiffusion.config import override
    from torchdiffusion.presets import get_preset

    args = build_parser().parse_args([command, *argv])
    preset = (get_autoencoder_preset if command == "train-autoencoder" else get_preset)(args.preset)
    return override(preset, args.set)


def flags_of(name: str) -> tuple[set[str], set[str]]:
    """(the flags of a command that take a number, all its flags)."""
    from torchdiffusion.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices[name]
    numeric = {
        s for a in sub._actions if a.type in (int, float) or hasattr(a.type, "kind") for s in a.option_strings
    }  # plain int/float or a bounded converter of commands/argtypes.py
    numeric |= {"--nfe"} if name == "bench-samplers" else set()  # a comma list of numbers
    return numeric, {s for a in sub._actions for s in a.option_strings}


def _png(path: Path, size=(28, 28), mode="L"):
    rng = np.random.default_rng(0)
    shape = size[::-1] + ((3,) if mode == "RGB" else ())
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


DEMO_CLASSES = ["model.num_classes=10", "sample.labels=cycle"]  # the mnist-cpu preset's conditioning


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder with runs/ (tiny versions of every run the examples name), input pictures and ~/pics."""
    root = tmp_path_factory.mktemp("world")
    runs = root / "runs"
    mnist = ["data.source=mnist5k", "data.limit=48", "data.holdout=8", "sample.steps=3", "model.channels=8"]
    signal = ["model.channels=8", "sample.steps=3", "sample.n=4"]  # n: the end-of-training line plots
    trained = {
        # the demo is class-conditional, sampled at the classes seed mod 10, and keeps an autoguidance guide, as the
        # real one does (distill --autoguidance needs it)
        "demo": [
            "--preset",
            "digits-test",
            *[a for s in [*mnist, *DEMO_CLASSES, "train.guide_at=0.5"] for a in ("--set", s)],
        ],
        "toy": ["--preset", "toy-2d", "--set", "data.toy_size=256", "--set", "sample.steps=3"],
        "wine": ["--preset", "table-wine", "--set", "sample.steps=3", "--set", "sample.n=8"],
        "text": ["--preset", "text-chars", "--set", "sample.steps=3", "--set", "sample.n=2"],
        "gunpoint": ["--preset", "signal-gunpoint", *[a for s in signal for a in ("--set", s)]],
    }
    for name, args in trained.items():
        base = ["--set", "train.images=64", "--set", "train.batch_size=32", "--no-progress"]
        assert main(["train", *args, *base, "--out", str(runs / name)]) == 0
    grid = runs / "demo" / "samples" / "grid.png"  # a sample grid with its manifest, for 'reproduce'
    assert main(["sample", str(runs / "demo"), "--n", "2", "--steps", "2", "--out", str(grid)]) == 0
    write_run(runs / "mnist", "digits-test", mnist, (1, 28, 28))
    write_run(runs / "mnist-class", "digits-test", [*mnist, "model.num_classes=10"], (1, 28, 28))
    ctx = ["model.channels=8", "model.channel_mult=1,2", "sample.steps=3"]
    write_run(runs / "emoji-context", "emoji-context", ctx, (3, 16, 16))
    (runs / "emoji-ctx").symlink_to(runs / "emoji-context")
    (runs / "fashion").symlink_to(runs / "demo")
    write_run(runs / "emoji-text", "emoji-text", ["model.channels=16", "sample.steps=3"], (3, 16, 16))
    if HAS_DIFFUSERS:
        write_diffusers_folder(runs / "ddpm-diffusers")
    from sklearn.datasets import load_digits

    from torchdiffusion.evaluation.classifier import ClassifierConfig, SmallClassifier, save_classifier
    from torchdiffusion.evaluation.noisy_classifier import NoisyClassifier, NoisyClassifierConfig, save_noisy_classifier

    d = load_digits()
    np.save(root / "sprites.npy", (d.images[:200] * (255 / 16)).astype(np.uint8)[:, None])
    np.save(root / "sprite-labels.npy", d.target[:200].astype(np.int64))
    user = ["data.source=array", f"data.path={root / 'sprites.npy'}", f"data.labels_path={root / 'sprite-labels.npy'}"]
    write_run(runs / "sprites", "digits-test", [*user, "model.num_classes=10", "sample.steps=3"])
    torch.manual_seed(0)
    clf = NoisyClassifier(NoisyClassifierConfig(in_channels=1, num_classes=10, width=8, emb_dim=16))
    save_noisy_classifier(clf, runs / "mnist" / "classifier" / "noisy-classifier.safetensors", {})
    eval_clf = SmallClassifier(ClassifierConfig(in_channels=3, num_classes=6, width=8, feature_dim=16))
    save_classifier(eval_clf, runs / "emoji-context" / "eval-classifier.safetensors")
    # what 'train-classifier runs/sprites --evaluation' writes, for the example after it when run alone
    sprites_clf = SmallClassifier(ClassifierConfig(in_channels=1, num_classes=10, width=8, feature_dim=16))
    save_classifier(sprites_clf, runs / "sprites" / "classifier" / "eval-classifier.safetensors")
    from torchdiffusion.data.table import sklearn_table

    wine = sklearn_table("wine")  # two rows of the wine table with a hole each, for the impute example
    (root / "holes.csv").write_text(
        ",".join(wine.columns)
        + "\n"
        + "\n".join(
            ",".join(
                "" if j == i + 1 else str(wine.numeric[c][i]) if c in wine.numeric else wine.categorical[c][i]
                for j, c in enumerate(wine.columns)
            )
            for i in range(2)
        )
        + "\n"
    )
    series = np.sin(np.linspace(0, 6, 128))[None].repeat(3, 0)  # signals for the impute / outpaint examples
    np.save(root / "whole.npy", series[:, None])
    (root / "gaps.csv").write_text(
        "\n".join(",".join("" if 40 <= j < 60 else f"{v:.4f}" for j, v in enumerate(r)) for r in series)
    )
    (root / "history.csv").write_text("\n".join(",".join(f"{v:.4f}" for v in r[:100]) for r in series))
    for f in ("a.png", "b.png", "sketch.png", "hole.png"):
        _png(root / f)
    (root / "pics").mkdir()
    for k in range(4):
        _png(root / "pics" / f"p{k}.png", (40, 36), "RGB")
    return root


def _argv(world: Path, example: str) -> list[str]:
    if "diffusers" in example and not HAS_DIFFUSERS:
        pytest.skip("the 'bench' extra (diffusers) is not installed")
    parts = shlex.split(example.replace("~/pics", str(world / "pics")))
    return [parts[0], *tiny(parts[0], parts[1:], *flags_of(parts[0]))]


def _cwd(world: Path, name: str, tmp_path: Path) -> Path:
    """train, train-autoencoder, train-clip and demo write new run folders: an empty folder; the others work among
    the tiny runs."""
    return tmp_path if name in ("train", "demo", "train-autoencoder", "train-clip") else world


CASES = [(name, k, ex) for name in COMMANDS for k, ex in enumerate(examples(name))]


@pytest.mark.parametrize("name,k,example", CASES, ids=[f"{n}-{k}" for n, k, _ in CASES])
def test_help_example_runs(world, tmp_path, monkeypatch, capfd, name, k, example):
    """Each example exits 0; with TORCHDIFFUSION_PROGRESS=0 it draws no bar (ours or a library's it calls)."""
    argv = _argv(world, example)
    monkeypatch.chdir(_cwd(world, name, tmp_path))
    monkeypatch.setenv("TORCHDIFFUSION_PROGRESS", "0")
    assert main(argv) == 0, argv
    err = capfd.readouterr().err
    assert not _CtrlCAtFirstBar.BAR.search(err), f"{argv}: a bar under TORCHDIFFUSION_PROGRESS=0\n{err[-800:]}"


class _CtrlCAtFirstBar(io.StringIO):
    """stderr that presses Ctrl-C (raises SIGINT in this process) the moment a progress bar is first drawn."""

    BAR = re.compile(r"\d+%\||\[\d\d:\d\d")

    def __init__(self):
        super().__init__()
        self.fired = False

    def write(self, s):
        n = super().write(s)
        if not self.fired and self.BAR.search(s):
            self.fired = True
            signal.raise_signal(signal.SIGINT)
        return n

    def isatty(self):
        return False


LONG = [(n, k, ex) for n, k, ex in CASES if not any(f in ex for f in INSTANT)]


@pytest.mark.parametrize("name,k,example", LONG, ids=[f"{n}-{k}" for n, k, _ in LONG])
def test_ctrl_c_during_the_bar_stops_cleanly(world, tmp_path, monkeypatch, name, k, example):
    argv = _argv(world, example)
    monkeypatch.chdir(_cwd(world, name, tmp_path))
    monkeypatch.setenv("TORCHDIFFUSION_PROGRESS", "1")
    err = _CtrlCAtFirstBar()
    monkeypatch.setattr(sys, "stderr", err)
    rc = main(argv)
    text = err.getvalue()
    assert err.fired, f"{argv}: no progress bar\n{text[-1500:]}"
    assert rc == 130, f"{argv}: exit code {rc}\n{text[-1500:]}"
    assert "Traceback" not in text
    last = [l for l in re.split(r"[\r\n]", text) if l.strip()][-1]
    # (the bar interrupted while it was first drawn may still hold the line the message ends)
    assert last.endswith(f"torchdiffusion {argv[0]}: stopped by Ctrl-C; no partial files were written"), last
    leftovers = [p for p in Path.cwd().rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers  # atomic writers: no half-written file


def test_a_stop_while_a_bar_is_drawn_leaves_bars_usable_by_other_threads():
    """A Ctrl-C raised inside a bar's write (as above) must not leave tqdm's global lock held: after the CLI's
    close_bars(), another thread can still make and draw a bar (the studio's worker does, in the same process)."""
    import threading

    from tqdm import tqdm

    from torchdiffusion.progress import Stopped, close_bars

    class StopOnWrite(io.StringIO):
        def write(self, s):
            raise Stopped()

    with pytest.raises(Stopped):
        tqdm(total=3, file=StopOnWrite(), disable=False, mininterval=0)  # the first refresh writes
    close_bars()
    drawn = threading.Event()

    def other():
        with tqdm(total=1, file=io.StringIO(), disable=False) as bar:
            bar.update(1)
        drawn.set()

    t = threading.Thread(target=other, daemon=True)
    t.start()
    assert drawn.wait(10), "another thread is blocked on the progress bars' lock"


def test_docs_table_says_yes_for_every_command():
    """docs/cli.md: one row per command, every cell 'yes'; the test above checks what the row claims."""
    text = (ROOT / "docs" / "cli.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and cells[0] != "`command`":
            rows[cells[0].strip("`")] = cells[1:]
    assert set(rows) == set(COMMANDS)
    assert all(v == ["yes", "yes", "yes"] for v in rows.values()), rows
    for name in COMMANDS:
        assert examples(name), f"{name} has no runnable --help example"
        assert any(not any(f in ex for f in INSTANT) for ex in examples(name)) or name == "train"


def test_a_stop_during_an_import_lands_after_it(tmp_path, monkeypatch):
    """SIGTERM while a module is being imported (torch and numpy load inside the commands): raising there left the
    module half-imported (numpy then failed with ImportError or RecursionError tracebacks, or the stop was
    swallowed). The stop waits for the import to finish, then stops the command."""
    import time

    from torchdiffusion.progress import Stopped, stop_on_signals

    name = "module_stopped_while_it_loads"
    (tmp_path / f"{name}.py").write_text(
        "import os, signal, time\nos.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(0.3)\nLOADED = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(Stopped) as stop:
        with stop_on_signals():
            __import__(name)
            time.sleep(5)  # the stop lands here, after the import
    assert stop.value.exit_code == 128 + signal.SIGTERM
    assert sys.modules[name].LOADED
    del sys.modules[name]


def test_an_option_is_given_when_written_whatever_its_value_and_however_abbreviated():
    """An unread option given its default value was taken as not given; an abbreviation argparse accepts
    (--ddpm for --ddpm-steps) must count as the option it names."""
    from torchdiffusion.cli import build_parser
    from torchdiffusion.commands.common import given_options, written_options

    argv = ["explain", "ablation", "r", "--ddpm", "100", "--weights=ema"]  # both at their defaults
    args = build_parser("explain").parse_args(argv)
    args._written = written_options(args._parser, argv)
    assert set(given_options(args)) == {"ddpm_steps", "weights"}
    del args._written  # without the command line: the options set to other values than their defaults only
    assert given_options(args) == {}
