"""A row of configs/paper/ runs end to end through the CLI: the paper's VGG-like CNN pretrained with the
paper's optimiser, front end and views, then its linear probe fitted and tested, on the built-in data
in place of FSDnoisy18k (the row's data preset swapped for the tiny manifest)."""

import json
from pathlib import Path

import pytest
import torch

from ser_ssl.cli import cli_main
from ser_ssl.models import PaperVGG
from tests.conftest import tiny_args

SHORT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]


def chain(task: str, root: Path, data: Path, cache: Path, *configs: str) -> list[str]:
    args = tiny_args(task, root, data, cache)
    layered = [a for c in configs for a in ("--config", f"configs/{c}.yaml")]
    return args[:2] + layered + args[2:]


@pytest.mark.slow
def test_paper_vgg_row_pretrains_probes_and_tests(tiny_data, tmp_path):
    cache = tmp_path / "cache"
    pre = cli_main(
        [
            "fit",
            *chain(
                "pretrain", tmp_path / "pre", tiny_data, cache,
                "encoders/paper_vgg", "optim/paper_sgd", "data/paper_front_end", "paper/pretrain_vgg",
            ),
            *SHORT,
            "--model.init_args.milestones", "[0.65, 0.85]",
        ]
    )  # fmt: skip
    assert type(pre.model.encoder) is PaperVGG and pre.model.mixback.shared_lambda
    assert pre.datamodule.distinct_backgrounds and pre.datamodule.features.window == "hamming"
    assert type(pre.trainer.optimizers[0]) is torch.optim.SGD
    assert torch.isfinite(pre.trainer.callback_metrics["train/loss"])
    encoder = tmp_path / "pre" / "checkpoints" / "last.ckpt"

    probe_args = [
        *chain(
            "probe", tmp_path / "probe", tiny_data, cache,
            "data/paper_front_end", "paper/downstream", "paper/probe_noisy_vgg",
        ),
        "--model.init_args.encoder_checkpoint", str(encoder),
    ]  # fmt: skip
    probe = cli_main(["fit", *probe_args, *SHORT])
    assert probe.model.hparams.lr == 0.1 and type(probe.model.encoder) is PaperVGG
    assert probe.datamodule.eval_hop_frames == 50
    cli_main(["test", *probe_args, "--ckpt_path", str(tmp_path / "probe" / "checkpoints" / "last.ckpt")])
    metrics = json.loads((tmp_path / "probe" / "test_metrics.json").read_text())
    assert 0.0 <= metrics["test/bal_acc"] <= 1.0
