import math

import numpy as np
import pytest
import torch

from ser_ssl.augment import (
    BatchTransform,
    Compression,
    GaussianBlur,
    GaussianNoise,
    RandomResizedCrop,
    RandomShift,
    SpecAugment,
)
from ser_ssl.errors import ConfigError

SHAPE = (6, 1, 16, 24)

# the defaults of docs/method.md §4
DEFAULTS = {
    "rrc": RandomResizedCrop,
    "shift": RandomShift,
    "compression": Compression,
    "specaugment": SpecAugment,
    "noise": GaussianNoise,
    "blur": GaussianBlur,
}
# ranges far from the identity, so that every applied sample visibly changes
STRONG = {
    "rrc": lambda **kw: RandomResizedCrop(scale=(0.4, 0.6), **kw),
    "shift": lambda **kw: RandomShift(max_time=5, max_freq=3, **kw),
    "compression": lambda **kw: Compression(low=0.5, high=0.6, **kw),
    "specaugment": lambda **kw: SpecAugment(freq_width=6, time_width=8, **kw),
    "noise": lambda **kw: GaussianNoise(max_std=1.0, **kw),
    "blur": lambda **kw: GaussianBlur(sigma=(0.8, 2.0), **kw),
}
# the parameter that differs between samples, for each transform
MAIN_PARAM = {
    "rrc": "scale",
    "shift": "dt",
    "compression": "factor",
    "specaugment": "freq_width",
    "noise": "std",
    "blur": "sigma",
}
NAMES = list(DEFAULTS)


def randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def always(x: torch.Tensor) -> torch.Tensor:
    return torch.ones(x.shape[0], dtype=torch.bool)


# ---------------------------------------------------------------------------------------------------------
# common contract


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_device_kept(name, dtype):
    x = randn(*SHAPE, dtype=dtype)
    out = DEFAULTS[name]()(x)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device


@pytest.mark.parametrize("name", NAMES)
def test_p0_is_the_identity(name):
    x = randn(*SHAPE)
    transform = STRONG[name](p=0.0)
    params = transform.sample_params(x)
    assert not params["applied"].any()
    assert torch.equal(transform.apply(x, params), x)
    assert torch.equal(transform(x), x)
    assert transform.describe(params, 0).endswith(" off")


@pytest.mark.parametrize("name", NAMES)
def test_p1_changes_every_sample(name):
    torch.manual_seed(3)
    x = randn(*SHAPE)
    transform = STRONG[name](p=1.0)
    params = transform.sample_params(x)
    assert params["applied"].all()
    changed = (transform.apply(x, params) != x).flatten(1).any(1)
    if name == "shift":  # a draw of (0, 0) is the identity; the others must move the content
        moved = (params["dt"] != 0) | (params["df"] != 0)
        assert moved.sum() >= 4 and torch.equal(changed, moved)
    else:
        assert changed.all()


def test_intermediate_p_applies_to_some_samples_only():
    torch.manual_seed(0)
    x = randn(400, 1, 4, 5)
    transform = Compression(low=0.5, high=0.6, p=0.3)
    params = transform.sample_params(x)
    out = transform.apply(x, params)
    applied = params["applied"]
    assert 0.2 < applied.float().mean() < 0.4
    assert torch.equal(out[~applied], x[~applied])
    assert (out[applied] != x[applied]).flatten(1).any(1).all()


@pytest.mark.parametrize("name", NAMES)
def test_samples_in_a_batch_get_different_parameters(name):
    torch.manual_seed(0)
    params = DEFAULTS[name]().sample_params(randn(*SHAPE))
    values = params[MAIN_PARAM[name]]
    assert values.shape[0] == SHAPE[0]
    assert len(torch.unique(values.flatten(1) if values.dim() > 1 else values, dim=0)) > 1
    if values.is_floating_point():
        assert len(torch.unique(values)) == SHAPE[0]


@pytest.mark.parametrize(
    "fill",
    [
        lambda s: torch.zeros(s),
        lambda s: torch.full(s, 3.0),
        lambda s: torch.full(s, -20.0),
        lambda s: torch.where(randn(*s) > 0, -20.0, 0.0),
        lambda s: torch.where(randn(*s) > 1, -1e4, randn(*s)),
    ],
    ids=["zeros", "constant", "minus20", "minus20_and_0", "minus1e4"],
)
@pytest.mark.parametrize("name", NAMES)
def test_no_nan_or_inf_on_silent_constant_or_very_negative_input(name, fill):
    torch.manual_seed(0)
    x = fill(SHAPE)
    for transform in (DEFAULTS[name](), STRONG[name]()):
        assert torch.isfinite(transform(x)).all()
        assert torch.isfinite(transform(x.double())).all()


