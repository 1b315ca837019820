"""The ``ser-ssl`` command: a LightningCLI over the tasks and data modules (fit/validate/test/predict)."""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import secrets
import string
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from ser_ssl.errors import ConfigError, MissingFileError, UserError
from ser_ssl.precision import choose_precision, detect
from ser_ssl.tasks.base import LOGGER_VERSIONS_KEY, BaseTask


def _checkpoint_dir(root_dir: str | None) -> str:
    return str(Path(root_dir or ".") / "checkpoints")


WANDB_LOGGER = "lightning.pytorch.loggers.WandbLogger"

# Every task's loggers unless its config sets ``trainer.logger`` (``--print_config`` shows them):
# a CSV file and an offline W&B run under ``trainer.default_root_dir`` (docs/dashboards.md).
DEFAULT_LOGGERS = [
    {"class_path": "ser_ssl.loggers.CSVLogger", "init_args": {"save_dir": "."}},
    {"class_path": WANDB_LOGGER, "init_args": {"project": "ser-ssl"}},
]

# ``WANDB_MODE`` values (W&B's own aliases included) -> the mode ``--wandb`` would name
WANDB_MODES = {
    "online": "online",
    "run": "online",
    "offline": "offline",
    "dryrun": "offline",
    "disabled": "disabled",
}


def wandb_mode(flag: str | None) -> str:
    """The W&B mode of a run: ``--wandb`` when given, else the ``WANDB_MODE`` environment variable,
    else offline."""
    if flag is not None:
        return flag
    env = os.environ.get("WANDB_MODE")
    if not env:
        return "offline"
    if env.strip().lower() not in WANDB_MODES:
        raise ConfigError(
            f"WANDB_MODE={env} is not one of online, offline, disabled: change it, or pass --wandb"
        )
    return WANDB_MODES[env.strip().lower()]


def _checkpoint_file(config: Any, last_by_default: bool) -> Path | None:
    """The checkpoint ``--ckpt_path`` names: ``last`` (or nothing, with ``last_by_default``, as
    ``test`` and ``validate`` read it) is the run folder's ``last.ckpt``."""
    path = config.get("ckpt_path")
    if path == "last" or (path is None and last_by_default):
        return Path(_checkpoint_dir(config.trainer.default_root_dir)) / "last.ckpt"
    return None if path is None else Path(path)


def read_run_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint ``--ckpt_path`` names; a missing or unreadable file is one line of error, not
    Lightning's traceback."""
    from ser_ssl.tasks.checkpoint import read_checkpoint

    return read_checkpoint(path, "--ckpt_path", "pass the checkpoint of a run of this config", mmap=True)


def recorded_versions(path: str | Path | None) -> dict[str, int | str]:
    """The logger versions a checkpoint recorded (``{"WandbLogger": run id, "CSVLogger": N}``), or
    none when it is missing, unreadable or older than that record."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # Lightning (or the model) reports an unreadable checkpoint itself, when it loads it
        return {}
    versions = ckpt.get(LOGGER_VERSIONS_KEY) if isinstance(ckpt, dict) else None
    return versions if isinstance(versions, dict) else {}


def job_type(model: Any) -> str:
    """The W&B ``job_type`` of a ``model`` config: pretrain, probe, finetune, scratch (a fine-tuning
    that loads no pretrained weights), export, or the class name of another task."""
    from ser_ssl.tasks import Embed, FineTune, LinearProbe, SimCLR

    class_path = getattr(model, "class_path", None) or ""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return name.lower() or "run"
    init = getattr(model, "init_args", None) or {}
    if not isinstance(cls, type):
        return name.lower()
    if issubclass(cls, SimCLR):
        return "pretrain"
    if issubclass(cls, LinearProbe):
        return "probe"
    if issubclass(cls, FineTune):
        pretrained = init.get("encoder_checkpoint") is not None and init.get("load_weights", True)
        return "finetune" if pretrained else "scratch"
    if issubclass(cls, Embed):
        return "export"
    return name.lower()


def new_run_id() -> str:
    """A W&B run id, in W&B's own style (8 lower-case letters and digits)."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


