"""The README's custom-encoder example works as written: pretrain with it, then probe it."""

import re
import sys
from pathlib import Path

import pytest
import torch

from ser_ssl.cli import cli_main
from tests.conftest import tiny_args

pytestmark = pytest.mark.slow


def readme_python_blocks() -> list[str]:
    text = (Path(__file__).parents[1] / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_custom_encoder_from_the_readme_pretrains_and_probes(tmp_path, tiny_data, monkeypatch):
    (block,) = [b for b in readme_python_blocks() if "class TinyEncoder" in b]
    (tmp_path / "my_encoder.py").write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_encoder", raising=False)
    args = tiny_args("pretrain", tmp_path / "pretrain", tiny_data, tmp_path / "cache")
    args += ["--model.encoder", "my_encoder.TinyEncoder", "--model.encoder.init_args.embed_dim", "64"]
    cli = cli_main(["fit", *args, "--trainer.max_steps", "2"])
    assert type(cli.model.encoder).__name__ == "TinyEncoder" and cli.model.encoder.embed_dim == 64
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    probe_args = tiny_args("probe", tmp_path / "probe", tiny_data, tmp_path / "cache")
    probe_args += ["--model.encoder_checkpoint", str(tmp_path / "pretrain" / "checkpoints" / "last.ckpt")]
    probe = cli_main(["fit", *probe_args, "--trainer.max_epochs", "1"])
    assert type(probe.model.encoder).__name__ == "TinyEncoder"
    assert probe.model.classifier[-1].in_features == 64
