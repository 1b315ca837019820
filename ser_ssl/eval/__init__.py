"""Evaluation math: embedding geometry diagnostics and the kNN monitor (pure torch, no Lightning)."""

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

__all__ = [
    "alignment",
    "dimension_std",
    "dimension_std_ratio",
    "effective_rank",
    "is_collapsed",
    "knn_accuracy",
    "knn_predict",
    "positive_negative_cosine",
    "uniformity",
]
