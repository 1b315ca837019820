"""LightningModules: SimCLR pretraining, the downstream LinearProbe / FineTune tasks, Embed (export)."""

from ser_ssl.tasks.checkpoint import load_pretrained
from ser_ssl.tasks.downstream import FineTune, LinearProbe
from ser_ssl.tasks.embed import Embed
from ser_ssl.tasks.simclr import SimCLR
from ser_ssl.tasks.sync import SyncBatchNorm

__all__ = ["Embed", "FineTune", "LinearProbe", "SimCLR", "SyncBatchNorm", "load_pretrained"]
