"""Row 4: the batched augmentations (per-sample parameters, one call per batch) against applying the
same transforms per sample in a Python loop (``t(x[i:i + 1])`` for every sample).

Patches are standardised-like values ``[B, 1, 96, 101]`` (float32, CPU); times are medians.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import median, seconds
from benchmarks.table import Row
from ser_ssl.augment import (
    Augmentations,
    Compression,
    GaussianBlur,
    GaussianNoise,
    RandomResizedCrop,
    RandomShift,
    SpecAugment,
)

SIX: list[Callable[[], nn.Module]] = [
    RandomResizedCrop,
    RandomShift,
    Compression,
    SpecAugment,
    GaussianBlur,
    GaussianNoise,
]


def default_pipeline() -> Augmentations:
    """SimCLR's default: random resized crop, compression, Gaussian noise."""
    return Augmentations([RandomResizedCrop(), Compression(), GaussianNoise()])


def all_six() -> Augmentations:
    return Augmentations([make() for make in SIX])


def per_sample(transform: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The transform applied to one sample at a time."""
    return torch.cat([transform(x[i : i + 1]) for i in range(len(x))])


def compare(transform: nn.Module, x: torch.Tensor, repeats: int, loop_repeats: int) -> tuple[float, float]:
    """Median ms per batch: batched and per-sample loop."""
    batched = median(seconds(lambda: transform(x), repeats))  # after one warm-up call
    looped = median(seconds(lambda: per_sample(transform, x), loop_repeats, warmup=0))  # warmed by the above
    return 1000 * batched, 1000 * looped


def run(quick: bool, workdir: Path) -> list[Row]:
    """Pipelines at two batch sizes (goal ≥ 10×), then each transform at the first size."""
    sizes, repeats, loop_repeats = ((8, 16), 2, 1) if quick else ((128, 256), 10, 2)
    torch.manual_seed(0)
    rows = []
    for name, make in [("default RRC + compression + noise", default_pipeline), ("all six", all_six)]:
        for b in sizes:
            x = torch.randn(b, 1, 96, 101)
            batched, looped = compare(make(), x, repeats, loop_repeats)
            rows.append(
                Row(
                    f"augmentation, {name}, {b} patches: batched vs per-sample loop",
                    batched,
                    looped,
                    "ms/batch",
                    "time",
                    goal=(">=", 10.0),
                    note=f"96×101 float32 patches on CPU, median of {repeats} batched calls after one "
                    f"warm-up and of {loop_repeats} looped calls; {batched / b:.3f} ms per patch batched.",
                )
            )
    b = sizes[0]
    x = torch.randn(b, 1, 96, 101)
    for make in SIX:
        batched, looped = compare(make(), x, repeats, loop_repeats)
        rows.append(
            Row(
                f"augmentation, {make.__name__} alone, {b} patches: batched vs per-sample loop",
                batched,
                looped,
                "ms/batch",
                "time",
            )
        )
    return rows
