"""The results table: its summary math, and a real run of every main row and one ablation on tiny data
(two seeds) that is then read back, not rerun, and resumes an interrupted pretraining."""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

import pytest

from ser_ssl import results
from ser_ssl.errors import ConfigError, MissingFileError
from tests.conftest import SMALL_ENCODER

TINY = "--data.init_args.batch_size 8 --data.init_args.num_workers 0 --trainer.max_epochs 1"


def line(row: str, seed: int, value: float, group: str = "main") -> dict:
    return {"row": row, "label": row.upper(), "group": group, "seed": seed, "value": value,
            "pretrain_minutes": 2.0, "minutes": 1.0, "commands": [f"ser-ssl fit {row}"]}  # fmt: skip


def test_summary_is_mean_and_sample_std_per_row_in_order():
    summary = results.summarize([line("b", 0, 0.5), line("a", 0, 0.9), line("b", 1, 0.7)])
    assert [r["row"] for r in summary] == ["b", "a"]
    assert summary[0]["mean"] == pytest.approx(0.6) and summary[0]["std"] == pytest.approx(0.1414214)
    assert summary[1]["seeds"] == 1 and summary[1]["std"] is None
    table = results.markdown(summary, "test/bal_acc").splitlines()
    assert table[2] == "| B | 0.600 ± 0.141 | 2 | 2.0 | 1.0 |"
    assert table[3] == "| A | 0.900 ± n/a | 1 | 2.0 | 1.0 |"
    assert "  ser-ssl fit a" in table


def test_every_views_preset_is_an_ablation_row():
    presets = {p.stem for p in Path("configs/views").glob("*.yaml")}
    assert presets == set(results.ABLATIONS)
    assert {r.name for r in results.ROWS} >= {"logmel", "random", "ssl", "finetune", "scratch"}


