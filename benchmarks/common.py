"""Shared pieces of the benchmarks: timing, memory readings from /proc, test data, the SimCLR step
without Lightning."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ser_ssl.data.feature_cache import FEATURES_FILE, INDEX_FILE

# ---------------------------------------------------------------------------------------------------------
# timing


def seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall time of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# ---------------------------------------------------------------------------------------------------------
# memory of a process, from /proc (psutil is not a dependency)


def memory_kb(pid: int) -> dict[str, int]:
    """``Rss``, ``Pss``, ``Pss_Anon`` and ``Pss_File`` of a process in kB (``smaps_rollup``; falls back to
    ``VmRSS`` of ``/proc/PID/status`` for every field where that file is missing)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        status = Path(f"/proc/{pid}/status").read_text()
        rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        return dict.fromkeys(("Rss", "Pss", "Pss_Anon", "Pss_File"), rss)
    fields = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            fields[parts[0].rstrip(":")] = int(parts[1])
    return {k: fields.get(k, 0) for k in ("Rss", "Pss", "Pss_Anon", "Pss_File")}


def mapping_kb(pid: int, name: str, field: str = "Pss") -> int:
    """``Pss`` (or another smaps field) in kB of the mappings of files called ``name`` in a process."""
    total, inside = 0, False
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        parts = line.split()
        if parts and "-" in parts[0] and len(parts) >= 5:  # a mapping's header line
            inside = len(parts) >= 6 and parts[-1].endswith(name)
        elif inside and parts and parts[0] == f"{field}:":
            total += int(parts[1])
    return total


def child_pids(pid: int) -> list[int]:
    """Direct children of a process (scans ``/proc/*/stat``)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text.rsplit(")", 1)[1].split()[1])  # fields after the command name: state, ppid
        if ppid == pid:
            children.append(int(stat.parent.name))
    return children


# ---------------------------------------------------------------------------------------------------------
# data


@dataclass
class FakeCache:
    """A feature cache written directly in the on-disk format (no audio decoded)."""

    directory: Path
    n_clips: int
    frames: int
    bytes: int


def write_fake_cache(
    directory: Path, n_clips: int, n_mels: int = 96, mean_frames: int = 500, seed: int = 0
) -> FakeCache:
    """``features.f16`` + ``index.json`` with clips of 50 to ``2 * mean_frames - 50`` frames of log-mel-like
    values (about -4 ± 2), written in chunks so memory stays small however big the cache is."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(50, max(2 * mean_frames - 50, 51), n_clips)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    block = (rng.standard_normal((4099, n_mels), dtype=np.float32) * 2 - 4).astype(np.float16)
    total, chunk = int(lengths.sum()), 1 << 16
    with (directory / FEATURES_FILE).open("wb") as out:
        for start in range(0, total, chunk):
            rows = min(chunk, total - start)
            np.take(block, np.arange(start, start + rows) % len(block), axis=0).tofile(out)
    clips = [
        {"path": f"/fake/clip{i:06d}.wav", "offset": int(o), "frames": int(n)}
        for i, (o, n) in enumerate(zip(offsets, lengths, strict=True))
    ]
    index = {"config": {}, "n_mels": n_mels, "clips": clips, "skipped": []}
    (directory / INDEX_FILE).write_text(json.dumps(index))
    return FakeCache(directory, n_clips, total, (directory / FEATURES_FILE).stat().st_size)


def synthetic_audio(workdir: Path, quick: bool) -> list[Path]:
    """WAV files of the built-in synthetic set (training split only), generated once per ``workdir``."""
    from ser_ssl.data.synthetic import generate

    per_class, max_seconds = (2, 1.0) if quick else (16, 8.0)
    manifest = generate(
        workdir / "synthetic",
        seed=0,
        train_per_class=per_class,
        val_per_class=0,
        test_per_class=0,
        max_seconds=max_seconds,
    )
    return sorted(manifest.parent.rglob("*.wav"))


def log_mel_like(*shape: int, seed: int = 0) -> torch.Tensor:
    """Random float32 values in the range of log10 mel power (about -4 ± 2)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * 2 - 4


# ---------------------------------------------------------------------------------------------------------
# the SimCLR step, Lightning-free


def vgg_like(quick: bool) -> torch.nn.Module:
    """The default encoder, or a tiny one for ``--quick`` runs."""
    from ser_ssl.models import VGGLike

    torch.manual_seed(0)
    return VGGLike(channels=(4, 8), embed_dim=16) if quick else VGGLike()


def make_simclr(quick: bool = False):
    """SimCLR as ``configs/pretrain.yaml`` sets it up (VGG-like, AdamW 1e-3, channels_last)."""
    from ser_ssl.tasks import SimCLR

    torch.manual_seed(0)
    return SimCLR(
        encoder=vgg_like(quick),
        optimizer="adamw",
        lr=1e-3,
        weight_decay=1e-4,
        warmup_epochs=1,
        channels_last=True,
    )


def two_view_batch(pairs: int, patch_frames: int = 101, n_mels: int = 96) -> dict[str, torch.Tensor]:
    """A batch as the pretraining DataLoader yields it: views and backgrounds ``[n, 2, 1, M, T]``."""
    return {
        "views": log_mel_like(pairs, 2, 1, n_mels, patch_frames, seed=1),
        "backgrounds": log_mel_like(pairs, 2, 1, n_mels, patch_frames, seed=2),
        "index": torch.arange(pairs),
    }


class PlainLoop:
    """A minimal hand-written training step of a SimCLR module: the same views, forward, loss and
    AdamW parameter groups as the LightningModule, with a cosine schedule stepped every step."""

    def __init__(self, model, total_steps: int) -> None:
        self.model = model.to(memory_format=model.memory_format).train()
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": model.weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
        self.opt = torch.optim.AdamW(groups, lr=model.lr, betas=(model.momentum, 0.999))
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=max(total_steps, 1))

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        """One step on a two-view batch; returns the loss."""
        m = self.model
        x = m.make_views(batch)
        n = x.shape[0] // 2
        z = m.head(m.encoder(x)).view(n, 2, -1)
        loss = m.criterion(z[:, 0], z[:, 1])
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.sched.step()
        return float(loss.detach())
