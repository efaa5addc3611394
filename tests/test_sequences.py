"""Sequences: masked and uniform discrete diffusion against the exact denoiser of a product distribution, the
n-gram baseline, the data sources and the command line's refusals."""

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tinyruns import cli, train_text_run
from torchdiffusion.categorical import uniform_posterior
from torchdiffusion.config import override
from torchdiffusion.data import DataError, load_data
from torchdiffusion.data.sequence import Vocabulary
from torchdiffusion.evaluation.sequences import NGram, ngram_tv
from torchdiffusion.presets import get_preset
from torchdiffusion.sequences import SequenceDiffusion, bound_bits, sample_sequences

pytestmark = pytest.mark.usefixtures("one_thread")

P = torch.tensor([0.5, 0.25, 0.15, 0.1])  # every position draws its symbol from P, independently
ENTROPY_BITS = float(-(P * P.log2()).sum())


class ExactNet(nn.Module):
    """The exact prediction for the product distribution P under both processes: P at every position. (Masked:
    the posterior of a masked position is P; uniform: Austin et al.'s Eq. 4 takes x0's law given the other
    positions, since q(x_t | x0) enters on its own - see categorical.py.)"""

    def __init__(self, discrete: str):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x_t, c_noise):
        return P.log().expand(*x_t.shape, len(P))


def exact_model(discrete: str, L: int = 8, bound: str = "weighted") -> SequenceDiffusion:
    cfg = override(get_preset("text-chars"), [f"diffusion.discrete={discrete}", "model.mlp_width=32"])
    cfg = override(cfg, [f"diffusion.masked_bound={bound}"])
    m = SequenceDiffusion(cfg, L, len(P))
    m.net = ExactNet(discrete)
    return m


def draw_data(n: int, L: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.multinomial(P, n * L, replacement=True, generator=torch.Generator().manual_seed(seed)).view(n, L)


BOUNDS = [("masked", "weighted"), ("masked", "anchored"), ("uniform", "weighted")]


@pytest.mark.parametrize(("discrete", "bound"), BOUNDS)
def test_exact_denoiser_bound_is_the_entropy(discrete, bound):
    x0 = draw_data(400)
    bits = bound_bits(exact_model(discrete, bound=bound), x0.float(), samples=16)
    data_bits = float(-P.log2()[x0].mean())  # -log2 p(x0) of these very sequences per symbol
    assert bits == pytest.approx(data_bits, rel=0.03)
    assert data_bits == pytest.approx(ENTROPY_BITS, rel=0.03)


@pytest.mark.parametrize("discrete", ["masked", "uniform"])
def test_exact_denoiser_samples_the_product_law(discrete):
    x = sample_sequences(exact_model(discrete), range(400), 16)
    share = torch.bincount(x.flatten(), minlength=len(P)) / x.numel()
    assert (share - P).abs().max() < 0.03
    a = sample_sequences(exact_model(discrete), [3, 4], 16)
    assert torch.equal(a[1], sample_sequences(exact_model(discrete), [4], 16)[0])  # sequence k: seed k alone


class CountingNet(nn.Module):
    """A denoiser that reads x_t and t: its law at every position leans toward symbol 0 the more masks it sees,
    and toward symbol 3 the larger t is - so the bound is not the entropy, and both estimators must agree on it."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x_t, c_noise):
        share = (x_t == len(P)).float().mean(1, keepdim=True)  # fraction of masks in each sequence
        logits = P.log().expand(*x_t.shape, len(P)).clone()
        logits[..., 0] += 3 * share
        logits[..., 3] += (c_noise.view(-1, 1) / 1000) * 2
        return logits


def test_anchored_and_weighted_estimate_the_same_bound_with_less_spread():
    """categorical.py: for every t and every denoiser the anchored draw's integrand equals the 1/t-weighted one."""
    x0 = draw_data(256, L=6).float()
    est = {}
    for bound in ("weighted", "anchored"):
        m = exact_model("masked", L=6, bound=bound)
        m.net = CountingNet()
        runs = torch.tensor([bound_bits(m, x0, samples=4, seed=s) for s in range(12)])
        est[bound] = (float(runs.mean()), float(runs.std()))
    (w, w_sd), (a, a_sd) = est["weighted"], est["anchored"]
    assert a == pytest.approx(w, abs=3 * (w_sd**2 / 12 + a_sd**2 / 12) ** 0.5 + 1e-3)
    assert a_sd < w_sd / 2
    assert abs(w - ENTROPY_BITS) > 0.05  # the denoiser is not exact: the test compares more than the entropy


def test_anchored_draw_masks_the_anchor_and_others_with_probability_t():
    from torchdiffusion.categorical import anchor, anchored_mask

    u = torch.rand(20000, 5, generator=torch.Generator().manual_seed(0))
    i_star, v = anchor(u)
    assert torch.bincount(i_star, minlength=5).float().div(20000).sub(0.2).abs().max() < 0.01
    assert v.min() >= 0 and v.max() < 1 and abs(float(v[:, 0].mean()) - 0.5) < 0.01
    masked = anchored_mask(u, torch.tensor(0.7))  # keep 0.7: mask probability t = 0.3 away from the anchor
    assert masked[torch.arange(20000), i_star].all()
    others = masked.clone()
    others[torch.arange(20000), i_star] = False
    assert float(others.sum()) / (20000 * 4) == pytest.approx(0.3, abs=0.01)


def test_stratified_times_cover_each_stratum_once():
    from torchdiffusion.losses import sample_sigmas

    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_sigmas("stratified", 16, generator=g) for _ in range(2000)])
    strata = (draws * 16).floor().long()
    assert all(torch.equal(row.sort().values, torch.arange(16)) for row in strata)  # one t per [k/16, (k+1)/16)
    assert abs(float(draws.mean()) - 0.5) < 0.01 and float(draws.min()) >= 0 and float(draws.max()) < 1


