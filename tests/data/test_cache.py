import logging
import os

import numpy as np
import pytest
import soundfile as sf
import torch

import ser_ssl.data.cache as cache_mod
from ser_ssl.audio import AudioError, LogMel, LogMelConfig, load_audio
from ser_ssl.data.cache import build_cache, config_dir
from ser_ssl.data.feature_cache import FEATURES_FILE, FeatureCache
from ser_ssl.errors import DataError


@pytest.fixture
def wavs(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, (seconds, rate) in enumerate([(0.5, 16000), (1.2, 22050), (0.05, 44100), (2.0, 48000)]):
        p = tmp_path / "audio" / f"clip {i}.wav"  # a space in the name on purpose
        p.parent.mkdir(exist_ok=True)
        sf.write(p, 0.1 * rng.standard_normal(int(seconds * rate)).astype(np.float32), rate)
        paths.append(p)
    return paths


def test_cache_holds_each_clips_logmel(tmp_path, wavs):
    config = LogMelConfig()
    cache = FeatureCache(build_cache(wavs, config, tmp_path / "cache"))
    assert len(cache) == len(wavs) and cache.n_mels == 96
    for row, path in enumerate(wavs):
        expected = LogMel(config)(load_audio(path, config.sample_rate)).T.numpy()
        got = np.asarray(cache.frames(row), dtype=np.float32)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-2, rtol=1e-3)  # float16 storage
    assert cache.frames(1, 3, 7).shape == (4, 96)


def test_cache_is_reused_and_rebuilt_when_settings_or_files_change(tmp_path, wavs):
    root = tmp_path / "cache"
    first = build_cache(wavs, LogMelConfig(), root)
    mtime = (first / FEATURES_FILE).stat().st_mtime_ns
    assert build_cache(wavs, LogMelConfig(), root) == first
    assert (first / FEATURES_FILE).stat().st_mtime_ns == mtime
    assert build_cache(wavs, LogMelConfig(n_mels=64), root) != first
    sf.write(wavs[0], np.zeros(9000, dtype=np.float32), 16000)
    os.utime(wavs[0], ns=(1, 1))
    assert build_cache(wavs, LogMelConfig(), root) != first


def test_interrupted_build_leaves_no_readable_cache_and_keeps_finished_clips(tmp_path, wavs, monkeypatch):
    calls = {"n": 0}
    real = cache_mod._compute

    def crash_on_third(job):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(cache_mod, "_compute", crash_on_third)
    root = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        build_cache(wavs, LogMelConfig(), root)
    directory = config_dir(root, LogMelConfig())
    assert [p.name for p in root.iterdir()] == [directory.name]
    assert not list(directory.glob("*manifest-*"))  # nothing final, no temporary left behind
    assert len(list(directory.glob("shards/*/*.npy"))) == 2 and not list((directory / "tmp").iterdir())
    calls["n"] = -100
    assert len(FeatureCache(build_cache(wavs, LogMelConfig(), root))) == len(wavs)
    assert calls["n"] == -100 + len(wavs) - 2  # only the unfinished clips were computed


def test_stale_temporary_directory_is_never_read(tmp_path, wavs):
    root = tmp_path / "cache"
    final = build_cache(wavs, LogMelConfig(), root)
    stale = root / f".{final.name}.tmp-1-deadbeef"
    stale.mkdir()
    (stale / FEATURES_FILE).write_bytes(b"garbage")
    assert build_cache(wavs, LogMelConfig(), root) == final


def test_bad_files_are_skipped_with_a_warning_or_fail_in_strict_mode(tmp_path, wavs, caplog):
    bad = tmp_path / "audio" / "not audio.wav"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with caplog.at_level(logging.WARNING):
        cache = FeatureCache(build_cache([*wavs, bad], LogMelConfig(), tmp_path / "c1"))
    assert len(cache) == len(wavs)
    assert [s["path"] for s in cache.skipped] == [str(bad)]
    assert any("not audio.wav" in r.message for r in caplog.records)
    assert any("skipped 1 of 5" in r.message for r in caplog.records)
    with pytest.raises(AudioError, match="strict"):
        build_cache([*wavs, bad], LogMelConfig(), tmp_path / "c2", strict=True)
    with pytest.raises(DataError, match="none of the 1 audio files"):
        build_cache([bad], LogMelConfig(), tmp_path / "c3")


