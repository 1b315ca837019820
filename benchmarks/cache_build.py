"""Building the feature cache against a plain one-process loop, for a small and a large set, and the
cache's disk use against the features it holds.

The synthetic clips are generated into the work folder first (not timed). The baseline decodes,
resamples and computes the log-mel of every file in this process (torch's default threads), as a
user's own loop would. ``build_cache(num_workers=2)`` is timed end to end, which includes starting
the worker pool when the build uses one. Only the public ``build_cache`` is used, so the rows follow
changes inside it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from benchmarks.table import Row
from ser_ssl.audio import LogMel, LogMelConfig, load_audio
from ser_ssl.data.cache import CLIPS_PER_WORKER, build_cache
from ser_ssl.data.feature_cache import FEATURES_FILE
from ser_ssl.data.synthetic import CLASSES, generate

WORKERS = 2


def single_process(paths: list[Path], config: LogMelConfig) -> int:
    """Decode + log-mel every file in this process, as float16 ``[frames, n_mels]``; returns the frames."""
    logmel = LogMel(config)
    frames = 0
    with torch.inference_mode():
        for p in paths:
            feats = logmel(load_audio(p, config.sample_rate)).T.contiguous().numpy().astype(np.float16)
            frames += len(feats)
    return frames


def timed_build(paths: list[Path], config: LogMelConfig, root: Path) -> tuple[float, Path]:
    """Seconds of a fresh ``build_cache`` with ``WORKERS`` workers, and the cache directory."""
    start = time.perf_counter()
    directory = build_cache(paths, config, root, num_workers=WORKERS)
    return time.perf_counter() - start, directory


def clips(workdir: Path, n: int) -> list[Path]:
    """``n`` WAV files of the built-in synthetic set (0.3 to 2 s, 16-48 kHz), generated once."""
    per_class = -(-n // len(CLASSES))
    manifest = generate(
        workdir / f"synthetic-{n}",
        seed=0,
        train_per_class=per_class,
        val_per_class=0,
        test_per_class=0,
        max_seconds=2.0,
    )
    return sorted(manifest.parent.rglob("*.wav"))[:n]


def disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def run(quick: bool, workdir: Path) -> list[Row]:
    """Build against one process for a small and a large set, and the cache's disk use."""
    config = LogMelConfig()
    rows = []
    for n in (12, 60) if quick else (100, 5000):
        paths = clips(workdir, n)
        seconds = sum(sf.info(str(p)).duration for p in paths)
        start = time.perf_counter()
        single_process(paths, config)
        t_single = time.perf_counter() - start
        t_build, directory = timed_build(paths, config, workdir / f"cache-{n}")
        rows.append(
            Row(
                f"cache build, {n} clips: build_cache({WORKERS} workers) vs 1-process loop",
                n / t_build,
                n / t_single,
                "clips/s",
                "rate",
                goal=(">=", 1.0),
                goal_note="no slower than one process",
                note=f"{n} synthetic clips, {seconds / 60:.1f} min of audio at 16-48 kHz, default "
                f"LogMelConfig; end to end (a pool only from {2 * CLIPS_PER_WORKER} clips: spawned workers "
                f"import torch), hashing and writing included: {t_build:.1f} s vs {t_single:.1f} s in one "
                f"process with {torch.get_num_threads()} torch threads.",
            )
        )
    features = (directory / FEATURES_FILE).stat().st_size
    on_disk = disk_bytes(directory.parent)
    rows.append(
        Row(
            "cache on disk vs the features it holds",
            on_disk / 1e6,
            features / 1e6,
            "MB",
            "size",
            goal=("<=", 1.1),
            note=f"everything under {directory.parent.name}/ after the {n}-clip build (per-clip shards, "
            f"the assembled features.f16, the index) against features.f16 alone.",
        )
    )
    return rows
