"""Data sources, the feature cache, patch datasets and the LightningDataModules."""

from ser_ssl.data.datamodules import AudioDataModule, LabeledDataModule, SSLDataModule

__all__ = ["AudioDataModule", "LabeledDataModule", "SSLDataModule"]
