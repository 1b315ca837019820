"""The pretraining's seconds per step over several epochs with the DataLoader workers kept
between epochs (``persistent_workers=True``, the configs' setting) against workers restarted every
epoch (``False``, the baseline).

Why: restarted workers start up at every epoch's start while the main process's compute threads
train, which on 2 cores slowed a profiled 3-epoch pretraining from 2.80 to 3.41 s a step. The setup
is the real one: synthetic WAV files with a manifest (generated, and cached by ``SSLDataModule``
itself with no worker pool, before anything is timed), ``SSLDataModule`` with 2 workers, and the
SimCLR module in a Lightning Trainer (logger, progress bar, checkpointing and model summary off).
A fit's figure is the mean time per step from the end of the first epoch to the end of the last
one, so it includes every later epoch's start (a median would leave that out); the first epoch
holds the fit's start-up. The two variants alternate (A B B A), each fit with a freshly seeded
model; each variant's figure is the mean of its fits.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from benchmarks.common import make_simclr
from benchmarks.lightning_step import StepEnds, quiet_trainer
from benchmarks.table import Row
from ser_ssl.data import SSLDataModule
from ser_ssl.data.synthetic import CLASSES, generate

WORKERS = 2


def data_module(manifest: Path, cache_dir: Path, batch_size: int, persistent: bool) -> SSLDataModule:
    """The pretraining data as ``configs/pretrain.yaml`` sets it up, on the given manifest."""
    return SSLDataModule(
        manifest=str(manifest),
        cache_dir=str(cache_dir),
        batch_size=batch_size,
        num_workers=WORKERS,
        persistent_workers=persistent,
        knn_splits=None,
    )


def seconds_per_step(dm: SSLDataModule, epochs: int, quick: bool) -> tuple[float, int]:
    """Mean seconds per step after the first epoch of one fit, and the steps per epoch."""
    timer = StepEnds()
    trainer = quiet_trainer(timer, max_epochs=epochs)
    trainer.fit(make_simclr(quick), datamodule=dm)
    per_epoch = len(timer.ends) // epochs
    assert per_epoch * epochs == len(timer.ends) and per_epoch > 0, (len(timer.ends), epochs)
    return (timer.ends[-1] - timer.ends[per_epoch - 1]) / (len(timer.ends) - per_epoch), per_epoch


def run(quick: bool, workdir: Path) -> list[Row]:
    """Mean s/step after the first epoch with persistent vs restarted workers; goal: not slower."""
    batch, steps, epochs, repeats, max_seconds = (8, 2, 2, 1, 1.0) if quick else (128, 5, 3, 2, 4.0)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    per_class = -(-batch * steps // len(CLASSES))  # enough training clips for `steps` full batches
    n_clips = per_class * len(CLASSES)
    manifest = generate(
        workdir / "synthetic",
        train_per_class=per_class,
        val_per_class=0,
        test_per_class=0,
        max_seconds=max_seconds,
    )
    cache_dir = workdir / "cache"
    start = time.perf_counter()
    SSLDataModule(manifest=str(manifest), cache_dir=str(cache_dir), num_workers=0).prepare_data()
    cache_s = time.perf_counter() - start

    times: dict[bool, list[float]] = {True: [], False: []}
    per_epoch = 0
    for r in range(repeats):
        for persistent in (False, True) if r % 2 == 0 else (True, False):
            dm = data_module(manifest, cache_dir, batch, persistent)
            step_s, per_epoch = seconds_per_step(dm, epochs, quick)
            times[persistent].append(step_s)
    kept, fresh = (sum(times[p]) / len(times[p]) for p in (True, False))
    return [
        Row(
            "pretraining epochs: persistent DataLoader workers vs restarted every epoch",
            kept,
            fresh,
            "s/step",
            "time",
            goal=(">=", 1.05),
            goal_note="persistent workers faster: the configs use them",
            note=f"SSLDataModule ({WORKERS} workers, batch {batch}, {n_clips} synthetic clips of up to "
            f"{max_seconds:g} s, cache built untimed in {cache_s:.0f} s) and SimCLR (VGG-like, "
            f"AdamW, channels_last, fp32) in a Lightning Trainer, {epochs} epochs of {per_epoch} steps; "
            f"mean over the {(epochs - 1) * per_epoch} steps after the first epoch, so including "
            f"the start of each later epoch ({epochs - 1}; workers restarting, or reused); fits per "
            f"variant: {repeats}, alternating, averaged.",
        )
    ]
