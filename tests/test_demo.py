"""`make demo`'s runner end to end on tiny data, twice: the second call starts afresh."""

from pathlib import Path

import pytest

from ser_ssl.demo import run

pytestmark = pytest.mark.slow


def test_the_demo_runs_and_runs_again(tmp_path, tiny_data):
    extra = [
        "--data.init_args.manifest", str(tiny_data),
        "--data.init_args.cache_dir", str(tmp_path / "cache"),
        "--data.init_args.batch_size", "8",
        "--data.init_args.num_workers", "0",
        "--trainer.max_epochs", "1",
        "--trainer.enable_progress_bar", "false",
        "--wandb", "disabled",
    ]  # fmt: skip
    for _ in range(2):
        results = run(Path("configs"), tmp_path / "demo", extra)
        assert set(results) == {"pretrained (SSL)", "random init"}
        assert all(0.0 <= r["test/bal_acc"] <= 1.0 for r in results.values())
    assert (tmp_path / "demo" / "demo_results.json").is_file()
