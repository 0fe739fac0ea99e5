"""The gate: is a photo a car exterior, a car interior, or something else?

Zero-shot gate: an ImageNet classifier whose 1000 class probabilities are summed into three
groups. Trained gate: a 3-class view head beside the ImageNet head on one frozen backbone (mode
"hybrid_gate"); it replaces the zero-shot one once labelled photos exist. Both are ordinary
bundles, served by ml.predict.Predictor.

The trained gate's backbone never changes, so its features are computed once per photo (and per
augmented view) and the head is a logistic regression on them: training and grouped
cross-validation cost a few backbone passes per photo, not epochs of them.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ml import GATE_ARCH
from ml.bundle import save_bundle
from ml.crossval import CrossValidation, cross_validate
from ml.data import ManifestRecord, load_rgb
from ml.models import IMAGENET_CLASSES, EfficientNetLite, create_model, default_preprocess, head_module, replace_head
from ml.presets import ClassificationPresetEval, PreprocessConfig

GATE_LABELS = ["exterior", "interior", "other"]

# Whole vehicles (what an exterior shot of a car looks like to ImageNet). "grille" is in because
# frontal car shots are often top-1 "grille"; "car wheel" is NOT: a wheel close-up is a detail
# shot ("other" in our view labels), not an exterior view of the model.
EXTERIOR_CLASSES = [
    "ambulance",
    "beach wagon",
    "cab",
    "convertible",
    "grille",
    "jeep",
    "limousine",
    "minibus",
    "minivan",
    "Model T",
    "moving van",
    "pickup",
    "police van",
    "racer",
    "recreational vehicle",
    "sports car",
    "tow truck",
    "go-kart",
    "golfcart",
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
        out_dir,
        model,
        kind="gate",
        arch=arch,
        labels=GATE_LABELS,
        preprocess=default_preprocess(arch),
        temperature=1.0,
        abstain_threshold=0.0,
        mode="imagenet_groups",
        extra={
            "groups": imagenet_groups(),
            "group_weights": dict(group_weights or DEFAULT_GROUP_WEIGHTS),
            "exterior_classes": EXTERIOR_CLASSES,
            "interior_classes": INTERIOR_CLASSES,
        },
    )
    return Path(out_dir)


@dataclass(frozen=True)
class GateRecipe:
    """How the view head learns: a linear head on frozen-backbone features of each photo and its views."""

    arch: str = GATE_ARCH
    crop_size: int | None = None  # None: the architecture's resolution
    mirror: bool = True  # the mirror image of every photo, as a second view
    crops: int = 2  # random crops (a third of the photo or more, mirrored at random) of every photo
    # random close-up crops of every exterior photo, labelled "other": detail shots are close-ups of cars
    close_ups: int = 3
    close_up_scale: tuple[float, float] = (0.04, 0.15)  # their share of the photo's area
    balanced: bool = True  # weigh each view class by the inverse of its count: interior and other are rare
    weight_decay: float = 1e-3
    seed: int = 0

    def preprocess(self) -> PreprocessConfig:
        base = default_preprocess(self.arch)
        if self.crop_size is None or self.crop_size == base.crop_size:
            return base
        resize = round(self.crop_size * base.resize_size / base.crop_size)
        return replace(base, crop_size=self.crop_size, resize_size=resize)


@dataclass
class GateFeatures:
    """Backbone features of each record: the eval view first, then the training views, with their labels."""

    records: list[ManifestRecord]
    views: list[torch.Tensor]  # per record: [views, feature dim]; row 0 is the eval transform
    view_targets: list[torch.Tensor]  # per record: the view label index of each row
    imagenet_head: nn.Linear

    def eval_features(self, indices: Sequence[int]) -> torch.Tensor:
        return torch.stack([self.views[i][0] for i in indices])


@torch.inference_mode()
def gate_features(records: Sequence[ManifestRecord], recipe: GateRecipe) -> GateFeatures:
    """One backbone pass per photo and view, seeded: the same records give the same features."""
    from torchvision.transforms import v2 as T

    from ml.predict import keep_freed_memory_for_reuse

    keep_freed_memory_for_reuse()  # large batches: without it, page faults cost as much time as the passes

    pre = recipe.preprocess()
    model = create_model(recipe.arch, 1000, weights="imagenet").eval()
    if not isinstance(model, EfficientNetLite):
        raise ValueError(f"the gate's recipe needs an EfficientNet-Lite trunk, not {recipe.arch}")
    eval_tf = ClassificationPresetEval.from_config(pre)
    tail = [T.RandomHorizontalFlip(), T.ToDtype(torch.float32, scale=True), T.Normalize(list(pre.mean), list(pre.std))]
    crop_tf = T.Compose([T.PILToTensor(), T.RandomResizedCrop(pre.crop_size, scale=(0.35, 1.0), antialias=True), *tail])
    close_tf = T.Compose(
        [
            T.PILToTensor(),
            T.RandomResizedCrop(pre.crop_size, scale=recipe.close_up_scale, ratio=(0.75, 4 / 3), antialias=True),
            *tail,
        ]
    )
    other = GATE_LABELS.index("other")
    torch.manual_seed(recipe.seed)
    views, targets = [], []
    # Several photos' views per backbone pass: one photo's few views per pass leave a CPU's threads waiting.
    for start in range(0, len(records), 8):
        batches = []
        for record in records[start : start + 8]:
            image = load_rgb(record.path)
            x = eval_tf(image)
            batch = [x] + ([x.flip(-1)] if recipe.mirror else []) + [crop_tf(image) for _ in range(recipe.crops)]
            label = GATE_LABELS.index(record.label) if record.label in GATE_LABELS else -1
            target = [label] * len(batch)
            if record.label == "exterior":
                batch += [close_tf(image) for _ in range(recipe.close_ups)]
                target += [other] * recipe.close_ups
            batches.append(batch)
            targets.append(torch.tensor(target))
        features = model.forward_features(torch.stack([x for batch in batches for x in batch]))
        views += features.split([len(batch) for batch in batches])
    return GateFeatures(list(records), views, targets, head_module(model))


def fit_view_head(features: torch.Tensor, targets: torch.Tensor, recipe: GateRecipe) -> nn.Linear:
    """Multinomial logistic regression (full batch, L-BFGS from zero: deterministic) on the views' features."""
    counts = torch.bincount(targets, minlength=len(GATE_LABELS)).float()
    weight = counts.sum() / (len(GATE_LABELS) * counts.clamp_min(1)) if recipe.balanced else None
    head = nn.Linear(features.shape[1], len(GATE_LABELS))
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(head(features), targets, weight=weight)
        loss = loss + recipe.weight_decay * head.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return head.eval().requires_grad_(False)


