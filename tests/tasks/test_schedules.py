"""The learning-rate schedules of BaseTask: warm-up, then cosine decay or multistep (the paper's)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ser_ssl.errors import ConfigError
from ser_ssl.experiments import resolved_config
from tests.tasks.test_tasks import small_simclr

CONFIGS = Path(__file__).parents[2] / "configs"


def lrs_of(monkeypatch, steps_per_epoch: int = 10, epochs: int = 5, **kwargs) -> list[float]:
    """The learning rate of each optimiser step, from ``configure_optimizers`` under a fake trainer."""

    class Trainer:
        estimated_stepping_batches = steps_per_epoch * epochs
        max_epochs = epochs

    model = small_simclr(optimizer="sgd", lr=1.0, **kwargs)
    monkeypatch.setattr(type(model), "trainer", property(lambda self: Trainer()))
    config = model.configure_optimizers()
    assert config["lr_scheduler"]["interval"] == "step"
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(steps_per_epoch * epochs):
        lrs.append(opt.param_groups[0]["lr"])
        assert all(g["lr"] == lrs[-1] for g in opt.param_groups)
        opt.step()
        sched.step()
    return lrs


def test_multistep_decays_by_gamma_at_each_milestone(monkeypatch):
    lrs = lrs_of(monkeypatch, warmup_epochs=0, schedule="multistep", milestones=[2, 4], gamma=0.1)
    assert len(lrs) == 50
    assert lrs[:20] == pytest.approx([1.0] * 20)
    assert lrs[20:40] == pytest.approx([0.1] * 20)
    assert lrs[40:] == pytest.approx([0.01] * 10)
    assert lrs[19] == pytest.approx(1.0) and lrs[20] == pytest.approx(0.1)
    assert lrs[39] == pytest.approx(0.1) and lrs[40] == pytest.approx(0.01)


def test_multistep_takes_fractional_milestones(monkeypatch):
    lrs = lrs_of(monkeypatch, warmup_epochs=0, schedule="multistep", milestones=[0.5, 2.5], gamma=0.5)
    assert lrs[4] == pytest.approx(1.0) and lrs[5] == pytest.approx(0.5)
    assert lrs[24] == pytest.approx(0.5) and lrs[25] == pytest.approx(0.25)


def test_warm_up_comes_before_the_milestones(monkeypatch):
    lrs = lrs_of(monkeypatch, warmup_epochs=1, schedule="multistep", milestones=[2, 4], gamma=0.1)
    ramp = [1e-3 + (1 - 1e-3) * step / 10 for step in range(10)]  # LinearLR from 1e-3 over 10 steps
    assert lrs[:10] == pytest.approx(ramp)
    assert lrs[10:20] == pytest.approx([1.0] * 10)  # milestones count from the start, not the warm-up
    assert lrs[19] == pytest.approx(1.0) and lrs[20] == pytest.approx(0.1)
    assert lrs[39] == pytest.approx(0.1) and lrs[40] == pytest.approx(0.01)


def test_cosine_is_the_default_and_unchanged(monkeypatch):
    lrs = lrs_of(monkeypatch, warmup_epochs=1)
    assert lrs[0] == pytest.approx(1e-3) and lrs[5] == pytest.approx(1e-3 + (1 - 1e-3) * 0.5)
    assert lrs[10] == pytest.approx(1.0)  # the peak, then cosine over the remaining 40 steps
    assert lrs[30] == pytest.approx(0.5)
    assert lrs[49] == pytest.approx(0.5 * (1 + math.cos(math.pi * 39 / 40)))


def test_milestones_past_the_run_warn(monkeypatch):
    with pytest.warns(UserWarning, match="model.init_args.milestones"):
        lrs = lrs_of(monkeypatch, warmup_epochs=0, schedule="multistep", milestones=[325, 425])
    assert lrs == pytest.approx([1.0] * 50)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"schedule": "multistep"}, "model.init_args.milestones"),
        ({"schedule": "multistep", "milestones": []}, "model.init_args.milestones"),
        ({"schedule": "multistep", "milestones": [4, 2]}, "model.init_args.milestones"),
        ({"schedule": "multistep", "milestones": [-1, 2]}, "model.init_args.milestones"),
        ({"schedule": "multistep", "milestones": [0.5, 2], "warmup_epochs": 1}, "model.init_args.milestones"),
        ({"schedule": "multistep", "milestones": [2], "gamma": 0.0}, "model.init_args.gamma"),
        ({"schedule": "multistep", "milestones": [2], "gamma": -0.1}, "model.init_args.gamma"),
        ({"milestones": [2]}, "model.init_args.milestones"),  # milestones without multistep
        ({"schedule": "step"}, "model.init_args.schedule"),
    ],
)
def test_bad_schedule_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as raised:
        small_simclr(**kwargs)
    assert "\n" not in str(raised.value)


def test_the_paper_sgd_preset_parses_on_pretrain():
    args = ["--config", str(CONFIGS / "pretrain.yaml"), "--config", str(CONFIGS / "optim/paper_sgd.yaml")]
    init = resolved_config(args)["model"]["init_args"]
    assert init["schedule"] == "multistep"
    assert init["milestones"] == [325, 425] and init["gamma"] == 0.1
    assert init["optimizer"] == "sgd" and init["lr"] == 0.03 and init["warmup_epochs"] == 0


@pytest.mark.parametrize("max_epochs", [-1, 25])
def test_a_run_ended_by_max_steps_warms_up_for_one_epoch_then_decays_to_zero(monkeypatch, max_epochs):
    class Trainer:  # 4 optimiser steps an epoch (8 batches, 2 accumulated), 10 steps in all
        estimated_stepping_batches = 10
        max_steps = 10
        num_training_batches = 8
        accumulate_grad_batches = 2

    Trainer.max_epochs = max_epochs
    model = small_simclr(optimizer="sgd", lr=1.0, warmup_epochs=1)
    monkeypatch.setattr(type(model), "trainer", property(lambda self: Trainer()))
    config = model.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([1e-3 + (1 - 1e-3) * step / 4 for step in range(4)])
    assert lrs[4] == pytest.approx(1.0) and lrs[4:] == sorted(lrs[4:], reverse=True)
    assert lrs[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 6)))  # 5 of 6 cosine steps
