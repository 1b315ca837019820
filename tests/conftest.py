"""Shared fixtures: a tiny built-in data set and small caches, generated once per session."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ser_ssl.data.cache import FEATURES_FILE, INDEX_FILE, FeatureCache
from ser_ssl.data.synthetic import generate


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Manifest of a small synthetic set (a few short clips per class and split)."""
    root = tmp_path_factory.mktemp("synthetic")
    return generate(root, seed=0, train_per_class=4, val_per_class=2, test_per_class=2, max_seconds=2.5)


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
