"""The training loop in one process: LR schedule, EMA half-life, the NaN guard, data order, run-folder files."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from test_training_worker import TINY, InjectNaN, tiny_data
from torchdiffusion.cond import cond_from_data
from torchdiffusion.config import TrainConfig, override
from torchdiffusion.presets import get_preset
from torchdiffusion.training import EMA, TrainingError, ema_beta, learning_rate, load_state, train
from torchdiffusion.training.loop import DataOrder, mix_seed

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cfg(*sets: str):
    return override(get_preset("digits-test"), TINY + list(sets))


def metrics(run) -> list[dict]:
    return [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]


# Learning rate: linear warm-up and cosine decay, counted in images


def test_lr_warmup_is_linear_in_images_and_independent_of_batch_size():
    for B in (8, 32):
        c = TrainConfig(lr=1e-3, batch_size=B, warmup_images=256, images=10_000)
        for u in range(40):
            n = (u + 1) * B  # images the update has seen
            assert learning_rate(c, u) == pytest.approx(1e-3 * min(1.0, n / 256), rel=1e-12)
    no_warm = TrainConfig(lr=1e-3, warmup_images=0)
    assert learning_rate(no_warm, 0) == 1e-3


def test_lr_cosine_decay_halves_at_mid_run_and_decreases():
    c = TrainConfig(lr=2e-3, batch_size=10, warmup_images=0, images=1000, lr_decay="cosine")
    lrs = [learning_rate(c, u) for u in range(100)]
    assert lrs[0] == pytest.approx(2e-3)
    assert learning_rate(c, 50) == pytest.approx(1e-3)  # cos(pi/2) = 0: half the peak after half the images
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] > 0


def test_lr_cooldown_is_constant_then_linear_to_zero_over_the_last_fraction():
    # warm-up-stable-decay: peak lr until the last F of the images, then a straight line to 0 at train.images
    c = TrainConfig(lr=2e-3, batch_size=10, warmup_images=0, images=1000, lr_decay="cooldown", lr_cooldown=0.25)
    lrs = [learning_rate(c, u) for u in range(101)]
    assert all(lr == pytest.approx(2e-3) for lr in lrs[:76])  # up to 750 of 1000 images: the peak
    for u in range(75, 101):
        assert lrs[u] == pytest.approx(2e-3 * (1000 - 10 * u) / 250, abs=1e-15)  # linear in images left
    assert lrs[100] == 0.0 and lrs[90] == pytest.approx(8e-4)
    # the same straight line in images whatever the batch size
    c40 = TrainConfig(lr=2e-3, batch_size=40, warmup_images=0, images=1000, lr_decay="cooldown", lr_cooldown=0.25)
    assert learning_rate(c40, 20) == pytest.approx(learning_rate(c, 80))


def test_lr_in_metrics_follows_the_warmup(tmp_path):
    run = train(
        tiny_cfg("train.images=64", "train.warmup_images=64", "train.log_every_images=16"),
        tmp_path,
        data=tiny_data(),
        progress=False,
    )
    lrs = [m["lr"] for m in metrics(run)]
    assert lrs == pytest.approx([1e-2 * k / 4 for k in (1, 2, 3, 4)], rel=1e-12)


# EMA: half-life in images


@pytest.mark.parametrize("B", [4, 16])
def test_ema_halves_the_distance_after_one_halflife_of_images(B):
    h = 64  # half-life in images; h / B updates
    model = torch.nn.Linear(3, 2)
    ema = EMA(model)
    with torch.no_grad():
        for p in ema.module.parameters():
            p.zero_()
        for p in model.parameters():
            p.fill_(1.0)
    for _ in range(h // B):
        ema.update(model, ema_beta(B, 10**9, h, warmup_ratio=0.0))
    for p in ema.module.parameters():  # theta_ema = 1 - 0.5^(n/h) after n images
        torch.testing.assert_close(p, torch.full_like(p, 0.5), rtol=0, atol=1e-6)


def test_ema_warmup_grows_the_halflife_with_images_seen():
    assert ema_beta(16, 0, 1000, 0.05) == 0.0  # first step: the average is a copy
    assert ema_beta(16, 4000, 1000, 0.05) == pytest.approx(0.5 ** (16 / 200))  # h = 0.05 * 4000 < 1000
    assert ema_beta(16, 10**6, 1000, 0.05) == pytest.approx(0.5 ** (16 / 1000))  # capped at the half-life
    assert ema_beta(16, 10**6, 0, 0.05) == 0.0  # EMA disabled: the average is the weights


def test_training_says_when_the_ema_ramp_caps_the_halflife_to_the_end(tmp_path, capsys):
    # 0.05 x 32 images = 1.6 < 1,000: the configured half-life is never reached, and the run says so in one line
    train(
        tiny_cfg("train.images=32", "train.ema_halflife_images=1000"), tmp_path / "a", data=tiny_data(), progress=False
    )
    said = [ln for ln in capsys.readouterr().err.splitlines() if "ema_halflife_images" in ln]
    assert len(said) == 1 and "caps the half-life at 2 images" in said[0]
    sets = ("train.images=32", "train.ema_halflife_images=1", "train.ema_warmup_ratio=0.05")  # 1.6 >= 1: reached
    train(tiny_cfg(*sets), tmp_path / "b", data=tiny_data(), progress=False)
    assert "ema_halflife_images" not in capsys.readouterr().err


def test_ema_disabled_saves_the_raw_weights(tmp_path):
    run = train(tiny_cfg("train.images=32", "train.ema_halflife_images=0"), tmp_path, data=tiny_data(), progress=False)
    a, b = load_file(run / "model.safetensors"), load_file(run / "ema.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# Data order and conditioning


def test_data_order_is_a_permutation_per_epoch_and_continues_across_epochs():
    N, B = 10, 4
    order = DataOrder(N, B, seed=3)
    stream = torch.cat([order.batch(s) for s in range(5)])  # 20 positions = 2 epochs
    assert sorted(stream[:10].tolist()) == list(range(10)) and sorted(stream[10:].tolist()) == list(range(10))
    assert order.position(3) == (1, 2)
    assert torch.equal(DataOrder(N, B, seed=3).batch(4), order.batch(4))  # a function of (seed, step) only
    assert not torch.equal(stream[:10], stream[10:])
    assert mix_seed(1, 2) != mix_seed(2, 1)


def test_weighted_data_order_draws_each_example_in_proportion_to_its_weight():
    w = torch.tensor([1.0, 1.0, 2.0, 4.0])  # probabilities 1/8, 1/8, 2/8, 4/8
    order = DataOrder(4, 8, seed=5, weights=w)
    idx = torch.cat([order.batch(s) for s in range(2000)])  # 16,000 draws over 4,000 epochs
    freq = torch.bincount(idx, minlength=4).double() / idx.numel()
    p = w.double() / w.sum()
    se = (p * (1 - p) / idx.numel()).sqrt()
    assert ((freq - p).abs() < 5 * se).all(), (freq, p)
    assert torch.equal(DataOrder(4, 8, seed=5, weights=w).batch(1999), order.batch(1999))  # still (seed, step) only
    assert not torch.equal(DataOrder(4, 8, seed=6, weights=w).batch(0), order.batch(0))


def test_balance_weights_give_every_group_and_class_the_same_share():
    from torchdiffusion.config import ConfigError
    from torchdiffusion.data.base import TensorData
    from torchdiffusion.training.loop import balance_weights

    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 2, 2])  # class 0 six times as common as class 1
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 3, 4, 5])  # group sizes 3, 2, 1, 1, 1, 1
    d = TensorData(x=torch.zeros(9, 1, 2, 2), labels=labels)
    d.groups = groups
    assert balance_weights(d, "none") is None
    for key, ids in (("classes", labels), ("groups", groups)):
        w = balance_weights(d, key)
        share = torch.zeros(int(ids.max()) + 1, dtype=torch.float64).index_add_(0, ids, w)
        assert torch.allclose(share, torch.ones_like(share)), (key, share)  # each group or class weighs 1
    with pytest.raises(ConfigError, match="train.balance=groups needs a data set with groups"):
        balance_weights(tiny_data(), "groups")


def test_balanced_training_draws_the_rare_class_as_often_as_the_common_one(tmp_path):
    """train.balance=classes on data with one class 7x as common: the batches the run draws are balanced."""
    from torchdiffusion.data.base import TensorData
    from torchdiffusion.training import Callback

    labels = torch.tensor([0] * 35 + [1] * 5)
    data = TensorData(x=tiny_data().x, labels=labels, class_names=["common", "rare"])

    class Seen(Callback):
        def __init__(self):
            self.labels = []

        def before_step(self, state, batch) -> None:
            self.labels += [mb.cond["class"].cpu() for mb in batch.micro]

    seen = {}
    for balance in ("none", "classes"):
        cb = Seen()
        cfg = tiny_cfg("train.images=800", "train.batch_size=16", f"train.balance={balance}", "model.num_classes=2")
        train(cfg, tmp_path / balance, data=data, progress=False, callbacks=[cb])
        seen[balance] = torch.cat(cb.labels).float().mean().item()  # the rare class's share of the draws
        assert json.loads((tmp_path / balance / "config.json").read_text())["train"]["balance"] == balance
    assert abs(seen["none"] - 5 / 40) < 0.04 and abs(seen["classes"] - 0.5) < 0.06, seen


def test_cond_from_data_has_labels_and_drop_mask():
    d = tiny_data()
    cfg = tiny_cfg()
    idx = torch.tensor([0, 1, 5])
    drop = torch.tensor([True, False, False])
    c = cond_from_data(d, idx, drop, cfg.model, torch.device("cpu"))
    assert torch.equal(c["class"], d.labels[idx]) and torch.equal(c["drop"], drop)
    assert cond_from_data(d, idx, drop, tiny_cfg("model.num_classes=0").model, torch.device("cpu")) is None


# The NaN/Inf guard


def test_nonfinite_step_is_skipped_leaving_optimizer_and_ema_untouched(tmp_path):
    cfg = tiny_cfg(
        "train.images=64", "train.checkpoint_every_images=16", "train.keep_checkpoints=10", "train.log_every_images=64"
    )
    run = train(cfg, tmp_path, data=tiny_data(), progress=False, callbacks=[InjectNaN("2")])
    before, after = (
        load_state(run / "checkpoints/state-000000032.pt"),
        load_state(run / "checkpoints/state-000000048.pt"),
    )  # step 2 (images 32 -> 48) was poisoned
    assert after["skipped_steps"] == 1 and after["updates"] == before["updates"] == 2
    for key in ("model", "ema"):
        assert all(torch.equal(before[key][k], after[key][k]) for k in before[key])
    for i, s in before["optimizer"]["state"].items():
        assert all(torch.equal(s[k], after["optimizer"]["state"][i][k]) for k in s)
    last = load_state(run / "checkpoints/state-000000064.pt")
    assert last["updates"] == 3 and not any(
        torch.equal(before["model"][k], last["model"][k]) for k in before["model"] if k.endswith("weight")
    )
    m = metrics(run)
    assert m[-1]["skipped_steps"] == 1 and all(math.isfinite(v) for v in (m[-1]["loss"], m[-1]["grad_norm"]))
    assert json.loads((run / "run.json").read_text())["finished"]


def test_too_many_nonfinite_steps_stop_with_one_line_naming_the_step(tmp_path):
    with pytest.raises(TrainingError, match=r"^stopped at step 3 .*3 consecutive") as e:
        cfg = tiny_cfg("train.max_nonfinite=3")
        train(cfg, tmp_path, data=tiny_data(), progress=False, callbacks=[InjectNaN("1,2,3")])
    assert "\n" not in str(e.value)


def test_callbacks_see_every_step_and_its_stats_add_up_to_the_metrics_lines(tmp_path):
    """A callback passed to train() sees each global batch before its step and the step's statistics after it;
    the statistics summed over a log window give that window's metrics.jsonl line exactly."""
    from torchdiffusion.training.callbacks import Callback

    class Record(Callback):
        def __init__(self):
            self.batches, self.stats, self.ended = [], [], 0

        def before_step(self, state, batch):
            assert batch.step == state.step
            self.batches.append([mb.x0.shape[0] for mb in batch.micro])

        def after_step(self, state, stats):
            self.stats.append((state.step, stats))

        def end(self, state):
            self.ended += 1

    rec = Record()
    cfg = tiny_cfg("train.images=64", "train.grad_accum=2")
    run = train(cfg, tmp_path, data=tiny_data(), progress=False, callbacks=[rec])
    assert rec.batches == [[8, 8]] * 4 and [s for s, _ in rec.stats] == [1, 2, 3, 4] and rec.ended == 1
    assert all(st.finite and not st.stop and st.bucket_counts.sum() == 16 for _, st in rec.stats)
    for line, window in zip(metrics(run), (rec.stats[:2], rec.stats[2:]), strict=True):
        assert line["loss"] == sum(st.loss_sum for _, st in window) / 32
        assert line["grad_norm"] == sum(st.grad_norm for _, st in window) / 2
        counts = sum(st.bucket_counts.double() for _, st in window)
        sums = sum(st.bucket_sums.double() for _, st in window)
        assert line["loss_by_sigma"] == [
            float(s / c) if c > 0 else None for s, c in zip(sums.tolist(), counts.tolist())
        ]


