"""The HEAR 2021 API (https://hearbenchmark.com/hear-api.html) over a ser-ssl pretraining checkpoint.

    from ser_ssl import hear
    model = hear.load_model("runs/pretrain/checkpoints/last.ckpt")
    scene = hear.get_scene_embeddings(audio, model)                   # [n_sounds, D]
    frames, timestamps = hear.get_timestamp_embeddings(audio, model)  # [n_sounds, T, D], [n_sounds, T] (ms)

``audio`` is ``[n_sounds, n_samples]`` float at ``model.sample_rate``. The model is ``ser-ssl
predict``'s pipeline (:class:`~ser_ssl.tasks.Embed`): log-mel with the pretraining's settings, its
per-band standardisation, the encoder on windows of ``patch_frames``.

Scene embeddings are the mean of the encoder's embeddings of non-overlapping windows (the last one ends
at the sound's end; a sound shorter than a window is tiled, as in training), as in the export: they
match it up to the float16 rounding of the export's cached log-mel.

Timestamp embeddings lie on one regular grid, ``t_k = t_0 + k * hop`` milliseconds with
``0 <= t_0 < hop``, whatever the sound's length (see :class:`~ser_ssl.inference.TimestampGrid`):
``hop`` is at most ``model.timestamp_hop_ms`` (50 ms by default, what HEAR recommends for event tasks;
39.9 ms with the default 22,050 Hz log-mel of hop 220). ``ser-ssl predict``'s frame-level export uses
the same grid.
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ser_ssl.audio import LogMel, LogMelConfig, Standardize
from ser_ssl.inference import TimestampGrid, clip_windows, frame_stride, grid_frames
from ser_ssl.tasks.checkpoint import read_pretrained

DEFAULT_CHECKPOINT = "runs/pretrain/checkpoints/last.ckpt"
DEFAULT_PATCH_FRAMES = 101
DEFAULT_TIMESTAMP_HOP_MS = 50.0


class HEARModel(nn.Module):
    """Log-mel, standardisation and encoder, with the attributes the HEAR API asks for.

    ``timestamp_hop_ms`` (50 by default, settable after loading) bounds the interval between timestamp
    embeddings: the grid takes the largest hop that divides the encoder's stride and is not longer
    (:attr:`timestamp_grid`), at a cost of about ``stride / hop`` encoder passes. A larger value (say
    1000) gives one frame per encoder frame (160 ms for ``VGGLike``) at the cost of one pass.

    Args:
        encoder: a ser-ssl encoder (``forward`` and ``frames``, ``embed_dim``).
        normalizer: the pretraining's per-band statistics.
        features: the pretraining's log-mel settings.
        patch_frames: the window length in log-mel frames.
    """

    def __init__(
        self, encoder: nn.Module, normalizer: Standardize, features: LogMelConfig, patch_frames: int
    ) -> None:
        super().__init__()
        self.logmel = LogMel(features)
        self.normalizer = normalizer
        self.encoder = encoder
        self.patch_frames = patch_frames
        self.encoder_stride, frame_dim = frame_stride(encoder, features.n_mels, patch_frames)
        self.timestamp_hop_ms: float = DEFAULT_TIMESTAMP_HOP_MS
        self.sample_rate: int = features.sample_rate
        self.scene_embedding_size: int = encoder.embed_dim
        self.timestamp_embedding_size: int = int(frame_dim)

    @property
    def ms_per_frame(self) -> float:
        """Milliseconds between log-mel frames."""
        return 1000.0 * self.logmel.config.hop_length / self.sample_rate

    @property
    def timestamp_grid(self) -> TimestampGrid:
        """The grid of :meth:`timestamp_embeddings` for the current ``timestamp_hop_ms``."""
        return TimestampGrid.finest(
            self.encoder_stride, self.patch_frames, self.timestamp_hop_ms, self.ms_per_frame
        )

    def _mel(self, audio: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[n_sounds, n_mels, frames]`` as the feature cache holds it."""
        if audio.ndim != 2 or audio.shape[-1] == 0:
            raise ValueError(
                f"audio must be [n_sounds, n_samples] with n_samples > 0, got {tuple(audio.shape)}"
            )
        return self.logmel(audio.float())

    def windows(self, audio: torch.Tensor) -> torch.Tensor:
        """Standardised windows ``[n_sounds, W, 1, n_mels, patch_frames]`` of the scene embeddings
        (:func:`~ser_ssl.inference.clip_windows`, hop = window length)."""
        windows, _ = clip_windows(self._mel(audio), self.patch_frames)
        return self.normalizer(windows.unsqueeze(2))

    def window_embeddings(self, audio: torch.Tensor) -> torch.Tensor:
        """``[n_sounds, windows, D]``: the encoder's embedding of each of :meth:`windows`."""
        x = self.windows(audio)
        n, w = x.shape[:2]
        return self.encoder(x.flatten(0, 1)).view(n, w, -1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Scene embeddings ``[n_sounds, D]``: the mean over the sound's windows."""
        return self.window_embeddings(audio).mean(dim=1)

    def timestamp_embeddings(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame embeddings ``[n_sounds, T, D]`` and their centres ``[n_sounds, T]`` in milliseconds, on
        :attr:`timestamp_grid` (:func:`~ser_ssl.inference.grid_frames`: windows past the sound's ends
        see silence, which is also what HEAR's baselines pad audio with). Every grid frame centred
        before the sound's end is returned; a sound shorter than ``first`` gets one frame."""
        grid = self.timestamp_grid
        count = grid.count(Fraction(audio.shape[-1], self.logmel.config.hop_length))
        silence = math.log10(self.logmel.config.log_offset)
        # without the frames LogMel adds when it tiles a sound shorter than one FFT (a centred STFT
        # has 1 + n_samples // hop_length frames of the sound's own)
        mel = self._mel(audio)[..., : 1 + audio.shape[-1] // self.logmel.config.hop_length]
        seq = grid_frames(self.encoder, self.normalizer, mel, grid, count, silence)
        stamps = (grid.centres(count) * self.ms_per_frame).to(device=audio.device, dtype=torch.float32)
        return seq, stamps.expand(len(seq), -1).contiguous()


def load_model(model_file_path: str = "", **kwargs: Any) -> HEARModel:
    """The HEAR model of a ser-ssl pretraining checkpoint (``""``: ``runs/pretrain/checkpoints/last.ckpt``).

    Features and window length come from the checkpoint's recorded data module settings (written by
    ``ser-ssl fit``); a checkpoint without them falls back to :class:`LogMelConfig` defaults and 101
    frames, with a warning. A file that is not a pretraining checkpoint raises
    :class:`~ser_ssl.tasks.checkpoint.CheckpointError`. Returned in eval mode, on the CPU. HEAR's
    ``load_model`` takes no options: set ``model.timestamp_hop_ms`` on the returned model instead.
    """
    if kwargs:
        raise TypeError(
            f"load_model takes no options besides model_file_path (HEAR's API), got {sorted(kwargs)}; "
            "set model.timestamp_hop_ms on the returned model for another timestamp interval"
        )
    path = Path(model_file_path or DEFAULT_CHECKPOINT)
    pretrained = read_pretrained(path)
    features, patch_frames = pretrained.features, pretrained.patch_frames
    if features is None or patch_frames is None:
        warnings.warn(
            f"{path} does not record its data settings (not written by `ser-ssl fit`?); assuming the "
            "default log-mel settings and 101-frame windows",
            stacklevel=2,
        )
        features = features or LogMelConfig(n_mels=pretrained.stats["mean"].shape[0])
        patch_frames = patch_frames or DEFAULT_PATCH_FRAMES
    normalizer = Standardize(features.n_mels)
    normalizer.load_state_dict(pretrained.stats)
    return HEARModel(pretrained.encoder, normalizer, features, patch_frames).eval()


def _prepare(audio: torch.Tensor, model: HEARModel) -> None:
    """Eval mode, on the audio's device (the model moves if it is elsewhere)."""
    model.eval()
    if model.normalizer.mean.device != audio.device:
        model.to(audio.device)


@torch.no_grad()
def get_scene_embeddings(audio: torch.Tensor, model: HEARModel) -> torch.Tensor:
    """``[n_sounds, scene_embedding_size]`` float32 embeddings of ``[n_sounds, n_samples]`` audio."""
    _prepare(audio, model)
    return model(audio)


@torch.no_grad()
def get_timestamp_embeddings(audio: torch.Tensor, model: HEARModel) -> tuple[torch.Tensor, torch.Tensor]:
    """``([n_sounds, T, timestamp_embedding_size], [n_sounds, T])``: frame embeddings and their
    centres in milliseconds from the start of the sound, on ``model.timestamp_grid``."""
    _prepare(audio, model)
    return model.timestamp_embeddings(audio)
