"""scripts/bench_default_sampler.py on a small set: every figure is the mean over the starting-noise seeds, the
floor is the mean of its independent exact draws, and the exact ODE from the same noises scores at the floor's
level (it gives exact samples); an unknown mixture is refused in one line. And scripts/unclamped_default_check.py:
every table x error x step count compares every candidate setting with the default."""

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bench_default_sampler as bench  # noqa: E402

POINTS_DDPM = [  # an eps model of 2-D points on the 1000-step cosine table (as scripts/unclamped_plan_check.py's runs)
    "diffusion.process=discrete",
    "diffusion.parameterization=eps",
    "diffusion.schedule=cosine",
    "diffusion.noise_conditioning=timestep",
    "diffusion.sigma_sampling=discrete",
]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_means_over_seeds_and_the_exact_ode_at_the_floor(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "import_k_sampling", lambda: None)  # peers are optional; not under test here
    monkeypatch.setattr(bench.diffusers_driver, "available", lambda: False)
    out = tmp_path / "held-out"
    assert (
        bench.main(["--out", str(out), "--cases", "narrow3", "--n", "400", "--seeds", "2", "--floor-draws", "4"]) == 0
    )
    (r,) = json.loads((out / "results.json").read_text())["results"]
    assert r["seeds"] == [0, 100]
    assert len(r["floor_draws"]) == 4 and math.isclose(r["floor"], sum(r["floor_draws"]) / 4)
    rows = (r["default_nfe10"], r["default_nfe5"], r["tuned_nfe5"], r["tuned_short_nfe5"], r["tuned_short_nfe10"])
    for row in (*rows, r["exact_ode"], *r["grids_nfe10"]):
        assert len(row["sw_seeds"]) == 2 and math.isclose(row["sw"], sum(row["sw_seeds"]) / 2)
    # the tuned grids are fitted at the settings the default plan brings (UniPC of order 2) and at UniPC's own, the
    # one with the better fit objective kept and sampled at
    assert r["default_nfe5"]["knobs"] == {"order": 2}
    short = r["tuned_short_nfe5"]
    assert [t["settings"] for t in short["tried"]] == [{"order": 2}, {}]
    assert short["settings"] == min(short["tried"], key=lambda t: t["sw"])["settings"]
    assert r["tuned_nfe5"]["settings"] in ({"order": 2}, {})
    # The exact ODE maps the starting noise to exact samples: its distance is sampling noise, like the floor's.
    spread = max(r["floor_draws"]) - min(r["floor_draws"])
    assert r["exact_ode"]["sw"] < max(r["floor_draws"]) + spread
    # Heun on the old Karras grid from 157 is far worse than that at NFE 10 (docs/samplers.md): the check can fail.
    heun = next(g for g in r["grids_nfe10"] if g["sampler"] == "heun" and g["grid"] == "karras to 157")
    assert heun["sw"] > 3 * r["exact_ode"]["sw"]
    assert math.isclose(r["tuned_nfe5"]["over_floor"], r["tuned_nfe5"]["sw"] / r["floor"])
    assert "Means over 2 starting noises (seeds 0, 100)" in (out / "results.md").read_text()


def test_unknown_mixture_is_one_line(tmp_path, capsys):
    assert bench.main(["--out", str(tmp_path / "x"), "--cases", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown case 'nope'")
    assert not (tmp_path / "x").exists()


def test_unclamped_default_check_compares_every_setting_with_the_default(tmp_path):
    import unclamped_default_check as check

    out = tmp_path / "check"
    assert check.main(["--out", str(out), "--cases", "narrow3", "--n", "300"]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    # two tables x two errors x three step counts x every setting, on the one mixture
    assert len(rows) == 2 * 2 * 3 * len(check.SETTINGS)
    assert all(math.isfinite(r["sw"]) for r in rows)
    table = (out / "results.md").read_text().splitlines()
    assert len(table) == 2 + 2 * 2 * 3 and all(line.count("/1, worst") == len(check.SETTINGS) - 1 for line in table[2:])
    assert check.main(["--out", str(tmp_path / "x"), "--cases", "nope"]) == 2


def test_unclamped_plan_check_compares_the_auto_plan_with_the_grid_it_replaced(tmp_path, capsys):
    """scripts/unclamped_plan_check.py on a DDPM and a continuous point run: a row per setting, the deterministic
    samplers on the log-SNR grid down to 1 / n (UniPC of order 2), the stochastic ones on the model's timesteps,
    every ratio auto / before; a missing run folder is one line, exit 2."""
    import unclamped_plan_check as check

    from tinyruns import write_run

    ddpm = write_run(tmp_path / "ddpm", "toy-2d", [*POINTS_DDPM, "model.mlp_width=32"], data_shape=(2,))
    edm = write_run(tmp_path / "edm", "toy-2d", ["model.mlp_width=32"], data_shape=(2,))
    out = tmp_path / "plan" / "results.json"
    assert check.main([str(ddpm), str(edm), "--json", str(out), "--n", "200"]) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["process"] for r in results] == ["discrete", "continuous"]
    for r in results:
        assert [(row["sampler"], row["steps"]) for row in r["rows"]] == list(check.SETTINGS)
        for row in r["rows"]:
            assert math.isclose(row["ratio"], row["auto"] / row["before"])
            stochastic = row["sampler"] in ("ddpm", "euler_ancestral", "dpmpp_2m_sde")
            if stochastic and r["process"] == "discrete":
                assert row["auto_grid"] == "uniform_t (timesteps <= 80)" and row["ratio"] == 1.0  # the same grid
            elif stochastic:
                assert row["auto_grid"] == "exponential (whole sigma range)" and row["ratio"] == 1.0
            elif not stochastic:
                assert row["auto_grid"] == f"exponential to {max(r['sigma_range'][0], 1 / row['steps']):.3g}"
            assert row["auto_knobs"] == ({"order": 2} if row["sampler"] == "unipc" else {})
            assert ("ode_grid" in row) == stochastic and (not stochastic or math.isfinite(row["ode_grid"]))
    assert "| unipc | 5 | exponential to 0.2 (order 2) |" in out.with_suffix(".md").read_text()
    capsys.readouterr()
    assert check.main([str(tmp_path / "nope"), "--json", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and not (tmp_path / "x.json").exists()


def test_unclamped_plan_check_stops_on_ctrl_c_with_nothing_written(tmp_path, monkeypatch, capsys):
    import unclamped_plan_check as check

    def interrupted(path, n):
        raise KeyboardInterrupt

    monkeypatch.setattr(check, "measure", interrupted)
    assert check.main([str(tmp_path), "--json", str(tmp_path / "out" / "r.json")]) == 130
    assert capsys.readouterr().err.strip() == "stopped; nothing written" and not (tmp_path / "out").exists()
