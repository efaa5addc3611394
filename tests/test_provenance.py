"""Manifests: what they record (run, config hash, weights sha256, sampling, command) and when they are written."""

import dataclasses
import json

import pytest

from tinyruns import td, write_run
from torchdiffusion import provenance as P
from torchdiffusion.config import override
from torchdiffusion.presets import get_preset
from torchdiffusion.training.checkpoint import sha256_file

pytestmark = pytest.mark.usefixtures("one_thread")


def test_config_hash_is_canonical_and_sensitive():
    a = get_preset("digits-test")
    b = override(get_preset("digits-test"), [])  # an equal config built another way
    assert P.config_sha256(a) == P.config_sha256(b)
    assert P.config_sha256(a) == P.config_sha256(json.loads(json.dumps(dataclasses.asdict(a))))
    assert P.config_sha256(a) != P.config_sha256(override(a, ["sample.steps=7"]))


def test_seed_ranges_round_trip():
    seeds = [0, 1, 2, 3, 10, 11, 5]
    ranges = P.seed_ranges(seeds)
    assert ranges == [[0, 3], [10, 11], [5, 5]]
    assert [s for lo, hi in ranges for s in range(lo, hi + 1)] == seeds


def test_sample_writes_one_manifest_per_artefact(tmp_path):
    run = write_run(tmp_path / "run", "digits-test", ["sample.steps=2"])
    out = tmp_path / "out" / "g.png"
    rc, _, err = td("sample", run, "--n", "3", "--seed", "5", "--save-npy", "--gif", "--out", out, cwd=tmp_path)
    assert rc == 0, err
    for name in ("g.png", "g.npy", "g.gif"):
        m = P.read_manifest(out.with_name(name + P.SUFFIX))
        assert m["artefact"] == {
            "name": name,
            "path": str(out.with_name(name)),
            "folder": False,
            "sha256": sha256_file(out.with_name(name)),
            "bytes": out.with_name(name).stat().st_size,
        }
        assert set(m["files"]) == {"g.png", "g.npy", "g.gif", "g.json"} - {name}
        assert m["command"]["argv"][:2] == ["sample", str(run)] and m["command"]["cwd"] == str(tmp_path)
        assert m["run"]["weights_file"] == "ema.safetensors" and m["run"]["source"] == "torchdiffusion"
        assert m["run"]["weights_sha256"] == sha256_file(run / "ema.safetensors")
        assert m["run"]["config_sha256"] == P.config_sha256(override(get_preset("digits-test"), ["sample.steps=2"]))
        (s,) = m["sampling"]
        assert (s["sampler"], s["steps"], s["seeds"], s["n"]) == ("euler", 2, [[5, 7]], 3)
        # the grid it walked and the autoguidance weight, as the settings record beside the picture has them
        record = json.loads(out.with_suffix(".json").read_text())
        assert s["grid_used"] == record["grid_used"] and len(s["grid_used"]["sigmas"]) == 3
        assert s["autoguidance"] == 1.0
        assert m["environment"]["threads"] == 1 and m["environment"]["torch"]
    assert not (out.with_suffix(".json").with_name("g.json" + P.SUFFIX)).exists()  # the settings record


def test_failed_command_writes_no_manifest(tmp_path):
    run = write_run(tmp_path / "run", "digits-test", ["sample.steps=2"])
    rc, _, err = td("sample", run, "--n", "2", "--sampler", "nope", "--out", tmp_path / "g.png")
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*" + P.SUFFIX))


def test_read_manifest_refuses_what_is_not_one(tmp_path):
    bad = {"noise.manifest.json": b"\x00\xff garbage", "list.manifest.json": b"[1, 2]", "cfg.json": b'{"a": 1}'}
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(P.ManifestError, match="not a manifest"):
            P.read_manifest(tmp_path / name)
    (tmp_path / "v.json").write_text(json.dumps({"format": P.FORMAT, "version": 1, "artefact": {}}))
    with pytest.raises(P.ManifestError, match="damaged"):
        P.read_manifest(tmp_path / "v.json")
    with pytest.raises(P.ManifestError, match="does not exist"):
        P.read_manifest(tmp_path / "missing.json")


def test_folder_artefact_digest_names_every_file(tmp_path):
    d = tmp_path / "export"
    (d / "unet").mkdir(parents=True)
    (d / "unet" / "w.bin").write_bytes(b"abc")
    (d / "config.json").write_text("{}")
    first = P.artefact_digest(d)
    (d / "unet" / "w.bin").rename(d / "w.bin")  # same bytes, another path
    assert P.artefact_digest(d) != first and first[1] == 5
    path = P.write_manifest(d, P.manifest(None, kind="export", argv=["export", "runs/x"]))
    assert path == tmp_path / ("export" + P.SUFFIX)
    assert P.read_manifest(path)["artefact"]["folder"] is True


def test_a_json_beside_a_picture_gets_its_own_manifest_unless_it_is_a_settings_record(tmp_path):
    """A command's data file of the same stem as its picture (guidance-sweep's sweep.json beside sweep.png) is an
    artefact of its own and gets a manifest; only a declared settings record (sample's) is listed in the picture's
    manifest instead (every .json of the picture's stem was taken for one)."""
    from torchdiffusion.io import atomic_write, write_json

    with P.recording("guidance-sweep", ["guidance-sweep", "x"]):
        write_json({"accuracy": [0.5]}, tmp_path / "sweep.json")
        atomic_write(tmp_path / "sweep.png", lambda f: f.write(b"png"))
        P.note_record(tmp_path / "grid.json")
        write_json({"seeds": [0, 1]}, tmp_path / "grid.json")
        atomic_write(tmp_path / "grid.png", lambda f: f.write(b"png 2"))
    m = P.read_manifest(tmp_path / ("sweep.json" + P.SUFFIX))
    assert m["artefact"]["sha256"] == sha256_file(tmp_path / "sweep.json") and "sweep.png" in m["files"]
    assert not (tmp_path / ("grid.json" + P.SUFFIX)).exists()
    assert "grid.json" in P.read_manifest(tmp_path / ("grid.png" + P.SUFFIX))["files"]


def test_a_folder_artefacts_manifest_lists_every_file_under_it(tmp_path):
    """An export is written in a temporary folder and renamed: its manifest listed none of its files, and said
    nothing of its format."""
    from torchdiffusion.io import atomic_folder

    folder = tmp_path / "export"
    with P.recording("export", ["export", "x"]):
        with atomic_folder(folder) as tmp:
            (tmp / "unet").mkdir()
            (tmp / "unet" / "w.bin").write_bytes(b"abc")
            (tmp / "model_index.json").write_text("{}")
        P.note_artefact(folder)
        P.note_extra(format="diffusers")
    m = P.read_manifest(tmp_path / ("export" + P.SUFFIX))
    assert m["files"] == {
        "export/model_index.json": sha256_file(folder / "model_index.json"),
        "export/unet/w.bin": sha256_file(folder / "unet" / "w.bin"),
    }
    assert m["extra"] == {"format": "diffusers"} and m["artefact"]["folder"] is True