def test_rotary_attention_scores_depend_on_the_offset_only():
    from torchdiffusion.nets.transformer import rotary_angles, rotate

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)
    ang = rotary_angles(12, 16)

    def score(m, n):
        return float((rotate(q, ang[m : m + 1]) * rotate(k, ang[n : n + 1])).sum())

    assert score(3, 1) == pytest.approx(score(10, 8), abs=1e-4) and score(0, 0) == pytest.approx(float((q * k).sum()))
    assert abs(score(3, 1) - score(3, 2)) > 1e-3
    x = torch.randn(2, 3, 12, 16, generator=g)
    assert torch.allclose(rotate(x, ang).norm(dim=-1), x.norm(dim=-1), atol=1e-5)  # a rotation keeps lengths


def test_infilling_keeps_the_known_symbols():
    known = draw_data(6)
    mask = torch.rand(6, 8, generator=torch.Generator().manual_seed(1)) < 0.5
    for discrete in ("masked", "uniform"):
        x = sample_sequences(exact_model(discrete), range(6), 8, known=known, known_mask=mask)
        assert torch.equal(x[mask], known[mask]) and (x < len(P)).all()


def test_uniform_posterior_is_bayes_rule():
    V, a_s, a_t = 4, torch.tensor([0.7]), torch.tensor([0.4])
    x0, x_t = 2, 1
    q_s = a_s * torch.eye(V)[x0] + (1 - a_s) / V  # q(x_s | x0)
    a_ts = a_t / a_s
    q_t_given_s = a_ts * (torch.arange(V) == x_t) + (1 - a_ts) / V  # q(x_t | x_s) for each x_s
    bayes = q_s * q_t_given_s / (q_s * q_t_given_s).sum()
    got = uniform_posterior(torch.eye(V)[x0].view(1, 1, V), torch.tensor([[x_t]]), a_s, a_t)[0, 0]
    assert torch.allclose(got, bayes, atol=1e-6)


def test_ngram_is_normalised_and_beats_nothing_on_its_own_law():
    seqs = draw_data(300).tolist()
    ng = NGram(3, len(P)).fit(seqs)
    for h in [(), (0,), (1, 3), (3, 3)]:
        assert sum(ng.prob(h, c) for c in range(len(P))) == pytest.approx(1.0)
    held = draw_data(100, seed=1).tolist()
    assert ng.bits(held) == pytest.approx(ENTROPY_BITS, rel=0.05)
    assert ngram_tv(held, held) == 0.0 and ngram_tv(held, seqs) < 0.2