def test_missing_files_are_skipped_unless_all_are_missing_or_strict(tmp_path, wavs, caplog):
    gone = tmp_path / "gone.wav"
    with caplog.at_level(logging.WARNING):
        cache = FeatureCache(build_cache([*wavs, gone], LogMelConfig(), tmp_path / "cache"))
    assert len(cache) == len(wavs) and cache.skipped[0]["kind"] == "missing"
    assert any("gone.wav: file not found" in r.message for r in caplog.records)
    with pytest.raises(FileNotFoundError, match="gone.wav: file not found.*strict"):
        build_cache([*wavs, gone], LogMelConfig(), tmp_path / "cache", strict=True)
    with pytest.raises(FileNotFoundError, match="none of the 1 listed audio files exist"):
        build_cache([gone], LogMelConfig(), tmp_path / "cache")


@pytest.fixture
def two_threads():
    """The main process computes with 2 intra-op threads, as on a 2-core machine by default."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_parallel_build_equals_serial_build(tmp_path, wavs, two_threads, monkeypatch):
    monkeypatch.setattr(cache_mod, "CLIPS_PER_WORKER", 1)  # a pool even for 4 clips
    # Bit equality holds on one machine because every build computes a clip with one thread
    # (cache.one_thread); before, the 2-thread main process rounded the mel product differently.
    serial = build_cache(wavs, LogMelConfig(), tmp_path / "serial")
    assert torch.get_num_threads() == 2  # the caller's thread count is restored
    parallel = build_cache(wavs, LogMelConfig(), tmp_path / "parallel", num_workers=2)
    assert (serial / FEATURES_FILE).read_bytes() == (parallel / FEATURES_FILE).read_bytes()


def test_a_few_clips_are_computed_without_starting_a_pool(tmp_path, wavs, monkeypatch):
    def no_pool(*args, **kwargs):
        raise AssertionError("a worker pool was started for 4 clips")

    monkeypatch.setattr(cache_mod, "ProcessPoolExecutor", no_pool)
    assert len(FeatureCache(build_cache(wavs, LogMelConfig(), tmp_path / "c", num_workers=2))) == 4
    monkeypatch.setattr(cache_mod, "CLIPS_PER_WORKER", 2)  # 4 clips: 2 workers
    with pytest.raises(AssertionError, match="worker pool"):
        build_cache(wavs, LogMelConfig(), tmp_path / "c2", num_workers=2)


def test_features_agree_to_one_float16_step_whatever_the_thread_count(tmp_path, wavs, two_threads):
    """What the cache promises across thread counts and CPUs: each stored value is the float16
    rounding of the float32 log-mel, give or take one float16 step."""
    config = LogMelConfig()
    cache = FeatureCache(build_cache(wavs, config, tmp_path / "cache"))
    for row, path in enumerate(wavs):
        with torch.inference_mode():  # 2 threads: a different reduction order from the cache's
            expected = LogMel(config)(load_audio(path, config.sample_rate)).T.numpy().astype(np.float16)
        np.testing.assert_array_max_ulp(np.asarray(cache.frames(row)), expected, maxulp=1)


def test_band_stats_match_numpy(tmp_path, wavs):
    cache = FeatureCache(build_cache(wavs, LogMelConfig(), tmp_path / "cache"))
    frames = np.concatenate([np.asarray(cache.frames(r), dtype=np.float64) for r in (0, 2, 3)])
    mean, std = cache.band_stats([0, 2, 3])
    np.testing.assert_allclose(mean, frames.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, frames.std(0), rtol=1e-4)
    assert torch.isfinite(torch.from_numpy(std)).all()
