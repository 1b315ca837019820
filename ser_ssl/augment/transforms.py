"""Spectrogram augmentations with per-sample random parameters, applied to whole batches."""

from __future__ import annotations

import torch
from torch import nn


class GaussianNoise(nn.Module):
    """Adds N(0, σ²) noise with σ ~ U(0, max_std) drawn per sample, with probability ``p`` per sample.

    Meant for the normalised domain (METHOD §4: max_std 0.01).
    """

    def __init__(self, max_std: float = 0.01, p: float = 1.0) -> None:
        super().__init__()
        self.max_std = max_std
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        std = torch.rand(shape, device=x.device) * self.max_std
        std = std * (torch.rand(shape, device=x.device) < self.p)
        return x + std * torch.randn_like(x)