@pytest.mark.parametrize("name", NAMES)
def test_each_sample_is_transformed_independently_of_the_batch(name):
    torch.manual_seed(0)
    x = randn(*SHAPE)
    transform = STRONG[name](p=0.7)
    params = transform.sample_params(x)
    full = transform.apply(x, params)
    for idx in (torch.tensor([4, 1, 3]), torch.tensor([5]), torch.arange(6).flip(0)):
        sub = transform.apply(x[idx], {k: v[idx] for k, v in params.items()})
        assert torch.equal(sub, full[idx])


@pytest.mark.parametrize("name", NAMES)
def test_the_same_seed_gives_the_same_output(name):
    x = randn(*SHAPE)
    transform = DEFAULTS[name]()
    torch.manual_seed(7)
    first = transform(x)
    torch.manual_seed(7)
    assert torch.equal(transform(x), first)
    torch.manual_seed(8)
    assert not torch.equal(transform(x), first)


@pytest.mark.parametrize("name", NAMES)
def test_apply_is_deterministic_and_forward_is_apply_of_sample_params(name):
    x = randn(*SHAPE)
    transform = DEFAULTS[name](p=0.5)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        params = transform.sample_params(x)
        by_hand = transform.apply(x, params)
    torch.manual_seed(1)
    assert torch.equal(transform(x), by_hand)
    assert torch.equal(transform.apply(x, params), by_hand)


@pytest.mark.parametrize("name", NAMES)
def test_describe_names_the_transform_and_its_parameters(name):
    torch.manual_seed(0)
    transform = DEFAULTS[name]()
    params = transform.sample_params(randn(*SHAPE))
    title = transform.describe(params, 2)
    assert isinstance(title, str) and title.startswith(transform.label + " ") and "=" in title
    assert len(title) < 60 and "\n" not in title


def test_describe_shows_the_drawn_values():
    params = crop_params(1, scale=0.8712, ratio=1.1234)
    assert RandomResizedCrop().describe(params, 0) == "rrc scale=0.871 ratio=1.12"
    shift = {"applied": torch.tensor([True]), "dt": torch.tensor([-3]), "df": torch.tensor([2])}
    assert RandomShift().describe(shift, 0) == "shift dt=-3 df=2"
    masks = {
        "applied": torch.tensor([True]),
        "freq_start": torch.tensor([[3, 10]]),
        "freq_width": torch.tensor([[2, 0]]),
        "time_start": torch.tensor([[0]]),
        "time_width": torch.tensor([[5]]),
    }
    assert SpecAugment(time_masks=1).describe(masks, 0) == "specaug freq=[3:5, 10:10] time=[0:5]"


@pytest.mark.parametrize("name", NAMES)
def test_input_that_is_not_a_float_batch_of_patches_is_rejected(name):
    with pytest.raises(ValueError, match="B, C, n_mels, frames"):
        DEFAULTS[name]()(torch.zeros(16, 24))
    with pytest.raises(ValueError, match="B, C, n_mels, frames"):
        DEFAULTS[name]()(torch.zeros(SHAPE, dtype=torch.long))


