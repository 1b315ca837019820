"""Forward+backward throughput on CPU: the SimCLR step's memory format and precision options, and
each encoder.

Prints patches/s for each variant and its ratio to a baseline measured in the same run (fp32
contiguous for the step, VGG-like for the encoders). Run with `make bench` (which sets the glibc
malloc variables) or directly; compare a run without MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_
to see their effect.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from ser_ssl.losses import NTXentLoss
from ser_ssl.models import CRNN, ProjectionHead, ResNet18, VGGLike


def patches_per_second(pairs: int, channels_last: bool, bf16: bool, steps: int) -> float:
    torch.manual_seed(0)
    encoder, head, loss_fn = VGGLike(), ProjectionHead(512), NTXentLoss()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    encoder = encoder.to(memory_format=fmt)
    opt = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=1e-3)
    x = torch.randn(2 * pairs, 1, 96, 101).contiguous(memory_format=fmt)
    times = []
    for _ in range(steps + 1):  # the first step warms up and is not counted
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=128, help="clips per batch (two patches each)")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    malloc = "set" if os.environ.get("MALLOC_MMAP_THRESHOLD_") else "not set"
    print(
        f"VGG-like SimCLR step, batch {args.pairs} pairs of 96x101 patches, "
        f"{torch.get_num_threads()} threads, malloc thresholds {malloc}"
    )
    print(f"{'variant':<28}{'patches/s':>12}{'ratio':>8}")
    base = None
    for name, cl, bf16 in [
        ("fp32", False, False),
        ("fp32 channels_last", True, False),
        ("bf16 autocast", False, True),
    ]:
        rate = patches_per_second(args.pairs, cl, bf16, args.steps)
        base = base or rate
        print(f"{name:<28}{rate:>12.1f}{rate / base:>8.2f}")
    print(f"\nEncoders, forward+backward of {args.pairs} patches, channels_last fp32")
    print(f"{'encoder':<28}{'params':>12}{'patches/s':>12}{'ratio':>8}")
    base = None
    for encoder in (VGGLike(), CRNN(), ResNet18()):
        torch.manual_seed(0)
        rate = encoder_patches_per_second(encoder, args.pairs, args.steps)
        base = base or rate
        params = sum(p.numel() for p in encoder.parameters())
        print(f"{type(encoder).__name__:<28}{params:>12,}{rate:>12.1f}{rate / base:>8.2f}")


if __name__ == "__main__":
    main()
