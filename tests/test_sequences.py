"""Sequences: masked and uniform discrete diffusion against the exact denoiser of a product distribution, the
n-gram baseline, the data sources and the command line's refusals."""

import pytest
import torch
from torch import nn

from tinyruns import td
from torchdiffusion.categorical import uniform_posterior
from torchdiffusion.config import get_preset, override
from torchdiffusion.data import DataError, load_data
from torchdiffusion.data.sequence import Vocabulary
from torchdiffusion.evaluation.sequences import NGram, ngram_tv
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


def exact_model(discrete: str, L: int = 8) -> SequenceDiffusion:
    cfg = override(get_preset("text-chars"), [f"diffusion.discrete={discrete}", "model.mlp_width=32"])
    m = SequenceDiffusion(cfg, L, len(P))
    m.net = ExactNet(discrete)
    return m


def draw_data(n: int, L: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.multinomial(P, n * L, replacement=True, generator=torch.Generator().manual_seed(seed)).view(n, L)


@pytest.mark.parametrize("discrete", ["masked", "uniform"])
def test_exact_denoiser_bound_is_the_entropy(discrete):
    x0 = draw_data(400)
    bits = bound_bits(exact_model(discrete), x0.float(), samples=16)
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
    default = load_data(get_preset("text-chars").data, "holdout")
    assert default.x.shape == (128, 32) and "scikit-learn" in "".join(default.schema.decode(r) for r in default.x)


def test_cli_sequences_train_sample_infill_and_refusals(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("abcab cabca bcabc " * 40)
    run = tmp_path / "run"
    sets = ["data.source=text", f"data.path={text}", "data.seq_len=12", "data.holdout=8", "train.images=256"]
    sets += ["train.batch_size=32", "model.mlp_width=32", "model.mlp_depth=1", "sample.steps=4", "sample.n=2"]
    rc, _, err = td("train", "--preset", "text-chars", "--out", run, "--no-progress", *[f"--set={a}" for a in sets])
    assert rc == 0, err
    rc, out, err = td("impute", run, "--text", "ab__b ca", "--out", tmp_path / "f.txt")
    assert rc == 0, err
    line = (tmp_path / "f.txt").read_text().splitlines()[0]
    assert len(line) == 12 and line.startswith("ab") and line[4:8] == "b ca" and set(line) <= set("abc ")
    for args, msg in [
        (("impute", run, "--text", "abz_", "--out", tmp_path / "g.txt"), "'z', which is not in the model's"),
        (("sample", run, "--given", "a=1", "--out", tmp_path / "g.txt"), "--given fixes cells of a table"),
    ]:
        rc, _, err = td(*args)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and msg in err, err
    assert not (tmp_path / "g.txt").exists()


def test_explain_sequence_forward_draws_text(tmp_path):
    from torchdiffusion.explain import sequence_forward

    vocab = Vocabulary(("a", "b", "c", "d"))
    out = sequence_forward(
        exact_model("masked"), vocab, draw_data(1)[0].float(), [0, 0.5, 1], steps=4, path=tmp_path / "s.png"
    )
    assert out.stat().st_size > 5_000
