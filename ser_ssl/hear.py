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

import warnings
from pathlib import Path
from typing import Any

import torch

from ser_ssl.audio import LogMelConfig, Standardize
from ser_ssl.inference import HEARModel
from ser_ssl.tasks.checkpoint import read_pretrained

__all__ = ["HEARModel", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]

DEFAULT_CHECKPOINT = "runs/pretrain/checkpoints/last.ckpt"
DEFAULT_PATCH_FRAMES = 101


def load_model(model_file_path: str = "", **kwargs: Any) -> HEARModel:
    """The HEAR model of a ser-ssl pretraining checkpoint (``""``: ``runs/pretrain/checkpoints/last.ckpt``).

    Features and window length come from the checkpoint's recorded data module settings (written by
    ``ser-ssl fit``); a checkpoint without them falls back to :class:`LogMelConfig` defaults and 101
    frames, with a warning. A file that is not a pretraining checkpoint raises
    :class:`~ser_ssl.errors.CheckpointError`. Returned in eval mode, on the CPU. HEAR's
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
