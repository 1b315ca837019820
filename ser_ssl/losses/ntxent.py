"""NT-Xent (docs/method.md §6) written as one masked cross-entropy over the 2N x 2N similarity matrix."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ser_ssl.errors import ConfigError
from ser_ssl.losses.distributed import gather_with_grad, host_group, world


class NTXentLoss(nn.Module):
    """Normalised temperature-scaled cross-entropy over the 2N views of N clips.

    ``forward(z1 [N, D], z2 [N, D])`` with L2-normalised rows: row ``i`` of ``z1`` and of ``z2`` are
    the positive pair; every other view in the batch is a negative. The loss is averaged over all
    2N anchors.

    Under DDP (an initialised process group of more than one process) the batch is the global one:
    the views of every rank are gathered with their gradients and are all negatives, and each rank
    scores only its own 2N anchors, as rows ``rank * 2N ...`` of the global matrix. The mean of the
    ranks' losses is then the one-process loss on the concatenated batch, and so are the gradients
    after DDP averages them: the gather's backward sums what every rank's loss puts on a view, so
    the ranks' gradients add up to that of the sum of their losses, which DDP divides by the world
    size. Every rank must hold the same N. In one process nothing is gathered.
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self._host_group: tuple[dist.ProcessGroup | None] | None = None  # made at the first gather

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_host_group"] = None  # a process group is neither copied nor pickled
        return state

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        if z1.shape != z2.shape:
            raise ValueError(
                f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
            )
        n, d = z1.shape
        anchors = torch.cat([z1, z2])  # [2N, D], this rank's views
        rank, size = world()
        candidates = anchors  # in one process no collective runs
        if size > 1:  # [2N * world, D]: each rank's 2N views in the order of `anchors`, rank by rank
            if self._host_group is None:
                self._host_group = (host_group(),)
            gathered = gather_with_grad(torch.stack([z1, z2], dim=1), *self._host_group)  # [N * world, 2, D]
            candidates = gathered.view(size, n, 2, d).transpose(1, 2).reshape(size * 2 * n, d)
        offset = rank * 2 * n  # this rank's anchors are rows offset ... offset + 2N of the global matrix
        anchors = anchors.float()
        logits = anchors @ candidates.float().T / self.temperature  # [2N, 2N * world]
        rows = torch.arange(2 * n, device=logits.device)
        logits[rows, offset + rows] = float("-inf")  # an anchor is never its own negative
        targets = offset + (rows + n) % (2 * n)  # view i <-> view i + N of the same clip
        return F.cross_entropy(logits, targets)
