"""A second `ser-ssl fit` into a run folder that holds a checkpoint refuses instead of overwriting it."""

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