@pytest.mark.parametrize("name", NAMES)
def test_an_empty_batch_passes_through(name):
    x = torch.zeros(0, 1, 16, 24)
    assert DEFAULTS[name]()(x).shape == x.shape


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: GaussianNoise(p=1.5), "p "),
        (lambda: RandomShift(p=-0.1), "p "),
        (lambda: RandomResizedCrop(scale=(0.0, 1.0)), "scale"),
        (lambda: RandomResizedCrop(scale=(0.9, 1.2)), "scale"),
        (lambda: RandomResizedCrop(scale=(0.9, 0.8)), "scale"),
        (lambda: RandomResizedCrop(scale=0.9), "scale"),
        (lambda: RandomResizedCrop(ratio=(0.0, 1.0)), "ratio"),
        (lambda: RandomResizedCrop(ratio=(2.0, 1.0)), "ratio"),
        (lambda: RandomShift(max_time=-1), "max_time"),
        (lambda: RandomShift(max_freq=2.5), "max_freq"),
        (lambda: Compression(low=-0.1), "Compression"),
        (lambda: Compression(low=0.9, high=0.8), "Compression"),
        (lambda: SpecAugment(freq_width=-1), "freq_width"),
        (lambda: SpecAugment(time_masks=-2), "time_masks"),
        (lambda: GaussianNoise(max_std=-0.01), "max_std"),
        (lambda: GaussianBlur(kernel_size=4), "odd"),
        (lambda: GaussianBlur(kernel_size=0), "kernel_size"),
        (lambda: GaussianBlur(sigma=(0.0, 1.0)), "sigma"),
        (lambda: GaussianBlur(sigma=(1.0, 0.5)), "sigma"),
    ],
)
def test_impossible_settings_raise_a_config_error(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_every_transform_is_a_batch_transform_with_the_paper_defaults():
    assert all(issubclass(cls, BatchTransform) for cls in DEFAULTS.values())
    rrc, shift, comp, spec = RandomResizedCrop(), RandomShift(), Compression(), SpecAugment()
    assert rrc.scale == (0.8, 1.0) and rrc.ratio == pytest.approx((3 / 4, 4 / 3))
    assert (shift.max_time, shift.max_freq) == (30, 10)
    assert (comp.low, comp.high) == (0.75, 1.0)
    assert (spec.freq_masks, spec.freq_width, spec.time_masks, spec.time_width) == (2, 20, 2, 20)
    assert GaussianNoise().max_std == 0.01
    assert GaussianBlur().kernel_size == 5 and GaussianBlur().sigma == (0.1, 1.0)
    assert repr(RandomShift(max_time=4, p=0.5)) == (
        "RandomShift(max_time=4, max_freq=10, p=0.5, wrap=False, one_way=False)"
    )


# ---------------------------------------------------------------------------------------------------------
# drawn parameters stay in their ranges (and fill them)

MANY = (2000, 1, 16, 24)


def test_crop_parameters_stay_in_range():
    torch.manual_seed(0)
    p = RandomResizedCrop(scale=(0.5, 0.9), ratio=(0.5, 2.0)).sample_params(torch.zeros(MANY))
    assert p["scale"].min() >= 0.5 and p["scale"].max() <= 0.9
    assert p["scale"].min() < 0.51 and p["scale"].max() > 0.89
    assert p["ratio"].min() >= 0.5 - 1e-6 and p["ratio"].max() <= 2.0 + 1e-6
    assert p["ratio"].min() < 0.52 and p["ratio"].max() > 1.95
    assert abs(torch.log(p["ratio"]).mean()) < 0.05  # log-uniform: symmetric around 1
    for size, centre in (("height", "centre_freq"), ("width", "centre_time")):
        assert (p[size] > 0).all() and (p[size] <= 1).all()
        assert (p[centre] - p[size] / 2 >= -1e-6).all() and (p[centre] + p[size] / 2 <= 1 + 1e-6).all()
    unclamped = (p["height"] < 1) & (p["width"] < 1)
    area = p["height"] * p["width"]
    assert torch.allclose(area[unclamped], p["scale"][unclamped], atol=1e-5)
    stretch = p["width"] / p["height"]
    assert torch.allclose(stretch[unclamped], p["ratio"][unclamped], atol=1e-5)


def test_shift_sizes_stay_in_range():
    torch.manual_seed(0)
    p = RandomShift(max_time=30, max_freq=10).sample_params(torch.zeros(MANY))
    assert p["dt"].dtype == torch.int64
    assert p["dt"].min() == -30 and p["dt"].max() == 30
    assert p["df"].min() == -10 and p["df"].max() == 10
    assert torch.equal(RandomShift(0, 0).sample_params(torch.zeros(MANY))["dt"], torch.zeros(2000).long())


def test_compression_factor_stays_in_range():
    torch.manual_seed(0)
    factor = Compression(low=0.75, high=1.0).sample_params(torch.zeros(MANY))["factor"]
    assert factor.min() >= 0.75 and factor.max() <= 1.0
    assert factor.min() < 0.76 and factor.max() > 0.99


@pytest.mark.parametrize("freq_width, time_width", [(20, 20), (5, 3), (0, 24)])
def test_mask_widths_and_starts_stay_within_the_axis(freq_width, time_width):
    torch.manual_seed(0)
    m, t = MANY[2:]
    transform = SpecAugment(freq_masks=2, freq_width=freq_width, time_masks=3, time_width=time_width)
    p = transform.sample_params(torch.zeros(MANY))
    assert p["freq_start"].shape == p["freq_width"].shape == (2000, 2)
    assert p["time_start"].shape == p["time_width"].shape == (2000, 3)
    for axis, width, size in (("freq", freq_width, m), ("time", time_width, t)):
        starts, widths = p[f"{axis}_start"], p[f"{axis}_width"]
        assert widths.min() == 0 and widths.max() == min(width, size)  # clamped to the axis
        assert starts.min() == 0 and (starts >= 0).all() and (starts + widths <= size).all()
        assert (starts + widths).max() == size  # masks reach the last bin too


def test_spec_augment_without_masks_draws_empty_params_and_keeps_the_input():
    x = randn(*SHAPE)
    transform = SpecAugment(freq_masks=0, time_masks=0)
    params = transform.sample_params(x)
    assert params["freq_width"].shape == (6, 0)
    assert torch.equal(transform.apply(x, params), x)
    assert transform.describe(params, 0) == "specaug freq=[] time=[]"


def test_noise_std_stays_in_range():
    torch.manual_seed(0)
    x = torch.zeros(MANY)
    p = GaussianNoise(max_std=0.01).sample_params(x)
    assert p["std"].min() >= 0 and p["std"].max() <= 0.01 and p["std"].max() > 0.0099
    assert p["noise"].shape == x.shape


def test_blur_sigma_stays_in_range():
    torch.manual_seed(0)
    sigma = GaussianBlur(sigma=(0.1, 1.0)).sample_params(torch.zeros(MANY))["sigma"]
    assert sigma.min() >= 0.1 and sigma.max() <= 1.0
    assert sigma.min() < 0.11 and sigma.max() > 0.99


# ---------------------------------------------------------------------------------------------------------
# hand-checked cases


def crop_params(b: int, scale=1.0, ratio=1.0, height=1.0, width=1.0, centre_freq=0.5, centre_time=0.5):
    values = dict(
        scale=scale, ratio=ratio, height=height, width=width, centre_freq=centre_freq, centre_time=centre_time
    )
    return {"applied": torch.ones(b, dtype=torch.bool), **{k: torch.full((b,), v) for k, v in values.items()}}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_crop_of_the_whole_patch_is_near_identity(dtype):
    torch.manual_seed(0)
    x = randn(*SHAPE, dtype=dtype)
    out = RandomResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0))(x)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_crop_of_the_left_half_stretches_it_over_the_patch():
    """On a ramp along time, bilinear resampling is exact: out[j] = source coordinate of column j."""
    m, t = 4, 10
    x = torch.arange(t, dtype=torch.float64).expand(2, 1, m, t).clone()
    params = crop_params(2, scale=0.5, width=0.5, centre_time=0.25)
    out = RandomResizedCrop().apply(x, params)
    centres = (2 * torch.arange(t, dtype=torch.float64) + 1) / t - 1  # output pixel centres in [-1, 1]
    source = ((0.5 * centres - 0.5 + 1) * t - 1) / 2  # left half: [-1, 0] in normalised coordinates
    expected = source.clamp(0, t - 1).expand(2, 1, m, t)  # border padding clamps the half-bin rim
    torch.testing.assert_close(out, expected)
    assert out[..., -1].max() < t / 2  # nothing from the right half


