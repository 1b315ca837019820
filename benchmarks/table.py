"""Result rows and their rendering: the Markdown table, the notes and the JSON file.

Every figure is a ratio against a baseline measured in the same run, so a busy machine slows both
sides alike. ``ratio`` is a speed-up for time and rate rows (how many times faster the measured
variant is than the baseline) and ``measured / baseline`` for size rows (memory, MB per hour).
Imports nothing heavy, so ``benchmarks.run`` can set the environment before torch is loaded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["time", "rate", "size"]
ROW_KEYS = ("row", "measured", "baseline", "unit", "ratio", "goal", "met", "note")


@dataclass
class Row:
    """One line of the table: ``measured`` against ``baseline``, both in ``unit``.

    ``kind`` says how the ratio is formed: ``time`` (lower is better) gives ``baseline / measured``,
    ``rate`` (higher is better) ``measured / baseline``, both speed-ups; ``size`` gives
    ``measured / baseline``. ``goal`` is a condition on the ratio, e.g. ``(">=", 10.0)``.
    """

    row: str
    measured: float
    baseline: float
    unit: str
    kind: Kind
    goal: tuple[str, float] | None = None
    goal_note: str = ""
    note: str = ""

    @property
    def ratio(self) -> float:
        if self.kind == "time":
            return self.baseline / self.measured
        return self.measured / self.baseline

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        op, value = self.goal
        return self.ratio >= value if op == ">=" else self.ratio <= value

    def goal_text(self) -> str:
        if self.goal is None:
            return "—"
        op, value = self.goal
        text = f"{'≥' if op == '>=' else '≤'} {value:g}"
        return f"{text} ({self.goal_note})" if self.goal_note else text

    def to_dict(self) -> dict[str, object]:
        return {
            "row": self.row,
            "measured": self.measured,
            "baseline": self.baseline,
            "unit": self.unit,
            "ratio": self.ratio,
            "goal": self.goal_text(),
            "met": self.met,
            "note": self.note,
        }


def fmt(value: float) -> str:
    """About three significant figures, without scientific notation for everyday sizes."""
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table (row, measured, baseline, ratio, goal, met?)."""
    lines = ["| row | measured | baseline | ratio | goal | met? |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        met = {None: "—", True: "yes", False: "**no**"}[r.met]
        lines.append(
            f"| {r.row} | {fmt(r.measured)} {r.unit} | {fmt(r.baseline)} {r.unit} | {r.ratio:.2f} "
            f"| {r.goal_text()} | {met} |"
        )
    return "\n".join(lines)


def notes_list(rows: Sequence[Row]) -> str:
    """How each row was measured, as a Markdown list."""
    return "\n".join(f"- **{r.row}**: {r.note}" for r in rows if r.note)


def write_json(path: Path, rows: Sequence[Row], meta: dict[str, object]) -> None:
    path.write_text(json.dumps({"meta": meta, "rows": [r.to_dict() for r in rows]}, indent=2) + "\n")
