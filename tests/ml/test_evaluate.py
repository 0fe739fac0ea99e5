from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import classification_report, precision_recall_fscore_support

from ml.evaluate import (
    choose_abstain_threshold,
    classification_report_table,
    confusion_matrix_png,
    evaluate_predictions,
    expected_calibration_error,
    fit_temperature,
    topk_accuracy,
    training_curves_png,
)


def test_report_matches_sklearn(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 4, 200))
    y_pred[y_pred == 3] = 2  # class 3 never predicted: zero_division path
    labels = ["a", "b", "c", "d"]
    rows = {r["label"]: r for r in classification_report_table(y_true, y_pred, labels)}
    ref = classification_report(y_true, y_pred, target_names=labels, output_dict=True, zero_division=0)
    for name in labels + ["macro avg", "weighted avg"]:
        for key in ("precision", "recall", "f1-score", "support"):
            assert np.isclose(rows[name][key], ref[name][key]), (name, key)
    assert np.isclose(rows["accuracy"]["f1-score"], ref["accuracy"])
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2, 3], zero_division=0)
    assert np.allclose([rows[n]["recall"] for n in labels], r)
    assert list(rows)[-3:] == ["accuracy", "macro avg", "weighted avg"]


def test_topk_accuracy_is_per_image() -> None:
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [1.0, 2.0, 3.0]])
    targets = torch.tensor([0, 2, 0])
    assert np.isclose(topk_accuracy(logits, targets, 1), 1 / 3)
    assert np.isclose(topk_accuracy(logits, targets, 2), 2 / 3)
    assert topk_accuracy(logits, targets, 3) == 1.0


def _overconfident(n: int = 2000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, 5, (n,), generator=g)
    logits = torch.randn(n, 5, generator=g)
    logits[torch.arange(n), targets] += 1.5  # moderately separable...
    return logits * 4.0, targets  # ...but scaled up: over-confident


def test_temperature_scaling_lowers_ece() -> None:
    logits, targets = _overconfident()
    val, test = slice(0, 1000), slice(1000, 2000)
    t = fit_temperature(logits[val], targets[val])
    assert 2.0 < t < 8.0  # it should undo roughly the x4 scaling
    before = expected_calibration_error(logits[test].softmax(1), targets[test])
    after = expected_calibration_error((logits[test] / t).softmax(1), targets[test])
    assert after < before / 2


def test_abstain_threshold_meets_target_precision_on_val() -> None:
    logits, targets = _overconfident(seed=1)
    probs = (logits / 4).softmax(1)
    thr = choose_abstain_threshold(probs, targets, target_precision=0.9)
    conf, pred = probs.max(1)
    kept = conf >= thr
    assert kept.any()
    assert (pred[kept] == targets[kept]).float().mean() >= 0.9
    # lowest such threshold: accepting the next less-confident image breaks the target
    below = conf[conf < thr]
    if len(below):
        t2 = below.max()
        kept2 = conf >= t2
        assert (pred[kept2] == targets[kept2]).float().mean() < 0.9


def test_evaluate_predictions_writes_reports(tmp_path: Path) -> None:
    logits, targets = _overconfident(200)
    labels = list("abcde")
    history = [
        {"epoch": i, "train_loss": 1 / i, "val_loss": 1.2 / i, "train_acc": 0.1 * i, "val_acc": None}
        for i in range(1, 4)
    ]
    m = evaluate_predictions(logits, targets, labels, tmp_path, temperature=4.0, history=history)
    for name in ("report.csv", "report.md", "confusion_matrix.png", "curves.png", "metrics.json"):
        assert (tmp_path / name).stat().st_size > 0
    with (tmp_path / "report.csv").open() as fh:
        assert [r["label"] for r in csv.DictReader(fh)][-3:] == ["accuracy", "macro avg", "weighted avg"]
    assert m["ece_calibrated"] < m["ece_uncalibrated"]
    assert "| weighted avg |" in (tmp_path / "report.md").read_text()


def test_plots(tmp_path: Path) -> None:
    cm = confusion_matrix_png([0, 1, 1], [0, 1, 0], ["x", "y"], tmp_path / "cm.png")
    assert cm.tolist() == [[1, 0], [1, 1]]
    training_curves_png([{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5}], tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0
