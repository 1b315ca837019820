"""Building the feature cache (read by :class:`~ser_ssl.data.feature_cache.FeatureCache`): every
clip's log-mel in one float16 memmap plus an offsets index.

Audio is decoded once, in parallel worker processes; training only slices the memmap. On disk::

    <cache_dir>/logmel-<settings key>/        one per feature configuration (LogMelConfig.key())
        config.json                           the settings, for people
        shards/<ab>/<clip key>.npy            one clip's float16 [frames, n_mels], while building
        tmp/                                  shards being written
        manifest-<key>/                       what training reads (FeatureCache)
            features.f16                      every usable clip's frames, concatenated
            index.json                        key, offset and length of each clip; the files skipped
                                              and those used only in part

A clip key hashes the file's resolved path, size and mtime; a ``manifest-<key>`` hashes the settings
and every clip key in order. Why shards: a build killed at any point loses only the clips in flight
(each shard is written under ``tmp/`` and renamed into place complete). Once a manifest is
assembled its clips' shards are deleted, so the disk holds each clip once; a later build reads the
clips it shares with a finished manifest from there, so changing one file recomputes one clip, and
a changed setting starts a new ``logmel-*`` directory, while training still reads one memmap.
Reading a manifest marks it used (the directory's modification time, hourly), so that
``python -m ser_ssl.data.cache_admin prune --older-than DAYS`` can delete the manifests no run has used for
that long (``list`` shows them); a pruned manifest is built again when a run needs it.
The manifest directory is assembled under a temporary name and renamed, so a half
written cache is never read; two builders at once only race on renames, and losing the race means
the other one finished the same cache. Leftovers of killed builds on this machine are removed by the
next build. Shards are not fsynced (there are thousands of small ones): one that a crash of the
machine left short is recognised by its header and size and computed again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import stat
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import numpy.lib.format as npformat
import torch
from tqdm import tqdm

from ser_ssl.audio import LogMel, LogMelConfig
from ser_ssl.audio.features import normalise_clip
from ser_ssl.audio.io import AudioError, read_audio
from ser_ssl.data.feature_cache import CONFIG_FILE, FEATURES_FILE, INDEX_FILE, mark_used
from ser_ssl.errors import DataError, MissingFileError
from ser_ssl.files import resolved

log = logging.getLogger(__name__)


# Temporary names carry this host and the writer's pid, so a later build can tell a dead build's
# leftovers from a live one's (the host is hashed: host names may hold any character).
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_TMP_TAG = re.compile(r"(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
BUILDING = "building"


def _tmp_tag() -> str:
    return f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def config_dir(cache_root: str | Path, config: LogMelConfig) -> Path:
    """The directory of one feature configuration: its shards and assembled caches."""
    return Path(cache_root) / f"logmel-{config.key()}"


def clip_key(path: str | Path) -> str | None:
    """Hash of a file's resolved path, size and mtime; ``None`` when it is not an existing file."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    # os.fsencode: a file name that is not valid UTF-8 hashes by its bytes
    return hashlib.sha1(os.fsencode(f"{resolved(path)}\0{st.st_size}\0{st.st_mtime_ns}")).hexdigest()[:20]


def _not_a_file(path: Path) -> tuple[str, str]:
    """``(kind, message)`` for a path that :func:`clip_key` found no file at."""
    try:
        path.stat()
    except OSError as err:
        if err.errno == errno.ENOENT:
            return "missing", f"{path}: file not found"
        return "unreadable", f"{path}: {err.strerror or err}"  # e.g. a symlink loop
    return "unreadable", f"{path}: not a regular file"


def shard_path(directory: Path, key: str) -> Path:
    """Where the clip with ``key`` is stored under a configuration directory (fanned out by prefix)."""
    return directory / "shards" / key[:2] / f"{key}.npy"


def cache_key(paths: Sequence[Path], config: LogMelConfig, keys: Sequence[str | None] | None = None) -> str:
    """Hash of the feature settings and every file's clip key, in order (a missing file by its path)."""
    keys = [clip_key(p) for p in paths] if keys is None else keys
    h = hashlib.sha1(config.key().encode())
    for p, k in zip(paths, keys, strict=True):
        h.update(os.fsencode(f"{k or 'missing:' + resolved(p)}\n"))
    return h.hexdigest()[:16]


