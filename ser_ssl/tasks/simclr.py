"""SimCLR pretraining of a sound-event encoder (docs/method.md §2–§6)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jsonargparse import lazy_instance
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ser_ssl.augment import Augmentations, Compression, GaussianNoise, MixBack, RandomResizedCrop
from ser_ssl.augment.compose import Stage
from ser_ssl.files import clip_ids
from ser_ssl.losses import NTXentLoss
from ser_ssl.losses.distributed import mean_over_ranks
from ser_ssl.models import ProjectionHead, VGGLike
from ser_ssl.tasks.base import BaseTask


@dataclass
class ViewStages:
    """What :meth:`SimCLR.make_views` computes, step by step (:meth:`SimCLR.view_stages`).

    ``mixed`` (``None`` without mix-back) and ``standardised`` are ``[n, V, 1, n_mels, frames]``,
    ``lam`` the drawn mix-back λ ``[n, V]``; ``augment`` holds one list of
    :class:`~ser_ssl.augment.compose.Stage` per augmentation pipeline: one over all ``n * V`` views
    (clip by clip), or, with ``second_view_augment``, one for the first views and one for the second.
    """

    views: torch.Tensor
    mixed: torch.Tensor | None
    lam: torch.Tensor | None
    standardised: torch.Tensor
    augment: list[list[Stage]]


CHECKPOINT_KIND = "ser_ssl.pretrain"
#: Checkpoint key of the ids of the clips the encoder was pretrained on.
PRETRAINED_ON_KEY = "ser_ssl_pretrained_on"
#: Checkpoint key of the encoder's ``class_path``/``init_args`` config (:meth:`BaseTask.encoder_config`).
ENCODER_KEY = "ser_ssl_encoder"


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
        online_probe: train a linear classifier on the detached encoder embeddings ``h`` of both
            views alongside (solo-learn's online probe), with cross-entropy on the batches'
            ``target`` (clips with target -1 are left out), and log its training accuracy as
            ``online/acc`` per epoch: a label-aware progress signal at no cost to the SSL run. No
            gradient reaches the encoder, and the classifier draws nothing from the global RNG, so
            the encoder and head train exactly as without it. Needs a data module with ``classes``
            (``SSLDataModule`` on data with single-labelled training clips); otherwise it warns and
            stays off. Its weights (``online_classifier.*``) are in the checkpoint; encoder loading
            (``load_pretrained``) ignores them.
        online_probe_lr: the classifier's peak learning rate, in its own parameter group (same
            optimiser, weight decay and schedule as the rest).
        online_probe_classes: number of classes of the probe; by default the data module's, recorded
            so a checkpoint rebuilds the same classifier.
        **kwargs: optimiser settings of :class:`~ser_ssl.tasks.base.BaseTask`.
    """

    def __init__(
        self,
        encoder: nn.Module = lazy_instance(VGGLike),
        mixback: MixBack | None = lazy_instance(MixBack),
        augment: list[nn.Module] | None = None,
        second_view_augment: list[nn.Module] | None = None,
        temperature: float = 0.2,
        proj_hidden_dim: int = 512,
        proj_dim: int = 512,
        online_probe: bool = False,
        online_probe_lr: float = 0.01,
        online_probe_classes: int | None = None,
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
        self._pretrained_on: list[str] | None = None  # clip ids of the training split, for checkpoints
        self.online_probe = online_probe
        self.online_probe_lr = online_probe_lr
        self.online_classifier: nn.Linear | None = None
        if online_probe and online_probe_classes is not None:
            self._build_online_probe(online_probe_classes)

    def _build_online_probe(self, num_classes: int) -> None:
        # forked RNG: its initialisation must not shift any later draw (dropout, data order)
        with torch.random.fork_rng(devices=[]):
            self.online_classifier = nn.Linear(self.encoder.embed_dim, num_classes)
        self.online_acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=-1)

    def setup(self, stage: str) -> None:
        # The views are made here from the patches that the data module's transfer cut, on purpose
        # (they need this module's seeded RNG); Lightning warns about that on every fit as if a slip.
        warnings.filterwarnings(
            "ignore", "You have overridden `on_after_batch_transfer` in `LightningModule`"
        )
        if self.online_probe and self.online_classifier is None:
            n = len(getattr(self.trainer.datamodule, "classes", None) or [])
            if n >= 2:
                self.hparams.online_probe_classes = n  # recorded, so the checkpoint rebuilds it
                self._build_online_probe(n)
            else:
                rank_zero_warn(
                    "SimCLR(online_probe=True) but the data module gives no classes for the training "
                    "clips (it needs at least two single labels); training without the online probe"
                )
        super().setup(stage)

    def trainable_modules(self) -> list[tuple[nn.Module, float]]:
        """Everything at ``lr``, except the online classifier at ``online_probe_lr`` (listed first:
        a parameter belongs to the first module that holds it)."""
        if self.online_classifier is None:
            return super().trainable_modules()
        return [(self.online_classifier, self.online_probe_lr), *super().trainable_modules()]

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
        return self._views(batch, record=False).views

    def view_stages(self, batch: dict[str, torch.Tensor]) -> ViewStages:
        """:meth:`make_views` with every intermediate kept (for the view figures and notebook): the
        same draws from torch's global RNG in the same order, so ``.views`` equals its output."""
        return self._views(batch, record=True)

    def _views(self, batch: dict[str, torch.Tensor], record: bool) -> ViewStages:
        views, lam = batch["views"], None
        if self.mixback is not None:
            lam = self.mixback.sample_params(views)
            views = self.mixback.apply(views, batch["backgrounds"], lam)
        x = self.normalizer(views)
        if self.second_view_augment is None:
            pipelines = [(self.augment, x.flatten(0, 1))]
        else:
            pipelines = [(self.augment, x[:, 0]), (self.second_view_augment, x[:, 1])]
        if record:
            stages = [augment.stages(inputs) for augment, inputs in pipelines]
            outs = [s[-1].output for s in stages]
        else:
            stages, outs = [], [augment(inputs) for augment, inputs in pipelines]
        out = outs[0] if len(outs) == 1 else torch.stack(outs, 1).flatten(0, 1)
        mixed = views if self.mixback is not None else None
        return ViewStages(out.contiguous(memory_format=self.memory_format), mixed, lam, x, stages)

    def on_after_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> dict[str, Any]:
        """Views are made batched on the training device, from a seeded RNG (see :meth:`view_rng`):
        ``{"x": views, "target": ...}`` (see :meth:`training_step`; ``target`` only when the batch
        has one and the online probe is on). Batches without ``views`` pass unchanged."""
        if "views" not in batch:
            return batch
        with self.view_rng():
            out = {"x": self.make_views(batch)}
        if self.online_classifier is not None and "target" in batch:
            out["target"] = batch["target"]
        return out

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        """``batch["x"]``: the views of ``n`` clips as ``[2n, 1, n_mels, frames]``, clip by clip;
        ``batch["target"]`` (optional): the clips' class indices for the online probe (-1: none).

        Returns the loss with the detached embeddings ``h`` and projections ``z`` (``[n, 2, dim]``)
        for the diagnostics callbacks. With the online probe the returned loss adds the probe's
        cross-entropy (``train/loss`` stays NT-Xent alone); its gradient reaches only the probe.
        """
        x, target = batch["x"], batch.get("target")
        n = x.shape[0] // 2
        h = self.encoder(x)
        z = self.head(h).view(n, 2, -1)
        loss = self.criterion(z[:, 0], z[:, 1])
        self.check_finite(loss)
        self.log("train/loss", mean_over_ranks(loss), prog_bar=self.loss_on_progress_bar, batch_size=n)
        out = {"loss": loss, "z": z.detach(), "h": h.detach().view(n, 2, -1)}
        if self.online_classifier is not None and target is not None:
            out["loss"] = loss + self.online_probe_step(h.detach(), target.repeat_interleave(2))
        return out

    def online_probe_step(self, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the online classifier on detached embeddings ``[B, D]`` (targets -1 left
        out; a batch without labels gives 0, still through the classifier, so DDP sees it used)."""
        logits = self.online_classifier(h.float())
        valid = target >= 0
        loss = F.cross_entropy(logits, target, ignore_index=-1, reduction="sum") / valid.sum().clamp(min=1)
        self.online_acc(logits.detach(), target)
        self.log("online/loss", loss, on_step=False, on_epoch=True, batch_size=len(target), sync_dist=True)
        self.log("online/acc", self.online_acc, on_step=False, on_epoch=True)
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also records the encoder's config, so probes rebuild it, and which clips the encoder is
        trained on (:func:`~ser_ssl.files.clip_ids`), so that a probe can refuse to test on them."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["ser_ssl_kind"] = CHECKPOINT_KIND
        checkpoint[ENCODER_KEY] = self.encoder_config()
        dm = self.trainer.datamodule if self._trainer is not None else None
        if hasattr(dm, "listed") and hasattr(dm, "training"):
            if self._pretrained_on is None:  # every process's clips, also those of other nodes' caches
                self._pretrained_on = clip_ids(dm.listed[i].path for i in dm.training(dm.listed))
            checkpoint[PRETRAINED_ON_KEY] = self._pretrained_on
