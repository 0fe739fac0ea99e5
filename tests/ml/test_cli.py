from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml.bundle import load_bundle
from ml.data import ManifestRecord, write_manifest
from ml.predict import Predictor


@pytest.mark.slow
def test_train_cli_writes_a_complete_bundle(shapes: list[ManifestRecord], tmp_path: Path) -> None:
    from ml.train import main

    write_manifest(shapes[::2], tmp_path / "m.csv")
    out = tmp_path / "bundle"
    rc = main(
        [
            "--manifest",
            str(tmp_path / "m.csv"),
            "--output",
            str(out),
            "--epochs-head",
            "1",
            "--epochs-finetune",
            "1",
            "--batch-size",
            "12",
            "--no-progress",
            "--val-fraction",
            "0.25",
            "--test-fraction",
            "0.25",
            "--crop-size",
            "64",
        ]
    )
    assert rc == 0
    b = load_bundle(out)
    for name in (
        "weights.safetensors",
        "bundle.json",
        "split.json",
        "report.csv",
        "report.md",
        "confusion_matrix.png",
        "curves.png",
        "metrics.json",
    ):
        assert (out / name).is_file(), name
    assert b.kind == "classifier" and b.temperature > 0 and 0 <= b.abstain_threshold <= 1
    split = b.split()
    assert split is not None and len(split.test) > 0
    assert not {r.group for r in split.train} & {r.group for r in split.test}
    assert json.loads((out / "metrics.json").read_text())["n"] == len(split.test)
    assert len(Predictor.from_bundle(out).predict([shapes[0].path], top_k=3)[0]) == 3


def test_train_cli_cross_validates_then_trains_on_everything(shapes: list[ManifestRecord], tmp_path: Path) -> None:
    from ml.train import main

    write_manifest(shapes[::2], tmp_path / "m.csv")
    out = tmp_path / "bundle"
    assert (
        main(
            [
                "--manifest",
                str(tmp_path / "m.csv"),
                "--output",
                str(out),
                "--recipe",
                "classifier",
                "--cv-folds",
                "3",
                "--no-progress",
            ]
        )
        == 0
    )
    metrics = load_bundle(out).meta["metrics"]
    assert metrics["folds"] == 3 and metrics["n"] == metrics["n_train"] == 36
    assert (out / "risk_coverage.png").is_file()
