"""Row 1: building the feature cache with worker processes against a plain one-process loop.

The synthetic set is generated into the work folder first (not timed). The baseline decodes,
resamples and computes the log-mel of every file in this process (torch's default threads), as a
user's own loop would. ``build_cache(num_workers=2)`` is timed end to end, which includes spawning
the worker pool (each worker imports torch). A second build of only a few clips, into another cache
folder, measures that fixed cost; the difference of the two builds gives the per-clip rate once the
pool runs. Only the public ``build_cache`` is used, so the row follows changes inside it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from benchmarks.common import synthetic_audio
from benchmarks.table import Row
from ser_ssl.audio import LogMel, LogMelConfig, load_audio
from ser_ssl.data.cache import FEATURES_FILE, build_cache

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


def run(quick: bool, workdir: Path) -> list[Row]:
    """Clips/s end to end and once started, and the cache's size per hour of audio."""
    paths = synthetic_audio(workdir, quick)
    config = LogMelConfig()
    n = len(paths)
    hours = sum(sf.info(str(p)).duration for p in paths) / 3600
    source_mb = sum(p.stat().st_size for p in paths) / 1e6

    start = time.perf_counter()
    single_process(paths, config)
    t_single = time.perf_counter() - start
    n_fixed = min(8, n - 1)  # two chunks of 4: both workers start
    t_fixed, _ = timed_build(paths[:n_fixed], config, workdir / "cache-fixed")
    t_build, directory = timed_build(paths, config, workdir / "cache")
    t_pool = max(t_build - t_fixed, 1e-3)  # a quick run's noise can exceed its few clips' work
    cache_mb = (directory / FEATURES_FILE).stat().st_size / 1e6

    dense = 3600 * config.sample_rate / config.hop_length * config.n_mels * 2 / 1e6
    setup = f"{n} synthetic clips, {hours * 60:.1f} min of audio at 16-48 kHz, default LogMelConfig"
    return [
        Row(
            f"cache build: build_cache({WORKERS} workers) vs 1-process loop, end to end",
            n / t_build,
            n / t_single,
            "clips/s",
            "rate",
            note=f"{setup}; the build includes spawning the pool (each worker imports torch), hashing and "
            f"writing the cache: {t_build:.1f} s vs {t_single:.1f} s "
            f"({hours * 3600 / t_single:.0f} s of audio per s in one process with "
            f"{torch.get_num_threads()} torch threads).",
        ),
        Row(
            f"cache build: build_cache({WORKERS} workers) vs 1-process loop, per clip once started",
            (n - n_fixed) / t_pool,
            n / t_single,
            "clips/s",
            "rate",
            goal=(">=", 1.5),
            goal_note="decoding is CPU-bound: 2 processes should near 2×",
            note=f"(build of {n} clips − build of {n_fixed} clips) / ({n} − {n_fixed}) clips: removes a "
            f"build's fixed cost, {t_fixed:.1f} s here (mostly spawning {WORKERS} workers that import "
            "torch), which long builds amortise.",
        ),
        Row(
            "cache size per hour of audio vs the source WAV files",
            cache_mb / hours,
            source_mb / hours,
            "MB/h",
            "size",
            note=f"features.f16 is dense float16 frames × 96 bands: {dense:.1f} MB/h at hop 220 / 22.05 "
            f"kHz plus one frame per clip; the sources are 16-bit PCM at 16-48 kHz ({cache_mb:.1f} MB "
            f"cache for {source_mb:.1f} MB of WAV).",
        ),
    ]
