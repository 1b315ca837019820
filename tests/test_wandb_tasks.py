"""Every task logs to W&B (offline here) and the CSV logger, each W&B run in the group of the
pretraining its encoder came from, with its task as ``job_type``; ``WANDB_MODE`` decides without
``--wandb``."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from google.protobuf.message import DecodeError
from lightning.pytorch.loggers import WandbLogger

from ser_ssl.cli import cli_main, recorded_versions, wandb_mode
from ser_ssl.errors import ConfigError
from ser_ssl.loggers import CSVLogger
from tests.conftest import SMALL_ENCODER, tiny_args
from tests.test_dashboards import _records

pytestmark = pytest.mark.slow


def with_wandb(args: list[str], mode: str | None) -> list[str]:
    """``tiny_args`` with ``--wandb mode``, or without ``--wandb`` at all for ``None``."""
    i = args.index("--wandb")
    return [*args[:i], *(["--wandb", mode] if mode else []), *args[i + 2 :]]


def offline_runs(root: Path, count: int) -> list:
    """The run records of the ``count`` offline W&B runs under ``root``, oldest first. W&B's service
    writes a finished run's file a moment after ``finish()`` returns, so this waits for them."""
    deadline = time.monotonic() + 60
    while True:
        runs = []
        # oldest first: by the start second in the folder's name, then (runs that started in the same
        # second) by when their files were last written
        files = root.glob("wandb/offline-run-*/run-*.wandb")
        for run_file in sorted(files, key=lambda p: (p.parent.name.split("-")[2], p.stat().st_mtime)):
            try:
                runs += [r.run for r in _records(run_file) if r.WhichOneof("record_type") == "run"][:1]
            except (AssertionError, DecodeError):  # not yet written: no header, a record half written
                pass
        if len(runs) >= count or time.monotonic() > deadline:
            return runs
        time.sleep(0.2)


def pretraining_id(pretrained: Path) -> str:
    return recorded_versions(pretrained / "pretrain" / "checkpoints" / "last.ckpt")["WandbLogger"]


def downstream_args(task: str, pretrained: Path, root: Path, tiny_data: Path, mode: str | None) -> list[str]:
    args = with_wandb(tiny_args(task, root, tiny_data, pretrained / "cache"), mode)
    args += [
        "--model.init_args.encoder_checkpoint",
        str(pretrained / "pretrain" / "checkpoints" / "last.ckpt"),
    ]
    return args + ["--trainer.max_epochs", "1"]


def test_the_pretraining_is_the_group_of_its_own_run(pretrained):
    (run,) = offline_runs(pretrained / "pretrain", 1)
    assert run.run_id == pretraining_id(pretrained) == run.run_group
    assert run.job_type == "pretrain" and run.display_name == "pretrain"
    assert list(run.tags) == ["pretrain", "fit"]


def test_a_probe_joins_its_pretraining_group_and_a_resumed_probe_continues_its_run(pretrained, tiny_data):
    root = pretrained / "probe-wandb"
    args = downstream_args("probe", pretrained, root, tiny_data, "offline")
    fit = cli_main(["fit", *args])
    assert [type(lg) for lg in fit.trainer.loggers] == [CSVLogger, WandbLogger]
    (run,) = offline_runs(root, 1)
    assert run.run_group == pretraining_id(pretrained) and run.job_type == "probe"
    assert run.display_name == "probe-wandb" and list(run.tags) == ["probe", "fit"]
    assert len(list(root.rglob("metrics.csv"))) == 1  # the CSV logger too

    cli_main(["fit", *args[:-1], "2", "--ckpt_path", "last"])
    first, resumed = offline_runs(root, 2)
    assert resumed.run_id == first.run_id and resumed.run_group == first.run_group  # the same W&B run
    assert len(list(root.rglob("metrics.csv"))) == 1  # and the same CSV file

    cli_main(["test", *args])
    test = offline_runs(root, 3)[-1]
    assert test.run_id != first.run_id and test.run_group == first.run_group
    assert test.job_type == "probe" and test.display_name == "probe-wandb-test"
    assert list(test.tags) == ["probe", "test"]


def test_a_finetuning_joins_its_pretraining_group(pretrained, tiny_data):
    root = pretrained / "finetune-wandb"
    cli_main(["fit", *downstream_args("finetune", pretrained, root, tiny_data, "offline")])
    (run,) = offline_runs(root, 1)
    assert run.run_group == pretraining_id(pretrained) and run.job_type == "finetune"


