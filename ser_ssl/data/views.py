"""Datasets that cut patches out of the feature cache (docs/method.md §2), a whole batch at a time.

A DataLoader hands each dataset the indices of one batch (``__getitems__``): the random draws for
the batch (clip rows, start frames, background clips) are made with array operations, then every
patch of the batch is read with one gather and converted once, from the memmap or, when the
features live on the training device (:class:`PatchSource`), there. What a training loader
delivers is the dataset's ``deliver`` (:data:`Deliver`). No Python loop runs
over clips or patches, so loading stays far ahead of a training step. Use :func:`as_batch` as the
DataLoader's ``collate_fn``: the dataset already returns the batch.

Randomness comes from a numpy generator created lazily in each worker from the DataLoader's
per-worker seed (new every epoch) and the process rank, so workers and DDP ranks never draw the same
patches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from ser_ssl.data.feature_cache import FeatureCache
from ser_ssl.errors import DataError
from ser_ssl.inference import nth_window_starts, window_counts, window_index


def random_starts(lengths: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A uniform start frame per clip for patches of ``length`` frames (0 for clips no longer than it)."""
    return rng.integers(0, np.maximum(np.asarray(lengths) - length, 0) + 1)


def other_positions(positions: np.ndarray, n: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """``[len(positions), draws]`` uniform positions in ``range(n)``, each different from its row's."""
    others = rng.integers(0, n - 1, size=(len(positions), draws))
    return others + (others >= np.asarray(positions)[:, None])


def two_other_positions(positions: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``[len(positions), 2]`` positions in ``range(n)``, different from their row's and from each other:
    the first uniform among the others, the second uniform among the rest."""
    positions = np.asarray(positions)
    first = other_positions(positions, n, 1, rng)[:, 0]
    low, high = np.minimum(positions, first), np.maximum(positions, first)
    second = rng.integers(0, n - 2, size=len(positions))
    second = second + (second >= low)
    second = second + (second >= high)
    return np.stack([first, second], axis=1)


#: What a dataset's batches carry. ``"patches"``: float32 patches ``[..., 1, n_mels, frames]``, ready
#: for the model (a CPU's training). ``"frames"``: the gathered float16 frames ``[..., frames, n_mels]``,
#: half the bytes to move, which :func:`frames_to_patches` turns into patches on the training device
#: (a GPU's training from the memmap: the transposing conversion is most of a host gather's time).
#: ``"draws"``: only the random draws, the patches cut on the device from an uploaded
#: :class:`PatchSource` (``device_cache``).
Deliver = Literal["patches", "frames", "draws"]


def frames_to_patches(frames: torch.Tensor) -> torch.Tensor:
    """Gathered float16 frames ``[..., length, n_mels]`` as float32 patches ``[..., 1, n_mels, length]``."""
    return frames.transpose(-1, -2).unsqueeze(-3).to(torch.float32, memory_format=torch.contiguous_format)


def batch_of_patches(batch: dict) -> dict:
    """A delivered batch with its float16 fields, the gathered frames (the datasets' only float16
    tensors), as patches (:func:`frames_to_patches`); other fields unchanged."""
    half = {k for k, v in batch.items() if isinstance(v, torch.Tensor) and v.dtype == torch.float16}
    return {k: frames_to_patches(v) if k in half else v for k, v in batch.items()}


#: :meth:`PatchSource.upload` copies in blocks of about this size: few transfers, bounded host memory.
UPLOAD_BLOCK_BYTES = 2**28


class PatchSource:
    """The frames patches are cut from: one ``[frames, n_mels]`` float16 tensor and each cache row's
    offset and length in it, all on one device. :meth:`of_cache` wraps the memmap on the host (no
    copy); :meth:`upload` copies the frames of some rows to a device once, after which a batch needs
    only its rows and start frames there."""

    def __init__(self, features: torch.Tensor, offsets: torch.Tensor, lengths: torch.Tensor) -> None:
        self.features, self.offsets, self.lengths = features, offsets, lengths

    @classmethod
    def of_cache(cls, cache: FeatureCache) -> PatchSource:
        return cls(cache.tensor, torch.from_numpy(cache.offsets), torch.from_numpy(cache.lengths))

    @classmethod
    def upload(cls, cache: FeatureCache, rows: np.ndarray, device: torch.device | str) -> PatchSource:
        """The frames of cache ``rows`` only, packed on ``device``; rows not uploaded get offset -1."""
        rows = np.unique(rows)
        lengths = cache.lengths[rows]
        packed = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        offsets = np.full(len(cache), -1, dtype=np.int64)
        offsets[rows] = packed
        total = int(lengths.sum())
        features = torch.empty((total, cache.n_mels), dtype=torch.float16, device=device)
        blocks = max(1, total * cache.n_mels * 2 // UPLOAD_BLOCK_BYTES)
        for block, at in zip(np.array_split(rows, blocks), np.array_split(packed, blocks), strict=True):
            if len(block):
                frames = np.concatenate([cache.frames(row) for row in block.tolist()])
                features[at[0] : at[0] + len(frames)] = torch.from_numpy(frames).to(device)
        return cls(features, torch.from_numpy(offsets).to(device), torch.from_numpy(cache.lengths).to(device))

    @property
    def device(self) -> torch.device:
        return self.features.device

    def gather(
        self, rows: torch.Tensor, starts: torch.Tensor, length: int, convert: bool = True
    ) -> torch.Tensor:
        """Patches ``[N, 1, n_mels, length]`` (float32) of cache ``rows`` from frames ``starts``: one
        index computation (:func:`~ser_ssl.inference.window_index`: a clip shorter than a patch is
        tiled along time), one gather and one conversion. ``convert=False`` leaves the conversion out:
        the frames ``[N, length, n_mels]`` as stored (float16), for :func:`frames_to_patches`."""
        rows, starts = rows.to(self.device).reshape(-1), starts.to(self.device).reshape(-1)
        index = self.offsets[rows, None] + window_index(starts, length, self.lengths[rows])
        frames = self.features.index_select(0, index.reshape(-1)).view(len(rows), length, -1)
        return frames_to_patches(frames) if convert else frames


def as_batch(batch):
    """``collate_fn`` for these datasets: what ``__getitems__`` returns is already the batch."""
    return batch


class CacheDataset(Dataset):
    """Batched patch reading and per-worker random state.

    ``__getitems__`` draws a batch (:meth:`draw`: a dict whose ``draws`` holds the cache ``rows`` and
    ``starts`` of its patches) and, unless ``deliver`` is ``"draws"``, cuts the patches from the
    memmap at once (:meth:`assemble`), as float32 patches or, with ``"frames"``, float16 frames for
    the device to convert. With ``"draws"`` the data module assembles the batch on the training
    device from a :class:`PatchSource` uploaded there.
    """

    def __init__(
        self,
        cache: FeatureCache,
        rows: Sequence[int],
        patch_frames: int,
        rank: int = 0,
        deliver: Deliver = "patches",
    ) -> None:
        self.cache = cache
        self.rows = np.asarray(rows, dtype=np.int64)
        self.patch_frames = patch_frames
        self.rank = rank
        self.deliver = deliver
        self._rng: np.random.Generator | None = None
        self._rng_owner: object = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        """One item: the batch of one index, without its batch dimension."""
        batch = self.__getitems__([index])
        if isinstance(batch, tuple):
            return tuple(v[0] for v in batch)
        return {k: v[0] for k, v in batch.items() if k != "draws"}

    def __getitems__(self, indices: Sequence[int]):
        batch = self.draw(np.asarray(indices, dtype=np.int64))
        return batch if self.deliver == "draws" else self.assemble(batch, PatchSource.of_cache(self.cache))

    def draw(self, positions: np.ndarray) -> dict:
        raise NotImplementedError

    def assemble(self, batch: dict, source: PatchSource):
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

    def draws(self, positions: np.ndarray, starts: np.ndarray) -> dict[str, torch.Tensor]:
        return {"rows": torch.from_numpy(self.rows[positions]), "starts": torch.from_numpy(starts)}

    def patches(self, batch: dict, source: PatchSource) -> tuple[torch.Tensor, dict]:
        """The batch's patches ``[N, 1, n_mels, patch_frames]`` (or, to deliver ``"frames"``, its frames
        ``[N, patch_frames, n_mels]``) and its other fields."""
        draws = batch["draws"]
        patches = source.gather(draws["rows"], draws["starts"], self.patch_frames, self.deliver != "frames")
        return patches, {k: v for k, v in batch.items() if k != "draws"}


class TwoViewDataset(CacheDataset):
    """Per clip: two patches at independent random offsets, each with a background patch taken
    from a different, randomly chosen clip (the two backgrounds are drawn independently, so they may
    come from the same clip; ``distinct_backgrounds`` takes them from two different clips, as the
    paper's public code did).

    A batch is a dict: ``views`` and ``backgrounds`` ``[n, 2, 1, n_mels, patch_frames]``, ``index``
    ``[n]`` (dataset positions) and, with ``targets``, ``target`` ``[n]``.

    Args:
        targets: optional class index per clip (-1: none), passed on as ``target`` for the online
            linear probe (``SimCLR(online_probe=True)``); the views never depend on it.
        distinct_backgrounds: the two views' backgrounds come from two different clips (needs 3 clips).
    """

    def __init__(
        self,
        cache: FeatureCache,
        rows: Sequence[int],
        patch_frames: int,
        rank: int = 0,
        targets: Sequence[int] | None = None,
        deliver: Deliver = "patches",
        distinct_backgrounds: bool = False,
    ) -> None:
        super().__init__(cache, rows, patch_frames, rank, deliver)
        if len(self.rows) < 2:
            raise DataError("two-view pretraining needs at least 2 clips (backgrounds come from other clips)")
        if distinct_backgrounds and len(self.rows) < 3:
            raise DataError("distinct_backgrounds needs at least 3 clips (a clip and two others)")
        self.distinct_backgrounds = distinct_backgrounds
        self.targets = None if targets is None else torch.as_tensor(targets, dtype=torch.long)
        if self.targets is not None and len(self.targets) != len(self.rows):
            raise ValueError(f"{len(self.targets)} targets for {len(self.rows)} clips")

    def draw(self, positions: np.ndarray) -> dict:
        """Draws ``[2, n, 2]`` (views then backgrounds, clip by clip, two each): for the views the
        clips themselves, for the backgrounds other clips; a uniform start for every patch."""
        views = np.repeat(positions[:, None], 2, axis=1)
        if self.distinct_backgrounds:
            backgrounds = two_other_positions(positions, len(self.rows), self.rng)
        else:
            backgrounds = other_positions(positions, len(self.rows), 2, self.rng)
        sources = np.stack([views, backgrounds])
        starts = random_starts(self.lengths(sources), self.patch_frames, self.rng)
        batch = {"draws": self.draws(sources, starts), "index": torch.from_numpy(positions)}
        if self.targets is not None:
            batch["target"] = self.targets[positions]
        return batch

    def assemble(self, batch: dict, source: PatchSource) -> dict[str, torch.Tensor]:
        patches, out = self.patches(batch, source)
        patches = patches.view(2, -1, 2, *patches.shape[1:])
        return {"views": patches[0], "backgrounds": patches[1], **out}


class LabeledPatchDataset(CacheDataset):
    """Training set for downstream tasks: one random patch per clip and its target.

    A batch is a dict: ``patch`` ``[n, 1, n_mels, patch_frames]``, ``target`` (class indices, or
    multi-hot ``float`` rows when ``targets`` is 2-D), and each patch's ``row`` in the cache and
    ``start`` frame, which identify it (a frozen encoder's embedding of it can be computed once and
    looked up afterwards).

    Args:
        hop_frames: ``None`` draws the start uniformly from every frame; an int draws one of the
            sliding windows with that hop (:func:`~ser_ssl.inference.window_starts`), a finite set of
            patches per clip.
    """

    def __init__(
        self,
        cache: FeatureCache,
        rows: Sequence[int],
        targets: Sequence[int] | np.ndarray,
        patch_frames: int,
        rank: int = 0,
        hop_frames: int | None = None,
        deliver: Deliver = "patches",
    ) -> None:
        super().__init__(cache, rows, patch_frames, rank, deliver)
        self.targets = as_targets(targets)
        self.hop_frames = hop_frames

    def training_starts(self, positions: np.ndarray) -> np.ndarray:
        lengths = self.lengths(positions)
        if self.hop_frames is None:
            return random_starts(lengths, self.patch_frames, self.rng)
        nth = self.rng.integers(0, window_counts(lengths, self.patch_frames, self.hop_frames))
        return nth_window_starts(lengths, nth, self.patch_frames, self.hop_frames)

    def draw(self, positions: np.ndarray) -> dict:
        return {
            "draws": self.draws(positions, self.training_starts(positions)),
            "target": self.targets[positions],
        }

    def assemble(self, batch: dict, source: PatchSource) -> dict[str, torch.Tensor]:
        patches, out = self.patches(batch, source)
        return {"patch": patches, **out, "row": batch["draws"]["rows"], "start": batch["draws"]["starts"]}


class CentrePatchDataset(LabeledPatchDataset):
    """The patch in the middle of each clip and its class: a fixed set, e.g. for the kNN monitor.
    A batch is ``{"patch": [B, 1, n_mels, patch_frames], "target": [B]}``."""

    def draw(self, positions: np.ndarray) -> dict:
        starts = np.maximum(self.lengths(positions) - self.patch_frames, 0) // 2
        return {"draws": self.draws(positions, starts), "target": self.targets[positions]}

    def assemble(self, batch: dict, source: PatchSource) -> dict[str, torch.Tensor]:
        patches, out = self.patches(batch, source)
        return {"patch": patches, "target": out["target"]}


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

    def draw(self, positions: np.ndarray) -> dict:
        lengths = self.lengths(positions)
        counts = window_counts(lengths, self.patch_frames, self.hop_frames)
        clip = np.repeat(np.arange(len(positions)), counts)
        nth = np.arange(len(clip)) - np.repeat(np.cumsum(counts) - counts, counts)
        starts = nth_window_starts(lengths[clip], nth, self.patch_frames, self.hop_frames)
        batch = {
            "draws": self.draws(positions[clip], starts),
            "clip": torch.from_numpy(clip),
            "target": self.targets[positions],
        }
        if self.ids is not None:
            batch["index"] = torch.from_numpy(self.ids[positions])
            batch["length"] = torch.from_numpy(lengths)
            batch["start"] = torch.from_numpy(starts)
        return batch

    def assemble(self, batch: dict, source: PatchSource) -> dict[str, torch.Tensor]:
        patches, out = self.patches(batch, source)
        return {"patches": patches, **out}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """One clip's windows as a batch of one clip."""
        return self.__getitems__([index])


def as_targets(targets: Sequence[int] | Sequence[Sequence[float]] | np.ndarray) -> torch.Tensor:
    """Class indices as ``long`` ``[N]``, or multi-hot rows ``[N, C]`` as ``float`` (for BCE)."""
    t = torch.as_tensor(np.asarray(targets))
    return t.float() if t.ndim == 2 else t.long()
