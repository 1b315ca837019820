"""Interrupted training loses nothing: a SIGKILLed run resumes to the weights of an uninterrupted
one, and a non-finite loss stops the run with a clear message and the last good checkpoint kept."""

import signal
import subprocess
import sys

import pytest
import torch

from ser_ssl.cli import main
from tests.conftest import SMALL_ENCODER, tiny_args

pytestmark = pytest.mark.slow

# 48 training clips in batches of 8: 6 steps an epoch; the kill lands in the middle of the second
EPOCHS, KILL_STEP = 2, 9


def _args(root, tiny_data, cache, *extra: str) -> list[str]:
    args = tiny_args("pretrain", root, tiny_data, cache) + SMALL_ENCODER
    # bit-exact resuming needs workers started afresh each epoch: persistent ones (the configs' choice,
    # for speed) keep drawing from the random stream they began with, which a resumed run begins elsewhere
    args += ["--data.init_args.num_workers", "1", "--data.init_args.persistent_workers", "false"]
    return args + ["--trainer.max_epochs", str(EPOCHS), *extra]


def _fit(root, tiny_data, cache, *extra: str) -> subprocess.CompletedProcess:
    """A run in a process of its own, deterministic, so that it can be killed and compared bit for bit."""
    args = _args(root, tiny_data, cache, "--trainer.deterministic", "true", *extra)
    return subprocess.run(
        [sys.executable, "-m", "ser_ssl.cli", "fit", *args], capture_output=True, text=True, timeout=300
    )


def _weights(root) -> dict[str, torch.Tensor]:
    return torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def test_a_sigkilled_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, tiny_data):
    cache = tmp_path / "cache"
    whole = _fit(tmp_path / "whole", tiny_data, cache)
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed = _fit(
        tmp_path / "killed",
        tiny_data,
        cache,
        "--trainer.callbacks+=tests.helpers.KillAtStep",
        "--trainer.callbacks.step",
        str(KILL_STEP),
    )
    assert killed.returncode == -signal.SIGKILL
    saved = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 6  # the end of the first epoch, the last checkpoint before the kill

    resumed = _fit(tmp_path / "killed", tiny_data, cache, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = _weights(tmp_path / "whole"), _weights(tmp_path / "killed")
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


# checked every step; at step 9 (every 5); only by the save at the end of epoch 1 (every 100)
@pytest.mark.parametrize("every", [1, 5, 100])
def test_a_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path, tiny_data, every, monkeypatch
):
    poison = ["--trainer.callbacks+=tests.helpers.PoisonAtStep", "--trainer.callbacks.step", "8"]
    check = ["--model.init_args.finite_check_every_n_steps", str(every)]
    monkeypatch.setattr(
        "sys.argv",
        ["ser-ssl", "fit", *_args(tmp_path / "run", tiny_data, tmp_path / "cache", *poison, *check)],
    )
    with pytest.raises(SystemExit) as stopped:  # the console script's one line, not a traceback
        main()
    assert str(stopped.value).startswith("ser-ssl: error: the training loss became nan at step 8 (epoch 1)")
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 6
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
