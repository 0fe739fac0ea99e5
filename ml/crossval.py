"""Grouped k-fold cross-validation: every photo scored once, by a model that never saw it.

``cross_validate`` knows nothing about models: ``fit`` gets the training folds' records and returns a
scorer; the scorer gets the held-out fold's records with their labels blanked, so every choice a recipe
makes (epoch, temperature, threshold) can only be made on data inside the training folds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from ml.data import ManifestRecord, grouped_folds
from ml.evaluate import topk_accuracy

Scorer = Callable[[list[ManifestRecord]], torch.Tensor]


@dataclass
class CrossValidation:
    folds: list[int]  # the fold of each record
    logits: torch.Tensor  # out-of-fold logits, one row per record, in the records' order
    targets: torch.Tensor
    labels: list[str]
    seconds: float

    def fold_metrics(self) -> list[dict[str, float]]:
        rows = []
        for f in sorted(set(self.folds)):
            idx = torch.tensor([i for i, g in enumerate(self.folds) if g == f])
            rows.append(
                {
                    "fold": f,
                    "n": len(idx),
                    "top1": topk_accuracy(self.logits[idx], self.targets[idx], 1),
                    "top3": topk_accuracy(self.logits[idx], self.targets[idx], min(3, len(self.labels))),
                }
            )
        return rows

    def summary(self) -> dict[str, Any]:
        """Mean and spread (population standard deviation) of each figure across folds."""
        per_fold = self.fold_metrics()
        out: dict[str, Any] = {"folds": len(per_fold), "n": len(self.targets), "seconds": round(self.seconds, 1)}
        for key in ("top1", "top3"):
            values = [row[key] for row in per_fold]
            out[f"{key}_mean"] = statistics.fmean(values)
            out[f"{key}_std"] = statistics.pstdev(values)
        return out


def cross_validate(
    records: Sequence[ManifestRecord],
    labels: Sequence[str],
    fit: Callable[[list[ManifestRecord]], Scorer],
    k: int = 5,
    seed: int = 0,
) -> CrossValidation:
    """Out-of-fold logits of ``fit``'s recipe over ``records`` (groups must already be set)."""
    start = time.perf_counter()
    c2i = {label: i for i, label in enumerate(labels)}
    folds = grouped_folds(records, k=k, seed=seed)
    logits = torch.zeros(len(records), len(labels))
    for f in range(k):
        train = [r for r, g in zip(records, folds, strict=True) if g != f]
        held_out = [i for i, g in enumerate(folds) if g == f]
        scorer = fit(train)
        logits[held_out] = scorer([replace(records[i], label="") for i in held_out]).float()
    targets = torch.tensor([c2i[r.label] for r in records])
    return CrossValidation(folds, logits, targets, list(labels), time.perf_counter() - start)
