"""Decode audio files into mono float waveforms at one sample rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from ser_ssl.errors import DataError


class AudioError(DataError):
    """A file that cannot be used as audio. The message names the file and the reason."""


def load_audio(path: str | Path, sample_rate: int) -> torch.Tensor:
    """Read ``path`` with soundfile, mix to mono and resample; returns a 1-D float32 tensor.

    Raises :class:`AudioError` for files that are not decodable, empty or hold non-finite
    samples, so the caller can skip them with a message instead of failing deep in a stack.
    """
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"{path}: cannot decode as audio ({err})") from err
    if data.size == 0:
        raise AudioError(f"{path}: contains no samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or inf samples")
    wav = torch.from_numpy(data.mean(axis=1))
    if rate != sample_rate:
        wav = torchaudio.functional.resample(wav, rate, sample_rate)
    return wav
