"""Tables: the quantile map, the mixed diffusion against an exact denoiser, imputation, the metrics, the CLI."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from tinyruns import cli
from torchdiffusion.config import SampleConfig, override
from torchdiffusion.data import DataError, load_data
from torchdiffusion.data.table import (
    decode_rows,
    encode_rows,
    fit_quantiles,
    quantile_forward,
    quantile_inverse,
    read_csv,
)
from torchdiffusion.evaluation.tables import correlation_error, dcr, independent_marginals, tstr
from torchdiffusion.presets import get_preset
from torchdiffusion.tabular import TableDiffusion, sample_table
from torchdiffusion.types import NoiseSource

pytestmark = pytest.mark.usefixtures("one_thread")

P_CAT = torch.tensor([0.6, 0.3, 0.1])  # the categorical column's law in the oracle


def test_quantile_map_round_trip_and_gaussian_output():
    v = np.random.default_rng(0).exponential(size=500)
    q = fit_quantiles(v)
    z = quantile_forward(v, q, 500)
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.05  # a skewed column becomes ~N(0, 1)
    assert z.max() == pytest.approx(-z.min()) and z.max() == pytest.approx(3.0902, abs=1e-4)  # Phi^-1(1 - 1/1000)
    np.testing.assert_allclose(quantile_inverse(z, q, 500), v, rtol=1e-6, atol=1e-9)  # exact on the data's range
    assert np.all(np.diff(quantile_forward(np.sort(v), q, 500)) >= 0)  # monotone


class ExactTable(TableDiffusion):
    """The exact denoiser of independent columns: N(0, 1) numeric (D = x / (1 + sigma^2)) and P_CAT categorical."""

    def denoise(self, z, c, sigma, cond=None):
        return z / (1 + sigma[:, None] ** 2), [P_CAT.log().expand(len(z), -1) for _ in self.categories]


def _exact_model(steps_cfg="sample.steps=64"):
    cfg = override(get_preset("table-iris"), [steps_cfg])
    return ExactTable(cfg, 2, (3,))


def _plan(steps: int, sampler: str = "heun", **settings) -> SampleConfig:
    """The table preset's sampling (Heun on the Karras grid) at ``steps``, or another sampler on that grid."""
    base = get_preset("table-iris").sample
    return replace(base, sampler=sampler, steps=steps, settings=replace(base.settings, **settings))


@pytest.mark.parametrize("sampler, order, bound", [("heun", 2, 0.02), ("euler", 1, 0.2), ("dpmpp_2m", 2, 0.02)])
def test_exact_denoiser_samples_the_data_law(sampler, order, bound):
    """The numeric part is integrated by the sampler named, at that sampler's order of convergence."""
    m = _exact_model()

    def error(steps):  # vs the probability-flow ODE of N(0, 1) data solved exactly: z(0) = z(s_max)/sqrt(1 + s_max^2)
        z = sample_table(m, range(200), _plan(steps, sampler))[:, :2]
        z_max = NoiseSource(range(200), (2,)).initial() * m.sigma_max
        return (z - z_max / math.sqrt(1 + m.sigma_max**2)).abs().max().item()

    e32, e64 = error(32), error(64)
    assert e64 < bound and 2**order * 0.85 < e32 / e64 < 2**order * 1.3, (e32, e64)  # halving h: error / 2^p


@pytest.mark.parametrize("sampler, settings", [("heun", {}), ("euler_ancestral", {"eta": 1.0})])
def test_categorical_cells_take_the_data_law_beside_any_sampler(sampler, settings):
    c = sample_table(_exact_model(), range(3000), _plan(16, sampler, **settings))[:, 2].long()
    share = torch.bincount(c, minlength=3) / len(c)
    assert (share - P_CAT).abs().max() < 0.03


@pytest.mark.parametrize("sampler, settings", [("heun", {}), ("adaptive", {}), ("euler_ancestral", {"eta": 1.0})])
def test_the_reverse_process_has_the_forward_marginals_at_every_level(sampler, settings):
    """With the exact denoiser, the sampler's state at each level sigma it reaches has the forward process's
    marginal there: a cell masked with probability 1 - alpha(sigma), the unmasked ones in the data's category
    shares, and - for the ODE samplers, whose 32 Heun steps or adaptive steps solve it to ~1 % (a first-order
    stochastic one is 15 % narrow at sigma 0.3) - numeric z_sigma ~ N(0, 1 + sigma^2). The adaptive solver's
    levels are its own, not a grid's."""
    from torchdiffusion.categorical import alpha_of_sigma
    from torchdiffusion.tabular import reverse_states

    n = 4000
    states = reverse_states(_exact_model(), range(n), _plan(32, sampler, **settings), [4.0, 1.0, 0.3])
    for sigma, x in states:
        z = x[:, :2] / math.sqrt(1 + sigma**2)
        if sampler != "euler_ancestral":
            assert (z.mean(0).abs() < 0.06).all() and ((z.std(0) - 1).abs() < 0.04).all(), (sigma, z.std(0))
        c = x[:, 2].long()
        masked = (c == 3).float().mean().item()
        assert abs(masked - (1 - alpha_of_sigma(torch.tensor(sigma)).item())) < 0.025, (sigma, masked)
        share = torch.bincount(c[c < 3], minlength=3) / (c < 3).sum()
        assert (share - P_CAT).abs().max() < 0.05, (sigma, share)
    assert [s for s, _ in states] == sorted((s for s, _ in states), reverse=True) and states[-1][0] < 0.5


