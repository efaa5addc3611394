"""The optional extras: `make test` installs every one of them, and a missing one is named in one line."""

import importlib.util
import os
import re
import tomllib
from pathlib import Path

import pytest

from tinyruns import td, write_run
from torchdiffusion.extras import EXTRAS, missing

ROOT = Path(__file__).resolve().parents[1]


def test_make_test_installs_every_extra():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras) - {"dev", "all"} == set(EXTRAS)
    (bundle,) = extras["all"]
    assert set(re.search(r"\[(.*)\]", bundle).group(1).split(",")) == set(EXTRAS)
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: \$\(STAMP_ALL\)$", make, re.M)
    assert re.search(r"^\$\(STAMP_ALL\):.*\n\t.*pip install .*-e '\.\[dev,all\]'", make, re.M)
    assert re.search(r"^demo: \$\(STAMP\)$", make, re.M)  # the demo stays lean


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_every_extra_is_installed_where_the_tests_run(extra):
    """No test may be skipped for a missing extra: the test environment (make test) has every one."""
    for module in EXTRAS[extra][1]:
        assert importlib.util.find_spec(module) is not None, missing(extra, module)


def test_a_missing_extra_is_one_line_naming_its_install(tmp_path):
    run = write_run(tmp_path / "text", "emoji-text", ["sample.steps=2"], (3, 16, 16))
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "transformers.py").write_text("raise ImportError('not installed')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")])}
    png = tmp_path / "apple.png"
    rc, _, err = td("sample", run, "--prompt", "red apple", "--n", "2", "--out", png, env=env)
    assert rc == 2 and "Traceback" not in err, err[-2000:]
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and "pip install 'torchdiffusion[text]'" in lines[0], err
    assert not png.exists()
