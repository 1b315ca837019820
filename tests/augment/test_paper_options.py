"""The public code's variants of the augmentations (docs/views.md): options whose defaults keep ser-ssl's."""

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ser_ssl.augment import GaussianBlur, RandomShift, SpecAugment
from ser_ssl.errors import ConfigError

MANY = (2000, 1, 16, 24)


def randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def on(b: int) -> torch.Tensor:
    return torch.ones(b, dtype=torch.bool)


# ---------------------------------------------------------------------------------------------------------
# the defaults stay what they were


def test_the_defaults_are_the_old_behaviour():
    shift, spec, blur = RandomShift(), SpecAugment(), GaussianBlur()
    assert (shift.wrap, shift.one_way, spec.fill, blur.random_kernel_size) == (False, False, "mean", False)


@pytest.mark.parametrize(
    "default, explicit",
    [
        (lambda: RandomShift(), lambda: RandomShift(30, 10, 1.0, wrap=False, one_way=False)),
        (lambda: SpecAugment(), lambda: SpecAugment(2, 20, 2, 20, 1.0, fill="mean")),
        (lambda: GaussianBlur(), lambda: GaussianBlur(5, (0.1, 1.0), 1.0, random_kernel_size=False)),
    ],
    ids=["shift", "specaugment", "blur"],
)
def test_default_options_equal_the_old_defaults_passed_explicitly(default, explicit):
    x = randn(8, 1, 32, 40)
    torch.manual_seed(5)
    first = default()(x)
    after_first = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(explicit()(x), first)
    assert torch.equal(torch.rand(3), after_first)  # the same draws, no more


def test_default_shift_and_blur_draw_exactly_the_old_parameters_from_the_rng():
    """The old code drew ``applied``, then dt and df (shift) or sigma (blur), and nothing else."""
    x = torch.zeros(50, 1, 8, 9)
    torch.manual_seed(11)
    shift = RandomShift().sample_params(x)
    blur = GaussianBlur().sample_params(x)
    after = torch.rand(3)
    torch.manual_seed(11)
    assert torch.equal(shift["applied"], torch.rand(50) < 1.0)
    assert torch.equal(shift["dt"], torch.randint(-30, 31, (50,)))
    assert torch.equal(shift["df"], torch.randint(-10, 11, (50,)))
    assert torch.equal(blur["applied"], torch.rand(50) < 1.0)
    assert torch.equal(blur["sigma"], 0.1 + 0.9 * torch.rand(50))
    assert torch.equal(torch.rand(3), after)
    assert set(blur) == {"applied", "sigma"}


# ---------------------------------------------------------------------------------------------------------
# RandomShift(wrap=True, one_way=True)

RAMP = torch.arange(20, dtype=torch.float32).view(1, 1, 4, 5)  # out[m, t] = 5·m + t


def test_wrapped_shift_of_a_ramp_is_the_hand_rolled_patch():
    params = {"applied": on(1), "df": torch.tensor([1]), "dt": torch.tensor([2])}
    out = RandomShift(wrap=True).apply(RAMP, params)
    expected = torch.tensor(
        [
            [18.0, 19.0, 15.0, 16.0, 17.0],  # row 3 came round to row 0, its frames moved 2 later
            [3.0, 4.0, 0.0, 1.0, 2.0],
            [8.0, 9.0, 5.0, 6.0, 7.0],
            [13.0, 14.0, 10.0, 11.0, 12.0],
        ]
    )
    assert torch.equal(out[0, 0], expected)


def test_wrapped_shifts_are_per_sample_rolls_for_any_sign_and_size():
    x = randn(5, 2, 6, 7)
    df, dt = [0, -1, 3, 13, -8], [0, 4, -2, -9, 15]  # beyond the patch, too: a roll is modulo the size
    params = {"applied": on(5), "df": torch.tensor(df), "dt": torch.tensor(dt)}
    out = RandomShift(wrap=True).apply(x, params)
    for i in range(5):
        assert torch.equal(out[i], torch.roll(x[i], shifts=(df[i], dt[i]), dims=(1, 2)))
    assert torch.equal(out.flatten(1).sort(1).values, x.flatten(1).sort(1).values)  # nothing filled in


def test_wrapped_shift_keeps_not_applied_samples_and_works_in_half_and_double():
    x = randn(2, 1, 4, 5, dtype=torch.float64)
    params = {"applied": torch.tensor([True, False]), "df": torch.tensor([2, 2]), "dt": torch.tensor([1, 1])}
    for dtype in (torch.float16, torch.float64):
        out = RandomShift(wrap=True).apply(x.to(dtype), params)
        assert out.dtype == dtype
        assert torch.equal(out[0], torch.roll(x[0].to(dtype), (2, 1), (1, 2)))
        assert torch.equal(out[1], x[1].to(dtype))


