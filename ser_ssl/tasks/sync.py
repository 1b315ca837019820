"""SyncBatchNorm for DDP on any device, as a Lightning ``LayerSync`` plugin (docs/method.md §6)."""

from __future__ import annotations

from lightning.pytorch.plugins.layer_sync import TorchSyncBatchNorm
from torch import nn

from ser_ssl.models.norm import AllReduceBatchNorm, convert_batchnorm, revert_batchnorm


class SyncBatchNorm(TorchSyncBatchNorm):
    """Normalise with the statistics of the global batch, so N processes train like one big batch.

    On GPUs this is Lightning's ``sync_batchnorm`` (torch's fused ``SyncBatchNorm``); elsewhere,
    where torch's version refuses to run, every BatchNorm becomes an :class:`AllReduceBatchNorm`.
    Select it with ``trainer.plugins`` (see ``configs/ddp.yaml``); it does nothing in one process.
    """

    def apply(self, model: nn.Module) -> nn.Module:
        trainer = getattr(model, "_trainer", None)
        device = trainer.strategy.root_device if trainer is not None else next(model.parameters()).device
        return super().apply(model) if device.type == "cuda" else convert_batchnorm(model)

    def revert(self, model: nn.Module) -> nn.Module:
        if any(isinstance(m, AllReduceBatchNorm) for m in model.modules()):
            return revert_batchnorm(model)
        return super().revert(model)