def _gate_logits(features: GateFeatures, indices: Sequence[int], view_head: nn.Linear) -> torch.Tensor:
    """Log-probabilities of the deployed hybrid gate (ml.predict.hybrid_gate_probabilities) for the records."""
    from ml.predict import hybrid_gate_probabilities

    x = features.eval_features(indices)
    with torch.inference_mode():
        logits = torch.cat([features.imagenet_head(x), view_head(x)], dim=1)
        probs = hybrid_gate_probabilities(logits.numpy(), GATE_LABELS, car_class_indices(), CAR_MASS_SCALE)
    return torch.from_numpy(probs).clamp_min(1e-12).log()


def car_class_indices() -> list[int]:
    idx = {name: i for i, name in enumerate(IMAGENET_CLASSES)}
    return sorted(idx[n] for n in CAR_RELATED_CLASSES)


def _fit_on(features: GateFeatures, indices: Sequence[int], recipe: GateRecipe) -> nn.Linear:
    x = torch.cat([features.views[i] for i in indices])
    y = torch.cat([features.view_targets[i] for i in indices])
    return fit_view_head(x, y, recipe)


def cross_validate_gate(features: GateFeatures, recipe: GateRecipe, k: int = 5, seed: int = 0) -> CrossValidation:
    """Grouped k-fold cross-validation of the recipe's head on cached features (every photo scored once)."""
    # The scorer sees records with blanked labels: their paths identify them.
    index = {r.path: i for i, r in enumerate(features.records)}

    def fit(train: list[ManifestRecord]):
        head = _fit_on(features, [index[r.path] for r in train], recipe)
        return lambda held_out: _gate_logits(features, [index[r.path] for r in held_out], head)

    return cross_validate(features.records, GATE_LABELS, fit, k=k, seed=seed)


