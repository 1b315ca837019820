"""The downstream protocol: clip-level metric wiring on hand-computed cases, the per-class reports,
multi-label heads, and the linear probe's embedding memo (each patch embedded once per fit)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ser_ssl.data import LabeledDataModule
from ser_ssl.errors import ConfigError
from ser_ssl.models import VGGLike
from ser_ssl.tasks import FineTune, LinearProbe
from ser_ssl.tasks.downstream import EmbeddingMemo
from tests.conftest import quiet_trainer

FRAMES = 4


class MeanOverTime(nn.Module):
    """A stub encoder: each band's mean over time, so a patch carries its own embedding."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.embed_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 3))


def windows(vectors: list[list[float]]) -> torch.Tensor:
    """Patches ``[W, 1, C, FRAMES]`` whose embedding (MeanOverTime) is each given vector."""
    v = torch.tensor(vectors, dtype=torch.float64).float()
    return v[:, None, :, None].expand(-1, 1, -1, FRAMES).contiguous()


def eval_batch(clips: list[tuple[list[list[float]], object]], transform) -> dict[str, torch.Tensor]:
    """A batch as ``ClipWindowsDataset`` makes it, the windows' logits being ``transform(probabilities)``."""
    patches = [windows([transform(torch.tensor(p)).tolist() for p in ws]) for ws, _ in clips]
    return {
        "patches": torch.cat(patches),
        "clip": torch.repeat_interleave(torch.arange(len(clips)), torch.tensor([len(p) for p in patches])),
        "target": torch.tensor([t for _, t in clips]),
    }


class FakeData(L.LightningDataModule):
    """Ready-made evaluation batches and the attributes the tasks read from a data module."""

    def __init__(self, batches: list[dict], classes: list[str], multilabel: bool = False) -> None:
        super().__init__()
        self.batches, self.classes, self.multilabel = batches, classes, multilabel

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.batches, batch_size=None)


def identity_head(model, n: int) -> None:
    with torch.no_grad():
        model.classifier[-1].weight.copy_(torch.eye(n))
        model.classifier[-1].bias.zero_()


def run_test(model, data: FakeData, root: Path) -> dict[str, float]:
    trainer = quiet_trainer(default_root_dir=root)
    return trainer.test(model, datamodule=data, verbose=False)[0]


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


# Clip 0's windows vote 2:1 for class 1, but their mean softmax picks class 0 (the true one): the
# metrics must come from the clip mean, not from window votes.
SINGLE = [
    ([[0.38, 0.60, 0.02], [0.38, 0.60, 0.02], [0.90, 0.05, 0.05]], 0),  # mean [.553 .417 .03] -> 0
    ([[0.10, 0.80, 0.10]], 1),  # -> 1
    ([[0.70, 0.20, 0.10]], 1),  # -> 0, wrong
    ([[0.20, 0.20, 0.60], [0.10, 0.10, 0.80]], 2),  # -> 2
    ([[0.10, 0.60, 0.30]], 2),  # -> 1, wrong
]


def test_single_label_clip_metrics_confusion_and_per_class_reports(tmp_path):
    classes = ["dog", "rain", "siren"]
    batches = [eval_batch(SINGLE[:3], torch.log), eval_batch(SINGLE[3:], torch.log)]  # softmax(log p) = p
    model = FineTune(encoder=MeanOverTime(3), n_mels=3)
    model.build_head(classes, multilabel=False)
    identity_head(model, 3)
    metrics = run_test(model, FakeData(batches, classes), tmp_path)
    # rows true, columns predicted: [[1,0,0],[1,1,0],[0,1,1]]; recalls 1, 1/2, 1/2
    assert metrics["test/bal_acc"] == pytest.approx(2 / 3)
    assert metrics["test/acc"] == pytest.approx(3 / 5)
    # F1 per class: 2/3 (P 1/2, R 1), 1/2 (P 1/2, R 1/2), 2/3 (P 1, R 1/2)
    assert metrics["test/f1"] == pytest.approx(11 / 18)
    assert read_csv(tmp_path / "confusion_test.csv") == [
        ["true \\ predicted", *classes],
        ["dog", "1", "0", "0"],
        ["rain", "1", "1", "0"],
        ["siren", "0", "1", "1"],
    ]
    rows = read_csv(tmp_path / "per_class_test.csv")
    assert rows[0] == ["class", "support", "accuracy"]
    assert [(r[0], int(r[1]), float(r[2])) for r in rows[1:]] == [
        ("dog", 1, 1.0),
        ("rain", 2, 0.5),
        ("siren", 2, 0.5),
    ]


