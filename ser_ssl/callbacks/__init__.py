"""Lightning callbacks: training diagnostics of the embeddings, the kNN monitor, and dashboard images."""

from ser_ssl.callbacks.diagnostics import EmbeddingDiagnostics, KNNMonitor, patches_in_batch
from ser_ssl.callbacks.images import ClassificationImages, EmbeddingTable, ViewImages, log_figure

__all__ = [
    "ClassificationImages",
    "EmbeddingDiagnostics",
    "EmbeddingTable",
    "KNNMonitor",
    "ViewImages",
    "log_figure",
    "patches_in_batch",
]
