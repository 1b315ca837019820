"""Cross-validation over official folds: the summary math, the root folder, and a real 2-fold run of
configs/scratch.yaml (no pretraining checkpoint) on a tiny fake ESC-50 tree."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ser_ssl import folds
from tests.conftest import SMALL_ENCODER
from tests.data.test_sources import wav, write_csv


def test_summary_has_mean_and_sample_std_and_a_markdown_row_per_fold():
    summary = folds.summarize({1: {"test/acc": 0.5, "test/f1": 0.2}, 2: {"test/acc": 0.7, "test/f1": 0.4}})
    assert summary["mean"] == pytest.approx({"test/acc": 0.6, "test/f1": 0.3})
    assert summary["std"] == pytest.approx({"test/acc": 0.1414214, "test/f1": 0.1414214})  # n - 1
    assert folds.markdown_table(summary).splitlines() == [
        "| fold | acc | f1 |",
        "|---|---|---|",
        "| 1 | 0.5000 | 0.2000 |",
        "| 2 | 0.7000 | 0.4000 |",
        "| mean ± std | 0.6000 ± 0.1414 | 0.3000 ± 0.1414 |",
    ]
    one = folds.summarize({3: {"test/acc": 0.5}})
    assert one["std"] == {"test/acc": None} and "0.5000 ± n/a" in folds.markdown_table(one)


def test_root_is_the_runs_default_root_dir(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("trainer:\n  default_root_dir: runs/from_config\n")
    assert folds.default_root(["--config", "configs/probe.yaml"]) == Path("runs/probe")
    assert folds.default_root(["--config", "configs/probe.yaml", "--config", str(config)]) == Path(
        "runs/from_config"
    )
    assert folds.default_root(["--config", str(config), "--trainer.default_root_dir=x/y"]) == Path("x/y")
    assert folds.default_root([]) == Path("runs/folds")
    options, rest = folds.parse_args(["--config", "a.yaml", "--folds", "1", "2", "--trainer.max_epochs", "3"])
    assert options.folds == [1, 2] and options.root is None
    assert rest == ["--config", "a.yaml", "--trainer.max_epochs", "3"]


def fake_esc50(root: Path) -> Path:
    """The ESC-50 layout with 2 classes x 2 takes in each of the 5 folds (0.1 s clips)."""
    rows = []
    for fold in range(1, 6):
        for target, category in enumerate(["dog", "rain"]):
            src = 1000 * fold + target
            for take in "AB":
                name = f"{fold}-{src}-{take}-{target}.wav"
                rows.append([name, fold, target, category, "True", src, take])
                wav(root / "audio" / name, seed=src + ord(take))
    header = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    write_csv(root / "meta" / "esc50.csv", rows, header)
    return root


@pytest.mark.slow
def test_two_folds_of_scratch_training_report_mean_and_std(tmp_path, capsys):
    esc50 = fake_esc50(tmp_path / "ESC-50-master")
    root = tmp_path / "cv"
    argv = [
        "--config",
        "configs/scratch.yaml",
        "--config",
        "configs/data/esc50.yaml",
        "--data.init_args.source.init_args.root",
        str(esc50),
        "--data.init_args.cache_dir",
        str(tmp_path / "cache"),
        "--data.init_args.patch_frames",
        "16",
        "--data.init_args.batch_size",
        "8",
        "--data.init_args.num_workers",
        "0",
        "--trainer.max_epochs",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--wandb",
        "disabled",
        *SMALL_ENCODER,
        "--folds",
        "1",
        "2",
        "--root",
        str(root),
    ]
    summary = folds.main(argv)
    assert set(summary["folds"]) == {"1", "2"}
    for k in (1, 2):
        fold = root / f"fold_{k}"
        assert (fold / "checkpoints" / "last.ckpt").is_file()
        metrics = json.loads((fold / "test_metrics.json").read_text())
        assert summary["folds"][str(k)] == metrics
        assert {"test/bal_acc", "test/acc", "test/f1"} <= set(metrics)
        with (fold / "confusion_test.csv").open(newline="") as f:
            confusion = list(csv.reader(f))
        assert confusion[0] == ["true \\ predicted", "dog", "rain"]
        assert sum(int(v) for row in confusion[1:] for v in row[1:]) == 4  # fold k's 4 test clips
    assert json.loads((root / "folds.json").read_text()) == summary
    table = (root / "folds.md").read_text()
    assert table in capsys.readouterr().out
    assert table.splitlines()[0] == "| fold | acc | bal_acc | f1 |"
    assert table.splitlines()[-1].startswith("| mean ± std | ")


def test_a_failing_fold_keeps_the_table_of_the_folds_before_it(tmp_path, monkeypatch):
    from ser_ssl.errors import ConfigError

    def fit_and_test(args, root, what):
        if what == "fold 2":
            raise ConfigError("fold 2 went wrong")
        return {"test/acc": 0.5}, {}

    monkeypatch.setattr(folds, "fit_and_test", fit_and_test)
    with pytest.raises(ConfigError, match="fold 2 went wrong"):
        folds.main(["--folds", "1", "2", "3", "--root", str(tmp_path)])
    summary = json.loads((tmp_path / "folds.json").read_text())
    assert summary["folds"] == {"1": {"test/acc": 0.5}} and summary["failed_fold"] == 2
    table = (tmp_path / "folds.md").read_text().splitlines()
    assert table[2] == "| 1 | 0.5000 |" and table[-1].startswith("Incomplete: fold 2 failed")
