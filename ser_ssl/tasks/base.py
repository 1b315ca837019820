"""What every task shares: input standardisation and the optimiser with warm-up, then cosine decay or
step decay."""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torch.utils.hooks import RemovableHandle

from ser_ssl.audio import Standardize
from ser_ssl.errors import ConfigError, UserError
from ser_ssl.models.config import recorded_config

RNG_KEY = "ser_ssl_rng_states"
#: Checkpoint key of each logger's version by class name (a W&B logger's version is its run id).
LOGGER_VERSIONS_KEY = "ser_ssl_logger_versions"


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite."""


class BaseTask(L.LightningModule):
    """Base of all ser-ssl LightningModules.

    The defaults are the project's, the ones the configs run: AdamW at 1e-3 with a one-epoch warm-up,
    chosen for a CPU budget (docs/method.md §7); ``configs/optim/paper_sgd.yaml`` switches to the
    paper's SGD.

    Args:
        n_mels: mel bands of the input (linked from the data module's features by the CLI).
        optimizer: ``adamw`` or ``sgd`` (the paper's, with Nesterov-free momentum).
        lr: peak learning rate after warm-up.
        momentum: SGD momentum (AdamW uses it as beta1).
        weight_decay: applied to weights only, never to biases or normalisation parameters.
        warmup_epochs: linear warm-up length; the rest of training follows ``schedule``.
        schedule: after the warm-up, ``cosine`` decay to 0, or ``multistep``: the learning rate is
            multiplied by ``gamma`` at each of ``milestones`` (the paper's schedule).
        milestones: epochs since the start of training (fractional allowed, at or after the warm-up,
            rounded to the nearest optimiser step) at which ``multistep`` decays; only with it.
        gamma: ``multistep``'s decay factor.
        channels_last: run convolutions in the channels-last memory format (about 1.5-1.8x faster
            fp32 training on the 2-core CPUs we measured; see docs/benchmarks.md).
        compile: compile the encoder with ``torch.compile`` (in place, so checkpoints keep their
            keys); worth it on GPUs for long runs, a start-up cost of minutes on CPU.
        lr_scaling: scale every peak learning rate by the global batch (clips per step over all
            processes and accumulated batches) over 256: ``linear`` (Goyal et al. 2017) or ``sqrt``
            (SimCLR's choice for large batches); ``none`` uses ``lr`` as given. Lets one config move
            between device counts without retuning.
        finite_check_every_n_steps: how often a non-finite training loss is looked for. The check
            reads a value back from the device, which makes the host wait for the GPU; between
            checks a device-side flag records the first bad step, and every checkpoint save checks
            first, so no checkpoint of non-finite weights is written.
    """

    def __init__(
        self,
        n_mels: int = 96,
        optimizer: Literal["sgd", "adamw"] = "adamw",
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        warmup_epochs: float = 1.0,
        schedule: Literal["cosine", "multistep"] = "cosine",
        milestones: list[float] | None = None,
        gamma: float = 0.1,
        channels_last: bool = True,
        lr_scaling: Literal["none", "linear", "sqrt"] = "none",
        compile: bool = False,
        finite_check_every_n_steps: int = 1,
    ) -> None:
        super().__init__()
        if finite_check_every_n_steps < 1:
            raise ConfigError(
                f"finite_check_every_n_steps must be at least 1, got {finite_check_every_n_steps}"
            )
        _check_schedule(schedule, milestones, gamma, warmup_epochs)
        self.normalizer = Standardize(n_mels)
        self.optimizer_name = optimizer
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.schedule = schedule
        self.milestones = list(milestones) if milestones is not None else None
        self.gamma = gamma
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.lr_scaling = lr_scaling
        self.compile_encoder = compile
        self.finite_check_every_n_steps = finite_check_every_n_steps
        self._first_bad: tuple[torch.Tensor, torch.Tensor] | None = None  # (step, loss) on the device

    def setup(self, stage: str) -> None:
        """Take the normalisation statistics from the data module unless they came with the weights."""
        dm = self.trainer.datamodule if self.trainer is not None else None
        if not bool(self.normalizer.fitted) and getattr(dm, "norm_mean", None) is not None:
            self.normalizer.set_stats(dm.norm_mean, dm.norm_std)
        self.to(memory_format=self.memory_format)
        for handle in getattr(self, "_grad_stride_hooks", ()):  # setup runs once per stage
            handle.remove()
        self._grad_stride_hooks = align_grad_strides(self)
        if self.compile_encoder and not getattr(self, "_compiled", False):
            self.encoder.compile()
            self._compiled = True

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise a ``[B, 1, n_mels, frames]`` batch and put it in the configured memory format."""
        return self.normalizer(x).contiguous(memory_format=self.memory_format)

    def encoder_config(self) -> dict[str, Any] | None:
        """The encoder's ``class_path``/``init_args`` config, which checkpoints record so the encoder can
        be rebuilt: the config's when the model came from one, else the one a ser-ssl encoder built in
        Python keeps (:func:`~ser_ssl.models.config.recorded_config`); None for other encoders built in
        Python."""
        spec = self.hparams.get("encoder")
        return spec if isinstance(spec, dict) else recorded_config(self.encoder)

    def trainable_modules(self) -> list[tuple[nn.Module, float]]:
        """Modules to optimise with their peak learning rates; a parameter held by several of them
        goes to the first (so a submodule listed before ``self`` gets its own rate)."""
        return [(self, self.lr)]

    def lr_factor(self) -> float:
        """The factor ``lr_scaling`` applies to every peak learning rate (1 without scaling)."""
        if self.lr_scaling == "none":
            return 1.0
        batch_size = getattr(self.trainer.datamodule, "batch_size", None)
        if not isinstance(batch_size, int):
            raise ConfigError("lr_scaling needs a data module with an integer batch_size")
        global_batch = batch_size * self.trainer.world_size * self.trainer.accumulate_grad_batches
        factor = global_batch / 256
        return factor if self.lr_scaling == "linear" else math.sqrt(factor)

    def configure_optimizers(self):
        factor = self.lr_factor()
        if factor != 1.0:
            rank_zero_info(f"lr_scaling={self.lr_scaling}: peak learning rates multiplied by {factor:.4g}")
        groups = []
        seen: set[int] = set()  # a parameter belongs to the first module that holds it
        for module, base_lr in self.trainable_modules():
            lr = base_lr * factor
            params = [p for p in module.parameters() if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in params)
            decay = [p for p in params if p.ndim > 1]
            no_decay = [p for p in params if p.ndim <= 1]  # biases and norm weights
            groups += [
                {"params": decay, "lr": lr, "weight_decay": self.weight_decay},
                {"params": no_decay, "lr": lr, "weight_decay": 0.0},
            ]
        groups = [g for g in groups if g["params"]]
        if self.optimizer_name == "sgd":
            opt = torch.optim.SGD(groups, momentum=self.momentum)
        else:
            opt = torch.optim.AdamW(groups, betas=(self.momentum, 0.999))
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        epochs = self.epochs_in(total)
        if self.milestones and self.milestones[-1] >= epochs:
            rank_zero_warn(
                f"model.init_args.milestones {self.milestones} reach max_epochs {epochs}: the learning rate "
                "never decays at those; scale the milestones to the run's length"
            )
        sched = build_scheduler(
            opt, total, epochs, self.warmup_epochs, self.schedule, self.milestones, self.gamma
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def epochs_in(self, total_steps: int) -> float:
        """How many epochs the run's ``total_steps`` optimiser steps make, the unit of the warm-up and
        the milestones: ``max_epochs``, unless ``max_steps`` ends the run first (or ``max_epochs`` is
        -1), when it is those steps over the steps of one epoch."""
        trainer = self.trainer
        max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        if getattr(trainer, "max_steps", -1) < 0 and max_epochs is not None:
            return max_epochs
        per_epoch = trainer.num_training_batches / trainer.accumulate_grad_batches
        if math.isfinite(per_epoch) and per_epoch > 0:
            return total_steps / math.ceil(per_epoch)
        return max_epochs or 1

    @property
    def loss_on_progress_bar(self) -> bool:
        """Whether the step's loss is shown on the progress bar. Showing it reads it on the host, which
        waits for the device to finish the step: free on the CPU and when the finite-loss check waits
        every step anyway, otherwise left out (the loggers still get it every ``log_every_n_steps``)."""
        return self.device.type == "cpu" or self.finite_check_every_n_steps == 1

    def check_finite(self, loss: torch.Tensor) -> None:
        """Record the first non-finite loss on the device; every ``finite_check_every_n_steps``
        steps, stop with a clear message if there was one (:meth:`stop_if_not_finite`)."""
        loss = loss.detach().float()
        if self._first_bad is None:
            self._first_bad = (torch.full((), -1, device=loss.device), torch.zeros((), device=loss.device))
        step, value = self._first_bad
        first = ~torch.isfinite(loss) & (step < 0)
        self._first_bad = (torch.where(first, self.global_step, step), torch.where(first, loss, value))
        if (self.global_step + 1) % self.finite_check_every_n_steps == 0:
            self.stop_if_not_finite()

    def stop_if_not_finite(self) -> None:
        """Stop with a clear message if any process has seen a non-finite loss.

        Every process takes the same decision (one all-reduce under DDP), so none is left waiting;
        the checkpoints written so far are kept, the last good one is ``last.ckpt``.
        """
        if self._first_bad is None:
            return
        step, value = (t.item() for t in self._first_bad)
        bad = step >= 0
        if self._trainer is not None:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            where = f"{value} at step {step}" if step >= 0 else "non-finite in another process"
            raise NonFiniteLossError(
                f"the training loss became {where} (epoch {self.current_epoch}); the last good checkpoint "
                "is kept. Lower --model.init_args.lr, raise warmup_epochs, or check the data (see the "
                "skipped-file warnings); resume with --ckpt_path last"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only plain-data hyper-parameters, so checkpoints load with ``weights_only=True``, and
        the state of torch's RNG, so a resumed run draws what an uninterrupted one would, and each
        logger's version (the W&B run id), so a resumed run logs on in the same run.

        Modules given as ``class_path`` configs (the CLI's way) are plain data and stay; modules
        built in Python are objects and are left out. A non-finite loss since the last check stops
        the run here, before the checkpoint is written.
        """
        self.stop_if_not_finite()
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if checkpoint.get(key):
                checkpoint[key] = {k: _plain(v) for k, v in checkpoint[key].items() if _is_plain(_plain(v))}
        checkpoint[RNG_KEY] = {"cpu": torch.get_rng_state()}
        if self._trainer is not None:  # so that a resumed run continues its logs (ser_ssl.cli)
            versions = {type(lg).__name__: lg.version for lg in self.trainer.loggers}
            checkpoint[LOGGER_VERSIONS_KEY] = {k: v for k, v in versions.items() if isinstance(v, (int, str))}
        if self.device.type == "cuda":
            checkpoint[RNG_KEY]["cuda"] = torch.cuda.get_rng_state(self.device)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore torch's RNG (it seeds the data loader workers of the next epoch) when resuming."""
        states = checkpoint.get(RNG_KEY)
        if states is None or self._trainer is None or self.trainer.state.fn != "fit":
            return
        torch.set_rng_state(states["cpu"])
        if "cuda" in states and self.device.type == "cuda":
            torch.cuda.set_rng_state(states["cuda"], self.device)


def align_grad_strides(module: nn.Module) -> list[RemovableHandle]:
    """Give each gradient its parameter's exact strides where they differ only in size-1 dimensions.

    A 1×1 or one-input-channel convolution's weight has size-1 dimensions, whose strides are
    arbitrary: GPU kernels may return its gradient in the same memory order but with other nominal
    strides, which autograd keeps, and DDP then warns that gradient and bucket strides differ and
    takes the slow, strided copy path. Re-striding such a gradient is a free view of the same memory.
    """
    return [
        param.register_hook(_restride_to(weakref.ref(param)))
        for param in module.parameters()
        if param.requires_grad and param.ndim > 1 and 1 in param.shape
    ]


def _restride_to(ref: weakref.ref) -> Any:
    def hook(grad: torch.Tensor) -> torch.Tensor | None:
        param = ref()
        if param is None or grad.shape != param.shape or grad.stride() == param.stride():
            return None
        if any(g != p for g, p, n in zip(grad.stride(), param.stride(), grad.shape, strict=True) if n != 1):
            return None  # another memory order: autograd copies it into the parameter's layout itself
        return grad.as_strided(param.shape, param.stride(), grad.storage_offset())

    return hook


def _check_schedule(schedule: str, milestones: Sequence[float] | None, gamma: float, warmup: float) -> None:
    """Raise :class:`ConfigError` for schedule settings that cannot work."""
    key = "model.init_args"
    if schedule not in ("cosine", "multistep"):
        raise ConfigError(f"{key}.schedule must be cosine or multistep, got {schedule!r}")
    if schedule == "cosine":
        if milestones is not None:
            raise ConfigError(
                f"{key}.milestones only apply with {key}.schedule multistep (or set them to null)"
            )
        return
    if not milestones:
        raise ConfigError(f"{key}.schedule multistep needs {key}.milestones, epochs such as [325, 425]")
    if list(milestones) != sorted(milestones) or milestones[0] < 0:
        raise ConfigError(f"{key}.milestones must be non-negative and in order, got {milestones}")
    if milestones[0] < warmup:
        raise ConfigError(
            f"{key}.milestones must not fall within the warm-up ({warmup} epochs), got {milestones}"
        )
    if gamma <= 0:
        raise ConfigError(f"{key}.gamma must be positive, got {gamma}")


def build_scheduler(
    opt: torch.optim.Optimizer,
    total_steps: int,
    epochs: float,
    warmup_epochs: float,
    schedule: str = "cosine",
    milestones: Sequence[float] | None = None,
    gamma: float = 0.1,
) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-optimiser-step schedule of ``total_steps`` steps over ``epochs`` epochs: a linear warm-up
    of ``warmup_epochs`` from 1e-3 of each peak learning rate, then a cosine decay to 0 at the end, or
    ``multistep``: ``gamma`` times at each of ``milestones`` (epochs since the start, rounded to the
    nearest step)."""
    warmup = min(int(total_steps * warmup_epochs / epochs), total_steps - 1)
    if schedule == "multistep":  # MultiStepLR counts from the end of the warm-up
        steps = [round(total_steps * m / epochs) - warmup for m in milestones or ()]
        after = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=steps, gamma=gamma)
    else:
        after = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps - warmup)
    if warmup == 0:
        return after
    ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-3, total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(opt, [ramp, after], milestones=[warmup])


def _plain(value: Any) -> Any:
    """Dataclass settings (e.g. a data module's ``LogMelConfig`` built in Python) as plain dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _is_plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))