def _compute(job: tuple[str, LogMelConfig, str, str]) -> tuple[int | None, str, str]:
    """Worker: one file -> its log-mel saved as a shard. Returns ``(frames, kind, message)``:
    ``frames`` is ``None`` for a skipped file (``kind`` says why), and a clip decoded only in part
    comes with kind ``truncated``."""
    path, config, shard, tmp_dir = job
    try:
        decoded = read_audio(path)
        with torch.inference_mode(), one_thread():
            feats = _features(decoded.waveform(config.sample_rate), config)
    except AudioError as err:
        return None, err.kind, str(err)
    except Exception as err:  # one file's failure (out of memory, a decoder bug) skips that file only
        return None, "unreadable", f"{path}: cannot compute its log-mel ({type(err).__name__}: {err})"
    if not np.isfinite(feats).all():
        return None, "non-finite", f"{path}: its log-mel is not finite (sample values too large for float32)"
    _save_shard(feats, Path(shard), Path(tmp_dir))
    if decoded.partial:
        return len(feats), "truncated", f"{path}: {decoded.note()}"
    return len(feats), "", ""


def _save_shard(feats: np.ndarray, shard: Path, tmp_dir: Path) -> None:
    """Write under ``tmp_dir`` and rename into place, so a shard is either complete or absent."""
    tmp = tmp_dir / f"{shard.stem}.{_tmp_tag()}.npy"
    try:
        with tmp.open("wb") as f:
            np.save(f, feats)
        shard.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, shard)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _shard_frames(shard: Path, n_mels: int) -> int | None:
    """A shard's number of frames from its header, or ``None`` when it is absent or damaged
    (wrong header, shape or size; e.g. after a crash of the machine). Reads no data."""
    try:
        with shard.open("rb") as f:
            version = npformat.read_magic(f)
            read_header = {(1, 0): npformat.read_array_header_1_0, (2, 0): npformat.read_array_header_2_0}
            shape, fortran, dtype = read_header[version](f)
            size = os.fstat(f.fileno()).st_size - f.tell()
    except (OSError, ValueError, KeyError, EOFError):
        return None
    if dtype != np.float16 or fortran or len(shape) != 2 or shape[1] != n_mels or shape[0] == 0:
        return None
    return shape[0] if size == shape[0] * n_mels * 2 else None


#: A clip of more frames than this has its log-mel computed this many frames at a time: the same
#: numbers (each frame sees only its own window), but the STFT of an hour-long clip no longer
#: needs gigabytes of memory at once.
CHUNK_FRAMES = 16384


