"""The commands the README and docs show are ones the code accepts: a renamed option, preset, setting or metric
cannot leave a page telling people to type something that fails at once.

Checked without the work: every `torchdiffusion ...` line of a code block parses with the real parser; the
training commands resolve their preset and every --set to a validated config (--dry-run); evaluate's metric and
feature names exist; an explain picture, a distill method or an edit is given only options it reads; every `--set
key=value` anywhere on a page names a real setting its value converts to; every option given to a `python
scripts/NAME.py` line is one that script defines; every name a page imports from torchdiffusion, or calls by its
dotted path, exists. Lines with placeholders (`...`, `<name>`, `$VAR`) are left out; `[--optional parts]` are
checked with the rest.
"""

import contextlib
import importlib
import io
import re
import shlex
from pathlib import Path

import pytest

from torchdiffusion.autoencoder import AutoencoderRunConfig
from torchdiffusion.cli import build_parser, main
from torchdiffusion.config import ConfigError, RunConfig, override
from torchdiffusion.contrastive.config import ContrastiveConfig

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1[^\n]*$", re.M | re.S)
PREFIX = r"^(?:[A-Z_]+=\S*\s+)*(?:time\s+)?"  # OMP_NUM_THREADS=1 time ...
COMMAND = re.compile(PREFIX + r"(?:\S*python3?\s+-m\s+torchdiffusion|torchdiffusion)\s+(.*)$")
SCRIPT = re.compile(PREFIX + r"\S*python3?\s+(scripts/[\w/-]+\.py)\b\s*(.*)$")
PLACEHOLDER = re.compile(r"\.\.\.|…|\$|<\w")
SETTING = re.compile(r"--set[ =]\"?([a-z_]+(?:\.[a-z_]+)+)=([^\s`\"'\]\),]*)")
TRAINING = ("train", "train-autoencoder", "train-clip")  # the commands with --dry-run
CONFIGS = (RunConfig, AutoencoderRunConfig, ContrastiveConfig)


def code_lines(text: str) -> list[str]:
    """The shell commands of a page's code blocks: continuations joined, comments dropped, `a && b` and `a; b`
    split."""
    out = []
    for m in FENCE.finditer(text):
        for line in re.sub(r"\\\n\s*", " ", m.group(2)).splitlines():
            line = re.split(r"\s#\s", line)[0].strip()
            if line and not line.startswith("#"):
                out += [s.strip() for s in re.split(r"\s(?:&&|\|\||;|\|)\s|;\s|\s&\s*$", line) if s.strip()]
    return out


def commands(text: str) -> list[str]:
    """The arguments after `torchdiffusion` of each command line without placeholders."""
    out = []
    for line in code_lines(text):
        m = COMMAND.match(line)
        if m and not PLACEHOLDER.search(m.group(1)):
            out.append(re.sub(r"[\[\]]", " ", m.group(1)).split(">")[0].strip())
    return out


def problems_of_command(rest: str) -> str | None:
    """Why this command line would fail at once, or None."""
    argv = shlex.split(rest)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser().parse_args(argv)
    except SystemExit as e:
        return err.getvalue().strip() if e.code else None  # --help, --version: fine
    if args.command in TRAINING and not args.dry_run and not args.list_presets:  # (a listing takes nothing else)
        config = getattr(args, "config", None)
        if config is None or (ROOT / config).is_file():  # a run's config.json is not in the repository
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                rc = main([*argv, "--dry-run"])
            if rc:
                return err.getvalue().strip()
    if args.command == "explain":  # a picture refuses options it does not read, before drawing anything
        from torchdiffusion.commands.explain import refuse_unread

        try:
            refuse_unread(args)
        except ConfigError as e:
            return str(e)
    if args.command == "distill":  # another method's options are refused before any training
        from torchdiffusion.commands.distill import check_method_options

        try:
            check_method_options(args)
        except ConfigError as e:
            return str(e)
    if args.command in ("inpaint", "outpaint", "img2img"):  # editing options nothing would read
        from torchdiffusion.commands.inpaint import check_edit_options
        from torchdiffusion.edit import EditError

        try:
            check_edit_options(args)
        except EditError as e:
            return str(e)
    if args.command == "evaluate":
        from torchdiffusion.evaluation.evaluate import METRICS
        from torchdiffusion.evaluation.features import feature_names

        unknown = [m for m in args.metrics.split(",") if m not in METRICS]
        unknown += [f for f in (args.features or "").split(",") if f and f not in feature_names()]
        if unknown:
            return f"evaluate: unknown metric or feature network {unknown[0]!r}"
    return None


