"""`torchdiffusion bench-samplers` end to end on the exact 8-Gaussians denoiser, tiny settings (real subprocess)."""

import json

from pictures import assert_plot
from tinyruns import td


def test_bench_samplers_on_the_exact_mixture(tmp_path):
    out = tmp_path / "bench"
    rc, _, err = td(
        *("bench-samplers", "--case", "8gaussians", "--n", "300", "--nfe", "2,16", "--samplers", "euler,heun"),
        *("--grids", "karras,tuned", "--tuned-samplers", "euler", "--tune-maxfev", "10", "--fit-n", "50"),
        *("--no-diffusers", "--out", out),
    )
    assert rc == 0, err
    res = json.loads((out / "results.json").read_text())
    assert "--case 8gaussians" in res["command"]
    rows = res["rows"]
    assert [r["family"] for r in rows].count("floor") == 1
    ours = {(r["sampler"], r["grid"], r["budget"]): r for r in rows if r["family"] == "torchdiffusion"}
    want = {("euler", g, b) for g in ("karras", "tuned") for b in (2, 16)} | {("heun", "karras", b) for b in (2, 16)}
    assert want <= set(ours)
    for key in want:
        assert 1 <= ours[key]["nfe"] <= key[2], key  # never more network calls than the budget
    # Euler converges: 16 steps on the Karras grid are far closer to the data than 2.
    assert ours[("euler", "karras", 16)]["sw"] < 0.3 * ours[("euler", "karras", 2)]["sw"]
    # A grid fitted to the denoiser beats the standard grid at 2 steps; one case keeps its grids in OUT/grids.
    assert ours[("euler", "tuned", 2)]["sw"] < ours[("euler", "karras", 2)]["sw"]
    for nfe in (2, 16):
        g = json.loads((out / "grids" / f"euler-nfe{nfe}.json").read_text())
        s = g["sigmas"]
        assert len(s) == nfe + 1 and s[-1] == 0 and all(a > b for a, b in zip(s, s[1:]))
        assert g["rms"] <= g["rms_start"]  # the fit never ends worse than it started
        # the default for data that are not clamped: fit the sample distribution (sliced Wasserstein), stopping short
        assert g["objective"] == "sliced Wasserstein-1 to the accurate ODE solution"
    table = (out / "results.md").read_text()
    assert "**8gaussians**" in table and "euler" in table and "heun" in table
    assert_plot(out / "plot.png")


def test_the_data_floor_has_as_many_images_as_each_row_has_samples(tmp_path):
    """--reference data: the floor is --n other training images against the held-out ones, as each row is --n
    samples against them (it was as many as the held-out set, whatever --n: another finite-sample bias). And
    --tuned-samplers '' (no sampler tuned) beside standard grids asks for what leaving it out does: taken, no grid
    fitted (it was refused, in the samplers page's own demo-run command)."""
    from tinyruns import write_run

    run = write_run(tmp_path / "run", "digits-test", ["sample.steps=2", "data.holdout=40"])
    rc, out, err = td(
        *("bench-samplers", "--run", run, "--reference", "data", "--n", "8", "--nfe", "2", "--samplers", "euler"),
        *("--grids", "karras", "--tuned-samplers", "", "--no-diffusers", "--out", tmp_path / "bench"),
    )
    assert rc == 0, err
    assert "reference: 40 real images (holdout); floor: 8 other training images" in out + err
    rows = json.loads((tmp_path / "bench" / "results.json").read_text())["rows"]
    ours = {(r["sampler"], r["grid"]) for r in rows if r["family"] == "torchdiffusion" and r["sampler"] != "adaptive"}
    assert ours == {("euler", "karras")}  # (beside the adaptive solver's reference rows)


