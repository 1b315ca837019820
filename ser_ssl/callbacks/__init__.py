"""Lightning callbacks: training diagnostics of the embeddings and the kNN monitor."""

from ser_ssl.callbacks.diagnostics import EmbeddingDiagnostics, KNNMonitor, patches_in_batch

__all__ = ["EmbeddingDiagnostics", "KNNMonitor", "patches_in_batch"]
