"""configs/gpu.yaml runs end to end on the CPU: device cache, auto precision, the views figure."""

from pathlib import Path

import pytest
import torch

from ser_ssl.cli import cli_main
from ser_ssl.data.datamodules import AudioDataModule
from tests.conftest import SMALL_ENCODER, tiny_args

pytestmark = pytest.mark.slow


def gpu_preset_run(tmp_path: Path, tiny_data: Path, *extra: str):
    """Two steps of ``configs/gpu.yaml`` pretraining on the CPU."""
    args = tiny_args("pretrain", tmp_path / "run", tiny_data, tmp_path / "cache") + SMALL_ENCODER
    args[args.index("--data.init_args.batch_size") + 1] = "16"  # tiny_args' values win over the preset
    return cli_main(
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
            *extra,
        ]
    )


def test_the_gpu_preset_pretrains_with_the_features_on_the_device(tmp_path, tiny_data):
    run = gpu_preset_run(tmp_path, tiny_data)
    dm = run.trainer.datamodule
    assert dm.batch_size == 16 and dm.device_cache == "auto"
    assert dm.train_set.deliver == "draws" and dm._device_source is not None  # patches cut on the device
    assert run.trainer.global_step == 2 and torch.isfinite(run.trainer.callback_metrics["train/loss"])
    assert run.model.lr_scaling == "sqrt"
    views = list(Path(run.trainer.logger.log_dir).glob("images/views_*.png"))
    assert views  # ViewImages drew its batch through the device path


def test_without_the_device_cache_a_gpu_run_trains_on_frames_converted_after_the_transfer(
    tmp_path, tiny_data, monkeypatch
):
    """What a GPU run does with a cache too large for it, on the CPU: the data module's choice for a
    non-CPU device is forced, so the loader delivers float16 frames and the transfer converts them."""
    monkeypatch.setattr(AudioDataModule, "deliver", lambda self, rows: "frames")
    run = gpu_preset_run(tmp_path, tiny_data, "--data.init_args.device_cache", "never")
    assert run.trainer.datamodule.train_set.deliver == "frames"
    assert run.trainer.global_step == 2 and torch.isfinite(run.trainer.callback_metrics["train/loss"])
    assert list(Path(run.trainer.logger.log_dir).glob("images/views_*.png"))  # ViewImages converted too
