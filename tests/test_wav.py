"""WAV recordings as signals: files written by independent writers (Python's ``wave`` for integer PCM, scipy for
floats) read back sample for sample as fractions of full scale; the ``wav`` source's folder rules and refusals;
``sample --save-wav`` and ``impute --out x.wav`` written at the recordings' rate and read back by scipy, WAV
inputs to ``impute`` and ``outpaint`` at the run's rate."""

from __future__ import annotations

import json
import struct
import wave

import numpy as np
import pytest
from scipy.io import wavfile

from test_cli_errors import assert_clean_error
from tinyruns import cli
from torchdiffusion.config import DataConfig
from torchdiffusion.data import DataError, load_data
from torchdiffusion.data.wav import WavFormat, read_wav, wav_bytes

pytestmark = pytest.mark.usefixtures("one_thread")

TYPES = {8: np.uint8, 16: np.int16, 32: np.int32}


def _pcm(path, ints: np.ndarray, bits: int, rate: int = 8000) -> None:
    """Integer samples (L, C) as a PCM WAV by the standard library's writer (24 bits: three bytes each)."""
    if bits == 24:
        frames = (ints.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]).tobytes()
    else:
        frames = ints.astype(np.dtype(TYPES[bits]).newbyteorder("<")).tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(ints.shape[1])
        w.setsampwidth(bits // 8)
        w.setframerate(rate)
        w.writeframes(frames)


@pytest.mark.parametrize("bits", [8, 16, 24, 32])
@pytest.mark.parametrize("channels", [1, 2])
def test_integer_pcm_is_read_as_fractions_of_its_full_scale(tmp_path, bits, channels):
    rng = np.random.default_rng(bits + channels)
    lo, hi = (0, 256) if bits == 8 else (-(2 ** (bits - 1)), 2 ** (bits - 1))
    ints = rng.integers(lo, hi, (37, channels), dtype=np.int64)
    ints[0] = lo
    ints[1] = hi - 1  # both ends of the range
    _pcm(tmp_path / "a.wav", ints, bits, rate=11025)
    x, rate = read_wav((tmp_path / "a.wav").read_bytes())
    want = (ints - 128) / 128 if bits == 8 else ints / 2.0 ** (bits - 1)
    assert rate == 11025 and x.shape == (channels, 37) and np.array_equal(x, want.T)
    assert x.min() == -1.0 and x.max() < 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_wavs_are_read_as_stored_and_our_writer_round_trips(tmp_path, dtype):
    a = (np.random.default_rng(1).standard_normal((50, 3)) * 0.7).astype(dtype)
    a[3, 1] = 1.6  # a float file may peak beyond full scale: kept
    wavfile.write(tmp_path / "f.wav", 22050, a)
    x, rate = read_wav((tmp_path / "f.wav").read_bytes())
    assert rate == 22050 and x.dtype == np.float64 and np.array_equal(x, a.T.astype(np.float64))
    ours = tmp_path / "ours.wav"
    ours.write_bytes(wav_bytes(x, 22050))
    rate2, back = wavfile.read(ours)  # an independent reader of the file we write
    assert rate2 == 22050 and back.dtype == np.float32 and np.array_equal(back, a.astype(np.float32))
    assert np.array_equal(read_wav(ours.read_bytes())[0], a.T.astype(np.float32))


def test_an_extensible_fmt_chunk_names_its_format_in_the_sub_format(tmp_path):
    """WAVE_FORMAT_EXTENSIBLE (0xFFFE), as recorders write multi-channel or 24-bit files: 16-bit PCM inside."""
    ints = np.random.default_rng(2).integers(-32768, 32768, (20, 2))
    _pcm(tmp_path / "p.wav", ints, 16)
    data = (tmp_path / "p.wav").read_bytes()
    at = data.index(b"fmt ")
    tag, ch, rate, bps, align, bits = struct.unpack("<HHIIHH", data[at + 8 : at + 24])
    guid = struct.pack("<H", 1) + bytes.fromhex("000000001000800000aa00389b71")  # KSDATAFORMAT_SUBTYPE_PCM
    ext = struct.pack("<HHIIHHHHI", 0xFFFE, ch, rate, bps, align, bits, 22, bits, 3) + guid
    fixed = data[:at] + b"fmt " + struct.pack("<I", len(ext)) + ext + data[at + 24 :]
    fixed = fixed[:4] + struct.pack("<I", len(fixed) - 8) + fixed[8:]
    x, _ = read_wav(fixed)
    assert np.array_equal(x, ints.T / 32768)


def test_damaged_and_unread_wavs_are_one_line_naming_the_file(tmp_path):
    ints = np.random.default_rng(3).integers(-32768, 32768, (40, 1))
    (tmp_path / "d").mkdir()
    _pcm(tmp_path / "d" / "ok.wav", ints, 16)
    data = (tmp_path / "d" / "ok.wav").read_bytes()
    cases = {
        "cut.wav": (data[:-10], "data chunk declares 80 bytes but the file holds 70: cut short"),
        "text.wav": (b"hello, not a recording", "not a WAV file"),
        "mulaw.wav": (data.replace(struct.pack("<HH", 1, 1), struct.pack("<HH", 7, 1), 1), "format 0x0007"),
        "rf64.wav": (b"RF64" + data[4:], "RF64"),
    }
    for name, (body, words) in cases.items():
        (tmp_path / "d" / name).write_bytes(body)
        with pytest.raises(DataError, match=rf"cannot read .*{name}: .*{words}"):
            load_data(DataConfig(source="wav", path=str(tmp_path / "d"), holdout=0))
        (tmp_path / "d" / name).unlink()
    (tmp_path / "d" / "cut.wav").write_bytes(data[:-10])
    rc, _, err = cli("train", "--preset", "signal-gunpoint", "--set", "data.source=wav", "--set",
                     f"data.path={tmp_path / 'd'}", "--out", tmp_path / "run")  # fmt: skip
    assert_clean_error(rc, err, "cut.wav")
    assert not (tmp_path / "run").exists()


def test_the_folder_takes_classes_from_subfolders_and_refuses_mixed_files(tmp_path):
    """Subfolders are classes; files of two sample rates or channel counts, or of different lengths without
    data.signal_length, are refused in one line; with it each is resampled and the run records the rate at which
    L points last the clips' mean duration."""
    rng = np.random.default_rng(4)
    for cls in ("dog", "cat"):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i in range(3):
            _pcm(tmp_path / "d" / cls / f"{i}.wav", rng.integers(-9000, 9000, (64, 1)), 16)
    d = load_data(DataConfig(source="wav", path=str(tmp_path / "d"), holdout=0))
    assert d.kind == "signal" and d.x.shape == (6, 1, 64) and d.class_names == ["cat", "dog"]
    assert sorted(d.labels.tolist()) == [0, 0, 0, 1, 1, 1] and d.schema == WavFormat(8000.0)
    _pcm(tmp_path / "d" / "cat" / "long.wav", rng.integers(-9000, 9000, (96, 1)), 16)
    with pytest.raises(DataError, match="ragged: series of 64 to 96 points; set data.signal_length"):
        load_data(DataConfig(source="wav", path=str(tmp_path / "d"), holdout=0))
    d = load_data(DataConfig(source="wav", path=str(tmp_path / "d"), holdout=0, signal_length=32))
    mean_seconds = (6 * 64 + 96) / 7 / 8000
    assert d.x.shape == (7, 1, 32) and d.schema.sample_rate == pytest.approx(32 / mean_seconds)
    _pcm(tmp_path / "d" / "cat" / "fast.wav", rng.integers(-9000, 9000, (64, 1)), 16, rate=16000)
    with pytest.raises(DataError, match=r"differ in sample rate \(8000 Hz in .*, 16000 Hz in fast.wav\)"):
        load_data(DataConfig(source="wav", path=str(tmp_path / "d"), holdout=0, signal_length=32))
    (tmp_path / "d" / "cat" / "fast.wav").unlink()
    _pcm(tmp_path / "d" / "cat" / "stereo.wav", rng.integers(-9000, 9000, (64, 2)), 16)
    with pytest.raises(DataError, match=r"differ in channel count \(1 to 2\)"):
        load_data(DataConfig(source="wav", path=str(tmp_path / "d"), holdout=0, signal_length=32))
    (tmp_path / "silent").mkdir()  # files of no frames at all
    for i in range(2):
        _pcm(tmp_path / "silent" / f"{i}.wav", np.zeros((0, 1), dtype=np.int64), 16)
    for length in (None, 32):
        with pytest.raises(DataError, match="a series has 0 points; every series needs 2 or more"):
            load_data(DataConfig(source="wav", path=str(tmp_path / "silent"), holdout=0, signal_length=length))
    with pytest.raises(DataError, match="is a file; the wav source reads a folder"):
        load_data(DataConfig(source="wav", path=str(tmp_path / "silent" / "0.wav"), holdout=0))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.csv").write_text("1,2\n")
    with pytest.raises(DataError, match="no .wav files"):
        load_data(DataConfig(source="wav", path=str(tmp_path / "empty"), holdout=0))


def test_a_run_on_wav_files_samples_wav_at_their_rate(tmp_path):
    """train on a folder of recordings, then sample --save-wav: one float WAV at the recordings' rate, the
    samples one after another with a quarter second of silence between them, each equal to --save-npy's."""
    rng = np.random.default_rng(5)
    t = np.arange(32) / 4000
    for cls, f0 in (("low", 200), ("high", 900)):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i in range(6):
            tone = 0.5 * np.sin(2 * np.pi * f0 * (1 + 0.05 * i) * t) + 0.01 * rng.standard_normal(32)
            _pcm(tmp_path / "d" / cls / f"{i}.wav", np.round(tone * 32767)[:, None].astype(np.int64), 16, rate=4000)
    run = tmp_path / "run"
    rc, _, err = cli("train", "--preset", "signal-gunpoint", "--set", "data.source=wav", "--set",
                     f"data.path={tmp_path / 'd'}", "--set", "data.signal_length=null", "--set", "data.holdout=2",
                     "--set", "model.channels=8", "--set", "model.groups=4", "--set", "model.head_channels=8",
                     "--set", "model.attn_resolutions=", "--set", "train.images=32", "--set", "train.batch_size=8",
                     "--set", "train.warmup_images=0", "--set", "sample.n=2", "--set", "sample.steps=2",
                     "--no-progress", "--out", run)  # fmt: skip
    assert rc == 0, err
    info = json.loads((run / "run.json").read_text())
    assert info["schema"] == {"wav_sample_rate": 4000.0} and info["class_names"] == ["high", "low"]
    assert cli("card", run)[0] == 0
    assert "user-provided recordings (a folder of WAV files)" in (run / "MODEL_CARD.md").read_text()
    rc, _, err = cli("sample", run, "--n", "3", "--steps", "2", "--class", "1", "--save-wav", "--save-npy",
                     "--out", tmp_path / "s.png")  # fmt: skip
    assert rc == 0, err
    rate, audio = wavfile.read(tmp_path / "s.wav")
    s = np.load(tmp_path / "s.npy")
    gap = 1000  # a quarter second at 4 kHz
    assert rate == 4000 and audio.shape == (3 * 32 + 2 * gap,)
    for k in range(3):
        assert np.array_equal(audio[k * (32 + gap) : k * (32 + gap) + 32], s[k, 0].astype(np.float32))
        if k < 2:
            assert not audio[k * (32 + gap) + 32 : (k + 1) * (32 + gap)].any()
    assert "s.wav" in json.loads((tmp_path / "s.json").read_text())["files"]
    clip = tmp_path / "d" / "low" / "2.wav"  # a recording repaired (a stretch filled in) and continued, as WAV
    rc, _, err = cli("impute", run, "--series", clip, "--mask", "span:0.4,0.6", "--steps", "2",
                     "--out", tmp_path / "fixed.wav")  # fmt: skip
    assert rc == 0, err
    rate, fixed = wavfile.read(tmp_path / "fixed.wav")
    given = read_wav(clip.read_bytes())[0][0]
    kept = np.r_[0:12, 20:32]  # outside the hidden 40-60 % of 32 points
    assert rate == 4000 and fixed.shape == (32,) and np.array_equal(fixed[kept], given[kept].astype(np.float32))
    rc, _, err = cli("outpaint", run, "--series", clip, "--right", "8", "--samples", "2", "--steps", "2",
                     "--save-wav", "--out", tmp_path / "fc.png")  # fmt: skip
    assert rc == 0, err
    forecasts = np.load(tmp_path / "fc.npy")
    rate, audio = wavfile.read(tmp_path / "fc.wav")  # the two continuations of the recording, as heard
    assert forecasts.shape == (1, 2, 1, 40) and rate == 4000 and audio.shape == (2 * 40 + gap,)
    assert np.array_equal(audio[:40], forecasts[0, 0, 0].astype(np.float32))
    assert np.array_equal(audio[40 + gap :], forecasts[0, 1, 0].astype(np.float32)) and not audio[40 : 40 + gap].any()
    _pcm(tmp_path / "fast.wav", np.zeros((32, 1), dtype=np.int64), 16, rate=8000)
    rc, _, err = cli("impute", run, "--series", tmp_path / "fast.wav", "--out", tmp_path / "f.npy")
    assert_clean_error(rc, err, "fast.wav is sampled at 8000 Hz; the run's series are at 4000 Hz")
    csv = tmp_path / "series.csv"
    csv.write_text("\n".join(",".join(str(v) for v in rng.standard_normal(16)) for _ in range(12)) + "\n")
    other = tmp_path / "csv-run"
    rc, _, err = cli("train", "--preset", "signal-gunpoint", "--set", "data.source=signal_csv", "--set",
                     f"data.path={csv}", "--set", "data.signal_length=null", "--set", "data.holdout=2",
                     "--set", "model.num_classes=0", "--set", "model.channels=8", "--set", "model.groups=4",
                     "--set", "model.head_channels=8", "--set", "model.attn_resolutions=", "--set",
                     "train.images=8", "--set", "train.batch_size=8", "--set", "sample.n=2", "--set",
                     "sample.steps=2", "--no-progress", "--out", other)  # fmt: skip
    assert rc == 0, err
    rc, _, err = cli("sample", other, "--n", "1", "--steps", "1", "--save-wav", "--out", tmp_path / "c.png")
    assert_clean_error(rc, err, "--save-wav writes the series of a run trained on WAV files")
    assert not (tmp_path / "c.png").exists()
    rc, _, err = cli("outpaint", other, "--right", "4", "--save-wav", "--out", tmp_path / "c.png")
    assert_clean_error(rc, err, "--save-wav writes the series of a run trained on WAV files")
    assert not (tmp_path / "c.png").exists() and not (tmp_path / "c.wav").exists()
    rc, _, err = cli("impute", other, "--series", clip, "--out", tmp_path / "c.wav")
    assert_clean_error(rc, err, "--out must end in .npy or .csv (.wav for a run trained on WAV files)")