def _features(wav: torch.Tensor, config: LogMelConfig) -> np.ndarray:
    """Float16 log-mel ``[frames, n_mels]`` of a waveform, in chunks for long clips."""
    logmel, hop = _logmel(config), config.hop_length
    wav = normalise_clip(wav, config.clip_norm)  # the whole clip's statistics, before any chunking
    n_frames = 1 + wav.shape[-1] // hop
    if n_frames <= CHUNK_FRAMES:
        return logmel.of_normalised(wav).T.contiguous().numpy().astype(np.float16)
    margin = -(-config.n_fft // (2 * hop))  # frames whose window reaches past a chunk's edge
    last_lo = n_frames - 1 - -(-config.n_fft // hop)  # a last segment starting here spans one FFT
    chunks = []
    for start in range(0, n_frames, CHUNK_FRAMES):
        stop = min(start + CHUNK_FRAMES, n_frames)
        lo, hi = max(start - margin, 0), min(stop + margin, n_frames)
        if hi == n_frames:  # a last segment shorter than one FFT would be tiled, not padded
            lo = max(min(lo, last_lo), 0)
        # frames lo..hi-1 are centred on samples lo*hop..(hi-1)*hop; the true ends keep their padding
        segment = wav[lo * hop : (hi - 1) * hop + 1 if hi < n_frames else None]
        feats = logmel.of_normalised(segment)[:, start - lo : stop - lo]
        chunks.append(feats.T.contiguous().numpy().astype(np.float16))
    return np.concatenate(chunks)


_LOGMEL: dict[LogMelConfig, LogMel] = {}


def _logmel(config: LogMelConfig) -> LogMel:
    """One LogMel per process and config, so the filter bank is built once."""
    if config not in _LOGMEL:
        _LOGMEL[config] = LogMel(config)
    return _LOGMEL[config]


@contextmanager
def one_thread() -> Iterator[None]:
    """Compute with one intra-op thread, then restore the caller's count.

    The mel projection is a matrix product whose blocking, and so its float rounding, depends on
    the thread count: a clip computed with 2 threads in the main process differed in the last bit
    from the same clip computed in a 1-thread worker, so a serial and a parallel build of the
    same files wrote different bytes. With one thread everywhere, the bytes depend only on the
    files and the machine's kernels; across CPUs they agree to one float16 step (docs/robustness.md).
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(entries: Iterable[Path]) -> None:
    """Delete temporaries that a killed build on this host left behind (their writer is gone)."""
    for entry in entries:
        m = _TMP_TAG.search(entry.name)
        if m is None or m["host"] != _HOST or _pid_alive(int(m["pid"])):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _no_space(err: OSError, cache_root: Path, directory: Path) -> DataError:
    return DataError(
        f"no space left on the disk of the feature cache {cache_root} ({err}); free some space there or "
        "point data.init_args.cache_dir at a disk with room. The clips finished so far are kept in "
        f"{directory} and the next run reuses them"
    )


def build_cache(
    paths: Sequence[str | Path],
    config: LogMelConfig,
    cache_root: str | Path,
    num_workers: int = 0,
    strict: bool = False,
) -> Path:
    """Return the cache directory for ``paths``, building what is missing first.

    Unusable files (missing, undecodable, empty, non-finite) are skipped with one warning each and
    a summary; ``strict`` raises on the first instead, and also refuses a truncated file, of which
    the decodable part is used otherwise. Raises :class:`DataError` when no file is usable, or
    when the disk is full.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError("there are no audio files to cache: the data set is empty")
    cache_root = Path(cache_root)
    keys = [clip_key(p) for p in paths]
    missing = [p for p, k in zip(paths, keys, strict=True) if k is None]
    if missing and (strict or len(missing) == len(paths)):
        what = "strict mode" if strict else f"none of the {len(paths)} listed audio files exist"
        raise MissingFileError(
            f"{missing[0]}: file not found ({what}); check the manifest's file names (relative to "
            "its folder) or the data set's root"
        )
    directory = config_dir(cache_root, config)
    final = directory / f"manifest-{cache_key(paths, config, keys)}"
    if (final / INDEX_FILE).is_file():
        _report_problems(final / INDEX_FILE, len(paths), strict)
        mark_used(final)
        return final
    try:
        with _building(directory):
            _build(paths, keys, config, directory, final, num_workers, strict)
    except OSError as err:
        if err.errno in _NO_SPACE:
            raise _no_space(err, cache_root, directory) from err
        inside = err.filename is None or str(err.filename).startswith(str(cache_root))
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and inside:
            raise DataError(
                f"cannot write the feature cache in {cache_root} ({err}); point "
                "data.init_args.cache_dir at a folder this user can write to"
            ) from err
        raise
    return final


@contextmanager
def _building(directory: Path) -> Iterator[None]:
    """While a build runs, ``tmp/building.<host>-<pid>-...`` says so (:func:`prune` leaves the folder
    alone; a killed build's marker is removed like its other temporaries)."""
    (directory / "tmp").mkdir(parents=True, exist_ok=True)
    marker = directory / "tmp" / f"{BUILDING}.{_tmp_tag()}"
    marker.touch()
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)


def _build(
    paths: list[Path],
    keys: list[str | None],
    config: LogMelConfig,
    directory: Path,
    final: Path,
    num_workers: int,
    strict: bool,
) -> None:
    tmp_dir = directory / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale([*tmp_dir.iterdir(), *directory.glob(".manifest-*.tmp-*")])
    if not (directory / CONFIG_FILE).is_file():
        tmp = tmp_dir / f"{CONFIG_FILE}.{_tmp_tag()}"
        tmp.write_text(json.dumps(asdict(config), indent=1))
        os.replace(tmp, directory / CONFIG_FILE)

    problems: dict[int, tuple[str, str]] = {}  # position -> (kind, message), skipped or used in part
    for i, (p, k) in enumerate(zip(paths, keys, strict=True)):
        if k is None:
            problems[i] = _not_a_file(p)
            log.warning("skipping %s", problems[i][1])
    assembled = _assembled_clips(directory)
    todo = [
        i
        for i, k in enumerate(keys)
        if k is not None and k not in assembled and not shard_path(directory, k).is_file()
    ]
    usable = len(paths) - len(problems)
    if usable > len(todo):
        log.info("reusing %d finished clips from %s", usable - len(todo), directory)
    jobs = [(str(paths[i]), config, str(shard_path(directory, keys[i])), str(tmp_dir)) for i in todo]
    _run(jobs, todo, problems, num_workers, strict, initial=usable - len(todo), total=usable)

    skipped = {i: kp for i, kp in problems.items() if kp[0] != "truncated"}
    _summarise(problems, len(paths))
    if len(skipped) == len(paths):
        raise DataError(
            f"none of the {len(paths)} audio files could be used ({_counts(skipped)}); see the warnings above"
        )
    _assemble(paths, keys, config, directory, final, problems, assembled)


def _report_problems(index_file: Path, total: int, strict: bool) -> None:
    """What the build found wrong with the files, again for each run that reuses the cache: ``strict``
    refuses it as the build would have, otherwise the summary is logged (the files are in the index)."""
    index = json.loads(index_file.read_text())
    listed = [*index.get("skipped", []), *index.get("partial", [])]  # no "partial" in older caches
    problems = {i: (p["kind"], p["reason"]) for i, p in enumerate(listed)}
    if strict and problems:
        kind, reason = problems[0]
        raise AudioError(
            f"{reason} (strict mode; found when the cache {index_file.parent} was built; turn strict off "
            "to skip bad files)",
            kind,
        )
    _summarise(problems, total, f" (listed in {index_file})")


#: A worker pool costs seconds before its first clip (each spawned worker imports torch), so a build
#: starts one worker per this many clips still to compute, at most ``num_workers``, and no pool for
#: fewer than two: a few hundred new or changed clips are computed in this process (2 workers on 8
#: clips measured 0.28x one process).
CLIPS_PER_WORKER = 200


def _run(
    jobs: list[tuple[str, LogMelConfig, str, str]],
    positions: list[int],
    problems: dict[int, tuple[str, str]],
    num_workers: int,
    strict: bool,
    initial: int,
    total: int,
) -> None:
    """Compute the missing shards (in a spawn pool when there are enough), with a progress bar."""
    workers = min(num_workers, len(jobs) // CLIPS_PER_WORKER)
    if workers >= 2:
        pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
        results = pool.map(_compute, jobs, chunksize=4)
    else:
        pool, results = None, map(_compute, jobs)
    try:
        bar = tqdm(total=total, initial=initial, desc="caching log-mel", unit="clip")
        with bar:
            for i, (frames, kind, message) in zip(positions, results, strict=True):
                bar.update()
                if not kind:
                    continue
                if strict:
                    raise AudioError(f"{message} (strict mode; turn it off to skip bad files)", kind)
                log.warning("%s %s", "using the decoded part of" if frames else "skipping", message)
                problems[i] = (kind, message)
    except BrokenProcessPool as err:
        raise DataError(
            "a feature-cache worker process died (killed for lack of memory, or crashed decoding a "
            "file); the clips finished so far are kept. Run again, with data.init_args.num_workers 0 "
            "to see which file it was"
        ) from err
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _counts(problems: dict[int, tuple[str, str]]) -> str:
    counts = Counter(kind for kind, _ in problems.values())
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kn: (-kn[1], kn[0])))


