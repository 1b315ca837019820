import math

import pytest
import torch
import torch.nn.functional as F

from ser_ssl.eval import (
    alignment,
    dimension_std,
    dimension_std_ratio,
    effective_rank,
    is_collapsed,
    positive_negative_cosine,
    uniformity,
)

E1, E2 = torch.eye(2)


def test_uniformity_of_two_antipodal_points_is_minus_four_t():
    z = torch.stack([E1, -E1])
    assert uniformity(z, t=2).item() == pytest.approx(-8.0)  # log exp(-2 * ||2 e1||^2)
    assert uniformity(z, t=1).item() == pytest.approx(-4.0)


def test_uniformity_is_zero_for_coinciding_points_and_needs_two():
    assert uniformity(torch.ones(5, 3)).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        uniformity(torch.ones(1, 3))


def test_uniformity_matches_the_definition_on_random_points():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(20, 8), dim=1)
    i, j = torch.triu_indices(20, 20, offset=1)
    expected = torch.exp(-2 * (z[i] - z[j]).pow(2).sum(1)).mean().log()
    assert uniformity(z).item() == pytest.approx(expected.item(), abs=1e-5)


def test_alignment_of_identical_pairs_is_zero_and_of_antipodal_pairs_four():
    torch.manual_seed(0)
    z = torch.randn(6, 4)
    assert alignment(z, z).item() == pytest.approx(0.0, abs=1e-6)
    assert alignment(z, -z).item() == pytest.approx(4.0)
    assert alignment(z, -z, alpha=1).item() == pytest.approx(2.0)
    assert alignment(3 * z, z).item() == pytest.approx(0.0, abs=1e-6)  # on the sphere: scale-free


def test_positive_negative_cosine_on_a_hand_made_set():
    # views [e1, e2 | e2, e1]: positives (e1, e2) and (e2, e1) are orthogonal; of the 8 ordered
    # negatives, 4 pair e1 with e1 or e2 with e2 (cos 1) and 4 are orthogonal (cos 0)
    pos, neg = positive_negative_cosine(torch.stack([E1, E2]), torch.stack([E2, E1]))
    assert pos.item() == pytest.approx(0.0) and neg.item() == pytest.approx(0.5)
    pos, neg = positive_negative_cosine(torch.stack([E1, E2]), torch.stack([E1, E2]))
    assert pos.item() == pytest.approx(1.0) and neg.item() == pytest.approx(0.0)


def test_positive_negative_cosine_matches_the_masked_similarity_matrix():
    torch.manual_seed(0)
    z1, z2 = torch.randn(7, 5), torch.randn(7, 5)
    u = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = u @ u.T
    mask = ~torch.eye(14, dtype=torch.bool)
    mask[torch.arange(7), torch.arange(7) + 7] = False
    mask[torch.arange(7) + 7, torch.arange(7)] = False
    pos, neg = positive_negative_cosine(z1, z2)
    assert pos.item() == pytest.approx(sim.diagonal(7).mean().item(), abs=1e-6)
    assert neg.item() == pytest.approx(sim[mask].mean().item(), abs=1e-6)


def test_dimension_std_is_one_over_sqrt_d_for_spread_embeddings_and_zero_for_collapse():
    torch.manual_seed(0)
    z = torch.randn(4096, 64)
    assert dimension_std(z).item() == pytest.approx(1 / math.sqrt(64), rel=0.05)
    assert dimension_std_ratio(z).item() == pytest.approx(1.0, rel=0.05)
    assert dimension_std_ratio(torch.ones(32, 64)).item() == pytest.approx(0.0, abs=1e-6)


def test_effective_rank_of_identity_rank_one_and_constant_matrices():
    d = 8
    assert effective_rank(torch.eye(d), center=False).item() == pytest.approx(d, rel=1e-5)
    assert effective_rank(torch.eye(d)).item() == pytest.approx(d - 1, rel=1e-5)  # centring removes one
    torch.manual_seed(0)
    rank_one = torch.randn(50, 1) @ torch.randn(1, 16)
    assert effective_rank(rank_one).item() == pytest.approx(1.0, abs=1e-4)
    assert effective_rank(rank_one, center=False).item() == pytest.approx(1.0, abs=1e-4)
    constant = F.normalize(torch.randn(1, 16), dim=1).expand(30, 16)
    assert effective_rank(constant).item() == 0.0  # documented: no direction of variation, never NaN
    assert effective_rank(torch.zeros(4, 3), center=False).item() == 0.0


def test_effective_rank_of_random_embeddings_is_high_and_half_precision_works():
    torch.manual_seed(0)
    z = torch.randn(256, 32)
    assert 25 < effective_rank(z).item() <= 32
    assert effective_rank(z.bfloat16()).item() == pytest.approx(effective_rank(z).item(), rel=0.02)


def test_collapse_detection_fires_on_collapse_and_stays_quiet_on_random_embeddings():
    torch.manual_seed(0)
    assert is_collapsed(torch.ones(64, 32))
    assert is_collapsed(F.normalize(torch.randn(1, 32), dim=1).expand(64, 32) + 1e-4 * torch.randn(64, 32))
    line = torch.randn(64, 1) @ torch.randn(1, 32)  # dimensional collapse: spread, but along one axis
    assert dimension_std_ratio(line) > 0.1 and is_collapsed(line)
    assert not is_collapsed(torch.randn(64, 32))
    assert not is_collapsed(torch.randn(2, 32))  # two distinct points: as many dimensions as they can span
