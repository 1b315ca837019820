import math

import numpy as np
import pytest
import torch

from ser_ssl.augment import GaussianNoise, MixBack, mix_back


def test_mix_back_matches_the_formula():
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 1, size=(2, 1, 4, 5))
    b = rng.uniform(-2, 2, size=(2, 1, 4, 5))
    lam = np.array([0.03, 0.5])
    expected = np.empty_like(x)
    for i in range(2):
        lx, lb = 10.0 ** x[i], 10.0 ** b[i]
        expected[i] = np.log10((1 - lam[i]) * lx + lam[i] * (lx.sum() / lb.sum()) * lb)
    got = mix_back(torch.tensor(x), torch.tensor(b), torch.tensor(lam))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert torch.allclose(
        mix_back(torch.tensor(x), torch.tensor(b), torch.zeros(2)), torch.tensor(x), atol=1e-5
    )


def test_energy_ratio_keeps_the_clip_dominant_over_a_loud_background():
    x = torch.zeros(1, 1, 2, 2)  # linear value 1
    loud = torch.full((1, 1, 2, 2), 6.0)  # a million times louder
    mixed = mix_back(x, loud, torch.tensor([0.05]))
    assert torch.allclose(mixed, x, atol=1e-6)


def recovered_lambda(mixed: torch.Tensor) -> torch.Tensor:
    """With x = 0 (linear 1) and backgrounds alternating 1 and 3, mixed = 1 -/+ λ/2 per bin."""
    return 2 * (10 ** mixed[..., 1] - 1)


def lambda_setup(b: int, v: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    views = torch.zeros(b, v, 1, 1, 2)
    backgrounds = torch.log10(torch.tensor([1.0, 3.0])).expand(b, v, 1, 1, 2).clone()
    return views, backgrounds


@pytest.mark.parametrize("alpha", [0.05, 0.4])
def test_lambda_is_drawn_per_view_in_range(alpha):
    torch.manual_seed(0)
    views, backgrounds = lambda_setup(500)
    lam = recovered_lambda(MixBack(alpha)(views, backgrounds)).squeeze()
    assert lam.min() >= -1e-5 and lam.max() <= alpha + 1e-5
    assert lam.max() > 0.9 * alpha and lam.min() < 0.1 * alpha  # fills the range
    assert not torch.allclose(lam[:, 0], lam[:, 1])  # independent per view


def test_shared_lambda_is_the_same_for_both_views():
    views, backgrounds = lambda_setup(50)
    lam = recovered_lambda(MixBack(0.3, shared_lambda=True)(views, backgrounds)).squeeze()
    assert torch.allclose(lam[:, 0], lam[:, 1], atol=1e-5)
    assert lam[:, 0].std() > 0.01


def test_silent_and_minus_infinite_patches_stay_finite():
    silent = torch.full((3, 2, 1, 4, 6), math.log10(1.1e-8))
    minus_inf = torch.full((3, 2, 1, 4, 6), float("-inf"))
    for x, b in [(silent, silent), (silent, minus_inf), (minus_inf, minus_inf), (minus_inf, silent)]:
        assert torch.isfinite(MixBack(0.5)(x, b)).all()


def test_mixback_rejects_bad_alpha():
    with pytest.raises(ValueError, match="alpha"):
        MixBack(alpha=1.5)


def test_gaussian_noise_per_sample_std_in_range_and_identity_at_p0():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 96, 101)
    noisy = GaussianNoise(max_std=0.01)(x)
    stds = noisy.flatten(1).std(1)
    assert stds.max() <= 0.0105 and stds.std() > 0.001  # different σ per sample, within max_std
    assert torch.equal(GaussianNoise(p=0.0)(x), x)
    assert noisy.shape == x.shape and noisy.dtype == x.dtype
