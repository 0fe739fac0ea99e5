"""Inference from a bundle: load once, predict many. No Django here; the site wraps this."""

from __future__ import annotations

import ctypes
import io
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ml.bundle import Bundle, load_bundle
from ml.presets import ClassificationPresetEval

ImageInput = Image.Image | str | Path
logger = logging.getLogger(__name__)

# glibc's mallopt parameters, and the largest mmap threshold it accepts on 64-bit systems.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
_TRIM_THRESHOLD = 512 * 1024 * 1024


def keep_freed_memory_for_reuse() -> bool:
    """Ask glibc's malloc to keep freed tensor buffers for the next forward pass instead of unmapping them.

    By default glibc serves allocations above a few MB with fresh mmap pages and unmaps them on free,
    so every forward pass page-faults its activations in again (kernel time spent zeroing memory); on
    this project's 2-core test machine that made a batch-1 CPU forward pass about 20% slower. The cost
    is that freed buffers stay in the process for reuse. Returns False where this does not apply.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False  # not glibc
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


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


def compile_for_inference(
    model: torch.nn.Module, input_size: int | tuple[int, int], device: torch.device, cache_path: Path | None = None
) -> torch.nn.Module | None:
    """The model traced and frozen into one TorchScript graph, or None when that does not reproduce it.

    Three gains on CPU: batch norms folded into the convolutions, no Python between layers, and the
    whole forward pass runs without holding the GIL, so two worker threads really use two cores
    (measured here: a batch-2 forward about 30% faster alone, 1.9x the images/s with two threads,
    against about 1.3x eager). The input size is fixed by the eval preset, so the padding arithmetic the
    tracer records is exact; batch sizes vary, so the result is checked against the eager model on a
    batch of two random images before it is used. torch 2.14 marks tracing deprecated; the eager model
    remains the fallback.

    With ``cache_path`` the frozen graph is saved there with the eager model's output on that check
    batch, for ``load_compiled`` to reuse in a later process: tracing and freezing took about 2 s of a
    worker's start here. The caller names the file after everything the graph depends on.
    """
    probe = _check_batch(input_size, device)
    example = torch.zeros_like(probe[:1])
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarning about the fixed-size padding, and the deprecation
            compiled = torch.jit.freeze(torch.jit.trace(model, example, check_trace=False).eval())
        with torch.inference_mode():
            expected, got = model(probe).float(), compiled(probe).float()
    except Exception as exc:  # any model the tracer cannot handle runs eagerly
        logger.warning("running %s eagerly: tracing failed (%s)", type(model).__name__, exc)
        return None
    if not _reproduces(got, expected):
        logger.warning("running %s eagerly: the traced graph does not reproduce it", type(model).__name__)
        return None
    if cache_path is not None:
        _save_compiled(compiled, expected, cache_path)
    return compiled


def _reproduces(got: torch.Tensor, expected: torch.Tensor) -> bool:
    tolerance = 1e-3 * max(1.0, float(expected.abs().max()))
    return got.shape == expected.shape and float((got - expected).abs().max()) <= tolerance


_EXPECTED_FILE = "expected_output.pt"
# A graph being saved is first written to ".<graph name>.<random>.tmp" beside it.
_TEMPORARY_SUFFIX = ".tmp"


def is_compiled_graph_temporary(name: str) -> bool:
    """Whether ``name`` is the temporary file of a compiled graph being (or once being) saved."""
    return name.startswith(".") and name.endswith(_TEMPORARY_SUFFIX)


def _save_compiled(compiled: torch.nn.Module, expected: torch.Tensor, path: Path) -> None:
    """Write the graph and its check output atomically; a cache that cannot be written only costs time."""
    buffer = io.BytesIO()
    torch.save(expected.cpu(), buffer)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TEMPORARY_SUFFIX)
        os.close(handle)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 marks TorchScript deprecated
                torch.jit.save(compiled, temporary, _extra_files={_EXPECTED_FILE: buffer.getvalue()})
            os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide it from workers running as another user
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    except Exception as exc:
        logger.warning("could not cache the compiled model at %s: %s", path, exc)


def _check_batch(input_size: int | tuple[int, int], device: torch.device) -> torch.Tensor:
    """Two seeded random images of the model's input size ((height, width), or a square's side)."""
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    probe = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    return probe.to(device).to(memory_format=torch.channels_last)


def load_compiled(path: Path, input_size: int | tuple[int, int], device: torch.device) -> torch.nn.Module | None:
    """A graph saved by ``compile_for_inference``, if there is one, it loads, and it still gives the eager
    model's output on the check batch (which also warms it up); None otherwise."""
    if not path.exists():
        return None
    probe = _check_batch(input_size, device)
    extra = {_EXPECTED_FILE: b""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            compiled = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        expected = torch.load(io.BytesIO(extra[_EXPECTED_FILE]), map_location=device, weights_only=True)
        with torch.inference_mode():
            got = compiled(probe).float()
    except Exception as exc:  # unreadable, truncated or from an incompatible torch: trace again
        logger.warning("ignoring the cached compiled model at %s: %s", path, exc)
        return None
    if not _reproduces(got, expected.float()):
        logger.warning("ignoring the cached compiled model at %s: it does not reproduce its check output", path)
        return None
    return compiled


def compiled_graph_name(bundle: Bundle, device: torch.device) -> str:
    """File name of a bundle's compiled graph: one per bundle content, input size, torch build and CPU kind."""
    capability = torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else device.type
    height, width = bundle.preprocess.input_size
    size = f"{height}" if height == width else f"{height}x{width}"
    return f"{bundle.kind}-{bundle.version}-{size}px-torch{torch.__version__}-{capability}.pt"


@dataclass(frozen=True)
class CompiledGraphName:
    kind: str
    version: str
    input_size: tuple[int, int]  # (height, width)
    torch_version: str
    capability: str


_COMPILED_GRAPH_NAME = re.compile(
    r"(?P<kind>[a-z]+)-(?P<version>.+)-(?P<height>\d+)(?:x(?P<width>\d+))?px-torch(?P<torch>[^-/]+)"
    r"-(?P<capability>[A-Za-z0-9_]+)\.pt"
)


def parse_compiled_graph_name(name: str) -> CompiledGraphName | None:
    """What a ``compiled_graph_name`` says; None for any other file name."""
    match = _COMPILED_GRAPH_NAME.fullmatch(name)
    if match is None:
        return None
    height = int(match["height"])
    size = (height, int(match["width"] or height))
    return CompiledGraphName(match["kind"], match["version"], size, match["torch"], match["capability"])


def hybrid_gate_probabilities(
    logits: torch.Tensor, labels: Sequence[str], car_classes: torch.Tensor, car_mass_scale: float,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The trained view head decides among car photos; ImageNet decides whether it is a car photo at all.

    ``logits`` are ImageNet's 1000 then the view head's. A head trained only on car photos has never
    seen a portrait or a flower and calls them anything, so the share of ImageNet probability on
    car-related classes scales the view head's answer: below ``car_mass_scale`` the remainder goes to "other".
    """
    n_views = len(labels)
    imagenet = logits[:, :-n_views].softmax(dim=1)
    views = (logits[:, -n_views:] / temperature).softmax(dim=1)
    car_score = (imagenet[:, car_classes].sum(dim=1) / car_mass_scale).clamp(0.0, 1.0)
    probs = views * car_score[:, None]
    probs[:, list(labels).index("other")] += 1.0 - car_score
    return probs


class Predictor:
    def __init__(
        self,
        bundle: Bundle,
        device: str | torch.device | None = None,
        num_threads: int | None = None,
        compile_model: bool = True,
        forward_batch_size: int | None = None,
        compiled_cache_dir: str | Path | None = None,
    ):
        """``forward_batch_size`` caps how many images go through the model in one call (None: the whole batch).

        ``compiled_cache_dir`` keeps the compiled graph between processes (see ``compile_for_inference``).
        """
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.bundle = bundle
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.forward_batch_size = forward_batch_size
        input_size = bundle.preprocess.input_size
        cache_path = None
        if compile_model and compiled_cache_dir is not None:
            cache_path = Path(compiled_cache_dir) / compiled_graph_name(bundle, self.device)
        # A cached graph needs no eager model, and so no model definition (nor torchvision) at all.
        cached = load_compiled(cache_path, input_size, self.device) if cache_path is not None else None
        self.model: torch.nn.Module
        if cached is not None:
            self.model, self.compiled = cached, True
        else:
            self.model = bundle.load_model(self.device).to(memory_format=torch.channels_last).eval()
            self.compiled = False
            compiled = compile_for_inference(self.model, input_size, self.device, cache_path) if compile_model else None
            if compiled is not None:
                self.model, self.compiled = compiled, True
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
        cls,
        path: str | Path,
        device: str | torch.device | None = None,
        num_threads: int | None = None,
        compile_model: bool = True,
        forward_batch_size: int | None = None,
        compiled_cache_dir: str | Path | None = None,
    ) -> Predictor:
        return cls(
            load_bundle(path),
            device=device,
            num_threads=num_threads,
            compile_model=compile_model,
            forward_batch_size=forward_batch_size,
            compiled_cache_dir=compiled_cache_dir,
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
        """Dummy passes: the first calls allocate buffers, pick kernels and (traced) optimise the graph."""
        x = torch.zeros(1, 3, *self.bundle.preprocess.input_size, device=self.device)
        x = x.to(memory_format=torch.channels_last)
        with torch.inference_mode():
            for _ in range(3 if self.compiled else 2):
                self.model(x)

    def _load(self, item: ImageInput) -> torch.Tensor:
        if isinstance(item, Image.Image):
            return self.transform(item)
        with Image.open(item) as im:
            return self.transform(im)

    def preprocess(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """The eval transform of every image, stacked: the batch the model takes, on its device."""
        x = torch.stack([self._load(im) for im in images]).to(self.device)
        return x.contiguous(memory_format=torch.channels_last)

    def same_preprocessing(self, other: Predictor) -> bool:
        """Whether a batch prepared by ``other`` is exactly what this model would prepare itself."""
        return self.bundle.preprocess == other.bundle.preprocess and self.device == other.device

    def probabilities(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Calibrated probabilities [N, len(labels)] (group masses for the zero-shot gate)."""
        if len(images) == 0:
            return torch.empty(0, len(self.labels))
        return self.batch_probabilities(self.preprocess(images))

    @torch.inference_mode()
    def batch_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """``probabilities`` of a batch that ``preprocess`` (of this or an equal predictor) prepared."""
        logits = self._logits(x.contiguous(memory_format=torch.channels_last)).float()
        if self._car_classes is not None:
            return hybrid_gate_probabilities(
                logits, self.labels, self._car_classes, self._car_mass_scale, self.bundle.temperature
            ).cpu()
        probs = (logits / self.bundle.temperature).softmax(dim=1)
        if self._groups is not None and self._group_weights is not None:
            # sum ImageNet class probabilities per group, then apply the group prior weights
            mass = (probs @ self._groups) * self._group_weights
            probs = mass / mass.sum(dim=1, keepdim=True)
        return probs.cpu()

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        step = self.forward_batch_size
        if not step or len(x) <= step:
            return self.model(x)
        # Slices along the batch dimension keep the channels-last layout.
        return torch.cat([self.model(x[start : start + step]) for start in range(0, len(x), step)])

    def predict(self, images: Sequence[ImageInput], top_k: int = 5) -> list[list[Prediction]]:
        return self._ranked(self.probabilities(images), top_k)

    def predict_batch(self, x: torch.Tensor, top_k: int = 5) -> list[list[Prediction]]:
        """``predict`` for a batch that ``preprocess`` prepared (e.g. shared by the gate and the classifier)."""
        return self._ranked(self.batch_probabilities(x), top_k)

    def _ranked(self, probs: torch.Tensor, top_k: int) -> list[list[Prediction]]:
        k = min(top_k, probs.shape[1])
        out: list[list[Prediction]] = []
        for row in probs.tolist():  # plain floats: indexing the tensor per label costs more than the sort
            # stable sort on (-p, index) so ties always resolve the same way
            order = sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]
            out.append([Prediction(self.labels[i], row[i]) for i in order])
        return out

    def predict_image(self, img: ImageInput, top_k: int = 5) -> list[Prediction]:
        return self.predict([img], top_k=top_k)[0]