def test_tuned_grids_that_stop_short(tmp_path):
    """--stop-short --fit-objective sw: the tuned grids of the samplers that can stop short record where their last
    step stops and what they minimised; a sampler that cannot (Heun evaluates D twice at the last level) is fitted
    without it, and the run still completes. (160 solves, 80 at each order: the fit starts from the unclamped auto
    grid, which 30 do not improve on for this mixture.)"""
    out = tmp_path / "bench"
    rc, _, err = td(
        *("bench-samplers", "--case", "8gaussians", "--n", "300", "--nfe", "5", "--samplers", "unipc,heun"),
        *("--grids", "tuned", "--tuned-samplers", "unipc,heun", "--tune-maxfev", "160", "--fit-n", "64"),
        *("--stop-short", "--fit-objective", "sw", "--no-diffusers", "--out", out),
    )
    assert rc == 0, err
    unipc = json.loads((out / "grids" / "unipc-nfe5.json").read_text())
    heun = json.loads((out / "grids" / "heun-nfe5.json").read_text())
    assert 0 < unipc["sigma_end"] < unipc["sigmas"][-2] and heun["sigma_end"] == 0  # the flag changes the grid
    assert unipc["objective"] == "sliced Wasserstein-1 to the accurate ODE solution"
    # UniPC is fitted at the order the unclamped auto plan gives it (2) and at its own (3), and the grid keeps the
    # order whose fit scored better; Heun has no setting the plan changes
    assert [t["settings"] for t in unipc["tried"]] == [{"order": 2}, {}]
    key = "sw"
    assert unipc["settings"] == min(unipc["tried"], key=lambda t: t[key])["settings"]
    assert heun["settings"] == {} and "tried" not in heun
    rows = {r["sampler"]: r for r in json.loads((out / "results.json").read_text())["rows"] if r["grid"] == "tuned"}
    assert rows["unipc"]["nfe"] <= 5 and rows["unipc"]["extra"].get("sigma_end", 0.0) == unipc["sigma_end"]


def test_the_fit_follows_the_data_unless_told():
    """Tuned grids of unclamped data fit the sample distribution and stop short; images keep the RMS fit; both can
    be set."""
    from torchdiffusion.bench.harness import BenchConfig, fit_choice

    assert fit_choice(BenchConfig(), clamped=False) == ("sw", True)
    assert fit_choice(BenchConfig(), clamped=True) == ("rms", False)
    assert fit_choice(BenchConfig(fit_objective="rms", stop_short=False), clamped=False) == ("rms", False)
    assert fit_choice(BenchConfig(fit_objective="sw", stop_short=True), clamped=True) == ("sw", True)


def test_no_stop_short_and_rms_turn_the_unclamped_default_off(tmp_path):
    """On unclamped data bench-samplers fits the distribution and stops short by default; --fit-objective rms
    --no-stop-short gives the RMS fit that ends at 0 - the flags change the saved grid."""
    grids = {}
    for tag, flags in (("default", ()), ("rms", ("--fit-objective", "rms", "--no-stop-short"))):
        out = tmp_path / tag
        rc, _, err = td(
            *("bench-samplers", "--case", "8gaussians", "--n", "300", "--nfe", "5", "--samplers", "unipc"),
            *("--grids", "tuned", "--tuned-samplers", "unipc", "--tune-maxfev", "160", "--fit-n", "64"),
            *("--no-diffusers", "--out", out, *flags),
        )
        assert rc == 0, err
        grids[tag] = json.loads((out / "grids" / "unipc-nfe5.json").read_text())
    assert grids["default"]["objective"].startswith("sliced Wasserstein-1") and grids["default"]["sigma_end"] > 0
    assert grids["rms"]["objective"].startswith("rms error") and grids["rms"]["sigma_end"] == 0
    assert grids["default"]["sigmas"] != grids["rms"]["sigmas"]


def test_each_table_bolds_the_lowest_value_of_its_own_metric():
    """The seconds table bolded the row with the lowest sliced Wasserstein, not the fastest one."""
    from torchdiffusion.bench.harness import Row, markdown

    rows = [
        Row("c", "floor", "-", "-", 0, 0, 0.01, 0.01, 0.0),
        Row("c", "torchdiffusion", "euler", "karras", 5, 5, sw=0.1, energy=0.3, seconds=0.002),
        Row("c", "torchdiffusion", "heun", "karras", 5, 5, sw=0.2, energy=0.1, seconds=0.001),
    ]

    def bolded(metric):
        lines = markdown(rows, (5,), metric).splitlines()
        return [ln.split("|")[2].strip() for ln in lines if ln.startswith("|") and "**" in ln]

    bold = {m: bolded(m) for m in ("sw", "energy", "seconds")}
    assert bold == {"sw": ["euler"], "energy": ["heun"], "seconds": ["heun"]}


