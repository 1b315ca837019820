"""The manifest: the one table every data source produces (path, labels, split, group, fold)."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ser_ssl.errors import DataError, MissingFileError
from ser_ssl.files import resolved

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("filename", "label")


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


def parse_labels(cell: str | None, separator: str) -> tuple[str, ...]:
    """Labels of one cell, split on ``separator`` only: each data set names its own (FSD50K uses
    ``,``, manifests ``;``), so that a label such as ``Dog, barking`` can stay whole. An empty cell
    is unlabelled."""
    if not cell:
        return ()
    return tuple(dict.fromkeys(s.strip() for s in cell.split(separator) if s.strip()))


def encode_labels(labels: Sequence[tuple[str, ...]], classes: Sequence[str], multilabel: bool) -> np.ndarray:
    """Targets of clips with ``labels`` over ``classes``: multi-hot rows ``[N, C]`` (float32; labels
    outside ``classes`` left out), or class indices ``[N]`` (int64; -1 for a clip without exactly one
    label, or whose label is not in ``classes``)."""
    index = {c: k for k, c in enumerate(classes)}
    if multilabel:
        targets = np.zeros((len(labels), len(classes)), dtype=np.float32)
        for row, clip_labels in enumerate(labels):
            targets[row, [index[lb] for lb in clip_labels if lb in index]] = 1.0
        return targets
    return np.array([index.get(lb[0], -1) if len(lb) == 1 else -1 for lb in labels], dtype=np.int64)


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


def split_name(name: str) -> str:
    """``train``, ``val`` and ``test`` in any case (``Train``, ``TEST``) as those; other names as they
    are. Split names in data and in the ``*_split`` settings both go through it, so they match."""
    return name.lower() if name.lower() in ("train", "val", "test") else name


def read_manifest(path: str | Path, default_split: str = "train", label_separator: str = ";") -> list[Clip]:
    """Read a ``filename,label[,split,group,fold]`` CSV; file names are relative to the CSV's folder.

    A ``label`` cell may hold several labels separated by ``label_separator`` (only by it, so that
    a quoted ``"Dog, barking"`` stays one label); an empty cell marks an unlabelled clip. Without
    a ``split`` column every clip is in ``default_split``; with one, rows whose split is empty are
    left out with a warning, since guessing would put clips meant for testing into training.
    Without a ``group`` every file is its own group. The file is UTF-8, with or without the
    byte-order mark spreadsheet programs write; header names are read in any case, and split names lose
    surrounding spaces (``train``, ``val`` and ``test`` are also read in any case).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"manifest {path} does not exist; check --data.init_args.manifest (or the source's path)"
        )
    try:
        return _read_manifest(path, default_split, label_separator)
    except UnicodeDecodeError as err:
        raise DataError(
            f"manifest {path} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
            "save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet program)"
        ) from err


def _read_manifest(path: Path, default_split: str, label_separator: str) -> list[Clip]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        found = reader.fieldnames or []
        # header names as people type them: ` label`, `Filename`
        columns = reader.fieldnames = [c.strip().lower() for c in found]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            other = next((sep for sep in (";", "\t") if any(sep in c for c in columns)), None)
            hint = f"; the file seems separated by {other!r}, save it with commas" if other else ""
            raise DataError(
                f"manifest {path} lacks the column(s) {missing} (its header: {found}){hint}; expected a "
                "header 'filename,label' with optional 'split', 'group' and 'fold'"
            )
        clips, no_split, with_comma = [], [], []
        for line, row in enumerate(reader, start=2):
            fold = (row.get("fold") or "").strip()
            if fold and not fold.lstrip("-").isdigit():
                raise DataError(f"manifest {path}, line {line}: fold '{fold}' is not an integer")
            split = split_name((row.get("split") or "").strip() if "split" in columns else default_split)
            if not split:
                no_split.append((row["filename"], line))
                continue
            labels = parse_labels(row["label"], label_separator)
            if label_separator != "," and any("," in label for label in labels):
                with_comma.append((row["label"], line))
            clips.append(
                Clip(
                    path=path.parent / row["filename"],
                    labels=labels,
                    split=split,
                    group=row.get("group") or row["filename"],
                    fold=int(fold) if fold else None,
                )
            )
    if with_comma:
        log.warning(
            "manifest %s: %d rows have a label with a comma, kept whole as one label (e.g. '%s' on "
            "line %d); to give a clip several labels, separate them with '%s' or set label_separator: ','",
            path,
            len(with_comma),
            *with_comma[0],
            label_separator,
        )
    if no_split:
        log.warning(
            "manifest %s: %d rows have an empty split and are left out (e.g. %s on line %d); "
            "give each row a split (train, val or test)",
            path,
            len(no_split),
            *no_split[0],
        )
    if not clips:
        skipped = (
            f"; all its {len(no_split)} rows have an empty split (give each a split)" if no_split else ""
        )
        raise DataError(f"manifest {path} lists no clips{skipped}")
    return clips