def test_crop_box_follows_the_drawn_centre():
    """A one-band box at the top of a ramp along frequency only sees the top band's area."""
    m, t = 8, 5
    x = torch.arange(m, dtype=torch.float64).view(1, 1, m, 1).expand(2, 1, m, t).clone()
    top = RandomResizedCrop().apply(x, crop_params(2, height=1 / m, centre_freq=1 - 0.5 / m))
    bottom = RandomResizedCrop().apply(x, crop_params(2, height=1 / m, centre_freq=0.5 / m))
    assert top.min() >= m - 1.5 and top.max() == m - 1  # the top band's area spans [m - 1.5, m - 0.5]
    assert bottom.min() == 0 and bottom.max() <= 0.5


def test_shift_moves_a_known_pixel_and_fills_with_the_sample_minimum():
    x = torch.zeros(2, 1, 6, 8)
    x[:, 0, 2, 3] = 5.0
    x[:, 0, 5, 7] = -4.0  # the minimum; shifted out of the patch in sample 0
    params = {"applied": torch.tensor([True, True]), "dt": torch.tensor([2, -3]), "df": torch.tensor([1, -2])}
    out = RandomShift().apply(x, params)
    assert out[0, 0, 3, 5] == 5.0 and out[1, 0, 0, 0] == 5.0  # (2 + df, 3 + dt)
    assert torch.equal(out[0, 0, :1], torch.full((1, 8), -4.0))  # vacated bands
    assert torch.equal(out[0, 0, :, :2], torch.full((6, 2), -4.0))  # vacated frames
    assert torch.equal(out[0, 0, 1:, 2:], x[0, 0, :-1, :-2])  # the rest moved, not wrapped
    assert torch.equal(out[1, 0, :-2, :-3], x[1, 0, 2:, 3:])
    assert (out[1, 0, -2:] == -4.0).all() and (out[1, 0, :, -3:] == -4.0).all()