# Label 0 ranks the clips 0.7(+) 0.5(-) 0.4(+) 0.2(-): AP (1 + 2/3) / 2 = 5/6, AUC 3/4.
# Label 1 ranks both positives (0.7, 0.7) above the negatives (0.6, 0.3): AP 1, AUC 1.
MULTI = [
    ([[0.9, 0.2], [0.5, 0.4]], [1, 0]),  # clip mean [0.7, 0.3]
    ([[0.2, 0.7]], [0, 1]),
    ([[0.6, 0.9], [0.2, 0.5]], [1, 1]),  # clip mean [0.4, 0.7]
    ([[0.5, 0.6]], [0, 0]),
]


def test_multilabel_clip_mean_of_sigmoids_gives_map_and_roc_auc(tmp_path):
    batches = [eval_batch(MULTI[:2], torch.logit), eval_batch(MULTI[2:], torch.logit)]  # sigmoid(logit p) = p
    model = FineTune(encoder=MeanOverTime(2), n_mels=2)
    model.build_head(["bark", "dog"], multilabel=True)
    identity_head(model, 2)
    metrics = run_test(model, FakeData(batches, ["bark", "dog"], multilabel=True), tmp_path)
    assert set(metrics) == {"test/mAP", "test/roc_auc"}
    assert metrics["test/mAP"] == pytest.approx((5 / 6 + 1) / 2)
    assert metrics["test/roc_auc"] == pytest.approx((3 / 4 + 1) / 2)
    rows = read_csv(tmp_path / "per_class_test.csv")
    assert rows[0] == ["class", "ap"] and [r[0] for r in rows[1:]] == ["bark", "dog"]
    assert [float(r[1]) for r in rows[1:]] == pytest.approx([5 / 6, 1.0])
    assert not (tmp_path / "confusion_test.csv").exists()


def test_multilabel_training_uses_binary_cross_entropy_and_the_head_follows_the_data():
    model = FineTune(encoder=MeanOverTime(2), n_mels=2)
    model.build_head(["a", "b"], multilabel=True)
    batch = {"patch": windows([[0.5, -1.0], [2.0, 0.0]]), "target": torch.tensor([[1, 0], [1, 1]])}
    logits = model.classifier(batch["patch"].mean(dim=(1, 3)))
    expected = F.binary_cross_entropy_with_logits(logits, batch["target"].float())
    assert model.training_step(batch, 0).item() == pytest.approx(expected.item())

    class Trainer:
        datamodule = FakeData([], ["a", "b"], multilabel=False)

    model._trainer = Trainer()
    with pytest.raises(ConfigError, match="the model is multi-label but the data is single-label"):
        model.setup("test")
    Trainer.datamodule = FakeData([], ["a", "c"], multilabel=True)
    with pytest.raises(ConfigError, match=r"only in the model: \['b'\], only in the data: \['c'\]"):
        model.setup("test")
    model._trainer = None


