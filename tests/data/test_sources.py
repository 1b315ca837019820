"""Tests of the data sources: tiny fake trees in each official layout, checked for labels, splits,
folds, groups that never cross splits, and clear errors for a wrong layout."""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_ssl.data import (
    ESC50,
    FSD50K,
    Clip,
    CSVManifest,
    FolderSource,
    FSDnoisy18k,
    UrbanSound8K,
    read_manifest,
)
from ser_ssl.data.manifest import check_groups, parse_labels
from ser_ssl.data.sources import stratified_group_split
from ser_ssl.errors import ConfigError, DataError, MissingFileError


def wav(path: Path, seed: int = 0) -> Path:
    """0.1 s of noise at 22050 Hz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = 0.1 * np.random.default_rng(seed).standard_normal(2205).astype(np.float32)
    sf.write(path, noise, 22050)
    return path


def write_csv(path: Path, rows: list[list[object]], header: list[str] | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def splits_of_groups(clips: list[Clip]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for c in clips:
        out.setdefault(c.group, set()).add(c.split)
    return out


def assert_groups_stay_in_one_split(clips: list[Clip]) -> None:
    assert all(len(s) == 1 for s in splits_of_groups(clips).values())


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------


def test_manifest_reads_several_labels_unlabelled_rows_and_folds(tmp_path):
    path = write_csv(
        tmp_path / "m.csv",
        [
            ["a.wav", "dog;bark", "train", "g1", "1"],
            ["b.wav", "cat; meow ;cat", "val", "", ""],
            ["c.wav", "", "test", "g3", "2"],
        ],
        ["filename", "label", "split", "group", "fold"],
    )
    a, b, c = read_manifest(path)
    assert a.labels == ("dog", "bark") and a.group == "g1" and a.fold == 1
    assert b.labels == ("cat", "meow") and b.split == "val" and b.group == "b.wav" and b.fold is None
    assert c.labels == () and c.label is None and c.split == "test" and c.fold == 2
    assert a.path == tmp_path / "a.wav"
    with pytest.raises(DataError, match="a.wav has several labels"):
        _ = a.label
    assert parse_labels("x", ";") == ("x",) and parse_labels(" ; ", ";") == ()


def warnings_with(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_a_label_with_a_comma_stays_one_label_unless_commas_are_the_separator(tmp_path, caplog):
    path = write_csv(
        tmp_path / "m.csv",
        [
            ["a.wav", "Dog, barking", "train"],
            ["b.wav", "Dog, barking;cat", "train"],
            ["c.wav", "cat", "train"],
        ],
        ["filename", "label", "split"],
    )
    with caplog.at_level(logging.WARNING):
        a, b, c = CSVManifest(str(path)).clips()
    assert a.labels == ("Dog, barking",) and b.labels == ("Dog, barking", "cat") and c.labels == ("cat",)
    (warning,) = warnings_with(caplog, "comma")
    assert "2 rows have a label with a comma, kept whole" in warning and "'Dog, barking' on line 2" in warning
    assert "separate them with ';' or set label_separator: ','" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        a, b, _ = CSVManifest(str(path), label_separator=",").clips()
    assert a.labels == ("Dog", "barking") and b.labels == ("Dog", "barking;cat")
    assert not warnings_with(caplog, "comma")
    with pytest.raises(ConfigError, match="label_separator"):
        CSVManifest(str(path), label_separator="")


def test_rows_with_an_empty_split_are_left_out_with_one_warning(tmp_path, caplog):
    rows = [["a.wav", "dog", "train"], ["b.wav", "dog", ""], ["c.wav", "cat", " "], ["d.wav", "cat", "test"]]
    path = write_csv(tmp_path / "m.csv", rows, ["filename", "label", "split"])
    with caplog.at_level(logging.WARNING):
        clips = read_manifest(path)
    assert [(c.path.name, c.split) for c in clips] == [("a.wav", "train"), ("d.wav", "test")]
    (warning,) = warnings_with(caplog, "empty split")
    assert "2 rows have an empty split and are left out (e.g. b.wav on line 3)" in warning
    assert "give each row a split" in warning
    no_column = write_csv(tmp_path / "n.csv", [r[:2] for r in rows], ["filename", "label"])
    assert {c.split for c in read_manifest(no_column, default_split="test")} == {"test"}
    only_empty = write_csv(tmp_path / "e.csv", rows[1:3], ["filename", "label", "split"])
    with pytest.raises(DataError, match=r"lists no clips; all its 2 rows have an empty split"):
        CSVManifest(str(only_empty)).clips()


def test_clip_keeps_single_label_api():
    clip = Clip(path="x/y.wav", labels=["dog"], split="test")
    assert clip.label == "dog" and clip.labels == ("dog",) and clip.path == Path("x/y.wav")
    assert clip.group == "x/y.wav"  # default: its own group
    assert Clip(path="z.wav", labels="cat").labels == ("cat",)


def test_csv_manifest_rejects_a_group_in_two_splits(tmp_path):
    path = write_csv(
        tmp_path / "m.csv",
        [["a.wav", "dog", "train", "rec1"], ["b.wav", "dog", "test", "rec1"]],
        ["filename", "label", "split", "group"],
    )
    with pytest.raises(DataError, match="group 'rec1' has clips in two splits"):
        CSVManifest(str(path)).clips()
    with pytest.raises(MissingFileError, match="gone.csv"):
        CSVManifest(str(tmp_path / "gone.csv")).clips()
    with pytest.raises(DataError, match="lacks the column"):
        CSVManifest(str(write_csv(tmp_path / "bad.csv", [["a.wav"]], ["file"]))).clips()


# ---------------------------------------------------------------------------------------------
# Seeded stratified group split
# ---------------------------------------------------------------------------------------------


def test_group_split_keeps_groups_whole_and_gives_many_small_classes_their_share():
    clips = [
        Clip(path=f"{c}/{g}_{t}.wav", labels=(f"c{c}",), group=f"{c}/{g}")
        for c in range(20)
        for g in range(3)
        for t in range(2)
    ]
    out = stratified_group_split(clips, {"test": 0.2, "val": 0.1}, seed=0)
    assert_groups_stay_in_one_split(out)
    groups = {c.group: c.split for c in out}
    counts = Counter(groups.values())
    assert counts == {"test": 12, "val": 6, "train": 42}  # per-class rounding alone would give no val
    for c in range(20):  # every class can be trained on
        assert any(groups[f"{c}/{g}"] == "train" for g in range(3))
    assert stratified_group_split(clips, {"test": 0.2, "val": 0.1}, seed=0) == out
    assert stratified_group_split(clips, {"test": 0.2, "val": 0.1}, seed=1) != out
    check_groups(out, "test")


# ---------------------------------------------------------------------------------------------
# FolderSource
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def unsplit(tmp_path) -> Path:
    """root/<class>/NNNN.wav: 3 classes x 10 files, same stems in every class folder."""
    root = tmp_path / "sounds"
    for k, cls in enumerate(["bird", "car", "rain"]):
        for i in range(10):
            wav(root / cls / f"{i:04d}.wav", seed=10 * k + i)
    (root / "README.txt").write_text("not audio")
    return root


def test_folder_unsplit_is_stratified_and_seeded(unsplit):
    clips = FolderSource(str(unsplit), val_fraction=0.1, test_fraction=0.2, seed=0).clips()
    assert len(clips) == 30
    assert {c.label for c in clips} == {"bird", "car", "rain"}
    assert len({c.group for c in clips}) == 30  # same stems in other class folders are other groups
    per = Counter((c.label, c.split) for c in clips)
    for cls in ("bird", "car", "rain"):
        assert (per[cls, "train"], per[cls, "val"], per[cls, "test"]) == (7, 1, 2)
    assert_groups_stay_in_one_split(clips)
    again = FolderSource(str(unsplit), val_fraction=0.1, test_fraction=0.2, seed=0).clips()
    other = FolderSource(str(unsplit), val_fraction=0.1, test_fraction=0.2, seed=1).clips()
    assert [c.split for c in again] == [c.split for c in clips]
    assert [c.split for c in other] != [c.split for c in clips]


def test_folder_group_regex_keeps_takes_of_one_recording_together(tmp_path):
    root = tmp_path / "takes"
    for cls in ("a", "b"):
        for rec in range(5):
            for take in range(3):
                wav(root / cls / f"{cls}rec{rec}_take{take}.WAV")
    clips = FolderSource(str(root), group_regex=r"^([^_]+)_", test_fraction=0.4, val_fraction=0.2).clips()
    assert {c.group for c in clips} == {f"{c}rec{r}" for c in "ab" for r in range(5)}
    assert_groups_stay_in_one_split(clips)
    assert Counter(c.split for c in clips) == {"train": 12, "test": 12, "val": 6}
    with pytest.raises(ConfigError, match="group_regex"):
        FolderSource(str(root), group_regex="(")


def test_folder_already_split(tmp_path):
    root = tmp_path / "split"
    for i in range(10):
        wav(root / "train" / "dog" / f"{i}.wav")
        wav(root / "train" / "cat" / "nested" / f"{i}.flac")
    wav(root / "test" / "dog" / "0.wav")
    wav(root / "test" / "cat" / "0.ogg")
    wav(root / "train" / "dog" / ".hidden.wav")
    clips = FolderSource(str(root), val_fraction=0.2).clips()
    assert Counter((c.label, c.split) for c in clips) == {
        ("dog", "train"): 8,
        ("dog", "val"): 2,  # held out of train: there is no val folder
        ("cat", "train"): 8,
        ("cat", "val"): 2,
        ("dog", "test"): 1,
        ("cat", "test"): 1,
    }
    assert not any(c.path.name.startswith(".") for c in clips)
    assert_groups_stay_in_one_split(clips)  # train/dog/0 and test/dog/0 are different groups
    wav(root / "val" / "dog" / "0.wav")
    clips = FolderSource(str(root), val_fraction=0.2).clips()
    assert Counter(c.split for c in clips) == {"train": 20, "val": 1, "test": 2}
    only = FolderSource(str(root), extensions=["wav"]).clips()
    assert {c.path.suffix for c in only} == {".wav"}


def test_split_folders_are_found_in_any_case_and_as_valid(tmp_path):
    root = tmp_path / "split"
    for i in range(3):
        wav(root / "Train" / "dog" / f"{i}.wav")
        wav(root / "Train" / "cat" / f"{i}.wav")
    wav(root / "VALID" / "dog" / "0.wav")
    wav(root / "Test" / "cat" / "0.wav")
    clips = FolderSource(str(root)).clips()
    assert {c.label for c in clips} == {"dog", "cat"}  # not the classes 'Train', 'VALID' and 'Test'
    assert Counter(c.split for c in clips) == {"train": 6, "val": 1, "test": 1}
    wav(root / "validation" / "cat" / "0.wav")
    with pytest.raises(DataError, match="the folders VALID and validation both hold the val split"):
        FolderSource(str(root)).clips()


def test_folder_unlabelled_takes_every_audio_file(tmp_path, unsplit):
    wav(unsplit / "deep" / "er" / "x.flac")
    clips = FolderSource(str(unsplit), labelled=False).clips()
    assert len(clips) == 31
    assert all(c.labels == () and c.split == "train" for c in clips)


def test_folder_errors(tmp_path, unsplit):
    with pytest.raises(MissingFileError, match="gone"):
        FolderSource(str(tmp_path / "gone")).clips()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no audio files"):
        FolderSource(str(tmp_path / "empty")).clips()
    wav(unsplit / "loose.wav")
    with pytest.raises(DataError, match="not inside a class folder"):
        FolderSource(str(unsplit)).clips()
    with pytest.raises(ConfigError, match="val_fraction"):
        FolderSource(str(unsplit), val_fraction=1.5)
    with pytest.raises(ConfigError, match="leave clips for training"):
        FolderSource(str(unsplit), val_fraction=0.5, test_fraction=0.5)


# ---------------------------------------------------------------------------------------------
# FSD50K
# ---------------------------------------------------------------------------------------------

VOCABULARY = [
    [0, "Bark", "/m/05tny_"],
    [1, "Dog", "/m/0bt9lr"],
    [2, "Music", "/m/04rlf"],
    [3, "Guitar", "/m/0342h"],
]


@pytest.fixture
def fsd50k(tmp_path) -> Path:
    root = tmp_path / "FSD50K"
    truth = root / "FSD50K.ground_truth"
    write_csv(truth / "vocabulary.csv", VOCABULARY[::-1], None)  # order comes from the index column
    write_csv(
        truth / "dev.csv",
        [
            [101, "Bark,Dog", "/m/05tny_,/m/0bt9lr", "train"],
            [102, "Guitar,Music", "/m/0342h,/m/04rlf", "train"],
            [103, "Music", "/m/04rlf", "val"],
        ],
        ["fname", "labels", "mids", "split"],
    )
    write_csv(truth / "eval.csv", [[201, "Dog", "/m/0bt9lr"]], ["fname", "labels", "mids"])
    for fname in (101, 102, 103):
        wav(root / "FSD50K.dev_audio" / f"{fname}.wav")
    wav(root / "FSD50K.eval_audio" / "201.wav")
    return root


def test_fsd50k_is_multilabel_with_official_splits(fsd50k):
    source = FSD50K(str(fsd50k))
    assert source.vocabulary() == ["Bark", "Dog", "Music", "Guitar"]
    clips = {c.path.name: c for c in source.clips()}
    assert clips["101.wav"].labels == ("Bark", "Dog") and clips["101.wav"].split == "train"
    assert clips["103.wav"].split == "val" and clips["201.wav"].split == "test"
    assert clips["201.wav"].path == fsd50k / "FSD50K.eval_audio" / "201.wav"
    assert all(c.path.is_file() for c in clips.values())
    with pytest.raises(DataError, match="several labels"):
        _ = clips["102.wav"].label
    assert_groups_stay_in_one_split(list(clips.values()))


def test_fsd50k_errors(fsd50k):
    write_csv(
        fsd50k / "FSD50K.ground_truth" / "eval.csv", [[201, "Cat", "/m/x"]], ["fname", "labels", "mids"]
    )
    with pytest.raises(DataError, match="not in vocabulary"):
        FSD50K(str(fsd50k)).clips()
    (fsd50k / "FSD50K.ground_truth" / "dev.csv").unlink()
    with pytest.raises(MissingFileError, match=r"dev\.csv does not exist; expected the layout"):
        FSD50K(str(fsd50k)).clips()


# ---------------------------------------------------------------------------------------------
# FSDnoisy18k
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fsdnoisy(tmp_path) -> Path:
    root = tmp_path / "FSDnoisy18k"
    rows = []
    for cls in ("Rain", "Fire"):
        for i in range(10):
            verified = int(i < 4)
            rows.append([f"{cls}{i}.wav", cls, "/m/x", verified, int(not verified and i < 7)])
            wav(root / "FSDnoisy18k.audio_train" / f"{cls}{i}.wav")
    header = ["fname", "label", "aso_id", "manually_verified", "noisy_small"]
    write_csv(root / "FSDnoisy18k.meta" / "train.csv", rows, header)
    write_csv(
        root / "FSDnoisy18k.meta" / "test.csv", [["t1.wav", "Rain", "/m/x"]], ["fname", "label", "aso_id"]
    )
    wav(root / "FSDnoisy18k.audio_test" / "t1.wav")
    return root


def test_fsdnoisy18k_training_sets_and_validation_share(fsdnoisy):
    def names(train_set: str) -> set[str]:
        clips = FSDnoisy18k(str(fsdnoisy), train_set=train_set, val_fraction=0.0).clips()
        assert [c.path.name for c in clips if c.split == "test"] == ["t1.wav"]
        return {c.path.name for c in clips if c.split == "train"}

    clean = {f"{c}{i}.wav" for c in ("Rain", "Fire") for i in range(4)}
    assert names("clean") == clean
    assert names("noisy") == {f"{c}{i}.wav" for c in ("Rain", "Fire") for i in range(4, 10)}
    assert names("noisy_small") == {f"{c}{i}.wav" for c in ("Rain", "Fire") for i in range(4, 7)}
    assert len(names("all")) == 20
    clips = FSDnoisy18k(str(fsdnoisy), train_set="noisy", val_fraction=0.5, seed=0).clips()
    assert Counter((c.label, c.split) for c in clips) == {
        ("Rain", "train"): 3,
        ("Rain", "val"): 3,
        ("Fire", "train"): 3,
        ("Fire", "val"): 3,
        ("Rain", "test"): 1,
    }
    assert all(c.path.is_file() for c in clips)
    with pytest.raises(ConfigError, match="train_set"):
        FSDnoisy18k(str(fsdnoisy), train_set="curated")


def test_fsdnoisy18k_missing_metadata(fsdnoisy):
    (fsdnoisy / "FSDnoisy18k.meta" / "test.csv").unlink()
    with pytest.raises(MissingFileError, match=r"test\.csv does not exist"):
        FSDnoisy18k(str(fsdnoisy)).clips()


# ---------------------------------------------------------------------------------------------
# ESC-50 and UrbanSound8K
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def esc50(tmp_path) -> Path:
    root = tmp_path / "ESC-50-master"
    rows = []
    for fold in range(1, 6):
        for target, category in enumerate(["dog", "rain"]):
            src = 1000 * fold + target
            for take in "AB":
                name = f"{fold}-{src}-{take}-{target}.wav"
                rows.append([name, fold, target, category, str(category == "dog"), src, take])
                wav(root / "audio" / name)
    write_csv(
        root / "meta" / "esc50.csv",
        rows,
        ["filename", "fold", "target", "category", "esc10", "src_file", "take"],
    )
    return root


def test_esc50_folds_splits_and_groups(esc50):
    clips = ESC50(str(esc50), test_fold=3).clips()
    assert len(clips) == 20 and all(c.path.is_file() for c in clips)
    assert {c.fold for c in clips if c.split == "test"} == {3}
    assert {c.fold for c in clips if c.split == "train"} == {1, 2, 4, 5}
    assert {c.label for c in clips} == {"dog", "rain"}
    assert len({c.group for c in clips}) == 10  # two takes per source file
    assert_groups_stay_in_one_split(clips)
    clips = ESC50(str(esc50), test_fold=1, val_fold=5).clips()
    assert Counter(c.split for c in clips) == {"train": 12, "val": 4, "test": 4}
    assert {c.label for c in ESC50(str(esc50), esc10=True).clips()} == {"dog"}
    for bad in ({"test_fold": 0}, {"test_fold": 6}, {"test_fold": 2, "val_fold": 2}):
        with pytest.raises(ConfigError, match="fold"):
            ESC50(str(esc50), **bad)
    (esc50 / "meta" / "esc50.csv").unlink()
    with pytest.raises(MissingFileError, match=r"esc50\.csv does not exist; expected the layout"):
        ESC50(str(esc50)).clips()


@pytest.fixture
def urbansound8k(tmp_path) -> Path:
    root = tmp_path / "UrbanSound8K"
    rows = []
    for fold in range(1, 11):
        for class_id, cls in enumerate(["siren", "dog_bark"]):
            fs_id = 100 * fold + class_id
            for part in range(2):
                name = f"{fs_id}-{class_id}-0-{part}.wav"
                rows.append([name, fs_id, 0.0, 1.0, 1, fold, class_id, cls])
                wav(root / "audio" / f"fold{fold}" / name)
    header = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
    write_csv(root / "metadata" / "UrbanSound8K.csv", rows, header)
    return root


def test_urbansound8k_folds_splits_and_groups(urbansound8k):
    root = urbansound8k
    clips = UrbanSound8K(str(root), val_fold=9).clips()
    assert all(c.path.is_file() and c.path.parent.name == f"fold{c.fold}" for c in clips)
    assert Counter(c.split for c in clips) == {"train": 32, "val": 4, "test": 4}
    assert {c.fold for c in clips if c.split == "test"} == {10}
    assert {c.group for c in clips if c.split == "test"} == {"1000", "1001"}
    assert_groups_stay_in_one_split(clips)
    with pytest.raises(ConfigError, match="test_fold"):
        UrbanSound8K(str(root), test_fold=11)
    (root / "metadata" / "UrbanSound8K.csv").write_text("slice_file_name,fold\nx.wav,1\n")
    with pytest.raises(DataError, match="lacks the column"):
        UrbanSound8K(str(root)).clips()


@pytest.mark.parametrize(
    ("fixture", "source", "folders"),
    [
        ("esc50", lambda root: ESC50(str(root), esc10=True), ["audio"]),
        ("urbansound8k", lambda root: UrbanSound8K(str(root)), ["audio/fold3", "audio/fold10"]),
        ("fsd50k", lambda root: FSD50K(str(root)), ["FSD50K.dev_audio", "FSD50K.eval_audio"]),
        (
            "fsdnoisy",
            lambda root: FSDnoisy18k(str(root), train_set="clean", val_fraction=0.0),
            ["FSDnoisy18k.audio_train", "FSDnoisy18k.audio_test"],
        ),
    ],
)
def test_audio_files_in_no_metadata_row_are_reported_once(request, caplog, fixture, source, folders):
    root = request.getfixturevalue(fixture)
    with caplog.at_level(logging.WARNING):
        n_clips = len(source(root).clips())
    assert not warnings_with(caplog, "metadata")  # rows left out by a subset (ESC-10, clean) are listed
    for folder in folders:
        wav(root / folder / "zz_unlisted.wav")
        wav(root / folder / "deeper" / "not_read.wav")  # below the folders the reader uses
        wav(root / folder / ".hidden.wav")
        (root / folder / "notes.txt").write_text("not audio")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert len(source(root).clips()) == n_clips
    (warning,) = warnings_with(caplog, "metadata")
    assert f"{len(folders)} audio files are in no row of the metadata and are left out" in warning
    assert f"{root / folders[0] / 'zz_unlisted.wav'}" in warning
