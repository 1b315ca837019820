"""The feature cache: every clip's log-mel in one float16 memmap plus an offsets index.

Audio is decoded once, in parallel worker processes; training only slices the memmap. The cache
directory name is a hash of the feature settings and of each file's path, size and mtime, so a
changed setting or file gives a new cache. A build writes into a temporary directory that is renamed
into place when complete, so a half-written cache is never read and two concurrent builds cannot
corrupt each other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ser_ssl.audio import AudioError, LogMel, LogMelConfig, load_audio
from ser_ssl.errors import DataError, MissingFileError

log = logging.getLogger(__name__)

FEATURES_FILE = "features.f16"
INDEX_FILE = "index.json"


def cache_key(paths: Sequence[Path], config: LogMelConfig) -> str:
    """Hash of the feature settings and every file's resolved path, size and mtime."""
    h = hashlib.sha1(config.key().encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{Path(p).resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _compute(args: tuple[str, LogMelConfig]) -> tuple[np.ndarray | None, str]:
    """Worker: one file -> float16 ``[frames, n_mels]``, or ``None`` and the reason it was skipped."""
    path, config = args
    try:
        wav = load_audio(path, config.sample_rate)
    except AudioError as err:
        return None, str(err)
    with torch.inference_mode():
        feats = _logmel(config)(wav)
    return feats.T.contiguous().numpy().astype(np.float16), ""


_LOGMEL: dict[LogMelConfig, LogMel] = {}


def _logmel(config: LogMelConfig) -> LogMel:
    """One LogMel per process and config, so the filter bank is built once."""
    if config not in _LOGMEL:
        _LOGMEL[config] = LogMel(config)
    return _LOGMEL[config]


def _init_worker() -> None:
    torch.set_num_threads(1)


def build_cache(
    paths: Sequence[str | Path],
    config: LogMelConfig,
    cache_root: str | Path,
    num_workers: int = 0,
    strict: bool = False,
) -> Path:
    """Return the cache directory for ``paths``, building it first if it does not exist.

    Files that cannot be decoded are skipped with one warning each and a summary; ``strict``
    raises on the first instead. Raises :class:`DataError` when no file is usable.
    """
    paths = [Path(p) for p in paths]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise MissingFileError(f"{len(missing)} listed audio file(s) do not exist, e.g. {missing[0]}")
    cache_root = Path(cache_root)
    final = cache_root / f"logmel-{cache_key(paths, config)}"
    if (final / INDEX_FILE).is_file():
        return final
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = cache_root / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write(tmp, paths, config, num_workers, strict)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / INDEX_FILE).is_file():  # not a lost race with another builder
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _write(tmp: Path, paths: list[Path], config: LogMelConfig, num_workers: int, strict: bool) -> None:
    jobs = [(str(p), config) for p in paths]
    if num_workers > 0:
        pool = ProcessPoolExecutor(num_workers, mp_context=get_context("spawn"), initializer=_init_worker)
        results = pool.map(_compute, jobs, chunksize=4)
    else:
        pool, results = None, map(_compute, jobs)
    clips, skipped, offset = [], [], 0
    try:
        with (tmp / FEATURES_FILE).open("wb") as out:
            for (path, _), (feats, reason) in tqdm(
                zip(jobs, results, strict=True), total=len(jobs), desc="caching log-mel", unit="clip"
            ):
                if feats is None:
                    if strict:
                        raise AudioError(f"{reason} (strict mode; turn it off to skip bad files)")
                    log.warning("skipping %s", reason)
                    skipped.append({"path": path, "reason": reason})
                    continue
                out.write(feats.tobytes())
                clips.append({"path": str(Path(path).resolve()), "offset": offset, "frames": len(feats)})
                offset += len(feats)
            out.flush()
            os.fsync(out.fileno())
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if skipped:
        log.warning("skipped %d of %d files that could not be used as audio", len(skipped), len(jobs))
    if not clips:
        raise DataError(f"none of the {len(jobs)} audio files could be used; see the warnings above")
    index = {"config": asdict(config), "n_mels": config.n_mels, "clips": clips, "skipped": skipped}
    (tmp / INDEX_FILE).write_text(json.dumps(index))


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

    def __len__(self) -> int:
        return len(self.paths)

    def row_of(self) -> dict[str, int]:
        """Resolved file path -> row, to map manifest clips onto cache rows."""
        return {p: i for i, p in enumerate(self.paths)}

    @property
    def data(self) -> np.memmap:
        if self._data is None or self._pid != os.getpid():
            total = int(self.lengths.sum())
            self._data = np.memmap(
                self.directory / FEATURES_FILE, dtype=np.float16, mode="r", shape=(total, self.n_mels)
            )
            self._pid = os.getpid()
        return self._data

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
