import numpy as np
import pytest
import soundfile as sf
import torch

from ser_ssl.audio import AudioError, LogMel, LogMelConfig, Standardize, load_audio


def slaney_mel_filters(
    sr: int, n_fft: int, n_mels: int, f_min: float, f_max: float, area: bool = True
) -> np.ndarray:
    """Independent Slaney mel filter bank (the librosa definition), ``[n_freqs, n_mels]``: each
    triangle divided by its width (``area``, librosa's ``norm="slaney"``) or peaking at 1 (``norm=None``)."""

    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        lin = f / (200.0 / 3)
        return np.where(f >= 1000, 15 + np.log(np.maximum(f, 1e-10) / 1000) / (np.log(6.4) / 27), lin)

    def mel_to_hz(m):
        m = np.asarray(m, dtype=np.float64)
        return np.where(m >= 15, 1000 * np.exp((np.log(6.4) / 27) * (m - 15)), m * 200.0 / 3)

    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    pts = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    fb = np.zeros((len(fft_freqs), n_mels))
    for m in range(n_mels):
        lo, mid, hi = pts[m], pts[m + 1], pts[m + 2]
        up = (fft_freqs - lo) / (mid - lo)
        down = (hi - fft_freqs) / (hi - mid)
        fb[:, m] = np.maximum(0, np.minimum(up, down)) * (2.0 / (hi - lo) if area else 1.0)
    return fb


def reference_logmel(wav: np.ndarray, c: LogMelConfig) -> np.ndarray:
    """numpy, float64: the clip normalisation (``dc_peak``: mean removed, divided by the peak plus
    0.005), the STFT (periodic Hann or Hamming of win_length centred in n_fft, reflect padding), the
    mel filter bank and log10."""
    wav = wav.astype(np.float64)
    if c.clip_norm == "dc_peak":
        wav = wav - wav.mean()
        wav = wav / (np.abs(wav).max() + 0.005)
    a = {"hann": 0.5, "hamming": 0.54}[c.window]
    window = np.zeros(c.n_fft)
    start = (c.n_fft - c.win_length) // 2
    window[start : start + c.win_length] = a - (1 - a) * np.cos(
        2 * np.pi * np.arange(c.win_length) / c.win_length
    )
    padded = np.pad(wav, c.n_fft // 2, mode="reflect")
    n_frames = 1 + len(wav) // c.hop_length
    frames = np.stack([padded[i * c.hop_length : i * c.hop_length + c.n_fft] for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    fb = slaney_mel_filters(c.sample_rate, c.n_fft, c.n_mels, c.f_min, c.f_max, area=c.mel_norm == "slaney")
    return np.log10(power @ fb + c.log_offset).T


@pytest.mark.parametrize(
    "c",
    [LogMelConfig(), LogMelConfig(window="hamming", clip_norm="dc_peak", mel_norm="none")],
    ids=["ser-ssl", "paper front end"],
)
def test_logmel_matches_independent_computation(c):
    rng = np.random.default_rng(0)
    t = np.arange(c.sample_rate) / c.sample_rate
    wav = 0.3 + 0.5 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))
    ours = LogMel(c)(torch.tensor(wav, dtype=torch.float32)).numpy()
    ref = reference_logmel(wav, c)
    assert ours.shape == ref.shape == (96, 101)
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_logmel_handles_very_short_and_silent_input():
    feats = LogMel()(torch.zeros(50))
    assert feats.shape[0] == 96 and feats.shape[1] >= 1
    assert torch.isfinite(feats).all()
    assert torch.allclose(feats, torch.full_like(feats, np.log10(1.1e-8)))


def test_cache_key_changes_with_any_setting():
    assert LogMelConfig().key() == LogMelConfig().key()
    assert LogMelConfig().key() != LogMelConfig(n_mels=64).key()
    assert LogMelConfig().key() != LogMelConfig(log_offset=1e-6).key()


def test_load_audio_mixes_to_mono_and_resamples(tmp_path):
    left = np.sin(2 * np.pi * 300 * np.arange(44100) / 44100).astype(np.float32) * 0.5
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 44100)
    wav = load_audio(tmp_path / "s.wav", 22050)
    assert wav.dtype == torch.float32 and wav.shape == (22050,)
    # the mono mix halves the left channel; resampling keeps a 300 Hz tone's amplitude
    assert abs(wav[2000:20000].abs().max().item() - 0.25) < 0.01


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "cannot decode"),
        (b"\x89PNG\r\n\x1a\n" + bytes(200), "cannot decode"),
    ],
)
def test_load_audio_rejects_non_audio(tmp_path, content, reason):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=reason) as err:
        load_audio(path, 22050)
    assert "bad.wav" in str(err.value)


def test_load_audio_rejects_empty_and_non_finite(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="no samples"):
        load_audio(tmp_path / "empty.wav", 22050)
    sf.write(tmp_path / "nan.wav", np.array([0.1, np.nan, 0.2], dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(tmp_path / "nan.wav", 22050)


def test_standardize_gives_zero_mean_unit_std_and_survives_constant_bands():
    x = torch.randn(4, 1, 3, 50) * torch.tensor([1.0, 5.0, 0.0]).view(3, 1) + torch.tensor(
        [2.0, -1.0, 7.0]
    ).view(3, 1)
    flat = x.transpose(0, 2).reshape(3, -1)
    norm = Standardize(3)
    assert not bool(norm.fitted)
    norm.set_stats(flat.mean(1), flat.std(1, unbiased=False))
    y = norm(x).transpose(0, 2).reshape(3, -1)
    assert bool(norm.fitted) and torch.isfinite(y).all()
    assert torch.allclose(y[:2].mean(1), torch.zeros(2), atol=1e-5)
    assert torch.allclose(y[:2].std(1, unbiased=False), torch.ones(2), atol=1e-4)
    with pytest.raises(ValueError, match="bands"):
        norm.set_stats(torch.zeros(4), torch.ones(4))
