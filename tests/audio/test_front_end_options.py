"""The paper's front-end options of LogMelConfig: the Hamming window, the per-clip DC and peak
normalisation, unnormalised mel triangles, and the preset that sets them (docs/method.md §1)."""

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio
import yaml

from ser_ssl.audio import LogMel, LogMelConfig
from ser_ssl.audio.features import PEAK_HEADROOM, normalise_clip
from ser_ssl.data import cache as cache_mod
from ser_ssl.errors import ConfigError

PRESET = Path(__file__).parents[2] / "configs" / "data" / "paper_front_end.yaml"
PAPER = LogMelConfig(window="hamming", clip_norm="dc_peak", mel_norm="none")


def test_hamming_is_the_periodic_window_of_win_length():
    window = LogMel(LogMelConfig(window="hamming")).mel.spectrogram.window.double()
    assert window.shape == (660,)
    # w[n] = 0.54 - 0.46 cos(2 pi n / 660): 0.08 at n = 0, 0.54 a quarter in, exactly 1 at n = 330
    assert window[0].item() == pytest.approx(0.08, abs=1e-7)
    assert window[1].item() == pytest.approx(0.0800208, abs=1e-7)  # 0.54 - 0.46 cos(2 pi / 660)
    assert window[165].item() == pytest.approx(0.54, abs=1e-6)
    assert window[330].item() == pytest.approx(1.0, abs=1e-7)
    # periodic ("asymmetric"): the last sample is w[1], not w[0] as in the symmetric window
    assert window[659].item() == pytest.approx(window[1].item(), abs=1e-7)
    assert window[659].item() != pytest.approx(0.08, abs=1e-6)
    hann = LogMel().mel.spectrogram.window.double()
    assert hann[0].item() == 0.0 and hann[165].item() == pytest.approx(0.5, abs=1e-6)


def test_dc_peak_removes_the_mean_and_divides_by_the_peak_plus_the_head_room():
    n = torch.arange(4000, dtype=torch.float64)
    x = 0.5 + 0.25 * torch.sin(2 * torch.pi * n / 400)  # ten whole periods: the mean is 0.5
    y = normalise_clip(x, "dc_peak")
    assert PEAK_HEADROOM == 0.005
    assert y.mean().item() == pytest.approx(0.0, abs=1e-12)
    assert y[100].item() == pytest.approx(50 / 51, abs=1e-12)  # 0.25 / (0.25 + 0.005)
    assert y[300].item() == pytest.approx(-50 / 51, abs=1e-12)
    assert y.abs().max().item() == pytest.approx(50 / 51, abs=1e-12)
    assert torch.allclose(y, 0.25 * torch.sin(2 * torch.pi * n / 400) / 0.255, atol=1e-12)
    assert normalise_clip(x, "none") is x


def test_dc_peak_normalises_each_row_of_a_batch_on_its_own():
    rng = np.random.default_rng(0)
    a, b = torch.tensor(rng.standard_normal((2, 8000)), dtype=torch.float32)
    batch = torch.stack([a, 3 * b + 0.2])
    rows = normalise_clip(batch, "dc_peak")
    assert torch.equal(rows[0], normalise_clip(a, "dc_peak"))
    assert torch.allclose(rows[1], normalise_clip(3 * b + 0.2, "dc_peak"))
    logmel = LogMel(PAPER)
    assert torch.allclose(logmel(batch)[1], logmel(3 * b + 0.2), atol=1e-4)


@pytest.mark.parametrize("n", [50, 8000])  # shorter than one FFT (tiled) and not
@pytest.mark.parametrize("level", [0.0, 0.3])  # digital silence, and a constant (pure DC) clip
def test_a_silent_or_constant_clip_stays_silent_and_finite(n, level):
    x = torch.full((n,), level)
    assert torch.equal(normalise_clip(x, "dc_peak"), torch.zeros(n))
    feats = LogMel(PAPER)(x)
    assert torch.isfinite(feats).all()
    assert torch.allclose(feats, torch.full_like(feats, np.log10(PAPER.log_offset)))


