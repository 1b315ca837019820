"""Downstream classification on a pretrained encoder: the linear probe and fine-tuning (METHOD §7).

Training sees one random patch per clip; evaluation scores each clip as a whole by averaging the
softmax outputs of all its sliding-window patches, then computes clip-level metrics.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from ser_ssl.errors import ConfigError
from ser_ssl.tasks.base import BaseTask
from ser_ssl.tasks.checkpoint import load_pretrained


class DownstreamTask(BaseTask):
    """Encoder + linear classifier, shared by :class:`LinearProbe` and :class:`FineTune`.

    Args:
        encoder_checkpoint: a SimCLR checkpoint; its recorded encoder is rebuilt and its weights
            and input statistics loaded.
        load_weights: ``false`` keeps the checkpoint's architecture but a random initialisation
            (the random-encoder baseline).
        encoder: an encoder to use instead of the checkpoint's architecture.
        num_classes: number of classes; by default taken from the data module.
        **kwargs: optimiser settings of :class:`~ser_ssl.tasks.base.BaseTask`.
    """

    freeze_encoder = False

    def __init__(
        self,
        encoder_checkpoint: str | None = None,
        load_weights: bool = True,
        encoder: nn.Module | None = None,
        num_classes: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if encoder_checkpoint is not None:
            pretrained, stats = load_pretrained(encoder_checkpoint, load_weights)
            if encoder is None:
                encoder = pretrained
            elif load_weights:
                try:
                    encoder.load_state_dict(pretrained.state_dict())
                except RuntimeError as err:
                    raise ConfigError(f"--model.encoder does not match {encoder_checkpoint}: {err}") from err
            if stats:
                self.normalizer.load_state_dict(stats)
        if encoder is None:
            raise ConfigError("give --model.encoder_checkpoint (a pretraining checkpoint) or --model.encoder")
        self.encoder = encoder
        if self.freeze_encoder:
            self.encoder.requires_grad_(False)
        self.classifier: nn.Sequential | None = None
        if num_classes is not None:
            self._build_head(num_classes)

    def _build_head(self, num_classes: int) -> None:
        dim = self.encoder.embed_dim
        norm = [nn.BatchNorm1d(dim, affine=False)] if self.freeze_encoder else []
        self.classifier = nn.Sequential(*norm, nn.Linear(dim, num_classes))
        metrics = MetricCollection(
            {
                "bal_acc": MulticlassAccuracy(num_classes, average="macro"),
                "acc": MulticlassAccuracy(num_classes, average="micro"),
            }
        )
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.classifier is None:
            num_classes = self.trainer.datamodule.num_classes
            self.hparams.num_classes = num_classes  # recorded, so the checkpoint rebuilds the head
            self._build_head(num_classes)

    def train(self, mode: bool = True) -> DownstreamTask:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # BatchNorm statistics stay those of pretraining
        return self

    def on_train_epoch_start(self) -> None:
        # Lightning restores each submodule's own mode rather than calling train(); enforce it here.
        self.train()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare_input(x)
        if self.freeze_encoder:
            with torch.no_grad():
                return self.encoder(x)
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch logits ``[B, num_classes]``."""
        return self.classifier(self.embed(x))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        return loss

    def clip_probabilities(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean of the softmax over each clip's windows: ``[clips, num_classes]``."""
        return clip_mean(F.softmax(self(batch["patches"]), dim=-1), batch["clip"], len(batch["target"]))

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.val_metrics.update(self.clip_probabilities(batch), batch["target"])
        self.log_dict(self.val_metrics, prog_bar=True, batch_size=len(batch["target"]))

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.test_metrics.update(self.clip_probabilities(batch), batch["target"])
        self.log_dict(self.test_metrics, batch_size=len(batch["target"]))


def clip_mean(values: torch.Tensor, clip: torch.Tensor, n_clips: int) -> torch.Tensor:
    """Average the rows of ``values`` that share a clip index."""
    sums = torch.zeros(n_clips, values.shape[1], device=values.device, dtype=values.dtype)
    sums.index_add_(0, clip, values)
    counts = torch.bincount(clip, minlength=n_clips).clamp_min(1).to(values.dtype)
    return sums / counts[:, None]


class LinearProbe(DownstreamTask):
    """Linear classifier on a frozen encoder (no gradients, eval mode, BatchNorm statistics frozen).

    The embeddings pass through a BatchNorm without affine parameters before the linear layer (as
    in MAE's linear probing): still a linear map at test time, but insensitive to the embeddings'
    scale, so one learning rate suits every encoder, random ones included.
    """

    freeze_encoder = True

    def trainable_modules(self) -> list[tuple[nn.Module, float]]:
        return [(self.classifier, self.lr)]


class FineTune(DownstreamTask):
    """Classifier and encoder trained together; the encoder gets its own learning rate.

    Args:
        encoder_lr: peak learning rate of the encoder (the classifier uses ``lr``).
    """

    def __init__(self, encoder_lr: float = 0.01, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.encoder_lr = encoder_lr

    def trainable_modules(self) -> list[tuple[nn.Module, float]]:
        return [(self.classifier, self.lr), (self.encoder, self.encoder_lr)]
