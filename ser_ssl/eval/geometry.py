"""Geometry of a batch of embeddings: the numbers that tell a healthy contrastive run from a collapsing one.

Pure functions on ``[N, D]`` tensors (no Lightning). Inputs in half precision are computed in float32;
every function that works on the hypersphere L2-normalises its input first (normalising twice is
harmless), so it accepts raw projections as well as normalised ones.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _float(z: torch.Tensor) -> torch.Tensor:
    """Promote half/bfloat16 to float32: SVD and small-difference sums need it."""
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


def _normalized(z: torch.Tensor) -> torch.Tensor:
    return F.normalize(_float(z), dim=-1)


def _check_rows(z: torch.Tensor, minimum: int, what: str) -> None:
    if z.ndim != 2 or z.shape[0] < minimum:
        raise ValueError(f"{what} needs a [N, D] tensor with N >= {minimum}, got shape {tuple(z.shape)}")


def alignment(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 2) -> torch.Tensor:
    """Wang & Isola (2020) alignment: mean ``||z1_i - z2_i||^alpha`` over positive pairs on the sphere.

    0 when the two views of every clip map to the same point; 4 (alpha 2) when they are antipodal.
    """
    if z1.shape != z2.shape:
        raise ValueError(f"need paired views of equal shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    return (_normalized(z1) - _normalized(z2)).norm(dim=1).pow(alpha).mean()


def uniformity(z: torch.Tensor, t: float = 2) -> torch.Tensor:
    """Wang & Isola (2020) uniformity: ``log mean_{i<j} exp(-t ||z_i - z_j||^2)`` on the sphere.

    Lower is more uniform; 0 when all points coincide. Computed with ``logsumexp`` so it stays finite
    for well-spread points, where every ``exp`` term is tiny.
    """
    _check_rows(z, 2, "uniformity")
    sq_dist = torch.pdist(_normalized(z), p=2).pow(2)
    return torch.logsumexp(-t * sq_dist, dim=0) - math.log(sq_dist.numel())


def positive_negative_cosine(z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cosine of the positive pairs ``(z1_i, z2_i)`` and of all negative pairs among the 2N views.

    Negatives are every ordered pair of distinct views except the positives, as in NT-Xent's
    denominator. Uses ``sum_ij <u_i, u_j> = ||sum_i u_i||^2``, so it costs O(N D), not O(N^2 D).
    """
    _check_rows(z1, 2, "positive_negative_cosine")
    if z1.shape != z2.shape:
        raise ValueError(f"need paired views of equal shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    u1, u2 = _normalized(z1), _normalized(z2)
    pos_each = (u1 * u2).sum(dim=1)
    u = torch.cat([u1, u2])
    n_views = u.shape[0]
    total = u.sum(dim=0).pow(2).sum()  # sum over all ordered pairs, self-pairs included
    self_sim = u.pow(2).sum()  # 2N for unit vectors (less if some input rows were zero)
    neg = (total - self_sim - 2 * pos_each.sum()) / (n_views * (n_views - 2))
    return pos_each.mean(), neg


def dimension_std(z: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the per-dimension std of the L2-normalised embeddings (SimSiam's monitor).

    About ``1/sqrt(D)`` when the embeddings spread evenly over the sphere; 0 when they collapse to a point.
    """
    _check_rows(z, 2, "dimension_std")
    return _normalized(z).std(dim=0).mean()


def dimension_std_ratio(z: torch.Tensor) -> torch.Tensor:
    """:func:`dimension_std` times ``sqrt(D)``: about 1 for evenly spread embeddings, 0 for collapse.

    Comparable across embedding sizes, unlike the raw std.
    """
    return dimension_std(z) * math.sqrt(z.shape[-1])


def effective_rank(z: torch.Tensor, center: bool = True) -> torch.Tensor:
    """Roy & Vetterli (2007) effective rank: ``exp`` of the entropy of the normalised singular values.

    Between 1 and ``min(N, D)`` for a non-zero matrix: ``D`` for the identity (uncentred) and 1 for
    any rank-1 matrix. ``center`` subtracts the mean embedding first, so a shared offset does not count
    as a used dimension; note that the centred ``D x D`` identity has rank ``D - 1``.

    Singular values below ``max(N, D) * eps * ||z||_F`` (the input's own scale, as in
    ``torch.linalg.matrix_rank``) are treated as zero. A matrix with no singular value above that,
    e.g. identical rows after centring, returns **0.0**: no direction of variation at all. It is never
    NaN.
    """
    _check_rows(z, 1, "effective_rank")
    z = _float(z)
    x = z - z.mean(dim=0, keepdim=True) if center else z
    s = torch.linalg.svdvals(x)
    tol = max(z.shape) * torch.finfo(z.dtype).eps * torch.linalg.matrix_norm(z)
    s = torch.where(s > tol, s, torch.zeros_like(s))
    total = s.sum()
    if total <= 0:
        return torch.zeros((), dtype=z.dtype, device=z.device)
    p = s / total
    entropy = -(p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))).sum()  # 0 log 0 = 0
    return entropy.exp()


def is_collapsed(z: torch.Tensor, std_ratio_threshold: float = 0.1, min_effective_rank: float = 2.0) -> bool:
    """Whether a batch of embeddings has collapsed, fully or to a few dimensions.

    True when :func:`dimension_std_ratio` is below ``std_ratio_threshold`` (per-dimension std under
    ``0.1 / sqrt(D)`` by default: the points gather around one direction) or when the centred
    :func:`effective_rank` is below ``min_effective_rank`` (they span a line or a plane). The rank
    threshold is capped at the largest rank the batch allows, ``min(N - 1, D)``, so a tiny healthy
    batch is not flagged. Constant embeddings are collapsed; random Gaussian ones are not.
    """
    _check_rows(z, 2, "is_collapsed")
    if dimension_std_ratio(z) < std_ratio_threshold:
        return True
    max_rank = min(z.shape[0] - 1, z.shape[1])
    return bool(effective_rank(z) < min(min_effective_rank, max_rank))