def test_the_default_logmel_is_unchanged():
    """The defaults compute what LogMel computed before the options: torchaudio with its Hann window,
    area-normalised Slaney filters and no clip normalisation."""
    c = LogMelConfig()
    assert (c.window, c.clip_norm, c.mel_norm) == ("hann", "none", "slaney")
    before = torchaudio.transforms.MelSpectrogram(
        sample_rate=22050,
        n_fft=2048,
        win_length=660,
        hop_length=220,
        f_min=50.0,
        f_max=10500.0,
        n_mels=96,
        power=2.0,
        norm="slaney",
        mel_scale="slaney",
    )
    wav = 0.2 + 0.3 * torch.randn(2, 22050, generator=torch.Generator().manual_seed(0))
    logmel = LogMel(c)
    assert torch.equal(logmel.mel.spectrogram.window, before.spectrogram.window)
    assert torch.equal(logmel.mel.mel_scale.fb, before.mel_scale.fb)
    assert torch.equal(logmel(wav), torch.log10(before(wav) + 1.1e-8))


def test_unnormalised_mel_triangles_differ_from_slaney_by_one_gain_per_band():
    area = LogMel().mel.mel_scale.fb.double()
    peak = LogMel(LogMelConfig(mel_norm="none")).mel.mel_scale.fb.double()
    assert peak.max().item() <= 1.0 + 1e-6 and peak.max(0).values.min().item() > 0.5
    gain = area.sum(0) / peak.sum(0)  # 2 / (band width in Hz): below 1, not rising with frequency
    assert torch.allclose(area, peak * gain, atol=1e-9)
    assert (gain < 1).all() and (gain.diff() <= 1e-7).all()


def test_the_cache_key_changes_with_each_option():
    keys = {
        LogMelConfig().key(),
        LogMelConfig(window="hamming").key(),
        LogMelConfig(clip_norm="dc_peak").key(),
        LogMelConfig(mel_norm="none").key(),
        PAPER.key(),
    }
    assert len(keys) == 5
    assert LogMelConfig(window="hann", clip_norm="none", mel_norm="slaney").key() == LogMelConfig().key()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"window": "blackman"},
            r"data.init_args.features: window must be one of \['hann', 'hamming'\], got 'blackman'",
        ),
        (
            {"clip_norm": "peak"},
            r"data.init_args.features: clip_norm must be one of \['none', 'dc_peak'\], got 'peak'",
        ),
        (
            {"mel_norm": None},
            r"data.init_args.features: mel_norm must be one of \['slaney', 'none'\], got None",
        ),
    ],
)
def test_unknown_options_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        LogMelConfig(**settings)
    with pytest.raises(ValueError, match="unknown clip normalisation 'peak'"):
        normalise_clip(torch.zeros(3), "peak")


def test_the_preset_sets_the_papers_three_options_and_nothing_else():
    settings = yaml.safe_load(PRESET.read_text())
    assert settings == {
        "data": {"init_args": {"features": {"window": "hamming", "clip_norm": "dc_peak", "mel_norm": "none"}}}
    }
    assert LogMelConfig(**settings["data"]["init_args"]["features"]) == PAPER
    assert {f.name for f in fields(LogMelConfig)} >= set(settings["data"]["init_args"]["features"])


@pytest.mark.parametrize(
    ("clip_norm", "samples"),
    [
        ("none", 8000),
        ("dc_peak", 8000),  # per-clip statistics of the whole clip, not of each chunk
        ("none", 7760),  # 98 frames: a last chunk of 2, shorter than one FFT
    ],
)
def test_the_cache_computes_a_long_clip_in_chunks_as_a_whole(clip_norm, samples, monkeypatch):
    """Chunks change no number: per-clip statistics are the whole clip's, and every chunk sees the
    samples the whole clip's STFT sees."""
    config = LogMelConfig(
        sample_rate=8000, n_fft=256, win_length=200, hop_length=80, n_mels=16, f_max=3800, clip_norm=clip_norm
    )
    monkeypatch.setattr(cache_mod, "CHUNK_FRAMES", 32)
    n = torch.arange(samples, dtype=torch.float32)
    noise = torch.randn(samples, generator=torch.Generator().manual_seed(1))
    wav = (0.1 + n / 8000) * noise + n / 16000  # level and DC offset grow along the clip
    with torch.inference_mode(), cache_mod.one_thread():
        chunked = cache_mod._features(wav, config)
        whole = LogMel(config)(wav).T.numpy().astype(np.float16)
    assert chunked.shape == whole.shape == (1 + samples // 80, 16)
    np.testing.assert_array_equal(chunked, whole)
