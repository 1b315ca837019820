"""The manifest: the one table every data source produces (path, label, split, group)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ser_ssl.errors import DataError, MissingFileError

REQUIRED_COLUMNS = ("filename", "label")


@dataclass(frozen=True)
class Clip:
    """One audio file of a data set. ``label`` is ``None`` for unlabelled clips."""

    path: Path
    label: str | None
    split: str
    group: str


def read_manifest(path: str | Path, default_split: str = "train") -> list[Clip]:
    """Read a ``filename,label[,split,group]`` CSV; file names are relative to the CSV's folder."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"manifest {path} does not exist; check --data.manifest")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"manifest {path} lacks the column(s) {missing}; expected a header "
                "'filename,label' with optional 'split' and 'group'"
            )
        clips = [
            Clip(
                path=path.parent / row["filename"],
                label=row["label"] or None,
                split=row.get("split") or default_split,
                group=row.get("group") or row["filename"],
            )
            for row in reader
        ]
    if not clips:
        raise DataError(f"manifest {path} lists no clips")
    return clips
