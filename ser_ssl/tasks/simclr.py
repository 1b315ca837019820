"""SimCLR pretraining of a sound-event encoder (METHOD §2–§6)."""

from __future__ import annotations

from typing import Any

import torch
from jsonargparse import lazy_instance
from torch import nn

from ser_ssl.augment import MixBack
from ser_ssl.losses import NTXentLoss
from ser_ssl.models import ProjectionHead, VGGLike
from ser_ssl.tasks.base import BaseTask

CHECKPOINT_KIND = "ser_ssl.pretrain"


class SimCLR(BaseTask):
    """Encoder + projection head trained with NT-Xent on two mixed-back, augmented views per clip.

    Args:
        encoder: any module mapping ``[B, 1, n_mels, frames]`` to ``[B, embed_dim]``.
        mixback: mix-back of each view with a background from another clip; ``null`` turns it off.
        augment: transforms applied in order to every view after mix-back and standardisation.
        temperature: NT-Xent temperature τ.
        proj_hidden_dim / proj_dim: projection head sizes.
        **kwargs: optimiser settings of :class:`~ser_ssl.tasks.base.BaseTask`.
    """

    def __init__(
        self,
        encoder: nn.Module = lazy_instance(VGGLike),
        mixback: MixBack | None = lazy_instance(MixBack),
        augment: list[nn.Module] | None = None,
        temperature: float = 0.2,
        proj_hidden_dim: int = 512,
        proj_dim: int = 512,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.encoder = encoder
        self.head = ProjectionHead(encoder.embed_dim, proj_hidden_dim, proj_dim)
        self.mixback = mixback
        self.augment = nn.Sequential(*(augment or []))
        self.criterion = NTXentLoss(temperature)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Mix-back, standardisation and augmentation, batched on the training device."""
        if not isinstance(batch, dict) or "views" not in batch:
            return batch
        views = batch["views"]
        if self.mixback is not None:
            views = self.mixback(views, batch["backgrounds"])
        return self.augment(self.prepare_input(views.flatten(0, 1)))

    def training_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """``x``: the views of ``n`` clips as ``[2n, 1, n_mels, frames]``, clip by clip."""
        n = x.shape[0] // 2
        z = self.head(self.encoder(x)).view(n, 2, -1)
        loss = self.criterion(z[:, 0], z[:, 1])
        self.log("train/loss", loss, prog_bar=True, batch_size=n, sync_dist=True)  # global under DDP
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["ser_ssl_kind"] = CHECKPOINT_KIND
