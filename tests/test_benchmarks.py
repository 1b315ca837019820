"""Smoke test of `make bench`: every benchmark runs with tiny sizes (``--quick``) and returns well-formed
rows, so the benchmarks cannot rot unnoticed. Nothing here checks speed."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.run import BENCHMARKS, main, run_benchmark
from benchmarks.table import ROW_KEYS, Row, markdown_table

# these start Python subprocesses (spawned cache workers, fresh interpreters for the memory readings)
SLOW = {"cache", "memory"}


def check_rows(rows: list[Row]) -> None:
    assert rows
    for row in rows:
        d = row.to_dict()
        assert tuple(d) == ROW_KEYS
        for key in ("measured", "baseline", "ratio"):
            assert isinstance(d[key], float) and math.isfinite(d[key]) and d[key] > 0, (row.row, key, d[key])
        assert d["met"] in (True, False, None)
        assert (d["met"] is None) == (row.goal is None)
        assert d["row"] and d["unit"]


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in BENCHMARKS]
)
def test_benchmark_runs(name, tmp_path):
    check_rows(run_benchmark(name, quick=True, workdir=tmp_path))


def test_entry_point_writes_table_and_json(tmp_path):
    rows = main(["--quick", "--only", "loss", "--out", str(tmp_path)])
    check_rows(rows)
    text = (tmp_path / "bench.md").read_text()
    assert "| row | measured | baseline | ratio | goal | met? |" in text
    data = json.loads((tmp_path / "bench.json").read_text())
    assert len(data["rows"]) == len(rows)
    assert all(tuple(r) == ROW_KEYS for r in data["rows"])
    assert data["meta"]["quick"] is True


def test_ratio_and_goal():
    faster = Row("t", measured=1.0, baseline=12.0, unit="ms", kind="time", goal=(">=", 10.0))
    assert faster.ratio == 12.0 and faster.met is True
    bigger = Row("s", measured=130.0, baseline=100.0, unit="MB", kind="size", goal=("<=", 1.2))
    assert bigger.ratio == pytest.approx(1.3) and bigger.met is False
    assert Row("r", 2.0, 4.0, "x/s", "rate").met is None
    assert "| t | 1.00 ms | 12.0 ms | 12.00 | ≥ 10 | yes |" in markdown_table([faster])


def test_the_gpu_script_runs_quick_on_any_device(tmp_path, capsys):
    from benchmarks import gpu

    gpu.main(["--quick", "--out", str(tmp_path / "gpu.json")])
    results = json.loads((tmp_path / "gpu.json").read_text())
    (row,) = results["rows"]
    assert (
        row["encoder"] == "vgglike" and row["loader_patches_per_s"] > 0 and row["resident_patches_per_s"] > 0
    )
    assert row["memmap_patches_per_s"] > 0
    assert results["precision"] in ("bf16-mixed", "16-mixed", "32-true")
    assert "| vgglike |" in capsys.readouterr().out