# Run folder contents


def test_run_folder_files_and_loss_by_noise_level(tmp_path):
    run = train(tiny_cfg("train.images=64"), tmp_path, data=tiny_data(), progress=False)
    info = json.loads((run / "run.json").read_text())
    assert info["data_shape"] == [1, 8, 8] and info["kind"] == "image" and info["num_classes"] == 4
    assert info["finished"] and info["images_seen"] == 64 and info["class_names"] == ["a", "b", "c", "d"]
    m = metrics(run)
    assert [r["images_seen"] for r in m] == [32, 64] and [r["step"] for r in m] == [2, 4]
    edges = m[0]["loss_by_sigma_edges"]
    assert m[0]["loss_by_sigma_unit"] == "t" and len(edges) == 9 and edges[0] == 0 and edges[-1] == 100
    for r in m:  # the buckets partition the window: their count-weighted mean is the window's mean loss
        assert len(r["loss_by_sigma"]) == 8
        assert any(v is not None for v in r["loss_by_sigma"])
    assert (run / "checkpoints/latest").read_text().strip() == "state-000000064.pt"
    # the loss dropped from random init on this easy data
    assert m[-1]["loss"] < m[0]["loss"]
    cfg_json = json.loads((run / "config.json").read_text())
    assert cfg_json["train"]["images"] == 64


