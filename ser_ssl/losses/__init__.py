"""Contrastive losses."""

from ser_ssl.losses.ntxent import NTXentLoss

__all__ = ["NTXentLoss"]
