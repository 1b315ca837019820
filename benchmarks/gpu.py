"""`make bench-gpu`: the pretraining data path and step on the GPU at hand, in one prepared run.

For each built-in encoder (SimCLR as ``configs/gpu.yaml`` sets it up: channels_last, the precision
``--auto_precision`` picks) it measures patches/s of training steps fed

- by the real path: a DataLoader of draws (4 workers) over a ``TwoViewDataset`` whose features were
  uploaded to the GPU, assembled there as the data module does (``device_cache``),
- by the path of caches too large for the GPU: 4 workers gather float16 frames from the memmap into
  pinned memory, the GPU converts them (``deliver="frames"``), and
- by one batch already on the GPU,

and the peak GPU memory. Then it times ``ser-ssl fit --config configs/pretrain.yaml --config
configs/gpu.yaml`` on the built-in data set end to end. A view is a patch: a batch of ``n`` clips
trains on ``2n`` patches. Writes ``runs/bench/gpu.json`` and prints a Markdown table. ``--quick`` runs
tiny sizes on any device (the tests run it on the CPU); the figures need a GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch.utils.data import DataLoader

from benchmarks.common import write_fake_cache
from ser_ssl.data.feature_cache import FeatureCache
from ser_ssl.data.views import PatchSource, TwoViewDataset, as_batch, batch_of_patches
from ser_ssl.precision import choose_precision, detect

ENCODERS = {
    "vgglike": ("ser_ssl.models", "VGGLike"),
    "resnet18": ("ser_ssl.models", "ResNet18"),
    "crnn": ("ser_ssl.models", "CRNN"),
}
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def simclr(encoder: str, quick: bool):
    import importlib

    from ser_ssl.tasks import SimCLR

    module, name = ENCODERS[encoder]
    cls = getattr(importlib.import_module(module), name)
    enc = cls(channels=(4, 8), embed_dim=16) if quick and encoder == "vgglike" else cls()
    return SimCLR(encoder=enc, optimizer="adamw", lr=1e-3, channels_last=True)


def throughput(model, batches, device: torch.device, dtype, steps: int) -> float:
    """Patches/s of ``steps`` training steps on the batches ``batches`` yields (after two warm-ups)."""
    model = model.to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(batch) -> int:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            x = model.make_views(batch)
            z = model.head(model.encoder(x)).view(x.shape[0] // 2, 2, -1)
            loss = model.criterion(z[:, 0].float(), z[:, 1].float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return x.shape[0]

    for _ in range(2):
        step(next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, patches = time.perf_counter(), 0
    for _ in range(steps):
        patches += step(next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return patches / (time.perf_counter() - start)


def loader_batches(dataset: TwoViewDataset, batch: int, source: PatchSource, device, workers: int):
    """Batches as the data module delivers them with ``device_cache``: draws from the loader, patches
    cut on ``device``."""
    while True:
        loader = DataLoader(
            dataset, batch, shuffle=True, drop_last=True, num_workers=workers, collate_fn=as_batch
        )
        for draws in loader:
            yield dataset.assemble(move_data_to_device(draws, device), source)


def memmap_batches(dataset: TwoViewDataset, batch: int, device, workers: int):
    """Batches as the data module delivers them from the memmap on a GPU: float16 frames gathered by
    the workers into pinned memory, converted to patches on ``device``."""
    while True:
        loader = DataLoader(
            dataset,
            batch,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            collate_fn=as_batch,
        )
        for frames in loader:
            yield batch_of_patches(move_data_to_device(frames, device))


def same_batch(batch):
    while True:
        yield batch


def run(quick: bool, workdir: Path, save=lambda results: None) -> dict:
    """Every measurement; ``save(results)`` after each, so a run cut short keeps what it measured."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    hw = detect(device.type)
    precision, why = choose_precision(hw)
    dtype = AUTOCAST.get(precision)
    batch, clips, steps = (8, 64, 3) if quick else (1024, 20000, 30)
    cache = FeatureCache(write_fake_cache(workdir / "cache", clips, mean_frames=300).directory)
    dataset = TwoViewDataset(cache, range(len(cache)), 101, deliver="draws")
    source = PatchSource.upload(cache, dataset.rows, device)
    frames = TwoViewDataset(cache, range(len(cache)), 101, deliver="frames")
    results = {
        "device": hw.name,
        "precision": precision,
        "why": why,
        "batch": batch,
        "rows": [],
    }
    for name in ["vgglike"] if quick else list(ENCODERS):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        real = throughput(
            simclr(name, quick), loader_batches(dataset, batch, source, device, 4), device, dtype, steps
        )
        memmap = throughput(
            simclr(name, quick), memmap_batches(frames, batch, device, 4), device, dtype, steps
        )
        fixed = next(loader_batches(dataset, batch, source, device, 0))
        resident = throughput(simclr(name, quick), same_batch(fixed), device, dtype, steps)
        memory = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        results["rows"].append(
            {
                "encoder": name,
                "loader_patches_per_s": real,
                "resident_patches_per_s": resident,
                "ratio": real / resident,
                "memmap_patches_per_s": memmap,
                "memmap_ratio": memmap / resident,
                "peak_gpu_gib": memory,
            }
        )
        save(results)
    if not quick:
        del source, fixed  # the pretraining's own process gets the GPU's memory
        if device.type == "cuda":
            torch.cuda.empty_cache()
        results["pretraining"] = pretraining_seconds(workdir)
        save(results)
    return results


def pretraining_seconds(workdir: Path, timeout: float = 300) -> dict:
    """Wall time of the default pretraining with the GPU preset on the built-in data set (given up
    after ``timeout`` seconds)."""
    cmd = [
        sys.executable,
        "-m",
        "ser_ssl.cli",
        "fit",
        "--config",
        "configs/pretrain.yaml",
        "--config",
        "configs/gpu.yaml",
        "--data.init_args.batch_size",
        "128",
        "--trainer.default_root_dir",
        str(workdir / "pretrain"),
        "--wandb",
        "disabled",
        "--trainer.enable_progress_bar",
        "false",
    ]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        returncode, stderr = done.returncode, done.stderr
    except subprocess.TimeoutExpired as e:
        returncode, stderr = "timed out", e.stderr.decode(errors="replace") if e.stderr else ""
    return {
        "command": " ".join(cmd[1:]),
        "seconds": time.perf_counter() - start,
        "returncode": returncode,
        "stderr_tail": stderr[-2000:],
    }


def table(results: dict) -> str:
    lines = [
        f"{results['device']}, {results['precision']} ({results['why']}), batch {results['batch']} clips",
        "",
        "| encoder | device-cache loader (patches/s) | memmap loader, frames (patches/s) "
        "| batch on the device (patches/s) | ratios | peak GPU GiB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['encoder']} | {r['loader_patches_per_s']:,.0f} | {r['memmap_patches_per_s']:,.0f} | "
            f"{r['resident_patches_per_s']:,.0f} | {r['ratio']:.2f}, {r['memmap_ratio']:.2f} | "
            f"{r['peak_gpu_gib']:.2f} |"
        )
    if "pretraining" in results:
        p = results["pretraining"]
        lines += ["", f"pretraining ({p['command']}): {p['seconds']:.0f} s, exit {p['returncode']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the code, not the speed")
    parser.add_argument("--out", default="runs/bench/gpu.json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(results: dict) -> None:
        out.write_text(json.dumps(results, indent=1))
        print(table(results), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        save(run(args.quick, Path(tmp), save))


if __name__ == "__main__":
    main()
