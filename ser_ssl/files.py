"""Small file helpers shared by the data pipeline, the data generator and the results runner."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def resolved(path: str | Path) -> str:
    """A file's absolute path with its symlinks resolved: the name the cache and the data modules
    know a clip by. A symlink loop, which ``Path.resolve`` raises on, keeps its unresolved absolute
    path (the file is then skipped as unreadable, not a crash)."""
    path = Path(path)
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):
        return str(path.absolute())


def clip_ids(paths: Iterable[str | Path]) -> list[str]:
    """Short stable ids of files by their resolved paths: what a pretraining checkpoint records of
    its training clips, so a probe can tell whether it tests on audio the encoder was trained on."""
    return [hashlib.sha1(resolved(p).encode(errors="surrogateescape")).hexdigest()[:16] for p in paths]


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory and ``os.replace`` it into place, so a run
    killed mid-write leaves the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
