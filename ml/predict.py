"""Inference from a bundle: load once, predict many. No Django here; the site wraps this."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ml.bundle import Bundle, load_bundle
from ml.presets import ClassificationPresetEval

ImageInput = Image.Image | str | Path


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float


def group_matrix(num_outputs: int, labels: Sequence[str], groups: dict[str, list[int]]) -> torch.Tensor:
    """[num_outputs, len(labels)] 0/1 matrix; outputs not listed in any group go to the last label."""
    m = torch.zeros(num_outputs, len(labels))
    assigned = torch.zeros(num_outputs, dtype=torch.bool)
    for j, name in enumerate(labels):
        for i in groups.get(name, []):
            if assigned[i]:
                raise ValueError(f"ImageNet class {i} is in more than one group")
            m[i, j] = 1.0
            assigned[i] = True
    m[~assigned, len(labels) - 1] = 1.0
    return m


class Predictor:
    def __init__(self, bundle: Bundle, device: str | torch.device | None = None, num_threads: int | None = None):
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.bundle = bundle
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = bundle.load_model(self.device).to(memory_format=torch.channels_last).eval()
        self.transform = ClassificationPresetEval.from_config(bundle.preprocess)
        self._groups: torch.Tensor | None = None
        self._group_weights: torch.Tensor | None = None
        self._car_classes: torch.Tensor | None = None
        if bundle.mode == "hybrid_gate":
            extra = bundle.meta["extra"]
            self._car_classes = torch.tensor(extra["car_classes"], dtype=torch.long, device=self.device)
            self._car_mass_scale = float(extra["car_mass_scale"])
        if bundle.mode == "imagenet_groups":
            extra = bundle.meta["extra"]
            self._groups = group_matrix(bundle.num_outputs, bundle.labels, extra["groups"]).to(self.device)
            w = extra.get("group_weights", {})
            self._group_weights = torch.tensor([float(w.get(n, 1.0)) for n in bundle.labels], device=self.device)

    @classmethod
    def from_bundle(
        cls, path: str | Path, device: str | torch.device | None = None, num_threads: int | None = None
    ) -> Predictor:
        return cls(load_bundle(path), device=device, num_threads=num_threads)

    @property
    def labels(self) -> list[str]:
        return self.bundle.labels

    @property
    def kind(self) -> str:
        return self.bundle.kind

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def arch(self) -> str:
        return self.bundle.arch

    @property
    def abstain_threshold(self) -> float:
        return self.bundle.abstain_threshold

    def warmup(self) -> None:
        """Two dummy passes: the first calls allocate buffers and pick kernels, so they are slow."""
        size = self.bundle.preprocess.crop_size
        x = torch.zeros(1, 3, size, size, device=self.device).to(memory_format=torch.channels_last)
        with torch.inference_mode():
            for _ in range(2):
                self.model(x)

    def _load(self, item: ImageInput) -> torch.Tensor:
        if isinstance(item, Image.Image):
            return self.transform(item)
        with Image.open(item) as im:
            return self.transform(im)

    @torch.inference_mode()
    def probabilities(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Calibrated probabilities [N, len(labels)] (group masses for the zero-shot gate)."""
        if len(images) == 0:
            return torch.empty(0, len(self.labels))
        x = torch.stack([self._load(im) for im in images]).to(self.device)
        x = x.to(memory_format=torch.channels_last)
        logits = self.model(x).float()
        if self._car_classes is not None:
            return self._hybrid_gate_probabilities(logits).cpu()
        probs = (logits / self.bundle.temperature).softmax(dim=1)
        if self._groups is not None and self._group_weights is not None:
            # sum ImageNet class probabilities per group, then apply the group prior weights
            mass = (probs @ self._groups) * self._group_weights
            probs = mass / mass.sum(dim=1, keepdim=True)
        return probs.cpu()

    def _hybrid_gate_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """The trained view head decides among car photos; ImageNet decides whether it is a car photo at all.

        A head trained only on car photos has never seen a portrait or a flower and calls them anything,
        so the share of ImageNet probability on car-related classes scales the view head's answer: below
        ``car_mass_scale`` the remainder goes to "other".
        """
        n_views = len(self.labels)
        imagenet = logits[:, :-n_views].softmax(dim=1)
        views = (logits[:, -n_views:] / self.bundle.temperature).softmax(dim=1)
        car_score = (imagenet[:, self._car_classes].sum(dim=1) / self._car_mass_scale).clamp(0.0, 1.0)
        probs = views * car_score[:, None]
        probs[:, self.labels.index("other")] += 1.0 - car_score
        return probs

    def predict(self, images: Sequence[ImageInput], top_k: int = 5) -> list[list[Prediction]]:
        probs = self.probabilities(images)
        k = min(top_k, probs.shape[1])
        out: list[list[Prediction]] = []
        for row in probs:
            # stable sort on (-p, index) so ties always resolve the same way
            order = sorted(range(len(row)), key=lambda i: (-float(row[i]), i))[:k]
            out.append([Prediction(self.labels[i], float(row[i])) for i in order])
        return out

    def predict_image(self, img: ImageInput, top_k: int = 5) -> list[Prediction]:
        return self.predict([img], top_k=top_k)[0]
