"""Test-only Lightning callbacks, importable by CLI runs in subprocesses (``--trainer.callbacks+=``)."""

import json
import os
import signal
from pathlib import Path

import lightning as L


class KillAtStep(L.Callback):
    """SIGKILLs its own process when training reaches ``step``: a crash nothing can clean up after."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class PoisonAtStep(L.Callback):
    """Turns the model's weights into NaN once training reaches ``step``, so the loss goes non-finite."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if trainer.global_step == self.step:
            for p in pl_module.encoder.parameters():
                p.data.fill_(float("nan"))


class RecordSampledClips(L.Callback):
    """Writes ``<default_root_dir>/sampled_rank<R>.json``: per epoch, the cache rows of the clips this
    rank's training loader hands out, in its order for that epoch."""

    def __init__(self) -> None:
        self.epochs: list[list[int]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, *args) -> None:
        loader = trainer.train_dataloader
        self.epochs.append([int(loader.dataset.rows[i]) for i in loader.sampler])

    def on_train_end(self, trainer: L.Trainer, *args) -> None:
        out = Path(trainer.default_root_dir) / f"sampled_rank{trainer.global_rank}.json"
        out.write_text(json.dumps(self.epochs))


class RecordLastCheckpoint(L.Callback):
    """Records, at the start of each training epoch, the epoch of the run's ``last.ckpt`` then (None
    before there is one): what a run killed during that epoch would resume from."""

    def __init__(self) -> None:
        self.seen: list[int | None] = []

    def on_train_epoch_start(self, trainer: L.Trainer, *args) -> None:
        import torch

        last = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt"
        self.seen.append(torch.load(last, weights_only=True)["epoch"] if last.is_file() else None)
