"""Real-photo benchmark: the classifier's grouped 5-fold cross-validation, the gate, and speed figures.

    .venv/bin/python bench/ml_benchmark.py [--shared-dir ../shared/data] [--variants a,b] [--quick]

The classifier is scored by grouped k-fold cross-validation over the shared exterior photos (near-duplicates
never straddle folds; every photo is scored once, by a model that never saw it). The recipe
(ml.train.classifier_recipe) trains for a fixed number of epochs, so it makes no choice on the scored fold;
temperature and abstain threshold are fitted on the out-of-fold predictions, as the deployed bundle's are.
``--variants`` cross-validates other recipes (VARIANTS below) and prints each beside its ms per photo.
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.data import ManifestRecord, group_near_duplicates, split_grouped  # noqa: E402
from ml.gate import GATE_LABELS, build_zero_shot_gate, hybrid_gate_from_trained  # noqa: E402
from ml.models import create_model, default_preprocess  # noqa: E402
from ml.predict import Predictor  # noqa: E402
from ml.train import TrainConfig, classifier_recipe, cross_validate_and_fit, fit_bundle, fit_bundle_cv  # noqa: E402

SEED = 0
GATE_EPOCHS_HEAD = 8  # the gate's three views separate easily: its head alone is enough


def load_rows(shared: Path) -> list[dict[str, str]]:
    root = shared / "car-photos"
    with (root / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["path"] = str(root / "images" / r["file"])
    return rows


# Recipes compared by cross-validation (--variants); every one trains for a fixed number of epochs.
VARIANTS: dict[str, Callable[[], TrainConfig]] = {
    "lite0-crop224-linear": lambda: replace(classifier_recipe("efficientnet_lite0"), frame_size=None),
    "lite0-frame240x320-linear": lambda: replace(classifier_recipe("efficientnet_lite0"), frame_size=(240, 320)),
    "lite2-frame260x347-linear": lambda: replace(classifier_recipe("efficientnet_lite2"), frame_size=(260, 347)),
}


def cv_line(metrics: dict) -> str:
    return (f"top-1 {100 * metrics['top1_mean']:.1f} ± {100 * metrics['top1_std']:.1f}%  "
            f"top-3 {100 * metrics['top3_mean']:.1f} ± {100 * metrics['top3_std']:.1f}%  "
            f"coverage at {100 * metrics['target_precision']:.0f}% precision {100 * metrics['coverage']:.1f}% "
            f"(± {100 * metrics['coverage_std']:.1f} over folds; "
            f"answered right {100 * metrics['answered_precision']:.1f}%)  "
            f"ECE {100 * metrics['ece_uncalibrated']:.1f}% -> {100 * metrics['ece_calibrated']:.1f}% "
            f"(folds' spread ± {100 * metrics['ece_calibrated_std']:.1f}; T {metrics['temperature']:.2f})")


def time_forward(model: nn.Module, size: int | tuple[int, int], runs: int) -> float:
    """Median ms per image at batch 1, fp32, after two warm-up passes."""
    height, width = (size, size) if isinstance(size, int) else size
    model = model.eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, height, width).to(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        for _ in range(runs):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def gate_accuracy(pred: Predictor, recs: list[ManifestRecord]) -> float:
    hits = 0
    for i in range(0, len(recs), 32):
        chunk = recs[i : i + 32]
        for r, p in zip(chunk, pred.predict([r.path for r in chunk], top_k=1), strict=True):
            hits += p[0].label == r.label
    return hits / len(recs)


def main() -> int:
    t_total = time.perf_counter()
    repo = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared-dir", default=str(repo.parent / "shared" / "data"))
    ap.add_argument("--arch", default="efficientnet_lite0")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--variants", default="", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--quick", action="store_true", help="few epochs: smoke test, figures not meaningful")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(message)s")
    shared = Path(a.shared_dir)
    if not (shared / "car-photos" / "manifest.csv").is_file():
        print(f"shared data not found under {shared}", file=sys.stderr)
        return 2
    rows = load_rows(shared)
    out = Path(tempfile.mkdtemp(prefix="ml-bench-"))
    print(f"arch {a.arch} | work dir {out} | quick={a.quick} | torch threads {torch.get_num_threads()}")

    # ---------------- classifier: make + model on exterior photos, grouped k-fold cross-validation
    # other-car photos show a rival's car: no make+model label, but their view label is still right
    ext = [ManifestRecord(Path(r["path"]), f"{r['make']} {r['model']}") for r in rows
           if r["view"] == "exterior" and r["subject"] == "labelled-model"]
    ext = group_near_duplicates(ext)
    labels = sorted({r.label for r in ext})
    n_groups = len({r.group for r in ext})
    print(f"classifier data: {len(ext)} photos, {n_groups} near-duplicate groups, {len(labels)} classes; "
          f"{a.folds}-fold grouped cross-validation (seed {SEED})")
    cfg = classifier_recipe(a.arch)
    if a.quick:
        cfg = replace(cfg, epochs_finetune=1, cached_views=0)
    t = time.perf_counter()
    clf_dir = out / "classifier"
    _, _, metrics = fit_bundle_cv(cfg, ext, clf_dir, labels=labels, k=a.folds)
    t_ours = time.perf_counter() - t
    variant_rows = []
    for name in filter(None, a.variants.split(",")):
        vcfg = VARIANTS[name]()
        t = time.perf_counter()
        cv, model = cross_validate_and_fit(vcfg, ext, labels, k=a.folds, work_dir=out / f"variant-{name}")
        temperature, threshold = cv.calibration()
        vmetrics = cv.report(out / f"variant-{name}" / "report", temperature, threshold)
        vmetrics["target_precision"] = 0.9
        variant_rows.append((name, vmetrics, time.perf_counter() - t,
                             time_forward(model, vcfg.preprocess().input_size, 5 if a.quick else 20)))

    # ---------------- gate: exterior / interior / other
    views = [ManifestRecord(Path(r["path"]), r["view"]) for r in rows]
    views = group_near_duplicates(views)
    vsplit = split_grouped(views, 0.2, 0.2, SEED)
    gate0_dir = build_zero_shot_gate(out / "gate0", arch="efficientnet_lite0")
    gp = Predictor.from_bundle(gate0_dir, num_threads=2)
    zs_all, zs_test = gate_accuracy(gp, views), gate_accuracy(gp, vsplit.test)
    gcfg = TrainConfig(arch="efficientnet_lite0", seed=SEED, epochs_head=1 if a.quick else GATE_EPOCHS_HEAD,
                       epochs_finetune=0)
    t = time.perf_counter()
    _, _, gmetrics = fit_bundle(gcfg, vsplit, out / "gate1", kind="gate", labels=GATE_LABELS, progress=False)
    # The deployed gate: the trained view head joined with the ImageNet head (ml.gate, mode hybrid_gate).
    hybrid_dir = hybrid_gate_from_trained(out / "gate1", out / "gate-hybrid")
    t_gate = time.perf_counter() - t
    hp = Predictor.from_bundle(hybrid_dir, num_threads=2)
    hybrid_test = gate_accuracy(hp, vsplit.test)
    hybrid_by_view = {
        view: gate_accuracy(hp, [r for r in vsplit.test if r.label == view]) if any(
            r.label == view for r in vsplit.test) else float("nan")
        for view in GATE_LABELS
    }

    # ---------------- determinism and speed of the deployed pair (hybrid gate + trained classifier)
    t = time.perf_counter()
    pred = Predictor.from_bundle(clf_dir, num_threads=2)
    load_clf_s = time.perf_counter() - t
    t = time.perf_counter()
    gate_pred = Predictor.from_bundle(hybrid_dir, num_threads=2)
    load_gate_s = time.perf_counter() - t
    test_paths = [r.path for r in ext[::5]]
    first = [p[0].label for p in pred.predict(test_paths, top_k=1)]
    again = [pred.predict_image(p, top_k=1)[0].label for p in test_paths]  # batch 1, other order of work
    carsite_changed = sum(x != y for x, y in zip(first, again, strict=True))

    runs = 5 if a.quick else 20
    speed = {
        "gate hybrid efficientnet_lite0 (deployed)": time_forward(
            gate_pred.model, gate_pred.bundle.preprocess.input_size, runs),
        f"classifier {a.arch} (trained bundle)": time_forward(pred.model, pred.bundle.preprocess.input_size, runs),
    }
    for arch in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        if arch != a.arch:
            speed[f"classifier {arch} (ImageNet weights, new head)"] = time_forward(
                create_model(arch, len(labels), "imagenet"), default_preprocess(arch).crop_size, runs)
    speed["classifier resnet50 (RANDOM init, timing only)"] = time_forward(
        create_model("resnet50", len(labels), None), 224, runs)
    gate_pred.warmup()
    pred.warmup()
    pair_ms = []
    for path in test_paths[: 10 if a.quick else len(test_paths)]:
        t = time.perf_counter()
        gate_pred.predict_image(path, top_k=1)  # each decodes the file itself, as the site does
        pred.predict_image(path, top_k=3)
        pair_ms.append(1000 * (time.perf_counter() - t))

    # ---------------- report
    print()
    print(f"=== make+model classifier, {metrics['folds']}-fold grouped cross-validation over {metrics['n']} photos ===")
    print(f"recipe {cfg.arch}, input {cfg.preprocess().input_size} (whole frame={cfg.frame_size is not None}), "
          f"tail blocks {cfg.tail_blocks}, {cfg.epochs_finetune} epochs at lr {cfg.lr_finetune:g}, "
          f"{cfg.cached_views} augmented views + plain + mirrored per photo")
    print(f"out-of-fold, mean ± spread over folds: {cv_line(metrics)}")
    print(f"abstain threshold {metrics['abstain_threshold']:.3f}; CV + final training wall time {t_ours:.0f}s")
    print("per-class report over all out-of-fold predictions:")
    print((clf_dir / "report.md").read_text(encoding="utf-8"))
    print(f"answers that changed on a second pass (batch 1 vs batched): {carsite_changed}/{len(test_paths)}")
    for name, vmetrics, seconds, ms in variant_rows:
        print(f"variant {name}: {cv_line(vmetrics)}  | {seconds:.0f}s | {ms:.1f} ms/photo forward")
    print()
    print("=== gate (exterior/interior/other vs view labels) ===")
    print("zero-shot lite0 (ImageNet groups; its group weights were picked on these same photos, so optimistic): "
          f"{100 * zs_all:.1f}% on all {len(views)} photos, "
          f"{100 * zs_test:.1f}% on the view test split ({len(vsplit.test)} photos)")
    print(f"trained lite0 gate ({gcfg.epochs_head} head epochs, {t_gate:.0f}s): {100 * gmetrics['top1']:.1f}% "
          f"on the view test split (macro-F1 {gmetrics['macro_f1']:.3f})")
    per_view = ", ".join(f"{view} {100 * acc:.0f}%" for view, acc in hybrid_by_view.items())
    print(f"hybrid gate (trained head + ImageNet car check, deployed): {100 * hybrid_test:.1f}% on the view test "
          f"split (recall: {per_view})")
    print()
    print("=== speed (CPU, fp32, 2 threads) ===")
    print(f"bundle load (Predictor.from_bundle): classifier {1000 * load_clf_s:.0f} ms, "
          f"gate {1000 * load_gate_s:.0f} ms (target <= 3000 ms)")
    for k, v in speed.items():
        print(f"forward batch 1: {k}: {v:.1f} ms/image")
    print(f"deployed gate + classifier per photo (decode + preprocess + both models, batch 1): "
          f"median {statistics.median(pair_ms):.1f} ms, max {max(pair_ms):.1f} ms over {len(pair_ms)} photos "
          f"(target <= 100 ms on one quiet core)")
    print(f"total wall time: {time.perf_counter() - t_total:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
