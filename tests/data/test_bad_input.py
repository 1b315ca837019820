"""Every row of docs/robustness.md: what the cache and the data modules do with bad audio and tables.

Unusable files are skipped with one warning naming the file and the reason, plus a summary count;
usable odd files (silent, short, long, multichannel, any rate or sample format, damaged but partly
decodable) are cached like any other and never put NaN or inf into features, statistics or the loss.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import ser_ssl.data.cache as cache_mod
from ser_ssl.audio import LogMel, LogMelConfig, load_audio
from ser_ssl.audio.io import BLOCK_FRAMES, AudioError
from ser_ssl.data import CSVManifest, FolderSource, LabeledDataModule, SSLDataModule
from ser_ssl.data.cache import build_cache
from ser_ssl.data.feature_cache import FeatureCache
from ser_ssl.data.views import PatchSource, TwoViewDataset
from ser_ssl.errors import DataError
from ser_ssl.models import VGGLike
from ser_ssl.tasks import SimCLR
from tests.data.test_sources import write_csv

RATE = 22050


def noise(seconds: float, rate: int = RATE, channels: int = 1, seed: int = 0) -> np.ndarray:
    n = max(1, int(seconds * rate))
    return (0.1 * np.random.default_rng(seed).standard_normal((n, channels))).astype(np.float32)


def cut(path: Path, keep: float) -> Path:
    """Cut ``path`` off after ``keep`` of its bytes."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def corrupt(path: Path, at: float, n: int = 500) -> Path:
    """Overwrite ``n`` bytes at ``at`` of the file with random bytes."""
    data = bytearray(path.read_bytes())
    pos = int(len(data) * at)
    data[pos : pos + n] = np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


# ---- rows that are used: name -> writer(path stem) returning the file -------------------------------
def _usable(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def write(name: str, data: np.ndarray, rate: int = RATE, **kwargs) -> Path:
        files[name] = root / name
        sf.write(files[name], data, rate, **kwargs)
        return files[name]

    write("silent.wav", np.zeros(RATE, dtype=np.float32))
    write("short 50 ms.wav", noise(0.05))
    write("one sample.wav", noise(0, 8000), 8000)
    for ch in (2, 3, 8):
        write(f"{ch} channels.wav", noise(0.3, channels=ch, seed=ch))
    for rate in (8000, 16000, 44100, 48000, 96000):
        write(f"{rate} Hz.wav", noise(0.3, rate, seed=rate), rate)
    for subtype in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"):
        write(f"{subtype}.wav", noise(0.3, seed=1), subtype=subtype)
    write("clip.flac", noise(0.3, seed=2))
    write("clip.ogg", noise(0.3, seed=3))
    write("ünïcödé 音 name.wav", noise(0.3, seed=4))
    cut(write("cut.wav", noise(1.0, seed=5)), 0.5)
    cut(write("cut.ogg", noise(3.0, seed=6)), 0.7)
    cut(write("cut long.flac", noise(3 * BLOCK_FRAMES / RATE, seed=7)), 0.9)
    return files


USABLE = [
    "silent.wav",
    "short 50 ms.wav",
    "one sample.wav",
    "2 channels.wav",
    "3 channels.wav",
    "8 channels.wav",
    "8000 Hz.wav",
    "16000 Hz.wav",
    "44100 Hz.wav",
    "48000 Hz.wav",
    "96000 Hz.wav",
    "PCM_U8.wav",
    "PCM_16.wav",
    "PCM_24.wav",
    "PCM_32.wav",
    "FLOAT.wav",
    "DOUBLE.wav",
    "clip.flac",
    "clip.ogg",
    "ünïcödé 音 name.wav",
    "cut.wav",
    "cut.ogg",
    "cut long.flac",
]


# ---- rows that are skipped: name -> expected kind ------------------------------------------------------
def _unusable(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = {name: root / name for name in UNUSABLE}
    files["png.wav"].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(300))
    files["text.wav"].write_text("not audio at all\n" * 30)
    files["zero bytes.wav"].write_bytes(b"")
    sf.write(files["no frames.wav"], np.zeros(0, dtype=np.float32), RATE)
    sf.write(files["no frames.ogg"], np.zeros(0, dtype=np.float32), RATE)
    sf.write(files["cut short.flac"], noise(0.5), RATE)
    cut(files["cut short.flac"], 0.5)
    sf.write(files["corrupt.flac"], noise(0.5), RATE)
    corrupt(files["corrupt.flac"], 0.3)
    for name, bad in [("nan.wav", np.nan), ("inf.wav", np.inf)]:
        x = noise(0.3)
        x[100] = bad
        sf.write(files[name], x, RATE, subtype="FLOAT")
    sf.write(files["huge.wav"], np.full(4000, 3e38, dtype=np.float32), RATE, subtype="FLOAT")
    files["a folder.wav"].mkdir()
    return files  # "missing.wav" is never written


UNUSABLE = {
    "png.wav": "unreadable",
    "text.wav": "unreadable",
    "zero bytes.wav": "unreadable",
    "no frames.wav": "empty",
    "no frames.ogg": "empty",
    "cut short.flac": "unreadable",
    "corrupt.flac": "unreadable",
    "nan.wav": "non-finite",
    "inf.wav": "non-finite",
    "huge.wav": "non-finite",
    "missing.wav": "missing",
    "a folder.wav": "unreadable",  # "not a regular file"
}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """One cache over every usable and unusable row (built once), and the warnings it logged."""
    root = tmp_path_factory.mktemp("zoo")
    good, bad = _usable(root / "good"), _unusable(root / "bad")
    paths = [good[n] for n in USABLE] + [bad[n] for n in UNUSABLE]
    logger = logging.getLogger("ser_ssl")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        cache = FeatureCache(build_cache(paths, LogMelConfig(), root / "cache"))
    finally:
        logger.removeHandler(handler)
    return {"cache": cache, "good": good, "bad": bad, "warnings": [r.getMessage() for r in records]}


@pytest.mark.parametrize("name", USABLE)
def test_usable_file_is_cached_as_decoded(zoo, name):
    path = zoo["good"][name]
    cache = zoo["cache"]
    row = cache.row_of()[str(path.resolve())]
    config = LogMelConfig()
    with cache_mod.one_thread():  # as the cache computes them, so the float16 rounding is the same
        expected = LogMel(config)(load_audio(path, config.sample_rate)).T.numpy().astype(np.float16)
    got = np.asarray(cache.frames(row))
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, expected)  # the same numbers as decoding it by hand


