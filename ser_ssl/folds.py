"""Cross-validation over a data set's official folds (ESC-50: 5, UrbanSound8K: 10) in one command.

For each fold ``k`` it runs ``ser-ssl fit`` then ``ser-ssl test`` with the given arguments plus
``--data.init_args.source.init_args.test_fold k`` and ``--trainer.default_root_dir <root>/fold_k``,
collects each ``test_metrics.json``, prints a Markdown table (one row per fold, then mean ± std)
and writes ``<root>/folds.json`` and ``<root>/folds.md``::

    python -m ser_ssl.folds --config configs/probe.yaml --config configs/data/esc50.yaml \\
        --data.init_args.source.init_args.root /path/to/ESC-50-master --folds 1 2 3 4 5

``--root`` defaults to the run's ``trainer.default_root_dir`` (the last one given on the command
line or in a ``--config`` file). The standard deviation is the sample one (n - 1). Folds run one
after the other in this process; a source with ``val_fold`` set must not use it as a test fold. When a
fold fails, the table of the folds finished before it is still written.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from ser_ssl.experiments import cell, console, fit_and_test, mean_std, resolved_config

FOLD_ARG = "--data.init_args.source.init_args.test_fold"
ROOT_ARG = "--trainer.default_root_dir"


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Our own options (``--folds``, ``--root``); everything else goes to ``ser-ssl fit``/``test``."""
    parser = argparse.ArgumentParser(
        prog="python -m ser_ssl.folds",
        allow_abbrev=False,  # never take a prefix of a ser-ssl option for one of ours
        description="Run ser-ssl fit + test once per test fold and report mean ± std. Every other "
        "argument (--config, --data..., --model..., --trainer...) is passed to ser-ssl.",
    )
    parser.add_argument("--folds", type=int, nargs="+", required=True, help="test folds, e.g. 1 2 3 4 5")
    parser.add_argument("--root", type=Path, default=None, help="default: the run's trainer.default_root_dir")
    return parser.parse_known_args(argv)


def default_root(cli_args: Sequence[str]) -> Path:
    """The ``trainer.default_root_dir`` the run would use, as the CLI resolves it; ``runs/folds``
    when it sets none."""
    root = (resolved_config(cli_args).get("trainer") or {}).get("default_root_dir")
    return Path(root or "runs/folds")


def run_folds(
    folds: Sequence[int], cli_args: Sequence[str], root: Path, results: dict[int, dict[str, float]]
) -> None:
    """``fit`` then ``test`` for each fold into ``root/fold_<k>``; each fold's test metrics go into
    ``results`` as soon as it is done, so those of finished folds outlive a failing one."""
    for k in folds:
        args = [*cli_args, FOLD_ARG, str(k), ROOT_ARG, str(root / f"fold_{k}")]
        results[k], _ = fit_and_test(args, root / f"fold_{k}", f"fold {k}")


def summarize(per_fold: dict[int, dict[str, float]]) -> dict:
    """Per-fold metrics with their mean and sample standard deviation (``None`` for one fold)."""
    names = sorted({name for metrics in per_fold.values() for name in metrics})
    stats = {name: mean_std([m[name] for m in per_fold.values() if name in m]) for name in names}
    return {
        "folds": {str(k): v for k, v in per_fold.items()},
        "mean": {name: mean for name, (mean, _) in stats.items()},
        "std": {name: std for name, (_, std) in stats.items()},
    }


def markdown_table(summary: dict) -> str:
    """The summary as a Markdown table: a row per fold and a final ``mean ± std`` row."""
    names = list(summary["mean"])
    short = [name.removeprefix("test/") for name in names]
    lines = ["| fold | " + " | ".join(short) + " |", "|---" * (len(names) + 1) + "|"]
    for fold, metrics in summary["folds"].items():
        lines.append(f"| {fold} | " + " | ".join(cell(metrics.get(n)) for n in names) + " |")
    summary_cells = [f"{cell(summary['mean'][n])} ± {cell(summary['std'][n])}" for n in names]
    lines.append("| mean ± std | " + " | ".join(summary_cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict:
    """Run every fold, print the table, write ``folds.json`` and ``folds.md``; returns the summary."""
    options, cli_args = parse_args(argv)
    root = options.root or default_root(cli_args)
    results: dict[int, dict[str, float]] = {}
    try:
        run_folds(options.folds, cli_args, root, results)
    except BaseException:  # a failing fold keeps the table of those finished before it, marked so
        if results:
            failed = next(k for k in options.folds if k not in results)
            write_summary(root, results, cli_args, failed)
        raise
    return write_summary(root, results, cli_args)


def write_summary(
    root: Path, results: dict[int, dict[str, float]], cli_args: Sequence[str], failed: int | None = None
) -> dict:
    """Write and print the table; ``failed``: the fold that stopped the run, said in both files."""
    summary = summarize(results)
    summary["args"] = list(cli_args)
    table = markdown_table(summary)
    if failed is not None:
        summary["failed_fold"] = failed
        table += f"\nIncomplete: fold {failed} failed; the table holds the folds finished before it.\n"
    root.mkdir(parents=True, exist_ok=True)
    (root / "folds.json").write_text(json.dumps(summary, indent=2))
    (root / "folds.md").write_text(table)
    print(table)
    return summary


def entry_point() -> None:
    """Console-script entry (``ser-ssl-folds``)."""
    console(main, "ser-ssl-folds")


if __name__ == "__main__":
    entry_point()