def test_memo_embeds_each_new_key_once_and_grows():
    memo = EmbeddingMemo()
    calls = []

    def compute(x):
        def run(index):
            calls.append(index.tolist())
            return x[index]

        return run

    x = torch.arange(4.0)[:, None].repeat(1, 3)
    rows, starts = torch.tensor([7, 7, 8, 7]), torch.tensor([0, 50, 0, 0])  # (7, 0) twice in the batch
    out = memo.lookup(rows, starts, compute(x))
    assert calls == [[0, 1, 2]] and torch.equal(out, x[[0, 1, 2, 0]])
    out = memo.lookup(torch.tensor([8, 9]), torch.tensor([0, 0]), compute(x + 10))
    assert calls[1] == [1] and torch.equal(out, torch.stack([x[2], x[1] + 10]))
    many = torch.arange(600)
    memo.lookup(many + 100, many, lambda i: many[i, None].float().repeat(1, 3))  # past the first bank
    assert len(memo) == 604 and torch.equal(memo.lookup(torch.tensor([8]), torch.tensor([0]), None), x[[2]])


# --- the probe's cache on real (tiny) data ---------------------------------------------------------

SMALL = {"channels": [8, 16], "embed_dim": 32}


class Recorder(L.Callback):
    """Records every training patch's (row, start) and the memo's size at the end of each epoch."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, int]] = []
        self.memo_sizes: list[int] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.keys += list(zip(batch["row"].tolist(), batch["start"].tolist(), strict=True))

    def on_train_epoch_end(self, trainer, module):
        self.memo_sizes.append(len(module.memo) if module.memo is not None else 0)


def fit_probe(tiny_data, cache_dir, root, cache: bool, epochs: int = 3, hop: int | None = 50):
    L.seed_everything(0)
    probe = LinearProbe(encoder=VGGLike(**SMALL), cache_embeddings=cache, lr=0.1, optimizer="adamw")
    embedded = []
    probe.encoder.register_forward_hook(lambda m, args, out: embedded.append(len(args[0])))
    dm = LabeledDataModule(
        manifest=str(tiny_data), cache_dir=str(cache_dir), batch_size=8, num_workers=0, train_hop_frames=hop
    )
    recorder = Recorder()
    trainer = quiet_trainer(
        max_epochs=epochs,
        limit_val_batches=0,
        callbacks=[recorder],
        default_root_dir=root,
    )
    trainer.fit(probe, datamodule=dm)
    return probe, dm, recorder, sum(embedded)


@pytest.fixture(scope="module")
def probe_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("probe_cache")


def test_cached_probe_embeds_each_patch_once_and_matches_the_uncached_probe(tiny_data, probe_cache, tmp_path):
    cached, dm, rec, n_cached = fit_probe(tiny_data, probe_cache, tmp_path, cache=True)
    distinct = set(rec.keys)
    assert len(rec.keys) == 3 * 48 and len(distinct) < len(rec.keys)  # patches repeat across epochs
    assert n_cached == len(distinct) == rec.memo_sizes[-1]  # the encoder saw each distinct patch once
    assert rec.memo_sizes[0] < rec.memo_sizes[-1]  # filled lazily, not precomputed
    assert all(start % 50 == 0 or start == dm.cache.lengths[row] - 101 for row, start in distinct)
    assert cached.memo is None  # released after the fit
    # no checkpoint: the input statistics are the training split's
    assert bool(cached.normalizer.fitted) and torch.allclose(
        cached.normalizer.mean.flatten(), dm.norm_mean.float()
    )
    plain, _, rec_plain, n_plain = fit_probe(tiny_data, probe_cache, tmp_path, cache=False)
    assert rec_plain.keys == rec.keys  # the same patches in the same order
    assert n_plain == len(rec.keys)
    for a, b in zip(
        cached.classifier.state_dict().values(), plain.classifier.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-5)


def test_probe_warns_and_embeds_every_batch_without_a_patch_grid(tiny_data, probe_cache, tmp_path):
    with pytest.warns(UserWarning, match="train_hop_frames"):
        probe, _, rec, n = fit_probe(tiny_data, probe_cache, tmp_path, cache=True, epochs=1, hop=None)
    assert rec.memo_sizes == [0] and n == len(rec.keys) == 48


def test_probe_test_reports_use_the_class_names_and_agree_with_bal_acc(tiny_data, probe_cache, tmp_path):
    probe, dm, _, _ = fit_probe(tiny_data, probe_cache, tmp_path, cache=True, epochs=1)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    metrics = trainer.test(probe, datamodule=dm, verbose=False)[0]
    assert {"test/bal_acc", "test/acc", "test/f1"} <= set(metrics)
    rows = read_csv(tmp_path / "confusion_test.csv")
    assert rows[0][1:] == dm.classes and [r[0] for r in rows[1:]] == dm.classes
    total = sum(int(v) for r in rows[1:] for v in r[1:])
    assert total == len(dm.split_indices("test"))
    per_class = read_csv(tmp_path / "per_class_test.csv")[1:]
    recall = [float(r[2]) for r in per_class if not math.isnan(float(r[2]))]
    assert sum(recall) / len(recall) == pytest.approx(metrics["test/bal_acc"], abs=1e-6)


# --- multi-label training end to end on a tiny CSV manifest -----------------------------------------

MULTI_SPLITS = {
    "train": ["a;b", "b;c", "a", "c", "a;c", "b", "a;b", "c"],
    "val": ["a;b", "c", "b"],
    "test": ["a;b", "c", "b", "a;c"],  # every class has positives and negatives: AP and AUC are defined
}


@pytest.fixture(scope="module")
def multilabel_data(tmp_path_factory) -> tuple[Path, Path]:
    """A multi-label CSV manifest of short noise clips and a cache folder for it."""
    from tests.data.test_sources import wav, write_csv

    root = tmp_path_factory.mktemp("multilabel")
    rows = []
    for split, labels in MULTI_SPLITS.items():
        for k, label in enumerate(labels):
            name = f"{split}{k}.wav"
            wav(root / name, seed=len(rows))
            rows.append([name, label, split])
    return write_csv(root / "m.csv", rows, ["filename", "label", "split"]), root / "cache"


@pytest.mark.parametrize("task", [LinearProbe, FineTune])
def test_multilabel_downstream_trains_and_reports_map_and_roc_auc(task, multilabel_data, tmp_path):
    manifest, cache = multilabel_data
    L.seed_everything(0)
    dm = LabeledDataModule(
        manifest=str(manifest),
        cache_dir=str(cache),
        batch_size=4,
        num_workers=0,
        patch_frames=16,
        train_hop_frames=8,
    )
    model = task(encoder=VGGLike(**SMALL), lr=0.01, optimizer="adamw")
    trainer = quiet_trainer(
        max_epochs=1,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    assert model.multilabel and model.classifier[-1].out_features == 3 and dm.classes == ["a", "b", "c"]
    assert {"val/mAP", "val/roc_auc"} <= set(trainer.callback_metrics)
    metrics = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert set(metrics) == {"test/mAP", "test/roc_auc"}
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in metrics.values())
    rows = read_csv(tmp_path / "per_class_test.csv")
    assert [r[0] for r in rows[1:]] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("test_fold", "fix"), [(None, "pretrain on the training split only"), (3, "once per fold")]
)
def test_the_overlap_refusal_says_what_to_do_for_the_kind_of_data(tmp_path, test_fold, fix):
    from types import SimpleNamespace

    from ser_ssl.data import Clip
    from ser_ssl.files import clip_ids
    from ser_ssl.tasks.checkpoint import Pretrained

    path = tmp_path / "a.wav"
    path.write_bytes(b"")
    probe = LinearProbe(encoder=VGGLike(channels=[4], embed_dim=8))
    probe.pretraining = Pretrained(None, {}, pretrained_on=frozenset(clip_ids([path])))
    dm = SimpleNamespace(
        clips=[Clip(path=path, labels=("x",), split="test")],
        split_indices=lambda split: [0] if split == "test" else [],
        test_split="test",
        data_source=SimpleNamespace(test_fold=test_fold),
    )
    with pytest.raises(ConfigError, match=f"1 of the 1 clips of split 'test'.*{fix}"):
        probe._check_overlap(dm)
