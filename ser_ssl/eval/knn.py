"""Weighted k-nearest-neighbour classification of embeddings: the kNN monitor of InstDisc / solo-learn.

A cheap, training-free readout of representation quality: each query votes with its ``k`` most similar
bank embeddings, weighted by ``exp(cos / T)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_accuracy


@torch.no_grad()
def knn_predict(
    query: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores ``[Q, C]`` of the queries ``[Q, D]`` from a labelled bank ``[M, D]``.

    Cosine similarity (both sides are L2-normalised here), top ``k`` neighbours (``k`` is clamped to
    the bank size), votes weighted by ``exp(sim / T)``. Each row is normalised to sum to 1; that equals
    the raw votes up to a per-query factor, so the arg-max is the same, and lets us compute the
    weights as ``exp((sim - max sim) / T)``, which cannot overflow at small ``T``. Queries are
    processed ``chunk_size`` at a time, so memory stays at ``chunk_size x M`` similarities.
    """
    if bank.shape[0] == 0:
        raise ValueError("the kNN bank is empty")
    if bank_labels.shape != (bank.shape[0],):
        raise ValueError(f"bank_labels must be [M] = [{bank.shape[0]}], got {tuple(bank_labels.shape)}")
    bank = F.normalize(bank.float(), dim=1)
    labels = bank_labels.to(bank.device, torch.long)
    k = max(1, min(k, bank.shape[0]))
    scores = []
    for chunk in F.normalize(query.float(), dim=1).split(chunk_size):
        sim, idx = (chunk @ bank.T).topk(k, dim=1)
        weights = ((sim - sim[:, :1]) / temperature).exp()  # topk is sorted: column 0 is the max
        votes = torch.zeros(chunk.shape[0], num_classes, device=bank.device)
        votes.scatter_add_(1, labels[idx], weights)
        scores.append(votes / votes.sum(dim=1, keepdim=True))
    return torch.cat(scores) if scores else torch.zeros(0, num_classes, device=bank.device)


def knn_accuracy(
    query: torch.Tensor,
    query_labels: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.07,
) -> dict[str, float]:
    """kNN accuracy of the queries: ``{"acc": plain, "bal_acc": balanced}``.

    Balanced accuracy is torchmetrics' macro-averaged multiclass accuracy (mean per-class recall);
    classes with neither queries nor predictions are left out of the mean.
    """
    preds = knn_predict(query, bank, bank_labels, num_classes, k, temperature).argmax(dim=1)
    target = query_labels.to(preds.device, torch.long)
    acc = multiclass_accuracy(preds, target, num_classes, average="micro")
    bal_acc = multiclass_accuracy(preds, target, num_classes, average="macro")
    return {"acc": float(acc), "bal_acc": float(bal_acc)}
