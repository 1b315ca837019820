import math

import pytest
import torch
import torch.nn.functional as F

from ser_ssl.losses import NTXentLoss


def loop_ntxent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """docs/method.md §6 written out: ℓ_ij = -log(exp(z_i·z_j/τ) / Σ_{v≠i} exp(z_i·z_v/τ)),
    mean over 2N anchors."""
    z = torch.cat([z1, z2]).double()
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denom = sum(torch.exp(z[i] @ z[v] / tau) for v in range(2 * n) if v != i)
        total += -torch.log(torch.exp(z[i] @ z[j] / tau) / denom)
    return total / (2 * n)


def test_matches_a_direct_loop():
    torch.manual_seed(0)
    z1, z2 = F.normalize(torch.randn(6, 16), dim=1), F.normalize(torch.randn(6, 16), dim=1)
    for tau in (0.2, 0.5):
        assert torch.allclose(NTXentLoss(tau)(z1, z2).double(), loop_ntxent(z1, z2, tau), atol=1e-5)


def test_small_case_by_hand():
    # two clips; views of clip 0 along e1, of clip 1 along e2; τ = 1
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = z1.clone()
    # each anchor: positive similarity 1, negatives 0 and 0 -> -log(e / (e + 2))
    expected = -math.log(math.e / (math.e + 2))
    assert NTXentLoss(1.0)(z1, z2).item() == pytest.approx(expected, rel=1e-6)
    # a single clip has no negative: the loss is 0
    assert NTXentLoss(0.2)(z1[:1], z2[:1]).item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_flows_and_perfect_pairs_score_lower():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(8, 32), dim=1).requires_grad_()
    noisy = F.normalize(torch.randn(8, 32), dim=1)
    loss = NTXentLoss()(z, noisy)
    loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert NTXentLoss()(z.detach(), z.detach()) < loss


def test_rejects_non_positive_temperature():
    with pytest.raises(ValueError):
        NTXentLoss(0.0)
