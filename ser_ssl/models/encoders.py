"""Encoders: ``forward(x [B, 1, n_mels, frames]) -> h [B, embed_dim]`` with an ``embed_dim`` attribute."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def conv_block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    """3x3 conv, BatchNorm, ReLU, then 2x2 max-pooling unless it is the last block."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2, ceil_mode=True))
    return nn.Sequential(*layers)


class VGGLike(nn.Module):
    """The small VGG-like CNN of the paper (about 0.3 M parameters, 512-d by default).

    Conv blocks widen the channels while pooling time and frequency; a 1x1 conv lifts the last
    feature map to ``embed_dim`` and global pooling (mean over frequency, then mean + max over
    time) makes any patch length and mel count work.
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 128, 128), embed_dim: int = 512) -> None:
        super().__init__()
        chans = [1, *channels]
        self.features = nn.Sequential(
            *[conv_block(chans[i], chans[i + 1], pool=True) for i in range(len(channels))]
        )
        self.project = nn.Sequential(
            nn.Conv2d(chans[-1], embed_dim, 1, bias=False), nn.BatchNorm2d(embed_dim), nn.ReLU(inplace=True)
        )
        self.embed_dim = embed_dim

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """Frame-level embeddings ``[B, embed_dim, frames']`` before time pooling."""
        return self.project(self.features(x)).mean(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = self.frames(x)
        return seq.mean(dim=-1) + seq.amax(dim=-1)
