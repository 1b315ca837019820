"""configs/gpu.yaml runs end to end on the CPU: device cache, auto precision, the views figure."""

from pathlib import Path

import pytest
import torch

from ser_ssl.cli import cli_main
from tests.conftest import SMALL_ENCODER, tiny_args

pytestmark = pytest.mark.slow


def test_the_gpu_preset_pretrains_with_the_features_on_the_device(tmp_path, tiny_data):
    args = tiny_args("pretrain", tmp_path / "run", tiny_data, tmp_path / "cache") + SMALL_ENCODER
    args[args.index("--data.init_args.batch_size") + 1] = "16"  # tiny_args' values win over the preset
    run = cli_main(
        [
            "fit",
            *args[:2],
            "--config",
            "configs/gpu.yaml",
            *args[2:],
            "--data.init_args.num_workers",
            "0",
            "--trainer.accelerator",
            "cpu",
            "--trainer.max_steps",
            "2",
            "--trainer.limit_val_batches",
            "0",
        ]
    )
    dm = run.trainer.datamodule
    assert dm.batch_size == 16 and dm.device_cache == "auto"
    assert dm.train_set.deliver == "draws" and dm._device_source is not None  # patches cut on the device
    assert run.trainer.global_step == 2 and torch.isfinite(run.trainer.callback_metrics["train/loss"])
    assert run.model.lr_scaling == "sqrt"
    views = list(Path(run.trainer.logger.log_dir).glob("images/views_*.png"))
    assert views  # ViewImages drew its batch through the device path
