"""NT-Xent under DDP: two real gloo processes on loopback must reproduce one process on the whole batch."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ser_ssl.errors import ConfigError
from ser_ssl.losses import NTXentLoss
from ser_ssl.losses.distributed import mean_over_ranks

WORLD = 2
N = 8  # clips in the global batch, N // WORLD per rank
IN_DIM, OUT_DIM = 12, 6
TAU = 0.2
TOL = 1e-5
STEPS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def global_views(step: int = 0) -> torch.Tensor:
    """The inputs of the global batch, ``[N, 2, IN_DIM]``: two views of each clip."""
    return torch.randn(N, 2, IN_DIM, generator=torch.Generator().manual_seed(100 + step))


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(IN_DIM, OUT_DIM)


def simclr_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """As ``SimCLR.training_step``: one forward over the clip-by-clip views, then split them."""
    n = x.shape[0]
    z = F.normalize(model(x.flatten(0, 1)), dim=1).view(n, 2, -1)
    return NTXentLoss(TAU)(z[:, 0], z[:, 1])


def local(x: torch.Tensor, rank: int) -> torch.Tensor:
    per_rank = x.shape[0] // WORLD
    return x[rank * per_rank : (rank + 1) * per_rank]


def _worker(rank: int, port: int, out: Path) -> None:
    """Run every scenario in one process group (one spawn for the module keeps the tests fast)."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=timedelta(seconds=30),
    )
    try:
        results = {name: scenario(rank) for name, scenario in SCENARIOS.items()}
    finally:
        dist.destroy_process_group()
    torch.save(results, out / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """What each of the two processes returned, per scenario."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(free_port(), out), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


# --- what each rank does ------------------------------------------------------------------------


def _loss(rank: int) -> dict:
    z = F.normalize(global_views().view(N * 2, IN_DIM), dim=1).view(N, 2, IN_DIM)
    z = local(z, rank)
    loss = NTXentLoss(TAU)(z[:, 0], z[:, 1])
    return {"loss": loss.detach(), "logged": mean_over_ranks(loss)}


def _ddp_grads(rank: int) -> dict:
    ddp = DistributedDataParallel(make_model())
    simclr_loss(ddp, local(global_views(), rank)).backward()
    return {name: p.grad.clone() for name, p in ddp.module.named_parameters()}


def _sgd_steps(rank: int) -> dict:
    ddp = DistributedDataParallel(make_model())
    opt = torch.optim.SGD(ddp.parameters(), lr=0.5, momentum=0.9)
    for step in range(STEPS):
        opt.zero_grad()
        simclr_loss(ddp, local(global_views(step), rank)).backward()
        opt.step()
    return {name: p.detach().clone() for name, p in ddp.module.named_parameters()}


def _own_host_group(rank: int) -> dict:
    """As on GPUs, where the default group is NCCL: the sizes are compared over a gloo group of its own."""
    from unittest import mock

    z = F.normalize(global_views().view(N * 2, IN_DIM), dim=1).view(N, 2, IN_DIM)
    z = local(z, rank)
    loss = NTXentLoss(TAU)
    made = []

    def new_gloo_group():
        made.append(dist.new_group(backend="gloo"))
        return made[-1]

    with mock.patch("ser_ssl.losses.ntxent.host_group", new_gloo_group):
        first, second = loss(z[:, 0], z[:, 1]), loss(z[:, 0], z[:, 1])
        try:
            loss(z[: 4 - rank, 0], z[: 4 - rank, 1])  # 4 clips on rank 0, 3 on rank 1
            error = None
        except ConfigError as e:
            error = str(e)
    return {"loss": first.detach(), "again": second.detach(), "groups": len(made), "error": error}


def _unequal_sizes(rank: int) -> dict:
    z = F.normalize(torch.randn(4 - rank, 2, OUT_DIM), dim=2)  # 4 clips on rank 0, 3 on rank 1
    try:
        NTXentLoss(TAU)(z[:, 0], z[:, 1])
    except ConfigError as e:
        return {"error": str(e)}
    return {"error": None}


# run in this order; the unequal sizes come last, after which the process group is only torn down
SCENARIOS = {
    "loss": _loss,
    "ddp_grads": _ddp_grads,
    "sgd_steps": _sgd_steps,
    "own_group": _own_host_group,
    "unequal": _unequal_sizes,
}


# --- tests --------------------------------------------------------------------------------------


def test_mean_of_rank_losses_is_the_global_loss(ranks):
    losses = [r["loss"]["loss"] for r in ranks]
    z = F.normalize(global_views().view(N * 2, IN_DIM), dim=1).view(N, 2, IN_DIM)
    expected = NTXentLoss(TAU)(z[:, 0], z[:, 1])
    assert torch.allclose(torch.stack(losses).mean(), expected, atol=TOL, rtol=0)
    for logged in (r["loss"]["logged"] for r in ranks):  # what SimCLR logs: the same on every rank
        assert torch.allclose(logged, expected, atol=TOL, rtol=0)
    # each rank's negatives are the global batch, not just its own half
    for rank, loss in enumerate(losses):
        zr = local(z, rank)
        assert not torch.allclose(loss, NTXentLoss(TAU)(zr[:, 0], zr[:, 1]), atol=1e-3)


def test_ddp_gradients_equal_the_single_process_gradients(ranks):
    model = make_model()
    simclr_loss(model, global_views()).backward()
    for rank, grads in enumerate(r["ddp_grads"] for r in ranks):
        for name, p in model.named_parameters():
            assert p.grad.abs().max() > 1e-3  # a real gradient, not a trivially matching zero
            assert torch.allclose(grads[name], p.grad, atol=TOL, rtol=0), (rank, name)


def test_sgd_steps_in_two_processes_match_one_process_on_the_whole_batch(ranks):
    model = make_model()
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    for step in range(STEPS):
        opt.zero_grad()
        simclr_loss(model, global_views(step)).backward()
        opt.step()
    for name, p in model.named_parameters():
        assert not torch.allclose(p, start[name], atol=1e-2)  # the steps did move the weights
        for rank, params in enumerate(r["sgd_steps"] for r in ranks):
            assert torch.allclose(params[name], p.detach(), atol=TOL, rtol=0), (rank, name)


def test_unequal_batch_sizes_raise_on_every_rank(ranks):
    for r in (r["unequal"] for r in ranks):
        assert r["error"] is not None and "drop_last" in r["error"] and "[4, 3]" in r["error"]


def test_a_host_group_of_its_own_checks_the_sizes_once_made(ranks):
    for r in ranks:
        own = r["own_group"]
        assert own["groups"] == 1  # made at the first gather, then kept
        assert torch.equal(own["loss"], r["loss"]["loss"]) and torch.equal(own["again"], own["loss"])
        assert own["error"] is not None and "[4, 3]" in own["error"]