def test_a_run_made_with_other_settings_is_refused(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("trainer:\n  max_epochs: 1\n")
    first = results.fingerprint(["--config", str(config)])
    assert results.Runner._done(tmp_path / "run", first) is None  # new: marked, nothing to read
    assert results.Runner._done(tmp_path / "run", first) is None  # same settings: still welcome
    config.write_text("trainer:\n  max_epochs: 2\n")
    changed = results.fingerprint(["--config", str(config)])
    assert changed != first and changed != results.fingerprint(["--config", str(config)], upstream=first)
    with pytest.raises(ConfigError, match="other settings"):
        results.Runner._done(tmp_path / "run", changed)


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        results.main(["--manifest", str(tmp_path / "nope.csv"), "--out", str(tmp_path)])


@pytest.fixture(scope="module")
def table(tmp_path_factory, tiny_data):
    out = tmp_path_factory.mktemp("results")
    argv = [
        "--manifest", str(tiny_data), "--out", str(out), "--seeds", "0", "1",
        "--rows", "logmel", "random", "ssl", "finetune", "scratch", "finetune_10pct", "ablation_mixback_only",
        "--pretrain-args", f"{TINY} --data.init_args.cache_dir {out / 'cache'} " + shlex.join(SMALL_ENCODER),
        "--downstream-args", f"{TINY} --data.init_args.cache_dir {out / 'cache'}",
    ]  # fmt: skip
    return out, argv, results.main(argv)


@pytest.mark.slow
def test_table_has_every_row_and_seed_with_real_metrics(table):
    out, _, summary = table
    assert [r["row"] for r in summary] == [
        "logmel",
        "random",
        "ssl",
        "finetune",
        "scratch",
        "finetune_10pct",
        "ablation_mixback_only",
    ]
    with (out / "results.csv").open() as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == 14 and {line["seed"] for line in lines} == {"0", "1"}
    for line_ in lines:
        metrics = json.loads((out / line_["row"] / f"seed{line_['seed']}" / "test_metrics.json").read_text())
        assert float(line_["value"]) == pytest.approx(metrics["test/bal_acc"])
        assert (line_["pretrain_minutes"] == "") == (line_["row"] in {"logmel", "random", "scratch"})
    assert all(r["seeds"] == 2 and r["std"] is not None for r in summary)
    markdown = (out / "results.md").read_text()
    assert "mix-back only" in markdown and "--config configs/logmel_stats.yaml" in markdown
    assert (out / "ablations.png").read_bytes()[:4] == b"\x89PNG"
    # the two seeds pretrained separately; the random row probed the default variant's architecture
    # (with the pretraining's overrides), built without a checkpoint
    pretrained = {
        str(p.parents[1].relative_to(out)) for p in out.glob("pretrain/*/seed*/checkpoints/last.ckpt")
    }
    assert pretrained == {f"pretrain/{v}/seed{s}" for v in ("default", "mixback_only") for s in (0, 1)}
    command = (out / "random" / "seed1" / "command.txt").read_text()
    assert "--model.init_args.encoder_checkpoint null" in command and "--seed_everything 1" in command
    first_pretraining = (out / "pretrain" / "default" / "seed0" / "command.txt").stat().st_mtime
    assert (out / "random" / "seed1" / "result.json").stat().st_mtime <= first_pretraining
    assert '"channels": [8, 16]' in command and "last.ckpt" not in command
    command = (out / "ssl" / "seed1" / "command.txt").read_text()
    assert "pretrain/default/seed1/checkpoints/last.ckpt" in command and "--seed_everything 1" in command
    # the label-efficiency row fine-tunes the same pretraining on a tenth of the labels
    command = (out / "finetune_10pct" / "seed0" / "command.txt").read_text()
    assert "pretrain/default/seed0/checkpoints/last.ckpt" in command
    assert "--data.init_args.label_fraction 0.1" in command


@pytest.mark.slow
def test_finished_runs_are_read_back_and_a_cut_pretraining_resumes(table, monkeypatch):
    out, argv, summary = table

    from ser_ssl.cli import cli_main

    def no_runs(args):  # printing the config (the random row's architecture) is not a run
        if args[-1] != "--print_config":
            raise AssertionError(f"reran {args}")
        return cli_main(args)

    monkeypatch.setattr("ser_ssl.cli.cli_main", no_runs)
    assert results.main(argv) == summary

    monkeypatch.undo()
    root = out / "pretrain" / "default" / "seed1"
    [[start, end]] = json.loads((root / "attempts.json").read_text())
    assert end is not None  # a finished sitting is closed
    # as if cut after its checkpoint: no record, the sitting still open
    (root / "result.json").unlink()
    (root / "attempts.json").write_text(json.dumps([[start, None]]))
    checkpoint_time = (root / "checkpoints" / "last.ckpt").stat().st_mtime
    results.main([*argv[:4], "--seeds", "1", "--rows", "ssl", *argv[-4:]])
    command = (root / "command.txt").read_text()
    assert command.rstrip().endswith("--ckpt_path last")
    # the table's minutes add the cut sitting's time up to its checkpoint to the resumed one's
    (first, second) = json.loads((root / "attempts.json").read_text())
    assert first == [start, checkpoint_time] and second[1] is not None
    record = json.loads((root / "result.json").read_text())
    resumed = (second[1] - second[0]) / 60
    assert record["attempts"] == 2
    assert record["minutes"] == pytest.approx((checkpoint_time - start) / 60 + resumed, abs=0.02)


def test_unparsable_pretraining_options_are_a_clear_error():
    with pytest.raises(ConfigError, match="do not parse"):
        results.encoder_config(["--config", "configs/pretrain.yaml", "--trainer.no_such_option", "1"])


def test_a_cut_attempt_counts_until_its_last_checkpoint():
    done = [10.0, 70.0]
    assert results.close_attempts([done, [100.0, None]], checkpoint_time=160.0) == [done, [100.0, 160.0]]
    # cut before it saved: the checkpoint is an earlier sitting's, so this one counts nothing
    assert results.close_attempts([done, [100.0, None]], checkpoint_time=70.0) == [done, [100.0, 100.0]]
    assert results.close_attempts([[100.0, None]], checkpoint_time=None) == [[100.0, 100.0]]
