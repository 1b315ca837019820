"""The log-mel front end with the paper's defaults (docs/method.md §1)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Literal, get_args

import torch
import torchaudio
from torch import nn

from ser_ssl.audio.io import RESAMPLER
from ser_ssl.errors import ConfigError

Window = Literal["hann", "hamming"]
ClipNorm = Literal["none", "dc_peak"]
MelNorm = Literal["slaney", "none"]

#: The STFT window of each ``LogMelConfig.window``. torch's windows are periodic by default (the
#: "asymmetric" window: scipy's ``hamming(N, sym=False)``, librosa's ``get_window(..., fftbins=True)``),
#: so Hamming is ``w[n] = 0.54 - 0.46 cos(2 pi n / win_length)``, n = 0..win_length-1.
WINDOWS = {"hann": torch.hann_window, "hamming": torch.hamming_window}

#: Added to the peak in ``dc_peak``, as in the paper's public code (``get_normalized_audio``,
#: ``head_room=0.005``): a loud clip peaks just under 1, and a silent one stays silent.
PEAK_HEADROOM = 0.005


def normalise_clip(wav: torch.Tensor, mode: ClipNorm) -> torch.Tensor:
    """Per-clip normalisation of waveforms ``[..., samples]``, each row on its own.

    ``none`` returns ``wav`` as it is. ``dc_peak`` is the paper's public code: remove the clip's mean
    (its DC offset), then divide by the peak absolute value of what is left plus
    :data:`PEAK_HEADROOM`. A clip peaking at ``p`` after the mean is removed peaks at
    ``p / (p + 0.005)`` (0.995 for a full-scale clip); a silent or constant clip becomes all zeros,
    with no division by zero and no NaN. The statistics are the whole clip's, so this must run before
    a long clip is cut into pieces (``ser_ssl.data.cache`` computes long clips in chunks; see
    :meth:`LogMel.of_normalised`).
    """
    if mode == "none":
        return wav
    if mode != "dc_peak":
        raise ValueError(f"unknown clip normalisation {mode!r}; expected one of {list(get_args(ClipNorm))}")
    centred = wav - wav.mean(dim=-1, keepdim=True)
    return centred / (centred.abs().amax(dim=-1, keepdim=True) + PEAK_HEADROOM)


@dataclass(frozen=True)
class LogMelConfig:
    """Feature settings; every field enters the cache key, so changing one rebuilds the cache.

    The defaults are ser-ssl's; ``configs/data/paper_front_end.yaml`` sets the three fields where the
    paper's public code differs (docs/method.md §1):

    - ``window``: the STFT window of ``win_length`` samples (centred in ``n_fft``), periodic as torch
      makes it: ``hann`` (the default) or ``hamming`` (the paper's code: the asymmetric, i.e.
      periodic, Hamming window).
    - ``clip_norm``: ``none`` (the default) or ``dc_peak``, which removes each clip's DC offset and
      peak-normalises it before the STFT, as the paper's code does (:func:`normalise_clip`).
    - ``mel_norm``: the mel filters' scaling. ``slaney`` (the default): each triangle is divided by its
      width in Hz (librosa's default, area-normalised); ``none``: triangles peaking at 1 (the paper's
      code passes ``norm=None`` to ``librosa.filters.mel``).
    """

    sample_rate: int = 22050
    n_fft: int = 2048
    win_length: int = 660
    hop_length: int = 220
    n_mels: int = 96
    f_min: float = 50.0
    f_max: float = 10500.0
    log_offset: float = 1.1e-8
    window: Window = "hann"
    clip_norm: ClipNorm = "none"
    mel_norm: MelNorm = "slaney"

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
            (
                self.window in get_args(Window),
                f"window must be one of {list(get_args(Window))}, got {self.window!r}",
            ),
            (
                self.clip_norm in get_args(ClipNorm),
                f"clip_norm must be one of {list(get_args(ClipNorm))}, got {self.clip_norm!r}",
            ),
            (
                self.mel_norm in get_args(MelNorm),
                f"mel_norm must be one of {list(get_args(MelNorm))}, got {self.mel_norm!r}",
            ),
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

    The clip is first normalised as ``config.clip_norm`` says (:func:`normalise_clip`; nothing by
    default), each row of a batch on its own. The mel filter bank is Slaney-scaled, as librosa (the
    paper's code) builds it, and area-normalised unless ``config.mel_norm`` is ``none``. Waveforms
    shorter than one FFT are tiled (after the normalisation) so that reflect padding is defined.
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
            window_fn=WINDOWS[config.window],
            power=2.0,
            norm=None if config.mel_norm == "none" else "slaney",
            mel_scale="slaney",
        )

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.of_normalised(normalise_clip(wav, self.config.clip_norm))

    def of_normalised(self, wav: torch.Tensor) -> torch.Tensor:
        """The log-mel without the per-clip normalisation: for a clip normalised already with
        :func:`normalise_clip`, or a piece of one (the cache's chunks of a long clip)."""
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
