import csv
import logging
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ser_ssl.callbacks import EmbeddingDiagnostics, KNNMonitor, PatchThroughput

N_MELS, FRAMES, CLIPS = 4, 6, 8
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers"),
    pytest.mark.filterwarnings("ignore:You have overridden `on_after_batch_transfer`"),  # as SimCLR does
]
DIAG_KEYS = [
    "diag/pos_cos",
    "diag/neg_cos",
    "diag/alignment",
    "diag/uniformity",
    "diag/z_std",
    "diag/z_std_ratio",
    "diag/h_std_ratio",
    "diag/z_effective_rank",
    "diag/h_effective_rank",
]


class TwoViews(Dataset):
    """SimCLR-shaped items: two noisy views of a random patch per clip."""

    def __init__(self, n: int = 32) -> None:
        self.base = torch.randn(n, 1, N_MELS, FRAMES)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = self.base[i]
        return {"views": torch.stack([x + 0.1 * torch.randn_like(x), x + 0.1 * torch.randn_like(x)])}


class ToyDataModule(L.LightningDataModule):
    def __init__(self, knn: bool = True) -> None:
        super().__init__()
        self.knn = knn

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TwoViews(), batch_size=CLIPS, drop_last=True)

    def knn_dataloaders(self) -> tuple[DataLoader, DataLoader] | None:
        if not self.knn:
            return None
        g = torch.Generator().manual_seed(0)
        centres = 5 * torch.randn(3, 1, N_MELS, FRAMES, generator=g)

        def labelled(n: int) -> DataLoader:
            y = torch.arange(3).repeat(n)
            x = centres[y] + 0.1 * torch.randn(len(y), 1, N_MELS, FRAMES, generator=g)
            return DataLoader([{"patch": a, "target": b} for a, b in zip(x, y, strict=True)], batch_size=7)

        return labelled(10), labelled(4)


class ToySimCLR(L.LightningModule):
    """The contract the callbacks rely on: ``encoder``, ``prepare_input`` and a dict from training_step."""

    def __init__(self, constant_z: bool = False) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(N_MELS * FRAMES, 16), nn.BatchNorm1d(16))
        self.head = nn.Linear(16, 8)
        self.constant_z = constant_z
        self.prepared = 0

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        self.prepared += 1
        return x.float()

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return {"x": batch["views"].flatten(0, 1)}

    def training_step(self, batch: dict, batch_idx: int):
        h = self.encoder(batch["x"])
        z = F.normalize(self.head(h), dim=1)
        loss = z.pow(3).sum()  # any differentiable loss will do
        self.log("train/loss", loss)
        if self.constant_z:
            z = F.normalize(torch.ones_like(z), dim=1)
        n = batch["x"].shape[0] // 2
        return {"loss": loss, "z": z.view(n, 2, -1).detach(), "h": h.view(n, 2, -1).detach()}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(
    tmp_path: Path,
    model: L.LightningModule,
    callbacks: list,
    max_steps: int = 4,
    datamodule: L.LightningDataModule | None = None,
    **kwargs,
) -> L.Trainer:
    kwargs = {"enable_checkpointing": False, **kwargs}
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=CSVLogger(tmp_path),
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **kwargs,
    )
    trainer.fit(model, datamodule=datamodule or ToyDataModule())
    return trainer


def read_metrics(trainer: L.Trainer) -> list[dict[str, str]]:
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def values(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key)]


def test_diagnostics_and_knn_are_logged_and_finite(tmp_path, caplog):
    model = ToySimCLR()
    with caplog.at_level(logging.WARNING, logger="ser_ssl"):
        trainer = fit(tmp_path, model, [EmbeddingDiagnostics(every_n_steps=1), KNNMonitor(k=5)])
    rows = read_metrics(trainer)
    for key in DIAG_KEYS:
        logged = values(rows, key)
        assert len(logged) == 4 and all(math.isfinite(v) for v in logged), key
    assert all(-1 <= v <= 1 for v in values(rows, "diag/pos_cos") + values(rows, "diag/neg_cos"))
    assert all(0 < v <= 8 for v in values(rows, "diag/z_effective_rank"))
    (bal_acc,) = values(rows, "knn/bal_acc")
    (acc,) = values(rows, "knn/acc")
    assert bal_acc > 0.9 and acc > 0.9  # well-separated clusters survive a random linear encoder
    assert "knn/bal_acc" in trainer.callback_metrics
    assert not [r for r in caplog.records if r.name == "ser_ssl"]  # a healthy batch raises no alarm


