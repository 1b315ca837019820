"""`make bench`: every benchmark in one table, each figure a ratio against a baseline from the same run.

Prints a Markdown table (row, measured, baseline, ratio, goal, met?) with notes on how each row was
measured, and writes it to ``runs/bench/bench.md`` and ``runs/bench/bench.json``. ``--quick`` runs
tiny sizes (what ``tests/test_benchmarks.py`` does): it checks the code, not the speed; ``--only``
picks benchmarks.

Run as ``python -m benchmarks.run`` from the repository root. The glibc malloc variables the
Makefile exports must be set before Python starts, so when they are missing this re-executes itself
with them set. Benchmark modules are imported only when run, after the environment is set.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.table import Row, markdown_table, notes_list, write_json

MALLOC = {"MALLOC_MMAP_THRESHOLD_": "1000000000", "MALLOC_TRIM_THRESHOLD_": "1000000000"}

#: Benchmarks in table order: name -> module with ``run(quick, workdir) -> list[Row]``.
BENCHMARKS: dict[str, str] = {
    "cache": "benchmarks.cache_build",
    "memory": "benchmarks.memory",
    "sampling": "benchmarks.sampling",
    "views": "benchmarks.views",
    "augment": "benchmarks.augment",
    "loss": "benchmarks.loss",
    "lightning": "benchmarks.lightning_step",
    "workers": "benchmarks.workers",
    "probe": "benchmarks.probe",
    "step": "benchmarks.train_step",
}

LEGEND = (
    "ratio: speed-up of measured over baseline (time rows: baseline ÷ measured; rate rows: measured ÷ "
    "baseline); memory and size rows: measured ÷ baseline. Goals are conditions on the ratio."
)


def run_benchmark(name: str, quick: bool, workdir: Path) -> list[Row]:
    """One benchmark's rows, warnings silenced (Lightning's advice on workers and the like)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(BENCHMARKS[name]).run(quick=quick, workdir=workdir)


def run_all(names: list[str], quick: bool, workdir: Path, log: Callable[[str], None] = print) -> list[Row]:
    """Run the named benchmarks in table order, each in its own folder under ``workdir``."""
    rows: list[Row] = []
    for name in [n for n in BENCHMARKS if n in names]:
        start = time.perf_counter()
        log(f"bench: {name} ...")
        rows += run_benchmark(name, quick, workdir / name)
        log(f"bench: {name} done in {time.perf_counter() - start:.1f} s")
    return rows


def environment() -> dict[str, object]:
    """What the numbers depend on: CPU, threads, torch version, malloc settings."""
    import torch

    cpu = "unknown"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
        "malloc_trim_threshold": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
    }


def report(rows: list[Row], meta: dict) -> str:
    """The Markdown document: header, legend, table and notes."""
    env = meta["environment"]
    malloc = "set" if env["malloc_mmap_threshold"] else "NOT set"
    load = meta["load_average_1min"]
    header = (
        f"# ser-ssl benchmarks{' (quick)' if meta['quick'] else ''}\n\n"
        f"{meta['date']}; {env['cpu']}, {env['cores']} cores, {env['torch_threads']} torch threads, "
        f"torch {env['torch']}, glibc malloc thresholds {malloc}; wall time {meta['wall_s']:.0f} s; "
        f"load average {load[0]:.1f} at the start, {load[1]:.1f} at the end (other processes on these "
        "cores slow both sides of a ratio, not always alike)."
    )
    if max(load) > env["cores"]:
        header += (
            "\n\n**The machine was busy (load average above the core count)**: torch's threads then wait "
            "for each other whenever a core is taken, which slows many small operations far more than a "
            "few large ones, so ratios shift too. Rerun on an idle machine before quoting a figure."
        )
    notes = f"## How each row was measured\n\n{notes_list(rows)}\n"
    return f"{header}\n\n{LEGEND}\n\n{markdown_table(rows)}\n\n{notes}"


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the code, not the speed")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="folder for bench.md/json")
    args = parser.parse_args(argv)
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ser-ssl-bench-") as tmp:
        rows = run_all(args.only, args.quick, Path(tmp), log=lambda m: print(m, file=sys.stderr, flush=True))
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "benchmarks": [n for n in BENCHMARKS if n in args.only],
        "wall_s": time.perf_counter() - start,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "environment": environment(),
    }
    text = report(rows, meta)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.md").write_text(text)
    write_json(args.out / "bench.json", rows, meta)
    return rows


if __name__ == "__main__":
    if any(os.environ.get(k) != v for k, v in MALLOC.items()):
        argv = [sys.executable, "-m", "benchmarks.run", *sys.argv[1:]]
        os.execve(sys.executable, argv, {**os.environ, **MALLOC})
    os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is imported: no progress bars in the table
    main()
