"""Shared fixtures: a tiny built-in data set and small caches, generated once per session."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from ser_ssl.data.feature_cache import FEATURES_FILE, INDEX_FILE, FeatureCache
from ser_ssl.data.synthetic import generate


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with slow (end-to-end) tests first, in their own order: the parallel workers of
    ``make test`` then start on the long runs and end together on short tests."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


SMALL_ENCODER = [
    "--model.init_args.encoder",
    "ser_ssl.models.VGGLike",
    "--model.init_args.encoder.init_args.channels",
    "[8, 16]",
    "--model.init_args.encoder.init_args.embed_dim",
    "32",
]


def tiny_args(config: str, root: Path, data: Path, cache: Path) -> list[str]:
    """CLI arguments that run ``configs/<config>.yaml`` on tiny data, fast, into ``root``."""
    return [
        "--config",
        f"configs/{config}.yaml",
        "--data.init_args.manifest",
        str(data),
        "--data.init_args.cache_dir",
        str(cache),
        "--data.init_args.batch_size",
        "8",
        "--data.init_args.num_workers",
        "0",
        "--trainer.default_root_dir",
        str(root),
        "--trainer.enable_progress_bar",
        "false",
        "--wandb",
        "disabled",  # W&B's offline run has its own test
    ]


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory, tiny_data) -> Path:
    """Folder of a real 5-epoch pretraining run through the CLI (small encoder) with every logger of
    ``configs/pretrain.yaml``, W&B offline included; its cache is in ``cache/`` and its checkpoint in
    ``pretrain/checkpoints/last.ckpt``. Five epochs of 6 steps reach the diagnostics (every 25 steps)
    and the kNN monitor (every 5 epochs)."""
    from ser_ssl.cli import cli_main

    tmp = tmp_path_factory.mktemp("cli")
    args = tiny_args("pretrain", tmp / "pretrain", tiny_data, tmp / "cache")
    args[args.index("--wandb") + 1] = "offline"
    cli = cli_main(["fit", *args, *SMALL_ENCODER, "--trainer.max_epochs", "5"])
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    return tmp


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Manifest of a small synthetic set (a few short clips per class and split)."""
    root = tmp_path_factory.mktemp("synthetic")
    return generate(root, seed=0, train_per_class=4, val_per_class=2, test_per_class=2, max_seconds=2.5)


def quiet_trainer(**kwargs) -> L.Trainer:
    """A Trainer that logs, checkpoints and prints nothing unless ``kwargs`` ask for it."""
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return L.Trainer(**{**quiet, "enable_model_summary": False, **kwargs})


def tile_to(frames: np.ndarray, length: int) -> np.ndarray:
    """Reference tiling: repeat a clip's ``[T, M]`` frames along time to at least ``length`` frames."""
    if len(frames) >= length:
        return frames
    return np.tile(frames, (-(-length // len(frames)), 1))[:length]


def make_cache(directory: Path, lengths: list[int], n_mels: int = 8) -> FeatureCache:
    """A hand-made cache whose frame ``t`` of clip ``i`` holds ``100 * i + t`` in every band
    (exact in float16 for up to 16 clips of under 100 frames)."""
    directory.mkdir(parents=True, exist_ok=True)
    clips, chunks, offset = [], [], 0
    for i, n in enumerate(lengths):
        chunks.append(np.repeat((100.0 * i + np.arange(n))[:, None], n_mels, axis=1))
        clips.append({"path": f"/clip{i}.wav", "offset": offset, "frames": n})
        offset += n
    np.concatenate(chunks).astype(np.float16).tofile(directory / FEATURES_FILE)
    (directory / INDEX_FILE).write_text(
        json.dumps({"config": {}, "n_mels": n_mels, "clips": clips, "skipped": []})
    )
    return FeatureCache(directory)
