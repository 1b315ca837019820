"""What a probe refuses, through the CLI as a user meets it: data with other classes than its
checkpoint, log-mel settings other than the encoder's pretraining, evaluation clips the encoder was
pretrained on, and a loss that is no longer finite."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from ser_ssl.cli import cli_main, main
from ser_ssl.errors import ConfigError
from ser_ssl.tasks.base import NonFiniteLossError
from tests.conftest import tiny_args

pytestmark = pytest.mark.slow


def probe_args(pretrained: Path, root: Path, manifest: Path) -> list[str]:
    args = tiny_args("probe", root, manifest, pretrained / "cache")
    args += ["--model.init_args.encoder_checkpoint", str(pretrained / "pretrain/checkpoints/last.ckpt")]
    return args + ["--trainer.max_epochs", "1"]


def edited_manifest(tiny_data: Path, out: Path, edit) -> Path:
    """A copy of the tiny manifest (absolute file names) with ``edit(row)`` applied to every row."""
    rows = list(csv.DictReader(tiny_data.open()))
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow(edit({**row, "filename": str(tiny_data.parent / row["filename"])}))
    return out


def test_a_trained_probe_refuses_test_data_with_other_classes(pretrained, tiny_data, tmp_path):
    root = tmp_path / "probe"
    cli_main(["fit", *probe_args(pretrained, root, tiny_data)])
    renamed = edited_manifest(
        tiny_data, tmp_path / "renamed.csv", lambda r: {**r, "label": r["label"].replace("tone", "beep")}
    )
    with pytest.raises(
        ConfigError, match=r"only in the checkpoint: \['tone'\], only in the data: \['beep'\]"
    ):
        cli_main(["test", *probe_args(pretrained, root, renamed)])
    assert not (root / "test_metrics.json").exists()
    cli_main(["test", *probe_args(pretrained, root, tiny_data)])  # the same classes pass
    assert (root / "test_metrics.json").is_file()


def test_a_probe_refuses_log_mels_other_than_the_pretraining_ones_before_any_cache(
    pretrained, tiny_data, tmp_path, monkeypatch
):
    args = probe_args(pretrained, tmp_path / "probe", tiny_data) + [
        "--data.init_args.features.f_max",
        "8000",
    ]
    args[args.index("--data.init_args.cache_dir") + 1] = str(tmp_path / "cache")
    with pytest.raises(ConfigError, match="pretrained on log-mels with f_max 10500.0, not 8000.0; set"):
        cli_main(["fit", *args])
    assert not (tmp_path / "cache").exists()  # refused before the features were computed
    # n_mels also sizes the probe's input statistics: refused as it is built, in one line
    args[-1:] = ["10500", "--data.init_args.features.n_mels", "64"]
    monkeypatch.setattr("sys.argv", ["ser-ssl", "fit", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert str(exit_info.value.code).startswith(
        "ser-ssl: error: the encoder was pretrained on log-mels with n_mels 96, not 64"
    )
    assert not (tmp_path / "cache").exists()


def test_a_probe_refuses_to_test_on_clips_the_encoder_was_pretrained_on(pretrained, tiny_data, tmp_path):
    moved: list[str] = []

    def train_to_test(row: dict) -> dict:
        if row["split"] == "train" and len(moved) < 3 and row["label"] not in moved:
            moved.append(row["label"])
            return {**row, "split": "test"}
        return row

    leaky = edited_manifest(tiny_data, tmp_path / "leaky.csv", train_to_test)
    root = tmp_path / "probe"
    with pytest.raises(
        ConfigError, match=r"3 of the 27 clips of split 'test' were in the encoder's pretraining"
    ):
        cli_main(["fit", *probe_args(pretrained, root, leaky)])
    assert not (root / "checkpoints").exists()
    allowed = probe_args(pretrained, root, leaky) + ["--model.init_args.allow_pretraining_overlap", "true"]
    cli_main(["fit", *allowed])
    assert (root / "checkpoints" / "last.ckpt").is_file()


def test_a_probe_whose_loss_is_no_longer_finite_stops_with_one_clear_error(pretrained, tiny_data, tmp_path):
    # an encoder checkpoint with one non-finite weight (what an fp16 overflow leaves) gives NaN embeddings
    ckpt = torch.load(pretrained / "pretrain/checkpoints/last.ckpt", weights_only=True)
    name = next(k for k in ckpt["state_dict"] if k.startswith("encoder.") and k.endswith("weight"))
    ckpt["state_dict"][name].view(-1)[0] = float("nan")
    broken = tmp_path / "broken.ckpt"
    torch.save(ckpt, broken)
    args = probe_args(pretrained, tmp_path / "probe", tiny_data) + [
        "--model.init_args.finite_check_every_n_steps",
        "2",
    ]
    args[args.index("--model.init_args.encoder_checkpoint") + 1] = str(broken)
    with pytest.raises(NonFiniteLossError, match="the training loss became nan at step 0 "):
        cli_main(["fit", *args])
    assert not list((tmp_path / "probe").rglob("*.ckpt"))
