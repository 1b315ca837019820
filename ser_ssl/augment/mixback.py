"""Mix-back (docs/method.md §3): mix each view with a background patch from another clip."""

from __future__ import annotations

import torch
from torch import nn

from ser_ssl.errors import ConfigError

_TINY = 1e-30  # keeps energies and mixtures positive for silent (or -inf) patches


def mix_back(x: torch.Tensor, background: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``log10((1 - λ) 10^x + λ [E(x) / E(b)] 10^b)`` per sample, with E the sum of linear values.

    ``x`` and ``background`` are log10 patches ``[B, ...]``; ``lam`` is ``[B]``. The energy ratio
    keeps the incoming patch dominant however loud the background is.
    """
    lin_x, lin_b = torch.pow(10.0, x.float()), torch.pow(10.0, background.float())
    dims = tuple(range(1, x.dim()))
    ratio = lin_x.sum(dims, keepdim=True) / lin_b.sum(dims, keepdim=True).clamp_min(_TINY)
    lam = lam.view(-1, *([1] * (x.dim() - 1)))
    mixed = (1 - lam) * lin_x + lam * ratio * lin_b
    return torch.log10(mixed.clamp_min(_TINY)).to(x.dtype)


class MixBack(nn.Module):
    """Draws λ ~ U(0, alpha) per clip and mixes every view with its own background.

    Args:
        alpha: upper bound of λ (0.05 in the paper).
        shared_lambda: one λ per clip for all its views (as the paper's public code did) instead of
            one per view.
    """

    def __init__(self, alpha: float = 0.05, shared_lambda: bool = False) -> None:
        super().__init__()
        if not 0 <= alpha <= 1:
            raise ConfigError(f"alpha must lie in [0, 1], got {alpha}")
        self.alpha = alpha
        self.shared_lambda = shared_lambda

    def sample_params(self, views: torch.Tensor) -> torch.Tensor:
        """λ of every view, ``[B, V]``, drawn from torch's global RNG (the augmentations' protocol)."""
        b, v = views.shape[:2]
        lam = torch.rand(b, 1 if self.shared_lambda else v, device=views.device) * self.alpha
        return lam.expand(b, v)

    def apply(self, views: torch.Tensor, backgrounds: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """``views`` and ``backgrounds``: ``[B, V, 1, n_mels, frames]`` log10 patches; ``lam``: ``[B, V]``."""
        mixed = mix_back(views.flatten(0, 1), backgrounds.flatten(0, 1), lam.reshape(-1))
        return mixed.view_as(views)

    def forward(self, views: torch.Tensor, backgrounds: torch.Tensor) -> torch.Tensor:
        return self.apply(views, backgrounds, self.sample_params(views))
