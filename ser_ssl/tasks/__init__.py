"""LightningModules: SimCLR pretraining and the downstream LinearProbe / FineTune tasks."""

from ser_ssl.tasks.checkpoint import load_pretrained
from ser_ssl.tasks.downstream import FineTune, LinearProbe
from ser_ssl.tasks.simclr import SimCLR

__all__ = ["FineTune", "LinearProbe", "SimCLR", "load_pretrained"]