def problem_of_setting(key: str, value: str) -> str | None:
    """None when some config (diffusion run, autoencoder, contrastive model) has ``key`` and takes ``value``."""
    errors = []
    for cls in CONFIGS:
        try:
            if value and not PLACEHOLDER.search(value) and not re.fullmatch(r"[A-Z]", value):
                override(cls(), [f"{key}={value}"])
            else:  # `--set sample.guidance=W`: the key alone
                obj = cls()
                for part in key.split("."):
                    if not hasattr(obj, part):
                        raise ConfigError(f"unknown config key {key!r}")
                    obj = getattr(obj, part)
            return None
        except (ConfigError, ValueError, TypeError) as e:
            errors.append(str(e))
    return errors[0]


def settings(text: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in SETTING.findall(re.sub(r"\\\n\s*", " ", text)) if k != "section.key"]


def script_options(text: str) -> list[tuple[str, str]]:
    """(script path, --option) for every option a `python scripts/x.py` line passes."""
    out = []
    for line in code_lines(text):
        m = SCRIPT.match(line)
        if m:
            out += [(m.group(1), o) for o in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", m.group(2))]
    return out


def python_names(text: str) -> list[str]:
    """Dotted names a page uses from the package: `from torchdiffusion.x import a, b` (-> x.a, x.b), `import
    torchdiffusion.x`, and calls written out as `torchdiffusion.x.f(...)`."""
    out = []
    for m in re.finditer(r"^\s*from (torchdiffusion[\w.]*) import \(?([\w, ]+)", text, re.M):
        out += [f"{m.group(1)}.{n.strip().split(' as ')[0]}" for n in m.group(2).split(",") if n.strip()]
    out += re.findall(r"^\s*import (torchdiffusion[\w.]*)", text, re.M)
    out += re.findall(r"\b(torchdiffusion(?:\.\w+)+)\(", text)
    return out


def resolves(dotted: str) -> bool:
    """The longest importable module prefix of ``dotted``, then attributes for the rest."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def page_id(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def test_the_pages_show_commands():
    text = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)
    assert len(commands(text)) >= 100 and len(settings(text)) >= 100 and len(script_options(text)) >= 50
    assert len(python_names(text)) >= 20


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_documented_commands_parse_and_resolve(page):
    bad = []
    for rest in commands(page.read_text(encoding="utf-8")):
        why = problems_of_command(rest)
        if why:
            bad.append(f"torchdiffusion {rest}\n    {why}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_documented_settings_exist(page):
    bad = [
        f"--set {k}={v}: {why}"
        for k, v in settings(page.read_text(encoding="utf-8"))
        if (why := problem_of_setting(k, v))
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_documented_script_options_exist(page):
    bad = []
    for script, option in script_options(page.read_text(encoding="utf-8")):
        path = ROOT / script
        if not path.is_file():
            bad.append(f"{script}: no such script")
        elif not re.search(rf"[\"']{re.escape(option)}[\"']", path.read_text(encoding="utf-8")):
            bad.append(f"{script} has no option {option}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_documented_python_names_exist(page):
    bad = [name for name in python_names(page.read_text(encoding="utf-8")) if not resolves(name)]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_stale_commands():
    page = """
```bash
OMP_NUM_THREADS=1 torchdiffusion train --preset mnist-cpu --set train.images=1000 --out runs/a   # fine
torchdiffusion train --preset no-such-preset --out runs/b
torchdiffusion train --set train.no_such_key=3
torchdiffusion train --set train.images=lots
torchdiffusion sample runs/a --no-such-flag
torchdiffusion evaluate runs/a --metrics fd kid
torchdiffusion evaluate runs/a --metrics fd,bogus
torchdiffusion explain schedules --steps 3
torchdiffusion distill runs/a --method reflow --levels 20 --out runs/b
torchdiffusion inpaint runs/a --jump 3
torchdiffusion sample runs/a --n ...        # a placeholder: left out
python scripts/digit_check.py --no-such-option 3
```
and in prose `--set model.no_such=1`.
"""
    found = commands(page)
    assert len(found) == 10 and problems_of_command(found[0]) is None
    assert all(problems_of_command(rest) for rest in found[1:])
    assert [k for k, v in settings(page) if problem_of_setting(k, v)] == [
        "train.no_such_key",
        "train.images",
        "model.no_such",
    ]
    assert problem_of_setting("sample.guidance", "W") is None  # a key with a placeholder value
    assert problem_of_setting("loss.perceptual", "1") is None  # an autoencoder setting
    assert script_options(page) == [("scripts/digit_check.py", "--no-such-option")]
    code = """
from torchdiffusion.generate import generate, no_such_function
import torchdiffusion.no_such_module
x = torchdiffusion.evaluation.evaluate.no_such_call(1)
"""
    names = python_names(code)
    assert [n for n in names if not resolves(n)] == [
        "torchdiffusion.generate.no_such_function",
        "torchdiffusion.no_such_module",
        "torchdiffusion.evaluation.evaluate.no_such_call",
    ]
    assert resolves("torchdiffusion.generate.generate")