def _summarise(problems: dict[int, tuple[str, str]], total: int, where: str = "") -> None:
    skipped = {i: kp for i, kp in problems.items() if kp[0] != "truncated"}
    partial = len(problems) - len(skipped)
    if skipped:
        log.warning("skipped %d of %d files: %s%s", len(skipped), total, _counts(skipped), where)
    if partial:
        log.warning("used %d of %d files only in part (truncated or corrupt)%s", partial, total, where)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _assembled_clips(directory: Path) -> dict[str, tuple[Path, int, int]]:
    """Clip key -> ``(features file, offset, frames)`` in the finished caches of a configuration
    directory: a clip already assembled once is read from there, not computed again."""
    found: dict[str, tuple[Path, int, int]] = {}
    for index in sorted(directory.glob(f"manifest-*/{INDEX_FILE}")):
        try:
            clips = json.loads(index.read_text())["clips"]
        except (OSError, ValueError, KeyError):
            continue
        for clip in clips:
            if "key" in clip:
                found[clip["key"]] = (index.parent / FEATURES_FILE, clip["offset"], clip["frames"])
    return found


class _ClipSource:
    """Where the assembly reads each clip from: its shard, a finished cache that holds it, or (for
    a shard that is damaged, or that a concurrent build has just removed) a fresh computation."""

    def __init__(self, config: LogMelConfig, directory: Path, assembled: dict[str, tuple[Path, int, int]]):
        self.config, self.directory, self.assembled = config, directory, assembled
        self._maps: dict[Path, np.memmap] = {}

    def frames_count(self, path: Path, key: str) -> int:
        n = _shard_frames(shard_path(self.directory, key), self.config.n_mels)
        if n is not None:
            return n
        if key in self.assembled:
            return self.assembled[key][2]
        return len(self._compute(path, key))

    def frames(self, path: Path, key: str) -> np.ndarray:
        try:
            return np.load(shard_path(self.directory, key), allow_pickle=False)
        except (OSError, ValueError):
            pass
        if key in self.assembled:
            features, offset, n = self.assembled[key]
            try:
                if features not in self._maps:
                    self._maps[features] = np.memmap(features, dtype=np.float16, mode="r").reshape(
                        -1, self.config.n_mels
                    )
                return np.asarray(self._maps[features][offset : offset + n])
            except (OSError, ValueError):
                pass
        return self._compute(path, key)

    def _compute(self, path: Path, key: str) -> np.ndarray:
        shard = shard_path(self.directory, key)
        log.warning("recomputing the missing or damaged cache shard %s of %s", shard, path)
        _compute((str(path), self.config, str(shard), str(self.directory / "tmp")))
        try:
            return np.load(shard, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(
                f"{path} changed or became unreadable while the cache was built; run again"
            ) from err


def _assemble(
    paths: list[Path],
    keys: list[str | None],
    config: LogMelConfig,
    directory: Path,
    final: Path,
    problems: dict[int, tuple[str, str]],
    assembled: dict[str, tuple[Path, int, int]],
) -> None:
    """Concatenate the clips into ``final`` (written under a temporary name, then renamed), then
    delete their shards: the finished cache holds them, so the disk keeps them once. The index lists
    the files skipped and, apart, those used only in part (kind ``truncated``)."""
    source = _ClipSource(config, directory, assembled)
    rows = [i for i in range(len(keys)) if problems.get(i, ("",))[0] in ("", "truncated")]
    frames = sum(source.frames_count(paths[i], keys[i]) for i in rows)
    needed, free = frames * config.n_mels * 2, shutil.disk_usage(directory).free
    if free < needed:
        space = OSError(
            errno.ENOSPC, f"the cache needs {needed / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free"
        )
        raise _no_space(space, directory.parent, directory)
    tmp = directory / f".{final.name}.tmp-{_tmp_tag()}"
    tmp.mkdir()
    try:
        clips, offset = [], 0
        with (tmp / FEATURES_FILE).open("wb") as out:
            for i in tqdm(rows, desc="writing cache", unit="clip", leave=False):
                feats = source.frames(paths[i], keys[i])
                out.write(feats.tobytes())
                clips.append(
                    {"path": resolved(paths[i]), "key": keys[i], "offset": offset, "frames": len(feats)}
                )
                offset += len(feats)
            out.flush()
            os.fsync(out.fileno())
        listed = {
            what: [
                {"path": str(paths[i]), "kind": kind, "reason": message}
                for i, (kind, message) in sorted(problems.items())
                if (kind == "truncated") == (what == "partial")
            ]
            for what in ("skipped", "partial")
        }
        index = {"config": asdict(config), "n_mels": config.n_mels, "clips": clips, **listed}
        with (tmp / INDEX_FILE).open("w") as out:
            out.write(json.dumps(index))
            out.flush()
            os.fsync(out.fileno())
        _fsync_dir(tmp)  # the folder's entries too, so a power loss cannot leave an empty index
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / INDEX_FILE).is_file():  # not a lost race with another builder
                raise
        _fsync_dir(directory)  # and the rename itself
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for i in rows:
        shard_path(directory, keys[i]).unlink(missing_ok=True)


