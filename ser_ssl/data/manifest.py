"""The manifest: the one table every data source produces (path, labels, split, group, fold)."""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ser_ssl.errors import DataError, MissingFileError
from ser_ssl.files import resolved

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("filename", "label")
_LABEL_SEPARATORS = re.compile(r"[;,]")


@dataclass(frozen=True)
class Clip:
    """One audio file of a data set.

    ``labels`` is empty for unlabelled clips and holds several names for multi-label data sets
    (FSD50K). ``group`` names the recording a clip comes from: clips of one group always share
    a split, so that takes of one source never leak from training into evaluation. ``fold`` is the
    official cross-validation fold where the data set has one (ESC-50, UrbanSound8K).
    """

    path: Path
    labels: tuple[str, ...] = field(default=())
    split: str = "train"
    group: str = ""
    fold: int | None = None

    def __post_init__(self) -> None:
        # accept str paths and list labels from hand-written sources; keep the dataclass hashable
        object.__setattr__(self, "path", Path(self.path))
        labels = (self.labels,) if isinstance(self.labels, str) else tuple(self.labels)
        object.__setattr__(self, "labels", tuple(dict.fromkeys(labels)))
        if not self.group:
            object.__setattr__(self, "group", str(self.path))

    @property
    def label(self) -> str | None:
        """The single label, or ``None`` when unlabelled; a multi-label clip cannot give one."""
        if len(self.labels) > 1:
            raise DataError(
                f"{self.path} has several labels {list(self.labels)}; this task needs one label per clip"
            )
        return self.labels[0] if self.labels else None


def parse_labels(cell: str | None) -> tuple[str, ...]:
    """Labels of one manifest cell: separated by ``,`` (quoted in CSV) or ``;``; empty = unlabelled."""
    if not cell:
        return ()
    return tuple(dict.fromkeys(s.strip() for s in _LABEL_SEPARATORS.split(cell) if s.strip()))


def check_groups(clips: Iterable[Clip], where: str) -> None:
    """Raise :class:`DataError` when one group has clips in two splits (it would leak into evaluation)."""
    first: dict[str, Clip] = {}
    for clip in clips:
        seen = first.setdefault(clip.group, clip)
        if seen.split != clip.split:
            raise DataError(
                f"{where}: group '{clip.group}' has clips in two splits ('{seen.split}': {seen.path}, "
                f"'{clip.split}': {clip.path}); give all clips of one recording the same split"
            )


def check_duplicates(clips: list[Clip], where: str) -> list[Clip]:
    """The clips with each file once: a file listed again in the same split is dropped with one
    warning; a file in two splits (also under two spellings of its path) raises :class:`DataError`,
    since it would be tested on what it was trained on."""
    first: dict[str, Clip] = {}
    kept, repeated = [], 0
    for clip in clips:
        seen = first.setdefault(resolved(clip.path), clip)
        if seen is clip:
            kept.append(clip)
        elif seen.split != clip.split:
            raise DataError(
                f"{where}: {clip.path} is listed in two splits ('{seen.split}' as {seen.path}, "
                f"'{clip.split}' as {clip.path}); a clip must be in one split only"
            )
        else:
            repeated += 1
    if repeated:
        log.warning("%s: %d files are listed more than once; each is used once", where, repeated)
    return kept


def read_manifest(path: str | Path, default_split: str = "train") -> list[Clip]:
    """Read a ``filename,label[,split,group,fold]`` CSV; file names are relative to the CSV's folder.

    A ``label`` cell may hold several labels separated by ``,`` (quote the cell) or ``;``; an empty
    cell marks an unlabelled clip. Without a ``group`` every file is its own group. The file is
    UTF-8, with or without the byte-order mark spreadsheet programs write; split names lose
    surrounding spaces.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"manifest {path} does not exist; check --data.init_args.manifest (or the source's path)"
        )
    try:
        return _read_manifest(path, default_split)
    except UnicodeDecodeError as err:
        raise DataError(
            f"manifest {path} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
            "save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet program)"
        ) from err


def _read_manifest(path: Path, default_split: str) -> list[Clip]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"manifest {path} lacks the column(s) {missing}; expected a header "
                "'filename,label' with optional 'split', 'group' and 'fold'"
            )
        clips = []
        for line, row in enumerate(reader, start=2):
            fold = (row.get("fold") or "").strip()
            if fold and not fold.lstrip("-").isdigit():
                raise DataError(f"manifest {path}, line {line}: fold '{fold}' is not an integer")
            clips.append(
                Clip(
                    path=path.parent / row["filename"],
                    labels=parse_labels(row["label"]),
                    split=(row.get("split") or "").strip() or default_split,
                    group=row.get("group") or row["filename"],
                    fold=int(fold) if fold else None,
                )
            )
    if not clips:
        raise DataError(f"manifest {path} lists no clips")
    return clips
