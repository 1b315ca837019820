"""Downstream classification on a pretrained encoder: the linear probe and fine-tuning (docs/method.md §7).

Training sees one random patch per clip; evaluation scores each clip as a whole by averaging the
softmax (sigmoid, for multi-label data) outputs of all its sliding-window patches, then computes
clip-level metrics (:mod:`ser_ssl.eval.metrics`). At the end of each validation and test, rank 0
writes ``confusion_<stage>.csv`` and ``per_class_<stage>.csv`` to ``trainer.default_root_dir``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from ser_ssl.errors import ConfigError
from ser_ssl.eval.metrics import (
    clip_mean,
    clip_metrics,
    per_class_metric,
    per_class_rows,
    write_confusion_csv,
    write_per_class_csv,
)
from ser_ssl.tasks.base import BaseTask
from ser_ssl.tasks.checkpoint import load_pretrained

__all__ = ["DownstreamTask", "EmbeddingMemo", "FineTune", "LinearProbe", "clip_mean"]


class DownstreamTask(BaseTask):
    """Encoder + linear classifier, shared by :class:`LinearProbe` and :class:`FineTune`.

    Args:
        encoder_checkpoint: a SimCLR checkpoint; its recorded encoder is rebuilt and its weights
            and input statistics loaded.
        load_weights: ``false`` keeps the checkpoint's architecture but a random initialisation
            (the random-encoder baseline).
        encoder: an encoder to use instead of the checkpoint's architecture; without a checkpoint
            it starts from its random initialisation and the input statistics come from the data
            (training from scratch, ``configs/scratch.yaml``).
        num_classes: number of classes; by default taken from the data module.
        multilabel: sigmoid outputs, binary cross-entropy and mAP / ROC-AUC instead of softmax,
            cross-entropy and accuracies; by default the data module's ``multilabel`` (false when
            it has none).
        **kwargs: optimiser settings of :class:`~ser_ssl.tasks.base.BaseTask`.
    """

    freeze_encoder = False

    def __init__(
        self,
        encoder_checkpoint: str | None = None,
        load_weights: bool = True,
        encoder: nn.Module | None = None,
        num_classes: int | None = None,
        multilabel: bool | None = None,
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
        self.multilabel = bool(multilabel)
        self.class_names: list[str] = []
        # rank 0: this stage's confusion matrix (single-label) or per-class AP (multi-label), as written
        # to CSV at the end of the last validation/test, for callbacks (ClassificationImages) to plot
        self.per_class_results: dict[str, torch.Tensor] = {}
        if num_classes is not None:
            self._build_head(num_classes, self.multilabel)

    def _build_head(self, num_classes: int, multilabel: bool) -> None:
        dim = self.encoder.embed_dim
        norm = [nn.BatchNorm1d(dim, affine=False)] if self.freeze_encoder else []
        self.classifier = nn.Sequential(*norm, nn.Linear(dim, num_classes))
        self.multilabel = multilabel
        metrics = clip_metrics(num_classes, multilabel)
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.val_per_class = per_class_metric(num_classes, multilabel)
        self.test_per_class = per_class_metric(num_classes, multilabel)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = self.trainer.datamodule
        data_multilabel = getattr(dm, "multilabel", None)
        if self.classifier is None:
            multilabel = self.hparams.multilabel
            if multilabel is None:
                multilabel = bool(data_multilabel)
            # recorded, so the checkpoint rebuilds the same head
            self.hparams.num_classes, self.hparams.multilabel = dm.num_classes, multilabel
            self._build_head(dm.num_classes, multilabel)
        if data_multilabel is not None and bool(data_multilabel) != self.multilabel:
            kinds = ["single-label", "multi-label"]
            raise ConfigError(
                f"the model is {kinds[self.multilabel]} but the data is {kinds[bool(data_multilabel)]}; "
                "set --model.init_args.multilabel to match the data"
            )
        n_out = self.classifier[-1].out_features
        names = list(getattr(dm, "classes", None) or [])
        self.class_names = names if len(names) == n_out else [str(k) for k in range(n_out)]

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

    def training_embeddings(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Embeddings of the training patches (the linear probe may look them up instead)."""
        return self.embed(batch["patch"])

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))
        return F.cross_entropy(logits, target)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        target = batch["target"]
        loss = self.loss(self.classifier(self.training_embeddings(batch)), target)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(target))
        return loss

    def clip_probabilities(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean over each clip's windows of the softmax (sigmoid if multi-label): ``[clips, classes]``."""
        logits = self(batch["patches"]).float()
        probs = torch.sigmoid(logits) if self.multilabel else F.softmax(logits, dim=-1)
        return clip_mean(probs, batch["clip"], len(batch["target"]))

    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        probs, target = self.clip_probabilities(batch), batch["target"]
        if self.multilabel:
            target = target.long()  # torchmetrics' multilabel metrics want integer 0/1 targets
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(probs, target)
        (self.val_per_class if stage == "val" else self.test_per_class).update(probs, target)
        self.log_dict(metrics, prog_bar=stage == "val", batch_size=len(target))

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._save_per_class("val")

    def on_test_epoch_end(self) -> None:
        self._save_per_class("test")

    def _save_per_class(self, stage: str) -> None:
        """Write the confusion matrix and the per-class scores of this epoch (rank 0, after the
        cross-rank sync that ``compute`` does on every rank)."""
        metric = self.val_per_class if stage == "val" else self.test_per_class
        if not metric.update_called:
            return
        value = metric.compute()
        metric.reset()
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        self.per_class_results[stage] = value.detach().cpu()
        root = Path(self.trainer.default_root_dir)
        if not self.multilabel:
            write_confusion_csv(root / f"confusion_{stage}.csv", value, self.class_names)
        write_per_class_csv(
            root / f"per_class_{stage}.csv", per_class_rows(value, self.class_names, self.multilabel)
        )


class EmbeddingMemo:
    """Embeddings of patches keyed by ``(cache row, start frame)``, each computed on first sight.

    For a frozen encoder without augmentation a patch's embedding never changes, so the probe's
    200 epochs (docs/method.md §7) need one encoder pass per patch, not one per epoch. The bank lives on
    the embeddings' device and grows by doubling.
    """

    def __init__(self) -> None:
        self.slot: dict[tuple[int, int], int] = {}
        self.bank: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.slot)

    def lookup(
        self, rows: torch.Tensor, starts: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Embeddings ``[B, D]`` of the patches ``(rows[i], starts[i])``; ``compute(index)`` embeds
        the batch positions ``index`` of the patches not seen before (each distinct one once)."""
        keys = list(zip(rows.tolist(), starts.tolist(), strict=True))
        unseen: dict[tuple[int, int], int] = {}  # first batch position of each new key
        for i, key in enumerate(keys):
            if key not in self.slot and key not in unseen:
                unseen[key] = i
        if unseen:
            self._append(list(unseen), compute(torch.tensor(list(unseen.values()), device=rows.device)))
        slots = torch.tensor([self.slot[k] for k in keys], device=self.bank.device)
        return self.bank[slots]

    def _append(self, keys: list[tuple[int, int]], values: torch.Tensor) -> None:
        n, m = len(self.slot), len(keys)
        if self.bank is None or n + m > len(self.bank):
            grown = values.new_empty((max(2 * n, n + m, 256), values.shape[1]))
            if self.bank is not None:
                grown[:n] = self.bank[:n]
            self.bank = grown
        self.bank[n : n + m] = values.detach()
        for j, key in enumerate(keys):
            self.slot[key] = n + j


class LinearProbe(DownstreamTask):
    """Linear classifier on a frozen encoder (no gradients, eval mode, BatchNorm statistics frozen).

    The embeddings pass through a BatchNorm without affine parameters before the linear layer (as
    in MAE's linear probing): still a linear map at test time, but insensitive to the embeddings'
    scale, so one learning rate suits every encoder, random ones included.

    Args:
        cache_embeddings: compute each training patch's embedding once per fit and look it up in
            later epochs. Needs a finite set of training patches: the data module's
            ``train_hop_frames`` (``configs/probe.yaml`` sets it); with random starts (``null``)
            nothing repeats, so the probe warns and embeds every batch.
        **kwargs: the settings of :class:`DownstreamTask`.
    """

    freeze_encoder = True

    def __init__(self, cache_embeddings: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cache_embeddings = cache_embeddings
        self.memo: EmbeddingMemo | None = None

    def on_fit_start(self) -> None:
        self.memo = None
        if not self.cache_embeddings:
            return
        if getattr(self.trainer.datamodule, "train_hop_frames", None) is None:
            rank_zero_warn(
                "LinearProbe(cache_embeddings=True) but the data module draws training patches at random "
                "starts (train_hop_frames is null), so no patch repeats: embedding every batch. Set "
                "--data.init_args.train_hop_frames (e.g. patch_frames // 2) to embed each patch once, or "
                "--model.init_args.cache_embeddings false to silence this."
            )
            return
        self.memo = EmbeddingMemo()

    def on_fit_end(self) -> None:
        self.memo = None  # the bank can be large; a later fit starts a new one

    def training_embeddings(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.memo is None:
            return super().training_embeddings(batch)
        return self.memo.lookup(batch["row"], batch["start"], lambda index: self.embed(batch["patch"][index]))

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
