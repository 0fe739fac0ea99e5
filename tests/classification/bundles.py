"""The real model bundles the classification tests serve, built once and cached between runs.

They are expensive to build (the gate) or train (the classifier), so they are kept, keyed by what they are
built from, in the machine's temp dir (never in the repository), with their ONNX exports. A serving install
(no torch) cannot build them: ``python -m tests.classification.bundles`` builds them with the full install
first (scripts/test does), and the serving run fails when they are missing.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

BUNDLE_CACHE = Path(os.environ.get("CARSITE_TEST_BUNDLE_CACHE", Path(tempfile.gettempdir()) / "carsite-classify-tests"))
CLASSIFIER_CACHE_KEY = "acura-v1"
GATE_DIR = BUNDLE_CACHE / "gate-zero-shot"
CLASSIFIER_DIR = BUNDLE_CACHE / f"classifier-{CLASSIFIER_CACHE_KEY}"


class BundleUnavailable(RuntimeError):
    """A bundle is not cached and cannot be built here."""


def torch_installed() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _build_once(target: Path, build: Callable[[Path], object]) -> Path:
    """The bundle at ``target`` with its ONNX export, built first when missing (into a staging dir renamed
    into place, so an interrupted build is never reused)."""
    if not torch_installed():
        if not (target / "bundle.json").is_file() or not (target / "onnx.json").is_file():
            raise BundleUnavailable(
                f"no exported bundle at {target}, and this install cannot build one (no torch): "
                "run `python -m tests.classification.bundles` with the full install first"
            )
        return target
    from ml.export import ensure_onnx_export

    if not (target / "bundle.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}-{uuid.uuid4().hex[:8]}"
        try:
            build(staging)
            if not (target / "bundle.json").is_file():
                if target.exists():
                    shutil.rmtree(target)
                staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if ensure_onnx_export(target) is None:
        raise BundleUnavailable(f"the bundle at {target} could not be exported to ONNX (see the log)")
    return target


def exterior_records(photos_dir: Path) -> list:
    from ml.data import ManifestRecord

    with (photos_dir / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [
        ManifestRecord(photos_dir / "images" / row["file"], f"{row['make']} {row['model']}")
        for row in rows
        if row["view"] == "exterior" and row["subject"] == "labelled-model"
    ]


def gate_bundle() -> Path:
    def build(out_dir: Path) -> None:
        from ml.gate import build_zero_shot_gate

        build_zero_shot_gate(out_dir)

    return _build_once(GATE_DIR, build)


def classifier_bundle(photos: Path, work_dir: Path) -> Path:
    """A small make-and-model classifier ('Acura MDX', …) trained head-only on the shared photos."""

    def train(out_dir: Path) -> None:
        from ml.data import group_near_duplicates, split_grouped
        from ml.train import TrainConfig, fit_bundle

        records = group_near_duplicates(exterior_records(photos))
        split = split_grouped(records, val_fraction=0.2, test_fraction=0.0, seed=0)
        config = TrainConfig(
            epochs_head=4, epochs_finetune=0, auto_augment=None, batch_size=32, seed=0, warmup_epochs=0
        )
        fit_bundle(config, split, out_dir, kind="classifier", work_dir=work_dir, progress=False)

    return _build_once(CLASSIFIER_DIR, train)


if __name__ == "__main__":
    from tests.conftest import SHARED_DATA

    with tempfile.TemporaryDirectory() as work:
        for path in (gate_bundle(), classifier_bundle(SHARED_DATA / "car-photos", Path(work))):
            print(f"bundle with its ONNX export: {path}")
    sys.exit(0)