def test_silent_clip_is_the_log_offset_not_minus_infinity(zoo):
    cache = zoo["cache"]
    frames = np.asarray(cache.frames(cache.row_of()[str(zoo["good"]["silent.wav"].resolve())]))
    assert np.all(frames == np.float16(np.log10(LogMelConfig().log_offset)))


def test_short_clip_gives_at_least_one_frame_and_odd_rates_the_right_length(zoo):
    cache, good = zoo["cache"], zoo["good"]
    length = {n: int(cache.lengths[cache.row_of()[str(good[n].resolve())]]) for n in USABLE}
    assert length["short 50 ms.wav"] == length["one sample.wav"] == 1 + 2048 // 220  # tiled to one FFT
    for rate in (8000, 16000, 44100, 48000, 96000):
        assert length[f"{rate} Hz.wav"] == 1 + int(0.3 * RATE) // 220


def test_damaged_but_partly_decodable_files_are_used_with_a_warning(zoo):
    warnings = zoo["warnings"]
    (flac,) = [w for w in warnings if "cut long.flac" in w]
    assert "using the decoded part" in flac and "decoded 131072 of the 196608 frames" in flac
    assert any("used 1 of" in w and "only in part" in w for w in warnings)
    # a cut WAV or OGG is read to where it ends: libsndfile corrects their length, nothing to warn about
    cache, good = zoo["cache"], zoo["good"]
    assert cache.lengths[cache.row_of()[str(good["cut.wav"].resolve())]] < 1 + RATE // 220


@pytest.mark.parametrize("name", UNUSABLE)
def test_unusable_file_is_skipped_with_one_warning(zoo, name):
    path = zoo["bad"][name]
    assert str(path.resolve()) not in zoo["cache"].row_of()
    (entry,) = [s for s in zoo["cache"].skipped if s["path"] == str(path)]
    assert entry["kind"] == UNUSABLE[name] and name in entry["reason"]
    assert len([w for w in zoo["warnings"] if name in w]) == 1


