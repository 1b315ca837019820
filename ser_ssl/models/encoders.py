"""Encoders: ``forward(x [B, 1, n_mels, frames]) -> h [B, embed_dim]`` with an ``embed_dim`` attribute.

Every encoder also has ``frames(x) -> [B, embed_dim, frames']``, the frame-level embeddings before
time pooling, and ends in global pooling so any patch length and mel count work.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ser_ssl.errors import ConfigError
from ser_ssl.models.config import records_config


def conv_block(
    c_in: int, c_out: int, pool: tuple[int, int] | None = (2, 2), kernel: int = 3
) -> nn.Sequential:
    """``kernel`` x ``kernel`` conv (same padding), BatchNorm, ReLU, then max-pooling by ``pool``
    (frequency, time; ``None``: no pooling)."""
    layers = [
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    return nn.Sequential(*layers, *([nn.MaxPool2d(pool, ceil_mode=True)] if pool is not None else []))


def pool_time(seq: torch.Tensor) -> torch.Tensor:
    """``[B, D, frames]`` -> ``[B, D]``: mean + max over time, so both steady and brief events count."""
    return seq.mean(dim=-1) + seq.amax(dim=-1)


@records_config
class VGGLike(nn.Module):
    """The small VGG-like CNN of the paper (about 0.3 M parameters, 512-d by default).

    Conv blocks widen the channels while pooling time and frequency; a 1x1 conv lifts the last
    feature map to ``embed_dim`` and global pooling (mean over frequency, then mean + max over
    time) makes any patch length and mel count work.
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 128, 128), embed_dim: int = 512) -> None:
        super().__init__()
        chans = [1, *channels]
        self.features = nn.Sequential(*[conv_block(chans[i], chans[i + 1]) for i in range(len(channels))])
        self.project = nn.Sequential(
            nn.Conv2d(chans[-1], embed_dim, 1, bias=False), nn.BatchNorm2d(embed_dim), nn.ReLU(inplace=True)
        )
        self.embed_dim = embed_dim

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """Frame-level embeddings ``[B, embed_dim, frames']`` before time pooling."""
        return self.project(self.features(x)).mean(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_time(self.frames(x))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with BatchNorm and an identity (or 1x1-conv) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def resnet18_stages(chans: Sequence[int]) -> nn.Sequential:
    """ResNet-18's four stages of two basic blocks, widths ``chans``; every stage but the first halves
    the resolution."""
    stages, c_in = [], chans[0]
    for i, c_out in enumerate(chans):
        stages.append(nn.Sequential(BasicBlock(c_in, c_out, 1 if i == 0 else 2), BasicBlock(c_out, c_out)))
        c_in = c_out
    return nn.Sequential(*stages)


def he_init(module: nn.Module) -> None:
    """He initialisation of every convolution, which suits a ReLU residual stack."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


@records_config
class ResNet18(nn.Module):
    """ResNet-18 (basic blocks, [2, 2, 2, 2], widths 64-128-256-512) for one-channel log-mel patches.

    About 11.2 M parameters and a ``512 * width``-d embedding. The ImageNet stem (7x7 stride-2
    conv and max-pool, total stride 32) would leave only 3x4 cells of a 96x101 patch, so the stem
    here is a 3x3 stride-1 conv then 2x2 max-pooling: the first conv sees full-resolution
    spectro-temporal detail, and the total stride of 16 matches ``VGGLike`` (7 frames per 101).
    ``width`` scales every channel count (0.5 costs about a quarter of the compute).
    Pooling is ``VGGLike``'s: mean over frequency, then mean + max over time.
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        if width <= 0:
            raise ConfigError(f"width must be positive, got {width}")
        chans = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(
            nn.Conv2d(1, chans[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(chans[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
        )
        self.layers = resnet18_stages(chans)
        self.embed_dim = chans[-1]
        he_init(self)

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """Frame-level embeddings ``[B, embed_dim, frames']`` (one per 16 input frames)."""
        return self.layers(self.stem(x)).mean(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_time(self.frames(x))


@records_config
class CRNN(nn.Module):
    """Convolutional recurrent network: about 1.0 M parameters and a 64-d embedding.

    Four conv blocks (32-128-256-256 channels; the first is narrow as it runs at full resolution)
    halve the frequency axis each but the time axis only in the first two, keeping one frame per 4
    input frames for the recurrent part; the remaining frequency cells are averaged (so any mel
    count works) and a bidirectional GRU with 32 units per direction models the frame sequence.
    Its 64-d outputs are the frame embeddings, pooled like ``VGGLike``'s (mean + max over time).
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 128, 256, 256),
        time_pools: Sequence[int] = (2, 2, 1, 1),
        embed_dim: int = 64,
    ) -> None:
        super().__init__()
        if len(channels) != len(time_pools):
            raise ConfigError("channels and time_pools need one entry per conv block")
        if embed_dim % 2:
            raise ConfigError(f"embed_dim is split between two GRU directions, so must be even: {embed_dim}")
        chans = [1, *channels]
        self.features = nn.Sequential(
            *[conv_block(chans[i], chans[i + 1], (2, t)) for i, t in enumerate(time_pools)]
        )
        self.gru = nn.GRU(chans[-1], embed_dim // 2, batch_first=True, bidirectional=True)
        self.embed_dim = embed_dim

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame GRU outputs ``[B, embed_dim, frames']`` (one per ``prod(time_pools)`` input frames)."""
        seq = self.features(x).mean(dim=2).transpose(1, 2).contiguous()  # [B, frames', C]
        return self.gru(seq)[0].transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_time(self.frames(x))


@records_config
class LogMelStats(nn.Module):
    """No network: each mel band's mean and standard deviation over time, and those of its first
    difference (``4 * n_mels`` numbers). Under :class:`~ser_ssl.tasks.LinearProbe` this is the
    classic log-mel statistics + logistic regression baseline that a learned encoder has to beat.
    """

    def __init__(self, n_mels: int = 96) -> None:
        super().__init__()
        self.n_mels = n_mels
        self.embed_dim = 4 * n_mels

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """The input frames themselves, ``[B, n_mels, frames]``."""
        return x.flatten(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] != self.n_mels:
            raise ConfigError(f"LogMelStats(n_mels={self.n_mels}) got {x.shape[2]} mel bands")
        seq = self.frames(x)
        delta = seq.diff(dim=-1) if seq.shape[-1] > 1 else torch.zeros_like(seq)
        stats = [seq.mean(-1), seq.std(-1, correction=0), delta.mean(-1), delta.std(-1, correction=0)]
        return torch.cat(stats, dim=1)
