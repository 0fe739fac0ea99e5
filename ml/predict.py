"""Inference from a bundle: load once, predict many. No Django here; the site wraps this.

A bundle with a usable ONNX export (``ml.export``) runs on ONNX Runtime, which needs no torch at all;
one without (or a GPU asked for) runs on torch, eagerly. Either way the model gives logits and the
same numpy code below turns them into probabilities, and the same ``ml.preprocess`` prepares its input.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ml.bundle import Bundle, load_bundle, onnx_export_file
from ml.preprocess import load_eval_array

ImageInput = Image.Image | str | Path
logger = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "torch")

# glibc's mallopt parameters, and the largest mmap threshold it accepts on 64-bit systems.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
_TRIM_THRESHOLD = 512 * 1024 * 1024


def _glibc_function(name: str) -> Any:
    """One of glibc's functions through ctypes; None where the C library is not glibc."""
    try:
        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def keep_freed_memory_for_reuse() -> bool:
    """Ask glibc's malloc to keep freed tensor buffers for the next torch forward pass instead of unmapping them.

    By default glibc serves allocations above a few MB with fresh mmap pages and unmaps them on free,
    so every torch forward pass page-faults its activations in again (kernel time spent zeroing memory);
    on this project's 2-core test machine that made a batch-1 CPU forward pass about 20% slower. The
    cost is that freed buffers stay in the process for reuse. Returns False where this does not apply.
    """
    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


def release_freed_memory() -> bool:
    """Hand the heap pages malloc holds free back to the system (glibc's malloc_trim); False where it cannot.

    Building an ONNX Runtime session frees the model file's bytes and the graph optimiser's scratch, and glibc
    keeps such pages in the process unless asked.
    """
    malloc_trim = _glibc_function("malloc_trim")
    if malloc_trim is None:
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    return bool(malloc_trim(0))


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def group_matrix(num_outputs: int, labels: Sequence[str], groups: dict[str, list[int]]) -> np.ndarray:
    """[num_outputs, len(labels)] 0/1 matrix; outputs not listed in any group go to the last label."""
    m = np.zeros((num_outputs, len(labels)), dtype=np.float32)
    assigned = np.zeros(num_outputs, dtype=bool)
    for j, name in enumerate(labels):
        for i in groups.get(name, []):
            if assigned[i]:
                raise ValueError(f"ImageNet class {i} is in more than one group")
            m[i, j] = 1.0
            assigned[i] = True
    m[~assigned, len(labels) - 1] = 1.0
    return m


def hybrid_gate_probabilities(
    logits: np.ndarray,
    labels: Sequence[str],
    car_classes: Sequence[int],
    car_mass_scale: float,
    temperature: float = 1.0,
) -> np.ndarray:
    """The trained view head decides among car photos; ImageNet decides whether it is a car photo at all.

    ``logits`` are ImageNet's 1000 then the view head's. A head trained only on car photos has never
    seen a portrait or a flower and calls them anything, so the share of ImageNet probability on
    car-related classes scales the view head's answer: below ``car_mass_scale`` the remainder goes to "other".
    """
    n_views = len(labels)
    imagenet = softmax(logits[:, :-n_views])
    views = softmax(logits[:, -n_views:] / np.float32(temperature))
    car_score = np.clip(imagenet[:, list(car_classes)].sum(axis=1) / np.float32(car_mass_scale), 0.0, 1.0)
    probs = views * car_score[:, None]
    probs[:, list(labels).index("other")] += 1.0 - car_score
    return probs


