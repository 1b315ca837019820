"""Cache builds that are killed, repeated, changed, run twice at once or run out of disk lose nothing:
finished clips are kept as shards and reused, and training never reads a half-written cache."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import ser_ssl.data.cache as cache_mod
from ser_ssl.audio import LogMelConfig
from ser_ssl.data.cache import build_cache, config_dir
from ser_ssl.data.feature_cache import FEATURES_FILE, INDEX_FILE, FeatureCache
from ser_ssl.errors import DataError

REPO = Path(__file__).resolve().parents[2]
N_FILES = 40

# A build in a child process, each clip slowed down so that it can be killed part way. The child
# imports the cache module without the ``ser_ssl.data`` package's __init__ (and so without
# Lightning): a third of the start-up time, which is most of these tests' time.
CHILD = """
import sys, time, types
sys.modules["ser_ssl.data"] = types.ModuleType("ser_ssl.data")
sys.modules["ser_ssl.data"].__path__ = [sys.argv[4]]
import ser_ssl.data.cache as c
from ser_ssl.audio import LogMelConfig
real, delay = c._compute, float(sys.argv[3])
def slow(job):
    time.sleep(delay)
    return real(job)
c._compute = slow
print(c.build_cache(open(sys.argv[1]).read().splitlines(), LogMelConfig(), sys.argv[2]))
"""


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N_FILES):
        paths.append(root / f"clip {i:02d}.wav")
        sf.write(paths[-1], 0.1 * rng.standard_normal(2000 + 100 * i).astype(np.float32), 22050)
    return paths


@pytest.fixture(scope="module")
def reference(audio, tmp_path_factory) -> FeatureCache:
    """An uninterrupted build in this process."""
    return FeatureCache(build_cache(audio, LogMelConfig(), tmp_path_factory.mktemp("reference")))


def child(audio: list[Path], cache: Path, delay: float) -> subprocess.Popen:
    listing = cache.parent / f"list-{time.monotonic_ns()}.txt"
    listing.write_text("\n".join(map(str, audio)))
    package = Path(cache_mod.__file__).parent
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(listing), str(cache), str(delay), str(package)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def shards(cache: Path, config: LogMelConfig | None = None) -> list[Path]:
    return sorted(config_dir(cache, config or LogMelConfig()).glob("shards/*/*.npy"))


def finals(cache: Path) -> list[Path]:
    return sorted(cache.glob("logmel-*/manifest-*"))


class Counting:
    """Wraps the per-file feature function and counts the files it decodes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real, self.files = cache_mod._compute, []
        monkeypatch.setattr(cache_mod, "_compute", self)

    def __call__(self, job):
        self.files.append(Path(job[0]).name)
        return self.real(job)


def same_features(a: FeatureCache, b: FeatureCache) -> bool:
    same_bytes = (a.directory / FEATURES_FILE).read_bytes() == (b.directory / FEATURES_FILE).read_bytes()
    return same_bytes and [Path(p).name for p in a.paths] == [Path(p).name for p in b.paths]


def test_a_killed_build_keeps_finished_clips_and_a_rebuild_computes_only_the_rest(
    audio, reference, tmp_path, monkeypatch
):
    (tmp_path / "audio").mkdir()
    audio = [Path(shutil.copy2(p, tmp_path / "audio" / p.name)) for p in audio]  # this test changes one
    cache = tmp_path / "cache"
    proc = child(audio, cache, delay=0.1)
    try:
        deadline = time.monotonic() + 60
        while len(shards(cache)) < 5:
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the child made no progress"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()  # reaped, so its pid counts as dead for the leftover clean-up
    done = len(shards(cache))
    assert 5 <= done < N_FILES
    assert finals(cache) == []  # nothing readable, not even a temporary
    counting = Counting(monkeypatch)
    rebuilt = FeatureCache(build_cache(audio, LogMelConfig(), cache))
    assert len(counting.files) == N_FILES - done  # every finished clip was reused
    assert same_features(rebuilt, reference)  # and the result is the uninterrupted build's
    assert list((config_dir(cache, LogMelConfig()) / "tmp").iterdir()) == []  # the child's leftovers
    assert shards(cache) == []  # the finished cache holds every clip once

    # one changed file recomputes one clip and gives a new cache; the others come from the first one
    sf.write(audio[7], np.zeros(3000, dtype=np.float32), 22050)
    os.utime(audio[7], ns=(10**18, 10**18))
    counting.files.clear()
    changed = FeatureCache(build_cache(audio, LogMelConfig(), cache))
    assert counting.files == [audio[7].name]
    assert changed.directory != rebuilt.directory and shards(cache) == []
    for row in (0, 6, 8, N_FILES - 1):
        assert np.array_equal(changed.frames(row), rebuilt.frames(row))
    assert np.all(np.asarray(changed.frames(7)) == np.float16(np.log10(1.1e-8)))

    # a changed feature setting is a new configuration directory of its own
    counting.files.clear()
    other = build_cache(audio[:3], LogMelConfig(n_mels=64), cache)
    assert other.parent == config_dir(cache, LogMelConfig(n_mels=64)) != config_dir(cache, LogMelConfig())
    assert len(counting.files) == 3 and shards(cache, LogMelConfig(n_mels=64)) == []
    assert json.loads((other.parent / "config.json").read_text())["n_mels"] == 64


