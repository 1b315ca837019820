"""The offline W&B run of a CLI pretraining holds every diagnostic and the full config."""

import csv
import json
import math
import struct
from pathlib import Path

import pytest
from wandb.proto import wandb_internal_pb2

from tests.callbacks.test_diagnostics import DIAG_KEYS

pytestmark = pytest.mark.slow

DIAGNOSTICS = ["train/loss", *DIAG_KEYS, "knn/acc", "knn/bal_acc", "train/device/samples_per_sec"]


def _records(path: Path):
    """The protobuf records of an offline ``run-*.wandb`` file (a LevelDB-style log of 32 KiB blocks)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunk = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            yield wandb_internal_pb2.Record.FromString(chunk)
            chunk = b""


def read_run(pretrained: Path) -> tuple[Path, dict[str, list], dict]:
    """The offline run's folder, its history (every value logged per key; media as their nested fields,
    e.g. ``views/examples/_type``) and its config."""
    (run_file,) = (pretrained / "pretrain" / "wandb").glob("offline-run-*/run-*.wandb")
    history: dict[str, list] = {}
    config: dict = {}
    for record in _records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                history.setdefault(key, []).append(json.loads(item.value_json))
        elif kind == "config":
            config.update({u.key: json.loads(u.value_json) for u in record.config.update})
    return run_file.parent, history, config


def test_offline_wandb_run_logs_every_diagnostic_and_the_resolved_config(pretrained):
    _, history, config = read_run(pretrained)
    for key in DIAGNOSTICS:
        assert key in history, key
        assert all(math.isfinite(v) for v in history[key]), key
    assert config["config"]["model"]["class_path"] == "ser_ssl.tasks.SimCLR"
    assert config["config"]["wandb"] == "offline"


def test_offline_wandb_run_holds_the_views_image_and_the_embedding_table(pretrained, tiny_data):
    """ViewImages logs at the first step (every 5 epochs: once in 5), EmbeddingTable at the end: every
    training clip (the kNN bank), labelled by class, one column per embedding dimension."""
    run_dir, history, _ = read_run(pretrained)
    assert history["views/examples/_type"] == ["images/separated"]
    ((filename,),) = history["views/examples/filenames"]
    image = run_dir / "files" / filename
    assert image.suffix == ".png" and image.stat().st_size > 0
    assert history["views/examples/width"][0] > 500  # the whole mosaic: seven images a row
    assert history["embeddings/_type"] == ["table-file"]
    table = json.loads((run_dir / "files" / history["embeddings/path"][0]).read_text())
    assert table["columns"] == ["label", *(f"e{j}" for j in range(32))]  # the fixture's 32-dim encoder
    with tiny_data.open(newline="") as f:
        train = [row["label"] for row in csv.DictReader(f) if row["split"] == "train"]
    assert sorted(row[0] for row in table["data"]) == sorted(train)


def test_every_logger_writes_under_the_run_folder(pretrained):
    assert len(list((pretrained / "pretrain").rglob("metrics.csv"))) == 1
    assert not Path("wandb").exists() or not any(Path("wandb").glob("offline-run-*"))