class OnnxRuntimeModel:
    """A bundle's ONNX export on ONNX Runtime's CPU provider: logits of a float32 (N, 3, H, W) batch."""

    def __init__(self, path: Path, num_threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads or 0  # 0: ONNX Runtime's default, one per core
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.use_deterministic_compute = True
        # Idle threads sleep instead of spinning: the web server and the other compute thread share the cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        release_freed_memory()
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


class TorchModel:
    """The bundle's torch model, eager and channels-last (training machines and GPUs)."""

    def __init__(self, bundle: Bundle, device: Any = None, num_threads: int | None = None):
        from ml import require_torch

        require_torch("Serving a bundle without an ONNX export")
        import torch

        if num_threads is not None:
            torch.set_num_threads(num_threads)
        keep_freed_memory_for_reuse()  # before its first forward pass; repeating it changes nothing
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = bundle.load_model(self.device).to(memory_format=torch.channels_last).eval()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            batch = torch.from_numpy(x).to(self.device).contiguous(memory_format=torch.channels_last)
            return self.model(batch).float().cpu().numpy()


def _wants_gpu(device: Any) -> bool:
    return device is not None and str(device) != "cpu"


class Predictor:
    def __init__(
        self,
        bundle: Bundle,
        device: Any = None,
        num_threads: int | None = None,
        forward_batch_size: int | None = None,
        backend: str = "auto",
    ):
        """``backend`` "auto" serves the ONNX export on ONNX Runtime when the bundle has a usable one and no GPU
        is asked for, torch otherwise. ``forward_batch_size`` caps how many images go through the model in one
        call (None: the whole batch)."""
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}")
        self.bundle = bundle
        self.forward_batch_size = forward_batch_size
        export = onnx_export_file(bundle)
        if backend == "onnxruntime" and export is None:
            raise FileNotFoundError(f"{bundle.path} has no ONNX export of version {bundle.version}")
        if backend == "onnxruntime" or (backend == "auto" and export is not None and not _wants_gpu(device)):
            self.backend = "onnxruntime"
            self.model: OnnxRuntimeModel | TorchModel = OnnxRuntimeModel(export, num_threads)  # type: ignore[arg-type]
        else:
            self.backend = "torch"
            self.model = TorchModel(bundle, device, num_threads)
        extra = bundle.meta.get("extra") or {}
        self._car_classes: list[int] | None = None
        self._groups: np.ndarray | None = None
        self._group_weights: np.ndarray | None = None
        if bundle.mode == "hybrid_gate":
            self._car_classes = [int(i) for i in extra["car_classes"]]
            self._car_mass_scale = float(extra["car_mass_scale"])
        if bundle.mode == "imagenet_groups":
            self._groups = group_matrix(bundle.num_outputs, bundle.labels, extra["groups"])
            w = extra.get("group_weights", {})
            self._group_weights = np.asarray([float(w.get(n, 1.0)) for n in bundle.labels], dtype=np.float32)

    @classmethod
    def from_bundle(
        cls,
        path: str | Path,
        device: Any = None,
        num_threads: int | None = None,
        forward_batch_size: int | None = None,
        backend: str = "auto",
    ) -> Predictor:
        return cls(
            load_bundle(path),
            device=device,
            num_threads=num_threads,
            forward_batch_size=forward_batch_size,
            backend=backend,
        )

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
        """Dummy passes: the first calls allocate buffers and pick kernels."""
        x = np.zeros((1, 3, *self.bundle.preprocess.input_size), dtype=np.float32)
        for _ in range(2):
            self.model(x)

    def preprocess(self, images: Sequence[ImageInput]) -> np.ndarray:
        """The eval transform of every image, stacked: the float32 (N, 3, H, W) batch the model takes."""
        cfg = self.bundle.preprocess
        if len(images) == 0:
            return np.empty((0, 3, *cfg.input_size), dtype=np.float32)
        return np.stack([load_eval_array(item, cfg) for item in images])

    def same_preprocessing(self, other: Predictor) -> bool:
        """Whether a batch prepared by ``other`` is exactly what this model would prepare itself."""
        return self.bundle.preprocess == other.bundle.preprocess

    def probabilities(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Calibrated probabilities [N, len(labels)] (group masses for the zero-shot gate)."""
        return self.batch_probabilities(self.preprocess(images))

    def batch_probabilities(self, x: np.ndarray) -> np.ndarray:
        """``probabilities`` of a batch that ``preprocess`` (of this or an equal predictor) prepared."""
        if len(x) == 0:
            return np.empty((0, len(self.labels)), dtype=np.float32)
        logits = self._logits(np.ascontiguousarray(x, dtype=np.float32))
        if self._car_classes is not None:
            return hybrid_gate_probabilities(
                logits, self.labels, self._car_classes, self._car_mass_scale, self.bundle.temperature
            )
        probs = softmax(logits / np.float32(self.bundle.temperature))
        if self._groups is not None and self._group_weights is not None:
            # sum ImageNet class probabilities per group, then apply the group prior weights
            mass = (probs @ self._groups) * self._group_weights
            probs = mass / mass.sum(axis=1, keepdims=True)
        return probs

    def _logits(self, x: np.ndarray) -> np.ndarray:
        step = self.forward_batch_size
        if not step or len(x) <= step:
            return self.model(x)
        return np.concatenate([self.model(x[start : start + step]) for start in range(0, len(x), step)])

    def predict(self, images: Sequence[ImageInput], top_k: int = 5) -> list[list[Prediction]]:
        return self._ranked(self.probabilities(images), top_k)

    def predict_batch(self, x: np.ndarray, top_k: int = 5) -> list[list[Prediction]]:
        """``predict`` for a batch that ``preprocess`` prepared (e.g. shared by the gate and the classifier)."""
        return self._ranked(self.batch_probabilities(x), top_k)

    def _ranked(self, probs: np.ndarray, top_k: int) -> list[list[Prediction]]:
        k = min(top_k, probs.shape[1])
        out: list[list[Prediction]] = []
        for row in probs.tolist():  # plain floats: indexing the array per label costs more than the sort
            # stable sort on (-p, index) so ties always resolve the same way
            order = sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]
            out.append([Prediction(self.labels[i], row[i]) for i in order])
        return out

    def predict_image(self, img: ImageInput, top_k: int = 5) -> list[Prediction]:
        return self.predict([img], top_k=top_k)[0]
