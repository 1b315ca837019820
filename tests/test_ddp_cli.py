"""Real 2-process DDP pretraining runs through the `ser-ssl` command (CPU, gloo), launched by
Lightning itself and by torchrun, with the DDP preset (SyncBatchNorm on)."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SMALL_ENCODER, tiny_args

pytestmark = pytest.mark.slow

LAUNCHERS = {
    "lightning": [sys.executable, "-m", "ser_ssl.cli"],
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "ser_ssl.cli"],
}


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_two_process_pretraining_finishes_with_one_cache_and_one_checkpoint_folder(
    launcher, tmp_path, tiny_data
):
    root = tmp_path / "run"
    args = tiny_args("pretrain", root, tiny_data, tmp_path / "cache") + SMALL_ENCODER
    args[2:2] = ["--config", "configs/ddp.yaml"]
    args += [
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "2",
        "--model.init_args.lr_scaling",
        "linear",
    ]
    args += ["--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "1"]
    args += ["--trainer.callbacks+=tests.helpers.RecordSampledClips"]
    done = subprocess.run([*LAUNCHERS[launcher], "fit", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "peak learning rates multiplied by 0.0625" in done.stdout + done.stderr  # 8 x 2 / 256
    assert len(list((tmp_path / "cache").iterdir())) == 1
    assert [p.name for p in root.rglob("checkpoints")] == ["checkpoints"]
    assert (root / "checkpoints" / "last.ckpt").is_file()
    (metrics,) = root.rglob("metrics.csv")
    losses = [float(r["train/loss"]) for r in csv.DictReader(metrics.open()) if r.get("train/loss")]
    assert losses and all(math.isfinite(x) for x in losses)
    # each rank samples its own fixed share of the clips, reshuffled every epoch
    ranks = [json.loads((root / f"sampled_rank{r}.json").read_text()) for r in (0, 1)]
    for epoch in range(2):
        zero, one = (set(rank[epoch]) for rank in ranks)
        assert len(zero) == len(one) == 24 and not zero & one  # 48 training clips
        assert zero == set(ranks[0][0]) and one == set(ranks[1][0])
    assert ranks[0][0] != ranks[0][1] and ranks[1][0] != ranks[1][1]


def test_too_few_clips_per_process_is_one_line_of_error_not_a_silent_exit(tmp_path, tiny_data):
    root = tmp_path / "run"
    args = tiny_args("pretrain", root, tiny_data, tmp_path / "cache") + SMALL_ENCODER
    args[2:2] = ["--config", "configs/ddp.yaml"]
    args[args.index("--data.init_args.batch_size") + 1] = "32"  # 48 clips: 24 per process
    args += ["--trainer.accelerator", "cpu", "--trainer.devices", "2"]
    done = subprocess.run(
        [*LAUNCHERS["lightning"], "fit", *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0
    assert "has 24 usable clips per process (2 processes), fewer than one batch of 32" in done.stderr
    assert not (root / "checkpoints" / "last.ckpt").exists()


def test_two_process_evaluation_counts_every_clip_once(pretrained, tiny_data, tmp_path):
    rows = list(csv.DictReader(tiny_data.open()))
    for split in ("val", "test"):  # odd counts: a padding sampler would repeat one clip
        rows.remove(next(r for r in rows if r["split"] == split))
    manifest = tmp_path / "odd.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "filename": str(tiny_data.parent / r["filename"])} for r in rows)
    counts = {s: sum(r["split"] == s for r in rows) for s in ("val", "test")}
    assert counts == {"val": 23, "test": 23}
    root = tmp_path / "probe"
    args = tiny_args("probe", root, manifest, pretrained / "cache")
    args[2:2] = ["--config", "configs/ddp.yaml"]
    args += ["--model.init_args.encoder_checkpoint", str(pretrained / "pretrain/checkpoints/last.ckpt")]
    args += ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.max_epochs", "1"]
    args += ["--trainer.check_val_every_n_epoch", "1"]
    run = [*LAUNCHERS["lightning"], "fit", *args]
    done = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run[len(LAUNCHERS["lightning"])] = "test"
    done = subprocess.run(
        run + ["--ckpt_path", str(root / "checkpoints/last.ckpt")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for split, n in counts.items():
        with (root / f"confusion_{split}.csv").open() as f:
            table = list(csv.reader(f))
        assert sum(int(x) for row in table[1:] for x in row[1:]) == n


def two_nodes(run: Path, tiny_data: Path, node_args: list[list[str]]) -> list[str]:
    """Pretrain one step on two single-process "nodes" on this machine, started by torchrun, each
    with its own extra arguments; the nodes' stderr."""
    from tests.losses.test_ntxent_ddp import free_port

    args = tiny_args("pretrain", run, tiny_data, run / "cache") + SMALL_ENCODER
    args[2:2] = ["--config", "configs/ddp.yaml"]
    args += ["--trainer.accelerator", "cpu", "--trainer.num_nodes", "2", "--trainer.devices", "1"]
    args += ["--trainer.max_steps", "1", "--trainer.limit_val_batches", "0"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1"]
    launch += ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    nodes = [
        subprocess.Popen(
            [*launch, "--node_rank", str(k), "-m", "ser_ssl.cli", "fit", *args, *node_args[k]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in (0, 1)
    ]
    out = [node.communicate(timeout=300) for node in nodes]
    for node, (_, err) in zip(nodes, out, strict=True):
        assert node.returncode == 0, err[-3000:]
    return [err for _, err in out]


def test_with_a_shared_cache_only_the_first_of_two_nodes_builds_it(tmp_path, tiny_data):
    """One cache folder for both nodes."""
    shared = ["--data.init_args.cache_per_node", "false"]
    first, second = two_nodes(tmp_path, tiny_data, [shared, shared])
    assert "caching log-mel" in first and "caching log-mel" not in second
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_each_node_caches_only_its_processes_training_clips(tmp_path, tiny_data):
    """A cache folder per node: each holds its process's share and the normalisation sample."""
    two_nodes(
        tmp_path,
        tiny_data,
        [
            ["--data.init_args.cache_dir", str(tmp_path / f"cache{k}"), "--data.init_args.norm_clips", "8"]
            for k in (0, 1)
        ],
    )
    with open(tiny_data) as f:
        split_of = {
            str((tiny_data.parent / row["filename"]).resolve()): row["split"] for row in csv.DictReader(f)
        }
    train = {p for p, split in split_of.items() if split == "train"}
    cached = []
    for k in (0, 1):
        (index,) = (tmp_path / f"cache{k}").rglob("index.json")
        cached.append({c["path"] for c in json.loads(index.read_text())["clips"]})
    assert all(set(split_of) - train <= paths for paths in cached)  # evaluation clips: all of them
    node_train = [paths & train for paths in cached]
    assert node_train[0] | node_train[1] == train  # 48 clips, 24 per process
    assert all(24 <= len(paths) <= 24 + 8 for paths in node_train)
    assert len(node_train[0] & node_train[1]) <= 8  # shared: only the normalisation sample
