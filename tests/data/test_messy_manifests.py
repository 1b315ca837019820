"""Manifests as spreadsheets and people write them: a byte-order mark, another encoding, spaces and
other spellings in split names, rows listed twice, one file under two spellings."""

import logging

import pytest

from ser_ssl.cli import main
from ser_ssl.data import CSVManifest, LabeledDataModule
from ser_ssl.errors import DataError
from tests.data.test_sources import wav

HEADER = "filename,label,split\n"


def manifest(tmp_path, rows: str, encoding: str = "utf-8", name: str = "m.csv"):
    for i in range(8):
        wav(tmp_path / f"c{i}.wav", seed=i)
    path = tmp_path / name
    path.write_bytes((HEADER + rows).encode(encoding))
    return path


def test_a_byte_order_mark_is_read(tmp_path):
    path = manifest(tmp_path, "c0.wav,a,train\nc1.wav,b,train\n", encoding="utf-8-sig")
    assert [c.labels for c in CSVManifest(str(path)).clips()] == [("a",), ("b",)]


def test_a_latin1_manifest_is_one_line_of_error_through_the_cli(tmp_path, monkeypatch):
    path = manifest(tmp_path, "c0.wav,caf\u00e9,train\nc1.wav,b,train\n", encoding="latin-1")
    argv = ["ser-ssl", "fit", "--config", "configs/pretrain.yaml", "--data.init_args.manifest", str(path)]
    argv += ["--wandb", "disabled", "--data.init_args.cache_dir", str(tmp_path / "cache")]
    monkeypatch.setattr("sys.argv", [*argv, "--trainer.default_root_dir", str(tmp_path / "run")])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert f"ser-ssl: error: manifest {path} is not UTF-8 text (byte 0xe9" in str(exit_.value)


def test_split_names_lose_their_spaces_and_unknown_ones_are_reported(tmp_path, caplog):
    rows = "c0.wav,a,train\nc1.wav,b,train\nc2.wav,a, train\nc3.wav,b,train \nc4.wav,a,valid\n"
    rows += "c5.wav,b,valid\nc6.wav,a,test\nc7.wav,b,test\n"
    dm = LabeledDataModule(
        manifest=str(manifest(tmp_path, rows)), cache_dir=str(tmp_path / "cache"), num_workers=0, batch_size=2
    )
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert len(dm.split_indices("train")) == 4
    (warning,) = [r.message for r in caplog.records if "does not read" in r.message]
    assert "2 clips are in splits ['valid']" in warning and "val_split" in warning


def test_header_names_and_the_usual_split_names_are_read_in_any_case(tmp_path):
    for i in range(4):
        wav(tmp_path / f"c{i}.wav", seed=i)
    path = tmp_path / "m.csv"
    rows = "c0.wav,a,TRAIN\nc1.wav,b,Train \nc2.wav,a,Val\nc3.wav,b,Fold3\n"
    path.write_text(" Filename, Label ,SPLIT\n" + rows)
    clips = CSVManifest(str(path)).clips()
    assert [(c.path.name, c.label, c.split) for c in clips] == [
        ("c0.wav", "a", "train"),
        ("c1.wav", "b", "train"),
        ("c2.wav", "a", "val"),
        ("c3.wav", "b", "Fold3"),  # other names stay as written (train_split may name them)
    ]
    dm = LabeledDataModule(
        manifest=str(path), train_split="Train", val_split="VAL", cache_dir=str(tmp_path / "c"), batch_size=1
    )
    dm.setup("fit")  # the settings' names are read the same way
    assert (dm.train_split, len(dm.split_indices("train")), dm.val_split) == ("train", 2, "val")


@pytest.mark.parametrize(("separator", "shown"), [(";", "';'"), ("\t", "'\\t'")])
def test_a_header_that_lacks_a_column_is_shown_with_the_likely_separator(tmp_path, separator, shown):
    path = tmp_path / "m.csv"
    path.write_text(f"filename{separator}label\nc0.wav{separator}a\n")
    with pytest.raises(DataError) as err:
        CSVManifest(str(path)).clips()
    message = str(err.value)
    assert "lacks the column(s) ['filename', 'label']" in message
    assert f"its header: {[f'filename{separator}label']}" in message and f"separated by {shown}" in message


def test_a_row_listed_twice_is_used_once(tmp_path, caplog):
    path = manifest(tmp_path, "c0.wav,a,train\nc1.wav,b,train\nc0.wav,a,train\n")
    with caplog.at_level(logging.WARNING):
        clips = CSVManifest(str(path)).clips()
    assert len(clips) == 2 and any("1 files are listed more than once" in r.message for r in caplog.records)


def test_a_run_reads_the_manifest_once_so_its_warnings_come_once(tmp_path, caplog):
    rows = "c0.wav,a,train\nc1.wav,b,train\nc0.wav,a,train\nc2.wav,a,val\nc3.wav,b,val\n"
    dm = LabeledDataModule(
        manifest=str(manifest(tmp_path, rows)), cache_dir=str(tmp_path / "cache"), num_workers=0, batch_size=2
    )
    with caplog.at_level(logging.WARNING):
        dm.prepare_data()  # as Lightning calls them
        dm.setup("fit")
    assert len([r for r in caplog.records if "listed more than once" in r.message]) == 1
    assert len(dm.split_indices("train")) == 2


def test_one_file_in_two_splits_under_two_spellings_is_refused(tmp_path):
    path = manifest(tmp_path, "c0.wav,a,train\nc1.wav,b,train\n./sub/../c0.wav,a,test\n")
    (tmp_path / "sub").mkdir()
    with pytest.raises(DataError, match=r"c0.wav is listed in two splits \('train'.*'test'"):
        CSVManifest(str(path)).clips()
