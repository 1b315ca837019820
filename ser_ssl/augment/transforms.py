"""Spectrogram augmentations (docs/method.md §4) with per-sample random parameters, applied to whole batches.

Every transform takes ``x: [B, C, n_mels, frames]`` on any device and returns a tensor of the same shape,
dtype and device. Parameters are drawn per sample from torch's global RNG (callers seed it, e.g. with
``torch.random.fork_rng``, to reproduce views), and applying them is deterministic, so a notebook can
show what was drawn (``sample_params`` / ``apply`` / ``describe``) and tests can check the ranges.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ser_ssl.errors import ConfigError

Params = dict[str, torch.Tensor]


# ---------------------------------------------------------------------------------------------------------
# argument checks: settings a user writes in YAML, so a wrong one gets a ConfigError naming it


def _check_probability(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"p (probability of applying the transform) must lie in [0, 1], got {p}")
    return float(p)


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _check_flag(name: str, value: bool) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def _check_range(
    name: str, value: Sequence[float], low: float, high: float = math.inf, low_open: bool = False
) -> tuple[float, float]:
    """A ``(lo, hi)`` pair with ``lo <= hi`` inside ``[low, high]`` (``(low, high]`` if ``low_open``)."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a pair (low, high) of numbers, got {value!r}") from None
    bracket = "(" if low_open else "["
    above = (lambda v: v > low) if low_open else (lambda v: v >= low)
    if not (above(lo) and hi <= high and lo <= hi):
        raise ConfigError(
            f"{name} must be a pair (low, high) with low <= high inside {bracket}{low}, {high}], "
            f"got {value!r}"
        )
    return lo, hi


def _param_dtype(x: torch.Tensor) -> torch.dtype:
    """Parameters and interpolation in float64 for float64 input, otherwise float32 (also for half)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``[B]`` -> ``[B, 1, 1, 1]`` so it broadcasts against ``x``."""
    return v.view(-1, *([1] * (x.dim() - 1)))


def _sample_stat(x: torch.Tensor, stat: str) -> torch.Tensor:
    """Per-sample mean or minimum over (C, M, T), shape ``[B, 1, 1, 1]``, in the parameter dtype."""
    flat = x.to(_param_dtype(x)).flatten(1)
    value = flat.mean(1) if stat == "mean" else flat.amin(1)
    return _per_sample(value, x)


def _uniform(n: int, lo: float, hi: float, like: torch.Tensor) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, device=like.device, dtype=_param_dtype(like))


def _format(value: torch.Tensor) -> str:
    if value.dim() == 0:
        v = value.item()
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    return "[" + ", ".join(_format(v) for v in value) + "]"


