"""A few SimCLR optimizer steps on fixed data, in one process or under DDP; saves the final weights.

Run by ``tests/test_ddp_equivalence.py`` as ``python -m tests.ddp_steps OUT DEVICES BATCH SYNC_BN``.
Every step sees the same global batch whatever the number of processes: nothing is shuffled, rank
``r`` of ``D`` gets clips ``r, r + D, ...`` and one process with ``D`` times the batch gets the same
clips in another order, which neither NT-Xent nor BatchNorm can tell apart.
"""

from __future__ import annotations

import sys

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ser_ssl.models import VGGLike
from ser_ssl.tasks import SimCLR, SyncBatchNorm

CLIPS, N_MELS, FRAMES, STEPS = 48, 16, 24, 3


class FixedViews(Dataset):
    """Two fixed random views per clip, the same in every process."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(1)
        self.views = torch.randn(CLIPS, 2, 1, N_MELS, FRAMES, generator=g)

    def __len__(self) -> int:
        return CLIPS

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"views": self.views[i]}


class Interleaved(L.LightningDataModule):
    """Clips ``rank, rank + world_size, ...`` of :class:`FixedViews`, in order."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        return DataLoader(Subset(FixedViews(), range(rank, CLIPS, world)), batch_size=self.batch_size)


def main(out: str, devices: int, batch_size: int, sync_bn: bool) -> None:
    L.seed_everything(0)
    model = SimCLR(
        encoder=VGGLike(channels=[4, 8], embed_dim=16),
        mixback=None,
        augment=[],  # random views would differ between the two set-ups
        proj_hidden_dim=16,
        proj_dim=8,
        n_mels=N_MELS,
        optimizer="sgd",
        lr=0.05,
        warmup_epochs=0,  # a warm-up in epochs spans other step counts in the two set-ups
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        plugins=[SyncBatchNorm()] if sync_bn else None,
        use_distributed_sampler=False,  # Lightning's would shuffle
        max_steps=STEPS,
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=Interleaved(batch_size))
    if trainer.is_global_zero:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1")
