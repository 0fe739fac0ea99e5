"""The gate: is a photo a car exterior, a car interior, or something else?

Zero-shot gate: an ImageNet classifier whose 1000 class probabilities are summed into three
groups. Trained gate: a 3-class head trained on labelled photos (replaces the zero-shot one
once such data exists). Both are ordinary bundles, served by ml.predict.Predictor.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.bundle import save_bundle
from ml.data import ManifestRecord, Split, split_grouped
from ml.models import IMAGENET_CLASSES, create_model, default_preprocess

if TYPE_CHECKING:
    from ml.train import TrainConfig

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


# Everything that says "this photo shows a car, inside or out" to ImageNet, details included. Photos of
# cars (all views) put at least ~12% of their ImageNet probability here; a portrait or a flower ~0.5%.
CAR_RELATED_CLASSES = [*EXTERIOR_CLASSES, *INTERIOR_CLASSES, "car wheel", "disk brake", "tape player", "motor scooter"]
# At or above this car-related mass the trained view head is trusted fully; below, "other" takes the rest.
CAR_MASS_SCALE = 0.2


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
    config: TrainConfig | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Train a hybrid gate (see ``hybrid_gate_from_trained``) on labelled records (label = view).

    Records should already carry near-duplicate groups (ml.data.group_near_duplicates).
    """
    from ml.train import TrainConfig

    bad = {r.label for r in records} - set(GATE_LABELS)
    if bad:
        raise ValueError(f"gate labels must be in {GATE_LABELS}, got {sorted(bad)}")
    cfg = config if isinstance(config, TrainConfig) else TrainConfig(arch=arch, seed=seed)
    fit_hybrid_gate(cfg, split_grouped(records, 0.2, 0.2, seed), out_dir, progress=progress)
    return Path(out_dir)


def fit_hybrid_gate(
    config: TrainConfig,
    split: Split,
    out_dir: str | Path,
    work_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train the view head on ``split`` and write the hybrid gate bundle to ``out_dir``; returns the metrics.

    The head is trained with the backbone frozen throughout: fine-tuning it on car photos alone would
    erode ImageNet's sense of what is not a car, which the hybrid gate relies on to answer "other".
    """
    import tempfile
    from dataclasses import replace

    from ml.train import fit_bundle

    with tempfile.TemporaryDirectory(prefix="gate-head-", dir=work_dir) as tmp:
        head_only = Path(tmp) / "head"
        _, _, metrics = fit_bundle(
            replace(config, epochs_finetune=0), split, head_only, kind="gate", labels=GATE_LABELS,
            work_dir=Path(tmp) / "work", progress=progress,
        )
        hybrid_gate_from_trained(head_only, out_dir)
    return metrics


def hybrid_gate_from_trained(trained_dir: str | Path, out_dir: str | Path) -> Path:
    """Join a head-only trained view gate and the ImageNet head on their shared backbone, as one bundle.

    The model's last layer gets 1000 + 3 outputs: ImageNet's classes, then the view head's. The
    predictor (mode "hybrid_gate") uses the first part to tell car photos from anything else and the
    second to tell exterior, interior and other car photos apart. One forward pass serves both.
    """
    import torch

    from ml.bundle import load_bundle
    from ml.models import head_module, replace_head

    trained = load_bundle(trained_dir)
    if trained.kind != "gate" or trained.labels != GATE_LABELS or trained.mode != "softmax":
        raise ValueError(f"{trained_dir} is not a trained {GATE_LABELS} gate bundle")
    view_model = trained.load_model()
    imagenet_model = create_model(trained.arch, 1000, weights="imagenet").eval()
    view_state, imagenet_state = view_model.state_dict(), imagenet_model.state_dict()
    # The heads are the only tensors whose shapes differ (3 vs 1000 outputs); all else must be equal.
    changed = [
        k for k, v in imagenet_state.items() if v.shape == view_state[k].shape and not torch.equal(v, view_state[k])
    ]
    if changed:
        raise ValueError(
            f"the gate's backbone differs from the ImageNet one ({len(changed)} tensors, e.g. {changed[0]}): "
            "a hybrid gate needs a gate trained head-only"
        )
    imagenet_head, view_head = head_module(imagenet_model), head_module(view_model)
    weight = torch.cat([imagenet_head.weight, view_head.weight]).detach().clone()
    bias = torch.cat([imagenet_head.bias, view_head.bias]).detach().clone()
    replace_head(imagenet_model, weight.shape[0])
    with torch.no_grad():
        head_module(imagenet_model).weight.copy_(weight)
        head_module(imagenet_model).bias.copy_(bias)
    idx = {name: i for i, name in enumerate(IMAGENET_CLASSES)}
    save_bundle(
        out_dir, imagenet_model, kind="gate", arch=trained.arch, labels=GATE_LABELS,
        preprocess=trained.preprocess, temperature=trained.temperature, abstain_threshold=0.0,
        mode="hybrid_gate", metrics=trained.meta.get("metrics", {}), split=trained.split(),
        extra={"car_classes": sorted(idx[n] for n in CAR_RELATED_CLASSES), "car_mass_scale": CAR_MASS_SCALE,
               "car_related_classes": CAR_RELATED_CLASSES, "trained_head_version": trained.version},
        command=trained.meta.get("command"), report_dir=trained.path,
    )
    return Path(out_dir)
