"""The ``ser-ssl`` command: a LightningCLI over the tasks and data modules (fit/validate/test/predict)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from ser_ssl.errors import MissingFileError, UserError


def _checkpoint_dir(root_dir: str | None) -> str:
    return str(Path(root_dir or ".") / "checkpoints")


class SERCLI(LightningCLI):
    """Adds one checkpoint callback whose folder follows ``trainer.default_root_dir``.

    Checkpoints land in ``<default_root_dir>/checkpoints`` with ``last.ckpt`` overwritten at every
    save, so ``ser-ssl test`` and ``ser-ssl validate`` with the same config find the trained model
    without being told; ``--ckpt_path`` picks another one.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.enable_version_counter": False})
        parser.link_arguments("trainer.default_root_dir", "checkpoint.dirpath", compute_fn=_checkpoint_dir)
        parser.link_arguments("data.init_args.features.n_mels", "model.init_args.n_mels")

    def _trained_checkpoint(self, ckpt_path: str | None) -> str:
        if ckpt_path is not None:
            return ckpt_path
        last = Path(self.trainer.checkpoint_callback.dirpath) / "last.ckpt"
        if not last.is_file():
            raise MissingFileError(
                f"no trained model at {last}: run `ser-ssl fit` with the same config first, "
                "or pass --ckpt_path"
            )
        return str(last)

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
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )


def user_error(err: BaseException) -> UserError | None:
    """The :class:`UserError` behind ``err``, also when jsonargparse wrapped it while building a class."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def main() -> None:
    """Entry point of the ``ser-ssl`` console script: user errors print one line, not a traceback."""
    try:
        cli_main()
    except Exception as err:
        cause = user_error(err)
        if cause is None:
            raise
        sys.exit(f"ser-ssl: error: {cause}")


if __name__ == "__main__":
    main()
