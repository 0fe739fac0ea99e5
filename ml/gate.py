"""The gate: is a photo a car exterior, a car interior, or something else?

Zero-shot gate: an ImageNet classifier whose 1000 class probabilities are summed into three
groups. Trained gate: a 3-class head trained on labelled photos (replaces the zero-shot one
once such data exists). Both are ordinary bundles, served by ml.predict.Predictor.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ml.bundle import save_bundle
from ml.data import ManifestRecord, split_grouped
from ml.models import IMAGENET_CLASSES, create_model, default_preprocess

GATE_LABELS = ["exterior", "interior", "other"]

# Whole vehicles (what an exterior shot of a car looks like to ImageNet). "grille" is in because
# frontal car shots are often top-1 "grille"; "car wheel" is NOT: a wheel close-up is a detail
# shot ("other" in our view labels), not an exterior view of the model.
EXTERIOR_CLASSES = [
    "ambulance", "beach wagon", "cab", "convertible", "grille", "jeep", "limousine", "minibus", "minivan",
    "Model T", "moving van", "pickup", "police van", "racer", "recreational vehicle", "sports car",
    "tow truck", "go-kart", "golfcart",
]
# Cabin details that exist as ImageNet classes (there is no "steering wheel"/"dashboard" class).
INTERIOR_CLASSES = ["seat belt", "odometer", "car mirror", "CD player", "cassette player", "radio"]

# Group prior weights: ImageNet spreads an interior photo's mass thinly over many unrelated classes
# (cabin classes are few), so interior mass is up-weighted 10x; exterior mass is reliably high for
# car bodies. NOTE: the 10x was picked from a coarse grid (1/3/5/10/20) by looking at the 238 shared
# labelled photos, so the zero-shot accuracy on those same photos is slightly optimistic.
DEFAULT_GROUP_WEIGHTS = {"exterior": 1.0, "interior": 10.0, "other": 1.0}


def imagenet_groups() -> dict[str, list[int]]:
    idx = {name: i for i, name in enumerate(IMAGENET_CLASSES)}
    missing = [n for n in EXTERIOR_CLASSES + INTERIOR_CLASSES if n not in idx]
    if missing:
        raise ValueError(f"not ImageNet class names: {missing}")
    return {
        "exterior": sorted(idx[n] for n in EXTERIOR_CLASSES),
        "interior": sorted(idx[n] for n in INTERIOR_CLASSES),
    }


def build_zero_shot_gate(
    out_dir: str | Path,
    arch: str = "efficientnet_lite0",
    group_weights: dict[str, float] | None = None,
) -> Path:
    """Write a kind="gate", mode="imagenet_groups" bundle with the pretrained ImageNet head kept."""
    model = create_model(arch, 1000, weights="imagenet").eval()
    save_bundle(
        out_dir, model, kind="gate", arch=arch, labels=GATE_LABELS, preprocess=default_preprocess(arch),
        temperature=1.0, abstain_threshold=0.0, mode="imagenet_groups",
        extra={"groups": imagenet_groups(), "group_weights": dict(group_weights or DEFAULT_GROUP_WEIGHTS),
               "exterior_classes": EXTERIOR_CLASSES, "interior_classes": INTERIOR_CLASSES},
    )
    return Path(out_dir)


def train_gate(
    records: Sequence[ManifestRecord],
    out_dir: str | Path,
    arch: str = "efficientnet_lite0",
    config: object | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Train a 3-class (exterior/interior/other) softmax gate on labelled records (label = view).

    Records should already carry near-duplicate groups (ml.data.group_near_duplicates).
    """
    from ml.train import TrainConfig, fit_bundle

    bad = {r.label for r in records} - set(GATE_LABELS)
    if bad:
        raise ValueError(f"gate labels must be in {GATE_LABELS}, got {sorted(bad)}")
    cfg = config if isinstance(config, TrainConfig) else TrainConfig(arch=arch, seed=seed)
    split = split_grouped(records, 0.2, 0.2, seed)
    fit_bundle(cfg, split, out_dir, kind="gate", labels=GATE_LABELS, progress=progress)
    return Path(out_dir)