def test_skips_are_summed_up_by_reason(zoo):
    (summary,) = [w for w in zoo["warnings"] if w.startswith("skipped")]
    total = len(USABLE) + len(UNUSABLE)
    assert summary == f"skipped 12 of {total} files: 6 unreadable, 3 non-finite, 2 empty, 1 missing"


@pytest.mark.parametrize(
    "name, error",
    [
        ("nan.wav", "contains non-finite samples"),
        ("png.wav", "cannot decode"),
        ("missing.wav", "file not found"),
    ],
)
def test_strict_mode_fails_on_the_first_unusable_file(zoo, tmp_path, name, error):
    paths = [zoo["good"]["clip.flac"], zoo["bad"][name], zoo["bad"]["text.wav"]]
    with pytest.raises((AudioError, FileNotFoundError), match=f"{name}: {error}.*strict"):
        build_cache(paths, LogMelConfig(), tmp_path, strict=True)


def test_strict_mode_also_refuses_a_partly_decodable_file(zoo, tmp_path):
    with pytest.raises(AudioError, match="cut long.flac: truncated or corrupt.*strict"):
        build_cache([zoo["good"]["cut long.flac"]], LogMelConfig(), tmp_path, strict=True)


def test_a_cache_built_with_bad_files_reports_them_again_and_strict_still_refuses_it(zoo, tmp_path, caplog):
    good, cut = zoo["good"]["clip.flac"], zoo["good"]["cut long.flac"]
    paths = [good, cut, zoo["bad"]["png.wav"]]
    first = build_cache(paths, LogMelConfig(), tmp_path)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert build_cache(paths, LogMelConfig(), tmp_path) == first  # reused, nothing decoded
    index = str(first / "index.json")
    assert [r.getMessage() for r in caplog.records] == [
        f"skipped 1 of 3 files: 1 unreadable (listed in {index})",
        f"used 1 of 3 files only in part (truncated or corrupt) (listed in {index})",
    ]
    with pytest.raises(AudioError, match="png.wav: cannot decode.*strict mode; found when the cache"):
        build_cache(paths, LogMelConfig(), tmp_path, strict=True)
    build_cache(paths[:2], LogMelConfig(), tmp_path / "c2")  # a file used in part, nothing skipped
    with pytest.raises(AudioError, match="cut long.flac: truncated or corrupt.*strict mode; found when"):
        build_cache(paths[:2], LogMelConfig(), tmp_path / "c2", strict=True)
    cache = FeatureCache(first)
    assert len(cache) == 2 and [s["kind"] for s in cache.skipped] == ["unreadable"]


def test_nothing_usable_is_a_data_error(zoo, tmp_path):
    bad = [zoo["bad"][n] for n in ("png.wav", "nan.wav", "no frames.wav")]
    with pytest.raises(
        DataError, match="none of the 3 audio files could be used .1 empty, 1 non-finite, 1 unreadable"
    ):
        build_cache(bad, LogMelConfig(), tmp_path)
    with pytest.raises(DataError, match="no audio files to cache: the data set is empty"):
        build_cache([], LogMelConfig(), tmp_path)