def test_text_and_fasta_sources(tmp_path):
    (tmp_path / "a.fasta").write_text(">one\nACGT\nacgg\n>two\nTTGA\n")
    cfg = override(get_preset("text-chars"), ["data.source=fasta", f"data.path={tmp_path / 'a.fasta'}"])
    cfg = override(cfg, ["data.seq_len=4", "data.holdout=0"])
    d = load_data(cfg.data)
    assert d.kind == "sequence" and d.schema.symbols == ("*", "A", "C", "G", "T") and d.x.shape == (3, 4)
    assert sorted(d.schema.decode(r) for r in d.x.long()) == sorted(["ACGT", "ACGG", "*TTG"])
    with pytest.raises(DataError, match="not in the model's vocabulary"):
        Vocabulary(("a", "b")).encode("abc")
    (tmp_path / "b.fasta").write_text("no header\n")
    with pytest.raises(DataError, match="not a FASTA file"):
        load_data(override(cfg, [f"data.path={tmp_path / 'b.fasta'}"]).data)
    small = override(get_preset("text-chars"), ["data.source=sklearn_text", "data.seq_len=32", "data.holdout=128"])
    old = load_data(small.data, "holdout")
    assert old.x.shape == (128, 32) and "scikit-learn" in "".join(old.schema.decode(r) for r in old.x)
    docs = load_data(override(small, ["data.source=python_docs"]).data)
    text = "".join(docs.schema.decode(r) for r in docs.x)
    assert len(text) > 400_000 and "assert" in text and "\n" in docs.schema.symbols


def test_text_files_as_editors_and_archives_write_them(tmp_path):
    """A byte order mark, Windows line ends and gzip: the same symbols as the plain file (the mark was a symbol of
    the vocabulary, a .fa.gz refused as not UTF-8)."""
    import gzip

    from torchdiffusion.data.sequence import read_fasta, read_text

    text = "ab\nba ab\n"
    (tmp_path / "plain.txt").write_text(text)
    (tmp_path / "marked.txt").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    (tmp_path / "packed.txt.gz").write_bytes(gzip.compress(text.encode()))
    assert {read_text(tmp_path / n) for n in ("plain.txt", "marked.txt", "packed.txt.gz")} == {text}
    (tmp_path / "a.fa.gz").write_bytes(gzip.compress(b">one\nACGT\n>two\nTT\n"))
    assert read_fasta(tmp_path / "a.fa.gz") == "ACGT*TT"
    (tmp_path / "cut.txt.gz").write_bytes(gzip.compress(text.encode())[:-9])
    with pytest.raises(DataError, match="cannot read .*cut.txt.gz"):
        read_text(tmp_path / "cut.txt.gz")


def test_cli_sequences_train_sample_infill_and_refusals(tmp_path):
    run = train_text_run(tmp_path / "run", images=256)
    rc, out, err = cli("impute", run, "--text", "ab__b ca", "--out", tmp_path / "f.txt")
    assert rc == 0, err
    line = (tmp_path / "f.txt").read_text().splitlines()[0]
    assert len(line) == 12 and line.startswith("ab") and line[4:8] == "b ca" and set(line) <= set("abc ")
    rc, _, err = cli("evaluate", run, "--n", "8", "--steps", "3", "--out", tmp_path / "ev")  # its own metrics
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert rc == 0 and report["kind"] == "sequence" and report["sampling"] == {"steps": 3, "seed": 10_000}, err
    assert {"samples.txt", "samples.png"} <= {p.name for p in (tmp_path / "ev").iterdir()}
    assert "samples.png" in (tmp_path / "ev" / "summary.html").read_text()
    rc, _, err = cli("sample", run, "--n", "3", "--steps", "2", "--out", tmp_path / "s.txt")
    record = json.loads((tmp_path / "s.json").read_text())  # the settings record: the process's own steps
    assert rc == 0 and (record["nfe"], record["grid_used"], record["files"]) == (2, None, ["s.txt", "s.png"]), err
    assert (record["guidance"], record["conditioning"]) == (None, None)  # no guidance ran, as for an unguided image
    (draw,) = json.loads((tmp_path / "s.txt.manifest.json").read_text())["sampling"]
    assert (draw["sampler"], draw["grid"], draw["steps"], draw["n"]) == (None, None, 2, 3)
    for args, msg in [
        (("impute", run, "--text", "abz_", "--out", tmp_path / "g.txt"), "'z', which is not in the model's"),
        (("sample", run, "--given", "a=1", "--out", tmp_path / "g.txt"), "--given fixes cells of a table"),
        # the commands of a denoiser D(x, sigma) on continuous data
        (("interpolate", run, "--seeds", "1", "2", "--out", tmp_path / "g.png"), "holds sequence data"),
        (("export", run, "--format", "onnx", "--out", tmp_path / "g"), "holds sequence data"),
        (("bench-samplers", "--run", run, "--nfe", "3", "--n", "16", "--out", tmp_path / "g"), "holds sequence data"),
        (("explain", "trajectory", run, "--out", tmp_path / "g.png"), f"see 'explain sequence-forward {run}'"),
        # a sequence samples by its process's own reverse steps: no sampler, grid or sampler setting to choose
        (("sample", run, "--sampler", "heun", "--out", tmp_path / "g.txt"), "--sampler changes nothing"),
        (("sample", run, "--grid", "karras", "--out", tmp_path / "g.txt"), "--grid changes nothing"),
        (("sample", run, "--rho", "3", "--out", tmp_path / "g.txt"), "--rho changes nothing"),
        (("sample", run, "--eta", "1", "--out", tmp_path / "g.txt"), "--eta changes nothing"),
        (("sample", run, "--set", "sample.sampler=heun", "--out", tmp_path / "g.txt"), "changes nothing"),
        (("evaluate", run, "--sampler", "heun", "--out", tmp_path / "g"), "--sampler changes nothing"),
        (("evaluate", run, "--grid", "karras", "--out", tmp_path / "g"), "--grid changes nothing"),
        (("evaluate", run, "--rho", "3", "--out", tmp_path / "g"), "--rho changes nothing"),
        (("evaluate", run, "--eta", "1", "--out", tmp_path / "g"), "--eta changes nothing"),
    ]:
        rc, _, err = cli(*args)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and msg in err, err
    assert not (tmp_path / "g.txt").exists() and not (tmp_path / "g.png").exists() and not (tmp_path / "g").exists()