class ConfigToLoggers(SaveConfigCallback):
    """Besides ``config.yaml`` in the log folder, hands the full resolved config to every logger
    (the run config of W&B, ``hparams.yaml`` of the CSV logger), so each run records how it was made."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})


class SERCLI(LightningCLI):
    """Everything a run writes lives under ``trainer.default_root_dir``.

    - One checkpoint callback: ``<default_root_dir>/checkpoints`` with ``last.ckpt`` overwritten at
      every save, so ``ser-ssl test`` and ``ser-ssl validate`` with the same config find the trained
      model without being told; ``--ckpt_path`` picks another one.
    - Loggers: a config without ``trainer.logger`` gets :data:`DEFAULT_LOGGERS` (CSV and W&B).
      Those whose ``save_dir`` is ``.`` (W&B's default) write under ``default_root_dir`` too.
    - ``--wandb offline|online|disabled`` switches every configured ``WandbLogger`` in one flag;
      without it ``WANDB_MODE`` decides, else offline (no account, no network; ``wandb sync`` later).
    - Each W&B run gets what its config leaves unset: ``job_type`` (pretrain, probe, finetune,
      scratch, export), ``group`` (the W&B id of the pretraining its encoder came from, so a
      pretraining and its downstream runs are shown together), ``name`` and ``tags``.
    - ``--auto_precision true`` picks ``trainer.precision`` for the hardware (``ser_ssl.precision``).
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.enable_version_counter": False})
        parser.link_arguments("trainer.default_root_dir", "checkpoint.dirpath", compute_fn=_checkpoint_dir)
        parser.link_arguments("data.init_args.features.n_mels", "model.init_args.n_mels")
        parser.set_defaults({"trainer.logger": copy.deepcopy(DEFAULT_LOGGERS)})
        parser.add_argument(
            "--wandb",
            type=Literal["offline", "online", "disabled"] | None,
            default=None,
            help="WandbLogger mode: offline (`wandb sync` later), online or disabled; default: the "
            "WANDB_MODE environment variable when set, else offline",
        )
        parser.add_argument(
            "--auto_precision",
            type=bool,
            default=False,
            help="set trainer.precision to what is fast on this machine (bf16-mixed on GPUs with bf16 "
            "tensor cores and CPUs with AMX, else fp16 or fp32) and log the choice",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # ``args`` from Python (``cli_main``: the runners, the demo) are the whole command line by
        # design; Lightning's warning that sys.argv holds arguments too would fire on every run
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended")
            super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """Lightning builds the model of a ``--ckpt_path`` file from the hyper-parameters it holds
        (over the config's and the command line's); first refuse, in one line, a path that is no
        readable checkpoint or one of another task, whose numbers would land in this config's run."""
        from ser_ssl.models.build import check_classes_trusted

        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        path = config.get("ckpt_path") if config is not None else None
        # a local file; Lightning's own names and remote or registry paths are Lightning's to read
        if path is not None and path not in ("last", "best", "hpc") and not re.match(r"^\w+:", path):
            hparams = read_run_checkpoint(Path(path)).get("hyper_parameters") or {}
            check_classes_trusted(hparams, Path(path))
            theirs = hparams.get("_class_path")
            ours = getattr(config.model, "class_path", None)
            if isinstance(theirs, str) and isinstance(ours, str):
                theirs, ours = theirs.rsplit(".", 1)[-1], ours.rsplit(".", 1)[-1]
                if theirs != ours:
                    raise ConfigError(
                        f"--ckpt_path {path} is a {theirs} checkpoint and this config runs {ours}; give the "
                        "config it was trained with"
                    )
            rank_zero_info(f"the model's settings come from {path} (its hyper-parameters)")
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.auto_precision:
            accelerator = config.trainer.accelerator
            precision, why = choose_precision(detect(accelerator if isinstance(accelerator, str) else "auto"))
            rank_zero_info(f"auto_precision: trainer.precision {precision}: {why}")
            config.trainer.precision = precision
        checkpoint = config.checkpoint
        if checkpoint.save_on_train_epoch_end is None and checkpoint.monitor is None:
            # a checkpoint at the end of every training epoch, also of runs that validate less often
            # (the probe, fine-tuning), so a killed run loses at most one epoch; with a monitor,
            # Lightning's choice (at validation, where the monitored value is new)
            checkpoint.save_on_train_epoch_end = True
        if config.trainer.fast_dev_run:
            # Lightning skips checkpoints under fast_dev_run except `last` at the end of training, which
            # would then pass for a trained run (and block the real one in the same folder)
            checkpoint.save_last = False
        config.wandb = wandb_mode(config.wandb)  # the saved config.yaml records the mode used
        loggers = config.trainer.logger
        if not isinstance(loggers, list):
            return
        self._loggers_as_given = copy.deepcopy(loggers)
        resumed = (
            recorded_versions(_checkpoint_file(config, last_by_default=False))
            if self.subcommand == "fit"
            else {}
        )
        kept = []
        for logger in loggers:
            args = logger.init_args
            name = logger.class_path.rsplit(".", 1)[-1]
            if args.get("version") is None and name in resumed:
                args.version = resumed[name]
            if logger.class_path == WANDB_LOGGER:
                if config.wandb == "disabled":
                    continue
                args.offline = config.wandb == "offline"
                args.mode = config.wandb  # wins over WANDB_MODE, which an offline WandbLogger sets
                self._fill_wandb(config, args)
            if args.get("save_dir") in (None, "."):
                args.save_dir = config.trainer.default_root_dir or "."
            kept.append(logger)
        config.trainer.logger = kept or True  # Lightning's default logger when W&B was the only one

    def after_instantiate_classes(self) -> None:
        """The config saved with the run (``config.yaml``, the loggers' copies) keeps the loggers as the
        config gave them, not what was filled in for this run (folders, W&B id, name, group): a run
        started again from that file, elsewhere, gets its own."""
        given = getattr(self, "_loggers_as_given", None)
        if given is not None:
            config = self.config[self.subcommand] if self.subcommand else self.config
            config.trainer.logger = given

    def _fill_wandb(self, config: Any, args: Any) -> None:
        """Set what the config left unset of a W&B run: ``job_type`` from the task, ``group`` (see
        :meth:`_wandb_group`), ``name`` from the run folder (``-test``/``-validate`` added for those
        commands) and ``tags`` ``[job_type, subcommand]``."""
        job = job_type(config.model)
        command = self.subcommand or "fit"
        if args.get("job_type") is None:
            args.job_type = job
        if args.get("group") is None:
            args.group = self._wandb_group(config, args)
        if args.get("name") is None:
            folder = Path(config.trainer.default_root_dir or ".").resolve().name or "run"
            args.name = folder if command in ("fit", "predict") else f"{folder}-{command}"
        if args.get("tags") is None:
            args.tags = [job, command]

    def _wandb_group(self, config: Any, args: Any) -> str | None:
        """The W&B group of a run: the W&B id of the run its encoder comes from.

        - With ``model.init_args.encoder_checkpoint`` (probe, fine-tuning, export): the id that
          pretraining recorded in its checkpoint; the pretraining run folder's name when it ran
          without W&B.
        - Otherwise (pretraining, training from scratch) ``fit`` is its own group: its id (a new
          one is chosen here, or the resumed run's); ``validate``/``test`` join the group of the
          run that wrote the checkpoint they evaluate.
        """
        init = getattr(config.model, "init_args", None) or {}
        encoder = init.get("encoder_checkpoint")
        if encoder is not None:
            recorded = recorded_versions(encoder).get("WandbLogger")
            if recorded is not None:
                return str(recorded)
            path = Path(encoder)
            if not path.is_file():
                return None  # the model reports the missing checkpoint
            return path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
        if self.subcommand in (None, "fit"):
            if args.get("version") is None and args.get("id") is None:
                args.version = new_run_id()
            return str(args.get("version") or args.get("id"))
        recorded = recorded_versions(_checkpoint_file(config, last_by_default=True)).get("WandbLogger")
        return None if recorded is None else str(recorded)

    def _check_data(self) -> None:
        """Catch a mismatch between a pretrained encoder and the data before the cache is built."""
        check = getattr(self.model, "check_features", None)
        if check is not None:
            check(self.datamodule)

    before_fit = before_validate = before_test = _check_data

    def before_predict(self) -> None:
        """``ser-ssl predict`` of a task that makes no predictions (pretraining, a probe) stops here, in
        one line that says what does, not in Lightning's call of ``forward`` on a batch."""
        own = type(self.model).predict_step is not L.LightningModule.predict_step
        if isinstance(self.model, BaseTask) and not own:
            raise ConfigError(
                f"{type(self.model).__name__} writes no predictions; `ser-ssl predict --config "
                "configs/export.yaml` writes embeddings, and a probe or fine-tuning's class scores per "
                "file come from ser_ssl.from_pretrained(<its exported folder>).classify_file "
                "(docs/usage.md, sharing a trained model)"
            )
        self._check_data()

    def _finish_wandb(self) -> None:
        """Close the W&B run when the command ends, so its files are complete even when the CLI runs
        inside a longer Python process (a notebook, the tests) rather than exiting."""
        for logger in self.trainer.loggers:
            if (
                isinstance(logger, WandbLogger)
                and logger._experiment is not None
                and self.trainer.is_global_zero
            ):
                logger.experiment.finish()

    after_fit = after_validate = after_test = after_predict = _finish_wandb

    def _trained_checkpoint(self, ckpt_path: str | None) -> str:
        if ckpt_path is not None and ckpt_path != "last":
            return ckpt_path
        last = Path(self.trainer.checkpoint_callback.dirpath) / "last.ckpt"
        if not last.is_file():
            raise MissingFileError(
                f"no trained model at {last}: run `ser-ssl fit` with the same config first, "
                "or pass --ckpt_path"
            )
        read_run_checkpoint(last)
        return str(last)

    def fit(
        self,
        model: L.LightningModule,
        datamodule: L.LightningDataModule,
        ckpt_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Train; refuse to start afresh over a run folder that holds a checkpoint, whose
        ``last.ckpt`` the first save would overwrite (a SLURM requeue, which Lightning resumes from
        its own checkpoint, is let through)."""
        last = Path(self.trainer.checkpoint_callback.dirpath) / "last.ckpt"
        root = Path(self.trainer.default_root_dir)
        requeued = list(root.glob("hpc_ckpt_*.ckpt"))
        if ckpt_path is None and last.is_file() and not requeued:
            raise ConfigError(
                f"{root} already holds a trained run ({last}); resume it with --ckpt_path last, or start "
                "a new one with another --trainer.default_root_dir (or delete that folder)"
            )
        if ckpt_path == "last" and not requeued:
            if last.is_file():
                read_run_checkpoint(last)
            else:  # Lightning's "set and forget": one command line that starts a run and resumes it
                rank_zero_warn(f"--ckpt_path last: there is no {last} yet, so this starts a new run")
        self.trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, **kwargs)

    def test(
        self,
        model: L.LightningModule,
        datamodule: L.LightningDataModule,
        ckpt_path: str | None = None,
        **kwargs: Any,
    ) -> list[dict[str, float]]:
        """Test the trained model (``last.ckpt`` of this config by default) and save the metrics."""
        results = self.trainer.test(
            model, datamodule=datamodule, ckpt_path=self._trained_checkpoint(ckpt_path), **kwargs
        )
        if self.trainer.is_global_zero and results:
            out = Path(self.trainer.checkpoint_callback.dirpath).parent / "test_metrics.json"
            out.write_text(json.dumps(results[0], indent=2))
        return results

    def validate(
        self,
        model: L.LightningModule,
        datamodule: L.LightningDataModule,
        ckpt_path: str | None = None,
        **kwargs: Any,
    ) -> list[dict[str, float]]:
        """Validate the trained model (``last.ckpt`` of this config by default)."""
        return self.trainer.validate(
            model, datamodule=datamodule, ckpt_path=self._trained_checkpoint(ckpt_path), **kwargs
        )


def cli_main(args: list[str] | None = None) -> SERCLI:
    """Run the CLI in-process and return it (tests and scripts read ``cli.trainer`` afterwards)."""
    return SERCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        save_config_callback=ConfigToLoggers,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )


def user_error(err: BaseException) -> BaseException | None:
    """The user's error behind ``err``, also when jsonargparse wrapped it while building a class: a
    :class:`UserError`, Lightning's ``MisconfigurationException`` (a setting the machine or the task
    cannot run, e.g. ``--trainer.accelerator gpu`` without one, ``test`` of a model without test
    steps) or W&B's ``UsageError`` (``--wandb online`` without a login)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from wandb.errors import UsageError

    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (UserError, MisconfigurationException, UsageError)):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def exit_on_user_error(run: Callable[[], object], prog: str = "ser-ssl") -> None:
    """Run a command; a user error ends it with one line, ``<prog>: error: ...``, not a traceback."""
    try:
        run()
    except Exception as err:
        cause = user_error(err)
        if cause is None:
            raise
        sys.exit(f"{prog}: error: {cause}")


def main() -> None:
    """Entry point of the ``ser-ssl`` console script."""
    exit_on_user_error(cli_main)


if __name__ == "__main__":
    main()
