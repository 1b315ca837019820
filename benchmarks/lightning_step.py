"""Row 6: the SimCLR LightningModule's step inside a Lightning Trainer against a minimal hand-written
PyTorch loop on the same model, batch and optimizer.

Both iterate the same DataLoader, which yields one fixed in-memory two-view batch ``K`` times. A step
is the time between the ends of consecutive steps (fetch, views, forward, backward, optimizer and,
for Lightning, its hooks and logging), so the first step (warm-up; for Lightning also the fit
start-up) is not counted. The Trainer runs with logger, progress bar, checkpointing and model
summary off. The two alternate, repeat after repeat, to cancel drift; each variant's figure is the
median of its steps.
"""

from __future__ import annotations

import logging
import time
import warnings
from itertools import pairwise
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import PlainLoop, make_simclr, median, two_view_batch
from benchmarks.table import Row


class SameBatch(Dataset):
    """``length`` times the same ready-made batch (use with ``batch_size=None``)."""

    def __init__(self, batch: dict[str, torch.Tensor], length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.batch


class StepEnds(L.Callback):
    """Records when the fit started and when each training step ended."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.first_start: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.first_start is None:
            self.first_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.ends.append(time.perf_counter())


def quiet_trainer(timer: StepEnds, **limits: int) -> L.Trainer:
    """A CPU Trainer without logger, progress bar, checkpointing or model summary, timing its steps."""
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[timer],
        **limits,
    )


def lightning_steps(model, loader: DataLoader, steps: int) -> tuple[list[float], float]:
    """Seconds per step after the first, and the fit's start-up (``fit()`` to the first step)."""
    timer = StepEnds()
    trainer = quiet_trainer(timer, max_steps=steps)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(model, train_dataloaders=loader)
    return [b - a for a, b in pairwise(timer.ends)], (timer.first_start or start) - start


def plain_steps(model, loader: DataLoader, steps: int) -> list[float]:
    """Seconds per step after the first, of :class:`PlainLoop`."""
    loop = PlainLoop(model, steps)
    ends = []
    for batch in loader:
        loop.step(batch)
        ends.append(time.perf_counter())
    return [b - a for a, b in pairwise(ends)]


def run(quick: bool, workdir: Path) -> list[Row]:
    """Median ms per step with Lightning and with the plain loop; goal: overhead under 5 %."""
    pairs, steps, repeats = (2, 2, 1) if quick else (32, 3, 3)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    model = make_simclr(quick)
    loader = DataLoader(SameBatch(two_view_batch(pairs), steps), batch_size=None, num_workers=0)
    lit, plain, startup = [], [], []
    for _ in range(repeats):
        times, fit_start = lightning_steps(model, loader, steps)
        lit += times
        startup.append(fit_start)
        plain += plain_steps(model, loader, steps)
    lit_ms, plain_ms = 1000 * median(lit), 1000 * median(plain)
    overhead = 100 * (lit_ms / plain_ms - 1)
    return [
        Row(
            f"training step: Lightning Trainer vs plain loop (overhead {overhead:+.1f} %)",
            lit_ms,
            plain_ms,
            "ms/step",
            "time",
            goal=(">=", round(1 / 1.05, 3)),
            goal_note="overhead < 5 %",
            note=f"SimCLR as in configs/pretrain.yaml (VGG-like, AdamW, channels_last, fp32) on one fixed "
            f"batch of {pairs} pairs; {repeats} alternating repeats of {steps} steps, medians of "
            f"{len(lit)} and {len(plain)} steps; fit start-up (not counted) {median(startup):.2f} s.",
        )
    ]
