"""Data sources, the feature cache, patch datasets and the LightningDataModules."""

from ser_ssl.data.datamodules import AudioDataModule, LabeledDataModule, SSLDataModule
from ser_ssl.data.manifest import Clip, read_manifest
from ser_ssl.data.sources import (
    ESC50,
    FSD50K,
    CSVManifest,
    DataSource,
    FolderSource,
    FSDnoisy18k,
    UrbanSound8K,
)
from ser_ssl.data.synthetic import SyntheticSource

__all__ = [
    "ESC50",
    "FSD50K",
    "AudioDataModule",
    "CSVManifest",
    "Clip",
    "DataSource",
    "FSDnoisy18k",
    "FolderSource",
    "LabeledDataModule",
    "SSLDataModule",
    "SyntheticSource",
    "UrbanSound8K",
    "read_manifest",
]
