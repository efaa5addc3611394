"""README's Layout section matches the tree: every path it lists exists, and every module and package of
src/torchdiffusion (and every top-level folder of the repository) is listed."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "torchdiffusion"


def layout() -> tuple[list[str], list[str]]:
    """(entries under src/torchdiffusion/, top-level entries) of the Layout code block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"^## Layout\n+```\n(.*?)^```", text, flags=re.M | re.S)
    assert block, "README.md has no Layout code block"
    inner, top = [], []
    for line in block.group(1).splitlines():
        m = re.match(r"^( *)(\S+)", line)
        if m:
            (inner if m.group(1) else top).append(m.group(2))
    return inner, top


def test_listed_paths_exist():
    inner, top = layout()
    assert "src/torchdiffusion/" in top
    assert not [p for p in top if not (ROOT / p).exists()]
    assert not [p for p in inner if not (PKG / p).exists()]


def test_every_module_and_folder_is_listed():
    inner, top = layout()
    modules = {
        p.name + ("/" if p.is_dir() else "")
        for p in PKG.iterdir()
        if (p.suffix == ".py" and not p.name.startswith("__")) or (p.is_dir() and (p / "__init__.py").is_file())
    }
    missing = sorted(modules - set(inner))
    assert not missing, missing
    folders = {p.name + "/" for p in ROOT.iterdir() if p.is_dir() and p.name in ("tests", "scripts", "docs")}
    assert folders <= set(top)
