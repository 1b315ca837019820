"""Lightning callbacks: training diagnostics of the embeddings, the kNN monitor, throughput, and dashboard
images."""

from ser_ssl.callbacks.diagnostics import EmbeddingDiagnostics, KNNMonitor
from ser_ssl.callbacks.images import ClassificationImages, EmbeddingTable, ViewImages, log_figure
from ser_ssl.callbacks.throughput import PatchThroughput, patches_in_batch

__all__ = [
    "ClassificationImages",
    "EmbeddingDiagnostics",
    "EmbeddingTable",
    "KNNMonitor",
    "PatchThroughput",
    "ViewImages",
    "log_figure",
    "patches_in_batch",
]