def test_per_row_seeds_and_known_cells():
    m = _exact_model()
    for plan in (_plan(16), _plan(16, "euler_ancestral", eta=1.0)):  # stochastic steps too: row k from seed k
        a = sample_table(m, [5, 6, 7], plan)
        b = sample_table(m, [7], plan)
        assert torch.equal(a[2], b[0])  # row k depends on seed k alone
    known = torch.tensor([[1.5, 0.0, 2.0]]).expand(4, -1)
    mask = torch.tensor([[True, False, True]]).expand(4, -1)
    x = sample_table(m, range(4), _plan(16), known=known, known_mask=mask)
    assert torch.equal(x[:, 0], known[:, 0]) and torch.equal(x[:, 2], known[:, 2])


def test_training_loss_is_finite_and_masks_categories(tmp_path):
    cfg = get_preset("table-iris")
    m = TableDiffusion(cfg, 4, (3,))
    x0 = torch.cat([torch.randn(8, 4), torch.randint(0, 3, (8, 1)).float()], 1)
    big = m.training_loss(x0, torch.full((8,), 80.0), torch.randn(8, 5))
    assert torch.isfinite(big).all()
    # at sigma -> 0 nothing is masked: no cross-entropy, only the (zero-initialised net) numeric error
    small = m.training_loss(x0, torch.full((8,), 1e-3), torch.randn(8, 5))
    assert torch.isfinite(small).all()


