"""The log-mel front end with the paper's defaults (docs/method.md §1)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch
import torchaudio
from torch import nn

from ser_ssl.audio.io import RESAMPLER
from ser_ssl.errors import ConfigError


@dataclass(frozen=True)
class LogMelConfig:
    """Feature settings; every field enters the cache key, so changing one rebuilds the cache."""

    sample_rate: int = 22050
    n_fft: int = 2048
    win_length: int = 660
    hop_length: int = 220
    n_mels: int = 96
    f_min: float = 50.0
    f_max: float = 10500.0
    log_offset: float = 1.1e-8

    def __post_init__(self) -> None:
        """Refuse settings that cannot give a finite, meaningful log-mel, before any audio is read."""
        nyquist = self.sample_rate / 2
        checks = [
            (self.sample_rate > 0, f"sample_rate must be positive, got {self.sample_rate}"),
            (self.n_fft > 0, f"n_fft must be positive, got {self.n_fft}"),
            (
                0 < self.win_length <= self.n_fft,
                f"win_length must be in 1..n_fft ({self.n_fft}), got {self.win_length}",
            ),
            (self.hop_length > 0, f"hop_length must be positive, got {self.hop_length}"),
            (self.n_mels > 0, f"n_mels must be positive, got {self.n_mels}"),
            (
                0 <= self.f_min < self.f_max <= nyquist,
                f"need 0 <= f_min < f_max <= sample_rate / 2 ({nyquist:g} Hz), got f_min {self.f_min:g} "
                f"and f_max {self.f_max:g}",
            ),
            (self.log_offset > 0, f"log_offset must be positive (log10 of 0 is -inf), got {self.log_offset}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"data.init_args.features: {message}")

    def key(self) -> str:
        """A short stable hash of the settings."""
        # the resampler too: a new one gives other features for the same settings, so a new cache dir
        settings = {**asdict(self), "resampler": RESAMPLER}
        return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


class LogMel(nn.Module):
    """Waveform ``[..., samples]`` -> ``log10(mel power + offset)`` of shape ``[..., n_mels, frames]``.

    The mel filter bank is Slaney-scaled and area-normalised, as librosa (the paper's code) does.
    Waveforms shorter than one FFT are tiled first so that reflect padding is defined.
    """

    def __init__(self, config: LogMelConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or LogMelConfig()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            win_length=config.win_length,
            hop_length=config.hop_length,
            f_min=config.f_min,
            f_max=config.f_max,
            n_mels=config.n_mels,
            power=2.0,
            norm="slaney",
            mel_scale="slaney",
        )

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        n = wav.shape[-1]
        if n < self.config.n_fft:
            wav = wav.tile(-(-self.config.n_fft // n))[..., : self.config.n_fft]
        return torch.log10(self.mel(wav) + self.config.log_offset)


class Standardize(nn.Module):
    """Per-band standardisation of ``[..., n_mels, frames]`` inputs with training-set statistics.

    The statistics are buffers, so they travel with every checkpoint and the encoder's input
    contract is kept downstream; ``fitted`` says whether they were set.
    """

    def __init__(self, n_mels: int = 96, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(n_mels, 1))
        self.register_buffer("std", torch.ones(n_mels, 1))
        self.register_buffer("fitted", torch.tensor(False))

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        if mean.numel() != self.mean.shape[0]:
            raise ConfigError(f"statistics have {mean.numel()} bands, the model expects {self.mean.shape[0]}")
        self.mean.copy_(mean.reshape(-1, 1))
        self.std.copy_(std.reshape(-1, 1))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std.clamp_min(self.eps)
