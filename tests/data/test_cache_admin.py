"""Listing and pruning the feature cache: what no run has used for some days goes, what runs use and
builds in progress stay, and a pruned manifest is built again when a run needs it."""

import os
import time

import numpy as np
import pytest
import soundfile as sf

from ser_ssl.audio import LogMelConfig
from ser_ssl.data.cache import _HOST, BUILDING, build_cache, cache_entries, config_dir, prune
from ser_ssl.data.cache_admin import main
from ser_ssl.data.feature_cache import FeatureCache
from ser_ssl.errors import MissingFileError

DAY = 86400


@pytest.fixture
def wavs(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        paths.append(tmp_path / "audio" / f"{i}.wav")
        paths[-1].parent.mkdir(exist_ok=True)
        sf.write(paths[-1], 0.1 * rng.standard_normal(8000).astype(np.float32), 16000)
    return paths


def age(path, days: float) -> None:
    """Everything under ``path`` (and itself) last changed ``days`` days ago."""
    then = time.time() - days * DAY
    for f in [*path.rglob("*"), path]:
        os.utime(f, (then, then), follow_symlinks=False)


def test_prune_deletes_what_no_run_used_and_keeps_the_rest(tmp_path, wavs):
    root = tmp_path / "cache"
    old, used = build_cache(wavs[:2], LogMelConfig(), root), build_cache(wavs, LogMelConfig(), root)
    other = build_cache(wavs, LogMelConfig(n_mels=64), root)  # another settings folder, nothing else
    age(root, 10)
    assert build_cache(wavs, LogMelConfig(), root) == used  # a run finds it: used now
    assert sorted(e.clips for e in cache_entries(root)) == [2, 3, 3]

    assert {e.path for e in prune(root, 7, dry_run=True)} == {old, other}
    assert old.is_dir() and other.is_dir()  # a dry run deletes nothing
    gone = prune(root, 7)
    assert {e.path for e in gone} == {old, other} and all(e.size > 0 for e in gone)
    assert not old.exists() and used.is_dir()
    assert not config_dir(root, LogMelConfig(n_mels=64)).exists()  # left without manifests
    assert len(FeatureCache(used)) == 3
    rebuilt = build_cache(wavs[:2], LogMelConfig(), root)  # a run that needs it again builds it
    assert rebuilt == old and len(FeatureCache(rebuilt)) == 2


def test_reading_a_manifest_marks_it_used(tmp_path, wavs):
    manifest = build_cache(wavs, LogMelConfig(), tmp_path / "cache")
    age(manifest, 10)
    FeatureCache(manifest).frames(0)  # what a data loader worker does when it starts
    assert prune(tmp_path / "cache", 7) == []


def test_leftovers_of_a_killed_build_go_only_when_nothing_there_changed(tmp_path, wavs):
    root = tmp_path / "cache"
    manifest = build_cache(wavs, LogMelConfig(), root)
    shard = config_dir(root, LogMelConfig()) / "shards" / "ab" / "killed.npy"
    shard.parent.mkdir(parents=True)
    shard.write_bytes(b"x" * 1000)
    (leftover,) = [e for e in cache_entries(root) if e.clips is None]
    assert leftover.size == 1000
    assert prune(root, 7) == []  # just written: a build may be going on
    age(root, 10)
    manifest.touch()  # a run used the finished manifest meanwhile
    (gone,) = prune(root, 7)
    assert gone.clips is None and not shard.parent.parent.exists() and manifest.is_dir()


def test_the_command_lists_prunes_and_names_a_missing_folder(tmp_path, wavs, capsys):
    root = tmp_path / "cache"
    manifest = build_cache(wavs, LogMelConfig(), root)
    main(["list", "--cache-dir", str(root)])
    out = capsys.readouterr().out
    assert f"3 clips  {manifest.relative_to(root)}" in out and "in 1 entries" in out
    age(manifest, 3)
    main(["prune", "--cache-dir", str(root), "--older-than", "2", "--dry-run"])
    assert "would delete" in capsys.readouterr().out and manifest.is_dir()
    main(["prune", "--cache-dir", str(root), "--older-than", "2"])
    assert "deleted" in capsys.readouterr().out and not manifest.exists()
    with pytest.raises(SystemExit):
        main(["prune", "--cache-dir", str(root)])
    assert "needs --older-than" in capsys.readouterr().err
    with pytest.raises(MissingFileError, match="no such cache folder"):
        main(["list", "--cache-dir", str(tmp_path / "nope")])


def test_a_long_run_marks_its_manifest_again_every_hour(tmp_path, wavs, monkeypatch):
    manifest = build_cache(wavs, LogMelConfig(), tmp_path / "cache")
    cache = FeatureCache(manifest)
    cache.frames(0)
    age(manifest, 10)
    cache.frames(1)  # within the hour: not marked again
    assert manifest.stat().st_mtime < time.time() - DAY
    monkeypatch.setattr(cache, "_marked", time.time() - 3601)
    cache.frames(1)
    assert manifest.stat().st_mtime > time.time() - 60


def test_a_folder_with_a_build_running_is_left_alone(tmp_path, wavs):
    root = tmp_path / "cache"
    manifest = build_cache(wavs, LogMelConfig(), root)
    tmp = config_dir(root, LogMelConfig()) / "tmp"
    live = tmp / f"{BUILDING}.{_HOST}-{os.getpid()}-0123abcd"  # this process: alive
    live.touch()
    age(root, 10)
    assert prune(root, 7) == [] and manifest.is_dir()
    live.rename(tmp / f"{BUILDING}.{_HOST}-999999999-0123abcd")  # no such process: a killed build
    age(root, 10)
    assert [e.path for e in prune(root, 7)] == [manifest]
    assert not config_dir(root, LogMelConfig()).exists()


def test_stray_files_and_links_in_the_cache_are_no_crash(tmp_path, wavs):
    root = tmp_path / "cache"
    manifest = build_cache(wavs, LogMelConfig(), root)
    (root / "logmel-notes.txt").write_text("mine")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.npy").write_bytes(b"x" * 10)
    (manifest.parent / "linked").symlink_to(elsewhere)
    (manifest.parent / "broken").symlink_to(tmp_path / "nothing")
    assert [e.clips for e in cache_entries(root)] == [3]  # links count no bytes
    age(root, 10)
    prune(root, 7)
    assert not manifest.parent.exists() and (root / "logmel-notes.txt").is_file()
    assert (elsewhere / "keep.npy").is_file()  # a link is removed, not what it points to
    with pytest.raises(ValueError, match="at least 1 day"):
        prune(root, 0.5)
