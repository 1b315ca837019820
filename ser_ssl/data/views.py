"""Datasets that cut patches out of the feature cache (METHOD §2).

Workers only slice the memmap. Randomness comes from a numpy generator created lazily in each
worker from the DataLoader's per-worker seed (new every epoch) and the process rank, so workers and
DDP ranks never draw the same patches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from ser_ssl.data.cache import FeatureCache
from ser_ssl.errors import DataError


def tile_to(frames: np.ndarray, length: int) -> np.ndarray:
    """Repeat a clip's ``[T, M]`` frames along time until it holds at least ``length`` frames."""
    if len(frames) >= length:
        return frames
    return np.tile(frames, (-(-length // len(frames)), 1))[:length]


def random_start(n_frames: int, length: int, rng: np.random.Generator) -> int:
    """A uniform start frame for a patch of ``length`` frames (0 for clips no longer than it)."""
    return int(rng.integers(0, n_frames - length + 1)) if n_frames > length else 0


def window_starts(n_frames: int, length: int, hop: int) -> list[int]:
    """Starts of sliding windows that cover the whole clip; the last one ends at the clip's end."""
    if n_frames <= length:
        return [0]
    starts = list(range(0, n_frames - length + 1, hop))
    if starts[-1] != n_frames - length:
        starts.append(n_frames - length)
    return starts


def as_targets(targets: Sequence[int] | Sequence[Sequence[float]] | np.ndarray) -> torch.Tensor:
    """Class indices as ``long`` ``[N]``, or multi-hot rows ``[N, C]`` as ``float`` (for BCE)."""
    t = torch.as_tensor(np.asarray(targets))
    return t.float() if t.ndim == 2 else t.long()


class _CacheDataset(Dataset):
    """Shared patch reading and per-worker random state."""

    def __init__(self, cache: FeatureCache, rows: Sequence[int], patch_frames: int, rank: int = 0) -> None:
        self.cache = cache
        self.rows = np.asarray(rows, dtype=np.int64)
        self.patch_frames = patch_frames
        self.rank = rank
        self._rng: np.random.Generator | None = None
        self._rng_owner: object = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def rng(self) -> np.random.Generator:
        info = get_worker_info()
        owner = (info.id, info.seed) if info is not None else None
        if self._rng is None or owner != self._rng_owner:
            seed = info.seed if info is not None else torch.initial_seed()
            self._rng = np.random.default_rng([seed, self.rank])
            self._rng_owner = owner
        return self._rng

    def patch(self, index: int, start: int) -> torch.Tensor:
        """Patch ``[1, n_mels, patch_frames]`` (float32) of the clip at dataset position ``index``."""
        row = int(self.rows[index])
        length = int(self.cache.lengths[row])
        if length >= self.patch_frames:
            frames = self.cache.frames(row, start, start + self.patch_frames)
        else:
            frames = tile_to(np.asarray(self.cache.frames(row)), self.patch_frames)
        return torch.from_numpy(np.ascontiguousarray(frames.T, dtype=np.float32)).unsqueeze(0)

    def random_patch(self, index: int) -> torch.Tensor:
        length = int(self.cache.lengths[self.rows[index]])
        return self.patch(index, random_start(length, self.patch_frames, self.rng))


class TwoViewDataset(_CacheDataset):
    """Per clip: two patches at independent random offsets, each with a background patch taken
    from a different, randomly chosen clip (the two backgrounds are drawn independently).

    Args:
        targets: optional class index per clip (-1: none), passed on as ``target`` for the online
            linear probe (``SimCLR(online_probe=True)``); the views never depend on it.
    """

    def __init__(
        self,
        cache: FeatureCache,
        rows: Sequence[int],
        patch_frames: int,
        rank: int = 0,
        targets: Sequence[int] | None = None,
    ) -> None:
        super().__init__(cache, rows, patch_frames, rank)
        if len(self.rows) < 2:
            raise DataError("two-view pretraining needs at least 2 clips (backgrounds come from other clips)")
        self.targets = None if targets is None else torch.as_tensor(targets, dtype=torch.long)
        if self.targets is not None and len(self.targets) != len(self.rows):
            raise ValueError(f"{len(self.targets)} targets for {len(self.rows)} clips")

    def _other(self, index: int) -> int:
        j = int(self.rng.integers(0, len(self.rows) - 1))
        return j + (j >= index)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        views = torch.stack([self.random_patch(index) for _ in range(2)])
        backgrounds = torch.stack([self.random_patch(self._other(index)) for _ in range(2)])
        item = {"views": views, "backgrounds": backgrounds, "index": torch.tensor(index)}
        if self.targets is not None:
            item["target"] = self.targets[index]
        return item


class LabeledPatchDataset(_CacheDataset):
    """Training set for downstream tasks: one random patch per clip and its target.

    Items are dicts: ``patch`` ``[1, n_mels, patch_frames]``, ``target`` (a class index, or a multi-hot
    ``float`` vector when ``targets`` is 2-D), and the patch's ``row``
    in the cache and ``start`` frame, which identify it (a frozen encoder's embedding of it can be
    computed once and looked up afterwards).

    Args:
        hop_frames: ``None`` draws the start uniformly from every frame; an int draws one of the
            sliding windows with that hop (:func:`window_starts`), a finite set of patches per clip.
    """

    def __init__(
        self,
        cache: FeatureCache,
        rows: Sequence[int],
        targets: Sequence[int] | np.ndarray,
        patch_frames: int,
        rank: int = 0,
        hop_frames: int | None = None,
    ) -> None:
        super().__init__(cache, rows, patch_frames, rank)
        self.targets = as_targets(targets)
        self.hop_frames = hop_frames

    def training_start(self, index: int) -> int:
        length = int(self.cache.lengths[self.rows[index]])
        if self.hop_frames is None:
            return random_start(length, self.patch_frames, self.rng)
        starts = window_starts(length, self.patch_frames, self.hop_frames)
        return starts[int(self.rng.integers(0, len(starts)))]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        start = self.training_start(index)
        return {
            "patch": self.patch(index, start),
            "target": self.targets[index],
            "row": torch.tensor(int(self.rows[index])),
            "start": torch.tensor(start),
        }


class CentrePatchDataset(LabeledPatchDataset):
    """The patch in the middle of each clip and its class: a fixed set, e.g. for the kNN monitor."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        length = int(self.cache.lengths[self.rows[index]])
        return self.patch(index, max(length - self.patch_frames, 0) // 2), self.targets[index]


class ClipWindowsDataset(LabeledPatchDataset):
    """Evaluation set: every sliding-window patch of a clip, so a clip is scored as a whole.

    With ``ids`` (one per clip, e.g. its position in the data module's clip list) each item also
    carries where it comes from, for embedding export: ``(windows, target, {"index": id,
    "length": clip frames, "start": window start frames})``.
    """

    def __init__(
        self,
        cache: FeatureCache,
        rows: Sequence[int],
        targets: Sequence[int] | np.ndarray,
        patch_frames: int,
        hop_frames: int | None = None,
        ids: Sequence[int] | None = None,
    ) -> None:
        super().__init__(cache, rows, targets, patch_frames)
        self.hop_frames = hop_frames or patch_frames
        self.ids = None if ids is None else np.asarray(ids, dtype=np.int64)

    def __getitem__(self, index: int) -> tuple:
        length = int(self.cache.lengths[self.rows[index]])
        starts = window_starts(length, self.patch_frames, self.hop_frames)
        windows = torch.stack([self.patch(index, s) for s in starts])
        if self.ids is None:
            return windows, self.targets[index]
        where = {"index": int(self.ids[index]), "length": length, "start": torch.tensor(starts)}
        return windows, self.targets[index], where


def collate_windows(items: list[tuple]) -> dict[str, torch.Tensor]:
    """Concatenate the windows of several clips; ``clip`` says which clip each window belongs to.

    Items with ``ids`` (see :class:`ClipWindowsDataset`) add ``index`` and ``length`` per clip and
    ``start`` per window.
    """
    windows = [item[0] for item in items]
    batch = {
        "patches": torch.cat(windows),
        "clip": torch.repeat_interleave(torch.arange(len(items)), torch.tensor([len(w) for w in windows])),
        "target": torch.stack([item[1] for item in items]),
    }
    if len(items[0]) > 2:
        batch["index"] = torch.tensor([item[2]["index"] for item in items])
        batch["length"] = torch.tensor([item[2]["length"] for item in items])
        batch["start"] = torch.cat([item[2]["start"] for item in items])
    return batch
