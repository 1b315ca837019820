"""NT-Xent (METHOD §6) written as one masked cross-entropy over the 2N x 2N similarity matrix."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ser_ssl.errors import ConfigError


class NTXentLoss(nn.Module):
    """Normalised temperature-scaled cross-entropy over the 2N views of N clips.

    ``forward(z1 [N, D], z2 [N, D])`` with L2-normalised rows: row ``i`` of ``z1`` and of ``z2`` are
    the positive pair; every other view in the batch is a negative. The loss is averaged over all
    2N anchors.
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        n = z1.shape[0]
        z = torch.cat([z1, z2]).float()
        logits = z @ z.T / self.temperature
        logits.fill_diagonal_(float("-inf"))  # an anchor is never its own negative
        targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        return F.cross_entropy(logits, targets)
