"""Real-photo benchmark: original project's recipe vs carsite's, plus gate and speed figures.

    .venv/bin/python bench/ml_benchmark.py [--shared-dir ../shared/data] [--arch efficientnet_lite0] [--quick]

Everything runs on one fixed, seeded, group-aware split of the shared exterior photos; the test
part is only ever used for the final scores (temperature/threshold/early stopping use val).
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2 as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.data import ImageManifestDataset, ManifestRecord, group_near_duplicates, split_grouped  # noqa: E402
from ml.evaluate import predict_logits, topk_accuracy  # noqa: E402
from ml.gate import GATE_LABELS, build_zero_shot_gate  # noqa: E402
from ml.models import create_model, default_preprocess, head_parameters, set_backbone_trainable  # noqa: E402
from ml.predict import Predictor  # noqa: E402
from ml.presets import ClassificationPresetEval, ToRGB  # noqa: E402
from ml.train import TrainConfig, fit_bundle  # noqa: E402

SEED = 0


def load_rows(shared: Path) -> list[dict[str, str]]:
    root = shared / "car-photos"
    with (root / "manifest.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["subject"] == "labelled-model"]  # drop other-car
    for r in rows:
        r["path"] = str(root / "images" / r["file"])
    return rows


def original_recipe(split, labels, arch: str, epochs: int) -> dict[str, float]:
    """Frozen backbone + new linear head, Adam, the *training* augmentation at test time too,
    accuracy = mean of per-batch accuracies (as the original project computed it)."""
    torch.manual_seed(SEED)
    pre = default_preprocess(arch)
    random_tf = T.Compose([
        ToRGB(), T.PILToTensor(), T.RandomResizedCrop(pre.crop_size, antialias=True), T.RandomHorizontalFlip(),
        T.ToDtype(torch.float32, scale=True), T.Normalize(list(pre.mean), list(pre.std)),
    ])
    c2i = {lab: i for i, lab in enumerate(labels)}
    train_ds = ImageManifestDataset(split.train, c2i, random_tf, cache=True)
    test_ds = ImageManifestDataset(split.test, c2i, random_tf, cache=True)
    model = create_model(arch, len(labels), "imagenet")
    set_backbone_trainable(model, False)
    opt = torch.optim.Adam(head_parameters(model), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        for x, y in DataLoader(train_ds, batch_size=32, shuffle=True):
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
    model.eval()
    batch_accs, correct, n = [], 0, 0
    with torch.inference_mode():
        for x, y in DataLoader(test_ds, batch_size=32, shuffle=False):
            hit = (model(x).argmax(1) == y)
            batch_accs.append(float(hit.float().mean()))
            correct += int(hit.sum())
            n += len(y)
    det_logits, det_t = predict_logits(
        model, ImageManifestDataset(split.test, c2i, ClassificationPresetEval.from_config(pre))
    )
    return {
        "per_batch": sum(batch_accs) / len(batch_accs),
        "per_image": correct / n,
        "per_image_det_eval": topk_accuracy(det_logits, det_t, 1),
    }


def time_forward(model: nn.Module, size: int, runs: int) -> float:
    """Median ms per image at batch 1, fp32, after two warm-up passes."""
    model = model.eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, size, size).to(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        for _ in range(runs):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> int:
    t_total = time.perf_counter()
    repo = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared-dir", default=str(repo.parent / "shared" / "data"))
    ap.add_argument("--arch", default="efficientnet_lite0")
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
    print(f"arch {a.arch} | work dir {out} | quick={a.quick}")

    # ---------------- classifier: make + model on exterior photos
    ext = [ManifestRecord(Path(r["path"]), f"{r['make']} {r['model']}") for r in rows if r["view"] == "exterior"]
    ext = group_near_duplicates(ext)
    split = split_grouped(ext, 0.2, 0.2, SEED)
    labels = sorted({r.label for r in ext})
    n_groups = len({r.group for r in ext})
    print(f"classifier data: {len(ext)} photos, {n_groups} near-duplicate groups, {len(labels)} classes; "
          f"split {len(split.train)}/{len(split.val)}/{len(split.test)} (train/val/test, seed {SEED})")

    t = time.perf_counter()
    orig = original_recipe(split, labels, a.arch, epochs=2 if a.quick else 10)
    t_orig = time.perf_counter() - t

    cfg = TrainConfig(
        arch=a.arch, weights="imagenet", epochs_head=1 if a.quick else 6, epochs_finetune=1 if a.quick else 14,
        lr_head=3e-3, lr_finetune=5e-4, label_smoothing=0.1, warmup_epochs=1, batch_size=24, patience=6,
        seed=SEED, auto_augment="trivialaugment", min_scale=0.3, cache_images=True,
    )
    t = time.perf_counter()
    clf_dir = out / "classifier"
    _, result, metrics = fit_bundle(cfg, split, clf_dir, progress=False)
    t_ours = time.perf_counter() - t
    fin = [h for h in result.history if h["phase"] == "finetune"] or result.history
    ips = statistics.mean(h["images_per_s"] for h in fin)
    ips_head = statistics.mean(h["images_per_s"] for h in result.history if h["phase"] == "head")
    train_time = sum(h["epoch_time_s"] for h in result.history)
    wait_share = sum(h["data_wait_share"] * h["epoch_time_s"] for h in result.history) / train_time

    # ---------------- gate: exterior / interior / other
    views = [ManifestRecord(Path(r["path"]), r["view"]) for r in rows]
    views = group_near_duplicates(views)
    vsplit = split_grouped(views, 0.2, 0.2, SEED)
    gate0 = build_zero_shot_gate(out / "gate0", arch="efficientnet_lite0")
    gp = Predictor.from_bundle(gate0, num_threads=2)

    def gate_acc(pred: Predictor, recs: list[ManifestRecord]) -> float:
        hits = 0
        for i in range(0, len(recs), 32):
            chunk = recs[i : i + 32]
            for r, p in zip(chunk, pred.predict([r.path for r in chunk], top_k=1), strict=True):
                hits += p[0].label == r.label
        return hits / len(recs)

    zs_all, zs_test = gate_acc(gp, views), gate_acc(gp, vsplit.test)
    gcfg = TrainConfig(arch="efficientnet_lite0", epochs_head=1 if a.quick else 4,
                       epochs_finetune=1 if a.quick else 6, lr_finetune=5e-4, batch_size=24, seed=SEED, patience=4)
    _, _, gmetrics = fit_bundle(gcfg, vsplit, out / "gate1", kind="gate", labels=GATE_LABELS, progress=False)

    # ---------------- speed
    t = time.perf_counter()
    pred = Predictor.from_bundle(clf_dir, num_threads=2)
    load_s = time.perf_counter() - t
    pred.warmup()
    runs = 5 if a.quick else 20
    speed = {
        "gate (zero-shot lite0)": time_forward(gp.model, gp.bundle.preprocess.crop_size, runs),
        f"classifier {a.arch} (trained bundle)": time_forward(pred.model, pred.bundle.preprocess.crop_size, runs),
    }
    for arch in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        if arch != a.arch:
            speed[f"classifier {arch} (ImageNet weights, new head)"] = time_forward(
                create_model(arch, len(labels), "imagenet"), default_preprocess(arch).crop_size, runs)
    speed["resnet50 (RANDOM init, timing only)"] = time_forward(create_model("resnet50", len(labels), None), 224, runs)
    from PIL import Image

    with Image.open(split.test[0].path) as im:
        img = im.copy()
    t = time.perf_counter()
    for _ in range(runs):
        pred.predict([img])
    e2e = 1000 * (time.perf_counter() - t) / runs

    # ---------------- report
    ours_top1 = metrics["top1"]
    print()
    print(f"=== make+model classifier, test split ({len(split.test)} photos) ===")
    print(f"(a) original recipe (frozen {a.arch} + linear head, Adam, random aug at test):")
    print(f"      top-1 averaged per batch (as reported originally): {100 * orig['per_batch']:.1f}%")
    print(f"      top-1 per image, same random-aug predictions:       {100 * orig['per_image']:.1f}%")
    print(f"      top-1 per image, same model, deterministic eval:     {100 * orig['per_image_det_eval']:.1f}%")
    print(f"      train+eval time {t_orig:.0f}s")
    print(f"(b) carsite recipe ({cfg.epochs_head} head + {cfg.epochs_finetune} fine-tune epochs max, "
          f"best epoch {result.best_epoch}, early stop={result.stopped_early}):")
    print(f"      top-1 per image: {100 * ours_top1:.1f}%   top-3: {100 * metrics['top3']:.1f}%   "
          f"macro-F1: {metrics['macro_f1']:.3f}")
    print(f"      temperature {pred.bundle.temperature:.2f}; ECE {metrics['ece_uncalibrated']:.3f} -> "
          f"{metrics['ece_calibrated']:.3f}; abstain threshold {pred.abstain_threshold:.2f}")
    print(f"      train+calibrate+eval time {t_ours:.0f}s")
    print(f"SIDE BY SIDE top-1: original {100 * orig['per_batch']:.1f}% (per-batch) / "
          f"{100 * orig['per_image']:.1f}% (per-image)  vs  carsite {100 * ours_top1:.1f}%  "
          f"-> +{100 * (ours_top1 - orig['per_image']):.1f} points vs the honest original figure")
    print()
    print("=== gate (exterior/interior/other vs view labels) ===")
    print(f"zero-shot lite0 (ImageNet groups): {100 * zs_all:.1f}% on all {len(views)} photos, "
          f"{100 * zs_test:.1f}% on the view test split ({len(vsplit.test)} photos)")
    print(f"trained lite0 gate: {100 * gmetrics['top1']:.1f}% on the view test split "
          f"(macro-F1 {gmetrics['macro_f1']:.3f})")
    print()
    print("=== speed (2 threads, CPU, fp32) ===")
    print(f"training throughput: {ips:.1f} img/s fine-tune, {ips_head:.1f} img/s frozen-backbone phase")
    print(f"data-wait share of training wall time: {100 * wait_share:.1f}%")
    print(f"bundle load (Predictor.from_bundle): {1000 * load_s:.0f} ms")
    print(f"end-to-end predict() batch 1 incl. preprocessing (classifier): {e2e:.1f} ms")
    for k, v in speed.items():
        print(f"forward batch 1: {k}: {v:.1f} ms/image")
    print(f"total wall time: {time.perf_counter() - t_total:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