@dataclass(frozen=True)
class CacheEntry:
    """One finished manifest (``clips`` and ``last_used``) or, with ``clips`` None, what a settings
    folder holds besides its finished manifests: shards and temporaries of unfinished builds."""

    path: Path
    clips: int | None
    size: int
    last_used: float


def _tree(path: Path) -> tuple[int, float]:
    """Bytes under ``path`` and the newest modification time there (``path`` included); links are
    not followed, and what vanishes meanwhile (a build at work) is not counted."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return 0, 0.0
    if not stat.S_ISDIR(st.st_mode):
        return (st.st_size if stat.S_ISREG(st.st_mode) else 0), st.st_mtime
    size, newest = 0, st.st_mtime
    for child in _children(path):
        child_size, child_newest = _tree(child)
        size, newest = size + child_size, max(newest, child_newest)
    return size, newest


def _children(path: Path) -> list[Path]:
    try:
        return list(path.iterdir())
    except FileNotFoundError:
        return []


def _settings_dirs(cache_root: Path) -> list[Path]:
    return sorted(d for d in cache_root.glob("logmel-*") if d.is_dir() and not d.is_symlink())


def _finished(directory: Path) -> list[Path]:
    return sorted(
        d for d in directory.glob("manifest-*") if not d.is_symlink() and (d / INDEX_FILE).is_file()
    )


def cache_entries(cache_root: str | Path) -> list[CacheEntry]:
    """What ``cache_root`` holds, settings folder by settings folder."""
    cache_root = Path(cache_root)
    if not cache_root.is_dir():
        raise MissingFileError(
            f"{cache_root}: no such cache folder (data.init_args.cache_dir; default cache/)"
        )
    entries = []
    for directory in _settings_dirs(cache_root):
        manifests = _finished(directory)
        for manifest in manifests:
            try:
                clips = len(json.loads((manifest / INDEX_FILE).read_text())["clips"])
            except (OSError, ValueError, KeyError):
                clips = 0
            size, _ = _tree(manifest)
            entries.append(CacheEntry(manifest, clips, size, manifest.lstat().st_mtime))
        rest = [_tree(e) for e in _leftovers(directory, manifests)]
        size = sum(t[0] for t in rest)
        if size:  # (an empty tmp/ is no build's leftover)
            entries.append(CacheEntry(directory, None, size, max(t[1] for t in rest)))
    return entries


def _leftovers(directory: Path, manifests: Sequence[Path]) -> list[Path]:
    return [e for e in _children(directory) if e not in manifests and e.name != CONFIG_FILE]


def _build_running(directory: Path, cutoff: float) -> bool:
    """Whether a build marker in ``tmp/`` is a live process's on this host, or another host's that
    is younger than ``cutoff`` (its process cannot be asked)."""
    for marker in (directory / "tmp").glob(f"{BUILDING}.*"):
        m = _TMP_TAG.search(marker.name)
        if m is None:
            continue
        if m["host"] == _HOST and _pid_alive(int(m["pid"])):
            return True
        if m["host"] != _HOST and _tree(marker)[1] >= cutoff:
            return True
    return False


def _delete(path: Path) -> None:
    """Remove a file, link or folder; what is gone already is no error."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return

    def gone_already(func, name, exc_info) -> None:
        if not issubclass(exc_info[0], FileNotFoundError):
            raise exc_info[1]

    shutil.rmtree(path, onerror=gone_already)


