"""The paper's three encoders, layer for layer (Fonseca et al., ICASSP 2021; docs/method.md §5).

Same contract as :mod:`ser_ssl.models.encoders`: ``forward(x [B, 1, n_mels, frames]) -> [B, embed_dim]``,
an ``embed_dim`` attribute and ``frames(x) -> [B, D, frames']``, the frame-level embeddings before time
pooling. Unlike ser-ssl's own encoders, ``D`` is not always ``embed_dim`` (``PaperVGG``'s dense layer and
``PaperCRNN``'s product of GRU states come after time pooling); :func:`ser_ssl.inference.frame_stride`
measures it. The architectures are fixed, so the classes take no settings; where the paper's description
leaves a detail open, the class docstring says what was chosen. Building blocks come from
:mod:`ser_ssl.models.encoders`.
"""

from __future__ import annotations

import torch
from torch import nn

from ser_ssl.models.config import records_config
from ser_ssl.models.encoders import ResNet18, conv_block, he_init


@records_config
class PaperVGG(nn.Module):
    """The paper's VGG-like CNN: 280,032 parameters, 512-d, 128-d frames every 8 input frames.

    Three blocks of two 3x3 convolutions (output channels 32, 32 | 32, 64 | 64, 128), each convolution
    followed by BatchNorm and ReLU, each block by 2x2 max-pooling, then pooling over frequency, max and
    mean pooling over time concatenated (256 numbers) and a dense layer of 512 units with ReLU.

    Choices where the description is open:

    * the six channel counts are read as the convolutions' outputs in order, two per block;
    * the convolutions have no bias (BatchNorm follows, as in ser-ssl's ``conv_block``, which builds
      them); BatchNorm sits between convolution and ReLU;
    * the pooling is 2x2 max-pooling with stride 2 and ``ceil_mode`` (a 96x101 patch becomes 12x13);
    * frequency is reduced by the mean over the remaining cells (as ser-ssl's encoders do), so any
      mel count works;
    * the dense layer has a bias and no dropout; its ReLU output is the embedding.

    ``frames(x)`` is the 128-channel map after the frequency mean, ``[B, 128, ceil(frames / 8)]``:
    the dense layer acts on time-pooled statistics, so it has no per-frame counterpart.
    """

    def __init__(self) -> None:
        super().__init__()
        blocks = [(1, 32, 32), (32, 32, 64), (64, 64, 128)]  # (in, first conv out, second conv out)
        self.features = nn.Sequential(
            *[
                nn.Sequential(conv_block(c_in, c_mid, pool=None), conv_block(c_mid, c_out))
                for c_in, c_mid, c_out in blocks
            ]
        )
        self.dense = nn.Sequential(nn.Linear(2 * 128, 512), nn.ReLU(inplace=True))
        self.embed_dim = 512

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """Frame-level features ``[B, 128, frames']``, one per 8 input frames, before time pooling."""
        return self.features(x).mean(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = self.frames(x)
        return self.dense(torch.cat([seq.amax(dim=-1), seq.mean(dim=-1)], dim=1))


@records_config
class PaperCRNN(nn.Module):
    """The paper's CRNN: 897,664 parameters, 64-d, 128-d frames at the input frame rate.

    Three 5x5 convolutions of 128 channels, each followed by BatchNorm, ReLU and max-pooling over
    frequency only, then a bidirectional GRU with 64 units per direction over the frame sequence. The
    embedding is the elementwise product of the last forward hidden state (after the last frame) and
    the last backward hidden state (after the first frame), so 64-d.

    Choices where the description is open:

    * the frequency pools are 6, 4 and 4 (largest first, as in the CRNNs this one descends from),
      so 96 mel bands collapse to one (96 -> 16 -> 4 -> 1); pooling uses ``ceil_mode``, and any cells
      left by more than 96 bands are averaged, so any mel count works;
    * time is not pooled, so the GRU sees every input frame;
    * the convolutions have no bias (BatchNorm follows) and ``same`` padding (2);
    * the GRU is one layer with PyTorch's default initialisation, starting from a zero state.

    ``frames(x)`` is the GRU's output at each time step, forward and backward states concatenated:
    ``[B, 128, frames]``.
    """

    FREQ_POOLS = (6, 4, 4)

    def __init__(self) -> None:
        super().__init__()
        chans = [1, 128, 128, 128]
        self.features = nn.Sequential(
            *[
                conv_block(chans[i], chans[i + 1], pool=(pool, 1), kernel=5)
                for i, pool in enumerate(self.FREQ_POOLS)
            ]
        )
        self.gru = nn.GRU(128, 64, batch_first=True, bidirectional=True)
        self.embed_dim = 64

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        """The convolutional features as the GRU's input sequence, ``[B, frames, 128]``."""
        return self.features(x).mean(dim=2).transpose(1, 2).contiguous()

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """GRU outputs ``[B, 128, frames]`` (forward then backward state), one per input frame."""
        return self.gru(self.sequence(x))[0].transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, last = self.gru(
            self.sequence(x)
        )  # [2, B, 64]: forward after the last frame, backward after the first
        return last[0] * last[1]


@records_config
class PaperResNet18(ResNet18):
    """ResNet-18 as published for ImageNet, with one input channel: 11,170,240 parameters, 512-d.

    The ImageNet stem (7x7 stride-2 convolution of 64 channels, BatchNorm, ReLU, 3x3 stride-2
    max-pooling), four stages of two basic blocks (64, 128, 256, 512 channels; stages 2-4 start
    with stride 2 and a 1x1-convolution shortcut), then global average pooling. The total stride is
    32, so a 96x101 patch leaves a 3x4 grid at the last stage (ser-ssl's ``ResNet18`` keeps 6x7).

    Choices where the description is open: global pooling is the mean over the grid (torchvision's
    average pooling, not ser-ssl's mean + max over time); no classifier layer; convolutions without
    bias and He initialisation (``fan_out``), as in torchvision; the stages are those of ser-ssl's
    :class:`~ser_ssl.models.encoders.ResNet18`, whose stem this replaces.

    ``frames(x)`` is the last stage averaged over frequency, ``[B, 512, ceil(frames / 32)]``; the
    embedding is its mean over time.
    """

    def __init__(self) -> None:
        super().__init__(width=1.0)
        self.stem = nn.Sequential(
            nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        he_init(self.stem)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frames(x).mean(dim=-1)