def test_tuned_grids_are_reused_only_where_they_were_fit_for_the_same_case_and_settings(tmp_path):
    """A tuned grid is reused only for the case, sampler, NFE and fit settings it records; otherwise it is refit
    and replaced (a file of an older version without that record too), and several cases under one --grid-dir
    get a subfolder each."""
    tiny = ("--n", "200", "--nfe", "5", "--no-diffusers", "--samplers", "dpmpp_2m", "--grids", "karras,tuned")
    fit = ("--tune-maxfev", "5", "--fit-n", "16")
    out = tmp_path / "bench"

    def bench(*extra):
        rc, o, err = td("bench-samplers", *tiny, *extra, "--out", out)
        assert rc == 0, err
        return o

    grid = out / "grids" / "dpmpp_2m-nfe5.json"
    bench("--case", "8gaussians", *fit)
    first = json.loads(grid.read_text())
    assert first["fit"]["case"] == "8gaussians" and first["fit"]["fit_n"] == 16
    assert "reused" in bench("--case", "8gaussians", *fit)  # same case and settings
    o = bench("--case", "mixture64", *fit)
    assert "refitting" in o and json.loads(grid.read_text())["fit"]["case"] == "mixture64"
    o = bench("--case", "mixture64", "--tune-maxfev", "5", "--fit-n", "24", "--fit-objective", "rms")
    meta = json.loads(grid.read_text())
    assert "refitting" in o and meta["fit"]["fit_n"] == 24 and meta["fit"]["objective"] == "rms"
    old = {k: v for k, v in meta.items() if k != "fit"}  # as an older version wrote it
    grid.write_text(json.dumps(old))
    assert "refitting" in bench("--case", "mixture64", "--tune-maxfev", "5", "--fit-n", "24", "--fit-objective", "rms")
    moved = out / "grids" / "dpmpp_2m-nfe10.json"  # renamed to another NFE: not used for it
    grid.rename(moved)
    gd = tmp_path / "gd"
    gd.mkdir()
    (gd / "dpmpp_2m-nfe5.json").write_text(moved.read_text())
    rc, o, err = td("bench-samplers", *tiny, *fit, "--case", "8gaussians,mixture64", "--grid-dir", gd, "--out", out)
    assert rc == 0, err
    for case in ("8gaussians", "mixture64"):
        assert json.loads((gd / case / "dpmpp_2m-nfe5.json").read_text())["fit"]["case"] == case
    from torchdiffusion.samplers.optimize_grid import find_tuned_grid

    assert len(find_tuned_grid(gd / "mixture64", "dpmpp_2m", 5)) == 6  # sample's own loading reads the files


def test_a_run_s_tuned_grid_follows_its_weights_not_its_folder_s_path(tmp_path):
    """A trained run's tuned grid records the weights it was fit to: reused after the run folder is moved, refit
    once the weights change (it recorded the folder's full path: a moved run was refit, a retrained one was not)."""
    from tinyruns import write_run

    tiny = ("--reference", "ode", "--ref-steps", "2", "--n", "40", "--nfe", "3", "--samplers", "dpmpp_2m")
    tiny += ("--grids", "tuned", "--tuned-samplers", "dpmpp_2m", "--tune-maxfev", "4", "--fit-n", "8", "--no-diffusers")

    def bench(run):
        rc, o, err = td("bench-samplers", "--run", run, *tiny, "--out", tmp_path / "bench")
        assert rc == 0, err
        return o + err

    run = write_run(tmp_path / "run", "toy-2d", ["sample.steps=3"], data_shape=(2,))
    assert "reused" not in bench(run)
    moved = run.rename(tmp_path / "moved")
    assert "reused" in bench(moved)
    write_run(moved, "toy-2d", ["sample.steps=3"], data_shape=(2,), jitter=0.1)  # other weights
    out = bench(moved)
    assert "refitting" in out and "reused" not in out