def test_ten_minute_clip_is_cached_and_read_lazily(tmp_path):
    """A long clip caches like a short one; reading a patch maps only its pages, never the file."""
    sf.write(tmp_path / "long.wav", noise(600.0, 8000), 8000, subtype="PCM_16")
    sf.write(tmp_path / "short.wav", noise(0.5, 8000, seed=1), 8000)
    config = LogMelConfig(sample_rate=8000, n_fft=256, win_length=200, hop_length=80, n_mels=16, f_max=3800)
    cache = FeatureCache(build_cache([tmp_path / "long.wav", tmp_path / "short.wav"], config, tmp_path / "c"))
    assert cache.lengths.tolist() == [1 + 600 * 8000 // 80, 1 + 4000 // 80]
    assert cache._data is None  # opening a cache reads only its index
    patch = cache.frames(0, 30000, 30101)
    assert isinstance(patch, np.memmap) and not patch.flags.owndata and patch.shape == (101, 16)
    assert np.shares_memory(patch, cache.data) and np.isfinite(patch).all()
    views = TwoViewDataset(cache, [0, 1], patch_frames=101)[0]["views"]
    patches = PatchSource.of_cache(cache).gather(torch.tensor([0, 1]), torch.tensor([59000, 0]), 101)
    assert views.shape == (2, 1, 16, 101) and patches.shape == (2, 1, 16, 101)  # the short clip is tiled
    assert torch.isfinite(patches).all()
    assert cache.lengths[0] > cache_mod.CHUNK_FRAMES  # computed in chunks, to the same numbers
    with cache_mod.one_thread():  # the thread count the cache computes with: chunks change no bit
        whole = LogMel(config)(load_audio(tmp_path / "long.wav", 8000)).T.numpy().astype(np.float16)
    np.testing.assert_array_equal(np.asarray(cache.frames(0)), whole)


# ---- tables: manifests and data sets -------------------------------------------------------------------
def clips(root: Path, rows: list[tuple[str, str, str]], silent: set[str] = frozenset()) -> Path:
    """Write 0.3 s clips for ``rows`` of (file, label, split) and a manifest listing them."""
    for k, (name, _, _) in enumerate(rows):
        x = np.zeros(int(0.3 * RATE), dtype=np.float32) if name in silent else noise(0.3, seed=k)[:, 0]
        if name != "missing.wav":
            sf.write(root / name, x, RATE)
    return write_csv(root / "manifest.csv", [list(r) for r in rows], ["filename", "label", "split"])


def module(cls, manifest: Path, cache: Path, **kwargs):
    dm = cls(manifest=str(manifest), cache_dir=str(cache), num_workers=0, patch_frames=16, **kwargs)
    dm.setup("fit")
    return dm


def test_a_manifest_row_whose_file_is_missing_is_skipped(tmp_path, caplog):
    rows = [(f"{i}.wav", "a" if i % 2 else "b", "train") for i in range(4)] + [("missing.wav", "a", "train")]
    with caplog.at_level(logging.WARNING):
        dm = module(LabeledDataModule, clips(tmp_path, rows), tmp_path / "cache", batch_size=2)
    assert len(dm.clips) == 4 and all(c.path.name != "missing.wav" for c in dm.clips)
    assert any("missing.wav: file not found" in r.message for r in caplog.records)


def test_an_eval_label_absent_from_training_fails_at_setup_naming_it(tmp_path):
    rows = [(f"{i}.wav", "ab"[i % 2], "train") for i in range(4)] + [("4.wav", "c", "test")]
    with pytest.raises(
        DataError, match=r"1 clips of split 'test' have labels \['c'\].*4.wav.*move or add some"
    ):
        module(LabeledDataModule, clips(tmp_path, rows), tmp_path / "cache", batch_size=2)
    # pretraining ignores labels; its kNN monitor leaves out the query classes it cannot vote for
    rows[-1:] = [("4.wav", "c", "val"), ("5.wav", "a", "val")]
    dm = module(SSLDataModule, clips(tmp_path, rows), tmp_path / "cache", batch_size=2)
    _, query = dm.knn_dataloaders()
    assert [int(t) for t in query.dataset.targets] == [0]


def test_the_knn_monitor_is_off_with_a_warning_when_no_query_class_is_in_its_bank(tmp_path, caplog):
    rows = [(f"{i}.wav", "ab"[i % 2], "train") for i in range(4)] + [("4.wav", "c", "val")]
    dm = module(SSLDataModule, clips(tmp_path, rows), tmp_path / "cache", batch_size=2)
    with caplog.at_level(logging.WARNING):
        assert dm.knn_dataloaders() is None
    assert "no kNN monitor: no clip of split 'val' has a class of split 'train' (2 classes)" in caplog.text


def test_a_training_label_lost_to_skipped_files_is_reported_the_same_way(tmp_path):
    rows = [(f"{i}.wav", "ab"[i % 2], "train") for i in range(4)] + [("4.wav", "c", "train")]
    rows += [("5.wav", "c", "val")]
    manifest = clips(tmp_path, rows)
    (tmp_path / "4.wav").write_text("broken")
    with pytest.raises(DataError, match="split 'val' have labels \\['c'\\]"):
        module(LabeledDataModule, manifest, tmp_path / "cache", batch_size=2)


def test_a_single_class_cannot_train_a_classifier_but_can_pretrain(tmp_path):
    manifest = clips(tmp_path, [(f"{i}.wav", "kick", "train") for i in range(4)])
    with pytest.raises(DataError, match="one class only .*'kick'.*at least two"):
        module(LabeledDataModule, manifest, tmp_path / "cache", batch_size=2)
    assert module(SSLDataModule, manifest, tmp_path / "cache", batch_size=2).train_dataloader()


def test_an_empty_data_set_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="lists no clips"):
        module(SSLDataModule, write_csv(tmp_path / "m.csv", [], ["filename", "label"]), tmp_path / "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no audio files with the extensions"):
        SSLDataModule(source=FolderSource(str(tmp_path / "empty")), cache_dir=str(tmp_path / "c")).setup()


