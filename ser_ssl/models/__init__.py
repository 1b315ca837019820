"""Encoders and the projection head (METHOD §5); plain ``nn.Module``s with no Lightning."""

from ser_ssl.models.encoders import CRNN, ResNet18, VGGLike
from ser_ssl.models.heads import ProjectionHead

__all__ = ["CRNN", "ProjectionHead", "ResNet18", "VGGLike"]
