"""Embedding export: a pretrained encoder applied to whole clips (``ser-ssl predict``).

A clip is cut into the same non-overlapping windows as downstream evaluation (hop = patch length; the
last window ends at the clip's end, so it may overlap the one before). The clip embedding is the mean
of its windows' embeddings; the frame-level sequence is the encoder's ``frames()`` of each window,
concatenated in time order, each frame of the clip's time kept once (see :func:`frame_layout`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from ser_ssl.audio import LogMelConfig
from ser_ssl.errors import ConfigError
from ser_ssl.eval.metrics import clip_mean
from ser_ssl.tasks.base import BaseTask
from ser_ssl.tasks.checkpoint import read_pretrained


def frame_layout(
    starts: Sequence[int], n_frames: int, patch_frames: int, out_frames: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Which output frames of each window make up a clip's frame sequence, and where they are.

    A window starting at input frame ``s`` gives ``out_frames`` output frames; output frame ``j``
    stands for input frames ``[s + j*r, s + (j+1)*r)`` with ``r = patch_frames / out_frames`` (the
    encoder's time downsampling, measured from shapes). A frame is kept when its midpoint lies in the
    part of the clip that no earlier window covered and that is real audio, not the tiling of a clip
    shorter than a patch: so overlapping windows add each instant once and time increases. A clip too
    short for any midpoint keeps its first frame.

    Returns the kept output-frame indices per window and their centres in input frames (input frame
    ``k`` is centred at sample ``k * hop_length``; multiply by ``hop_length / sample_rate`` for seconds).
    """
    r = patch_frames / out_frames
    keep, centres = [], []
    covered = 0.0
    for s in starts:
        end = min(s + patch_frames, n_frames)
        mids = s + (np.arange(out_frames) + 0.5) * r
        sel = np.flatnonzero((mids >= covered) & (mids < end))
        keep.append(sel)
        centres.append(mids[sel] - 0.5)  # midpoint of [a, b) in frame units is frame (a + b - 1) / 2
        covered = max(covered, end)
    if not any(len(k) for k in keep):
        keep[0] = np.array([0])
        centres[0] = np.array([(n_frames - 1) / 2])
    return keep, np.concatenate(centres)


class Embed(BaseTask):
    """Clip (and optionally frame-level) embeddings of a pretrained encoder, for ``ser-ssl predict``.

    Batches come from :meth:`~ser_ssl.data.AudioDataModule.predict_dataloader`. ``predict_step``
    returns ``{"index": [C], "embedding": [C, D]}`` and with ``frame_level`` also ``"frames"`` (per clip
    ``[T_i, D]``) and ``"timestamps"`` (per clip ``[T_i]``, frame centres in seconds);
    :class:`~ser_ssl.eval.export.EmbeddingWriter` writes them to disk.

    Args:
        encoder_checkpoint: a SimCLR checkpoint; its encoder and input statistics are used as they are.
        frame_level: also return the frame-level sequences (costs a second encoder pass: the clip
            embedding always comes from the encoder's ``forward``, whatever its pooling).
        n_mels: mel bands of the input (linked from the data module by the CLI).
        channels_last: run convolutions in the channels-last memory format (faster on CPU).
    """

    def __init__(
        self,
        encoder_checkpoint: str,
        frame_level: bool = False,
        n_mels: int = 96,
        channels_last: bool = True,
    ) -> None:
        super().__init__(n_mels=n_mels, channels_last=channels_last)
        self.save_hyperparameters()
        pretrained = read_pretrained(encoder_checkpoint)
        self.encoder = pretrained.encoder
        self.features = pretrained.features  # None when the checkpoint does not record them
        self.frame_level = frame_level
        self.encoder_checkpoint = encoder_checkpoint
        n_stats = pretrained.stats["mean"].shape[0]
        if n_stats != n_mels:
            raise ConfigError(
                f"{encoder_checkpoint} was pretrained on {n_stats} mel bands, the data has {n_mels}; "
                "export with the pretraining's --data.features"
            )
        self.normalizer.load_state_dict(pretrained.stats)
        self.encoder.requires_grad_(False)

    def setup(self, stage: str) -> None:
        """Refuse data whose log-mel settings differ from pretraining: the embeddings would be meaningless."""
        super().setup(stage)
        data_features = getattr(self.trainer.datamodule, "features", None) if self.trainer else None
        if isinstance(data_features, LogMelConfig):
            if self.features is not None and data_features != self.features:
                ours, theirs = asdict(data_features), asdict(self.features)
                diff = {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}
                raise ConfigError(
                    f"data.features differ from the pretraining of {self.encoder_checkpoint} "
                    f"(setting: (data, pretraining)): {diff}; set --data.features to the pretraining's"
                )
            self.features = data_features

    @property
    def seconds_per_frame(self) -> float:
        """Seconds between log-mel frames (the feature hop)."""
        features = self.features or LogMelConfig()
        return features.hop_length / features.sample_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embeddings ``[B, D]`` of un-normalised log-mel patches ``[B, 1, n_mels, frames]``."""
        return self.encoder(self.prepare_input(x))

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        x = self.prepare_input(batch["patches"])
        n = len(batch["target"])
        out: dict[str, Any] = {
            "index": batch["index"],
            "embedding": clip_mean(self.encoder(x).float(), batch["clip"], n),
        }
        if self.frame_level:
            out["frames"], out["timestamps"] = self.frame_sequences(x, batch)
        return out

    def frame_sequences(
        self, x: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per clip of the batch: frame embeddings ``[T_i, D]`` and their centres in seconds ``[T_i]``."""
        frames = self.encoder.frames(x).float().transpose(1, 2)  # [W, T', D]
        clip, starts, lengths = batch["clip"].cpu(), batch["start"].cpu(), batch["length"].cpu()
        seqs, stamps = [], []
        for c in range(len(lengths)):
            windows = (clip == c).nonzero().flatten().tolist()
            keep, centres = frame_layout(
                starts[windows].tolist(), int(lengths[c]), x.shape[-1], frames.shape[1]
            )
            rows = [
                frames[w, torch.as_tensor(k, device=frames.device)]
                for w, k in zip(windows, keep, strict=True)
            ]
            seqs.append(torch.cat(rows))
            stamps.append(torch.as_tensor(centres * self.seconds_per_frame, dtype=torch.float64))
        return seqs, stamps
