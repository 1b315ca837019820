"""Test-only Lightning callbacks, importable by CLI runs in subprocesses (``--trainer.callbacks+=``)."""

import os
import signal

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
