"""Embedding export: a pretrained encoder applied to whole clips (``ser-ssl predict``).

A clip is cut into the same non-overlapping windows as downstream evaluation (hop = patch length; the
last window ends at the clip's end, so it may overlap the one before). The clip embedding is the mean
of its windows' embeddings; the frame-level sequence lies on the regular time grid of the HEAR API
(:class:`~ser_ssl.inference.TimestampGrid`). Both come from :mod:`ser_ssl.inference`.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import torch

from ser_ssl.audio import LogMelConfig
from ser_ssl.errors import ConfigError
from ser_ssl.inference import (
    DEFAULT_TIMESTAMP_HOP_MS,
    TimestampGrid,
    clip_mean,
    frame_stride,
    grid_frames,
    join_windows,
)
from ser_ssl.tasks.base import BaseTask
from ser_ssl.tasks.checkpoint import read_pretrained


class Embed(BaseTask):
    """Clip (and optionally frame-level) embeddings of a pretrained encoder, for ``ser-ssl predict``.

    Batches come from :meth:`~ser_ssl.data.AudioDataModule.predict_dataloader`. ``predict_step``
    returns ``{"index": [C], "embedding": [C, D]}`` and with ``frame_level`` also ``"frames"`` (per clip
    ``[T_i, D]``) and ``"timestamps"`` (per clip ``[T_i]``, frame centres in seconds);
    :class:`~ser_ssl.eval.export.EmbeddingWriter` writes them to disk.

    Args:
        encoder_checkpoint: a SimCLR checkpoint; its encoder and input statistics are used as they are.
        frame_level: also return the frame-level sequences (costs further encoder passes, one per
            grid phase: the clip embedding always comes from the encoder's ``forward``, whatever its
            pooling).
        timestamp_hop_ms: the frame sequence's interval is at most this (as the HEAR API's
            ``model.timestamp_hop_ms``).
        n_mels: mel bands of the input (linked from the data module by the CLI).
        channels_last: run convolutions in the channels-last memory format (faster on CPU).
    """

    def __init__(
        self,
        encoder_checkpoint: str,
        frame_level: bool = False,
        timestamp_hop_ms: float = DEFAULT_TIMESTAMP_HOP_MS,
        n_mels: int = 96,
        channels_last: bool = True,
    ) -> None:
        super().__init__(n_mels=n_mels, channels_last=channels_last)
        self.save_hyperparameters()
        pretrained = read_pretrained(encoder_checkpoint)
        self.encoder = pretrained.encoder
        self.features = pretrained.features  # None when the checkpoint does not record them
        self.frame_level = frame_level
        self.timestamp_hop_ms = timestamp_hop_ms
        self._grid: TimestampGrid | None = None
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
            out["frames"], out["timestamps"] = self.frame_sequences(batch)
        return out

    def timestamp_grid(self, n_mels: int, patch_frames: int) -> TimestampGrid:
        """The frame sequences' grid (measured once: :func:`~ser_ssl.inference.frame_stride` runs the
        encoder a few times)."""
        if self._grid is None or self._grid.patch_frames != patch_frames:
            stride, _ = frame_stride(self.encoder, n_mels, patch_frames)
            ms_per_frame = 1000 * self.seconds_per_frame
            self._grid = TimestampGrid.finest(stride, patch_frames, self.timestamp_hop_ms, ms_per_frame)
        return self._grid

    def frame_sequences(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per clip of the batch: frame embeddings ``[T_i, D]`` on the grid and their centres in seconds
        ``[T_i]``. A clip's log-mel is put back together from its windows; its grid frames are those
        centred before its last log-mel frame (the cache keeps frames, not the sound's length, so the
        HEAR API on the same audio may give one frame more). The clips run through the encoder
        together, shorter ones padded with silence: a grid frame never sees past its window, and past a
        clip's end its windows see silence anyway."""
        patches = batch["patches"][:, 0].float()  # [W, n_mels, patch_frames]
        grid = self.timestamp_grid(*patches.shape[1:])
        silence = math.log10((self.features or LogMelConfig()).log_offset)
        clip, starts, lengths = batch["clip"].cpu(), batch["start"].cpu(), batch["length"].tolist()
        longest = max(lengths)
        mels = patches.new_full((len(lengths), patches.shape[1], longest), silence)
        for c, n_frames in enumerate(lengths):
            windows = (clip == c).nonzero().flatten()
            own = patches[windows.to(patches.device)]
            mels[c, :, :n_frames] = join_windows(own, starts[windows].tolist(), n_frames)
        counts = [grid.count(n - 1) for n in lengths]
        seqs = grid_frames(self.encoder, self.prepare_input, mels, grid, max(counts), silence)
        return (
            [seq[:count] for seq, count in zip(seqs, counts, strict=True)],
            [grid.centres(count) * self.seconds_per_frame for count in counts],
        )
