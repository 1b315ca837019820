"""BatchNorm over the global batch of every process, on any device.

``torch.nn.SyncBatchNorm`` runs on GPUs only (its kernels and DDP's checks refuse CPU tensors), so
multi-process CPU runs, and the CPU tests that prove DDP equals one big batch, need this one. It is
plain autograd: statistics are summed with ``torch.distributed.nn.all_reduce``, whose backward sums
the gradients of every process, exactly what a single process holding the whole batch computes.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn as dist_nn
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class AllReduceBatchNorm(_BatchNorm):
    """Batch normalisation whose training statistics cover the batches of all processes.

    Outside training, or in a single process, it is an ordinary BatchNorm. ``original`` remembers
    the class it replaced so :func:`revert_batchnorm` can restore it.
    """

    original: type[_BatchNorm] = nn.BatchNorm2d

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _distributed()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = dist_nn.all_reduce(x.new_tensor([x.numel() / x.shape[1]]))
        mean = dist_nn.all_reduce(x.sum(dims)) / count  # two passes: no E[x²] - E[x]² cancellation
        centred = x - mean.view(shape)
        var = dist_nn.all_reduce(centred.pow(2).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), momentum)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def _swap(module: nn.Module, target: type[_BatchNorm], source: type[_BatchNorm] | tuple) -> nn.Module:
    """A copy of ``module``'s BatchNorm state in a ``target`` layer, or ``module`` if it is not one."""
    if not isinstance(module, source) or type(module) is target:
        return module
    swapped = target(
        module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
    )
    swapped.load_state_dict(module.state_dict())
    for name, param in swapped.named_parameters():  # a frozen layer (the probe's encoder) stays frozen
        param.requires_grad_(getattr(module, name).requires_grad)
    swapped.train(module.training)
    return swapped


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer of ``module`` by an :class:`AllReduceBatchNorm` (state kept)."""
    converted = _swap(module, AllReduceBatchNorm, _BatchNorm)
    if converted is not module:
        converted.original = type(module)
    for name, child in module.named_children():
        converted.add_module(name, convert_batchnorm(child))
    return converted


def revert_batchnorm(module: nn.Module) -> nn.Module:
    """Undo :func:`convert_batchnorm`: every layer gets its original BatchNorm class back."""
    converted = module
    if isinstance(module, AllReduceBatchNorm):
        converted = _swap(module, module.original, AllReduceBatchNorm)
    for name, child in module.named_children():
        converted.add_module(name, revert_batchnorm(child))
    return converted