# text-chars' sequence options, each set alone over the library's defaults (a learned position table, uniform
# times, the weighted bound); tiny runs on a 3-letter text, all with the same seed, data and length
SEQ_TINY = ["data.source=text", "data.seq_len=12", "data.holdout=8", "train.images=128", "train.batch_size=32"]
SEQ_TINY += ["train.log_every_images=32", "model.mlp_width=32", "model.mlp_depth=1", "sample.steps=2", "sample.n=2"]
SEQ_DEFAULTS = ["model.rotary=false", "diffusion.sigma_sampling=uniform", "diffusion.masked_bound=weighted"]


def train_text_chars(out, *settings) -> dict:
    """``train --preset text-chars`` with ``settings``: its config.json, run.json, logged losses and EMA weights."""
    sets = [f"--set={a}" for a in settings]
    rc, _, err = cli("train", "--preset", "text-chars", "--out", out, "--no-progress", *sets)
    assert rc == 0, err
    return {
        "config": json.loads((out / "config.json").read_text()),
        "run": json.loads((out / "run.json").read_text()),
        "losses": [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()],
        "weights": load_file(out / "ema.safetensors"),
    }


@pytest.fixture(scope="module")
def text_base(tmp_path_factory):
    root = tmp_path_factory.mktemp("seq-options")
    text = root / "t.txt"
    text.write_text("abcab cabca bcabc " * 40)
    tiny = [f"data.path={text}", *SEQ_TINY]
    base = train_text_chars(root / "base", *tiny, *SEQ_DEFAULTS)
    again = train_text_chars(root / "again", *tiny, *SEQ_DEFAULTS)
    assert again["losses"] == base["losses"] and len(base["losses"]) == 4  # the same settings: the same run
    return {"tiny": tiny, "base": base}


@pytest.mark.parametrize(
    "section,name,default,value",
    [
        ("model", "rotary", False, True),
        ("diffusion", "sigma_sampling", "uniform", "stratified"),
        ("diffusion", "masked_bound", "weighted", "anchored"),
    ],
)
def test_cli_sequence_option_is_recorded_and_changes_the_training(text_base, tmp_path, section, name, default, value):
    base = text_base["base"]
    setting = f"{section}.{name}={str(value).lower()}"
    run = train_text_chars(tmp_path / "run", *text_base["tiny"], *SEQ_DEFAULTS, setting)
    assert base["config"][section][name] == default and run["config"][section][name] == value  # recorded
    assert {**run["config"], section: {**run["config"][section], name: default}} == base["config"]  # alone
    assert all(a != b for a, b in zip(run["losses"], base["losses"], strict=True))  # every logged loss moved
    if name == "rotary":  # rotary angles in attention replace the learned position table
        assert "net.pos" in base["weights"] and set(run["weights"]) == set(base["weights"]) - {"net.pos"}
    else:  # the same network, trained at other times (sigma_sampling) or on another estimate of the bound
        assert set(run["weights"]) == set(base["weights"])
        assert any(not torch.equal(run["weights"][k], base["weights"][k]) for k in base["weights"])