def test_two_concurrent_builds_end_with_one_valid_cache(audio, reference, tmp_path):
    cache = tmp_path / "cache"
    procs = [child(audio, cache, delay=0.02) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert outs[0][0].strip() == outs[1][0].strip() == str(finals(cache)[0])
    assert len(finals(cache)) == 1  # and no temporary left behind
    assert same_features(FeatureCache(finals(cache)[0]), reference)
    assert list((config_dir(cache, LogMelConfig()) / "tmp").iterdir()) == []


def test_a_damaged_shard_is_recomputed(audio, reference, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    real = cache_mod._compute

    def interrupted(job):
        if len(shards(cache)) == 2:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(cache_mod, "_compute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_cache(audio[:4], LogMelConfig(), cache)
    monkeypatch.undo()
    (shard, _) = shards(cache)
    shard.write_bytes(shard.read_bytes()[:100])  # as a crash of the machine could leave it
    counting = Counting(monkeypatch)
    rebuilt = FeatureCache(build_cache(audio[:4], LogMelConfig(), cache))
    assert len(counting.files) == 3  # the two never finished and the damaged one
    for row in range(4):
        assert np.array_equal(rebuilt.frames(row), reference.frames(row))


def test_the_disk_holds_each_clip_once_after_a_build(audio, tmp_path):
    cache = tmp_path / "cache"
    final = build_cache(audio, LogMelConfig(), cache)
    on_disk = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    features = (final / FEATURES_FILE).stat().st_size
    assert shards(cache) == [] and on_disk <= 1.1 * features


def test_leftovers_of_dead_builds_are_removed_and_live_ones_kept(audio, tmp_path):
    cache = tmp_path / "cache"
    directory = config_dir(cache, LogMelConfig())
    (directory / "tmp").mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = cache_mod._HOST
    stale = [
        directory / "tmp" / f"abc.{host}-{dead.pid}-deadbeef.npy",
        directory / f".manifest-0123.tmp-{host}-{dead.pid}-deadbeef",
    ]
    live = [
        directory / "tmp" / f"abc.{host}-{os.getpid()}-deadbeef.npy",  # another build in progress
        directory / "tmp" / f"abc.{'0' * 8}-{dead.pid}-deadbeef.npy",  # another machine's
    ]
    stale[0].write_bytes(b"x")
    stale[1].mkdir()
    for p in live:
        p.write_bytes(b"x")
    build_cache(audio[:2], LogMelConfig(), cache)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in live)


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_writing_shards_is_a_clear_error_and_keeps_finished_clips(
    audio, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    real, calls = np.save, []

    def full_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            no_space()
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_mod.np, "save", full_on_third)
    with pytest.raises(DataError, match=f"no space left on the disk of the feature cache {cache}.*cache_dir"):
        build_cache(audio[:5], LogMelConfig(), cache)
    assert len(shards(cache)) == 2 and finals(cache) == []
    assert list((config_dir(cache, LogMelConfig()) / "tmp").iterdir()) == []  # no partial shard
    monkeypatch.setattr(cache_mod.np, "save", real)
    counting = Counting(monkeypatch)
    assert len(FeatureCache(build_cache(audio[:5], LogMelConfig(), cache))) == 5
    assert len(counting.files) == 3


def test_a_full_disk_while_assembling_is_a_clear_error_and_leaves_nothing_readable(
    audio, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    monkeypatch.setattr(cache_mod.os, "fsync", no_space)
    with pytest.raises(DataError, match="no space left.*free some space there"):
        build_cache(audio[:3], LogMelConfig(), cache)
    assert finals(cache) == [] and len(shards(cache)) == 3
    monkeypatch.undo()

    class Usage:
        free = 1000

    monkeypatch.setattr(cache_mod.shutil, "disk_usage", lambda path: Usage)
    with pytest.raises(DataError, match=r"the cache needs \d+\.\d MiB, 0\.0 MiB are free"):
        build_cache(audio[:3], LogMelConfig(), cache)
    assert finals(cache) == []


def test_the_final_directory_is_reused_without_touching_shards(audio, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = build_cache(audio[:3], LogMelConfig(), cache)
    for shard in shards(cache):
        shard.unlink()  # the work files may be deleted to save space once a cache is assembled
    counting = Counting(monkeypatch)
    assert build_cache(audio[:3], LogMelConfig(), cache) == first and counting.files == []
    assert (first / INDEX_FILE).is_file()


def test_losing_the_final_rename_to_another_builder_uses_its_cache(audio, tmp_path, monkeypatch):
    real = os.rename

    def someone_else_finished_first(src, dst):
        shutil.copytree(src, dst)  # the other builder's identical cache lands first
        return real(src, dst)  # so ours cannot be renamed onto it

    monkeypatch.setattr(cache_mod.os, "rename", someone_else_finished_first)
    final = build_cache(audio[:3], LogMelConfig(), tmp_path)
    assert len(FeatureCache(final)) == 3 and finals(tmp_path) == [final]  # ours was removed


def test_an_unwritable_cache_directory_is_a_clear_error(audio, tmp_path, monkeypatch):
    def denied(feats, shard, tmp_dir):
        raise PermissionError(errno.EACCES, "Permission denied", str(shard))

    monkeypatch.setattr(cache_mod, "_save_shard", denied)
    with pytest.raises(DataError, match=f"cannot write the feature cache in {tmp_path}.*cache_dir"):
        build_cache(audio[:2], LogMelConfig(), tmp_path)


def test_the_index_and_the_rename_reach_the_disk_before_the_cache_is_used(audio, tmp_path, monkeypatch):
    synced, real = [], os.fsync

    def record(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(cache_mod.os, "fsync", record)
    final = build_cache(audio[:2], LogMelConfig(), tmp_path / "cache")
    names = [Path(p).name for p in synced]
    assert names[:2] == [FEATURES_FILE, INDEX_FILE]  # both files, in the temporary folder
    assert Path(synced[0]).parent == Path(synced[2]) and ".tmp-" in synced[2]  # that folder's entries
    assert synced[3] == str(final.parent)  # the configuration folder, after the rename