def test_one_way_shifts_are_never_negative_and_reach_both_ends():
    torch.manual_seed(0)
    p = RandomShift(max_time=30, max_freq=10, one_way=True).sample_params(torch.zeros(MANY))
    assert p["dt"].dtype == p["df"].dtype == torch.int64
    assert p["dt"].min() == 0 and p["dt"].max() == 30
    assert p["df"].min() == 0 and p["df"].max() == 10


def test_one_way_wrapped_shift_moves_content_up_and_later():
    x = torch.zeros(1, 1, 6, 8)
    x[0, 0, 4, 6] = 1.0
    torch.manual_seed(1)
    transform = RandomShift(max_time=5, max_freq=3, wrap=True, one_way=True)
    params = transform.sample_params(x)
    out = transform.apply(x, params)
    df, dt = int(params["df"][0]), int(params["dt"][0])
    assert out[0, 0, (4 + df) % 6, (6 + dt) % 8] == 1.0 and out.sum() == 1.0


def test_one_way_without_wrap_still_fills_with_the_minimum():
    """one_way only changes what is drawn: given the params, apply is the default one."""
    x = randn(3, 1, 6, 8)
    params = {"applied": on(3), "df": torch.tensor([0, 2, 5]), "dt": torch.tensor([3, 0, 7])}
    assert torch.equal(RandomShift(one_way=True).apply(x, params), RandomShift().apply(x, params))


# ---------------------------------------------------------------------------------------------------------
# SpecAugment(fill="min")


def test_min_filled_masks_hold_exactly_the_sample_minimum_and_leave_the_rest():
    x = randn(2, 1, 10, 12) + torch.tensor([0.0, 5.0]).view(2, 1, 1, 1)
    x[1, 0, 9, 11] = -7.25  # sample 1's minimum, inside its own frequency mask
    params = {
        "applied": on(2),
        "freq_start": torch.tensor([[2, 3], [0, 9]]),
        "freq_width": torch.tensor([[3, 1], [0, 1]]),
        "time_start": torch.tensor([[7], [11]]),
        "time_width": torch.tensor([[2], [0]]),
    }
    out = SpecAugment(time_masks=1, fill="min").apply(x, params)
    masked = torch.zeros(2, 1, 10, 12, dtype=torch.bool)
    masked[0, :, 2:5] = True  # bands 2-4 (the second mask, band 3, lies inside)
    masked[0, :, :, 7:9] = True
    masked[1, :, 9] = True
    for i in range(2):
        assert torch.equal(out[i][~masked[i]], x[i][~masked[i]])
        assert (out[i][masked[i]] == x[i].min()).all()
    assert out[1].min() == -7.25 and out[0].min() == x[0].min()


def test_min_and_mean_fills_mask_the_same_bins():
    torch.manual_seed(2)
    x = randn(4, 1, 16, 24)
    params = SpecAugment(freq_width=6, time_width=8).sample_params(x)
    by_mean = SpecAugment(freq_width=6, time_width=8).apply(x, params)
    by_min = SpecAugment(freq_width=6, time_width=8, fill="min").apply(x, params)
    mins = x.amin((1, 2, 3), keepdim=True).expand_as(x)
    masked = by_mean != by_min  # the mean and the minimum of random data differ in every masked bin
    assert masked.flatten(1).any(1).all()
    assert torch.equal(by_min[masked], mins[masked])
    assert torch.equal(by_min[~masked], x[~masked]) and torch.equal(by_mean[~masked], x[~masked])


# ---------------------------------------------------------------------------------------------------------
# GaussianBlur(random_kernel_size=True)


@pytest.mark.parametrize("kernel_size, sizes", [(1, {1}), (5, {1, 3, 5}), (7, {1, 3, 5, 7})])
def test_random_kernel_sizes_are_odd_within_bounds_and_all_drawn(kernel_size, sizes):
    torch.manual_seed(0)
    p = GaussianBlur(kernel_size=kernel_size, random_kernel_size=True).sample_params(torch.zeros(MANY))
    for axis in ("kernel_freq", "kernel_time"):
        assert p[axis].dtype == torch.int64 and p[axis].shape == (2000,)
        assert set(p[axis].tolist()) == sizes
    if kernel_size > 1:  # drawn independently per axis
        assert not torch.equal(p["kernel_freq"], p["kernel_time"])


