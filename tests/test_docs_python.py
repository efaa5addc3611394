"""The Python blocks of the README and docs/ stand on their own: every name a block uses is defined or imported in
it (a reader pastes one block, not the prose around it), and every ``from torchdiffusion... import name`` names
something that exists. Running them needs trained runs; what they print is checked by hand and by the tests of each
function."""

from __future__ import annotations

import ast
import builtins
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks() -> list[tuple[str, int, str]]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
            found.append((page.relative_to(ROOT).as_posix(), text[: m.start()].count("\n") + 1, m.group(1)))
    return found


BLOCKS = python_blocks()


def test_the_docs_have_python_blocks():
    assert len(BLOCKS) >= 8  # README, guidance, interop, latent, provenance ...


def unbound_names(tree: ast.AST) -> set[str]:
    """Names a block loads that it neither binds (assignment, import, def, loop, with, comprehension, argument)
    nor gets from builtins."""
    bound, loaded = set(dir(builtins)), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return loaded - bound


@pytest.mark.parametrize(("page", "line", "code"), BLOCKS, ids=[f"{p}:{n}" for p, n, _ in BLOCKS])
def test_a_python_block_defines_what_it_uses(page, line, code):
    tree = ast.parse(code)
    missing = unbound_names(tree)
    assert not missing, f"{page}:{line} uses {sorted(missing)} without defining or importing them"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torchdiffusion":
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{page}:{line}: {node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "torchdiffusion":
                    importlib.import_module(alias.name)


def test_the_check_finds_an_undefined_name():
    assert unbound_names(ast.parse("x = generate(run.model, seeds)")) == {"generate", "run", "seeds"}
    assert not unbound_names(ast.parse("import torch\nfor i in range(2):\n    y = [j for j in torch.arange(i)]"))
