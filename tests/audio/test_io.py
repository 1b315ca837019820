"""Decoding every sample format, channel count and rate, and each way a file can be damaged."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ser_ssl.audio.io import BLOCK_FRAMES, AudioError, load_audio, read_audio

RATE = 22050


def noise(frames: int, channels: int = 1, seed: int = 0, scale: float = 0.3) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal((frames, channels))).astype(np.float32)


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_every_sample_format_decodes_to_the_same_float_signal(tmp_path, subtype):
    x = noise(4000, scale=0.1)  # no clipping
    sf.write(tmp_path / "a.wav", x, 16000, subtype=subtype)
    wav = load_audio(tmp_path / "a.wav", 16000)
    assert wav.dtype == torch.float32 and wav.shape == (4000,)
    tolerance = {"PCM_U8": 2 / 2**7, "PCM_16": 2 / 2**15}.get(subtype, 1e-6)
    np.testing.assert_allclose(wav.numpy(), x[:, 0], atol=tolerance)


@pytest.mark.parametrize("channels", [2, 3, 4, 6, 8])
def test_multichannel_files_are_mixed_to_the_channel_mean(tmp_path, channels):
    x = noise(3000, channels)
    sf.write(tmp_path / "m.wav", x, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "m.wav", 16000).numpy(), x.mean(1), atol=1e-7)


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000, 96000])
def test_any_rate_is_resampled_to_the_feature_rate(tmp_path, rate):
    t = np.arange(rate // 2) / rate
    sf.write(tmp_path / "r.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
    wav = load_audio(tmp_path / "r.wav", RATE)
    assert wav.shape == (RATE // 2,)
    assert abs(wav[1000:-1000].abs().max().item() - 0.5) < 0.02  # a 440 Hz tone keeps its amplitude


def test_block_decoding_equals_one_read_for_long_multichannel_files(tmp_path):
    x = noise(2 * BLOCK_FRAMES + 123, 3)
    for fmt, ext in [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg")]:
        path = tmp_path / f"long.{ext}"
        sf.write(path, x, RATE, format=fmt)
        whole, _ = sf.read(path, dtype="float32", always_2d=True)
        decoded = read_audio(path)
        assert not decoded.partial and decoded.sample_rate == RATE
        np.testing.assert_array_equal(decoded.samples, whole.mean(axis=1))  # bit for bit


@pytest.mark.parametrize("name", ["clip with spaces.wav", "ünïcödé 音.wav", "-dash.flac"])
def test_unusual_file_names(tmp_path, name):
    sf.write(tmp_path / name, noise(1000), RATE)
    assert load_audio(tmp_path / name, RATE).shape == (1000,)


def test_silent_and_very_short_files_are_audio(tmp_path):
    sf.write(tmp_path / "silent.wav", np.zeros(5000, dtype=np.float32), RATE)
    assert torch.equal(load_audio(tmp_path / "silent.wav", RATE), torch.zeros(5000))
    sf.write(tmp_path / "one.wav", noise(1), 8000)
    assert load_audio(tmp_path / "one.wav", RATE).numel() >= 1


def write_damaged(tmp_path: Path, ext: str, keep: float, frames: int) -> Path:
    """A file cut off after ``keep`` of its bytes."""
    full = tmp_path / f"full.{ext}"
    sf.write(full, noise(frames), RATE)
    data = full.read_bytes()
    path = tmp_path / f"cut.{ext}"
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_a_flac_that_breaks_off_gives_its_decodable_part_with_a_warning(tmp_path, caplog):
    path = write_damaged(tmp_path, "flac", 0.9, 3 * BLOCK_FRAMES)
    decoded = read_audio(path)
    assert decoded.partial and len(decoded.samples) == 2 * BLOCK_FRAMES  # the blocks before the break
    assert "truncated or corrupt: decoded 131072 of the 196608 frames" in decoded.note()
    with caplog.at_level(logging.WARNING):
        assert load_audio(path, RATE).shape == (2 * BLOCK_FRAMES,)
    assert any("cut.flac" in r.message and "using the decoded part" in r.message for r in caplog.records)
    with pytest.raises(AudioError, match="cut.flac: truncated") as err:
        load_audio(path, RATE, strict=True)
    assert err.value.kind == "truncated"


def test_a_flac_that_breaks_off_in_its_first_block_is_unreadable(tmp_path):
    with pytest.raises(AudioError, match="cut.flac: cannot decode") as err:
        read_audio(write_damaged(tmp_path, "flac", 0.5, 10000))
    assert err.value.kind == "unreadable"


@pytest.mark.parametrize("ext", ["wav", "ogg"])
def test_a_cut_wav_or_ogg_is_read_up_to_where_it_ends(tmp_path, ext):
    # libsndfile corrects the declared length of these itself, so nothing tells them from a short file
    decoded = read_audio(write_damaged(tmp_path, ext, 0.6, 3 * RATE))
    assert 0 < len(decoded.samples) < 3 * RATE and np.isfinite(decoded.samples).all()


@pytest.mark.parametrize(
    "content",
    [b"", b"\x89PNG\r\n\x1a\n" + bytes(200), b"this is a text file, not audio\n" * 20, bytes(1000)],
    ids=["zero-bytes", "png", "text", "zeros"],
)
def test_non_audio_with_an_audio_extension_is_unreadable(tmp_path, content):
    (tmp_path / "x.wav").write_bytes(content)
    with pytest.raises(AudioError, match="x.wav: cannot decode as audio") as err:
        load_audio(tmp_path / "x.wav", RATE)
    assert err.value.kind == "unreadable"


@pytest.mark.parametrize("ext", ["wav", "ogg"])
def test_a_valid_header_with_no_frames_is_empty(tmp_path, ext):
    sf.write(tmp_path / f"e.{ext}", np.zeros((0, 1), dtype=np.float32), RATE)
    with pytest.raises(AudioError, match="contains no samples") as err:
        read_audio(tmp_path / f"e.{ext}")
    assert err.value.kind == "empty"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
def test_non_finite_samples_are_refused(tmp_path, bad, subtype):
    x = noise(BLOCK_FRAMES + 10)
    x[BLOCK_FRAMES + 5] = bad  # in the second block: every block is checked
    sf.write(tmp_path / "n.wav", x, RATE, subtype=subtype)
    with pytest.raises(AudioError, match="non-finite samples") as err:
        read_audio(tmp_path / "n.wav")
    assert err.value.kind == "non-finite"


def test_a_missing_file_is_its_own_kind(tmp_path):
    with pytest.raises(AudioError, match="gone.wav: file not found") as err:
        read_audio(tmp_path / "gone.wav")
    assert err.value.kind == "missing"
    (tmp_path / "folder.wav").mkdir()
    with pytest.raises(AudioError, match="file not found"):
        read_audio(tmp_path / "folder.wav")


def tone(rate: int, freq: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(wav: torch.Tensor, rate: int) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(wav.numpy()))) * rate / wav.numel())


# One second at an odd rate through load_audio in a fresh process; prints the peak RSS (KiB on Linux)
# before and after, and the decoded length and peak frequency.
_ODD_RATE_LOAD = """
import resource, sys
import numpy as np
from ser_ssl.audio.io import load_audio
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
wav = load_audio(sys.argv[1], 16000)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, after, wav.numel(), np.argmax(np.abs(np.fft.rfft(wav.numpy()))) * 16000 / wav.numel())
"""


def test_an_odd_rate_resamples_in_little_memory(tmp_path):
    # torchaudio's kernel grows with 44101 / gcd(44101, 16000) = 44101: it took 11 GiB for this second
    rate, freq = 44101, 1000.0
    x = tone(rate, freq)
    sf.write(tmp_path / "odd.wav", x, rate, subtype="FLOAT")
    run = subprocess.run(
        [sys.executable, "-c", _ODD_RATE_LOAD, str(tmp_path / "odd.wav")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    before, after, n, peak = run.stdout.split()
    assert abs(int(n) - round(len(x) * 16000 / rate)) <= 1
    assert abs(float(peak) - freq) <= 1.0  # 1 Hz bins
    assert (int(after) - int(before)) / 1024 < 200, f"peak RSS grew {(int(after) - int(before)) // 1024} MiB"


@pytest.mark.parametrize("rate", [22050, 44100, 48000])
def test_common_rates_keep_a_tones_frequency_and_the_length(tmp_path, rate):
    x = tone(rate, 1000.0, 0.5)
    sf.write(tmp_path / "t.wav", x, rate, subtype="FLOAT")
    wav = load_audio(tmp_path / "t.wav", 16000)
    assert wav.dtype == torch.float32 and wav.ndim == 1 and wav.is_contiguous()
    assert abs(wav.numel() - round(len(x) * 16000 / rate)) <= 1
    assert abs(peak_hz(wav, 16000) - 1000.0) <= 2.0  # 2 Hz bins
    assert abs(wav[500:-500].abs().max().item() - 0.5) < 0.02  # and its level


def test_audio_at_the_target_rate_is_returned_unchanged(tmp_path):
    x = noise(5000)[:, 0]
    sf.write(tmp_path / "same.wav", x, 16000, subtype="FLOAT")
    wav = load_audio(tmp_path / "same.wav", 16000)
    assert wav.dtype == torch.float32
    np.testing.assert_array_equal(wav.numpy(), x)  # bit for bit: not resampled
