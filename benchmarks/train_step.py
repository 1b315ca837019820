"""Forward+backward throughput on CPU: the SimCLR step's memory format and precision options, and
each encoder.

Patches/s of each variant against a baseline measured in the same run: fp32 contiguous for the step
(VGG-like encoder, projection head, NT-Xent, AdamW), VGG-like for the encoders (forward+backward of
the encoder alone, channels_last fp32, train mode). Compare a run without
MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ to see their effect.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from benchmarks.table import Row
from ser_ssl.losses import NTXentLoss
from ser_ssl.models import CRNN, ProjectionHead, ResNet18, VGGLike


def patches_per_second(
    pairs: int, channels_last: bool, bf16: bool, steps: int, encoder: torch.nn.Module | None = None
) -> float:
    """Patches/s of the SimCLR step on ``pairs`` pairs (VGG-like unless ``encoder`` is given); the first
    step warms up and is not counted."""
    torch.manual_seed(0)
    encoder = encoder or VGGLike()
    head, loss_fn = ProjectionHead(encoder.embed_dim), NTXentLoss()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    encoder = encoder.to(memory_format=fmt)
    opt = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=1e-3)
    x = torch.randn(2 * pairs, 1, 96, 101).contiguous(memory_format=fmt)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            z = head(encoder(x)).view(pairs, 2, -1)
            loss = loss_fn(z[:, 0], z[:, 1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return 2 * pairs / (sum(times[1:]) / steps)


def encoder_patches_per_second(encoder: torch.nn.Module, batch: int, steps: int) -> float:
    """Forward+backward of the encoder alone (channels_last, fp32, train mode)."""
    encoder = encoder.train().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 1, 96, 101).contiguous(memory_format=torch.channels_last)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        encoder(x).sum().backward()
        encoder.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return batch / (sum(times[1:]) / steps)


def encoders(quick: bool) -> list[torch.nn.Module]:
    """VGG-like (the baseline), ResNet-18 and CRNN at their defaults, or tiny versions for ``quick``."""
    torch.manual_seed(0)
    if quick:
        return [VGGLike((4, 8), 16), ResNet18(width=0.0625), CRNN((4, 4, 4, 4), embed_dim=8)]
    return [VGGLike(), ResNet18(), CRNN()]


def run(quick: bool, workdir: Path) -> list[Row]:
    """Step variants against fp32, encoders against VGG-like."""
    pairs, batch, steps = (2, 4, 1) if quick else (32, 32, 2)
    rows = []
    base = patches_per_second(pairs, False, False, steps, encoders(quick)[0])
    for name, cl, bf16 in [("fp32 channels_last", True, False), ("bf16 autocast", False, True)]:
        rows.append(
            Row(
                f"SimCLR step (VGG-like, {pairs} pairs): {name} vs fp32",
                patches_per_second(pairs, cl, bf16, steps, encoders(quick)[0]),
                base,
                "patches/s",
                "rate",
                note=f"forward, NT-Xent, backward and AdamW on {2 * pairs} patches of 96×101, mean of "
                f"{steps} steps after one warm-up; baseline fp32 contiguous.",
            )
        )
    vgg, *others = encoders(quick)
    base = encoder_patches_per_second(vgg, batch, steps)
    for encoder in others:
        name = f"{type(encoder).__name__} ({sum(p.numel() for p in encoder.parameters()) / 1e6:.2f} M)"
        rows.append(
            Row(
                f"encoder fwd+bwd, {batch} patches: {name} vs VGG-like "
                f"({sum(p.numel() for p in vgg.parameters()) / 1e6:.2f} M)",
                encoder_patches_per_second(encoder, batch, steps),
                base,
                "patches/s",
                "rate",
                note=f"the encoder alone, channels_last fp32, train mode, mean of {steps} steps after one "
                "warm-up.",
            )
        )
    return rows
