"""SimCLR pretraining of a sound-event encoder (METHOD §2–§6)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from jsonargparse import lazy_instance
from torch import nn

from ser_ssl.augment import Augmentations, Compression, GaussianNoise, MixBack, RandomResizedCrop
from ser_ssl.losses import NTXentLoss
from ser_ssl.models import ProjectionHead, VGGLike
from ser_ssl.tasks.base import BaseTask

CHECKPOINT_KIND = "ser_ssl.pretrain"


class SimCLR(BaseTask):
    """Encoder + projection head trained with NT-Xent on two mixed-back, augmented views per clip.

    Args:
        encoder: any module mapping ``[B, 1, n_mels, frames]`` to ``[B, embed_dim]``.
        mixback: mix-back of each view with a background from another clip; ``null`` turns it off.
        augment: transforms applied in order to every view after mix-back and standardisation;
            ``None`` is the paper's best setting (random resized crop, compression, Gaussian noise),
            ``[]`` none at all.
        second_view_augment: when given, the second view of each clip goes through these transforms
            instead of ``augment`` (asymmetric views).
        temperature: NT-Xent temperature τ.
        proj_hidden_dim / proj_dim: projection head sizes.
        **kwargs: optimiser settings of :class:`~ser_ssl.tasks.base.BaseTask`.
    """

    flops_per_batch: int | None = None  # ThroughputMonitor reports patches/s, not FLOPs

    def __init__(
        self,
        encoder: nn.Module = lazy_instance(VGGLike),
        mixback: MixBack | None = lazy_instance(MixBack),
        augment: list[nn.Module] | None = None,
        second_view_augment: list[nn.Module] | None = None,
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
        if augment is None:
            augment = [RandomResizedCrop(), Compression(), GaussianNoise()]
        self.augment = Augmentations(augment)
        self.second_view_augment = None if second_view_augment is None else Augmentations(second_view_augment)
        self.criterion = NTXentLoss(temperature)
        self._seed = 0

    def on_fit_start(self) -> None:
        self._seed = torch.initial_seed()  # what seed_everything set: the root of every view's draw

    @contextmanager
    def view_rng(self) -> Iterator[None]:
        """Seed torch's RNG for one batch's views from (seed, rank, batch index), then restore it.

        Views are then the same for the same seed, differ between DDP ranks, and come out the same
        after resuming from a checkpoint; nothing else that draws from the RNG is disturbed.
        """
        trainer = self._trainer
        if trainer is None:  # used outside a Trainer: plain global RNG
            yield
            return
        key = [self._seed, trainer.global_rank, max(trainer.fit_loop.total_batch_idx, -1) + 1]
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
            yield

    def make_views(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mix-back, standardisation and augmentation of a batch of ``n`` clips' two views.

        Returns ``[2n, 1, n_mels, frames]``, clip by clip (the two views of a clip side by side).
        """
        views = batch["views"]
        if self.mixback is not None:
            views = self.mixback(views, batch["backgrounds"])
        x = self.normalizer(views)
        if self.second_view_augment is None:
            x = self.augment(x.flatten(0, 1))
        else:
            x = torch.stack([self.augment(x[:, 0]), self.second_view_augment(x[:, 1])], 1).flatten(0, 1)
        return x.contiguous(memory_format=self.memory_format)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Views are made batched on the training device, from a seeded RNG (see :meth:`view_rng`)."""
        if not isinstance(batch, dict) or "views" not in batch:
            return batch
        with self.view_rng():
            return self.make_views(batch)

    def training_step(self, x: torch.Tensor, batch_idx: int) -> dict[str, torch.Tensor]:
        """``x``: the views of ``n`` clips as ``[2n, 1, n_mels, frames]``, clip by clip.

        Returns the loss with the detached embeddings ``h`` and projections ``z`` (``[n, 2, dim]``)
        for the diagnostics callbacks.
        """
        n = x.shape[0] // 2
        h = self.encoder(x)
        z = self.head(h).view(n, 2, -1)
        loss = self.criterion(z[:, 0], z[:, 1])
        self.check_finite(loss)
        self.log("train/loss", loss, prog_bar=True, batch_size=n, sync_dist=True)  # global under DDP
        return {"loss": loss, "z": z.detach(), "h": h.detach().view(n, 2, -1)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["ser_ssl_kind"] = CHECKPOINT_KIND