class BatchTransform(nn.Module):
    """Base of the batched augmentations: per-sample parameters, applied with probability ``p`` each.

    Subclasses implement ``_sample`` (the parameters besides ``applied``) and ``_transform`` (the
    transform of every sample, whether applied or not); the base keeps non-applied samples exactly
    as they came in. ``label`` names the transform in ``describe``; ``describe_keys`` picks the
    parameters shown there (all ``[B]`` and ``[B, n]`` ones when ``None``).
    """

    label: str = "transform"
    describe_keys: tuple[str, ...] | None = None

    def __init__(self, p: float = 1.0) -> None:
        super().__init__()
        self.p = _check_probability(p)

    def sample_params(self, x: torch.Tensor) -> Params:
        """Draws ``applied`` (Bernoulli(p), shape ``[B]``) first, then the transform's own parameters."""
        _check_input(x)
        applied = torch.rand(x.shape[0], device=x.device) < self.p
        return {"applied": applied, **self._sample(x)}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """Deterministic given ``params``; samples with ``applied`` False come out unchanged."""
        _check_input(x)
        if x.shape[0] == 0:  # the per-sample minimum and grid_sample reject an empty batch
            return x.clone()
        out = self._transform(x, params).to(x.dtype)
        return torch.where(_per_sample(params["applied"], x), out, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.sample_params(x))

    def extra_repr(self) -> str:
        """The constructor's arguments, e.g. ``RandomShift(max_time=30, max_freq=10, p=1.0, ...)``."""
        names = [n for n in inspect.signature(type(self).__init__).parameters if n != "self"]
        return ", ".join(f"{n}={getattr(self, n)!r}" for n in names if hasattr(self, n))

    def describe(self, params: Params, i: int) -> str:
        """Sample ``i``'s parameters as a short title, e.g. ``"rrc scale=0.87 ratio=1.12"``."""
        if not bool(params["applied"][i]):
            return f"{self.label} off"
        keys = self.describe_keys or [k for k, v in params.items() if k != "applied" and v.dim() <= 2]
        return " ".join([self.label, *(f"{k}={_format(params[k][i])}" for k in keys)])

    def _sample(self, x: torch.Tensor) -> Params:
        raise NotImplementedError

    def _transform(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        raise NotImplementedError


def _check_input(x: torch.Tensor) -> None:
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(
            f"augmentations expect a floating-point batch [B, C, n_mels, frames], got {tuple(x.shape)} "
            f"{x.dtype}"
        )


class RandomResizedCrop(BatchTransform):
    """Crops a random box of area fraction ``s`` and aspect stretch ``r``, resized back bilinearly.

    Per sample ``s ~ U(scale)`` and ``log r ~ U(log ratio)``; the box is ``M·sqrt(s/r)`` bands by
    ``T·sqrt(s·r)`` frames (clamped to the patch; ``r > 1`` stretches time more than frequency) at a
    uniform position inside the patch. Params: ``scale``, ``ratio`` and the box as fractions of the
    patch: ``height``, ``width`` and the centre ``centre_freq``, ``centre_time`` (all ``[B]``).
    """

    label = "rrc"
    describe_keys = ("scale", "ratio")

    def __init__(
        self,
        scale: tuple[float, float] = (0.8, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        p: float = 1.0,
    ) -> None:
        super().__init__(p)
        self.scale = _check_range("scale", scale, 0.0, 1.0, low_open=True)
        self.ratio = _check_range("ratio", ratio, 0.0, low_open=True)

    def _sample(self, x: torch.Tensor) -> Params:
        b = x.shape[0]
        scale = _uniform(b, *self.scale, like=x)
        ratio = torch.exp(_uniform(b, *(math.log(r) for r in self.ratio), like=x))
        height = torch.sqrt(scale / ratio).clamp(max=1.0)
        width = torch.sqrt(scale * ratio).clamp(max=1.0)
        centre_freq = height / 2 + (1 - height) * _uniform(b, 0.0, 1.0, like=x)
        centre_time = width / 2 + (1 - width) * _uniform(b, 0.0, 1.0, like=x)
        return {
            "scale": scale,
            "ratio": ratio,
            "height": height,
            "width": width,
            "centre_freq": centre_freq,
            "centre_time": centre_time,
        }

    def _transform(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        b, _, m, t = x.shape
        dtype = _param_dtype(x)
        # The grid is what affine_grid(align_corners=False) gives for the diagonal matrix
        # [[width, 0, 2·centre_time - 1], [0, height, 2·centre_freq - 1]], written out elementwise:
        # affine_grid multiplies with bmm, which TF32 (float32_matmul_precision "high") would round
        # enough to move a near-identity crop by a fraction of a bin, and a per-sample elementwise
        # product cannot depend on the rest of the batch.
        base_t = (torch.arange(t, device=x.device, dtype=dtype) * 2 + 1) / t - 1  # pixel centres in [-1, 1]
        base_f = (torch.arange(m, device=x.device, dtype=dtype) * 2 + 1) / m - 1
        p = {k: v.to(dtype).view(b, 1, 1) for k, v in params.items() if k != "applied"}
        grid_t = (p["width"] * base_t.view(1, 1, t) + (2 * p["centre_time"] - 1)).expand(b, m, t)
        grid_f = (p["height"] * base_f.view(1, m, 1) + (2 * p["centre_freq"] - 1)).expand(b, m, t)
        grid = torch.stack([grid_t, grid_f], dim=-1)  # grid_sample wants (x = time, y = frequency)
        # The box lies inside the patch; "border" only matters in the half-bin rim outside the outer
        # pixel centres, where zero padding would pull the edge towards 0.
        return F.grid_sample(x.to(dtype), grid, mode="bilinear", padding_mode="border", align_corners=False)


class RandomShift(BatchTransform):
    """Moves the content by ``df ~ U{-max_freq..max_freq}`` bands and ``dt ~ U{-max_time..max_time}``
    frames per sample, without wrapping: vacated bins take the sample's minimum (its quietest level).

    ``out[m, t] = x[m - df, t - dt]``, so positive shifts move content to higher bands and later frames.
    The paper's public code differs in two ways, each an option: ``wrap`` shifts circularly (what
    leaves one edge comes back at the other, ``out[m, t] = x[(m - df) mod M, (t - dt) mod T]``, a
    per-sample ``torch.roll``) and ``one_way`` draws only non-negative shifts, ``U{0..max}``, i.e. up
    in frequency and later in time. Params: ``dt`` and ``df`` (int64, ``[B]``).
    """

    label = "shift"

    def __init__(
        self,
        max_time: int = 30,
        max_freq: int = 10,
        p: float = 1.0,
        wrap: bool = False,
        one_way: bool = False,
    ) -> None:
        super().__init__(p)
        self.max_time = _check_count("max_time", max_time)
        self.max_freq = _check_count("max_freq", max_freq)
        self.wrap = _check_flag("wrap", wrap)
        self.one_way = _check_flag("one_way", one_way)

    def _sample(self, x: torch.Tensor) -> Params:
        b = x.shape[0]
        low_time, low_freq = (0, 0) if self.one_way else (-self.max_time, -self.max_freq)
        dt = torch.randint(low_time, self.max_time + 1, (b,), device=x.device)
        df = torch.randint(low_freq, self.max_freq + 1, (b,), device=x.device)
        return {"dt": dt, "df": df}

    def _transform(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        b, c, m, t = x.shape
        src_f = torch.arange(m, device=x.device) - params["df"].view(b, 1)  # [B, M] source band
        src_t = torch.arange(t, device=x.device) - params["dt"].view(b, 1)  # [B, T] source frame
        if self.wrap:
            src_f, src_t = src_f.remainder(m), src_t.remainder(t)  # non-negative for any shift
        # one gather over the flattened (M, T) plane; unwrapped, sources outside are clamped, then replaced
        source = src_f.clamp(0, m - 1).view(b, m, 1) * t + src_t.clamp(0, t - 1).view(b, 1, t)
        index = source.view(b, 1, m * t).expand(b, c, m * t)
        moved = x.reshape(b, c, m * t).gather(2, index).view(b, c, m, t)
        if self.wrap:
            return moved
        valid = ((src_f >= 0) & (src_f < m)).view(b, m, 1) & ((src_t >= 0) & (src_t < t)).view(b, 1, t)
        return torch.where(valid.view(b, 1, m, t), moved, _sample_stat(x, "min").to(x.dtype))


class Compression(BatchTransform):
    """Shrinks the dynamic range of the log values around the patch's level: ``mean + c·(x - mean)``.

    ``c ~ U(low, high)`` per sample and ``mean`` is the sample's mean over (C, M, T). In the log
    domain this is companding (``c < 1`` raises quiet bins towards the level and lowers loud ones):
    contrast shrinks while the overall level stays put, so the view does not also get louder or
    quieter, and it works the same on standardised and raw log-mel. Params: ``factor`` ``[B]``.
    """

    label = "compress"

    def __init__(self, low: float = 0.75, high: float = 1.0, p: float = 1.0) -> None:
        super().__init__(p)
        self.low, self.high = _check_range("(low, high) of Compression", (low, high), 0.0)

    def _sample(self, x: torch.Tensor) -> Params:
        return {"factor": _uniform(x.shape[0], self.low, self.high, like=x)}

    def _transform(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        mean = _sample_stat(x, "mean")
        return mean + _per_sample(params["factor"].to(mean.dtype), x) * (x.to(mean.dtype) - mean)


class SpecAugment(BatchTransform):
    """``freq_masks`` frequency and ``time_masks`` time masks per sample, filled with the sample's mean.

    Each mask has width ``w ~ U{0..width}`` (``width`` clamped to the axis) and a uniform start in
    ``[0, axis - w]``. Params: ``freq_start``, ``freq_width`` ``[B, freq_masks]`` and ``time_start``,
    ``time_width`` ``[B, time_masks]`` (int64). The mean (not 0) keeps it right on unstandardised input;
    ``fill="min"`` takes the sample's minimum instead (its quietest level), as the paper's public code did.

    The masks are drawn here rather than with ``torchaudio.functional.mask_along_axis_iid`` because
    that function draws internally and cannot report the widths and starts it drew, which the view
    notebook shows as titles and the tests check against the configured ranges.
    """

    label = "specaug"

    def __init__(
        self,
        freq_masks: int = 2,
        freq_width: int = 20,
        time_masks: int = 2,
        time_width: int = 20,
        p: float = 1.0,
        fill: Literal["mean", "min"] = "mean",
    ) -> None:
        super().__init__(p)
        self.freq_masks = _check_count("freq_masks", freq_masks)
        self.freq_width = _check_count("freq_width", freq_width)
        self.time_masks = _check_count("time_masks", time_masks)
        self.time_width = _check_count("time_width", time_width)
        if fill not in ("mean", "min"):
            raise ConfigError(f"fill of SpecAugment must be 'mean' or 'min', got {fill!r}")
        self.fill = fill

    @staticmethod
    def _draw_masks(b: int, n: int, width: int, size: int, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        width = min(width, size)
        widths = torch.randint(0, width + 1, (b, n), device=x.device)
        # start ~ U{0..size - w}: floor of a uniform scaled by the number of choices (clamped because
        # float rounding can reach the upper end).
        choices = (size - widths + 1).to(torch.float64)
        u = torch.rand(b, n, device=x.device, dtype=torch.float64)
        starts = torch.minimum((u * choices).long(), size - widths)
        return starts, widths

    def _sample(self, x: torch.Tensor) -> Params:
        b, _, m, t = x.shape
        freq_start, freq_width = self._draw_masks(b, self.freq_masks, self.freq_width, m, x)
        time_start, time_width = self._draw_masks(b, self.time_masks, self.time_width, t, x)
        return {
            "freq_start": freq_start,
            "freq_width": freq_width,
            "time_start": time_start,
            "time_width": time_width,
        }

    @staticmethod
    def _covered(starts: torch.Tensor, widths: torch.Tensor, size: int) -> torch.Tensor:
        """``[B, size]`` bool: bins inside any of the ``[B, n]`` masks."""
        pos = torch.arange(size, device=starts.device).view(1, 1, size)
        inside = (pos >= starts.unsqueeze(-1)) & (pos < (starts + widths).unsqueeze(-1))
        return inside.any(dim=1)

    def _transform(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        b, _, m, t = x.shape
        freq = self._covered(params["freq_start"], params["freq_width"], m).view(b, 1, m, 1)
        time = self._covered(params["time_start"], params["time_width"], t).view(b, 1, 1, t)
        return torch.where(freq | time, _sample_stat(x, self.fill).to(x.dtype), x)

    def describe(self, params: Params, i: int) -> str:
        """E.g. ``"specaug freq=[3:9, 40:52] time=[10:12]"`` (python slices of the masked bins)."""
        if not bool(params["applied"][i]):
            return f"{self.label} off"

        def slices(axis: str) -> str:
            pairs = zip(params[f"{axis}_start"][i].tolist(), params[f"{axis}_width"][i].tolist(), strict=True)
            return "[" + ", ".join(f"{s}:{s + w}" for s, w in pairs) + "]"

        return f"{self.label} freq={slices('freq')} time={slices('time')}"


class GaussianNoise(BatchTransform):
    """Adds ``σ·N(0, 1)`` with ``σ ~ U(0, max_std)`` per sample (docs/method.md §4: 0.01, normalised domain).

    Params: ``std`` ``[B]`` and the drawn standard-normal ``noise`` (shape of ``x``), so that ``apply``
    is deterministic.
    """

    label = "noise"
    describe_keys = ("std",)

    def __init__(self, max_std: float = 0.01, p: float = 1.0) -> None:
        super().__init__(p)
        if not max_std >= 0:
            raise ConfigError(f"max_std of GaussianNoise must be >= 0, got {max_std}")
        self.max_std = float(max_std)

    def _sample(self, x: torch.Tensor) -> Params:
        return {"std": _uniform(x.shape[0], 0.0, self.max_std, like=x), "noise": torch.randn_like(x)}

    def _transform(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return x + _per_sample(params["std"].to(x.dtype), x) * params["noise"].to(x.dtype)


class GaussianBlur(BatchTransform):
    """Separable Gaussian blur over frequency and time, ``σ ~ U(sigma)`` per sample (in bins).

    The ``kernel_size`` taps are built per sample and applied along each axis as a sum of shifted
    copies weighted per sample (``kernel_size`` fused multiply-adds), with replicate padding so the
    size is kept and a constant patch stays constant. Params: ``sigma`` ``[B]``.

    ``random_kernel_size`` draws, as the paper's public code did, an odd kernel size per sample and
    per axis, uniform over ``1, 3, ..., kernel_size`` (params ``kernel_freq``, ``kernel_time``, int64
    ``[B]``; size 1 leaves that axis as it is). A smaller kernel is the full one with its outer taps
    set to 0 before normalising, so per-sample sizes cost no more than the fixed size.

    Not a grouped convolution (batch as channels, ``groups = B·C``): the convolution picks its
    algorithm by the number of groups, so one sample's output changed in the last bit with the
    batch around it, and on a 2-core CPU it was 1.5-2× slower (256 patches of 96 × 101).
    """

    label = "blur"

    def __init__(
        self,
        kernel_size: int = 5,
        sigma: tuple[float, float] = (0.1, 1.0),
        p: float = 1.0,
        random_kernel_size: bool = False,
    ) -> None:
        super().__init__(p)
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
            raise ConfigError(
                f"kernel_size of GaussianBlur must be a positive odd integer, got {kernel_size!r}"
            )
        if kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size of GaussianBlur must be odd to keep the size, got {kernel_size}")
        self.kernel_size = kernel_size
        self.sigma = _check_range("sigma of GaussianBlur", sigma, 0.0, low_open=True)
        self.random_kernel_size = _check_flag("random_kernel_size", random_kernel_size)

    def _sample(self, x: torch.Tensor) -> Params:
        # the kernel sizes are drawn only when asked for, so the default leaves the RNG stream as it was
        params = {"sigma": _uniform(x.shape[0], *self.sigma, like=x)}
        if self.random_kernel_size:
            for axis in ("kernel_freq", "kernel_time"):
                radius = torch.randint(0, self.kernel_size // 2 + 1, (x.shape[0],), device=x.device)
                params[axis] = 2 * radius + 1
        return params

    def kernels(self, sigma: torch.Tensor, size: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, kernel_size]`` normalised taps; the centre tap is exp(0) = 1, so the sum never is 0.

        ``size`` (odd, ``[B]``) zeroes the taps beyond each sample's own radius.
        """
        radius = self.kernel_size // 2
        offsets = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
        taps = torch.exp(-(offsets**2) / (2 * sigma.unsqueeze(1) ** 2))
        if size is not None:
            inside = offsets.abs() <= (size.unsqueeze(1) // 2).to(sigma.dtype)
            taps = torch.where(inside, taps, torch.zeros_like(taps))
        return taps / taps.sum(1, keepdim=True)

    def _transform(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        sigma = params["sigma"].to(_param_dtype(x))
        if self.random_kernel_size:
            taps_freq = self.kernels(sigma, params["kernel_freq"])
            taps_time = self.kernels(sigma, params["kernel_time"])
        else:
            taps_freq = taps_time = self.kernels(sigma)
        r = self.kernel_size // 2
        y = _blur_axis(x.to(sigma.dtype), taps_freq, (0, 0, r, r), dim=2)  # frequency
        return _blur_axis(y, taps_time, (r, r, 0, 0), dim=3)  # time


def _blur_axis(x: torch.Tensor, taps: torch.Tensor, pad: tuple[int, ...], dim: int) -> torch.Tensor:
    """``sum_j taps[:, j] · x_padded[j : j + size]`` along ``dim``, with replicate padding."""
    size = x.shape[dim]
    padded = F.pad(x, pad, mode="replicate")
    out = _per_sample(taps[:, 0], x) * padded.narrow(dim, 0, size)
    for j in range(1, taps.shape[1]):
        out.addcmul_(_per_sample(taps[:, j], x), padded.narrow(dim, j, size))
    return out
