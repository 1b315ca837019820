"""Pictures and tables for the dashboards: SimCLR views, probe results and a clip-embedding table.

Any logger works. :func:`log_figure` gives W&B (``log_image``) and TensorBoard (``add_image``) the
image itself and saves a PNG in ``<log_dir>/images/`` for the others (the CSV logger), so a run
without W&B still keeps its pictures. Every callback here acts on global rank 0 only and uses no
collective, so no rank waits for another. None of them changes what training draws: their random
choices come from forked, separately seeded RNGs.
"""

from __future__ import annotations

import copy
import csv
import io
import logging
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from matplotlib.figure import Figure
from PIL import Image
from torch.utils.data import DataLoader, Subset

from ser_ssl.callbacks.diagnostics import embed_with
from ser_ssl.viz import figure_to_array, plot_confusion, plot_per_class, plot_views_mosaic, record_views

log = logging.getLogger("ser_ssl")

__all__ = ["ClassificationImages", "EmbeddingTable", "ViewImages", "log_figure"]


def logging_step(trainer: pl.Trainer) -> int:
    """The step Lightning gives the loggers for ``train/loss`` (and validation metrics), so images line up
    with the curves (as in :class:`~ser_ssl.callbacks.EmbeddingDiagnostics`)."""
    return int(trainer.fit_loop.epoch_loop._batches_that_stepped)


def _log_dir(trainer: pl.Trainer, logger: Any) -> Path:
    return Path(getattr(logger, "log_dir", None) or trainer.default_root_dir)


def log_figure(trainer: pl.Trainer, key: str, fig: Figure, step: int) -> list[Path]:
    """Log ``fig`` under ``key`` at ``step`` to every logger of ``trainer``; returns the PNGs written.

    A logger with W&B's ``log_image(key, images, step)`` gets the image that way, a
    ``TensorBoardLogger`` through ``add_image``; any other (CSV) gets
    ``<log_dir or default_root_dir>/images/<key, / as _>_<step>.png``. Global rank 0 only. The figure is
    rendered once, and not at all without loggers; the PNG is encoded once too (fast compression) and W&B
    is handed its path, which it copies, rather than the pixels, which it would encode again, slowly.
    """
    if not trainer.is_global_zero or not trainer.loggers:
        return []
    array = figure_to_array(fig)
    written: list[Path] = []
    wandb_like = []
    for logger in trainer.loggers:
        if callable(getattr(logger, "log_image", None)):
            wandb_like.append(logger)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, array, step, dataformats="HWC")
        else:
            path = _log_dir(trainer, logger) / "images" / f"{key.replace('/', '_')}_{step}.png"
            if path not in written:  # loggers may share a folder
                written.append(_write_png(array, path))
    if wandb_like:
        with tempfile.TemporaryDirectory() as tmp:
            png = written[0] if written else _write_png(array, Path(tmp) / "image.png")
            for logger in wandb_like:
                logger.log_image(key=key, images=[str(png)], step=step)  # copied into the run at once
    return written


def _write_png(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, compress_level=1)  # ~4x faster than the default 6, ~1.5x larger
    return path


