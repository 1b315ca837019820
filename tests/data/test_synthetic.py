"""Tests of the built-in synthetic data set: reproducibility, layout, variety, caching, difficulty."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_ssl.data import synthetic
from ser_ssl.data.synthetic import CLASSES, generate

SMALL = {"train_per_class": 4, "val_per_class": 2, "test_per_class": 2}
SHORT = {**SMALL, "max_seconds": 1.5}  # for the caching tests, where durations do not matter
SPLITS = ("train", "val", "test")


def _read_manifest(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _read_manifest_from_bytes(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(data.decode().splitlines()))


def _files(root: Path) -> dict[str, bytes]:
    """Every file under root by relative posix path, with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small set shared by the read-only tests; returns the manifest path."""
    return generate(tmp_path_factory.mktemp("small"), seed=0, **SMALL)


def test_same_seed_gives_identical_bytes(small_set: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", seed=0, **SMALL)
    first, second = _files(small_set.parent), _files(again.parent)
    assert first.keys() == second.keys()
    assert len([k for k in first if k.endswith(".wav")]) == 8 * len(CLASSES)
    for name in first:
        assert first[name] == second[name], name


def test_different_seed_gives_different_audio(small_set: Path, tmp_path: Path) -> None:
    other = generate(tmp_path / "other", seed=1, **SMALL)
    first, second = _files(small_set.parent), _files(other.parent)
    wavs = [k for k in first if k.endswith(".wav")]
    assert set(wavs) == {k for k in second if k.endswith(".wav")}
    assert all(first[k] != second[k] for k in wavs)


def test_clip_does_not_depend_on_other_counts(small_set: Path, tmp_path: Path) -> None:
    # more training clips must not change the validation or test clips
    bigger = generate(tmp_path / "bigger", seed=0, train_per_class=6, val_per_class=2, test_per_class=2)
    for row in _read_manifest(small_set):
        a = (small_set.parent / row["filename"]).read_bytes()
        assert a == (bigger.parent / row["filename"]).read_bytes(), row["filename"]


def test_manifest(small_set: Path) -> None:
    root = small_set.parent
    assert small_set.name == "manifest.csv"
    with small_set.open(newline="", encoding="utf-8") as fh:
        assert fh.readline().strip() == "filename,label,split,group"
    rows = _read_manifest(small_set)
    assert len(rows) == 8 * len(CLASSES)
    assert {r["split"] for r in rows} == set(SPLITS)
    for split in SPLITS:
        assert {r["label"] for r in rows if r["split"] == split} == set(CLASSES)
    groups = [r["group"] for r in rows]
    assert len(set(groups)) == len(groups)
    for r in rows:
        assert "\\" not in r["filename"] and not Path(r["filename"]).is_absolute()
        assert (root / r["filename"]).is_file(), r["filename"]
        assert r["filename"] == f"{r['split']}/{r['label']}/{r['group']}.wav"
    # per class and split, indices run 0..count-1
    assert sum(r["split"] == "train" and r["label"] == CLASSES[0] for r in rows) == 4
    meta = json.loads((root / "synthetic.json").read_text())
    assert meta["seed"] == 0 and meta["train_per_class"] == 4 and "version" in meta


def test_variety(small_set: Path) -> None:
    assert len(CLASSES) >= 10 and len(set(CLASSES)) == len(CLASSES)
    durations, rates = [], set()
    for r in _read_manifest(small_set):
        info = sf.info(str(small_set.parent / r["filename"]))
        assert info.channels == 1
        assert info.subtype == "PCM_16" and info.format == "WAV"
        durations.append(info.frames / info.samplerate)
        rates.add(info.samplerate)
    assert 0.3 - 1e-3 <= min(durations) < 1.0
    assert 5.0 < max(durations) <= 8.0 + 1e-3
    assert len(rates) >= 3


def test_clips_are_not_silent_or_clipped(small_set: Path) -> None:
    peaks = []
    for r in _read_manifest(small_set):
        wav, _ = sf.read(str(small_set.parent / r["filename"]))
        peak = np.abs(wav).max()
        assert 10 ** (-31 / 20) < peak < 10 ** (-2.9 / 20), r["filename"]
        peaks.append(peak)
    assert np.std(20 * np.log10(peaks)) > 3  # loudness varies


def test_durations_follow_arguments(tmp_path: Path) -> None:
    path = generate(
        tmp_path,
        seed=3,
        train_per_class=2,
        val_per_class=1,
        test_per_class=0,
        min_seconds=0.5,
        max_seconds=1.0,
    )
    rows = _read_manifest(path)
    assert {r["split"] for r in rows} == {"train", "val"}
    for r in rows:
        info = sf.info(str(tmp_path / r["filename"]))
        assert 0.5 - 1e-3 <= info.frames / info.samplerate <= 1.0 + 1e-3


def test_same_arguments_skip_work(tmp_path: Path) -> None:
    path = generate(tmp_path, seed=0, **SHORT)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    time.sleep(0.05)
    assert generate(tmp_path, seed=0, **SHORT) == path
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert before == after


def test_different_arguments_regenerate(tmp_path: Path) -> None:
    generate(tmp_path, seed=0, **SHORT)
    old = _files(tmp_path)
    path = generate(tmp_path, seed=5, train_per_class=3, val_per_class=2, test_per_class=2, max_seconds=1.5)
    new = _files(tmp_path)
    rows = _read_manifest(path)
    assert len(rows) == 7 * len(CLASSES)
    # stale clips are gone, kept names hold new audio, the json records the new arguments
    assert not any(name.endswith("_0003.wav") for name in new)
    assert {name for name in new if name.endswith(".wav")} == {r["filename"] for r in rows}
    assert all(new[r["filename"]] != old[r["filename"]] for r in rows)
    assert json.loads(new["synthetic.json"])["seed"] == 5


def test_incomplete_set_is_rebuilt(tmp_path: Path) -> None:
    path = generate(tmp_path, seed=0, **SHORT)
    reference = _files(tmp_path)
    path.unlink()  # as if a run died before the manifest was written
    victim = tmp_path / _read_manifest_from_bytes(reference["manifest.csv"])[0]["filename"]
    victim.write_bytes(b"broken")
    assert generate(tmp_path, seed=0, **SHORT) == path
    assert _files(tmp_path) == reference


def test_refuses_foreign_manifest(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("filename,label,split,group\n")
    with pytest.raises(FileExistsError):
        generate(tmp_path, seed=0, **SMALL)
    assert (tmp_path / "manifest.csv").read_text() == "filename,label,split,group\n"


def test_no_temporary_files_left(small_set: Path) -> None:
    leftovers = [p.name for p in small_set.parent.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def test_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    synthetic.main(
        [
            "--root",
            str(tmp_path),
            "--seed",
            "2",
            "--train-per-class",
            "1",
            "--val-per-class",
            "1",
            "--test-per-class",
            "1",
            "--max-seconds",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert str(tmp_path / "manifest.csv") in out
    assert str(3 * len(CLASSES)) in out


def _balanced_accuracy(pred, target, n_classes: int) -> float:
    return float(np.mean([(pred[target == c] == c).float().mean().item() for c in range(n_classes)]))


def _fit_softmax(x, y, l2: float, n_classes: int):
    """Full-batch L-BFGS fit of a multinomial logistic regression with an L2 penalty."""
    import torch

    weight = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return weight.detach(), bias.detach()


def _logistic_regression(x, y, split, n_classes: int, l2_values=(1e-4, 1e-3, 1e-2, 1e-1)) -> float:
    """Standardise with train statistics, fit on train, pick L2 on val; test balanced accuracy."""
    train, val, test = split == 0, split == 1, split == 2
    x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
    best_val, best_test = -1.0, 0.0
    for l2 in l2_values:
        weight, bias = _fit_softmax(x[train], y[train], l2, n_classes)
        pred = (x @ weight + bias).argmax(1)
        val_score = _balanced_accuracy(pred[val], y[val], n_classes)
        if val_score > best_val:  # first best on val wins; test never takes part in the choice
            best_val, best_test = val_score, _balanced_accuracy(pred[test], y[test], n_classes)
    return best_test


@pytest.mark.slow
def test_time_averaged_spectrum_is_not_enough(tmp_path: Path) -> None:
    """A linear classifier on clip-averaged log-mel spectra must stay well below ceiling.

    The classes are meant to be told apart by temporal structure; if the time-averaged
    spectrum alone separated them, a representation would not need to learn anything temporal.
    Half of each split of the default set (its first clips, drawn exactly as in the full set) is
    enough to tell, in half the time.
    """
    import torch

    from ser_ssl.audio import LogMel, LogMelConfig, load_audio

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: threads only add overhead, and the test box is shared
    try:
        start = time.perf_counter()
        manifest = generate(tmp_path, seed=0, train_per_class=30, val_per_class=8, test_per_class=12)
        generated = time.perf_counter() - start
        rows = _read_manifest(manifest)
        config = LogMelConfig()
        logmel = LogMel(config)
        feats = []
        with torch.no_grad():
            for r in rows:
                mel = logmel(load_audio(tmp_path / r["filename"], config.sample_rate))
                feats.append(torch.cat([mel.mean(1), mel.std(1)]))
        x = torch.stack(feats)
        y = torch.tensor([CLASSES.index(r["label"]) for r in rows])
        split = torch.tensor([SPLITS.index(r["split"]) for r in rows])
        acc_mean = _logistic_regression(x[:, : config.n_mels], y, split, len(CLASSES))
        acc_mean_std = _logistic_regression(x, y, split, len(CLASSES))
    finally:
        torch.set_num_threads(threads)
    print(
        f"\nsynthetic: {len(rows)} clips generated in {generated:.1f}s; linear probe balanced accuracy "
        f"(chance {1 / len(CLASSES):.3f}): mean log-mel {acc_mean:.3f}, mean+std log-mel {acc_mean_std:.3f}"
    )
    assert acc_mean < 0.85
    assert acc_mean > 0.25  # the features and the probe work: families do differ in spectrum