def prune(cache_root: str | Path, older_than_days: float, dry_run: bool = False) -> list[CacheEntry]:
    """Delete the manifests no run has read for ``older_than_days`` days, and a settings folder's
    leftovers of killed builds when nothing there changed for as long; a settings folder left without
    manifests goes too. A folder with a build running is left alone, and each item's age is checked
    again just before it goes. Returns what was (or, with ``dry_run``, would be) deleted."""
    if older_than_days < 1:  # a run marks the manifest it reads only hourly (feature_cache.MARK_EVERY)
        raise ValueError(f"prune what no run read for at least 1 day, not {older_than_days}")
    cutoff = time.time() - older_than_days * 86400
    cache_root = Path(cache_root)
    old = [
        e
        for e in cache_entries(cache_root)
        if e.last_used < cutoff and not _build_running(e.path if e.clips is None else e.path.parent, cutoff)
    ]
    if dry_run:
        return old
    for entry in old:
        if entry.clips is not None:
            if _tree(entry.path)[1] < cutoff:  # not read since it was listed
                _delete(entry.path)
            continue
        for item in _leftovers(entry.path, _finished(entry.path)):
            if _tree(item)[1] < cutoff:
                _delete(item)
    for directory in _settings_dirs(cache_root):
        children = _children(directory)
        if (
            not any(f.name.startswith("manifest-") for f in children)
            and all(_tree(f)[1] < cutoff for f in children)
            and not _build_running(directory, cutoff)
        ):
            _delete(directory)
    return old