def test_shift_beyond_the_patch_leaves_only_the_minimum():
    x = randn(1, 1, 4, 5)
    params = {"applied": torch.tensor([True]), "dt": torch.tensor([9]), "df": torch.tensor([0])}
    assert torch.equal(RandomShift().apply(x, params), torch.full_like(x, x.min().item()))


def test_compression_matches_the_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 1, 4, 5)) * 3 - 1
    factor = np.array([0.5, 0.75, 1.0])
    expected = np.empty_like(x)
    for i in range(3):
        expected[i] = x[i].mean() + factor[i] * (x[i] - x[i].mean())
    params = {"applied": torch.ones(3, dtype=torch.bool), "factor": torch.tensor(factor)}
    out = Compression().apply(torch.tensor(x), params)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.mean((1, 2, 3)), torch.tensor(x).mean((1, 2, 3)))  # level kept
    assert (out.std((1, 2, 3)) <= torch.tensor(x).std((1, 2, 3)) + 1e-12).all()  # contrast shrinks


def test_spec_augment_fills_exactly_the_masked_bins_with_the_sample_mean():
    x = randn(2, 1, 10, 12, dtype=torch.float64) + torch.tensor([0.0, 5.0]).view(2, 1, 1, 1)
    params = {
        "applied": torch.tensor([True, True]),
        "freq_start": torch.tensor([[2, 3], [0, 9]]),
        "freq_width": torch.tensor([[3, 1], [0, 1]]),
        "time_start": torch.tensor([[7], [11]]),
        "time_width": torch.tensor([[2], [0]]),
    }
    out = SpecAugment(time_masks=1).apply(x, params)
    expected_mask = torch.zeros(2, 1, 10, 12, dtype=torch.bool)
    expected_mask[0, :, 2:5] = True
    expected_mask[0, :, :, 7:9] = True
    expected_mask[1, :, 9:10] = True
    means = x.mean((1, 2, 3))
    for i in range(2):
        assert torch.equal(out[i][~expected_mask[i]], x[i][~expected_mask[i]])
        assert torch.allclose(out[i][expected_mask[i]], means[i].expand(int(expected_mask[i].sum())))


def test_noise_adds_std_times_the_drawn_normal():
    x = randn(3, 1, 4, 5)
    noise = randn(3, 1, 4, 5, seed=1)
    applied = torch.tensor([True, True, False])
    params = {"applied": applied, "std": torch.tensor([0.0, 0.5, 0.5]), "noise": noise}
    out = GaussianNoise().apply(x, params)
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])
    torch.testing.assert_close(out[1], x[1] + 0.5 * noise[1])


def test_noise_std_is_per_sample_and_within_max_std():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 96, 101)
    stds = GaussianNoise(max_std=0.01)(x).flatten(1).std(1)
    assert stds.max() <= 0.0105 and stds.std() > 0.001


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_blur_keeps_a_constant_patch_constant(dtype):
    x = torch.full((3, 1, 7, 9), -3.5, dtype=dtype)
    torch.testing.assert_close(GaussianBlur(kernel_size=7, sigma=(0.5, 3.0))(x), x)


def test_blur_with_a_tiny_sigma_is_near_identity():
    x = randn(*SHAPE)
    torch.testing.assert_close(GaussianBlur(sigma=(1e-3, 1e-2))(x), x, atol=1e-6, rtol=0)


def test_blur_of_an_impulse_is_the_outer_product_of_the_normalised_gaussian_taps():
    sigma = [0.7, 1.5]
    x = torch.zeros(2, 1, 9, 11, dtype=torch.float64)
    x[:, 0, 4, 5] = 1.0
    params = {"applied": torch.tensor([True, True]), "sigma": torch.tensor(sigma, dtype=torch.float64)}
    out = GaussianBlur(kernel_size=5).apply(x, params)
    for i, s in enumerate(sigma):
        taps = np.exp(-(np.arange(-2, 3) ** 2) / (2 * s**2))
        taps /= taps.sum()
        expected = np.zeros((9, 11))
        expected[2:7, 3:8] = np.outer(taps, taps)
        np.testing.assert_allclose(out[i, 0].numpy(), expected, atol=1e-12)
    assert math.isclose(out[0].sum().item(), 1.0)


def test_blur_replicates_the_edges_instead_of_darkening_them():
    x = torch.zeros(1, 1, 6, 6)
    x[..., :3] = 1.0  # left half bright: the left edge must stay 1 with replicate padding
    out = GaussianBlur().apply(x, {"applied": torch.tensor([True]), "sigma": torch.tensor([2.0])})
    torch.testing.assert_close(out[..., 0], torch.ones(1, 1, 6))
    assert (out[..., 0] > out[..., 2]).all()