def test_cli_python_docs_source_trains_on_the_python_documentation(tmp_path):
    """data.source=python_docs (text-chars' default) against the older sklearn_text corpus: each run records its
    source and learns the vocabulary and windows of that text."""
    tiny = ["data.seq_len=12", "data.holdout=8", "train.images=64", "train.batch_size=32", "model.mlp_width=32"]
    tiny += ["model.mlp_depth=1", "sample.steps=2", "sample.n=2"]
    runs = {}
    for source in ("python_docs", "sklearn_text"):
        runs[source] = train_text_chars(tmp_path / source, f"data.source={source}", *tiny)
        cfg = override(get_preset("text-chars"), [f"data.source={source}", *tiny])
        data = load_data(cfg.data, "train", seed=cfg.train.seed)
        assert runs[source]["config"]["data"]["source"] == source
        assert runs[source]["run"]["schema"]["symbols"] == "".join(data.schema.symbols)
        assert runs[source]["run"]["train_examples"] == len(data.x)
        assert runs[source]["config"]["model"]["vocab"] == len(data.schema.symbols)
    docs, old = runs["python_docs"], runs["sklearn_text"]
    assert "\n" in docs["run"]["schema"]["symbols"] and docs["run"]["schema"] != old["run"]["schema"]
    assert docs["run"]["train_examples"] > 10 * old["run"]["train_examples"]  # ~465,000 characters vs ~43,000


def test_explain_sequence_forward_draws_text(tmp_path):
    from torchdiffusion.explain import sequence_forward

    vocab = Vocabulary(("a", "b", "c", "d"))
    out = sequence_forward(
        exact_model("masked"), vocab, draw_data(1)[0].float(), [0, 0.5, 1], steps=4, path=tmp_path / "s.png"
    )
    assert out.stat().st_size > 5_000


def test_sampled_lines_escape_backslashes_and_line_breaks_and_impute_reads_them_back():
    """A line break was written as the two characters \\n but a backslash as itself: 'a<newline>b' and 'a\\nb'
    were the same line. Both are escaped now, and impute --text reads a line back as the sequence it stands for."""
    from torchdiffusion.kinds import escape_line, infill_text, unescape_line

    texts = ["a\nb", "a\\nb", "path\\name", "end\\", "\\\\n"]
    lines = [escape_line(t) for t in texts]
    assert len(set(lines)) == len(texts) and all("\n" not in ln for ln in lines)
    assert [unescape_line(ln) for ln in lines] == texts

    class Vocab:
        symbols = "ab\n\\_"

        def encode(self, ch, what):
            return [self.symbols.index(ch)]

    known, mask = infill_text(Vocab(), [escape_line("a\nb\\")], 6)
    assert known[0, :4].tolist() == [0, 2, 1, 3] and mask[0].tolist() == [True] * 4 + [False] * 2


def test_every_character_that_ends_a_line_is_escaped_in_sampled_lines():
    """Carriage returns, form feeds, NEL, U+2028 ... were written raw: a file of 4 samples read as 18 lines to
    str.splitlines() and to editors. Every such character is escaped and read back."""
    from torchdiffusion.kinds import LINE_BREAKS, escape_line, unescape_line

    breakers = [c for c in map(chr, range(0x3000)) if len(f"a{c}b".splitlines()) == 2]
    assert sorted(breakers) == sorted(LINE_BREAKS)  # the set is what Python splits at
    texts = [f"x{c}y" for c in LINE_BREAKS] + ["\\u2028", "a\\rb", "\\u00zz", "\u00e9t\u00e9"]
    lines = [escape_line(t) for t in texts]
    assert len("\n".join(lines).splitlines()) == len(texts) and len(set(lines)) == len(texts)
    assert [unescape_line(ln) for ln in lines] == texts


def test_demo_of_a_text_preset_writes_its_samples_as_text(tmp_path):
    """`demo --preset text-chars` samples the sequence's way (a text file of sample.n lines and its picture)."""
    text = tmp_path / "t.txt"
    text.write_text("abcab cabca bcabc " * 40)
    sets = ["data.source=text", f"data.path={text}", "data.seq_len=12", "data.holdout=8", "train.images=64"]
    sets += ["train.batch_size=32", "model.mlp_width=32", "model.mlp_depth=1", "sample.steps=3"]
    out = tmp_path / "demo"
    rc, stdout, err = cli(
        "demo", "--preset", "text-chars", "--out", out, "--n", "3", "--no-progress", *[f"--set={a}" for a in sets]
    )
    assert rc == 0, err
    lines = (out / "samples" / "demo.txt").read_text().splitlines()
    assert len(lines) == 3 and all(len(line) == 12 and set(line) <= set("abc ") for line in lines), lines
    assert str(out / "samples" / "demo.txt") in stdout.split()