def blur_params(sigma: float, kernel_freq: list[int], kernel_time: list[int]) -> dict[str, torch.Tensor]:
    b = len(kernel_freq)
    return {
        "applied": on(b),
        "sigma": torch.full((b,), sigma, dtype=torch.float64),
        "kernel_freq": torch.tensor(kernel_freq),
        "kernel_time": torch.tensor(kernel_time),
    }


def test_kernel_size_one_leaves_that_axis_untouched():
    x = randn(3, 1, 9, 11, dtype=torch.float64)
    blur = GaussianBlur(kernel_size=5, random_kernel_size=True)
    assert torch.equal(blur.apply(x, blur_params(1.5, [1, 1, 1], [1, 1, 1])), x)
    # size 1 in time only: every frame is blurred over frequency on its own
    out = blur.apply(x, blur_params(1.5, [5, 5, 5], [1, 1, 1]))
    for t in range(11):
        column = x[..., t : t + 1]
        assert torch.equal(out[..., t : t + 1], blur.apply(column, blur_params(1.5, [5, 5, 5], [1, 1, 1])))


def test_blur_of_an_impulse_with_per_axis_sizes_is_the_outer_product_of_truncated_taps():
    sigma = 1.2
    x = torch.zeros(2, 1, 9, 11, dtype=torch.float64)
    x[:, 0, 4, 5] = 1.0
    out = GaussianBlur(kernel_size=5, random_kernel_size=True).apply(x, blur_params(sigma, [3, 1], [5, 3]))
    g = np.exp(-(np.arange(-2, 3) ** 2) / (2 * sigma**2))
    taps3 = np.array([0, g[1], g[2], g[3], 0]) / (g[1] + g[2] + g[3])
    taps5 = g / g.sum()
    expected = np.zeros((2, 9, 11))
    expected[0, 2:7, 3:8] = np.outer(taps3, taps5)  # 3 bands by 5 frames
    expected[1, 4, 3:8] = taps3  # 1 band by 3 frames: the time taps alone
    np.testing.assert_allclose(out[:, 0].numpy(), expected, atol=1e-12)
    assert np.count_nonzero(out[0, 0].numpy()) == 15 and np.count_nonzero(out[1, 0].numpy()) == 3


def test_random_kernel_of_the_full_size_is_the_fixed_blur():
    x = randn(4, 1, 9, 11)
    params = blur_params(0.8, [5] * 4, [5] * 4)
    fixed = GaussianBlur(kernel_size=5).apply(x, {"applied": params["applied"], "sigma": params["sigma"]})
    assert torch.equal(GaussianBlur(kernel_size=5, random_kernel_size=True).apply(x, params), fixed)


def test_random_kernel_blur_is_per_sample_and_described():
    torch.manual_seed(3)
    x = randn(6, 1, 16, 24)
    blur = GaussianBlur(kernel_size=7, sigma=(0.8, 2.0), p=0.7, random_kernel_size=True)
    params = blur.sample_params(x)
    full = blur.apply(x, params)
    idx = torch.tensor([4, 1, 3])
    assert torch.equal(blur.apply(x[idx], {k: v[idx] for k, v in params.items()}), full[idx])
    title = blur.describe(params, int(params["applied"].nonzero()[0]))
    assert "kernel_freq=" in title and "kernel_time=" in title and len(title) < 60


# ---------------------------------------------------------------------------------------------------------
# settings and the overlay


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RandomShift(wrap="yes"), "wrap"),
        (lambda: RandomShift(one_way=1), "one_way"),
        (lambda: SpecAugment(fill="zero"), "fill"),
        (lambda: GaussianBlur(random_kernel_size=None), "random_kernel_size"),
    ],
)
def test_impossible_option_values_raise_a_config_error(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_the_paper_overlay_selects_every_variant():
    config = yaml.safe_load(Path("configs/views/paper.yaml").read_text())
    transforms = []
    for entry in config["model"]["init_args"]["augment"]:
        module, name = entry["class_path"].rsplit(".", 1)
        transforms.append(getattr(importlib.import_module(module), name)(**entry.get("init_args", {})))
    by_type = {type(t).__name__: t for t in transforms}
    assert list(by_type) == [
        "RandomShift",
        "RandomResizedCrop",
        "Compression",
        "SpecAugment",
        "GaussianNoise",
        "GaussianBlur",
    ]
    shift, spec, blur = by_type["RandomShift"], by_type["SpecAugment"], by_type["GaussianBlur"]
    assert shift.wrap and shift.one_way and (shift.max_time, shift.max_freq) == (30, 10)
    assert spec.fill == "min" and blur.random_kernel_size and blur.kernel_size == 5
    x = randn(4, 1, 96, 101)
    for t in transforms:
        x = t(x)
    assert x.shape == (4, 1, 96, 101) and torch.isfinite(x).all()
