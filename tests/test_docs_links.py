"""Every relative link and image in README.md and docs/ resolves: the file exists, and a #anchor names a heading
of the page it points to (GitHub's heading ids). Repository paths the pages name in code (`scripts/...`,
`docs/...`) exist too, so a renamed script or moved figure cannot leave a stale command behind."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target "title")
HTML = re.compile(r"<(?:img|a)\s[^>]*(?:src|href)=\"([^\"]+)\"", re.I)
REPO_PATH = re.compile(r"(?<![\w/.-])((?:docs|scripts|src|tests)/[\w./-]*\.[a-z]+)\b")  # docs/x.md, scripts/y.py
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, ...


def unfenced(text: str) -> str:
    """The page without fenced code blocks (a ``# comment`` there is not a heading)."""
    return re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.M | re.S)


def prose(text: str) -> str:
    """The page without fenced code blocks and inline code spans (links there are examples, not links)."""
    return re.sub(r"(`+)(?:(?!\1).)+\1", "", unfenced(text))


def anchors(page: Path) -> set[str]:
    """GitHub's ids of the page's headings: lower case, punctuation dropped, spaces -> '-', repeats get -1, -2.
    Inline code in a heading keeps its text (only the backticks go)."""
    seen: dict[str, int] = {}
    out = set()
    for line in unfenced(page.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(page: Path) -> list[str]:
    text = prose(page.read_text(encoding="utf-8"))
    return [t for t in LINK.findall(text) + HTML.findall(text) if not EXTERNAL.match(t)]


def test_pages_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/ARCHITECTURE.md", "docs/samplers.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor.lower() not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
        elif ROOT not in dest.parents and dest != ROOT:
            broken.append(f"{target}: outside the repository")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_named_repository_paths_exist(page):
    missing = [m for m in REPO_PATH.findall(page.read_text(encoding="utf-8")) if not (ROOT / m).exists()]
    assert not missing, missing


def test_every_figure_is_shown():
    """docs/images holds the figures the pages show, nothing else (`make docs` regenerates them)."""
    shown = {(page.parent / t.partition("#")[0]).resolve() for page in PAGES for t in links(page)}
    unused = [p.name for p in sorted((ROOT / "docs" / "images").iterdir()) if p.resolve() not in shown]
    assert not unused, unused


def test_makefile_names_existing_scripts():
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    scripts = [n for n in REPO_PATH.findall(text) if n.startswith("scripts/")]
    assert scripts and not [n for n in scripts if not (ROOT / n).is_file()]


def test_the_checker_sees_broken_links(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n## Two words\n")
    page = tmp_path / "p.md"
    page.write_text(
        "[ok](a.md) [ok](a.md#two-words) ![img](missing.png) [x](a.md#nope) [web](https://example.org)\n"
        "`[code](nowhere.md)`\n```\n[block](nowhere.md)\n```\n"
    )
    assert links(page) == ["a.md", "a.md#two-words", "missing.png", "a.md#nope"]
    assert anchors(tmp_path / "a.md") == {"title", "two-words"}
    assert REPO_PATH.findall("run `scripts/x_check.py runs/demo` (docs/images/a-b.png).") == [
        "scripts/x_check.py",
        "docs/images/a-b.png",
    ]


def test_heading_ids_follow_github(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Top\n## A judge (`emoji64-lit`), step 2\n```\n# not a heading\n```\n## Top\n## Top\n")
    assert anchors(page) == {"top", "a-judge-emoji64-lit-step-2", "top-1", "top-2"}


HELP_EVERY_SCRIPT = """
import runpy, sys
bad = []
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    try:
        runpy.run_path(path, run_name="__main__")
        bad.append(f"BAD {path}: ran without --help stopping it")
    except SystemExit as e:
        if e.code not in (0, None):
            bad.append(f"BAD {path}: exit {e.code}")
    except BaseException as e:
        bad.append(f"BAD {path}: {type(e).__name__}: {e}")
print("\\n".join(bad))
"""


def test_every_script_answers_help():
    """The scripts the docs cite to regenerate a figure or a table: each explains itself with --help (argparse,
    its docstring) instead of starting work or failing on '--help' as an argument. One process for all."""
    import subprocess
    import sys

    scripts = sorted(str(p) for p in (ROOT / "scripts").glob("*.py"))
    r = subprocess.run(
        [sys.executable, "-c", HELP_EVERY_SCRIPT, *scripts], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert not [line for line in r.stdout.splitlines() if line.startswith("BAD ")], r.stdout[-3000:]
