"""Audio decoding and log-mel features (docs/method.md §1)."""

from ser_ssl.audio.features import LogMel, LogMelConfig, Standardize
from ser_ssl.audio.io import AudioError, load_audio

__all__ = ["AudioError", "LogMel", "LogMelConfig", "Standardize", "load_audio"]