@contextmanager
def rng_untouched(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Run the body under torch's RNG seeded with ``seed``, then put back torch's, NumPy's and Python's
    global RNG states: training (sampler seeds, worker seeds, dropout) draws what it would have drawn."""
    np_state, py_state = np.random.get_state(), random.getstate()
    devices = [device] if device is not None and device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def _private_copy(dataset: Any) -> Any:
    """A shallow copy of ``dataset`` with its own copies of the NumPy generators it holds.

    With ``num_workers=0`` training reads the dataset in this process, so drawing items from the
    dataset itself would advance (or create) the generator training draws its patches from.
    """
    local = copy.copy(dataset)
    for name, value in vars(local).items():
        if isinstance(value, np.random.Generator):
            setattr(local, name, copy.deepcopy(value))
    return local


class ViewImages(pl.Callback):
    """Logs ``views/examples``: a few clips' SimCLR views, step by step, as the view notebook shows them
    (:func:`ser_ssl.viz.plot_views_mosaic`, the one-image version of :func:`~ser_ssl.viz.plot_views`).

    At the first batch of training and of every ``every_n_epochs``-th epoch after it, draws ``clips``
    random clips of the training set as a raw batch (patches and backgrounds, before
    ``on_after_batch_transfer`` turns them into views), makes their views keeping every step with
    :func:`~ser_ssl.viz.record_views` and logs the figure with :func:`log_figure` at the step of the
    batch's ``train/loss``. A callback only sees batches after transfer, when the intermediate steps are
    gone, hence a batch of its own. It is drawn like a training batch (same dataset, same collate), but
    from a private copy of the dataset and a separately seeded RNG, so training runs exactly as without
    this callback. Clips and views differ between epochs and are the same for the same seed.
    """

    def __init__(self, every_n_epochs: int = 5, clips: int = 4, key: str = "views/examples") -> None:
        super().__init__()
        if every_n_epochs < 1 or clips < 1:
            raise ValueError("every_n_epochs and clips must be >= 1")
        self.every_n_epochs = every_n_epochs
        self.clips = clips
        self.key = key
        self._warned = False

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx != 0 or trainer.current_epoch % self.every_n_epochs:
            return
        if not trainer.is_global_zero or not trainer.loggers:
            return
        fig = self.figure(trainer, pl_module)
        if fig is not None:
            log_figure(trainer, self.key, fig, logging_step(trainer))

    def figure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Figure | None:
        """The views figure of this epoch, or ``None`` (with one warning) when there is none to make."""
        loader = trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if not hasattr(pl_module, "view_stages") or not isinstance(loader, DataLoader) or dataset is None:
            return self._skip(
                "ViewImages needs a SimCLR-like model (view_stages) and one map-style train loader"
            )
        try:
            n = len(dataset)
        except TypeError:
            return self._skip("ViewImages needs a map-style training dataset (with a length)")
        key = [torch.initial_seed(), trainer.global_rank, trainer.current_epoch]
        seed = int(np.random.SeedSequence(key).generate_state(1)[0])
        with rng_untouched(seed, pl_module.device):
            local = _private_copy(dataset)
            index = torch.randperm(n)[: self.clips].tolist()
            collate = loader.collate_fn or torch.utils.data.default_collate
            getitems = getattr(local, "__getitems__", None)  # as the DataLoader fetches a batch
            raw = collate(getitems(index) if getitems else [local[i] for i in index])
            if isinstance(raw, dict) and trainer.datamodule is not None:
                # as training gets it: the data module may cut (device cache) or convert (delivered
                # frames) the patches on the training device
                raw = trainer.datamodule.transfer_batch_to_device(raw, pl_module.device, 0)
            if not isinstance(raw, dict) or "views" not in raw or "backgrounds" not in raw:
                return self._skip("ViewImages needs SimCLR batches: dicts with 'views' and 'backgrounds'")
            records = record_views(pl_module, raw, clips=self.clips)
        return plot_views_mosaic(records)

    def _skip(self, why: str) -> None:
        if not self._warned:
            log.warning("%s; no views are logged", why)
            self._warned = True
        return None


class ClassificationImages(pl.Callback):
    """Logs ``<stage>/confusion`` and ``<stage>/per_class`` after each validation and test of a probe,
    fine-tuning or training from scratch (:class:`~ser_ssl.tasks.DownstreamTask`).

    Plots what the module computed and wrote to ``confusion_<stage>.csv`` and ``per_class_<stage>.csv``
    (its ``per_class_results``, with ``class_names``): the row-normalised confusion matrix (rows: true
    class; the diagonal is each class's recall, on one 0-1 colour scale at every epoch; empty cells left
    blank) and per-class accuracy, or per-class average precision for multi-label data, at the step of
    the stage's metrics. Runs in ``on_validation_end`` / ``on_test_end`` because the module's own
    ``*_epoch_end`` hook, which computes the values, runs after the callbacks' one. Nothing is logged
    for the sanity check.
    """

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.log_results(trainer, pl_module, "val")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.log_results(trainer, pl_module, "test")

    def log_results(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        results = getattr(pl_module, "per_class_results", None)
        value = results.pop(stage, None) if isinstance(results, dict) else None  # each result logged once
        if value is None or trainer.sanity_checking or not trainer.is_global_zero or not trainer.loggers:
            return
        classes = list(pl_module.class_names)
        step = logging_step(trainer)
        when = f"epoch {trainer.current_epoch}" if stage == "val" else "test"
        if getattr(pl_module, "multilabel", False):
            fig = plot_per_class(value, classes, f"{stage}: average precision per class ({when})")
            log_figure(trainer, f"{stage}/per_class", fig, step)
            return
        support = value.sum(1)
        recall = torch.where(support > 0, value.diagonal() / support.clamp_min(1), torch.nan)
        title = f"{stage}: confusion, rows normalised ({int(support.sum())} clips, {when})"
        fig = plot_confusion(value, classes, normalize=True, title=title, hide_zeros=True)
        log_figure(trainer, f"{stage}/confusion", fig, step)
        fig = plot_per_class(recall, classes, f"{stage}: accuracy per class ({when})")
        log_figure(trainer, f"{stage}/per_class", fig, step)


class EmbeddingTable(pl.Callback):
    """A table of clip embeddings with their class, for W&B's embedding projector.

    At the end of training (and after every ``every_n_epochs``-th epoch when given), takes up to
    ``max_clips`` clips of the labelled kNN bank (``trainer.datamodule.knn_dataloaders()``: centre
    patches of the training split), evenly spread over it so every class is in, and their L2-normalised
    encoder embeddings. A ``WandbLogger`` gets a ``wandb.Table`` under ``key`` with columns
    ``label, e0, ..., e{D-1}`` (choose "2D Projection" on its panel: PCA, UMAP or t-SNE); any other
    logger gets ``embeddings_epoch<k>.csv`` with the same columns (``k`` completed epochs) in its
    ``log_dir``.

    Args:
        every_n_epochs: also log after every this many epochs; ``None``: at the end of training only.
        max_clips: clips in the table at most.
        max_dims: W&B builds and logs a table at about 10 µs per cell (2.5 s for 500 clips x 512 dims),
            so wider embeddings reach W&B as their top ``max_dims`` principal components, columns
            ``pc0, pc1, ...`` (the usual step before t-SNE or UMAP; a PCA of them is the PCA of the
            full embeddings). ``None`` logs every dimension. The CSV always has every dimension.
        key: the W&B key.

    The chosen clips are embedded as the kNN monitor embeds its bank
    (:func:`~ser_ssl.inference.embed_patches`: eval mode, ``no_grad``, the trainer's precision, each
    submodule's mode restored).
    """

    def __init__(
        self,
        every_n_epochs: int | None = None,
        max_clips: int = 500,
        max_dims: int | None = 64,
        key: str = "embeddings",
    ) -> None:
        super().__init__()
        if (every_n_epochs is not None and every_n_epochs < 1) or max_clips < 1:
            raise ValueError("every_n_epochs (or null) and max_clips must be >= 1")
        if max_dims is not None and max_dims < 2:
            raise ValueError("max_dims must be >= 2 (or null: every dimension)")
        self.every_n_epochs = every_n_epochs
        self.max_clips = max_clips
        self.max_dims = max_dims
        self.key = key
        self._bank: DataLoader | None = None
        self._classes: list[str] | None = None
        self._last_step: int | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_step = None
        get_loaders = getattr(trainer.datamodule, "knn_dataloaders", None)
        loaders = get_loaders() if callable(get_loaders) and trainer.is_global_zero else None
        self._bank = loaders[0] if loaders is not None else None
        self._classes = getattr(trainer.datamodule, "knn_classes", None) if self._bank is not None else None
        if self._bank is None and trainer.is_global_zero:
            log.info("EmbeddingTable is off: the data module gives no labelled kNN bank (knn_dataloaders())")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs is not None and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.log_table(trainer, pl_module, trainer.current_epoch + 1)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.log_table(trainer, pl_module, trainer.current_epoch)  # by now the count of completed epochs

    def log_table(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epochs: int) -> None:
        if self._bank is None or not trainer.is_global_zero or not trainer.loggers:
            return
        if self._last_step == trainer.global_step:  # the last epoch's table is the end-of-training one
            return
        self._last_step = trainer.global_step
        embeddings, labels = self.embeddings(trainer, pl_module)
        names = self._classes
        label_names = [names[y] if names and 0 <= y < len(names) else str(y) for y in labels.tolist()]
        columns = ["label", *(f"e{j}" for j in range(embeddings.shape[1]))]
        done: set[Path] = set()
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                values, names = embeddings, columns
                if self.max_dims is not None and embeddings.shape[1] > self.max_dims:
                    values = principal_components(embeddings, self.max_dims)
                    names = ["label", *(f"pc{j}" for j in range(values.shape[1]))]
                table = wandb_table(names, label_names, values)
                logger.log_metrics({self.key: table}, step=logging_step(trainer))
                continue
            path = _log_dir(trainer, logger) / f"embeddings_epoch{epochs}.csv"
            if path not in done:
                write_embeddings_csv(path, columns, label_names, embeddings)
                done.add(path)

    def selection(self, n: int) -> torch.Tensor:
        """Positions in the bank of the clips in the table: all, or ``max_clips`` evenly spaced (the bank
        is ordered as the manifest, often class by class, so its head alone could miss classes)."""
        if n <= self.max_clips:
            return torch.arange(n)
        return torch.linspace(0, n - 1, self.max_clips).round().long()

    def embeddings(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[n, D]`` normalised embeddings (float32, CPU) and ``[n]`` labels of the selected bank clips."""
        dataset = self._bank.dataset
        index = self.selection(len(dataset)).tolist()
        batch_size = self._bank.batch_size or 64
        loader = DataLoader(
            Subset(dataset, index), batch_size, num_workers=0, collate_fn=self._bank.collate_fn
        )
        embeddings, labels = embed_with(trainer, pl_module, loader)
        return embeddings.cpu(), labels.cpu()


def principal_components(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x`` ``[n, D]`` centred and projected onto its top ``k`` principal axes: ``[n, min(k, n, D)]``."""
    centred = x - x.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return centred @ vh[:k].T


def wandb_table(columns: list[str], labels: list[str], embeddings: torch.Tensor) -> Any:
    """``wandb.Table`` of one label and D numbers per row, with the column types given: inferring them
    cell by cell, as ``WandbLogger.log_table`` lets W&B do, takes seconds for 500 x 512 numbers."""
    import wandb

    rows = [[label, *values] for label, values in zip(labels, embeddings.tolist(), strict=True)]
    return wandb.Table(columns=columns, data=rows, dtype=[str] + [float] * (len(columns) - 1), optional=False)


def write_embeddings_csv(path: Path, columns: list[str], labels: list[str], embeddings: torch.Tensor) -> Path:
    """CSV of ``columns`` (label, e0, e1, ...), numbers to 7 significant digits (float32's precision)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    numbers = io.StringIO()
    np.savetxt(numbers, embeddings.numpy(), fmt="%.7g", delimiter=",")  # ~5x faster than csv.writer
    quoted = io.StringIO()
    csv.writer(quoted, lineterminator="\n").writerows([label] for label in labels)
    with path.open("w", newline="", encoding="utf-8") as f:
        f.write(",".join(columns) + "\n")
        lines = zip(quoted.getvalue().splitlines(), numbers.getvalue().splitlines(), strict=True)
        f.writelines(f"{label},{values}\n" for label, values in lines)
    return path
