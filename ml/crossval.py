"""Grouped k-fold cross-validation: every photo scored once, by a model that never saw it.

``cross_validate`` knows nothing about models: ``fit`` gets the training folds' records and returns a
scorer; the scorer gets the held-out fold's records with their labels blanked, so every choice a recipe
makes (epoch, temperature, threshold) can only be made on data inside the training folds.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ml.data import ManifestRecord, grouped_folds
from ml.evaluate import (
    answered_share,
    choose_abstain_threshold,
    evaluate_predictions,
    expected_calibration_error,
    fit_temperature,
    risk_coverage_png,
    topk_accuracy,
)

Scorer = Callable[[list[ManifestRecord]], torch.Tensor]


@dataclass
class CrossValidation:
    folds: list[int]  # the fold of each record
    logits: torch.Tensor  # out-of-fold logits, one row per record, in the records' order
    targets: torch.Tensor
    labels: list[str]
    seconds: float

    def fold_rows(self) -> dict[int, torch.Tensor]:
        """The row indices of each fold, by fold number."""
        return {f: torch.tensor([i for i, g in enumerate(self.folds) if g == f]) for f in sorted(set(self.folds))}

    def fold_metrics(self) -> list[dict[str, float]]:
        rows = []
        for f, idx in self.fold_rows().items():
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
        """Mean and spread (population standard deviation) of each figure across folds.

        No wall time here: these become the bundle's metrics, and its version hash must not change between
        two identical runs."""
        per_fold = self.fold_metrics()
        out: dict[str, Any] = {"folds": len(per_fold), "n": len(self.targets)}
        for key in ("top1", "top3"):
            values = [row[key] for row in per_fold]
            out[f"{key}_mean"] = statistics.fmean(values)
            out[f"{key}_std"] = statistics.pstdev(values)
        return out

    def calibration(self, target_precision: float = 0.9) -> tuple[float, float]:
        """(temperature, abstain threshold) fitted on the out-of-fold predictions: honest without a held-out
        split, because every prediction comes from a model that never saw the photo."""
        temperature = fit_temperature(self.logits, self.targets)
        threshold = choose_abstain_threshold((self.logits / temperature).softmax(1), self.targets, target_precision)
        return temperature, threshold

    def crossfitted_probs(self) -> torch.Tensor:
        """Each fold's probabilities at the temperature fitted on the other folds' out-of-fold logits: the
        calibration figure whose temperature never saw the photos it scores."""
        probs = torch.zeros_like(self.logits)
        for f, scored in self.fold_rows().items():
            rest = torch.tensor([i for i, g in enumerate(self.folds) if g != f], dtype=torch.long)
            temperature = fit_temperature(self.logits[rest], self.targets[rest])
            probs[scored] = (self.logits[scored] / temperature).softmax(1)
        return probs

    def report(self, out_dir: str | Path, temperature: float, threshold: float) -> dict[str, Any]:
        """Metrics of the out-of-fold predictions (mean and spread over folds, coverage at the threshold) and
        the report files (per-class report, confusion matrix, risk-coverage plot) in ``out_dir``."""
        metrics = evaluate_predictions(self.logits, self.targets, self.labels, out_dir, temperature)
        probs = (self.logits / temperature).softmax(1)
        coverage, precision = answered_share(probs, self.targets, threshold)
        risk_coverage_png(probs, self.targets, threshold, Path(out_dir) / "risk_coverage.png")
        fold_rows = list(self.fold_rows().values())
        fold_ece = [expected_calibration_error(probs[rows], self.targets[rows]) for rows in fold_rows]
        fold_coverage = [answered_share(probs[rows], self.targets[rows], threshold)[0] for rows in fold_rows]
        metrics.update(self.summary())
        metrics.update(
            {
                "evaluated_on": f"out-of-fold ({len(set(self.folds))}-fold grouped cross-validation)",
                "abstain_threshold": threshold,
                "coverage": coverage,
                "answered_precision": precision,
                "coverage_std": statistics.pstdev(fold_coverage),
                "ece_calibrated_std": statistics.pstdev(fold_ece),
                "ece_crossfitted": expected_calibration_error(self.crossfitted_probs(), self.targets),
            }
        )
        (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        return metrics


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
        if not held_out:  # fewer groups than folds
            continue
        scorer = fit(train)
        logits[held_out] = scorer([replace(records[i], label="") for i in held_out]).float()
    targets = torch.tensor([c2i[r.label] for r in records])
    return CrossValidation(folds, logits, targets, list(labels), time.perf_counter() - start)
