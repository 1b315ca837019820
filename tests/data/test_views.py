import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import ser_ssl.data.views as views_mod
from ser_ssl.data.feature_cache import FEATURES_FILE
from ser_ssl.data.views import (
    CentrePatchDataset,
    ClipWindowsDataset,
    LabeledPatchDataset,
    PatchSource,
    TwoViewDataset,
    as_batch,
    frames_to_patches,
    other_positions,
    random_starts,
    two_other_positions,
)
from ser_ssl.errors import DataError
from ser_ssl.inference import nth_window_starts, window_counts, window_starts
from tests.conftest import make_cache, tile_to

LENGTHS = [60, 80, 5, 90, 20, 1, 33]


def clip_and_frame(patch: torch.Tensor) -> tuple[set[int], np.ndarray]:
    """Decode a patch of the hand-made cache: the clip ids it comes from and its frame indices."""
    values = patch[0, 0].numpy().astype(int)
    return set((values // 100).tolist()), values % 100


@pytest.fixture
def noisy_cache(tmp_path):
    """A cache of random values (every frame and band different) with clips shorter and longer than
    a 20-frame patch."""
    cache = make_cache(tmp_path, LENGTHS)
    values = np.random.default_rng(0).standard_normal((sum(LENGTHS), cache.n_mels)).astype(np.float16)
    values.tofile(cache.directory / FEATURES_FILE)
    return cache


def reference_patch(cache, row: int, start: int, length: int) -> torch.Tensor:
    """The plain per-clip reading the batched gather must equal: slice, or tile a short clip."""
    frames = np.asarray(cache.frames(row), dtype=np.float32)
    frames = frames[start : start + length] if len(frames) >= length else tile_to(frames, length)
    return torch.from_numpy(np.ascontiguousarray(frames.T))[None]


def test_tile_and_window_helpers():
    frames = np.arange(3)[:, None]
    assert tile_to(frames, 7)[:, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert tile_to(frames, 2) is frames
    assert window_starts(10, 4, 4) == [0, 4, 6]
    assert window_starts(8, 4, 4) == [0, 4]
    assert window_starts(3, 4, 4) == [0]


def test_vectorised_windows_are_the_listed_windows():
    for length in range(1, 60):
        for patch, hop in [(4, 4), (10, 3), (20, 50), (7, 1)]:
            listed = window_starts(length, patch, hop)
            count = int(window_counts(np.array([length]), patch, hop)[0])
            assert count == len(listed)
            nth = np.arange(count)
            assert nth_window_starts(np.full(count, length), nth, patch, hop).tolist() == listed


def test_starts_are_uniform_over_the_valid_range():
    rng = np.random.default_rng(0)
    starts = random_starts(np.full(70_000, 10), 4, rng)
    counts = np.bincount(starts, minlength=8)
    assert counts[7] == 0 and (starts >= 0).all()  # 0..6 only
    expected = len(starts) / 7
    chi2 = ((counts[:7] - expected) ** 2 / expected).sum()
    assert chi2 < 22.5  # 6 degrees of freedom: p = 0.001
    assert (random_starts(np.array([3, 4, 1]), 4, rng) == 0).all()  # no longer than a patch


def test_backgrounds_are_never_the_clip_itself_and_cover_all_others():
    rng = np.random.default_rng(0)
    positions = np.repeat(np.arange(5), 2000)
    others = other_positions(positions, 5, 2, rng)
    assert (others != positions[:, None]).all() and ((others >= 0) & (others < 5)).all()
    for p in range(5):
        assert set(others[positions == p].ravel().tolist()) == set(range(5)) - {p}


def test_distinct_backgrounds_are_two_other_clips_each_pair_equally_likely():
    rng = np.random.default_rng(0)
    positions = np.repeat(np.arange(4), 6000)
    pairs = two_other_positions(positions, 4, rng)
    assert (pairs != positions[:, None]).all() and (pairs[:, 0] != pairs[:, 1]).all()
    for p in range(4):
        drawn = [tuple(x) for x in pairs[positions == p].tolist()]
        others = set(range(4)) - {p}
        expected = {(a, b) for a in others for b in others if a != b}  # 6 ordered pairs
        assert set(drawn) == expected
        counts = np.array([drawn.count(pair) for pair in sorted(expected)])
        assert ((counts - 1000) ** 2 / 1000).sum() < 20.5  # 5 degrees of freedom: p = 0.001


def test_two_view_batches_with_distinct_backgrounds(tmp_path):
    cache = make_cache(tmp_path, [60, 80, 5, 90])
    ds = TwoViewDataset(cache, [0, 1, 2, 3], patch_frames=20, distinct_backgrounds=True)
    batch = ds.__getitems__([0, 1, 2, 3] * 20)
    for i, backgrounds in zip(batch["index"].tolist(), batch["backgrounds"], strict=True):
        (first,), (second,) = (clip_and_frame(bg)[0] for bg in backgrounds)
        assert i not in (first, second) and first != second
    with pytest.raises(DataError, match="at least 3 clips"):
        TwoViewDataset(make_cache(tmp_path / "two", [60, 80]), [0, 1], 20, distinct_backgrounds=True)


def test_one_gather_equals_the_plain_per_clip_reading(noisy_cache):
    rng = np.random.default_rng(1)
    positions = rng.integers(0, len(LENGTHS), 200)
    starts = random_starts(noisy_cache.lengths[positions], 20, rng)
    got = PatchSource.of_cache(noisy_cache).gather(torch.from_numpy(positions), torch.from_numpy(starts), 20)
    assert got.shape == (200, 1, 8, 20) and got.dtype == torch.float32 and got.is_contiguous()
    expected = torch.stack(
        [reference_patch(noisy_cache, p, s, 20) for p, s in zip(positions, starts, strict=True)]
    )
    assert torch.equal(got, expected)


def test_uploaded_rows_give_the_patches_of_the_memmap(noisy_cache, monkeypatch):
    monkeypatch.setattr(views_mod, "UPLOAD_BLOCK_BYTES", 300)  # several blocks for a few clips
    rows = np.array([6, 0, 3, 4, 1])
    uploaded = PatchSource.upload(noisy_cache, rows, "cpu")
    assert len(uploaded.features) == noisy_cache.lengths[rows].sum()
    rng = np.random.default_rng(2)
    draw = torch.from_numpy(rng.choice(rows, 100))
    starts = torch.from_numpy(random_starts(noisy_cache.lengths[draw.numpy()], 20, rng))
    expected = PatchSource.of_cache(noisy_cache).gather(draw, starts, 20)
    assert torch.equal(uploaded.gather(draw, starts, 20), expected)


def test_two_view_batch_equals_the_reference_sampler_given_the_same_draws(noisy_cache):
    ds = TwoViewDataset(noisy_cache, range(len(LENGTHS)), patch_frames=20, targets=range(len(LENGTHS)))
    positions = np.array([3, 0, 5, 2, 2, 6])
    state = ds.rng.bit_generator.state
    draws = ds.draw(positions)["draws"]
    sources, starts = draws["rows"].numpy(), draws["starts"].numpy()  # rows == positions here
    ds.rng.bit_generator.state = state
    batch = ds.__getitems__(positions.tolist())
    assert "draws" not in batch
    assert batch["views"].shape == batch["backgrounds"].shape == (6, 2, 1, 8, 20)
    assert batch["index"].tolist() == batch["target"].tolist() == positions.tolist()
    assert (sources[0] == positions[:, None]).all() and (sources[1] != positions[:, None]).all()
    for kind, name in enumerate(["views", "backgrounds"]):
        for i in range(len(positions)):
            for v in range(2):
                expected = reference_patch(noisy_cache, sources[kind, i, v], starts[kind, i, v], 20)
                assert torch.equal(batch[name][i, v], expected)
    single = ds[4]
    assert single["views"].shape == (2, 1, 8, 20) and single["index"].item() == 4


def test_two_views_come_from_the_clip_and_backgrounds_from_other_clips(tmp_path):
    cache = make_cache(tmp_path, [60, 80, 5, 90])
    ds = TwoViewDataset(cache, [0, 1, 2, 3], patch_frames=20)
    batch = ds.__getitems__([0, 1, 2, 3] * 20)
    offsets_differ = 0
    for i, views, backgrounds in zip(
        batch["index"].tolist(), batch["views"], batch["backgrounds"], strict=True
    ):
        for view in views:
            clips, frames = clip_and_frame(view)
            assert clips == {i}
            if i != 2:  # contiguous frames
                assert (np.diff(frames) == 1).all()
        for bg in backgrounds:
            assert i not in clip_and_frame(bg)[0]
        offsets_differ += int(views[0, 0, 0, 0] != views[1, 0, 0, 0])
    assert offsets_differ > 40  # independent offsets, not one shared crop
    assert clip_and_frame(ds[2]["views"][0])[1].tolist() == [0, 1, 2, 3, 4] * 4  # tiled


def test_random_streams_differ_per_rank_and_per_epoch_and_seeds_reproduce(tmp_path):
    cache = make_cache(tmp_path, [90] * 4)

    def epoch(ds, workers, seed=1):
        torch.manual_seed(seed)
        loader = DataLoader(ds, batch_size=4, num_workers=workers, collate_fn=as_batch)
        return [b["views"][:, :, 0, 0, 0] for b in loader]

    ds0 = TwoViewDataset(cache, range(4), 10, rank=0)
    ds1 = TwoViewDataset(cache, range(4), 10, rank=1)
    assert not torch.equal(epoch(ds0, 2)[0], epoch(ds1, 2)[0])
    assert torch.equal(epoch(ds0, 2)[0], epoch(TwoViewDataset(cache, range(4), 10, rank=0), 2)[0])
    assert not torch.equal(epoch(ds0, 2)[0], epoch(ds0, 2, seed=2)[0])
    loader = DataLoader(ds0, batch_size=4, num_workers=2, collate_fn=as_batch)
    first, second = (next(iter(loader))["views"] for _ in range(2))  # two epochs
    assert not torch.equal(first, second)


def test_labelled_patches_start_on_the_window_grid(noisy_cache):
    rows = list(range(len(LENGTHS)))
    ds = LabeledPatchDataset(noisy_cache, rows, rows, patch_frames=20, hop_frames=7)
    batch = ds.__getitems__(rows * 300)
    assert batch["patch"].shape == (len(rows) * 300, 1, 8, 20)
    for row, start, patch in zip(batch["row"].tolist(), batch["start"].tolist(), batch["patch"], strict=True):
        assert start in window_starts(LENGTHS[row], 20, 7)
        assert torch.equal(patch, reference_patch(noisy_cache, row, start, 20))
    seen = {(r, s) for r, s in zip(batch["row"].tolist(), batch["start"].tolist(), strict=True)}
    assert len(seen) == sum(len(window_starts(n, 20, 7)) for n in LENGTHS)  # every window drawn


def test_centre_patches(noisy_cache):
    ds = CentrePatchDataset(noisy_cache, [0, 2], [1, 0], patch_frames=20)
    batch = next(iter(DataLoader(ds, batch_size=2, collate_fn=as_batch)))
    patches, targets = batch["patch"], batch["target"]
    assert targets.tolist() == [1, 0]
    assert torch.equal(patches[0], reference_patch(noisy_cache, 0, 20, 20))  # (60 - 20) // 2
    assert torch.equal(patches[1], reference_patch(noisy_cache, 2, 0, 20))


def test_clip_windows_cover_each_clip_and_keep_clip_ids(noisy_cache):
    ds = ClipWindowsDataset(
        noisy_cache, [0, 5, 4, 3], targets=[2, 0, 1, 1], patch_frames=20, ids=[7, 8, 9, 10]
    )
    batch = ds.__getitems__([0, 1, 2])
    starts = [window_starts(n, 20, 20) for n in (60, 1, 20)]
    assert batch["patches"].shape == (5, 1, 8, 20)
    assert batch["clip"].tolist() == [0, 0, 0, 1, 2]
    assert batch["target"].tolist() == [2, 0, 1]
    assert batch["index"].tolist() == [7, 8, 9] and batch["length"].tolist() == [60, 1, 20]
    assert batch["start"].tolist() == [s for clip in starts for s in clip] == [0, 20, 40, 0, 0]
    expected = [
        reference_patch(noisy_cache, row, s, 20)
        for row, ss in zip([0, 5, 4], starts, strict=True)
        for s in ss
    ]
    assert torch.equal(batch["patches"], torch.stack(expected))
    assert ds[3]["patches"].shape == (5, 1, 8, 20)  # 90 frames: 0, 20, 40, 60, 70


def test_frames_to_patches_transposes_each_patch_and_converts_it_to_float32():
    frames = torch.arange(2 * 3 * 5 * 4, dtype=torch.float16).view(2, 3, 5, 4)  # 5 frames of 4 mels
    patches = frames_to_patches(frames)
    assert patches.shape == (2, 3, 1, 4, 5) and patches.dtype == torch.float32 and patches.is_contiguous()
    assert patches[1, 2, 0, 3, 0] == frames[1, 2, 0, 3] and patches[0, 1, 0, 0, 4] == frames[0, 1, 4, 0]
