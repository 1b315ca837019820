"""Datasets that cut patches out of the feature cache (docs/method.md §2), a whole batch at a time.

A DataLoader hands each dataset the indices of one batch (``__getitems__``): the random draws for
the batch (clip rows, start frames, background clips) are made with array operations, then every
patch of the batch is read from the memmap with one gather and converted once. No Python loop runs
over clips or patches, so loading stays far ahead of a training step. Use :func:`as_batch` as the
DataLoader's ``collate_fn``: the dataset already returns the batch.

Randomness comes from a numpy generator created lazily in each worker from the DataLoader's
per-worker seed (new every epoch) and the process rank, so workers and DDP ranks never draw the same
patches.
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


def window_starts(n_frames: int, length: int, hop: int) -> list[int]:
    """Starts of sliding windows that cover the whole clip; the last one ends at the clip's end."""
    if n_frames <= length:
        return [0]
    starts = list(range(0, n_frames - length + 1, hop))
    if starts[-1] != n_frames - length:
        starts.append(n_frames - length)
    return starts


def random_starts(lengths: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A uniform start frame per clip for patches of ``length`` frames (0 for clips no longer than it)."""
    return rng.integers(0, np.maximum(np.asarray(lengths) - length, 0) + 1)


def window_counts(lengths: np.ndarray, length: int, hop: int) -> np.ndarray:
    """How many windows :func:`window_starts` gives each clip."""
    return -(-np.maximum(np.asarray(lengths) - length, 0) // hop) + 1


def nth_window_starts(lengths: np.ndarray, nth: np.ndarray, length: int, hop: int) -> np.ndarray:
    """The start of window ``nth`` of each clip, as :func:`window_starts` lists them."""
    return np.minimum(np.asarray(nth) * hop, np.maximum(np.asarray(lengths) - length, 0))


def other_positions(positions: np.ndarray, n: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """``[len(positions), draws]`` uniform positions in ``range(n)``, each different from its row's."""
    others = rng.integers(0, n - 1, size=(len(positions), draws))
    return others + (others >= np.asarray(positions)[:, None])


def frame_index(offsets: np.ndarray, lengths: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """``[N, length]`` memmap rows of N patches. A clip shorter than a patch wraps around to its
    first frame (the tiling of :func:`tile_to`); longer clips never reach their end from a valid
    start, so the modulo leaves them alone."""
    steps = np.arange(length)
    return offsets[:, None] + (starts[:, None] + steps) % lengths[:, None]


def as_batch(batch):
    """``collate_fn`` for these datasets: what ``__getitems__`` returns is already the batch."""
    return batch


class _CacheDataset(Dataset):
    """Batched patch reading and per-worker random state."""

    def __init__(self, cache: FeatureCache, rows: Sequence[int], patch_frames: int, rank: int = 0) -> None:
        self.cache = cache
        self.rows = np.asarray(rows, dtype=np.int64)
        self.patch_frames = patch_frames
        self.rank = rank
        self._rng: np.random.Generator | None = None
        self._rng_owner: object = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        """One item: the batch of one index, without its batch dimension."""
        batch = self.__getitems__([index])
        if isinstance(batch, dict):
            return {k: v[0] for k, v in batch.items()}
        return tuple(v[0] for v in batch)

    def __getitems__(self, indices: Sequence[int]):
        raise NotImplementedError

    @property
    def rng(self) -> np.random.Generator:
        info = get_worker_info()
        owner = (info.id, info.seed) if info is not None else None
        if self._rng is None or owner != self._rng_owner:
            seed = info.seed if info is not None else torch.initial_seed()
            self._rng = np.random.default_rng([seed, self.rank])
            self._rng_owner = owner
        return self._rng

    def lengths(self, positions: np.ndarray) -> np.ndarray:
        """Frames of the clips at dataset ``positions``."""
        return self.cache.lengths[self.rows[positions]]

    def gather(self, positions: np.ndarray, starts: np.ndarray) -> torch.Tensor:
        """Patches ``[N, 1, n_mels, patch_frames]`` (float32) of the clips at dataset ``positions``,
        starting at ``starts``: one gather from the memmap and one conversion for all of them."""
        rows = self.rows[np.asarray(positions, dtype=np.int64)]
        index = frame_index(
            self.cache.offsets[rows], self.cache.lengths[rows], np.asarray(starts), self.patch_frames
        )
        frames = torch.from_numpy(np.asarray(self.cache.data[index]))  # [N, frames, n_mels] float16
        return frames.transpose(1, 2).unsqueeze(1).to(torch.float32, memory_format=torch.contiguous_format)


class TwoViewDataset(_CacheDataset):
    """Per clip: two patches at independent random offsets, each with a background patch taken
    from a different, randomly chosen clip (the two backgrounds are drawn independently).

    A batch is a dict: ``views`` and ``backgrounds`` ``[n, 2, 1, n_mels, patch_frames]``, ``index``
    ``[n]`` (dataset positions) and, with ``targets``, ``target`` ``[n]``.

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

    def draw(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The batch's random choices: ``(sources, starts)``, each ``[2, n, 2]`` (views then
        backgrounds, clip by clip, two each): dataset positions and start frames of every patch."""
        positions = np.asarray(positions, dtype=np.int64)
        views = np.repeat(positions[:, None], 2, axis=1)
        backgrounds = other_positions(positions, len(self.rows), 2, self.rng)
        sources = np.stack([views, backgrounds])
        return sources, random_starts(self.lengths(sources), self.patch_frames, self.rng)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        positions = np.asarray(indices, dtype=np.int64)
        sources, starts = self.draw(positions)
        patches = self.gather(sources.ravel(), starts.ravel())
        patches = patches.view(2, len(positions), 2, *patches.shape[1:])
        batch = {"views": patches[0], "backgrounds": patches[1], "index": torch.from_numpy(positions)}
        if self.targets is not None:
            batch["target"] = self.targets[positions]
        return batch


class LabeledPatchDataset(_CacheDataset):
    """Training set for downstream tasks: one random patch per clip and its target.

    A batch is a dict: ``patch`` ``[n, 1, n_mels, patch_frames]``, ``target`` (class indices, or
    multi-hot ``float`` rows when ``targets`` is 2-D), and each patch's ``row`` in the cache and
    ``start`` frame, which identify it (a frozen encoder's embedding of it can be computed once and
    looked up afterwards).

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

    def training_starts(self, positions: np.ndarray) -> np.ndarray:
        lengths = self.lengths(positions)
        if self.hop_frames is None:
            return random_starts(lengths, self.patch_frames, self.rng)
        nth = self.rng.integers(0, window_counts(lengths, self.patch_frames, self.hop_frames))
        return nth_window_starts(lengths, nth, self.patch_frames, self.hop_frames)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        positions = np.asarray(indices, dtype=np.int64)
        starts = self.training_starts(positions)
        return {
            "patch": self.gather(positions, starts),
            "target": self.targets[positions],
            "row": torch.from_numpy(self.rows[positions]),
            "start": torch.from_numpy(starts),
        }


class CentrePatchDataset(LabeledPatchDataset):
    """The patch in the middle of each clip and its class: a fixed set, e.g. for the kNN monitor.
    A batch is the tuple ``(patches, targets)``."""

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        positions = np.asarray(indices, dtype=np.int64)
        starts = np.maximum(self.lengths(positions) - self.patch_frames, 0) // 2
        return self.gather(positions, starts), self.targets[positions]


class ClipWindowsDataset(LabeledPatchDataset):
    """Evaluation set: every sliding-window patch of a clip, so a clip is scored as a whole.

    A batch is a dict: ``patches`` ``[windows, 1, n_mels, patch_frames]`` (the windows of all its
    clips, clip by clip), ``clip`` (which clip of the batch each window belongs to) and ``target``
    per clip. With ``ids`` (one per clip, e.g. its position in the data module's clip list) it also
    says where each window comes from, for embedding export: ``index`` (the id) and ``length`` (clip
    frames) per clip, ``start`` per window.
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

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        positions = np.asarray(indices, dtype=np.int64)
        lengths = self.lengths(positions)
        counts = window_counts(lengths, self.patch_frames, self.hop_frames)
        clip = np.repeat(np.arange(len(positions)), counts)
        nth = np.arange(len(clip)) - np.repeat(np.cumsum(counts) - counts, counts)
        starts = nth_window_starts(lengths[clip], nth, self.patch_frames, self.hop_frames)
        batch = {
            "patches": self.gather(positions[clip], starts),
            "clip": torch.from_numpy(clip),
            "target": self.targets[positions],
        }
        if self.ids is not None:
            batch["index"] = torch.from_numpy(self.ids[positions])
            batch["length"] = torch.from_numpy(lengths)
            batch["start"] = torch.from_numpy(starts)
        return batch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """One clip's windows as a batch of one clip."""
        return self.__getitems__([index])


def as_targets(targets: Sequence[int] | Sequence[Sequence[float]] | np.ndarray) -> torch.Tensor:
    """Class indices as ``long`` ``[N]``, or multi-hot rows ``[N, C]`` as ``float`` (for BCE)."""
    t = torch.as_tensor(np.asarray(targets))
    return t.float() if t.ndim == 2 else t.long()
