"""Row 3: two-view batches/s of the pretraining DataLoader against decoding on the fly, and against one
training step of the default encoder on such a batch.

The loader is built as ``SSLDataModule`` builds it (TwoViewDataset over a cache, shuffled, 2
workers, batch 128, 101-frame patches of 96 bands); the first batch, which starts the workers, is
not timed. The on-the-fly baseline is a Dataset that decodes, resamples and computes the log-mel of
its clip in ``__getitem__`` with the same loader settings; it is lenient: it cuts the two
backgrounds from the same decoded clip instead of decoding two more clips.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import PlainLoop, make_simclr, median, synthetic_audio, write_fake_cache
from benchmarks.table import Row
from ser_ssl.audio import LogMel, LogMelConfig, load_audio
from ser_ssl.data.feature_cache import FeatureCache
from ser_ssl.data.views import TwoViewDataset, as_batch

WORKERS = 2
PATCH = 101


def loader(dataset: Dataset, batch_size: int, collate_fn=None) -> DataLoader:
    """The DataLoader settings of ``AudioDataModule._loader`` for training."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=WORKERS,
        persistent_workers=False,
        collate_fn=collate_fn,
    )


class DecodeOnTheFly(Dataset):
    """Decodes item ``i``'s file (``paths[i % len(paths)]``) and computes its log-mel per item; returns
    what TwoViewDataset returns (two random patches, two backgrounds from the same clip)."""

    def __init__(self, paths: list[Path], length: int, config: LogMelConfig, patch_frames: int) -> None:
        self.paths, self.length, self.config, self.patch_frames = paths, length, config, patch_frames
        self._logmel: LogMel | None = None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self._logmel is None:
            self._logmel = LogMel(self.config)
        with torch.inference_mode():
            feats = self._logmel(load_audio(self.paths[index % len(self.paths)], self.config.sample_rate))
        n = feats.shape[-1]
        if n < self.patch_frames:
            feats = feats.repeat(1, -(-self.patch_frames // n))
            n = feats.shape[-1]
        starts = torch.randint(0, n - self.patch_frames + 1, (4,)).tolist()
        patches = torch.stack([feats[:, s : s + self.patch_frames] for s in starts]).unsqueeze(1)
        return {"views": patches[:2], "backgrounds": patches[2:], "index": torch.tensor(index)}


def batches_per_second(dl: DataLoader, batches: int) -> tuple[float, dict[str, torch.Tensor]]:
    """Batches/s over ``batches`` batches after the first (which starts the workers); and that first one."""
    it = iter(dl)
    first = next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches / (time.perf_counter() - start)
    del it
    return rate, first


def run(quick: bool, workdir: Path) -> list[Row]:
    """Loader vs decoding on the fly, and loader vs one SimCLR training step."""
    batch, n_cached, n_loader, n_decode, steps = (8, 64, 2, 1, 1) if quick else (128, 2560, 16, 3, 1)
    fake = write_fake_cache(workdir / "cache", n_cached, mean_frames=300)
    cache = FeatureCache(fake.directory)
    dataset = TwoViewDataset(cache, range(len(cache)), PATCH)
    loader_rate, first = batches_per_second(loader(dataset, batch, as_batch), n_loader)

    paths = synthetic_audio(workdir, quick)
    otf = DecodeOnTheFly(paths, (n_decode + 1) * batch, LogMelConfig(), PATCH)
    decode_rate, _ = batches_per_second(loader(otf, batch), n_decode)

    model = make_simclr(quick)
    plain = PlainLoop(model, steps + 1)
    step_s = median(_step_times(plain, first, steps))
    setup = f"batch {batch} clips × (2 views + 2 backgrounds) of 96×{PATCH}, {WORKERS} workers"
    return [
        Row(
            "view sampling: cache loader vs decoding + log-mel on the fly",
            loader_rate,
            decode_rate,
            "batches/s",
            "rate",
            note=f"{setup}; loader over a {n_cached}-clip cache, {n_loader} batches timed after the first; "
            f"on the fly: {len(paths)} synthetic WAV files (16-48 kHz, resampled), {n_decode} batches timed.",
        ),
        Row(
            "view sampling: cache loader vs one VGG-like training step",
            loader_rate,
            1 / step_s,
            "batches/s",
            "rate",
            goal=(">=", 5.0),
            note=f"the step: SimCLR (configs/pretrain.yaml: mix-back, RRC + compression + noise, VGG-like, "
            f"AdamW, channels_last, fp32) on a loader batch, hand-written loop, median of {steps} after one "
            f"warm-up: {step_s:.2f} s.",
        ),
    ]


def _step_times(plain: PlainLoop, batch: dict[str, torch.Tensor], steps: int) -> list[float]:
    plain.step(batch)  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        plain.step(batch)
        times.append(time.perf_counter() - start)
    return times
