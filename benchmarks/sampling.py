"""Views/s that the pretraining data path delivers in one process from a warm cache: the batched
sampler (one draw and one gather per batch) against the per-clip path it replaced, and against the
memory-copy limit of the same bytes.

The per-clip baseline is what ``TwoViewDataset`` did before batching, kept here as the reference:
per clip four memmap slices (two views, two backgrounds), a transpose and float32 copy each, a dict,
then the default collate of the batch's dicts. Both run in the main process (``num_workers=0``), so
the figure is one core's; augmentation is off (it runs on the training device, after transfer); the
transfer is ``batch.to(device)``, a no-op on CPU. A view is one of the two patches of a clip; its
background comes with it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import PlainLoop, make_simclr, median, write_fake_cache
from benchmarks.table import Row
from ser_ssl.data.feature_cache import FeatureCache
from ser_ssl.data.views import PatchSource, TwoViewDataset, as_batch

PATCH = 101


class PerClipTwoViews(Dataset):
    """The per-clip path: one ``__getitem__`` per clip, Python slicing of every patch."""

    def __init__(self, cache: FeatureCache, patch_frames: int) -> None:
        self.cache, self.patch_frames = cache, patch_frames
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return len(self.cache)

    def patch(self, row: int) -> torch.Tensor:
        length = int(self.cache.lengths[row])
        start = int(self.rng.integers(0, length - self.patch_frames + 1)) if length > self.patch_frames else 0
        frames = self.cache.frames(row, start, start + self.patch_frames)
        if len(frames) < self.patch_frames:
            frames = np.tile(frames, (-(-self.patch_frames // len(frames)), 1))[: self.patch_frames]
        return torch.from_numpy(np.ascontiguousarray(frames.T, dtype=np.float32)).unsqueeze(0)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        others = [int(j) + (int(j) >= index) for j in self.rng.integers(0, len(self) - 1, 2)]
        views = torch.stack([self.patch(index), self.patch(index)])
        backgrounds = torch.stack([self.patch(j) for j in others])
        return {"views": views, "backgrounds": backgrounds, "index": torch.tensor(index)}


def views_per_second(loader: DataLoader, batches: int, device: torch.device) -> float:
    """Views/s over ``batches`` batches moved to ``device``, after one untimed batch."""
    it = iter(loader)
    next(it)
    views = 0
    start = time.perf_counter()
    for _ in range(batches):
        batch = {k: v.to(device, non_blocking=True) for k, v in next(it).items()}
        views += batch["views"].shape[0] * batch["views"].shape[1]
    return views / (time.perf_counter() - start)


def copy_limit_views_per_second(cache: FeatureCache, batch: int, batches: int) -> float:
    """Views/s if a batch's patches (with their backgrounds) were one contiguous read and float32
    conversion: what no sampler can beat on this machine."""
    n = batch * 4 * PATCH  # frames of one batch: two views and two backgrounds per clip
    data = cache.data
    out = torch.empty(n, cache.n_mels)
    start = time.perf_counter()
    for b in range(batches):
        first = (b * n) % max(len(data) - n, 1)
        out.copy_(torch.from_numpy(np.asarray(data[first : first + n])))
    return batches * batch * 2 / (time.perf_counter() - start)


def device_cache_views_per_second(dataset: TwoViewDataset, batch: int, batches: int) -> tuple[float, float]:
    """Views/s of the draws + assembly from features uploaded to the CPU (``device_cache`` with
    device ``cpu``) and of the same draws gathered from the memmap, in this process."""
    source = PatchSource.upload(dataset.cache, dataset.rows, "cpu")
    memmap = PatchSource.of_cache(dataset.cache)
    order = np.random.default_rng(0).permutation(len(dataset))
    rates = []
    for src in (source, memmap):
        start = time.perf_counter()
        for b in range(batches):
            dataset.assemble(dataset.draw(order[b * batch : (b + 1) * batch]), src)
        rates.append(batches * batch * 2 / (time.perf_counter() - start))
    return rates[0], rates[1]


def step_with_loader(quick: bool, dataset: TwoViewDataset, batch: int, steps: int) -> tuple[float, float]:
    """Seconds a training step takes fed by the loader (2 workers, as the configs) and fed one batch
    already in memory, median over ``steps`` after a warm-up."""
    loader = DataLoader(
        dataset,
        batch,
        shuffle=True,
        drop_last=True,
        num_workers=2,
        persistent_workers=True,
        collate_fn=as_batch,
    )
    plain = PlainLoop(make_simclr(quick), 2 * steps + 2)
    it = iter(loader)
    fixed = next(it)
    plain.step(fixed)  # warm-up
    timed = {"loader": [], "memory": []}
    for _ in range(steps):
        start = time.perf_counter()
        plain.step(next(it))
        timed["loader"].append(time.perf_counter() - start)
        start = time.perf_counter()
        plain.step(fixed)
        timed["memory"].append(time.perf_counter() - start)
    del it
    return median(timed["loader"]), median(timed["memory"])


def run(quick: bool, workdir: Path) -> list[Row]:
    batch, n_clips, batches = (8, 64, 2) if quick else (128, 5000, 30)
    fake = write_fake_cache(workdir / "cache", n_clips, mean_frames=300)
    cache = FeatureCache(fake.directory)
    device = torch.device("cpu")

    def loader(dataset: Dataset, collate_fn=None) -> DataLoader:
        return DataLoader(dataset, batch, shuffle=True, drop_last=True, num_workers=0, collate_fn=collate_fn)

    dataset = TwoViewDataset(cache, range(len(cache)), PATCH)
    batched = views_per_second(loader(dataset, as_batch), batches, device)
    frames = TwoViewDataset(cache, range(len(cache)), PATCH, deliver="frames")
    as_frames = views_per_second(loader(frames, as_batch), batches, device)
    on_device, from_memmap = device_cache_views_per_second(dataset, batch, batches)
    step_loader, step_memory = step_with_loader(quick, dataset, batch, 2 if quick else 4)
    per_clip = views_per_second(loader(PerClipTwoViews(cache, PATCH)), batches, device)
    limit = copy_limit_views_per_second(cache, batch, batches)
    setup = (
        f"one process, batch {batch} clips × (2 views + 2 backgrounds) of 96×{PATCH} float16 → float32, "
        f"{n_clips}-clip cache (50-550 frames, page cache warm), {batches} batches timed after one"
    )
    return [
        Row(
            "pretraining data path: batched sampler vs per-clip path",
            batched,
            per_clip,
            "views/s",
            "rate",
            goal=(">=", 3.0),
            goal_note="and at least 40,000 views/s on 2 cores",
            note=f"{setup}; batched: TwoViewDataset.__getitems__ (one draw, one gather); per-clip: "
            "four slices per clip and the default collate.",
        ),
        Row(
            "pretraining data path: batched sampler vs memory-copy limit",
            batched,
            limit,
            "views/s",
            "rate",
            note=f"{setup}; limit: one contiguous read and float32 conversion of a batch's bytes.",
        ),
        Row(
            "pretraining data path for a GPU: float16 frames vs float32 patches",
            as_frames,
            batched,
            "views/s",
            "rate",
            note=f"{setup}; frames: what the loader delivers when training on a GPU from the memmap "
            "(deliver='frames': half the bytes, no transposing conversion on the host; the GPU converts).",
        ),
        Row(
            "pretraining data path: device cache (on the CPU) vs memmap gather",
            on_device,
            from_memmap,
            "views/s",
            "rate",
            note=f"{setup}; the same draws assembled from the features uploaded to the CPU "
            "(PatchSource.upload, what device_cache does on a GPU) and from the memmap.",
        ),
        Row(
            "training step fed by the loader vs fed a batch already in memory",
            step_loader,
            step_memory,
            "s/step",
            "time",
            goal=(">=", 0.9),
            note=f"SimCLR as configs/pretrain.yaml (VGG-like, views on, AdamW, channels_last, fp32), "
            f"batch {batch}, hand-written loop; loader: 2 workers, persistent, as the configs; medians of "
            "steps interleaved with the in-memory ones.",
        ),
    ]
