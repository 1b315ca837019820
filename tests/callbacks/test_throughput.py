from types import SimpleNamespace

import pytest
import torch

from ser_ssl.callbacks import PatchThroughput, patches_in_batch
from ser_ssl.callbacks import throughput as module


class Clock:
    """``time.perf_counter`` that the test moves on by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Logger:
    def __init__(self) -> None:
        self.logged: list[tuple[int, dict]] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.logged.append((step, metrics))


def fake_trainer(logger: Logger, rank_zero: bool = True, world_size: int = 1) -> SimpleNamespace:
    loop = SimpleNamespace(epoch_loop=SimpleNamespace(_batches_that_stepped=0))
    return SimpleNamespace(
        is_global_zero=rank_zero, log_every_n_steps=5, loggers=[logger], world_size=world_size, fit_loop=loop
    )


def run_steps(callback: PatchThroughput, trainer, steps: int, clock: Clock, device: str = "cuda") -> None:
    """``steps`` training steps of 8 patches, 0.1 s each."""
    module_ = SimpleNamespace(device=torch.device(device))
    callback.on_train_start(trainer, module_)
    batch = {"x": torch.zeros(8, 1, 2, 3)}  # 8 patches
    for i in range(steps):
        clock.now += 0.1
        trainer.fit_loop.epoch_loop._batches_that_stepped = i + 1
        callback.on_train_batch_end(trainer, module_, None, batch, i)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(module.time, "perf_counter", clock)
    return clock


def test_waits_for_the_device_only_on_logging_steps_and_rates_span_the_window(monkeypatch, clock):
    synced = []
    monkeypatch.setattr(module.torch.cuda, "synchronize", lambda device=None: synced.append(device))
    logger = Logger()
    run_steps(PatchThroughput(window_size=2), fake_trainer(logger), 20, clock)
    assert len(synced) == 4  # steps 5, 10, 15, 20 of 20
    assert [step for step, _ in logger.logged] == [5, 10, 15, 20]
    first, *rest = [metrics for _, metrics in logger.logged]
    assert "train/device/samples_per_sec" not in first  # one time point: no rate yet
    assert first["train/samples"] == 40 and first["train/batches"] == 5
    for metrics in rest:  # 5 steps of 8 patches in 0.5 s
        assert metrics["train/device/samples_per_sec"] == pytest.approx(80.0)
        assert metrics["train/device/batches_per_sec"] == pytest.approx(10.0)
        assert "train/samples_per_sec" not in metrics  # one process


def test_under_ddp_only_rank_zero_counts_and_the_job_rate_scales(monkeypatch, clock):
    synced = []
    monkeypatch.setattr(module.torch.cuda, "synchronize", lambda device=None: synced.append(device))
    other = Logger()
    run_steps(PatchThroughput(window_size=3), fake_trainer(other, rank_zero=False, world_size=2), 15, clock)
    assert not synced and not other.logged
    zero = Logger()
    run_steps(PatchThroughput(window_size=3), fake_trainer(zero, world_size=2), 15, clock)
    metrics = zero.logged[-1][1]  # the rate over steps 5..15
    assert metrics["train/device/samples_per_sec"] == pytest.approx(80.0)
    assert metrics["train/samples_per_sec"] == pytest.approx(160.0)


def test_cpu_training_never_synchronises(monkeypatch, clock):
    monkeypatch.setattr(module.torch.cuda, "synchronize", lambda device=None: pytest.fail("synchronised"))
    logger = Logger()
    run_steps(PatchThroughput(), fake_trainer(logger), 10, clock, device="cpu")
    assert len(logger.logged) == 2


def test_window_needs_two_points():
    with pytest.raises(ValueError, match="window_size"):
        PatchThroughput(window_size=1)


def test_patches_in_batch_reads_every_batch_layout():
    views = torch.zeros(3, 2, 1, 4, 6)
    assert patches_in_batch({"views": views}) == 6
    assert patches_in_batch({"x": views.flatten(0, 1)}) == 6
    assert patches_in_batch({"patch": torch.zeros(5, 1, 4, 6), "target": torch.zeros(5)}) == 5
