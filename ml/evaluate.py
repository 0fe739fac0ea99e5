"""Metrics, reports, calibration and abstention."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless servers / CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402


@torch.inference_mode()
def predict_logits(
    model: nn.Module, dataset: Dataset, batch_size: int = 32, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [N, C], targets [N]) over the dataset in order, model in eval mode."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    outs, targets = [], []
    for x, y in loader:
        outs.append(model(x.to(device)).float().cpu())
        targets.append(torch.as_tensor(y))
    if not outs:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(outs), torch.cat(targets)


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, k: int = 1) -> float:
    """Share of images whose true class is among the k highest logits (per image, not per batch)."""
    if len(targets) == 0:
        return float("nan")
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return float((top == targets[:, None]).any(dim=1).float().mean())


def classification_report_table(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]
) -> list[dict[str, Any]]:
    """Rows per class (precision, recall, f1, support) then accuracy, macro avg, weighted avg.

    Same definitions as sklearn's classification_report with zero_division=0. The accuracy row
    has only f1 (= accuracy) and support, like sklearn's text layout.
    """
    yt = np.asarray(y_true, dtype=np.int64)
    yp = np.asarray(y_pred, dtype=np.int64)
    rows: list[dict[str, Any]] = []
    precs, recs, f1s, sups = [], [], [], []
    for i, name in enumerate(labels):
        tp = int(np.sum((yp == i) & (yt == i)))
        pred_pos = int(np.sum(yp == i))
        support = int(np.sum(yt == i))
        p = tp / pred_pos if pred_pos else 0.0
        r = tp / support if support else 0.0
        f = 2 * p * r / (p + r) if (p + r) else 0.0
        precs.append(p)
        recs.append(r)
        f1s.append(f)
        sups.append(support)
        rows.append({"label": name, "precision": p, "recall": r, "f1-score": f, "support": support})
    total = int(sum(sups))
    acc = float(np.mean(yt == yp)) if len(yt) else 0.0
    rows.append({"label": "accuracy", "precision": None, "recall": None, "f1-score": acc, "support": total})
    w = np.asarray(sups, dtype=np.float64) / total if total else np.zeros(len(sups))
    rows.append(
        {
            "label": "macro avg",
            "precision": float(np.mean(precs)),
            "recall": float(np.mean(recs)),
            "f1-score": float(np.mean(f1s)),
            "support": total,
        }
    )
    rows.append(
        {
            "label": "weighted avg",
            "precision": float(np.dot(w, precs)),
            "recall": float(np.dot(w, recs)),
            "f1-score": float(np.dot(w, f1s)),
            "support": total,
        }
    )
    return rows


def write_report_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["label", "precision", "recall", "f1-score", "support"])
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else (f"{v:.6f}" if isinstance(v, float) else v)) for k, v in r.items()})


def report_markdown(rows: list[dict[str, Any]], digits: int = 2) -> str:
    """Markdown table in the row order/layout of sklearn's classification_report."""

    def fmt(v: Any) -> str:
        return "" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))

    lines = ["| | precision | recall | f1-score | support |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        if r["label"] == "accuracy":
            lines.append("| | | | | |")
        lines.append(
            f"| {r['label']} | {fmt(r['precision'])} | {fmt(r['recall'])} | {fmt(r['f1-score'])} | {r['support']} |"
        )
    return "\n".join(lines) + "\n"


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n: int) -> np.ndarray:
    cm = np.zeros((n, n), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        cm[int(t), int(p)] += 1
    return cm


def confusion_matrix_png(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str], path: str | Path
) -> np.ndarray:
    cm = confusion_matrix(y_true, y_pred, len(labels))
    size = max(4.0, 0.5 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if cm[i, j]:
                colour = "black" if cm[i, j] < cm.max() / 2 else "white"
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=colour)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return cm


def training_curves_png(history: Sequence[dict[str, Any]], path: str | Path) -> None:
    epochs = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("loss", a1), ("acc", a2)):
        for split in ("train", "val"):
            vals = [h.get(f"{split}_{key}") for h in history]
            if any(v is not None for v in vals):
                ax.plot(epochs, [np.nan if v is None else v for v in vals], marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- calibration


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 15) -> float:
    """Weighted mean |accuracy - confidence| over equal-width confidence bins (top-1)."""
    conf, pred = probs.max(dim=1)
    correct = (pred == targets).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    ece = torch.zeros(())
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.float().mean() * (correct[in_bin].mean() - conf[in_bin].mean()).abs()
    return float(ece)


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, max_iter: int = 100) -> float:
    """Temperature T>0 minimising validation NLL of softmax(logits / T).

    Optimised in log-space so T stays positive; returns 1.0 if there is nothing to fit.
    """
    if len(targets) == 0:
        return 1.0
    # clone: logits may be inference-mode tensors, which autograd refuses to record
    logits, targets = logits.detach().float().clone(), targets.detach().clone()
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    t = float(log_t.detach().exp())
    # keep away from degenerate extremes when val is tiny / perfectly separable
    return float(min(max(t, 0.05), 20.0))


