"""The whole-clip inference path (ser_ssl.inference): windows, tiling, clip means, the grid, eval mode."""

from fractions import Fraction

import torch
from torch import nn

from ser_ssl.inference import (
    TimestampGrid,
    clip_windows,
    embed_patches,
    eval_mode,
    join_windows,
    window_index,
    window_starts,
)


def test_windows_cover_the_clip_and_tile_a_short_one():
    mel = torch.arange(2 * 3 * 10, dtype=torch.float32).view(2, 3, 10)
    windows, starts = clip_windows(mel, 4)
    assert starts == [0, 4, 6] and windows.shape == (2, 3, 3, 4)
    assert torch.equal(windows[1, 2], mel[1, :, 6:10])
    short = torch.arange(3, dtype=torch.float32).view(1, 1, 3)
    tiled, starts = clip_windows(short, 7)
    assert starts == [0] and tiled[0, 0, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_window_index_tiles_each_clip_by_its_own_length():
    index = window_index(torch.tensor([0, 1]), 5, torch.tensor([2, 10]))
    assert index.tolist() == [[0, 1, 0, 1, 0], [1, 2, 3, 4, 5]]


def test_join_windows_puts_a_clip_back_together():
    mel = torch.randn(1, 4, 23)
    windows, starts = clip_windows(mel, 5, 5)
    assert torch.equal(join_windows(windows[0], starts, 23), mel[0])
    short = torch.randn(1, 4, 3)
    windows, starts = clip_windows(short, 5)
    assert torch.equal(join_windows(windows[0], starts, 3), short[0])


def test_grid_counts_frames_centred_before_the_end():
    grid = TimestampGrid(stride=16, hop=4, patch_frames=101)
    assert grid.lead == 4 and grid.first == 3.5 and grid.phases == 4 and grid.per_window == 6
    # centres 3.5, 7.5, 11.5: before 11.5 two, before 11.6 three
    assert grid.count(Fraction(23, 2)) == 2 and grid.count(Fraction(116, 10)) == 3 and grid.count(0) == 1
    assert grid.centres(3).tolist() == [3.5, 7.5, 11.5]
    assert TimestampGrid.finest(16, 101, 50.0, 1000 * 220 / 22050).hop == 4
    assert TimestampGrid.finest(16, 101, 1000.0, 1000 * 220 / 22050).hop == 16


def test_eval_mode_restores_each_submodules_own_mode():
    model = nn.Sequential(nn.BatchNorm1d(2), nn.BatchNorm1d(2))
    model.train()
    model[1].eval()
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert model.training and model[0].training and not model[1].training


def test_embed_patches_normalises_and_keeps_labels():
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))
    batches = [{"patch": torch.randn(4, 1, 2, 3), "target": torch.arange(4)} for _ in range(2)]
    h, y = embed_patches(encoder, batches, lambda x: x, "cpu")
    assert h.shape == (8, 3) and torch.allclose(h.norm(dim=1), torch.ones(8))
    assert y.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert window_starts(3, 4, 4) == [0]
