"""The projection head g (docs/method.md §5): used during pretraining only, thrown away afterwards."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """``h [B, in_dim] -> z [B, out_dim]``: Linear, BatchNorm, ReLU, Linear, then L2 normalisation."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(h), dim=-1)