def choose_abstain_threshold(
    probs: torch.Tensor, targets: torch.Tensor, target_precision: float = 0.9, min_coverage: float = 0.0
) -> float:
    """Confidence threshold below which the site should say "not sure".

    Rule: the lowest top-1 probability t (among the observed validation confidences) such that
    the predictions with confidence >= t are correct at least `target_precision` of the time
    and cover at least `min_coverage` of the images. Lowest = answer as often as possible while
    honouring the precision target. If no threshold reaches the target, return the highest
    observed confidence (answer only when at least as sure as the surest validation case).
    Returns 0.0 on an empty validation set (never abstain; nothing to base it on).
    """
    if len(targets) == 0:
        return 0.0
    conf, pred = probs.max(dim=1)
    correct = (pred == targets).float()
    order = torch.argsort(conf, descending=True)
    conf_sorted = conf[order]
    cum_prec = torch.cumsum(correct[order], 0) / torch.arange(1, len(order) + 1)
    coverage = torch.arange(1, len(order) + 1) / len(order)
    best: float | None = None
    for i in range(len(order)):
        # only cut between distinct confidences: ties are accepted/rejected together
        if i + 1 < len(order) and conf_sorted[i + 1] == conf_sorted[i]:
            continue
        if cum_prec[i] >= target_precision and coverage[i] >= min_coverage:
            best = float(conf_sorted[i])
    return best if best is not None else float(conf_sorted[0])


def answered_share(probs: torch.Tensor, targets: torch.Tensor, threshold: float) -> tuple[float, float]:
    """(coverage, precision): the share of images whose top-1 probability reaches ``threshold``, and the
    share of those answered correctly (nan when none is answered)."""
    conf, pred = probs.max(dim=1)
    answered = conf >= threshold
    if len(targets) == 0 or not answered.any():
        return 0.0, float("nan")
    return float(answered.float().mean()), float((pred[answered] == targets[answered]).float().mean())


def risk_coverage_png(probs: torch.Tensor, targets: torch.Tensor, threshold: float, path: str | Path) -> None:
    """Error rate of the answered images against the share answered, most confident first; the chosen
    abstain threshold marked."""
    conf, pred = probs.max(dim=1)
    order = torch.argsort(conf, descending=True)
    wrong = (pred[order] != targets[order]).float()
    n = torch.arange(1, len(order) + 1)
    coverage, risk = (n / len(order)).numpy(), (torch.cumsum(wrong, 0) / n).numpy()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(coverage, risk)
    cov, prec = answered_share(probs, targets, threshold)
    if cov > 0:
        ax.plot([cov], [1 - prec], "o", label=f"threshold {threshold:.2f}: {100 * cov:.0f}% answered")
        ax.legend()
    ax.set_xlabel("coverage (share answered)")
    ax.set_ylabel("risk (error rate of the answered)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max(0.05, float(risk.max()) * 1.05))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate_predictions(
    logits: torch.Tensor,
    targets: torch.Tensor,
    labels: Sequence[str],
    out_dir: str | Path,
    temperature: float = 1.0,
    history: Sequence[dict[str, Any]] | None = None,
    prefix: str = "",
) -> dict[str, Any]:
    """Write report.csv/.md, confusion_matrix.png (+curves.png) and metrics.json; return metrics."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    probs_raw = logits.softmax(1)
    probs_cal = (logits / temperature).softmax(1)
    y_pred = logits.argmax(1).tolist()
    rows = classification_report_table(targets.tolist(), y_pred, labels)
    write_report_csv(rows, out / f"{prefix}report.csv")
    (out / f"{prefix}report.md").write_text(report_markdown(rows), encoding="utf-8")
    confusion_matrix_png(targets.tolist(), y_pred, labels, out / f"{prefix}confusion_matrix.png")
    if history:
        training_curves_png(history, out / f"{prefix}curves.png")
    metrics = {
        "n": len(targets),
        "top1": topk_accuracy(logits, targets, 1),
        "top3": topk_accuracy(logits, targets, 3),
        "top5": topk_accuracy(logits, targets, 5),
        "macro_f1": rows[-2]["f1-score"],
        "ece_uncalibrated": expected_calibration_error(probs_raw, targets) if len(targets) else None,
        "ece_calibrated": expected_calibration_error(probs_cal, targets) if len(targets) else None,
        "temperature": temperature,
    }
    (out / f"{prefix}metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics


def evaluate_bundle(
    bundle_dir: str | Path, records: Sequence[Any], out_dir: str | Path | None = None
) -> dict[str, Any]:
    """Score a saved bundle on labelled records (the bundle's eval preset, calibrated temperature)."""
    from ml.bundle import load_bundle
    from ml.data import ImageManifestDataset
    from ml.presets import ClassificationPresetEval

    bundle = load_bundle(bundle_dir)
    model = bundle.load_model()
    c2i = {lab: i for i, lab in enumerate(bundle.labels)}
    ds = ImageManifestDataset(records, c2i, ClassificationPresetEval.from_config(bundle.preprocess))
    logits, targets = predict_logits(model, ds)
    return evaluate_predictions(logits, targets, bundle.labels, out_dir or bundle.path, bundle.temperature)
