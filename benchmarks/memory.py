"""Row 2: resident memory of iterating the pretraining DataLoader over a cache of N and of 10×N clips.

Each measurement runs in a fresh Python process (``python -m benchmarks.memory --child ...``) so the
two do not share a heap. The child iterates a TwoViewDataset DataLoader (2 forked workers, batch
128, as the data module builds it) for a fixed number of batches and then, with the workers still
alive, sums the proportional set size (PSS: shared pages split between the processes that map them,
so pages the workers share with the main process are not counted twice) of the main process and its
workers, and the resident pages of the memmapped ``features.f16`` (file-backed, reclaimable). The
caches are written directly in the on-disk format.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.common import child_pids, mapping_kb, memory_kb, write_fake_cache
from benchmarks.table import Row
from ser_ssl.data.feature_cache import FEATURES_FILE

REPO = Path(__file__).resolve().parents[1]


def measure(directory: Path, batches: int, batch_size: int, workers: int, patch_frames: int = 101) -> dict:
    """Memory (MB) of this process and its DataLoader workers after ``batches`` batches."""
    from torch.utils.data import DataLoader

    from ser_ssl.data.feature_cache import FeatureCache
    from ser_ssl.data.views import TwoViewDataset, as_batch

    cache = FeatureCache(directory)
    dataset = TwoViewDataset(cache, range(len(cache)), patch_frames)
    before = memory_kb(os.getpid())
    loader = DataLoader(
        dataset, batch_size, shuffle=True, drop_last=True, num_workers=workers, collate_fn=as_batch
    )
    it = iter(loader)
    for _ in range(batches):
        next(it)
    pids = [os.getpid(), *child_pids(os.getpid())]
    readings = [memory_kb(p) for p in pids]
    memmap = sum(mapping_kb(p, FEATURES_FILE) for p in pids)
    del it
    return {
        "processes": len(pids),
        "pss_mb": sum(r["Pss"] for r in readings) / 1024,
        "rss_mb": sum(r["Rss"] for r in readings) / 1024,
        "pss_anon_mb": sum(r["Pss_Anon"] for r in readings) / 1024,
        "memmap_pss_mb": memmap / 1024,
        "main_before_mb": before["Rss"] / 1024,
    }


def _in_child(directory: Path, batches: int, batch_size: int, workers: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.memory", "--child", str(directory)]
    cmd += ["--batches", str(batches), "--batch-size", str(batch_size), "--workers", str(workers)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory benchmark child failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool, workdir: Path) -> list[Row]:
    """PSS and memmap residency for N and 10×N clips."""
    n, batches, batch_size, workers = (40, 2, 16, 2) if quick else (600, 4, 128, 2)
    small = write_fake_cache(workdir / "small", n)
    big = write_fake_cache(workdir / "big", 10 * n)
    a = _in_child(small.directory, batches, batch_size, workers)
    b = _in_child(big.directory, batches, batch_size, workers)
    setup = (
        f"{batches} batches of {batch_size} clips (2 views + 2 backgrounds each), {workers} workers; "
        f"caches of {n} clips ({small.bytes / 1e6:.0f} MB) and {10 * n} clips ({big.bytes / 1e6:.0f} MB), "
        "mean 5 s per clip"
    )
    return [
        Row(
            f"loader memory (PSS, main + {workers} workers): 10×N vs N clips",
            b["pss_mb"],
            a["pss_mb"],
            "MB",
            "size",
            goal=("<=", 1.2),
            goal_note="about the same",
            note=f"{setup}. PSS splits shared pages between the processes that map them; RSS summed over the "
            f"{a['processes']} processes counts them in each: {b['rss_mb']:.0f} vs {a['rss_mb']:.0f} MB. The "
            f"main process held {a['main_before_mb']:.0f} MB (RSS) before iterating.",
        ),
        Row(
            "loader memory, anonymous part (heap, tensors): 10×N vs N clips",
            b["pss_anon_mb"],
            a["pss_anon_mb"],
            "MB",
            "size",
            goal=("<=", 1.2),
            goal_note="about the same",
            note="Pss_Anon summed over main + workers: memory that only swap could free.",
        ),
        Row(
            "loader memory, memmap pages mapped (features.f16): 10×N vs N clips",
            b["memmap_pss_mb"],
            a["memmap_pss_mb"],
            "MB",
            "size",
            note="PSS of the features.f16 mappings: clean file-backed pages, reclaimable at any time. They "
            "grow with the patches drawn (the kernel maps up to 64 kB around each faulting page, and the "
            f"workers prefetch 2 batches each), capped by the file ({big.bytes / 1e6:.0f} MB for 10×N), "
            "not read in whole.",
        ),
    ]


def _main() -> None:
    parser = argparse.ArgumentParser(description="child of the memory benchmark: prints one JSON line")
    parser.add_argument("--child", type=Path, required=True, help="cache directory")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(measure(args.child, args.batches, args.batch_size, args.workers)))


if __name__ == "__main__":
    _main()
