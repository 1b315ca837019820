"""Row 7: training a linear probe for 200 epochs on embeddings computed once, against recomputing them
with the frozen encoder every epoch.

Both use :class:`~ser_ssl.tasks.LinearProbe` as ``configs/probe.yaml`` sets it up (VGG-like,
channels_last, BatchNorm + linear head, AdamW 1e-2, batch 64) on a small fixed set of patches, in
hand-written loops. Cached: encode every patch once (eval, no grad), then 200 epochs of the head
alone, all timed. Recomputing: a few epochs of ``probe(x)`` per mini-batch are timed after one
warm-up epoch and the median epoch is multiplied by 200.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import log_mel_like, median, vgg_like
from benchmarks.table import Row
from ser_ssl.tasks import LinearProbe

CLASSES = 12


def make_probe(quick: bool = False) -> LinearProbe:
    probe = LinearProbe(
        encoder=vgg_like(quick), optimizer="adamw", lr=0.01, weight_decay=0.0, channels_last=True
    )
    probe.build_head([str(k) for k in range(CLASSES)], multilabel=False)
    return probe.to(memory_format=probe.memory_format).train()  # train(): encoder stays in eval mode


def _optimizer(probe: LinearProbe) -> torch.optim.Optimizer:
    return torch.optim.AdamW(probe.classifier.parameters(), lr=probe.lr, weight_decay=0.0)


def _epoch(forward, inputs: torch.Tensor, targets: torch.Tensor, opt, batch: int) -> None:
    for idx in torch.randperm(len(inputs)).split(batch):
        loss = F.cross_entropy(forward(inputs[idx]), targets[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def recompute_epoch_s(probe: LinearProbe, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int) -> float:
    """Median seconds of one epoch that runs the frozen encoder on every mini-batch."""
    opt = _optimizer(probe)
    _epoch(probe, x, y, opt, batch)  # warm-up
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        _epoch(probe, x, y, opt, batch)
        times.append(time.perf_counter() - start)
    return median(times)


def cached_s(
    probe: LinearProbe, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int
) -> tuple[float, float]:
    """Seconds to encode all patches once, and to train the head ``epochs`` epochs on the embeddings."""
    opt = _optimizer(probe)
    start = time.perf_counter()
    with torch.no_grad():
        h = torch.cat([probe.embed(x[i : i + batch]) for i in range(0, len(x), batch)])
    encoded = time.perf_counter()
    for _ in range(epochs):
        _epoch(probe.classifier, h, y, opt, batch)
    return encoded - start, time.perf_counter() - encoded


def run(quick: bool, workdir: Path) -> list[Row]:
    """Total time of a 200-epoch probe (5 with ``quick``), cached embeddings vs recomputed (extrapolated)."""
    n, batch, epochs, epochs_total = (16, 8, 1, 5) if quick else (128, 64, 2, 200)
    x = log_mel_like(n, 1, 96, 101)
    y = torch.arange(n) % CLASSES
    probe = make_probe(quick)
    probe.classifier(probe.embed(x[:batch]))  # warm-up of the encoder's kernels for both variants
    encode_s, head_s = cached_s(probe, x, y, batch, epochs_total)
    epoch_s = recompute_epoch_s(probe, x, y, batch, epochs)
    return [
        Row(
            f"linear probe, {epochs_total} epochs: embeddings computed once vs every epoch",
            encode_s + head_s,
            epochs_total * epoch_s,
            "s",
            "time",
            note=f"{n} patches of 96×101, batch {batch}, frozen VGG-like; cached: encode once "
            f"{encode_s:.2f} s + {epochs_total} head epochs {head_s:.2f} s (measured); every epoch: "
            f"median of {epochs} epochs after a warm-up, {epoch_s:.2f} s/epoch × {epochs_total} "
            "(extrapolated). LinearProbe today recomputes every epoch (a new random patch per clip per "
            "epoch).",
        )
    ]