def view_recall_summary(cv: CrossValidation) -> dict[str, Any]:
    """Recall of each view over all out-of-fold predictions, and macro recall per fold (mean, spread)."""
    predicted = cv.logits.argmax(1)
    folds = torch.tensor(cv.folds)

    def recalls(mask: torch.Tensor) -> dict[str, float]:
        out = {}
        for c, label in enumerate(cv.labels):
            members = mask & (cv.targets == c)
            if members.any():
                out[label] = float((predicted[members] == c).float().mean())
        return out

    everything = recalls(torch.ones_like(folds, dtype=torch.bool))
    per_fold = [recalls(folds == f) for f in sorted(set(cv.folds))]
    summary: dict[str, Any] = {
        "evaluated_on": "cross-validation",
        "cv_folds": len(per_fold),
        "n": len(cv.targets),
        "top1": float((predicted == cv.targets).float().mean()),
        "macro_recall": statistics.fmean(everything.values()),
    }
    macro = [statistics.fmean(r.values()) for r in per_fold]
    summary["macro_recall_fold_mean"] = statistics.fmean(macro)
    summary["macro_recall_fold_std"] = statistics.pstdev(macro)
    for label, value in everything.items():
        summary[f"recall_{label}"] = value
        fold_values = [r[label] for r in per_fold if label in r]
        summary[f"recall_{label}_fold_mean"] = statistics.fmean(fold_values)
        summary[f"recall_{label}_fold_std"] = statistics.pstdev(fold_values)
    return summary


def train_gate(
    records: Sequence[ManifestRecord],
    out_dir: str | Path,
    recipe: GateRecipe | None = None,
    k: int = 5,
    report_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Cross-validate the recipe, then train its view head on all ``records`` and write the hybrid gate bundle.

    Records carry their view as the label and near-duplicate groups (ml.data.group_near_duplicates).
    Returns the bundle's metrics: the out-of-fold ones (no photo is held back from the final head).
    """
    recipe = recipe or GateRecipe()
    bad = {r.label for r in records} - set(GATE_LABELS)
    if bad:
        raise ValueError(f"gate labels must be in {GATE_LABELS}, got {sorted(bad)}")
    features = gate_features(records, recipe)
    smallest = min(sum(r.label == label for r in records) for label in GATE_LABELS)
    metrics: dict[str, Any] = {"n_train": len(records)}
    folds = min(k, smallest)
    if folds >= 2:
        cv = cross_validate_gate(features, recipe, k=folds, seed=recipe.seed)
        metrics.update(view_recall_summary(cv))
        if report_dir is not None:
            from ml.evaluate import evaluate_predictions

            evaluate_predictions(cv.logits, cv.targets, GATE_LABELS, report_dir)
    head = _fit_on(features, range(len(records)), recipe)
    save_bundle(
        out_dir,
        joined_gate_model(recipe.arch, head),
        kind="gate",
        arch=recipe.arch,
        labels=GATE_LABELS,
        preprocess=recipe.preprocess(),
        temperature=1.0,
        abstain_threshold=0.0,
        mode="hybrid_gate",
        metrics=metrics,
        extra={
            "car_classes": car_class_indices(),
            "car_mass_scale": CAR_MASS_SCALE,
            "car_related_classes": CAR_RELATED_CLASSES,
            "recipe": asdict(recipe),
        },
        report_dir=report_dir,
    )
    return metrics


def joined_gate_model(arch: str, view_head: nn.Linear) -> nn.Module:
    """The ImageNet network whose last layer has 1000 + 3 outputs: ImageNet's classes, then the view head's.

    The predictor (mode "hybrid_gate") uses the first part to tell car photos from anything else and the
    second to tell exterior, interior and other car photos apart. One forward pass serves both.
    """
    model = create_model(arch, 1000, weights="imagenet").eval()
    imagenet_head = head_module(model)
    weight = torch.cat([imagenet_head.weight, view_head.weight]).detach().clone()
    bias = torch.cat([imagenet_head.bias, view_head.bias]).detach().clone()
    replace_head(model, weight.shape[0])
    with torch.no_grad():
        head_module(model).weight.copy_(weight)
        head_module(model).bias.copy_(bias)
    return model.eval()
