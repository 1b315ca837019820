"""Gradients keep their parameter's exact strides, so DDP does not warn about channels-last weights.

CPU convolutions already return gradients with the weight's strides, so a small autograd function
stands in for a GPU kernel that returns the same memory order under other nominal strides.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import torch
from torch import nn

from ser_ssl.models import VGGLike
from ser_ssl.tasks import SimCLR
from ser_ssl.tasks.base import align_grad_strides

SHAPE = (3, 1, 2, 2)  # a one-input-channel convolution weight
PARAM_STRIDES = (4, 1, 2, 1)  # channels-last; contiguous() would give (4, 4, 2, 1)


class OtherNominalStrides(torch.autograd.Function):
    """Identity whose backward returns the gradient with contiguous strides, as some kernels do."""

    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:
        return w.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return torch.empty(grad.shape).copy_(grad)


class OneChannelConv(nn.Module):
    """A weight with a size-1 dimension in channels-last strides, and a bias."""

    def __init__(self) -> None:
        super().__init__()
        data = torch.empty_strided(SHAPE, PARAM_STRIDES).copy_(torch.arange(12.0).view(SHAPE))
        self.w = nn.Parameter(data)
        self.b = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (OtherNominalStrides.apply(self.w) * x).sum() + self.b.sum()


def backward(module: nn.Module) -> OneChannelConv:
    module(torch.arange(12.0).view(SHAPE)).backward()
    return module


def test_without_the_hook_autograd_keeps_the_kernels_strides():
    module = backward(OneChannelConv())
    assert module.w.grad.stride() == (4, 4, 2, 1)  # the mismatch DDP warns about


def test_the_hook_gives_the_gradient_the_parameters_strides_and_the_same_values():
    module = OneChannelConv()
    handles = align_grad_strides(module)
    backward(module)
    assert len(handles) == 1  # the bias has no size-1 dimension
    assert module.w.grad.stride() == PARAM_STRIDES
    torch.testing.assert_close(module.w.grad, torch.arange(12.0).view(SHAPE), rtol=0, atol=0)


def test_a_gradient_in_another_memory_order_is_left_alone():
    module = nn.Module()
    module.w = nn.Parameter(torch.zeros(2, 3))  # no size-1 dimension: no hook
    module.v = nn.Parameter(torch.zeros(2, 1, 3))
    align_grad_strides(module)
    (module.v * torch.ones(2, 1, 3)).sum().backward()
    assert not module.w._backward_hooks
    transposed = torch.ones(3, 1, 2).permute(2, 1, 0)  # other order on the size-2 and size-3 dims
    hook = next(iter(module.v._backward_hooks.values()))
    assert hook(transposed) is None


def test_setup_registers_the_hooks_once_per_stage():
    task = SimCLR(encoder=VGGLike(channels=[4, 8], embed_dim=16), mixback=None, augment=[], n_mels=16)
    task.trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    task.setup("fit")
    task.setup("fit")
    first_conv = next(p for p in task.encoder.parameters() if p.ndim == 4)
    assert first_conv.shape[1] == 1
    assert len(first_conv._backward_hooks) == 1


DDP_SCRIPT = textwrap.dedent(
    """
    import sys, warnings
    import torch, torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel
    from tests.tasks.test_grad_strides import OneChannelConv, backward
    from ser_ssl.tasks.base import align_grad_strides

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{sys.argv[1]}", rank=0, world_size=1)
    seen = []
    for aligned in (True, False):  # DDP warns once per process: the aligned run must come first
        module = OneChannelConv()
        if aligned:
            align_grad_strides(module)
        ddp = DistributedDataParallel(module)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            backward(ddp)
        seen.append(any("Grad strides do not match" in str(w.message) for w in caught))
    dist.destroy_process_group()
    print("warned", *seen)
    """
)


def test_ddp_warns_about_the_strides_only_without_the_hook():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run(
        [sys.executable, "-c", DDP_SCRIPT, str(port)],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "warned False True" in out.stdout, out.stdout + out.stderr
