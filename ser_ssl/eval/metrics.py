"""Clip-level classification metrics (docs/method.md §7).

A clip's prediction is the mean of its windows' probabilities (softmax for single-label, sigmoid
for multi-label data, averaged by :func:`ser_ssl.inference.clip_mean`); every metric is computed on
clips, never on windows. Pure torch/torchmetrics, no Lightning, so export and evaluation scripts
can reuse it.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MultilabelAUROC,
    MultilabelAveragePrecision,
)

__all__ = [
    "clip_metrics",
    "per_class_metric",
    "per_class_rows",
    "write_confusion_csv",
    "write_per_class_csv",
]


def clip_metrics(num_classes: int, multilabel: bool = False) -> MetricCollection:
    """The summary metrics logged per stage.

    Single-label: balanced accuracy (``bal_acc``, macro recall, the paper's metric), accuracy
    (``acc``) and macro F1 (``f1``). Multi-label: macro mean average precision (``mAP``) and macro
    ROC-AUC (``roc_auc``), the usual FSD50K/AudioSet metrics.
    """
    if multilabel:
        return MetricCollection(
            {
                "mAP": MultilabelAveragePrecision(num_classes, average="macro"),
                "roc_auc": MultilabelAUROC(num_classes, average="macro"),
            }
        )
    return MetricCollection(
        {
            "bal_acc": MulticlassAccuracy(num_classes, average="macro"),
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
        }
    )


def per_class_metric(num_classes: int, multilabel: bool = False) -> Metric:
    """What the per-class report is computed from: the confusion matrix (single-label; rows true
    class, columns predicted) or the average precision of each class (multi-label)."""
    if multilabel:
        return MultilabelAveragePrecision(num_classes, average="none")
    return MulticlassConfusionMatrix(num_classes)


def per_class_rows(value: torch.Tensor, classes: Sequence[str], multilabel: bool = False) -> list[dict]:
    """One row per class from :func:`per_class_metric`'s value: support and accuracy (recall) from
    a confusion matrix, or the average precision of each class."""
    if multilabel:
        return [{"class": c, "ap": float(v)} for c, v in zip(classes, value.tolist(), strict=True)]
    value = value.long()
    support = value.sum(dim=1)
    correct = value.diagonal()
    return [
        {
            "class": c,
            "support": int(n),
            "accuracy": float(k) / int(n) if int(n) else float("nan"),
        }
        for c, n, k in zip(classes, support.tolist(), correct.tolist(), strict=True)
    ]


def write_confusion_csv(path: str | Path, matrix: torch.Tensor, classes: Sequence[str]) -> Path:
    """Write a confusion matrix as CSV: one row per true class, one column per predicted class."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, matrix.long().tolist(), strict=True):
            writer.writerow([name, *row])
    return path


def write_per_class_csv(path: str | Path, rows: list[dict]) -> Path:
    """Write :func:`per_class_rows` as CSV (one line per class)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["class"])
        writer.writeheader()
        writer.writerows(rows)
    return path