def test_diagnostics_follow_every_n_steps_and_skip_outputs_without_embeddings(tmp_path):
    rows = read_metrics(fit(tmp_path / "a", ToySimCLR(), [EmbeddingDiagnostics(every_n_steps=2)]))
    steps = [int(r["step"]) for r in rows if r.get("diag/pos_cos")]
    assert steps == [1, 3]  # global steps 2 and 4, each written once; the CSV's step counts from 0
    loss_steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert loss_steps == [0, 1, 2, 3]  # the diagnostics share the step of the loss they go with

    class LossOnly(ToySimCLR):
        def training_step(self, x, batch_idx):
            return super().training_step(x, batch_idx)["loss"]

    rows = read_metrics(fit(tmp_path / "b", LossOnly(), [EmbeddingDiagnostics(every_n_steps=1)]))
    assert not any(key.startswith("diag/") for key in rows[0])


def test_collapse_warning_fires_once_per_n_checks(tmp_path, caplog):
    diag = EmbeddingDiagnostics(every_n_steps=1, warn_every_n_checks=3)
    with caplog.at_level(logging.WARNING, logger="ser_ssl"):
        fit(tmp_path, ToySimCLR(constant_z=True), [diag], max_steps=4)
    warnings = [r for r in caplog.records if r.name == "ser_ssl" and r.levelno == logging.WARNING]
    assert len(warnings) == 2  # checks 1 and 4
    message = warnings[0].getMessage()
    assert "collapse at step 1 (z)" in message and "z_std_ratio=0.0000" in message


def test_knn_monitor_uses_eval_mode_and_restores_each_submodule(tmp_path):
    model = ToySimCLR()
    trainer = fit(tmp_path, model, [], max_steps=1)
    monitor = KNNMonitor(k=5)
    monitor.on_fit_start(trainer, model)
    model.train()
    model.encoder[2].eval()  # e.g. a frozen BatchNorm: must stay in eval mode afterwards
    modes = []
    model.encoder.register_forward_pre_hook(lambda m, _: modes.append(m.training))
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    model.prepared = 0
    result = monitor.evaluate(trainer, model)
    assert set(result) == {"acc", "bal_acc"}
    assert len(modes) == 7 and not any(modes)  # 5 bank + 2 query batches, all in eval mode
    assert model.prepared == 7  # inputs standardised by the module before the encoder
    assert model.encoder.training and model.encoder[1].training and not model.encoder[2].training
    after = model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics untouched


def test_knn_monitor_is_off_without_a_labelled_bank(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="ser_ssl"):
        trainer = fit(tmp_path, ToySimCLR(), [KNNMonitor()], datamodule=ToyDataModule(knn=False))
    infos = [r for r in caplog.records if r.name == "ser_ssl" and "KNNMonitor is off" in r.getMessage()]
    assert len(infos) == 1
    assert not any(k.startswith("knn/") for k in trainer.callback_metrics)


def test_checkpoints_can_be_selected_by_knn_balanced_accuracy(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="knn/bal_acc", mode="max")
    trainer = fit(
        tmp_path,
        ToySimCLR(),
        [KNNMonitor(k=5), checkpoint],
        max_steps=-1,
        max_epochs=2,
        enable_checkpointing=True,
        precision="bf16-mixed",  # the kNN forward runs under the trainer's precision
    )
    assert trainer.current_epoch == 2
    assert checkpoint.best_model_score is not None and 0.0 <= float(checkpoint.best_model_score) <= 1.0
    assert Path(checkpoint.best_model_path).is_file()


def test_patch_throughput_counts_patches_of_simclr_batches(tmp_path):
    rows = read_metrics(fit(tmp_path, ToySimCLR(), [PatchThroughput(window_size=2)]))
    assert values(rows, "train/samples")[-1] == 4 * 2 * CLIPS  # 2 views per clip after batch transfer
    rates = values(rows, "train/device/samples_per_sec")
    assert len(rates) == 3 and all(r > 0 for r in rates)  # from the second of 4 logging steps on
