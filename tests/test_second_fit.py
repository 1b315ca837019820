"""A second `ser-ssl fit` into a run folder that holds a checkpoint refuses instead of overwriting it."""

import csv

import pytest

from ser_ssl.cli import main
from tests.conftest import SMALL_ENCODER, tiny_args

pytestmark = pytest.mark.slow


def fit(monkeypatch, args):
    monkeypatch.setattr("sys.argv", ["ser-ssl", "fit", *args])
    main()


def test_a_second_fit_refuses_and_keeps_the_first_checkpoint(tmp_path, tiny_data, monkeypatch):
    args = tiny_args("pretrain", tmp_path / "run", tiny_data, tmp_path / "cache") + SMALL_ENCODER
    args += ["--trainer.max_epochs", "1"]
    fit(monkeypatch, args)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    with pytest.raises(SystemExit) as refused:
        fit(monkeypatch, args)
    assert "already holds a trained run" in str(refused.value) and "--ckpt_path last" in str(refused.value)
    assert last.read_bytes() == before  # the first run's checkpoint is untouched
    fit(monkeypatch, [*args[:-1], "2", "--ckpt_path", "last"])  # resuming it is allowed
    assert last.read_bytes() != before


def test_a_resumed_run_continues_its_csv_file_and_its_wandb_run(tmp_path, tiny_data, monkeypatch):
    root = tmp_path / "run"
    args = tiny_args("pretrain", root, tiny_data, tmp_path / "cache") + SMALL_ENCODER
    args[args.index("--wandb") + 1] = "offline"
    args += ["--trainer.log_every_n_steps", "1", "--trainer.max_epochs", "1"]
    fit(monkeypatch, args)
    fit(monkeypatch, [*args[:-1], "2", "--ckpt_path", "last"])
    (metrics,) = root.rglob("metrics.csv")  # one CSV version, not a second one beside it
    with metrics.open(newline="") as f:
        epochs = {row["epoch"] for row in csv.DictReader(f) if row.get("train/loss")}
    assert epochs == {"0", "1"}  # the first sitting's rows are kept, the second's appended
    runs = sorted(p.name for p in (root / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and len({name.rsplit("-", 1)[-1] for name in runs}) == 1  # one run id
