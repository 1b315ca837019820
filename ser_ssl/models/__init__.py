"""Encoders and the projection head (docs/method.md §5); plain ``nn.Module``s with no Lightning."""

from ser_ssl.models.config import records_config
from ser_ssl.models.encoders import CRNN, LogMelStats, ResNet18, VGGLike
from ser_ssl.models.heads import ProjectionHead
from ser_ssl.models.paper import PaperCRNN, PaperResNet18, PaperVGG

__all__ = [
    "CRNN",
    "LogMelStats",
    "PaperCRNN",
    "PaperResNet18",
    "PaperVGG",
    "ProjectionHead",
    "ResNet18",
    "VGGLike",
    "records_config",
]
