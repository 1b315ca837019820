"""Evaluation math: embedding geometry diagnostics, the kNN monitor and clip-level classification
metrics (pure torch/torchmetrics, no Lightning)."""

from ser_ssl.eval.geometry import (
    alignment,
    dimension_std,
    dimension_std_ratio,
    effective_rank,
    is_collapsed,
    positive_negative_cosine,
    uniformity,
)
from ser_ssl.eval.knn import knn_accuracy, knn_predict
from ser_ssl.eval.metrics import (
    clip_metrics,
    per_class_metric,
    per_class_rows,
    write_confusion_csv,
    write_per_class_csv,
)

__all__ = [
    "alignment",
    "clip_metrics",
    "dimension_std",
    "dimension_std_ratio",
    "effective_rank",
    "is_collapsed",
    "knn_accuracy",
    "knn_predict",
    "per_class_metric",
    "per_class_rows",
    "positive_negative_cosine",
    "uniformity",
    "write_confusion_csv",
    "write_per_class_csv",
]
