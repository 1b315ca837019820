"""The HEAR 2021 API (https://hearbenchmark.com/hear-api.html) over a ser-ssl pretraining checkpoint.

    from ser_ssl import hear
    model = hear.load_model("runs/pretrain/checkpoints/last.ckpt")
    scene = hear.get_scene_embeddings(audio, model)                   # [n_sounds, D]
    frames, timestamps = hear.get_timestamp_embeddings(audio, model)  # [n_sounds, T, D], [n_sounds, T] (ms)

``audio`` is ``[n_sounds, n_samples]`` float at ``model.sample_rate``. The model is the same pipeline as
``ser-ssl predict`` (:class:`~ser_ssl.tasks.Embed`): log-mel with the pretraining's settings, its
per-band standardisation, the encoder on non-overlapping windows of ``patch_frames`` (the last one
ends at the sound's end; a sound shorter than a window is tiled, as in training). Scene embeddings
are the mean of the windows' embeddings; timestamp embeddings are the encoder's frame sequence
(:func:`~ser_ssl.tasks.embed.frame_layout`) with each frame's centre in milliseconds. Export reads
float16 cached features, so its embeddings match these up to float16 rounding of the log-mel.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ser_ssl.audio import LogMel, LogMelConfig, Standardize
from ser_ssl.data.views import window_starts
from ser_ssl.tasks.checkpoint import read_pretrained
from ser_ssl.tasks.embed import frame_layout

DEFAULT_CHECKPOINT = "runs/pretrain/checkpoints/last.ckpt"
DEFAULT_PATCH_FRAMES = 101


class HEARModel(nn.Module):
    """Log-mel, standardisation and encoder, with the attributes the HEAR API asks for.

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
        self.sample_rate: int = features.sample_rate
        self.scene_embedding_size: int = encoder.embed_dim
        self.timestamp_embedding_size: int = encoder.embed_dim

    def windows(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[int], int]:
        """Standardised windows ``[n_sounds, W, 1, n_mels, patch_frames]``, their starts, and the number
        of log-mel frames of the sound itself (fewer than computed when LogMel tiled a very short one)."""
        if audio.ndim != 2 or audio.shape[-1] == 0:
            raise ValueError(
                f"audio must be [n_sounds, n_samples] with n_samples > 0, got {tuple(audio.shape)}"
            )
        mel = self.logmel(audio.float())  # [n, n_mels, frames]
        n_frames = mel.shape[-1]
        if n_frames < self.patch_frames:  # tiled along time, like the training patches
            mel = mel.repeat(1, 1, -(-self.patch_frames // n_frames))[..., : self.patch_frames]
        starts = window_starts(n_frames, self.patch_frames, self.patch_frames)
        x = torch.stack([mel[..., s : s + self.patch_frames] for s in starts], dim=1)
        real_frames = min(n_frames, 1 + audio.shape[-1] // self.logmel.config.hop_length)  # centred STFT
        return self.normalizer(x.unsqueeze(2)), starts, real_frames

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Scene embeddings ``[n_sounds, D]``: the mean over the sound's windows."""
        x, _, _ = self.windows(audio)
        n, w = x.shape[:2]
        return self.encoder(x.flatten(0, 1)).view(n, w, -1).mean(dim=1)

    def timestamp_embeddings(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame embeddings ``[n_sounds, T, D]`` and frame centres ``[n_sounds, T]`` in milliseconds."""
        x, starts, n_frames = self.windows(audio)
        n, w = x.shape[:2]
        frames = self.encoder.frames(x.flatten(0, 1)).transpose(1, 2)  # [n * W, T', D]
        frames = frames.reshape(n, w, *frames.shape[1:])
        keep, centres = frame_layout(starts, n_frames, self.patch_frames, frames.shape[2])
        seq = torch.cat(
            [frames[:, i, torch.as_tensor(k, device=frames.device)] for i, k in enumerate(keep)], 1
        )
        ms_per_frame = 1000.0 * self.logmel.config.hop_length / self.sample_rate
        stamps = torch.as_tensor(centres * ms_per_frame, dtype=torch.float32, device=audio.device)
        return seq, stamps.expand(n, -1).contiguous()


def load_model(model_file_path: str = "", **kwargs: Any) -> HEARModel:
    """The HEAR model of a ser-ssl pretraining checkpoint (``""``: ``runs/pretrain/checkpoints/last.ckpt``).

    Features and window length come from the checkpoint's recorded data module settings (written by
    ``ser-ssl fit``); a checkpoint without them falls back to :class:`LogMelConfig` defaults and 101
    frames, with a warning. A file that is not a pretraining checkpoint raises
    :class:`~ser_ssl.tasks.checkpoint.CheckpointError`. Returned in eval mode, on the CPU.
    """
    if kwargs:
        raise TypeError(f"load_model takes no options besides model_file_path, got {sorted(kwargs)}")
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
    if next(model.parameters()).device != audio.device:
        model.to(audio.device)


@torch.no_grad()
def get_scene_embeddings(audio: torch.Tensor, model: HEARModel) -> torch.Tensor:
    """``[n_sounds, scene_embedding_size]`` float32 embeddings of ``[n_sounds, n_samples]`` audio."""
    _prepare(audio, model)
    return model(audio)


@torch.no_grad()
def get_timestamp_embeddings(audio: torch.Tensor, model: HEARModel) -> tuple[torch.Tensor, torch.Tensor]:
    """``([n_sounds, T, timestamp_embedding_size], [n_sounds, T])``: frame embeddings and their
    centres in milliseconds from the start of the sound."""
    _prepare(audio, model)
    return model.timestamp_embeddings(audio)
