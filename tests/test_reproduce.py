"""torchdiffusion reproduce: five kinds of artefact regenerate bit-identically; changed weights, a file that is not
a manifest and a damaged run are refused in one line (exit 2); a changed artefact is reported as different."""

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinyruns import cli, td, write_run
from torchdiffusion import provenance as P
from torchdiffusion.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny run and five artefacts made from it by the command line: grid PNG, .npy, GIF, an inpainting, and
    an explain picture."""
    root = tmp_path_factory.mktemp("made")
    run = write_run(root / "run", "digits-test", ["sample.steps=2"])
    out = root / "out"
    assert (
        main(["sample", str(run), "--n", "3", "--seed", "4", "--gif", "--save-npy", "--out", str(out / "g.png")]) == 0
    )
    assert (
        main(["inpaint", str(run), "--mask", "box:0,0,4,8", "--n", "2", "--steps", "2", "--out", str(out / "e.png")])
        == 0
    )
    assert main(["explain", "schedules", "--T", "50", "--out", str(out / "x.png")]) == 0
    return root


@pytest.mark.parametrize("name", ["g.png", "g.npy", "g.gif", "e.png", "x.png"])
def test_artefact_reproduces_bit_identically(made, name, capsys):
    capsys.readouterr()
    assert main(["reproduce", str(made / "out" / (name + P.SUFFIX))]) == 0
    assert capsys.readouterr().out.strip().startswith(f"{name}: bit-identical")


def test_regenerated_files_go_to_out_and_the_originals_stay(made, tmp_path, capsys):
    art = made / "out" / "g.npy"
    before = {p: p.stat().st_mtime_ns for p in art.parent.iterdir()}
    capsys.readouterr()
    assert main(["reproduce", str(art) + P.SUFFIX, "--out", str(tmp_path / "again")]) == 0
    assert np.array_equal(np.load(tmp_path / "again" / "g.npy"), np.load(art))
    said = capsys.readouterr()
    assert str(art.parent) not in said.err and said.out.startswith("g.npy: ")  # no path the files did not go to
    assert {p: p.stat().st_mtime_ns for p in art.parent.iterdir()} == before
    # the same again into that folder replaces its own earlier reproduction; a file of the user's there stays
    assert main(["reproduce", str(art) + P.SUFFIX, "--out", str(tmp_path / "again")]) == 0
    (tmp_path / "mine").mkdir()
    np.save(tmp_path / "mine" / "g.npy", np.zeros(3))
    capsys.readouterr()
    assert main(["reproduce", str(art) + P.SUFFIX, "--out", str(tmp_path / "mine")]) == 2
    assert "already holds g.npy" in capsys.readouterr().err and np.load(tmp_path / "mine" / "g.npy").shape == (3,)


def test_a_changed_artefact_is_reported_different(made, tmp_path, capsys):
    import shutil

    for f in ("g.png", "g.png" + P.SUFFIX):
        shutil.copy(made / "out" / f, tmp_path / f)
    img = np.asarray(Image.open(tmp_path / "g.png")).copy()
    img[5, 5] = 255 - img[5, 5]
    Image.fromarray(img).save(tmp_path / "g.png")
    capsys.readouterr()
    assert main(["reproduce", str(tmp_path / ("g.png" + P.SUFFIX))]) == 1
    assert "g.png: different" in capsys.readouterr().out
    # --out in the original's own folder would write the regenerated file over it (and then call it identical)
    changed = (tmp_path / "g.png").read_bytes()
    for out in (tmp_path, tmp_path / "." / ""):
        assert main(["reproduce", str(tmp_path / ("g.png" + P.SUFFIX)), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "holds the original g.png" in err[0], err
    assert (tmp_path / "g.png").read_bytes() == changed and sorted(p.name for p in tmp_path.iterdir()) == [
        "g.png",
        "g.png" + P.SUFFIX,
    ]


def test_compare_by_content_and_tolerance(tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    np.save(tmp_path / "b.npy", x + 1e-6)
    np.save(tmp_path / "c.npy", x + 1e-2)
    assert P.compare(tmp_path / "a.npy", tmp_path / "b.npy").verdict == "within tolerance"
    assert P.compare(tmp_path / "a.npy", tmp_path / "c.npy").verdict == "different"
    img = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    img.save(tmp_path / "a.png", compress_level=9)
    img.save(tmp_path / "b.png", compress_level=0)  # other bytes, same pixels
    assert P.compare(tmp_path / "a.png", tmp_path / "b.png").verdict == "identical"
    report = {"fd": 1.0, "sampling": {"seconds": 3.0, "n": 8}}
    (tmp_path / "a.json").write_text(json.dumps(report))
    (tmp_path / "b.json").write_text(json.dumps({**report, "sampling": {"seconds": 9.0, "n": 8}}))
    (tmp_path / "c.json").write_text(json.dumps({**report, "fd": 1.5}))
    assert P.compare(tmp_path / "a.json", tmp_path / "b.json").verdict == "identical"
    assert P.compare(tmp_path / "a.json", tmp_path / "c.json").verdict == "different"
    # evaluate's summary.html shows the report's timings too: the page is compared without them
    from torchdiffusion.evaluation.evaluate import write_report

    for name, r in (
        ("a", report),
        ("b", {**report, "sampling": {"seconds": 9.0, "n": 8}}),
        ("c", {**report, "fd": 1.5}),
    ):
        write_report({"run": "r", **r}, None, tmp_path / name)
    pages = {name: tmp_path / name / "summary.html" for name in "abc"}
    assert P.compare(pages["a"], pages["b"]).verdict == "identical"
    assert P.compare(pages["a"], pages["c"]).verdict == "different"


def test_bad_manifests_are_refused_in_one_line(made, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(made / "run", run)
    manifest = json.loads((made / "out" / ("g.png" + P.SUFFIX)).read_text())
    manifest["run"]["path"] = str(run)
    m = tmp_path / ("g.png" + P.SUFFIX)
    m.write_text(json.dumps(manifest))
    w = bytearray((run / "ema.safetensors").read_bytes())
    w[-1] ^= 1  # one bit of one weight
    (run / "ema.safetensors").write_bytes(bytes(w))
    (tmp_path / "notes.json").write_text('{"hello": 1}')
    for name, env in (("env-text", "x"), ("env-threads", {**manifest["environment"], "threads": -1})):
        (tmp_path / f"{name}.json").write_text(json.dumps({**manifest, "environment": env}))  # tracebacks before
    out = tmp_path / "again"
    for args, says in [
        ((m, "--out", out), "has changed since"),
        ((tmp_path / "notes.json",), "is not a manifest"),
        ((tmp_path / "env-text.json",), "its environment section is not an object"),
        ((tmp_path / "env-threads.json",), "its thread count -1 is not a positive integer"),
    ]:
        rc, stdout, err = cli("reproduce", *args)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and says in err, err
    (run / "config.json").write_text("{ damaged")
    rc, _, err = cli("reproduce", m, "--out", out)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "config.json is damaged" in err, err
    assert not out.exists()  # refused before anything was written


def test_an_exported_folder_reproduces_bit_identically(made, tmp_path, capsys):
    """A folder artefact (written whole by io.atomic_folder) is regenerated elsewhere and compared file by file."""
    for module in ("onnx", "onnxruntime"):
        pytest.importorskip(module, reason=f"{module} is not installed (the 'onnx' extra)")
    folder = tmp_path / "onnx"
    assert main(["export", str(made / "run"), "--format", "onnx", "--out", str(folder)]) == 0
    before = P.artefact_digest(folder)
    capsys.readouterr()
    assert main(["reproduce", str(folder) + P.SUFFIX]) == 0
    assert capsys.readouterr().out.startswith("onnx: bit-identical")
    assert P.artefact_digest(folder) == before  # the original folder was not rewritten
    # --out holding a folder of that name (a run folder, say) or inside the original folder: refused, both kept
    victim = tmp_path / "runs" / "onnx"
    victim.mkdir(parents=True)
    (victim / "ema.safetensors").write_bytes(b"weights")
    for out, needle in (
        (tmp_path / "runs", "already holds onnx, which the regenerated"),
        (folder / "again", "holds the original"),
    ):
        capsys.readouterr()
        assert main(["reproduce", str(folder) + P.SUFFIX, "--out", str(out)]) == 2
        assert needle in capsys.readouterr().err
    assert (victim / "ema.safetensors").read_bytes() == b"weights" and P.artefact_digest(folder) == before


def test_regenerated_files_never_replace_the_files_of_a_run_folder(made, tmp_path, capsys):
    """--out may be any folder, a run folder too, but what the command writes there (the artefact and the files
    written beside it, here sample's settings config.json) must not land on the run's own files."""
    from torchdiffusion.commands.reproduce import Redirect
    from torchdiffusion.config import ConfigError

    run = made / "run"
    art = tmp_path / "made" / "config.png"  # its settings go to config.json beside it: harmless in a plain folder
    assert main(["sample", str(run), "--n", "2", "--steps", "2", "--out", str(art)]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["reproduce", str(art) + P.SUFFIX, "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("would replace config.json of the run folder " + str(run) + "; choose another path"), err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    # every write is checked as it is routed, whatever the command writes
    with pytest.raises(ConfigError, match="would replace run.json"):
        Redirect(run, tmp_path / "made").route(tmp_path / "made" / "run.json")
    assert Redirect(run, tmp_path / "made").route(tmp_path / "made" / "new.png") == run / "new.png"
    # a config.json alone (sample's settings) does not make a folder a run folder: the same sample writes again
    assert main(["sample", str(run), "--n", "2", "--steps", "2", "--out", str(art)]) == 0


@pytest.mark.parametrize("stop", [KeyboardInterrupt, OSError(28, "No space left on device")], ids=["ctrl-c", "disk"])
def test_a_stopped_command_marks_what_it_wrote_and_runs_again(made, tmp_path, monkeypatch, capsys, stop):
    """A command stopped between its outputs (Ctrl-C while the GIF is written, after the picture and the .npy)
    leaves whole files whose manifests say it stopped; the same command again replaces them (they are its own),
    and their manifests then say it finished."""
    from torchdiffusion.commands import sample as S

    out = tmp_path / "g.png"
    argv = ["sample", str(made / "run"), "--n", "3", "--seed", "4", "--gif", "--save-npy", "--out", str(out)]

    def stopped(*a, **k):
        raise stop

    with monkeypatch.context() as m:
        m.setattr(S.Recorder, "save", stopped)
        assert main(argv) != 0
    assert out.is_file() and out.with_suffix(".npy").is_file() and not out.with_suffix(".gif").exists()
    m_npy = json.loads(P.manifest_path(out.with_suffix(".npy")).read_text())
    assert m_npy["stopped"] == ("Ctrl-C" if stop is KeyboardInterrupt else "OSError: No space left on device")
    assert P.read_manifest(P.manifest_path(out))["stopped"] == m_npy["stopped"]
    capsys.readouterr()
    assert main(["reproduce", str(P.manifest_path(out.with_suffix(".npy")))]) == 0  # the whole command runs again
    out_, err = capsys.readouterr()
    assert out_.startswith("g.npy: bit-identical") and f"stopped before it finished ({m_npy['stopped']})" in err
    assert main(argv) == 0  # its own outputs: replaced, not refused as the user's files
    for name in ("g.png", "g.npy", "g.gif"):
        assert "stopped" not in json.loads(P.manifest_path(tmp_path / name).read_text())


def test_the_same_command_writes_its_outputs_again(made, tmp_path):
    """The files sample writes beside its picture (settings .json, GIF, .npy) replace an earlier command's outputs
    (their manifests, or the picture's, say so), but not a file of the user's own of that name."""
    import shutil

    out = Path(shutil.copytree(made / "out", tmp_path / "out"))
    argv = ["sample", str(made / "run"), "--n", "3", "--seed", "4", "--gif", "--save-npy", "--out", str(out / "g.png")]
    assert main(argv) == 0
    (out / "g.npy.manifest.json").unlink()  # now g.npy is not known to be an output
    assert main(argv) == 2
    assert main(argv[:7] + argv[8:]) == 0  # without --save-npy nothing is written over it


def test_files_written_beside_a_replaced_output_go_with_it(made, tmp_path, capsys):
    """sample --out g.png over an earlier --gif --save-npy draw of other seeds: the old g.gif and g.npy (and their
    manifests) described the g.png that is gone and are removed; one the user changed since, a file of another stem,
    and the companions of a draw replaced by the same picture stay."""
    run, out = str(made / "run"), tmp_path / "out"
    first = ["sample", run, "--n", "3", "--seed", "4", "--gif", "--save-npy", "--out", str(out / "g.png")]
    assert main(first) == 0
    (out / "other.npy").write_bytes((out / "g.npy").read_bytes())
    assert main(["sample", run, "--n", "3", "--seed", "4", "--out", str(out / "g.png")]) == 0  # the same picture
    assert (out / "g.gif").is_file() and (out / "g.npy").is_file()
    capsys.readouterr()
    assert main(["sample", run, "--n", "3", "--seed", "9", "--out", str(out / "g.png")]) == 0  # another picture
    assert "removed g.gif, g.npy" in capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["g.json", "g.png", "g.png" + P.SUFFIX, "other.npy"], names
    assert main(first) == 0
    np.save(out / "g.npy", np.zeros(3))  # the user's own since: kept
    assert main(["sample", run, "--n", "3", "--seed", "9", "--out", str(out / "g.png")]) == 0
    assert (out / "g.npy").is_file() and not (out / "g.gif").exists()


def test_a_stopped_command_takes_away_the_companions_of_what_it_replaced(made, tmp_path, monkeypatch):
    """Ctrl-C after sample has written the new g.png and g.npy but before its GIF and settings record: the old g.gif
    and g.json described the g.png that is gone, and go as they would at the end of a finished command."""
    from torchdiffusion.commands import sample as sample_command

    run, out = str(made / "run"), tmp_path / "out"
    args = ["sample", run, "--n", "3", "--gif", "--save-npy", "--out", str(out / "g.png")]
    assert main([*args, "--seed", "4"]) == 0

    def stop(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sample_command.Recorder, "save", stop)
    assert main([*args, "--seed", "9"]) == 130
    names = sorted(p.name for p in out.iterdir())
    assert names == ["g.npy", "g.npy" + P.SUFFIX, "g.png", "g.png" + P.SUFFIX], names
    assert json.loads((out / ("g.png" + P.SUFFIX)).read_text())["stopped"] == "Ctrl-C"


KILL_IN_GIF = """
import os, signal, sys
from torchdiffusion.commands import sample
sample.Recorder.save = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # kill -9 while the GIF is written
from torchdiffusion.cli import main
main(sys.argv[1:])
"""


def test_a_killed_command_leaves_files_the_same_command_replaces(made, tmp_path):
    """kill -9 after sample has written its picture and .npy, in its GIF: no code of the command runs again, yet
    each file it wrote has a manifest (provisional, "unfinished"), so the same command replaces them as its own
    instead of refusing them as the user's, and their manifests then say it finished."""
    import subprocess
    import sys

    out = tmp_path / "g.png"
    argv = ["sample", str(made / "run"), "--n", "3", "--seed", "4", "--gif", "--save-npy", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", KILL_IN_GIF, *argv], capture_output=True, text=True, env=env)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert out.is_file() and out.with_suffix(".npy").is_file() and not out.with_suffix(".gif").exists()
    for name in ("g.png", "g.npy"):
        assert P.read_manifest(P.manifest_path(tmp_path / name))["stopped"] == P.UNFINISHED
    assert main(argv) == 0
    for name in ("g.png", "g.npy", "g.gif"):
        assert "stopped" not in P.read_manifest(P.manifest_path(tmp_path / name))
    names = sorted(p.name for p in tmp_path.iterdir())  # the settings record: listed in g.png's manifest, no own
    assert names == sorted(["g.json", *(f"g.{e}{s}" for e in ("png", "npy", "gif") for s in ("", P.SUFFIX))])


def test_an_editing_manifest_records_the_images_it_drew(made):
    """inpaint --n 2: two images, image k from seed + k (edit.inpaint_images), recorded as such."""
    (rec,) = json.loads((made / "out" / ("e.png" + P.SUFFIX)).read_text())["sampling"]
    assert rec["n"] == 2 and rec["seeds"] == [[0, 1]] and rec["conditioning"] is None
    assert rec["wrappers"][0]["name"] == "inpaint"


def test_the_files_a_command_read_are_recorded_and_checked(made, tmp_path, capsys):
    """An edited image and a mask file (img2img, inpaint) and a run's metrics (explain loss): their sha256 in the
    manifest; reproduce refuses in one line once one has changed, and explain loss names its run."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(made / "run", run)
    lines = [{"images_seen": 64 * (i + 1), "loss": 1 / (i + 1), "loss_by_sigma": [2 / (i + 1), 0.5]} for i in range(3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    image, mask = tmp_path / "a.png", tmp_path / "hole.png"
    Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.uint8)).save(image)
    Image.fromarray(((np.arange(64).reshape(8, 8) % 8 < 4) * 255).astype(np.uint8)).save(mask)
    made_by = {
        "i.png": ["inpaint", str(run), "--images", str(image), "--mask", str(mask), "--steps", "2"],
        "s.png": ["img2img", str(run), "--images", str(image), "--steps", "2"],
        "l.png": ["explain", "loss", str(run)],
    }
    reads = {"i.png": [image, mask], "s.png": [image], "l.png": [run / "metrics.jsonl"]}
    for name, argv in made_by.items():
        assert main([*argv, "--out", str(tmp_path / name)]) == 0
        m = P.read_manifest(P.manifest_path(tmp_path / name))
        assert m["inputs"] == {str(p.resolve()): P.sha256_file(p) for p in reads[name]}, name
        capsys.readouterr()
        assert main(["reproduce", str(P.manifest_path(tmp_path / name))]) == 0
        assert capsys.readouterr().out.startswith(f"{name}: bit-identical")
    loss = P.read_manifest(P.manifest_path(tmp_path / "l.png"))["run"]
    assert loss["path"] == str(run.resolve()) and loss["config_sha256"] == P.config_sha256(
        __import__("torchdiffusion.config", fromlist=["x"]).from_json((run / "config.json").read_text())
    )
    first = image.read_bytes()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)  # the input edited after the picture was made
    with open(run / "metrics.jsonl", "a") as f:  # the run trained on
        f.write("\n")
    for name in made_by:
        rc, _, err = cli("reproduce", P.manifest_path(tmp_path / name))
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "has changed since" in err, err
    image.write_bytes(first)
    mask.unlink()
    rc, _, err = cli("reproduce", P.manifest_path(tmp_path / "i.png"))
    assert rc == 2 and "is missing" in err and "hole.png" in err, err
    (tmp_path / "damaged.json").write_text(json.dumps({**m, "inputs": ["a.png"]}))
    rc, _, err = cli("reproduce", tmp_path / "damaged.json")
    assert rc == 2 and "its inputs section is not a map" in err, err


def test_a_command_reading_a_run_that_training_updates_records_the_weights_it_loaded(made, tmp_path, monkeypatch):
    """Training writes new weights (and run.json) while sample draws from the ones it loaded: the sample finished,
    then failed writing its manifest ("the run changed while in use"), leaving files marked killed. It records the
    sha256 of the bytes it loaded; reproduce then says the weights have changed."""
    import shutil

    from torchdiffusion import generate as G
    from torchdiffusion.training.checkpoint import RUN_INFO, WEIGHTS_KEY

    run = tmp_path / "run"
    shutil.copytree(made / "run", run)
    loaded = P.sha256_file(run / "ema.safetensors")
    info = json.loads((run / RUN_INFO).read_text())
    info[WEIGHTS_KEY] = {"ema.safetensors": loaded, "model.safetensors": P.sha256_file(run / "model.safetensors")}
    (run / RUN_INFO).write_text(json.dumps(info))
    real = G.generate

    def checkpoint_meanwhile(*a, **k):  # a training step's export: new weights, then run.json naming them
        out = real(*a, **k)
        w = bytearray((run / "ema.safetensors").read_bytes())
        w[-1] ^= 1
        (run / "ema.safetensors").write_bytes(bytes(w))
        info[WEIGHTS_KEY]["ema.safetensors"] = P.sha256_file(run / "ema.safetensors")
        (run / RUN_INFO).write_text(json.dumps(info))
        return out

    monkeypatch.setattr(G, "generate", checkpoint_meanwhile)
    rc, _, err = cli("sample", run, "--n", 2, "--steps", 2, "--out", tmp_path / "s.png")
    assert rc == 0, err
    m = P.read_manifest(P.manifest_path(tmp_path / "s.png"))
    assert "stopped" not in m and m["run"]["weights_sha256"] == loaded and m["run"]["weights_verified"] is True
    monkeypatch.setattr(G, "generate", real)
    rc, _, err = cli("reproduce", P.manifest_path(tmp_path / "s.png"))
    assert rc == 2 and "has changed since" in err, err


def test_a_file_another_process_wrote_over_gets_no_manifest_from_this_one(made, tmp_path, monkeypatch, capsys):
    """Two sample commands into one --out at once: the one that finished last described the other's picture
    (its argv and seeds beside the other's sha256), and reproduce called it different."""
    from torchdiffusion.commands import sample as S

    out = tmp_path / "g.png"
    real = S.Recorder.save

    def the_other_writes_meanwhile(self, path, *a, **k):  # while this one draws its GIF, the other finishes
        rc, _, err = td("sample", made / "run", "--n", "2", "--seed", "9", "--out", out)  # another process
        assert rc == 0, err
        return real(self, path, *a, **k)

    monkeypatch.setattr(S.Recorder, "save", the_other_writes_meanwhile)
    capsys.readouterr()
    assert main(["sample", str(made / "run"), "--n", "2", "--seed", "1", "--gif", "--out", str(out)]) == 0
    assert "g.png: replaced by another process while this command ran" in capsys.readouterr().err
    m = P.read_manifest(P.manifest_path(out))
    assert "--seed" in m["command"]["argv"] and m["command"]["argv"][m["command"]["argv"].index("--seed") + 1] == "9"
    assert m["artefact"]["sha256"] == P.sha256_file(out)
    gif = P.read_manifest(P.manifest_path(out.with_suffix(".gif")))  # the GIF is this command's own
    assert gif["command"]["argv"][gif["command"]["argv"].index("--seed") + 1] == "1" and "g.png" not in gif["files"]
