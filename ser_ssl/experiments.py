"""What the experiment runners (``make demo``, ``ser_ssl.folds``, ``ser_ssl.results``) share: running
``ser-ssl`` commands in this process, reading a command line's config as the CLI resolves it, and
summarising metrics as mean ± std."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ser_ssl.errors import ConfigError, MissingFileError


def resolved_config(args: Sequence[str], subcommand: str = "fit") -> dict[str, Any]:
    """The full config ``ser-ssl <subcommand> <args>`` would run with (defaults, ``--config`` files and
    overrides, resolved by the CLI's own parser through ``--print_config``), without running it."""
    import yaml

    from ser_ssl.cli import cli_main

    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            cli_main([subcommand, *args, "--print_config"])
    except SystemExit as done:
        if done.code not in (0, None):
            raise ConfigError(f"the options do not parse (see above): {shlex.join(args)}") from None
    return yaml.safe_load(printed.getvalue()) or {}


def run_commands(root: Path, steps: Sequence[tuple[str, Sequence[str]]]) -> dict[str, Any]:
    """Run ``ser-ssl <subcommand> <args>`` for each step (their command lines are saved to
    ``root/command.txt``); returns ``{"minutes": ..., "commands": [...]}``."""
    from ser_ssl.cli import cli_main

    commands = [shlex.join(["ser-ssl", sub, *args]) for sub, args in steps]
    root.mkdir(parents=True, exist_ok=True)
    (root / "command.txt").write_text("\n".join(commands) + "\n")
    start = time.perf_counter()
    for sub, args in steps:
        cli_main([sub, *args])
    return {"minutes": (time.perf_counter() - start) / 60, "commands": commands}


def fit_and_test(args: Sequence[str], root: Path, what: str) -> tuple[dict[str, float], dict[str, Any]]:
    """``ser-ssl fit`` then ``ser-ssl test`` with ``args`` (which put the run in ``root``): the test
    metrics the run wrote (``test_metrics.json``) and the record of :func:`run_commands`."""
    record = run_commands(root, [("fit", args), ("test", args)])
    metrics = root / "test_metrics.json"
    if not metrics.is_file():
        raise MissingFileError(f"{what}: the test wrote no {metrics}")
    return json.loads(metrics.read_text()), record


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (n - 1; ``None`` for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def cell(value: float | None, digits: int = 4) -> str:
    """A table cell: the value with ``digits`` decimals, ``n/a`` when there is none (or NaN)."""
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def console(main: Callable[[], object], prog: str) -> None:
    """A runner's console-script entry: user errors print one line, as ``ser-ssl`` does."""
    from ser_ssl.cli import exit_on_user_error

    exit_on_user_error(main, prog)
