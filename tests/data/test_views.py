import numpy as np
import torch
from torch.utils.data import DataLoader

from ser_ssl.data.views import (
    ClipWindowsDataset,
    TwoViewDataset,
    collate_windows,
    random_start,
    tile_to,
    window_starts,
)
from tests.conftest import make_cache


def clip_and_frame(patch: torch.Tensor) -> tuple[set[int], np.ndarray]:
    """Decode a patch of the hand-made cache: the clip ids it comes from and its frame indices."""
    values = patch[0, 0].numpy().astype(int)
    return set((values // 100).tolist()), values % 100


def test_tile_and_window_helpers():
    frames = np.arange(3)[:, None]
    assert tile_to(frames, 7)[:, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert tile_to(frames, 2) is frames
    assert window_starts(10, 4, 4) == [0, 4, 6]
    assert window_starts(8, 4, 4) == [0, 4]
    assert window_starts(3, 4, 4) == [0]
    rng = np.random.default_rng(0)
    starts = {random_start(10, 4, rng) for _ in range(200)}
    assert starts == set(range(7))
    assert random_start(3, 4, rng) == 0


def test_two_views_come_from_the_clip_and_backgrounds_from_other_clips(tmp_path):
    cache = make_cache(tmp_path, [60, 80, 5, 90])
    ds = TwoViewDataset(cache, [0, 1, 2, 3], patch_frames=20)
    offsets_differ = 0
    for _ in range(20):
        for i in range(4):
            item = ds[i]
            assert item["views"].shape == item["backgrounds"].shape == (2, 1, 8, 20)
            for view in item["views"]:
                clips, frames = clip_and_frame(view)
                assert clips == {i}
                if i != 2:  # contiguous frames
                    assert (np.diff(frames) == 1).all()
            for bg in item["backgrounds"]:
                assert i not in clip_and_frame(bg)[0]
            offsets_differ += int(item["views"][0, 0, 0, 0] != item["views"][1, 0, 0, 0])
    assert offsets_differ > 40  # independent offsets, not one shared crop
    short = clip_and_frame(ds[2]["views"][0])[1]
    assert short.tolist() == [0, 1, 2, 3, 4] * 4  # tiled


def test_random_streams_differ_per_rank_and_per_epoch(tmp_path):
    cache = make_cache(tmp_path, [90] * 4)

    def epoch(ds, workers):
        torch.manual_seed(1)
        loader = DataLoader(ds, batch_size=4, num_workers=workers)
        return [b["views"][:, :, 0, 0, 0] for b in loader]

    ds0 = TwoViewDataset(cache, range(4), 10, rank=0)
    ds1 = TwoViewDataset(cache, range(4), 10, rank=1)
    assert not torch.equal(epoch(ds0, 2)[0], epoch(ds1, 2)[0])
    assert torch.equal(epoch(ds0, 2)[0], epoch(TwoViewDataset(cache, range(4), 10, rank=0), 2)[0])
    loader = DataLoader(ds0, batch_size=4, num_workers=2)
    first, second = (next(iter(loader))["views"] for _ in range(2))
    assert not torch.equal(first, second)


def test_clip_windows_cover_each_clip_and_collate_keeps_clip_ids(tmp_path):
    cache = make_cache(tmp_path, [50, 10, 20])
    ds = ClipWindowsDataset(cache, [0, 1, 2], targets=[2, 0, 1], patch_frames=20)
    windows, target = ds[0]
    assert windows.shape == (3, 1, 8, 20) and target.item() == 2
    assert [clip_and_frame(w)[1][0] for w in windows] == [0, 20, 30]
    batch = collate_windows([ds[i] for i in range(3)])
    assert batch["patches"].shape == (5, 1, 8, 20)
    assert batch["clip"].tolist() == [0, 0, 0, 1, 2]
    assert batch["target"].tolist() == [2, 0, 1]
