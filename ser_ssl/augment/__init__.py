"""Mix-back and spectrogram augmentations, batched on the training device."""

from ser_ssl.augment.mixback import MixBack, mix_back
from ser_ssl.augment.transforms import GaussianNoise

__all__ = ["GaussianNoise", "MixBack", "mix_back"]