def test_a_data_set_smaller_than_one_batch_says_to_lower_the_batch_size(tmp_path):
    manifest = clips(tmp_path, [(f"{i}.wav", "ab"[i % 2], "train") for i in range(3)])
    for cls in (SSLDataModule, LabeledDataModule):
        with pytest.raises(
            DataError, match="3 usable clips, fewer than one batch of 4.*lower --data.batch_size"
        ):
            module(cls, manifest, tmp_path / "cache", batch_size=4).train_dataloader()
    (tmp_path / "one").mkdir()
    one = clips(tmp_path / "one", [("0.wav", "a", "train")])
    with pytest.raises(DataError, match="at least 2 clips"):
        module(SSLDataModule, one, tmp_path / "cache", batch_size=1).train_dataloader()


def test_a_split_whose_every_file_is_unusable_is_a_data_error(tmp_path):
    manifest = clips(tmp_path, [("0.wav", "a", "train"), ("1.wav", "a", "val")])
    (tmp_path / "0.wav").write_bytes(b"")
    with pytest.raises(DataError, match="no usable clip in split 'train'"):
        module(SSLDataModule, manifest, tmp_path / "cache", batch_size=1)


@pytest.mark.parametrize("all_silent", [False, True], ids=["some-silent", "all-silent"])
def test_silent_clips_keep_statistics_mixback_and_loss_finite(tmp_path, all_silent):
    rows = [(f"{i}.wav", "ab"[i % 2], "train") for i in range(6)]
    silent = {r[0] for r in rows} if all_silent else {"0.wav", "1.wav", "2.wav"}
    dm = SSLDataModule(
        manifest=str(clips(tmp_path, rows, silent)),
        cache_dir=str(tmp_path / "cache"),
        num_workers=0,
        batch_size=6,
        knn_splits=None,
    )
    dm.setup("fit")
    assert torch.isfinite(dm.norm_mean).all() and torch.isfinite(dm.norm_std).all()
    torch.manual_seed(0)
    model = SimCLR(encoder=VGGLike(channels=(4, 8), embed_dim=16), proj_hidden_dim=16, proj_dim=8)
    model.normalizer.set_stats(dm.norm_mean, dm.norm_std)
    batch = next(iter(dm.train_dataloader()))
    views = model.mixback(batch["views"], batch["backgrounds"])  # silent views and silent backgrounds
    assert torch.isfinite(views).all()
    x = model.make_views(batch)
    assert torch.isfinite(x).all()
    n = x.shape[0] // 2
    z = model.head(model.encoder(x)).view(n, 2, -1)
    loss = model.criterion(z[:, 0], z[:, 1])
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_csv_manifest_source_with_odd_names(tmp_path):
    names = ["with space.wav", "ünïcödé 音.wav", "comma, in name.wav"]
    manifest = clips(tmp_path, [(n, "ab"[i % 2], "train") for i, n in enumerate(names)])
    dm = SSLDataModule(source=CSVManifest(str(manifest)), cache_dir=str(tmp_path / "c"), num_workers=0)
    dm.setup("fit")
    assert sorted(c.path.name for c in dm.clips) == sorted(names)
