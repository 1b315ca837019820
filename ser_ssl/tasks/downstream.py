"""Downstream classification on a pretrained encoder: the linear probe and fine-tuning (docs/method.md §7).

Training sees one random patch per clip; evaluation scores each clip as a whole by averaging the
softmax (sigmoid, for multi-label data) outputs of all its sliding-window patches, then computes
clip-level metrics (:mod:`ser_ssl.eval.metrics`). At the end of each validation and test, rank 0
writes ``confusion_<stage>.csv`` and ``per_class_<stage>.csv`` to ``trainer.default_root_dir``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from ser_ssl.audio import LogMelConfig
from ser_ssl.errors import ConfigError
from ser_ssl.eval.metrics import (
    clip_metrics,
    per_class_metric,
    per_class_rows,
    write_confusion_csv,
    write_per_class_csv,
)
from ser_ssl.files import clip_ids
from ser_ssl.inference import clip_mean
from ser_ssl.tasks.base import BaseTask
from ser_ssl.tasks.checkpoint import CheckpointError, Pretrained, read_pretrained

__all__ = ["DownstreamTask", "EmbeddingMemo", "FineTune", "LinearProbe"]


class DownstreamTask(BaseTask):
    """Encoder + linear classifier, shared by :class:`LinearProbe` and :class:`FineTune`.

    The classifier is built for the data module's classes (and its ``multilabel``) at setup; its
    checkpoints carry the class names and the data's feature settings, and testing refuses data
    whose classes or features differ, instead of scoring one class as another.

    Args:
        encoder_checkpoint: a SimCLR checkpoint; its recorded encoder is rebuilt and its weights
            and input statistics loaded. The data must have the log-mel settings it was pretrained
            on, and its validation and test clips must not be among its pretraining clips.
        load_weights: ``false`` keeps the checkpoint's architecture but a random initialisation
            (the random-encoder baseline).
        encoder: an encoder to use instead of the checkpoint's architecture; without a checkpoint
            it starts from its random initialisation and the input statistics come from the data
            (training from scratch, ``configs/scratch.yaml``).
        allow_pretraining_overlap: evaluate even on clips the encoder was pretrained on (a
            transductive protocol; the results are then not comparable with held-out ones).
        **kwargs: optimiser settings of :class:`~ser_ssl.tasks.base.BaseTask`.
    """

    freeze_encoder = False

    def __init__(
        self,
        encoder_checkpoint: str | None = None,
        load_weights: bool = True,
        encoder: nn.Module | None = None,
        allow_pretraining_overlap: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.pretraining = Pretrained(None, {})  # what the checkpoint says of its pretraining data
        if encoder_checkpoint is not None:
            pretrained = read_pretrained(encoder_checkpoint, load_weights, encoder)
            self.pretraining = replace(pretrained, encoder=None, stats={})
            encoder = pretrained.encoder
            if pretrained.features is not None and pretrained.features.n_mels != len(self.normalizer.mean):
                raise ConfigError(
                    f"the encoder was pretrained on log-mels with n_mels {pretrained.features.n_mels}, "
                    f"not {len(self.normalizer.mean)}; set --data.init_args.features to the pretraining's "
                    "(its config.yaml next to the checkpoint)"
                )
            if pretrained.stats:
                self.normalizer.load_state_dict(pretrained.stats)
        if encoder is None:
            raise ConfigError("give --model.encoder_checkpoint (a pretraining checkpoint) or --model.encoder")
        self.encoder = encoder
        if self.freeze_encoder:
            self.encoder.requires_grad_(False)
        self.allow_pretraining_overlap = allow_pretraining_overlap
        self.classifier: nn.Sequential | None = None
        self.multilabel = False
        self.class_names: list[str] = []
        self.data_settings: dict[str, Any] | None = None  # the data's features and patch length
        # rank 0: this stage's confusion matrix (single-label) or per-class AP (multi-label), as written
        # to CSV at the end of the last validation/test, for callbacks (ClassificationImages) to plot
        self.per_class_results: dict[str, torch.Tensor] = {}

    def build_head(self, classes: Sequence[str], multilabel: bool) -> None:
        """The classifier (and its metrics) for ``classes``, whose names it keeps."""
        dim, n = self.encoder.embed_dim, len(classes)
        norm = [nn.BatchNorm1d(dim, affine=False)] if self.freeze_encoder else []
        self.classifier = nn.Sequential(*norm, nn.Linear(dim, n))
        self.class_names, self.multilabel = [str(c) for c in classes], bool(multilabel)
        metrics = clip_metrics(n, self.multilabel)
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.val_per_class = per_class_metric(n, self.multilabel)
        self.test_per_class = per_class_metric(n, self.multilabel)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = self.trainer.datamodule
        self.data_settings = data_settings(dm)
        self.check_features(dm)
        self._check_overlap(dm)
        classes = [str(c) for c in getattr(dm, "classes", None) or []]
        multilabel = bool(getattr(dm, "multilabel", False))
        if self.classifier is None:
            self.build_head(classes, multilabel)
        else:
            check_same_head(
                (self.class_names, self.multilabel), (classes, multilabel), "the model", "the data"
            )

    def check_features(self, dm: Any) -> None:
        """Refuse a data module whose log-mel settings are not the encoder's pretraining ones (the
        CLI calls this before the data module builds its cache; warns on another patch length)."""
        pre = self.pretraining
        features = getattr(dm, "features", None)
        if pre.features is not None and isinstance(features, LogMelConfig) and features != pre.features:
            raise ConfigError(
                f"the encoder was pretrained on log-mels with {settings_diff(pre.features, features)}; "
                "set --data.init_args.features to the pretraining's (its config.yaml next to the checkpoint)"
            )
        patch_frames = getattr(dm, "patch_frames", None)
        if pre.patch_frames is not None and patch_frames is not None and patch_frames != pre.patch_frames:
            rank_zero_warn(
                f"the encoder was pretrained on patches of {pre.patch_frames} frames, the data module cuts "
                f"{patch_frames}; set --data.init_args.patch_frames {pre.patch_frames} unless you mean it"
            )

    def _check_overlap(self, dm: Any) -> None:
        """Refuse evaluation clips the encoder was pretrained on (docstring of the class)."""
        pre = self.pretraining
        if not pre.pretrained_on or self.allow_pretraining_overlap or not hasattr(dm, "split_indices"):
            return
        for split in dict.fromkeys(s for s in (getattr(dm, "val_split", None), dm.test_split) if s):
            paths = [dm.clips[i].path for i in dm.split_indices(split)]
            seen = [p for p, key in zip(paths, clip_ids(paths), strict=True) if key in pre.pretrained_on]
            if seen:
                fold = getattr(getattr(dm, "data_source", None), "test_fold", None)
                how = (
                    f"the encoder was pretrained with another test fold than {fold}, whose training split "
                    "holds this fold: pretrain once per fold, or on other audio"
                    if fold is not None
                    else "pretrain on the training split only (the labelled data presets do)"
                )
                raise ConfigError(
                    f"{len(seen)} of the {len(paths)} clips of split '{split}' were in the encoder's "
                    f"pretraining data (e.g. {seen[0]}), so its scores would not be held-out ones; {how}, "
                    "or accept it with --model.init_args.allow_pretraining_overlap true"
                )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[HEAD_KEY] = {
            "task": type(self).__name__,
            "classes": self.class_names,
            "multilabel": self.multilabel,
            "data": self.data_settings,
            "encoder": self.encoder_config(),
        }

    def encoder_config(self) -> dict[str, Any] | None:
        """A ``--model.encoder`` config first, then the pretraining checkpoint's (which records
        encoders that only :envvar:`SER_SSL_TRUST_CHECKPOINTS` builds), then the encoder's own record."""
        if isinstance(self.hparams.get("encoder"), dict) or self.pretraining.encoder_spec is None:
            return super().encoder_config()
        return self.pretraining.encoder_spec

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Rebuild the checkpoint's classifier, or, when setup built one for the data, refuse data
        whose classes or feature settings are not the checkpoint's."""
        super().on_load_checkpoint(checkpoint)
        head = checkpoint.get(HEAD_KEY)
        if not isinstance(head, dict):
            raise CheckpointError(
                "the checkpoint has no classifier record (not a probe or fine-tune checkpoint of this "
                "version of ser-ssl); train the classifier again with `ser-ssl fit`"
            )
        if self.classifier is None:
            self.build_head(head["classes"], head["multilabel"])
            return
        check_same_head(
            (head["classes"], head["multilabel"]),
            (self.class_names, self.multilabel),
            "the checkpoint",
            "the data",
        )
        if head["data"] is not None and self.data_settings is not None and head["data"] != self.data_settings:
            raise ConfigError(
                f"the checkpoint's classifier was trained on data with {head['data']}, this data has "
                f"{self.data_settings}; use the training's --data.init_args.features and patch_frames"
            )

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
        self.check_finite(loss)
        self.log("train/loss", loss, prog_bar=self.loss_on_progress_bar, batch_size=len(target))
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
        lr, weight_decay, warmup_epochs: as in :class:`~ser_ssl.tasks.base.BaseTask`, with the
            probe's defaults (a linear layer on normalised embeddings takes a larger step).
        **kwargs: the settings of :class:`DownstreamTask`.
    """

    freeze_encoder = True

    def __init__(
        self,
        cache_embeddings: bool = True,
        lr: float = 0.01,
        weight_decay: float = 0.0,
        warmup_epochs: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs, **kwargs)
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

    def __init__(self, encoder_lr: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.encoder_lr = encoder_lr

    def trainable_modules(self) -> list[tuple[nn.Module, float]]:
        return [(self.classifier, self.lr), (self.encoder, self.encoder_lr)]


#: Checkpoint key of the classifier's classes, kind and data settings.
HEAD_KEY = "ser_ssl_head"


def data_settings(dm: Any) -> dict[str, Any] | None:
    """The data module's log-mel settings and patch length as plain data, or ``None`` without them."""
    features = getattr(dm, "features", None)
    if not isinstance(features, LogMelConfig):
        return None
    return {"features": asdict(features), "patch_frames": getattr(dm, "patch_frames", None)}


def settings_diff(expected: LogMelConfig, got: LogMelConfig) -> str:
    """``name A, not B`` for each field where ``got`` differs from ``expected``."""
    a, b = asdict(expected), asdict(got)
    return ", ".join(f"{k} {a[k]}, not {b[k]}" for k in a if a[k] != b[k])


def check_same_head(
    expected: tuple[list[str], bool], got: tuple[list[str], bool], where_expected: str, where_got: str
) -> None:
    """Raise :class:`ConfigError` unless both ``(class names, multilabel)`` are the same."""
    (names, multi), (other, other_multi) = expected, got
    kinds = ["single-label", "multi-label"]
    if multi != other_multi:
        raise ConfigError(
            f"{where_expected} is {kinds[multi]} but {where_got} is {kinds[other_multi]}; set "
            "--data.init_args.multilabel to match"
        )
    if list(names) != list(other):
        missing = [c for c in names if c not in other][:5]
        extra = [c for c in other if c not in names][:5]
        raise ConfigError(
            f"{where_expected} has {len(names)} classes, {where_got} {len(other)} (only in {where_expected}: "
            f"{missing}, only in {where_got}: {extra}); a classifier scores the classes it was trained on, "
            "so test it on data with the same classes"
        )
