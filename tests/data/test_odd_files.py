"""Odd files in a real folder: a name that is not valid UTF-8, a symlink loop, a decoder that fails
in an unexpected way. Each is cached or skipped with a warning; the build never stops."""

import logging
import os
from pathlib import Path

import numpy as np
import soundfile as sf

import ser_ssl.data.cache as cache_mod
from ser_ssl.audio import LogMelConfig
from ser_ssl.data import FolderSource, SSLDataModule
from ser_ssl.data.cache import build_cache
from ser_ssl.data.feature_cache import FeatureCache


def write(path, seconds=0.5, rate=16000, seed=0):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    noise = 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate)).astype(np.float32)
    sf.write(os.fsencode(path), noise, rate)
    return path


def test_a_file_name_that_is_not_utf8_is_cached_and_found_again(tmp_path):
    good = write(tmp_path / "good.wav")
    odd = write(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.wav"), seed=1)  # Latin-1 bytes
    cache = FeatureCache(build_cache([good, odd], LogMelConfig(), tmp_path / "cache"))
    assert len(cache) == 2 and not cache.skipped
    assert cache.row_of()[odd] == 1  # reopened from index.json under the same name


def test_a_symlink_loop_is_skipped_as_unreadable(tmp_path, caplog):
    good = write(tmp_path / "good.wav")
    loop = tmp_path / "loop.wav"
    os.symlink(loop, loop)
    with caplog.at_level(logging.WARNING):
        cache = FeatureCache(build_cache([good, loop], LogMelConfig(), tmp_path / "cache"))
    assert len(cache) == 1 and cache.skipped[0]["kind"] == "unreadable"
    assert any("loop.wav" in r.message and "symbolic links" in r.message for r in caplog.records)


def test_a_folder_with_a_symlink_loop_and_an_odd_name_trains(tmp_path, caplog):
    root = tmp_path / "data"
    for label in ("a", "b"):
        for i in range(3):
            write(root / label / f"{label}{i}.wav", seed=i)
    write(os.fsdecode(os.fsencode(root / "a") + b"/x\xff.wav"), seed=9)
    os.symlink(root / "b" / "loop.wav", root / "b" / "loop.wav")
    dm = SSLDataModule(
        source=FolderSource(str(root)),
        cache_dir=str(tmp_path / "cache"),
        num_workers=0,
        batch_size=2,
        patch_frames=16,
        knn_splits=None,
    )
    with caplog.at_level(logging.WARNING):
        dm.prepare_data()
        dm.setup("fit")
    assert len(dm.clips) >= 6 and "views" in next(iter(dm.train_dataloader()))


def test_an_unexpected_error_while_decoding_one_file_skips_only_that_file(tmp_path, monkeypatch, caplog):
    paths = [write(tmp_path / f"c{i}.wav", seed=i) for i in range(3)]
    real = cache_mod.read_audio

    def flaky(path):
        if str(path).endswith("c1.wav"):
            raise MemoryError("cannot allocate 3 GB")
        return real(path)

    monkeypatch.setattr(cache_mod, "read_audio", flaky)
    with caplog.at_level(logging.WARNING):
        cache = FeatureCache(build_cache(paths, LogMelConfig(), tmp_path / "cache"))
    assert len(cache) == 2 and cache.skipped[0]["kind"] == "unreadable"
    assert "MemoryError: cannot allocate 3 GB" in cache.skipped[0]["reason"]
