"""Row 5: NT-Xent (``ser_ssl.losses.NTXentLoss``) against a straightforward reference, forward+backward.

The reference is written the way lightly's ``NTXentLoss`` is: four N×N similarity blocks, the
self-similarities' diagonals cut out by boolean indexing, concatenated into 2N × (2N - 1) logits
for a cross-entropy whose target is the positive's column. Both get the same L2-normalised
embeddings and must agree to rtol 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import median, seconds
from benchmarks.table import Row
from ser_ssl.losses import NTXentLoss

TEMPERATURE = 0.2


def reference_ntxent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """NT-Xent of L2-normalised ``z1, z2 [N, D]`` from the four N×N blocks (lightly-style)."""
    n = z1.shape[0]
    l00, l01 = z1 @ z1.T / temperature, z1 @ z2.T / temperature
    l10, l11 = z2 @ z1.T / temperature, z2 @ z2.T / temperature
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=z1.device)
    l00, l11 = l00[off_diagonal].view(n, n - 1), l11[off_diagonal].view(n, n - 1)
    logits = torch.cat([torch.cat([l01, l00], dim=1), torch.cat([l10, l11], dim=1)])
    targets = torch.arange(n, device=z1.device).repeat(2)  # the positive is column i of l01 / l10
    return F.cross_entropy(logits, targets)


def embeddings(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two L2-normalised ``[n, d]`` leaves that require gradients."""
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(2, n, d, generator=g), dim=-1)
    return z[0].clone().requires_grad_(), z[1].clone().requires_grad_()


def fwd_bwd_ms(loss_fn, z1: torch.Tensor, z2: torch.Tensor, repeats: int, warmup: int = 0) -> float:
    """Median ms of one forward+backward call."""

    def call() -> None:
        loss_fn(z1, z2).backward()
        z1.grad = z2.grad = None

    return 1000 * median(seconds(call, repeats, warmup))


def run(quick: bool, workdir: Path) -> list[Row]:
    """Same value as the reference; time per forward+backward at several batch sizes."""
    d = 16 if quick else 512
    plan = [(8, 2), (32, 2)] if quick else [(128, 10), (1024, 3), (4096, 1)]
    ours = NTXentLoss(TEMPERATURE)
    rows = []
    for n, repeats in plan:
        z1, z2 = embeddings(n, d)
        with torch.no_grad():
            torch.testing.assert_close(ours(z1, z2), reference_ntxent(z1, z2), rtol=1e-5, atol=0.0)
        # alternate the two so drift of a shared machine hits both alike
        a, b = [], []
        for round_ in range(2):
            a.append(fwd_bwd_ms(ours, z1, z2, repeats, warmup=int(round_ == 0)))
            b.append(fwd_bwd_ms(reference_ntxent, z1, z2, repeats, warmup=int(round_ == 0)))
        rows.append(
            Row(
                f"NT-Xent fwd+bwd, N = {n} pairs, d = {d}: NTXentLoss vs lightly-style reference",
                min(a),
                min(b),
                "ms/call",
                "time",
                goal=(">=", 1.0),
                goal_note="not slower",
                note=f"values equal to rtol 1e-5 (checked); 2N × 2N masked cross-entropy vs four N×N blocks; "
                f"one warm-up call each, then the best of 2 alternating medians of {repeats} calls.",
            )
        )
    return rows