def test_periodic_quick_eval_is_logged_and_leaves_training_unchanged(tmp_path):
    """train.eval_every_images: FD lines in metrics.jsonl at every multiple and at the end; the trained weights
    are bit-identical to a run without evaluation (sampling never touches the training RNG streams)."""
    from torchdiffusion.explain import read_loss_by_noise

    a = train(
        tiny_cfg("train.images=96", "train.eval_every_images=64", "train.eval_n=16"),
        tmp_path / "a",
        data=tiny_data(),
        progress=False,
    )
    b = train(tiny_cfg("train.images=96"), tmp_path / "b", data=tiny_data(), progress=False)
    evals = [r for r in metrics(a) if any(k.startswith("eval/FD") for k in r)]
    assert [r["images_seen"] for r in evals] == [64, 96]
    for r in evals:
        fd = next(v for k, v in r.items() if k.startswith("eval/FD"))
        assert math.isfinite(fd) and fd >= 0 and r["eval/seconds"] > 0
    wa, wb = load_file(str(a / "ema.safetensors")), load_file(str(b / "ema.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert len(read_loss_by_noise(a)["loss"]) == len(read_loss_by_noise(b)["loss"])  # eval lines are skipped


def test_a_failing_quick_eval_is_logged_and_training_goes_on(tmp_path, monkeypatch, capsys):
    import sys

    from torchdiffusion.evaluation.evaluate import quick_eval  # noqa: F401 - loads the module

    ev = sys.modules["torchdiffusion.evaluation.evaluate"]  # (the package's `evaluate` name is the function)

    def broken(*a, **k):
        raise RuntimeError("feature network missing")

    monkeypatch.setattr(ev, "quick_eval", broken)
    run = train(tiny_cfg("train.images=64", "train.eval_every_images=32"), tmp_path, data=tiny_data(), progress=False)
    errs = [r["eval/error"] for r in metrics(run) if "eval/error" in r]
    assert errs == ["feature network missing"] * 2 and json.loads((run / "run.json").read_text())["finished"]
    assert "quick evaluation at 32 images failed (feature network missing)" in capsys.readouterr().err


def test_loss_by_sigma_uses_log_sigma_for_continuous_models(tmp_path):
    cfg = tiny_cfg(
        "train.images=32",
        "diffusion.parameterization=edm",
        "diffusion.process=continuous",
        "diffusion.noise_conditioning=log_sigma",
        "diffusion.sigma_sampling=lognormal",
        "diffusion.weighting=edm",
    )
    run = train(cfg, tmp_path, data=tiny_data(), progress=False)
    m = metrics(run)[0]
    assert m["loss_by_sigma_unit"] == "log_sigma"
    assert m["loss_by_sigma_edges"][0] == pytest.approx(math.log(0.002))
    assert m["loss_by_sigma_edges"][-1] == pytest.approx(math.log(80.0))


def test_resume_with_a_different_model_is_refused(tmp_path):
    train(tiny_cfg("train.images=32"), tmp_path, data=tiny_data(), progress=False)
    with pytest.raises(ValueError, match="different model section"):
        train(tiny_cfg("train.images=64", "model.channels=4"), tmp_path, data=tiny_data(), progress=False)


def test_longer_run_continues_from_the_finished_state(tmp_path):
    """Extending train.images resumes the finished run: 32 + 32 images equals 64 in one go (no LR decay)."""
    a, b = tmp_path / "a", tmp_path / "b"
    train(tiny_cfg("train.images=64"), a, data=tiny_data(), progress=False)
    train(tiny_cfg("train.images=32"), b, data=tiny_data(), progress=False)
    train(tiny_cfg("train.images=64"), b, data=tiny_data(), progress=False)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "ema.safetensors").read_bytes() == (b / "ema.safetensors").read_bytes()
    assert [r["images_seen"] for r in metrics(b)] == [32, 64]


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    a = train(tiny_cfg("train.images=48", "train.lr=1e-3"), tmp_path / "a", data=tiny_data(), progress=False)
    b = train(
        tiny_cfg("train.images=48", "train.lr=1e-3", "train.grad_accum=4"),
        tmp_path / "b",
        data=tiny_data(),
        progress=False,
    )
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4  # 3 steps of lr 1e-3: float order only
    assert metrics(a)[0]["loss"] == pytest.approx(metrics(b)[0]["loss"], rel=1e-5)


def test_bf16_channels_last_trains_and_resumes_exactly(tmp_path):
    sets = ("train.precision=bf16", "train.channels_last=true")
    a, b = tmp_path / "a", tmp_path / "b"
    train(tiny_cfg("train.images=64", *sets), a, data=tiny_data(), progress=False)
    train(tiny_cfg("train.images=32", *sets), b, data=tiny_data(), progress=False)
    train(tiny_cfg("train.images=64", *sets), b, data=tiny_data(), progress=False)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    m = metrics(a)
    assert all(math.isfinite(r["loss"]) for r in m) and m[-1]["skipped_steps"] == 0


def test_auto_precision_takes_bf16_on_native_bf16_cpus_fp32_elsewhere_and_records_it(tmp_path, monkeypatch):
    """train.precision=auto trains exactly the explicit bf16 + channels-last run where the CPU reports
    avx512_bf16 or amx_bf16 and exactly the fp32 run where it reports neither; config.json says which ran, and a
    resumed run keeps its precision on a machine that would choose the other."""
    import torchdiffusion.training.precision as P

    def cpu(*flags):
        monkeypatch.setattr(P, "cpu_flags", lambda: {"avx512f", "sse2", *flags})

    def weights(run):
        return (run / "model.safetensors").read_bytes()

    def saved(run):
        return json.loads((run / "config.json").read_text())["train"]

    fast = train(
        tiny_cfg("train.images=64", "train.precision=bf16", "train.channels_last=true"),
        tmp_path / "bf16",
        data=tiny_data(),
        progress=False,
    )
    plain = train(tiny_cfg("train.images=64"), tmp_path / "fp32", data=tiny_data(), progress=False)
    assert weights(fast) != weights(plain)  # the two paths differ, so the comparisons below can tell them apart
    for flags, ref, want in (
        (("avx512_bf16",), fast, ("bf16", True)),
        (("amx_bf16", "amx_tile"), fast, ("bf16", True)),
        ((), plain, ("fp32", False)),
    ):
        cpu(*flags)
        run = train(
            tiny_cfg("train.images=64", "train.precision=auto"),
            tmp_path / f"auto{len(flags)}",
            data=tiny_data(),
            progress=False,
        )
        assert weights(run) == weights(ref)
        assert (saved(run)["precision"], saved(run)["channels_last"]) == want
    # started on a native-bf16 CPU, resumed on one without: bf16 to the end, the same weights as in one go
    cpu("avx512_bf16")
    run = tmp_path / "moved"
    train(tiny_cfg("train.images=32", "train.precision=auto"), run, data=tiny_data(), progress=False)
    cpu()
    train(tiny_cfg("train.images=64", "train.precision=auto"), run, data=tiny_data(), progress=False)
    assert weights(run) == weights(fast) and saved(run)["precision"] == "bf16"
    # a fresh start in the same folder decides again
    train(tiny_cfg("train.images=64", "train.precision=auto"), run, data=tiny_data(), progress=False, resume=False)
    assert weights(run) == weights(plain) and saved(run)["precision"] == "fp32"


def test_native_bf16_reads_the_cpu_flags(monkeypatch):
    import torchdiffusion.training.precision as P

    cpu = torch.device("cpu")
    for flags, want in (({"avx512_bf16"}, True), ({"amx_bf16"}, True), ({"avx512f", "avx2"}, False), (set(), False)):
        monkeypatch.setattr(P, "cpu_flags", lambda f=flags: f)
        ok, why = P.native_bf16(cpu)
        assert ok is want and why
    assert isinstance(P.cpu_flags(), set)  # this machine's, read for real (empty off Linux)


def test_vector_data_with_an_mlp(tmp_path):
    from torchdiffusion.data.base import TensorData

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g) * 0.1 + torch.tensor([1.0, -1.0])
    cfg = override(
        get_preset("toy-2d"),
        [
            "model.mlp_width=16",
            "model.mlp_depth=2",
            "train.images=64",
            "train.batch_size=16",
            "train.log_every_images=32",
            "sample.n=32",
            "sample.steps=2",
            "train.warmup_images=0",
        ],
    )
    run = train(cfg, tmp_path, data=TensorData(x=x, kind="vector"), progress=False)
    info = json.loads((run / "run.json").read_text())
    assert info["kind"] == "vector" and info["data_shape"] == [2] and info["num_classes"] == 0
    assert metrics(run)[0]["loss_by_sigma_unit"] == "log_sigma"
    assert (run / "samples" / "grid-000000064.png").is_file()  # a scatter plot for 2-D data


def test_train_refuses_a_balance_the_data_cannot_give_in_one_line(tmp_path):
    from tinyruns import cli

    out = tmp_path / "run"
    rc, _, err = cli("train", "--preset", "digits-test", "--out", out, "--no-progress", "--set", "train.balance=groups")
    assert rc == 2 and err.strip().count("\n") == 0 and "train.balance=groups needs a data set with groups" in err
    assert not out.exists()
