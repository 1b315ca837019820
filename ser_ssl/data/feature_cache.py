"""Reading the feature cache that :func:`ser_ssl.data.cache.build_cache` writes: a finished
``manifest-<key>/`` directory holds every usable clip's float16 log-mel frames, concatenated, in
``features.f16`` and where each clip lies in ``index.json``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

FEATURES_FILE = "features.f16"
INDEX_FILE = "index.json"
CONFIG_FILE = "config.json"
#: A process reading a manifest marks it used this often (seconds): prune keeps what runs still read.
MARK_EVERY = 3600


class FeatureCache:
    """Read side of a cache directory. The memmap is opened lazily, once per process."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        index = json.loads((self.directory / INDEX_FILE).read_text())
        self.n_mels: int = index["n_mels"]
        self.paths = [c["path"] for c in index["clips"]]
        self.offsets = np.array([c["offset"] for c in index["clips"]], dtype=np.int64)
        self.lengths = np.array([c["frames"] for c in index["clips"]], dtype=np.int64)
        self.skipped: list[dict[str, str]] = index["skipped"]
        self._data: np.memmap | None = None
        self._pid = -1
        self._marked = 0.0

    def __len__(self) -> int:
        return len(self.paths)

    def row_of(self) -> dict[str, int]:
        """Resolved file path -> row, to map manifest clips onto cache rows."""
        return {p: i for i, p in enumerate(self.paths)}

    @property
    def data(self) -> np.memmap:
        """Every frame, ``[frames, n_mels]`` float16. Mapped copy-on-write: nothing ever writes to it,
        but a writable array lets torch wrap it (:attr:`tensor`) without copying or warning."""
        if self._data is None or self._pid != os.getpid():
            total = int(self.lengths.sum())
            self._data = np.memmap(
                self.directory / FEATURES_FILE, dtype=np.float16, mode="c", shape=(total, self.n_mels)
            )
            self._pid = os.getpid()
        if time.time() - self._marked > MARK_EVERY:
            mark_used(self.directory)
            self._marked = time.time()
        return self._data

    @property
    def tensor(self) -> torch.Tensor:
        """:attr:`data` as a CPU tensor over the same pages."""
        return torch.from_numpy(self.data)

    def frames(self, row: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``[start, stop)`` of one clip as a float16 ``[frames, n_mels]`` view."""
        length = int(self.lengths[row])
        stop = length if stop is None else min(stop, length)
        off = int(self.offsets[row])
        return self.data[off + start : off + stop]

    def band_stats(self, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Per-band mean and standard deviation over every frame of ``rows`` (float64 sums)."""
        total = np.zeros(self.n_mels)
        total_sq = np.zeros(self.n_mels)
        count = 0
        for r in rows:
            x = np.asarray(self.frames(r), dtype=np.float64)
            total += x.sum(0)
            total_sq += (x * x).sum(0)
            count += len(x)
        mean = total / count
        var = np.maximum(total_sq / count - mean * mean, 0.0)
        return mean.astype(np.float32), np.sqrt(var).astype(np.float32)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_data"] = None  # each worker opens its own memmap
        return state


def mark_used(manifest: Path) -> None:
    """Record that a run reads ``manifest`` (``python -m ser_ssl.data.cache_admin prune`` keeps what
    runs use); a read-only cache stays as it is."""
    try:
        os.utime(manifest)
    except OSError:
        pass
