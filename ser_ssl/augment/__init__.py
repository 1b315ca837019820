"""Mix-back and spectrogram augmentations, batched on the training device."""

from ser_ssl.augment.compose import Augmentations, Stage
from ser_ssl.augment.mixback import MixBack, mix_back
from ser_ssl.augment.transforms import (
    BatchTransform,
    Compression,
    GaussianBlur,
    GaussianNoise,
    RandomResizedCrop,
    RandomShift,
    SpecAugment,
)

__all__ = [
    "Augmentations",
    "BatchTransform",
    "Compression",
    "GaussianBlur",
    "GaussianNoise",
    "MixBack",
    "RandomResizedCrop",
    "RandomShift",
    "SpecAugment",
    "Stage",
    "mix_back",
]
