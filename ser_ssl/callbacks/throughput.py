"""Training throughput (patches per second) that does not make the host wait for the GPU every step.

Lightning's ``ThroughputMonitor`` times every step by synchronising the device after it, so the host
can never queue the next step while the GPU runs this one. :class:`PatchThroughput` keeps its figures
and names (computed by the same ``Throughput`` class) but synchronises only on the steps it logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.throughput import Throughput


def patches_in_batch(batch: Mapping[str, torch.Tensor]) -> int:
    """Number of spectrogram patches in a training batch: SimCLR's made views (``x``, ``[2N, ...]``)
    or raw ones (``views``, ``[N, 2, ...]``), or a downstream batch's ``patch``."""
    if "views" in batch:
        views = batch["views"]
        return int(views.shape[0] * views.shape[1])
    return int((batch["x"] if "x" in batch else batch["patch"]).shape[0])


class PatchThroughput(pl.Callback):
    """Logs ``train/device/samples_per_sec`` (patches/s of one process), ``train/device/batches_per_sec``
    and, under DDP, the whole job's ``train/samples_per_sec`` and ``train/batches_per_sec``, plus the
    running ``train/samples``, ``train/batches`` and ``train/time``, as Lightning's ``ThroughputMonitor``.

    Samples are counted every step; the device is synchronised and the clock read only every
    ``trainer.log_every_n_steps`` steps, so a rate is the average over the last ``window_size - 1``
    logging periods (the first rate appears at the ``window_size``-th logging step). Global rank 0
    only, at the step Lightning logs ``train/loss`` with.

    Args:
        batch_size_fn: the samples in a batch (as the training step sees it); patches by default.
        window_size: logging points a rate spans (>= 2).
    """

    def __init__(self, batch_size_fn: Callable[[Any], int] = patches_in_batch, window_size: int = 2) -> None:
        super().__init__()
        if window_size < 2:
            raise ValueError("window_size must be >= 2 (a rate needs two time points)")
        self.batch_size_fn = batch_size_fn
        self.window_size = window_size

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._throughput = Throughput(world_size=trainer.world_size, window_size=self.window_size)
        self._samples = self._batches = 0
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not trainer.is_global_zero:
            return
        self._samples += self.batch_size_fn(batch)
        self._batches += 1
        if self._batches % trainer.log_every_n_steps:
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)  # the steps so far have really run
        self._throughput.update(
            time=time.perf_counter() - self._start, batches=self._batches, samples=self._samples
        )
        metrics = {f"train/{name}": value for name, value in self._throughput.compute().items()}
        step = trainer.fit_loop.epoch_loop._batches_that_stepped  # the step of train/loss
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
