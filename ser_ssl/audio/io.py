"""Decode audio files into mono float waveforms at one sample rate.

Every way a file can be unusable maps to one :class:`AudioError` ``kind``, so the cache can skip
it with a reason and count the skips per kind; ``docs/robustness.md`` has the whole table.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from ser_ssl.errors import DataError

log = logging.getLogger(__name__)

#: Names the resampler of :meth:`DecodedAudio.waveform`; it enters the feature cache's key.
RESAMPLER = "soxr-hq"

#: Frames read per call: bounds the memory of long multichannel files (each block is mixed to mono
#: at once) and is how much of a file that breaks off mid-stream can be lost at most.
BLOCK_FRAMES = 65536


class AudioError(DataError):
    """A file that cannot be used as audio. The message names the file and the reason.

    ``kind`` is one of ``missing``, ``unreadable``, ``empty``, ``non-finite`` or ``truncated``
    (the last only in strict mode; otherwise the decodable part is used).
    """

    def __init__(self, message: str, kind: str = "unreadable") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class DecodedAudio:
    """A file's samples mixed to mono at its own rate, and whether decoding stopped early."""

    samples: np.ndarray  # float32 [frames]
    sample_rate: int
    declared_frames: int  # what the header says; more than ``len(samples)`` for a damaged file
    stopped: str = ""  # the decoder's error when it broke off

    @property
    def partial(self) -> bool:
        return bool(self.stopped) or len(self.samples) < self.declared_frames

    def note(self) -> str:
        """Why only part of the file was decoded (empty when it was decoded whole)."""
        if not self.partial:
            return ""
        got, rate = len(self.samples), self.sample_rate
        why = f": {self.stopped}" if self.stopped else ""
        return (
            f"truncated or corrupt: decoded {got} of the {self.declared_frames} frames its header "
            f"declares ({got / rate:.2f} of {self.declared_frames / rate:.2f} s){why}"
        )

    def waveform(self, sample_rate: int) -> torch.Tensor:
        """The samples as a 1-D float32 tensor, resampled to ``sample_rate`` (unchanged at that rate).

        Resampled with soxr (HQ), whose memory does not depend on the ratio of the rates:
        torchaudio's polyphase kernel grows with ``rate / gcd(rate, sample_rate)``, so one second at
        an odd rate such as 44,101 Hz took 11 GiB to reach 16 kHz.
        """
        wav = self.samples
        if self.sample_rate != sample_rate:
            wav = soxr.resample(wav, self.sample_rate, sample_rate, quality="HQ")
        return torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))


def read_audio(path: str | Path) -> DecodedAudio:
    """Decode ``path`` with soundfile block by block, mixing each block to mono.

    A file that breaks off after some audio keeps what decoded before (``partial``); raises
    :class:`AudioError` for a missing, undecodable or empty file and for NaN or inf samples (a
    broken float export: repairing them would invent audio, so the file is refused instead).
    """
    if not Path(path).is_file():
        raise AudioError(f"{path}: file not found", "missing")
    try:
        f = sf.SoundFile(os.fsencode(path))  # bytes: a file name need not be valid UTF-8
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"{path}: cannot decode as audio ({err})", "unreadable") from err
    parts: list[np.ndarray] = []
    stopped = ""
    with f:
        rate, declared = f.samplerate, f.frames
        while True:
            try:
                block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as err:
                stopped = str(err)
                break
            if not np.isfinite(block).all():
                raise AudioError(f"{path}: contains non-finite samples (NaN or inf)", "non-finite")
            if len(block):
                parts.append(block.mean(axis=1))
            if len(block) < BLOCK_FRAMES:
                break
    if not parts:
        if stopped:
            raise AudioError(f"{path}: cannot decode as audio ({stopped})", "unreadable")
        raise AudioError(f"{path}: contains no samples", "empty")
    samples = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return DecodedAudio(samples, rate, declared, stopped)


def load_audio(path: str | Path, sample_rate: int, strict: bool = False) -> torch.Tensor:
    """Read ``path``, mix to mono and resample; returns a 1-D float32 tensor.

    Raises :class:`AudioError` for files that are missing, not decodable, empty or hold non-finite
    samples, so the caller can skip them with a message instead of failing deep in a stack. Of a
    truncated or corrupt file the decodable part is used with a warning (``strict``: refused).
    """
    decoded = read_audio(path)
    if decoded.partial:
        if strict:
            raise AudioError(f"{path}: {decoded.note()}", "truncated")
        log.warning("%s: %s; using the decoded part", path, decoded.note())
    return decoded.waveform(sample_rate)
