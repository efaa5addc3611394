"""docs/ARCHITECTURE.md names real code: every `module.name` it writes in backticks (module a torchdiffusion module
or package, name a function, class, attribute or submodule, `()` allowed) exists, and so does every config key
(`train.images`), so the walk-through cannot drift from the code. File names (`config.py`, `config.json`) are
not checked here."""

import dataclasses
import importlib
import pkgutil
import re
from pathlib import Path

import torchdiffusion
from torchdiffusion.config import RunConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"
DOTTED = re.compile(r"`(?:torchdiffusion\.)?([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?:\(\))?`")
FILE = re.compile(r"\.(py|json|jsonl|safetensors|md|png|gif|npy|pt|c)$")


def top_level_names() -> set[str]:
    return {m.name for m in pkgutil.iter_modules(torchdiffusion.__path__)}


def is_config_key(dotted: str) -> bool:
    """``section.field`` of the run config (``train.images``, ``model.net``)."""
    section, _, field = dotted.partition(".")
    sections = {f.name: f.type for f in dataclasses.fields(RunConfig)}
    if section not in sections or "." in field:
        return False
    cls = getattr(importlib.import_module("torchdiffusion.config"), str(sections[section]).split(".")[-1])
    return field in {f.name for f in dataclasses.fields(cls)}


def resolve(dotted: str):
    """Import the longest module prefix of torchdiffusion.<dotted>, then getattr the rest; AttributeError or
    ModuleNotFoundError when something is missing."""
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module("torchdiffusion." + ".".join(parts[:k]))
        except ModuleNotFoundError:
            continue
        for name in parts[k:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(dotted)


def named_in_doc() -> list[str]:
    top = top_level_names()
    found = DOTTED.findall(DOC.read_text(encoding="utf-8"))
    sections = {f.name for f in dataclasses.fields(RunConfig)}
    return sorted({d for d in found if d.split(".")[0] in top | sections and not FILE.search(d)})


def test_the_walk_through_names_code():
    assert len(named_in_doc()) >= 15  # the page does name the functions on the way


def test_every_named_function_exists():
    missing = []
    for dotted in named_in_doc():
        if is_config_key(dotted):
            continue
        try:
            resolve(dotted)
        except (AttributeError, ModuleNotFoundError) as e:
            missing.append(f"{dotted}: {e}")
    assert not missing, "\n".join(missing)


def test_resolve_finds_and_misses():
    assert is_config_key("model.net") and is_config_key("train.images") and not is_config_key("model.nope")
    assert resolve("generate.load_run").__name__ == "load_run"
    assert resolve("samplers.SAMPLERS")
    for bad in ("generate.no_such_function", "no_such_module.f"):
        try:
            resolve(bad)
        except (AttributeError, ModuleNotFoundError):
            continue
        raise AssertionError(bad)
