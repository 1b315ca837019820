"""Collectives that contrastive losses need under DDP: a differentiable all-gather of embeddings, and
the mean of a loss over the processes for logging."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from ser_ssl.errors import ConfigError


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, or ``(0, 1)`` outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sends each rank the gradient of its own rows.

    Every rank's loss reads every rank's rows, so the gradient of a row is the sum over ranks of
    the gradients their losses put on it: all-reduce (sum) the incoming gradient, keep this rank's
    slice. Plain ``dist.all_gather`` would cut the graph and drop the other ranks' terms.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        rank, size = world()
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x)
        ctx.rows = slice(rank * x.shape[0], (rank + 1) * x.shape[0])
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rows]


def host_group() -> dist.ProcessGroup | None:
    """A group for small checks that run on the host: the default group when it is gloo (``None``),
    else a new gloo group over the same processes, so that the check never waits for the GPU. Every
    process must call it at the same point."""
    return None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")


def gather_with_grad(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Concatenate ``x [n, ...]`` of every rank in rank order as ``[world * n, ...]``, differentiably.

    Every rank must hold the same ``n`` (a sampler with ``drop_last``); unequal sizes raise a
    ``ConfigError`` on every rank at once instead of hanging in the gather. The sizes are compared
    over ``group`` (:func:`host_group`), on the host: comparing them on the GPU would make the
    host wait for the device every step.
    """
    _, size = world()
    if size == 1:
        return x
    n = torch.tensor([x.shape[0]])
    sizes = [torch.empty_like(n) for _ in range(size)]
    dist.all_gather(sizes, n, group=group)
    sizes_list = [int(s) for s in sizes]
    if len(set(sizes_list)) > 1:
        raise ConfigError(
            f"the contrastive loss gathers embeddings across {size} processes and needs the same "
            f"batch size on each, got {sizes_list}; drop the last incomplete batch (drop_last=True)"
        )
    return _GatherWithGrad.apply(x)


def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over the processes (``x`` itself in one), detached, for logging a global
    loss every step. A plain all-reduce: on GPUs the host queues it and goes on, whereas Lightning's
    ``self.log(sync_dist=True)`` puts a barrier before its all-reduce, which makes the host wait for
    the device."""
    _, size = world()
    x = x.detach()
    if size == 1:
        return x
    total = x.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)  # gloo has no AVG
    return total / size
