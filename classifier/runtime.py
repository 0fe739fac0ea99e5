"""The models a worker process serves: loaded once, warmed up, swapped when another version is activated.

``get_active_model(kind)`` costs one indexed query per call (the active version's id); the bundle is
loaded and warmed up only when that id differs from what this process holds, so activating a new
version takes effect on the next call in every worker without a restart.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings

from classifier.models import ModelKind, ModelVersion
from classifier.selectors.registry import active_model_version, active_model_version_id, model_version_label_map
from classifier.services.registry import model_version_bundle_dir

if TYPE_CHECKING:
    from ml.predict import Predictor

logger = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The active model version's bundle cannot be loaded (missing or corrupt files)."""


@dataclass(frozen=True)
class LoadedModel:
    version: ModelVersion
    predictor: Predictor
    car_model_ids: dict[str, int | None]
    load_seconds: float = 0.0


_slots_lock = threading.Lock()
_load_locks = {kind: threading.Lock() for kind in ModelKind.values}  # a kind's load never waits for another's
_loaded: dict[str, LoadedModel] = {}
_compute_slots: threading.BoundedSemaphore | None = None


def compute_slot_count() -> int:
    """Model calls this process runs at once: ``CARSITE_CLASSIFY_COMPUTE_SLOTS``, or its cores / inference threads."""
    configured = int(getattr(settings, "CARSITE_CLASSIFY_COMPUTE_SLOTS", 0) or 0)
    if configured > 0:
        return configured
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(settings.CARSITE_INFERENCE_THREADS)))


@contextmanager
def compute_slot() -> Iterator[None]:
    """Hold one of this process's compute slots while running the models.

    A worker with more threads than cores keeps the cores computing while its other threads wait on
    the broker and the database; the slots stop those extra threads from computing all at once.
    """
    global _compute_slots
    if _compute_slots is None:
        with _slots_lock:
            if _compute_slots is None:
                _compute_slots = threading.BoundedSemaphore(compute_slot_count())
    with _compute_slots:
        yield


def _open(version: ModelVersion) -> tuple[Predictor, float]:
    """The version's bundle, fetched, opened and warmed up, and the seconds that took. Reads no database
    rows, so bundles can open side by side in threads of their own."""
    from ml.predict import Predictor

    started = time.perf_counter()
    bundle_dir: object = version.bundle_path  # what the error names if even finding the bundle fails
    try:
        bundle_dir = model_version_bundle_dir(version)  # fetched from the media storage on first use, once
        predictor = Predictor.from_bundle(
            bundle_dir,
            device="cpu",
            num_threads=settings.CARSITE_INFERENCE_THREADS,
            forward_batch_size=settings.CARSITE_CLASSIFY_FORWARD_BATCH or None,
            backend=settings.CARSITE_INFERENCE_BACKEND,
        )
        predictor.warmup()
    except Exception as exc:  # any failure to read the bundle makes the model unusable; say which one
        raise ModelLoadError(f"Cannot load {version} from {bundle_dir}: {exc}") from exc
    if predictor.version != version.version or predictor.kind != version.kind:
        raise ModelLoadError(
            f"The bundle at {bundle_dir} is {predictor.kind} {predictor.version}, "
            f"not the registered {version.kind} {version.version}."
        )
    return predictor, time.perf_counter() - started


def _hold(version: ModelVersion, predictor: Predictor, load_seconds: float) -> LoadedModel:
    loaded = LoadedModel(version, predictor, model_version_label_map(version), load_seconds)
    _loaded[version.kind] = loaded
    logger.info("loaded %s on %s in %.2fs", version, predictor.backend, load_seconds)
    return loaded


def _held(kind: str, active_id: int | None) -> LoadedModel | None:
    current = _loaded.get(kind)
    return current if current is not None and current.version.pk == active_id else None


def get_active_model(kind: str, active_ids: Mapping[str, int] | None = None) -> LoadedModel | None:
    """The active model of ``kind``, loaded and warmed up; None when no version of that kind is active.

    ``active_ids`` (from ``active_model_version_ids()``) saves the query when the caller needs several kinds.
    Raises ModelLoadError when the active version's bundle cannot be loaded.
    """
    active_id = active_model_version_id(kind) if active_ids is None else active_ids.get(kind)
    if active_id is None:
        return None
    if held := _held(kind, active_id):
        return held
    with _load_locks[kind]:
        if held := _held(kind, active_id):  # another thread loaded it while this one waited for the lock
            return held
        version = ModelVersion.objects.get(pk=active_id)
        return _hold(version, *_open(version))


def warm_up_active_models() -> dict[str, LoadedModel | None]:
    """Load every active model now, so the first request does not pay for it. Never raises.

    The bundles open side by side, a thread each (ONNX Runtime builds a session without holding the GIL, so
    on two cores both are ready in about the time of the slower); only the calling thread reads the database.
    Meant for a process that is not serving yet: it takes no load lock, so a racing ``get_active_model``
    could load the same version a second time.
    """
    try:
        active = {kind: active_model_version(kind) for kind in ModelKind.values}
    except Exception:
        logger.exception("could not read the active model versions")
        return dict.fromkeys(ModelKind.values)
    to_open = [v for v in active.values() if v is not None and not _held(v.kind, v.pk)]
    with ThreadPoolExecutor(max_workers=len(ModelKind.values), thread_name_prefix="carsite-load") as pool:
        opening = [(version, pool.submit(_open, version)) for version in to_open]
    for version, opened in opening:
        try:
            _hold(version, *opened.result())
        except Exception:
            logger.exception("could not warm up the active %s model", version.kind)
    return {kind: _held(kind, version.pk) if version else None for kind, version in active.items()}


def loaded_models() -> dict[str, LoadedModel]:
    """What this process currently holds (for diagnostics and tests)."""
    return dict(_loaded)


def clear_loaded_models() -> None:
    _loaded.clear()