def test_group_name_and_tags_set_on_the_command_line_are_kept(pretrained, tiny_data):
    root = pretrained / "finetune-named"
    args = downstream_args("finetune", pretrained, root, tiny_data, "offline")
    args += ["--model.init_args.load_weights", "false", "--trainer.max_steps", "1"]
    args += ["--trainer.logger.init_args.group", "mine", "--trainer.logger.init_args.name", "random-init"]
    args += ["--trainer.logger.init_args.tags", "[baseline]"]
    cli_main(["fit", *args])
    (run,) = offline_runs(root, 1)
    assert (run.run_group, run.display_name, list(run.tags)) == ("mine", "random-init", ["baseline"])
    assert run.job_type == "scratch"  # a fine-tuning that loads no pretrained weights


def test_training_from_scratch_is_its_own_group_and_its_test_joins_it(tmp_path, tiny_data):
    root = tmp_path / "scratch"
    args = with_wandb(tiny_args("scratch", root, tiny_data, tmp_path / "cache"), "offline") + SMALL_ENCODER
    args += ["--trainer.max_epochs", "1"]
    cli_main(["fit", *args])
    cli_main(["test", *args])
    fit, test = offline_runs(root, 2)
    assert fit.run_group == fit.run_id == recorded_versions(root / "checkpoints" / "last.ckpt")["WandbLogger"]
    assert test.run_group == fit.run_id and test.run_id != fit.run_id
    assert fit.job_type == test.job_type == "scratch"


def test_an_export_joins_its_pretraining_group_and_keeps_its_files_together(pretrained, tiny_data):
    root = pretrained / "export-wandb"
    args = with_wandb(tiny_args("export", root, tiny_data, pretrained / "cache"), "offline")
    ckpt = str(pretrained / "pretrain" / "checkpoints" / "last.ckpt")
    cli = cli_main(["predict", *args, "--model.init_args.encoder_checkpoint", ckpt])
    assert [type(lg) for lg in cli.trainer.loggers] == [CSVLogger, WandbLogger]
    (run,) = offline_runs(root, 1)
    assert run.run_group == pretraining_id(pretrained) and run.job_type == "export"
    assert np.load(root / "embeddings.npz")["embeddings"].shape[1] == 32
    config = yaml.safe_load((root / "config.yaml").read_text())  # next to the embeddings
    assert config["wandb"] == "offline"
    assert (root / "hparams.yaml").is_file() and not (root / "lightning_logs").exists()


def test_wandb_mode_decides_without_the_flag_and_the_flag_wins(pretrained, tiny_data, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = pretrained / "probe-env"
    cli = cli_main(["fit", *downstream_args("probe", pretrained, root, tiny_data, None)])
    assert [type(lg) for lg in cli.trainer.loggers] == [CSVLogger]
    assert not (root / "wandb").exists()
    (saved,) = root.rglob("config.yaml")
    assert yaml.safe_load(saved.read_text())["wandb"] == "disabled"  # the mode used is recorded

    root = pretrained / "probe-flag"
    cli = cli_main(["fit", *downstream_args("probe", pretrained, root, tiny_data, "offline")])
    assert [type(lg) for lg in cli.trainer.loggers] == [CSVLogger, WandbLogger]
    (run,) = offline_runs(root, 1)
    assert run.job_type == "probe"


def test_the_wandb_mode_comes_from_the_flag_then_wandb_mode_then_offline(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode(None) == "offline"
    for env, mode in [("online", "online"), ("dryrun", "offline"), ("disabled", "disabled")]:
        monkeypatch.setenv("WANDB_MODE", env)
        assert wandb_mode(None) == mode
        assert wandb_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ConfigError, match="WANDB_MODE=sometimes"):
        wandb_mode(None)


@pytest.mark.parametrize("task", ["probe", "finetune", "scratch"])
def test_print_config_shows_the_default_loggers(task, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", f"configs/{task}.yaml", "--print_config"])
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    loggers = [lg["class_path"] for lg in config["trainer"]["logger"]]
    assert loggers == ["ser_ssl.loggers.CSVLogger", "lightning.pytorch.loggers.WandbLogger"]


def test_a_run_started_from_another_runs_saved_config_logs_in_its_own_folder_and_w_and_b_run(
    pretrained, tiny_data
):
    first = pretrained / "probe-first"
    cli_main(["fit", *downstream_args("probe", pretrained, first, tiny_data, "offline")])
    (saved,) = first.rglob("config.yaml")
    assert yaml.safe_load(saved.read_text())["trainer"]["logger"][1]["init_args"].get("version") is None
    again = pretrained / "probe-again"
    cli_main(["fit", "--config", str(saved), "--trainer.default_root_dir", str(again)])
    assert (again / "lightning_logs" / "version_0" / "metrics.csv").is_file()
    assert [p.name for p in (first / "lightning_logs").iterdir()] == ["version_0"]
    (run_first,) = offline_runs(first, 1)
    (run_again,) = offline_runs(again, 1)
    assert run_again.run_id != run_first.run_id and run_again.display_name == "probe-again"
