"""The atomic writer: every artefact appears whole or not at all, and no temporary file survives a failure."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from torchdiffusion.io import TMP_MARK, atomic_folder, atomic_path, atomic_write, save_safetensors


def test_bytes_text_and_writer_function_round_trip(tmp_path):
    assert atomic_write(tmp_path / "a.bin", b"\x00\x01") == tmp_path / "a.bin"
    atomic_write(tmp_path / "b.json", json.dumps({"σ": 1.5}))
    atomic_write(tmp_path / "sub" / "c.npy", lambda f: np.save(f, np.arange(5)))  # the folder is created
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert json.loads((tmp_path / "b.json").read_text(encoding="utf-8")) == {"σ": 1.5}
    assert np.array_equal(np.load(tmp_path / "sub" / "c.npy"), np.arange(5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.json", "sub"]


def test_replacing_an_existing_file_and_the_mode_follows_the_umask(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("old")
    old_mask = os.umask(0o022)
    try:
        atomic_write(p, "new")
    finally:
        os.umask(old_mask)
    assert p.read_text() == "new"
    assert p.stat().st_mode & 0o777 == 0o644  # like open(..., "w"), not mkstemp's 0600


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failure_keeps_the_old_file_and_removes_the_temporary_one(tmp_path, error):
    p = tmp_path / "grid.png"
    p.write_bytes(b"old")

    def bad(f):
        f.write(b"half")
        raise error

    with pytest.raises(type(error)):
        atomic_write(p, bad)
    assert p.read_bytes() == b"old" and [q.name for q in tmp_path.iterdir()] == ["grid.png"]


def test_a_failure_to_create_the_temporary_file_names_the_file_asked_for(tmp_path):
    """Where the temporary sibling cannot be made (a folder that takes no new files, as /proc), the error names the
    file the caller asked for - what a user can act on - not the hidden temporary name, and says the folder refused
    it (EPERM: "operation not permitted"), not that a path in a folder that exists does not exist (ENOENT)."""
    import errno

    from torchdiffusion.cli import describe_os_error

    p = tmp_path / "card.md"
    with pytest.raises(PermissionError) as e, atomic_path(p) as tmp:
        raise FileNotFoundError(2, "No such file or directory", str(tmp))  # what open(tmp, "xb") raises there
    assert e.value.filename == str(p) and TMP_MARK not in str(e.value) and e.value.errno == errno.EPERM
    assert describe_os_error(e.value)[0] == f"{p}: operation not permitted"
    with pytest.raises(OSError) as e:
        atomic_write("/proc/torchdiffusion-card.md", "x")  # the kernel's folder: no new files there
    assert e.value.filename == "/proc/torchdiffusion-card.md" and e.value.errno != errno.ENOENT


def test_a_folder_that_cannot_be_written_names_the_folder_asked_for(tmp_path):
    """atomic_folder: an error at the temporary folder, or at a file being written in it, names the folder (or the
    file under it) the caller asked for; nothing is left behind."""
    out = tmp_path / "pipeline"
    with pytest.raises(OSError) as e, atomic_folder(out) as tmp:
        raise OSError(28, "No space left on device", str(tmp / "unet" / "weights.bin"))
    assert e.value.filename == str(out / "unet" / "weights.bin") and e.value.errno == 28
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OSError) as e, atomic_folder("/proc/torchdiffusion-pipeline"):
        pass  # the kernel's folder takes no new folders
    assert e.value.filename == "/proc/torchdiffusion-pipeline" and TMP_MARK not in str(e.value)


def test_atomic_path_gives_a_hidden_sibling_with_the_same_suffix(tmp_path):
    p = tmp_path / "movie.mp4"
    with atomic_path(p) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".mp4"
        assert tmp.name.startswith(".movie.mp4" + TMP_MARK)
        assert not p.exists()  # the final name appears only when the block ends
        tmp.write_bytes(b"frames")
    assert p.read_bytes() == b"frames" and not tmp.exists()
    with pytest.raises(RuntimeError), atomic_path(p) as tmp2:
        tmp2.write_bytes(b"partial")
        raise RuntimeError("encoder failed")
    assert p.read_bytes() == b"frames" and [q.name for q in tmp_path.iterdir()] == ["movie.mp4"]


def test_safetensors_round_trip_with_metadata(tmp_path):
    from safetensors import safe_open

    w = torch.arange(6.0).reshape(2, 3).t()  # not contiguous
    save_safetensors({"w": w}, tmp_path / "m.safetensors", metadata={"config": "{}"})
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        assert torch.equal(f.get_tensor("w"), w) and f.metadata() == {"config": "{}"}


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    from pathlib import Path

    from torchdiffusion.io import cache_dir

    monkeypatch.setenv("TORCHDIFFUSION_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path and cache_dir("kernels") == tmp_path / "kernels"
    monkeypatch.delenv("TORCHDIFFUSION_CACHE")
    assert cache_dir("refstats") == Path.home() / ".cache" / "torchdiffusion" / "refstats"


def test_a_cache_setting_that_names_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    """$TORCHDIFFUSION_CACHE pointing at a file: the error names the setting (the user typed no such path on the
    command line), exit code 2; a folder, or a path still to be made, is taken as it is."""
    from tinyruns import write_run
    from torchdiffusion.cli import main
    from torchdiffusion.io import cache_dir

    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("TORCHDIFFUSION_CACHE", str(tmp_path / "file"))
    with pytest.raises(ValueError, match="TORCHDIFFUSION_CACHE=.*file is a file; point it at a folder"):
        cache_dir("refstats")
    run = write_run(tmp_path / "run", "digits-test", [])
    capsys.readouterr()
    assert main(["evaluate", str(run), "--metrics", "fd", "--features", "raw", "--n", "4", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip()  # refused before sampling: the error is the only line
    assert err.startswith("torchdiffusion evaluate: error: TORCHDIFFUSION_CACHE=") and "\n" not in err, err
    monkeypatch.setenv("TORCHDIFFUSION_CACHE", str(tmp_path / "new"))
    assert cache_dir("a", "b") == tmp_path / "new" / "a" / "b"


def test_an_output_in_a_folder_that_takes_no_new_files_is_refused_before_sampling(tmp_path, monkeypatch):
    """/proc passes a permission check for root but takes no new files: the output check creates (and removes) a
    file there first, so the command stops before its work, not at its first write."""
    import torchdiffusion.generate as G
    from tinyruns import cli, write_run

    run = write_run(tmp_path / "run", "digits-test", ["sample.steps=2"])

    def never(*a, **k):
        raise AssertionError("sampled before the output folder was checked")

    monkeypatch.setattr(G, "generate", never)
    rc, _, err = cli("sample", run, "--n", "1", "--out", "/proc/torchdiffusion-x.png")
    assert rc == 3 and err.count("\n") == 1 and "/proc" in err, err
    assert not list(tmp_path.glob("**/*probe*"))


def test_json_text_writes_what_strict_readers_take():
    """NaN and infinities (Python's json writes them as tokens no JSON reader takes) become null, at any depth;
    finite numbers, strings and structure are kept."""
    import json
    import math

    from torchdiffusion.io import json_text

    def refuse(token):
        raise ValueError(token)

    obj = {"a": math.nan, "b": [math.inf, 1.5, {"c": -math.inf}], "d": (2, "nan"), "e": {"f": 0.1}}
    back = json.loads(json_text(obj, indent=2), parse_constant=refuse)
    assert back == {"a": None, "b": [None, 1.5, {"c": None}], "d": [2, "nan"], "e": {"f": 0.1}}


def test_temporary_names_fit_where_the_file_does(tmp_path):
    """A legal 240-byte name took a temporary name of 270: the write failed after the work, naming the temporary."""
    from torchdiffusion.io import NAME_MAX, atomic_write, temp_name

    path = tmp_path / ("a" * 240 + ".png")
    assert len(temp_name(path).name.encode()) <= NAME_MAX and temp_name(path).suffix == ".png"
    atomic_write(path, b"x")
    assert path.read_bytes() == b"x" and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    dotted = tmp_path / ("x." + "b" * 250)  # its whole length a "suffix": the cut looped forever
    assert len(temp_name(dotted).name.encode()) <= NAME_MAX
    atomic_write(dotted, b"y")
    assert dotted.read_bytes() == b"y"
