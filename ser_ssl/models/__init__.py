"""Encoders and the projection head (docs/method.md §5); plain ``nn.Module``s with no Lightning."""

from ser_ssl.models.encoders import CRNN, LogMelStats, ResNet18, VGGLike
from ser_ssl.models.heads import ProjectionHead

__all__ = ["CRNN", "LogMelStats", "ProjectionHead", "ResNet18", "VGGLike"]
