"""Training diagnostics as Lightning callbacks: embedding geometry every few steps and a kNN monitor.

Both work with any logger (CSV, TensorBoard, W&B): the kNN monitor logs through ``pl_module.log``, so
``knn/bal_acc`` can drive ``ModelCheckpoint(monitor=...)``; the per-step diagnostics write to
``trainer.loggers`` directly (see :class:`EmbeddingDiagnostics` for why).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import lightning.pytorch as pl
import torch

from ser_ssl.eval.geometry import (
    alignment,
    dimension_std,
    effective_rank,
    is_collapsed,
    positive_negative_cosine,
    uniformity,
)
from ser_ssl.eval.knn import knn_accuracy
from ser_ssl.inference import embed_patches

log = logging.getLogger("ser_ssl")


class EmbeddingDiagnostics(pl.Callback):
    """Logs the geometry of the current training batch's embeddings every ``every_n_steps`` steps.

    Reads ``outputs["z"]`` (L2-normalised projections ``[N, 2, D]``: the two views of each clip) and
    ``outputs["h"]`` (encoder embeddings ``[N, 2, E]``), both detached, from the dict returned by
    ``training_step``; does nothing when they are missing. Logs on the step:

    - ``diag/pos_cos``, ``diag/neg_cos``: mean cosine of positive and of negative pairs of ``z``;
    - ``diag/alignment``, ``diag/uniformity``: Wang & Isola (2020) on ``z`` (uniformity averaged over
      the two views, as in their code, so positives do not count as neighbours);
    - ``diag/z_std``, ``diag/z_std_ratio``, ``diag/h_std_ratio``: per-dimension std of the normalised
      embeddings, raw and times ``sqrt(dim)`` (about 1 when spread evenly, 0 when collapsed);
    - ``diag/z_effective_rank``, ``diag/h_effective_rank``: centred effective rank of the 2N embeddings.

    The values go straight to ``trainer.loggers`` (any logger, as Lightning's ``LearningRateMonitor``
    does), at the step Lightning uses for ``train/loss``, independently of ``log_every_n_steps``:
    ``pl_module.log(on_step=True)`` would re-write the last value at every later logging step of the
    epoch. So they are not in ``trainer.callback_metrics``. Under DDP every value is computed on the
    local batch of global rank 0 only (no gather: cheap, and enough to see a trend); other ranks skip it.

    With ``collapse_warning``, a collapse of ``z`` or ``h`` (:func:`~ser_ssl.eval.geometry.is_collapsed`)
    is reported through the ``ser_ssl`` logger on global rank 0, at most once every
    ``warn_every_n_checks`` checks, naming the step and the values.
    """

    def __init__(self, every_n_steps: int = 50, collapse_warning: bool = True, warn_every_n_checks: int = 10):
        super().__init__()
        if every_n_steps < 1 or warn_every_n_checks < 1:
            raise ValueError("every_n_steps and warn_every_n_checks must be >= 1")
        self.every_n_steps = every_n_steps
        self.collapse_warning = collapse_warning
        self.warn_every_n_checks = warn_every_n_checks
        self._last_step = -1
        self._checks = 0
        self._last_warning: int | None = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not isinstance(outputs, Mapping) or "z" not in outputs or "h" not in outputs:
            return
        step = trainer.global_step
        # one check per optimiser step, also with gradient accumulation (several batches per step)
        if step % self.every_n_steps or step == self._last_step:
            return
        z, h = outputs["z"].detach(), outputs["h"].detach()
        if z.ndim != 3 or z.shape[1] != 2 or z.shape[0] < 2:
            return  # a single clip has no negatives
        if not trainer.is_global_zero or (not trainer.loggers and not self.collapse_warning):
            return  # loggers and the warning only act on rank 0
        self._last_step = step
        values = self.compute(z, h)
        metrics = {f"diag/{k}": v for k, v in values.items()}
        logged_step = trainer.fit_loop.epoch_loop._batches_that_stepped  # the step of train/loss
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=logged_step)
        if self.collapse_warning:
            self._check_collapse(trainer, step, z.flatten(0, 1), h.flatten(0, 1), values)

    @staticmethod
    @torch.no_grad()
    def compute(z: torch.Tensor, h: torch.Tensor) -> dict[str, float]:
        """All diagnostics of one batch of paired views ``z [N, 2, D]`` and ``h [N, 2, E]``."""
        z1, z2 = z[:, 0], z[:, 1]
        z_all, h_all = z.flatten(0, 1), h.flatten(0, 1)
        pos, neg = positive_negative_cosine(z1, z2)
        z_std = dimension_std(z_all)
        values = {
            "pos_cos": pos,
            "neg_cos": neg,
            "alignment": alignment(z1, z2),
            "uniformity": (uniformity(z1) + uniformity(z2)) / 2,
            "z_std": z_std,
            "z_std_ratio": z_std * math.sqrt(z.shape[-1]),
            "h_std_ratio": dimension_std(h_all) * math.sqrt(h.shape[-1]),
            "z_effective_rank": effective_rank(z_all),
            "h_effective_rank": effective_rank(h_all),
        }
        return {k: float(v) for k, v in values.items()}

    def _check_collapse(
        self, trainer: pl.Trainer, step: int, z: torch.Tensor, h: torch.Tensor, values: dict[str, float]
    ) -> None:
        self._checks += 1
        collapsed = [name for name, x in (("z", z), ("h", h)) if is_collapsed(x)]
        if not collapsed:
            return
        if self._last_warning is not None and self._checks - self._last_warning < self.warn_every_n_checks:
            return
        self._last_warning = self._checks
        log.warning(
            "embedding collapse at step %d (%s): z_std_ratio=%.4f h_std_ratio=%.4f "
            "z_effective_rank=%.2f h_effective_rank=%.2f pos_cos=%.3f neg_cos=%.3f",
            step,
            " and ".join(collapsed),
            values["z_std_ratio"],
            values["h_std_ratio"],
            values["z_effective_rank"],
            values["h_effective_rank"],
            values["pos_cos"],
            values["neg_cos"],
        )

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self._last_step, "checks": self._checks, "last_warning": self._last_warning}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_step = state_dict["last_step"]
        self._checks = state_dict["checks"]
        self._last_warning = state_dict["last_warning"]


class KNNMonitor(pl.Callback):
    """Weighted kNN accuracy of the encoder's embeddings, logged as ``knn/acc`` and ``knn/bal_acc``.

    At the end of every ``every_n_epochs``-th training epoch, embeds a labelled bank (train patches)
    and query set (validation patches) from ``trainer.datamodule.knn_dataloaders()`` with
    ``pl_module.encoder`` (after ``pl_module.prepare_input``) and classifies each query by its ``k``
    nearest bank embeddings (:func:`~ser_ssl.eval.knn.knn_predict`). The loaders yield
    ``{"patch": [B, 1, n_mels, frames], "target": [B]}`` (raw log-mel patches, integer labels); when the
    data module has no such method or it returns ``None``, the monitor logs one info line and stays off.

    Runs at train-epoch end rather than in validation because SimCLR pretraining has no validation
    loop. Lightning runs ``ModelCheckpoint`` after other callbacks, so
    ``ModelCheckpoint(monitor="knn/bal_acc", mode="max")`` sees this epoch's value; with a validation
    loop as well, give it ``save_on_train_epoch_end=True`` (otherwise it saves before this runs).

    Under DDP each rank embeds the *whole* bank and query set (the loaders are not sharded) and gets the
    same numbers: no collective to deadlock on and every rank's checkpoint callback agrees, at the cost
    of repeating a small amount of work per rank. The encoder runs in eval mode, under ``no_grad`` and
    the trainer's precision; the mode of each of its submodules is restored afterwards.
    """

    def __init__(self, k: int = 200, temperature: float = 0.07, every_n_epochs: int = 1):
        super().__init__()
        if k < 1 or every_n_epochs < 1:
            raise ValueError("k and every_n_epochs must be >= 1")
        self.k = k
        self.temperature = temperature
        self.every_n_epochs = every_n_epochs
        self._loaders: tuple[Any, Any] | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        get_loaders = getattr(trainer.datamodule, "knn_dataloaders", None)
        self._loaders = get_loaders() if callable(get_loaders) else None
        if self._loaders is None and trainer.is_global_zero:
            log.info("KNNMonitor is off: the data module gives no labelled kNN bank (knn_dataloaders())")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._loaders is None or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        metrics = self.evaluate(trainer, pl_module)
        # identical on every rank; sync_dist keeps Lightning's DDP epoch-logging contract
        pl_module.log_dict(
            {f"knn/{k}": v for k, v in metrics.items()}, on_step=False, on_epoch=True, sync_dist=True
        )

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """``{"acc", "bal_acc"}`` of the queries against the bank, with the current encoder."""
        bank_loader, query_loader = self._loaders
        bank, bank_y = embed_with(trainer, pl_module, bank_loader)
        query, query_y = embed_with(trainer, pl_module, query_loader)
        num_classes = int(max(bank_y.max(), query_y.max())) + 1
        return knn_accuracy(query, query_y, bank, bank_y, num_classes, self.k, self.temperature)


def embed_with(
    trainer: pl.Trainer, pl_module: pl.LightningModule, loader: Iterable[Mapping[str, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~ser_ssl.inference.embed_patches` with ``pl_module``'s encoder, input preparation and
    device, under the trainer's precision."""
    return embed_patches(
        pl_module.encoder, loader, pl_module.prepare_input, pl_module.device,
        trainer.precision_plugin.forward_context,
    )  # fmt: skip