def _csv(path, rows, header="a,b,colour"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_csv_kinds_missing_cells_and_unseen_categories(tmp_path):
    f = _csv(tmp_path / "t.csv", ["1.5,2,red", "2.5,,blue", "NaN,1,red"])  # known cells inside g.csv's range
    t = read_csv(f)
    assert set(t.numeric) == {"a", "b"} and t.categorical["colour"] == ["red", "blue", "red"]
    assert math.isnan(t.numeric["a"][2]) and math.isnan(t.numeric["b"][1])
    cfg = override(get_preset("table-iris"), ["data.source=csv", f"data.path={f}", "data.holdout=0"])
    with pytest.raises(DataError, match="column 'a' has 1 missing cell"):
        load_data(cfg.data)
    good = _csv(tmp_path / "g.csv", [f"{i + 0.25},{i % 3},{'red' if i % 2 else 'blue'}" for i in range(20)])
    cfg = override(cfg, [f"data.path={good}"])
    data = load_data(cfg.data)
    x, known = encode_rows(read_csv(f), data.schema, "t.csv")
    assert known.tolist() == [[True, True, True], [True, False, True], [False, True, True]]
    rows = decode_rows(x[:1], data.schema)
    assert rows[0][0] == pytest.approx(1.5, rel=1e-4) and rows[0][1] == 2 and rows[0][2] == "red"  # b: integers
    bad = _csv(tmp_path / "b.csv", ["1,2,green"])
    with pytest.raises(DataError, match="'green', unseen in training"):
        encode_rows(read_csv(bad), data.schema, "b.csv")


def test_cells_only_python_reads_as_numbers_are_text(tmp_path):
    """A number is written in ASCII digits: codes like 39_4, full-width and Arabic-Indic digits are text (float()
    read them as 394, 12, 12 - a column of distinct codes became numbers with repeats)."""
    f = _csv(tmp_path / "t.csv", ["39_4,1", "\uff11\uff12,2", "\u0661\u0662,3", "12,4", " 7 ,5"], header="code,v")
    t = read_csv(f)
    assert t.categorical["code"] == ["39_4", "\uff11\uff12", "\u0661\u0662", "12", "7"] and list(t.numeric) == ["v"]
    g = _csv(tmp_path / "n.csv", ["+1.5e2,1", ".5,2", "5.,3", " 7 ,4"], header="x,v")
    assert read_csv(g).numeric["x"].tolist() == [150.0, 0.5, 5.0, 7.0]


def test_whole_numbers_beyond_float64_are_refused_unless_read_as_categories(tmp_path):
    """An ID column beyond 2**53 was rounded by float64: samples showed digits no row had. One line names the
    column and the way to keep it exact; 2**53 itself and categorical reading are fine."""
    ids = [f"{12345678901234567000 + 1000 * i},{i}" for i in range(6)]
    f = _csv(tmp_path / "big.csv", ids, header="id,v")
    with pytest.raises(DataError, match=r"column 'id' holds the whole number 12345678901234567000 in row 2"):
        read_csv(f)
    assert read_csv(f, categorical=("id",)).categorical["id"][1] == "12345678901234568000"
    ok = _csv(tmp_path / "ok.csv", [f"{2**53 - i},{i}" for i in range(3)], header="id,v")
    assert read_csv(ok).numeric["id"][0] == 2**53


@pytest.mark.parametrize(
    "name, text",
    [
        ("comma", "a,b,colour\n1.5,2,red\n-2.25,,blue\n"),
        ("excel_utf8", "\ufeffa,b,colour\r\n1.5,2,red\r\n-2.25,,blue\r\n"),  # byte order mark, CRLF
        ("european", "a;b;colour\n1,5;2;red\n-2,25;;blue\n"),  # semicolons and decimal commas
        ("tab", "a\tb\tcolour\n1.5\t2\tred\n-2.25\t\tblue\n"),
        ("pipe", "a|b|colour\n1.5|2|red\n-2.25|NA|blue\n"),
        ("quoted", '"a","b","colour"\n"1.5","2","red"\n"-2.25","","blue"\n'),
    ],
    ids=["comma", "excel_utf8", "european", "tab", "pipe", "quoted"],
)
def test_csv_dialects_read_to_the_same_table(tmp_path, name, text):
    """A spreadsheet's exports: each read as the same three columns (a tab-separated file was one text column,
    a semicolon one refused, a byte order mark renamed the first column)."""
    (tmp_path / "t.csv").write_bytes(text.encode("utf-8"))
    t = read_csv(tmp_path / "t.csv")
    assert t.columns == ["a", "b", "colour"] and t.categorical == {"colour": ["red", "blue"]}
    assert t.numeric["a"].tolist() == [1.5, -2.25] and t.numeric["b"][0] == 2 and math.isnan(t.numeric["b"][1])
    assert (t.delimiter, t.decimal) == {"european": (";", ","), "tab": ("\t", "."), "pipe": ("|", ".")}.get(
        name, (",", ".")
    )


def test_gzipped_csv_files_read_as_the_plain_ones(tmp_path):
    import gzip

    from torchdiffusion.data.signal import read_signal_file

    text = "a;b;colour\n1,5;2;red\n-2,25;;blue\n"
    (tmp_path / "t.csv.gz").write_bytes(gzip.compress(text.encode()))
    t = read_csv(tmp_path / "t.csv.gz")
    assert t.columns == ["a", "b", "colour"] and t.numeric["a"].tolist() == [1.5, -2.25]
    (tmp_path / "s.csv.gz").write_bytes(gzip.compress(b"label,t0,t1\nc0,0.5,1\nc1,2,-1\n"))
    values, labels = read_signal_file(tmp_path / "s.csv.gz")
    assert labels == ["c0", "c1"] and values[:, 0].tolist() == [[0.5, 1.0], [2.0, -1.0]]
    (tmp_path / "cut.csv.gz").write_bytes(gzip.compress(text.encode())[:-12])
    with pytest.raises(DataError, match="cut.csv.gz is not a readable CSV file .damaged gzip data"):
        read_csv(tmp_path / "cut.csv.gz")
    with pytest.raises(DataError, match="cannot read cut.csv.gz .damaged gzip data"):
        read_signal_file(tmp_path / "cut.csv.gz")


def test_metrics_flag_copies_and_the_baseline_loses_correlations():
    cfg = get_preset("table-wine")
    train, held = load_data(cfg.data, "train"), load_data(cfg.data, "holdout")
    s = train.schema
    copy = dcr(train.x, held.x, train.x, s)
    assert copy["dcr_copy_share"] == 1.0
    indep = independent_marginals(train.x, 2000, s)
    assert dcr(train.x, held.x, indep, s)["dcr_copy_share"] < 0.2
    assert correlation_error(held.x, indep, s) > 2 * correlation_error(held.x, train.x, s)
    fed_back = tstr(train.x, held.x, train.x, s)
    assert fed_back["tstr"] == fed_back["trtr"] > 0.9  # the same rows give the same classifier
    assert tstr(train.x, held.x, indep, s)["tstr"] < 0.7


def test_train_on_synthetic_takes_any_evaluation_seed():
    """--seed reaches 2^62, and scikit-learn's random_state only 2^32 - 1: tstr failed after sampling for a seed
    beyond it; its random_state is now the seed folded into that range (seed mod 2^32), so the same for both."""
    cfg = get_preset("table-wine")
    train, held = load_data(cfg.data, "train"), load_data(cfg.data, "holdout")
    big = 5_000_000_000
    assert tstr(train.x, held.x, train.x, train.schema, seed=big) == tstr(
        train.x, held.x, train.x, train.schema, big % 2**32
    )


def test_metrics_count_the_cells_a_row_decodes_to(tmp_path):
    """A column constant in training decodes to that constant whatever the model drew for it, so the metrics
    (marginal W1, correlations, distances to records) must not see the drawn codes: a table equal to the held-out
    rows in every decoded cell scores as those rows do. Values beyond the training range decode to its ends."""
    from torchdiffusion.data.table import as_decoded, normalise_table, raw_to_tensor
    from torchdiffusion.evaluation.tables import table_metrics

    rng = np.random.default_rng(0)
    rows = [f"{rng.normal():.4f},7,{'ab'[i % 2]}" for i in range(200)]
    data = raw_to_tensor(read_csv(_csv(tmp_path / "k.csv", rows, header="a,k,colour")), "k", "colour")
    data = normalise_table(data, torch.arange(150))
    train, held, s = data.x[:150], data.x[150:], data.schema
    drawn = held.clone()
    drawn[:, 1] = torch.randn(50, generator=torch.Generator().manual_seed(0)) * 2  # the constant column's codes
    assert [r[1] for r in decode_rows(drawn, s)] == [7.0] * 50
    same, noisy = table_metrics(train, held, held, s), table_metrics(train, held, drawn, s)
    assert noisy["marginal_by_column"]["k"] == 0.0 and noisy == same
    assert correlation_error(held, drawn, s) > 0.05  # the encoded codes alone would count the draw as an error
    beyond = held.clone()
    beyond[:, 0] = 50.0  # far beyond the largest training value: decodes to it
    top = float(train[:, 0].max())
    assert torch.allclose(as_decoded(beyond, s)[:, 0], torch.full((50,), top), atol=1e-5)


def test_cli_train_sample_impute_and_bad_input(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(120):
        k = i % 3
        rows.append(f"{rng.normal(k, 0.3):.3f},{rng.normal(-k, 0.3):.3f},c{k}")
    data = _csv(tmp_path / "d.csv", rows, header="u,v,kind")
    run = tmp_path / "run"
    settings = ["data.source=csv", f"data.path={data}", "data.target=kind", "data.holdout=30"]
    settings += ["train.images=512", "model.mlp_width=32", "model.mlp_depth=1", "sample.steps=4", "sample.n=8"]
    rc, _, err = cli(
        "train", "--preset", "table-iris", "--out", run, "--no-progress", *[f"--set={a}" for a in settings]
    )
    assert rc == 0, err
    rc, out, err = cli("sample", run, "--n", "6", "--given", "kind=c2", "--out", tmp_path / "s.csv")
    assert rc == 0, err
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "u,v,kind" and len(lines) == 7 and all(ln.endswith(",c2") for ln in lines[1:])
    # a numeric given cell is written as given (it came back through the quantile map, to six digits)
    rc, out, err = cli("sample", run, "--n", "3", "--given", "u=0.123456789", "--out", tmp_path / "s9.csv")
    assert rc == 0 and all(ln.startswith("0.123456789,") for ln in (tmp_path / "s9.csv").read_text().splitlines()[1:])
    drawn = {}  # the sampler named is the one that runs: the preset's (heun) by default, any other on request
    for name, flags in [("default", ()), ("heun", ("--sampler", "heun")), ("euler", ("--sampler", "euler"))]:
        rc, _, err = cli("sample", run, "--n", "5", *flags, "--out", tmp_path / f"{name}.csv")
        assert rc == 0, err
        drawn[name] = (tmp_path / f"{name}.csv").read_text()
    assert drawn["default"] == drawn["heun"] != drawn["euler"]
    # what made them, beside them: the settings record and each file's manifest name the draw
    record = json.loads((tmp_path / "euler.json").read_text())
    assert (record["sample"]["sampler"], record["seeds"], record["nfe"]) == ("euler", [0, 4], 4)
    assert record["grid_used"]["grid"] and record["files"] == ["euler.csv", "euler.png"]
    given = json.loads((tmp_path / "s.json").read_text())
    assert given["given"] == ["kind=c2"] and given["nfe"] == 2 * 4 - 1  # the preset's heun
    # no classifier-free guidance runs on a table (given cells are fixed, not guided toward): recorded as none ran
    assert all((r["guidance"], r["conditioning"]) == (None, None) for r in (record, given)), (record, given)
    for name in ("euler.csv", "euler.png"):
        (draw,) = json.loads((tmp_path / f"{name}.manifest.json").read_text())["sampling"]
        assert (draw["sampler"], draw["steps"], draw["seeds"], draw["n"]) == ("euler", 4, [[0, 4]], 5)
    (draw,) = json.loads((tmp_path / "s.csv.manifest.json").read_text())["sampling"]
    assert draw["wrappers"] == [{"name": "known cells", "fixed": 6}]
    rc, _, err = cli("evaluate", run, "--n", "16", "--sampler", "euler", "--steps", "3", "--grid", "exponential",
                     "--out", tmp_path / "ev")  # fmt: skip
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    sampling = report["sampling"]
    assert rc == 0 and (sampling["sampler"], sampling["steps"], sampling["grid"]) == ("euler", 3, "exponential"), err
    assert {p.name for p in (tmp_path / "ev").iterdir() if "manifest" not in p.name} == {
        "report.json", "summary.html", "samples.csv", "samples.png"}  # fmt: skip
    rc, _, err = cli("evaluate", run, "--n", "16", "--steps", "3", "--grid", "karras", "--rho", "3",
                     "--sampler", "euler_ancestral", "--eta", "0.5", "--out", tmp_path / "ev-rho")  # fmt: skip
    shaped = json.loads((tmp_path / "ev-rho" / "report.json").read_text())
    assert rc == 0 and (shaped["sampling"]["rho"], shaped["sampling"]["settings"]) == (3.0, {"eta": 0.5}), err
    assert shaped["model"] != report["model"]
    for option in (["--nll-n", "5"], ["--contrastive", "x"], ["--metrics", "fd"]):  # image metrics' options
        rc, _, err = cli("evaluate", run, "--n", "16", *option, "--out", tmp_path / "g")
        assert rc == 2 and len(err.strip().splitlines()) == 1 and option[0] in err and "table runs" in err, err
    # a row of empty cells is a row to fill whole: it was dropped, and the rows after it answered the wrong inputs
    _csv(tmp_path / "h.csv", ["1.0,,c1", ",-2.0,", ",,", "1.2345678,7e-5,"], header="u,v,kind")
    rc, out, err = cli("impute", run, "--csv", tmp_path / "h.csv", "--out", tmp_path / "f.csv")
    assert rc == 0, err
    filled = [ln.split(",") for ln in (tmp_path / "f.csv").read_text().splitlines()[1:]]
    assert len(filled) == 4
    assert filled[0][0] == "1.0" and filled[0][2] == "c1" and filled[1][1] == "-2.0"  # known cells as read
    assert filled[3][:2] == ["1.2345678", "7e-5"]  # every digit, in the file's own form
    assert all(cell for row in filled for cell in row)
    # a known cell beyond the training range: the model would answer the range's end (--given refuses it too)
    _csv(tmp_path / "h3.csv", ["13.2345678,,c1"], header="u,v,kind")
    rc, out, err = cli("impute", run, "--csv", tmp_path / "h3.csv", "--out", tmp_path / "f3.csv")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "outside the values the model was trained on" in err
    assert not (tmp_path / "f3.csv").exists()
    # the answer keeps the given file's column order (it came back in the training file's)
    _csv(tmp_path / "h2.csv", ["c1,,1.0"], header="kind,v,u")
    rc, out, err = cli("impute", run, "--csv", tmp_path / "h2.csv", "--out", tmp_path / "f2.csv")
    lines = (tmp_path / "f2.csv").read_text().splitlines()
    assert rc == 0 and lines[0] == "kind,v,u" and lines[1].startswith("c1,") and lines[1].endswith(",1.0"), err
    for name, flags in [("euler", ("--sampler", "euler")), ("heun", ())]:  # the sampling flags of 'sample'
        rc, out, err = cli("impute", run, "--csv", tmp_path / "h.csv", *flags, "--out", tmp_path / f"f-{name}.csv")
        assert rc == 0, err
    assert (tmp_path / "f-heun.csv").read_text() == (tmp_path / "f.csv").read_text()
    assert (tmp_path / "f-euler.csv").read_text() != (tmp_path / "f.csv").read_text()
    for flags, needle in [
        (("--eta", "1"), "sampler 'heun' has no setting 'eta'"),
        (("--set", "sample.seed=3"), "--set sample.seed changes nothing: impute sets it by --seed"),
    ]:
        rc, out, err = cli("impute", run, "--csv", tmp_path / "h.csv", *flags, "--out", tmp_path / "g.csv")
        assert rc == 2 and needle in err and not (tmp_path / "g.csv").exists(), err
    rows_eu = [ln.replace(",", ";").replace(".", ",") for ln in (tmp_path / "d.csv").read_text().splitlines()]
    (tmp_path / "d_eu.csv").write_text("\n".join(rows_eu) + "\n")  # the same table as a European spreadsheet's
    settings_eu = [a.replace("d.csv", "d_eu.csv") for a in settings]
    rc, _, err = cli(
        "train",
        "--preset",
        "table-iris",
        "--out",
        tmp_path / "run_eu",
        "--no-progress",
        *[f"--set={a}" for a in settings_eu],
    )
    assert rc == 0, err
    rc, out, err = cli("sample", tmp_path / "run_eu", "--n", "3", "--out", tmp_path / "s_eu.csv")
    assert rc == 0, err
    lines = (tmp_path / "s_eu.csv").read_text().splitlines()
    assert lines[0] == "u;v;kind" and all(len(ln.split(";")) == 3 and "." not in ln for ln in lines[1:]), lines
    # a value as the run writes it (a decimal comma) is read back as --given
    rc, out, err = cli("sample", tmp_path / "run_eu", "--n", "2", "--given", "u=1,25", "--out", tmp_path / "g_eu.csv")
    assert rc == 0, err
    assert all(ln.split(";")[0] == "1,25" for ln in (tmp_path / "g_eu.csv").read_text().splitlines()[1:])
    (tmp_path / "h_eu.csv").write_text("u;v;kind\n1,5;;c1\n;-2,5;\n")  # a European spreadsheet's export
    rc, out, err = cli("impute", run, "--csv", tmp_path / "h_eu.csv", "--out", tmp_path / "f_eu.csv")
    assert rc == 0, err
    lines = (tmp_path / "f_eu.csv").read_text().splitlines()
    filled = [ln.split(";") for ln in lines[1:]]
    assert lines[0] == "u;v;kind" and filled[0][0] == "1,5" and filled[0][2] == "c1" and filled[1][1] == "-2,5"
    assert all(cell and "." not in cell for row in filled for cell in row)  # answered in the file's own dialect
    _csv(tmp_path / "x.csv", ["1.0,,c7"], header="u,v,kind")
    mine = b"a picture of the user's own"
    (tmp_path / "mine.png").write_bytes(mine)  # where a sample --out mine.csv would draw its picture
    for args, msg in [
        (("sample", run, "--n", "2", "--out", tmp_path / "mine.csv"), "mine.png (beside"),
        (("impute", run, "--csv", tmp_path / "x.csv", "--out", tmp_path / "g.csv"), "'c7', unseen in training"),
        (("sample", run, "--given", "kind=c9", "--out", tmp_path / "g.csv"), "'c9', unseen in training"),
        (("sample", run, "--given", "u=1", "--given", "u=2", "--out", tmp_path / "g.csv"), "'u' twice"),
        (("sample", run, "--guidance", "3", "--out", tmp_path / "g.csv"), "--guidance does not apply to table runs"),
        (("sample", run, "--save-npy", "--out", tmp_path / "g.csv"), "--save-npy does not apply to table runs"),
        (("sample", run, "--precision", "bf16", "--out", tmp_path / "g.csv"), "--precision does not apply to table"),
        (("sample", run, "--negative-prompt", "x", "--out", tmp_path / "g.csv"), "--negative-prompt does not apply"),
        (("sample", run, "--eta", "0.5", "--out", tmp_path / "g.csv"), "sampler 'heun' has no setting 'eta'"),
        (("sample", run, "--sampler", "nope", "--out", tmp_path / "g.csv"), "unknown sampler 'nope'"),
        (("explain", "trajectory", run, "--out", tmp_path / "g.png"), f"(see 'explain table-forward {run}', which"),
        (("explain", "ablation", run, "--out", tmp_path / "g.png"), "draws the sampler's path through continuous"),
        (("interpolate", run, "--seeds", "1", "2", "--out", tmp_path / "g.png"), "holds table data"),
        (("outpaint", run, "--right", "4", "--save-wav", "--out", tmp_path / "g.png"), "forecasts signals; "),
        (("export", run, "--format", "onnx", "--out", tmp_path / "g"), "holds table data"),
        (("bench-samplers", "--run", run, "--nfe", "3", "--n", "16", "--out", tmp_path / "g"), "holds table data"),
        (("distill", run, "--method", "reflow", "--steps", "1", "--out", tmp_path / "g"), "1 categorical column(s)"),
        (
            (
                "train",
                "--preset",
                "table-iris",
                "--out",
                tmp_path / "r2",
                "--set",
                "data.source=csv",
                "--set",
                f"data.path={tmp_path / 'h.csv'}",
            ),
            "missing cell",
        ),
    ]:
        rc, _, err = cli(*args)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and msg in err, err
    assert not (tmp_path / "g.csv").exists() and not (tmp_path / "r2" / "config.json").exists()
    assert not (tmp_path / "g.png").exists() and not (tmp_path / "g").exists()
    assert not (tmp_path / "mine.csv").exists() and (tmp_path / "mine.png").read_bytes() == mine


def test_explain_table_forward_draws_and_refuses_other_data(tmp_path):
    from torchdiffusion.explain import table_forward

    data = load_data(get_preset("table-iris").data)
    out = table_forward(data.x, data.schema, [0.01, 1.0, 8.0], path=tmp_path / "f.png")
    assert out.stat().st_size > 10_000
    rc, _, err = cli("explain", "table-forward", "--data", "digits", "--out", tmp_path / "g.png")
    assert rc == 2 and "needs table data" in err and len(err.strip().splitlines()) == 1
    run = tmp_path / "run"  # a run's picture: its sampler's reverse process under the forward one
    sets = ["train.images=64", "model.mlp_width=16", "model.mlp_depth=1", "sample.steps=4"]
    assert cli("train", "--preset", "table-iris", "--out", run, "--no-progress", *[f"--set={a}" for a in sets])[0] == 0
    rc, _, err = cli("explain", "table-forward", run, "--sigmas", "0.01", "1", "8", "--out", tmp_path / "r.png")
    assert rc == 0, err
    from PIL import Image

    forward, both = Image.open(tmp_path / "f.png"), Image.open(tmp_path / "r.png")
    assert both.width == forward.width and both.height > 1.8 * forward.height  # a second block of rows


def test_a_consistency_table_model_is_the_identity_at_sigma_min():
    """diffusion.boundary=consistency on a table of numeric columns: f(z, sigma_min) = z whatever the weights
    (Song et al. 2023, Eq. 5), a float64 state answered in float64; refused where categorical columns are."""
    from torchdiffusion.config import ConfigError

    cfg = override(get_preset("table-iris"), ["diffusion.boundary=consistency", "model.mlp_width=16"])
    m = TableDiffusion(cfg, 3, ())
    z = torch.randn(5, 3, dtype=torch.float64)
    out = m(z, torch.full((5,), m.sigma_min, dtype=torch.float64))
    assert out.dtype == torch.float64 and torch.allclose(out, z, atol=1e-6)
    assert not torch.allclose(m(z, torch.full((5,), 1.0)), z, atol=1e-3)  # elsewhere the network speaks
    with pytest.raises(ConfigError, match="categorical column"):
        TableDiffusion(cfg, 2, (3,))


@pytest.mark.parametrize("method", ["progressive", "consistency", "reflow", "dmd"])
def test_a_table_of_numeric_columns_is_distilled_and_sampled_in_few_steps(tmp_path, method):
    """A table of numeric columns is one denoiser D(x, sigma): every distillation method makes a student run that
    samples CSV rows in the steps it was distilled for (its grid in grids/), and refuses more."""
    rng = np.random.default_rng(0)
    rows = [f"{rng.normal(i % 3, 0.3):.3f},{rng.normal(-(i % 3), 0.3):.3f},{rng.exponential():.3f}" for i in range(90)]
    data = _csv(tmp_path / "num.csv", rows, header="u,v,w")
    teacher = tmp_path / "teacher"
    sets = [f"data.path={data}", "data.source=csv", "train.images=256", "model.mlp_width=16", "model.mlp_depth=1"]
    assert (
        cli("train", "--preset", "table-iris", "--out", teacher, "--no-progress", *[f"--set={a}" for a in sets])[0] == 0
    )
    student = tmp_path / "student"
    extra = ["--pairs", "32"] if method == "reflow" else []
    rc, _, err = cli("distill", teacher, "--method", method, "--steps", "2", "--images", "64", "--batch-size", "32",
                     *extra, "--no-progress", "--out", student)  # fmt: skip
    assert rc == 0, err
    cfg = json.loads((student / "config.json").read_text())
    assert (
        cfg["objective"]["max_steps"] == 2 and cfg["sample"]["grid"] == "tuned" and list((student / "grids").iterdir())
    )
    rc, _, err = cli("sample", student, "--n", "4", "--out", tmp_path / "s.csv")
    assert rc == 0, err
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert (
        lines[0] == "u,v,w"
        and len(lines) == 5
        and all(np.isfinite(float(v)) for ln in lines[1:] for v in ln.split(","))
    )
    rc, _, err = cli("sample", student, "--n", "4", "--steps", "3", "--out", tmp_path / "t.csv")
    assert rc == 2 and "distilled for at most 2 sampling steps" in err and not (tmp_path / "t.csv").exists()
    rc, _, err = cli("export", teacher, "--format", "onnx", "--out", tmp_path / "x")  # no symbols, but a schema
    assert rc == 2 and "only the run's table schema maps back" in err and "symbols" not in err, err
    if method == "progressive":  # its one grid is for 2 steps; the way to another is not bench-samplers (images')
        rc, _, err = cli("sample", student, "--n", "4", "--steps", "1", "--out", tmp_path / "t.csv")
        assert rc == 2 and "(it has steps 2); a table's grids come from distill" in err and "bench" not in err, err


def test_a_marginals_picture_of_values_beyond_its_range_draws_without_a_warning(tmp_path):
    """An untrained model's rows can all lie beyond the panels' +-4 (quantile-normal units): the column is drawn
    empty with a note, not as a 0 / 0 density (numpy's RuntimeWarning)."""
    import warnings

    from torchdiffusion.viz import save_samples

    data = load_data(get_preset("table-iris").data)
    x = data.x[:5].clone()
    x[:, 0] = 9.0  # the first numeric column entirely off the panel
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = save_samples(x, "table", tmp_path / "m.png", reference=data.x, schema=data.schema)
    assert out.stat().st_size > 5_000


def test_given_cells_refuse_a_fraction_in_a_column_of_whole_numbers():
    """A column that held only integers is written back rounded: --given age=30.5 drew rows of age 30 (or 31)."""
    from torchdiffusion.data.table import TableSchema
    from torchdiffusion.kinds import given_cells

    schema = TableSchema.from_dict(
        {
            "numeric": ["age"],
            "categorical": [],
            "categories": [],
            "quantiles": [[18.0, 40.0, 90.0]],
            "integer": [True],
            "columns": ["age"],
            "fit_rows": 3,
        }  # fmt: skip
    )
    known, mask = given_cells(schema, ["age=30"], 2)
    assert known.shape == (2, 1) and bool(mask.all())
    with pytest.raises(ValueError, match="holds whole numbers"):
        given_cells(schema, ["age=30.5"], 2)
    # impute --csv reads its cells through the same check (it took 30.5 and answered rows of another age)
    import numpy as np

    from torchdiffusion.data.table import RawTable, encode_rows

    table = RawTable(["age"], {"age": np.array([30.0, 30.5, np.nan])}, {})
    with pytest.raises(ValueError, match="h.csv: column 'age' holds 30.5; it holds whole numbers"):
        encode_rows(table, schema, "h.csv")


def test_a_category_spelled_none_is_a_category_not_a_missing_cell(tmp_path):
    """'None' (an allergy of none, say) was read as a missing cell, and training refused the column; the missing
    markers are the documented ones: empty, NA, NaN, null, ?."""
    from torchdiffusion.data.table import read_csv

    (tmp_path / "n.csv").write_text("x,allergy\n0.1,None\n0.2,Peanut\n0.3,none\n0.4,NA\n")
    table = read_csv(tmp_path / "n.csv")
    assert table.categorical["allergy"] == ["None", "Peanut", "none", None]


def test_a_run_names_its_data_file_from_any_working_folder(tmp_path):
    """data.path was recorded as given, relative to where training ran, and evaluate (or card --evaluate) from
    anywhere else said the file did not exist: config.json records it absolute; a resume from the first folder,
    whose config.json of before said it relative, is the same run."""
    work = tmp_path / "work"
    work.mkdir()
    rows = [f"{i % 7 * 0.5:.2f},{(i * 3) % 5 * 0.25:.2f},c{i % 2}" for i in range(60)]
    _csv(work / "d.csv", rows, header="u,v,kind")
    sets = ["data.source=csv", "data.path=d.csv", "data.holdout=12", "train.images=64", "model.mlp_width=16"]
    sets += ["model.mlp_depth=1", "sample.steps=2", "train.checkpoint_every_images=32"]
    args = ["train", "--preset", "table-iris", "--out", "run", "--no-progress", *[f"--set={a}" for a in sets]]
    rc, _, err = cli(*args, cwd=work)
    assert rc == 0, err
    config = json.loads((work / "run" / "config.json").read_text())
    assert config["data"]["path"] == str((work / "d.csv").resolve())
    rc, _, err = cli("evaluate", "work/run", "--n", "8", "--out", "ev", cwd=tmp_path)
    assert rc == 0 and (tmp_path / "ev" / "report.json").is_file(), err
    config["data"]["path"] = "d.csv"  # as runs recorded it before
    (work / "run" / "config.json").write_text(json.dumps(config))
    rc, out, err = cli(*args, "--set=train.images=96", cwd=work)  # resumed: the same data, from here
    assert rc == 0 and "resum" in out + err, err


def test_demo_of_a_table_preset_writes_its_samples_as_a_csv(tmp_path):
    """`demo --preset` of a table preset trains and then samples the table's way (a CSV and its picture, as
    `sample` writes them); the image path it took before failed inside the network on the categorical columns."""
    out = tmp_path / "demo"
    settings = ["train.images=64", "train.batch_size=32", "model.mlp_width=32", "model.mlp_depth=1", "sample.steps=3"]
    rc, stdout, err = cli(
        "demo", "--preset", "table-iris", "--out", out, "--n", "5", "--no-progress", *[f"--set={a}" for a in settings]
    )
    assert rc == 0, err
    csv = out / "samples" / "demo.csv"
    assert str(csv) in stdout.split()
    lines = csv.read_text().splitlines()
    schema = json.loads((out / "run.json").read_text())["schema"]
    assert lines[0].split(",") == [*schema["numeric"], *schema["categorical"]]  # the data's own columns
    assert len(lines) == 6 and all(row.split(",")[-1] in schema["categories"][0] for row in lines[1:]), lines
    assert (out / "samples" / "demo.json").exists() and (out / "samples" / "demo.png").exists()


def test_impute_writes_a_decimal_comma_run_s_numbers_with_its_comma_where_the_file_shows_no_mark(tmp_path):
    """A semicolon file whose cells show no decimal mark (whole numbers, empty cells) was written with decimal
    points beside its semicolons; it takes the training file's comma, and a file that shows its mark keeps it."""
    rng = np.random.default_rng(0)
    rows = [f"{i % 20};{rng.normal():.3f}".replace(".", ",") + f";c{i % 3}" for i in range(60)]
    data = _csv(tmp_path / "d.csv", rows, header="count;x;kind")
    run = tmp_path / "run"
    settings = ["data.source=csv", f"data.path={data}", "data.holdout=0", "data.target=null", "train.images=64"]
    settings += ["model.mlp_width=16", "model.mlp_depth=1", "sample.steps=2"]
    rc, _, err = cli(
        "train", "--preset", "table-iris", "--out", run, "--no-progress", *[f"--set={a}" for a in settings]
    )
    assert rc == 0, err
    for name, text, mark in [
        ("bare", "count;x;kind\n4;;c1\n;;\n", ","),
        ("point", "count;x;kind\n4;;c1\n5;0.5;c2\n", "."),
    ]:
        (tmp_path / f"{name}.csv").write_text(text)
        rc, _, err = cli("impute", run, "--csv", tmp_path / f"{name}.csv", "--out", tmp_path / f"{name}-out.csv")
        assert rc == 0, err
        filled = [line.split(";")[1] for line in (tmp_path / f"{name}-out.csv").read_text().splitlines()[1:]]
        other = "." if mark == "," else ","
        assert all(other not in v for v in filled) and any(mark in v for v in filled), filled


def test_known_cells_outside_the_training_range_are_refused_by_impute_as_by_given(tmp_path):
    """The quantile map clamps a value beyond the training minimum or maximum to that end: impute's known cells
    (b=1000 in a column trained on 0 to 10) conditioned the row on 10 while the file written back said 1000.
    --given refused it; impute's file took it. Both read known cells through encode_rows, which refuses it."""
    from torchdiffusion.data.base import DataError
    from torchdiffusion.data.table import TableSchema, encode_rows, read_csv
    from torchdiffusion.kinds import given_cells

    schema = TableSchema.from_dict(
        {
            "numeric": ["b"],
            "categorical": [],
            "categories": [],
            "quantiles": [[0.0, 5.0, 10.0]],
            "integer": [False],
            "columns": ["b"],
            "fit_rows": 3,
        }  # fmt: skip
    )
    (tmp_path / "ok.csv").write_text("b\n0\n10\n2.5\n")
    known, mask = encode_rows(read_csv(tmp_path / "ok.csv", (), keep_empty=True), schema, "ok.csv")
    assert bool(mask.all()) and known.shape == (3, 1)  # the training minimum and maximum are inside
    for value in ("1000", "-0.5", "10.001"):
        (tmp_path / "bad.csv").write_text(f"b\n3\n{value}\n")
        with pytest.raises(DataError, match=r"bad.csv: column 'b' holds .*outside the values the model was trained"):
            encode_rows(read_csv(tmp_path / "bad.csv", (), keep_empty=True), schema, "bad.csv")
        with pytest.raises(ValueError, match=r"--given: column 'b' holds .*outside the values the model was trained"):
            given_cells(schema, [f"b={value}"], 2)
