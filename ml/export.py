"""ONNX export of a bundle's model, written beside its weights (model.onnx + onnx.json) for ONNX Runtime to serve.

Torch only (a training machine's job). The export is checked against the torch model on fixed seeded
inputs and refused when they differ by more than ``ONNX_MAX_ABS_DIFFERENCE``; onnx.json names the bundle
version it was made from, so a stale export is never served. bundle.json is left alone (it is content-hashed).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.bundle import (
    ONNX_FILE,
    ONNX_MAX_ABS_DIFFERENCE,
    ONNX_META_FILE,
    Bundle,
    file_sha256,
    load_bundle,
    onnx_export_file,
)

logger = logging.getLogger(__name__)

OPSET = 17


def check_inputs(input_size: tuple[int, int]) -> np.ndarray:
    """Two seeded standard-normal images of the model's input size: the inputs both runtimes must agree on."""
    height, width = input_size
    return np.random.default_rng(0).standard_normal((2, 3, height, width), dtype=np.float32)


def ensure_onnx_export(bundle_dir: str | Path) -> Path | None:
    """The bundle's usable ONNX export, made now when it has none; None (with a logged reason) when it cannot be."""
    bundle = load_bundle(bundle_dir)
    existing = onnx_export_file(bundle)
    if existing is not None:
        return existing
    try:
        return export_onnx(bundle)
    except Exception as exc:  # an export that fails leaves the bundle served by torch, as before
        logger.warning("no ONNX export for %s %s: %s", bundle.kind, bundle.version, exc)
        return None


def export_onnx(bundle: Bundle) -> Path | None:
    """Export, check and write model.onnx and onnx.json into the bundle directory; None when the check fails."""
    model = bundle.load_model("cpu").to(memory_format=torch.channels_last)
    probe = check_inputs(bundle.preprocess.input_size)
    directory = bundle.path
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{ONNX_FILE}.", suffix=".tmp")
    os.close(handle)
    try:
        _export(model, probe, Path(temporary))
        with torch.inference_mode():
            expected = model(torch.from_numpy(probe).contiguous(memory_format=torch.channels_last)).float().numpy()
        difference = float(np.abs(_run_onnx(Path(temporary), probe) - expected).max())
        if not difference <= ONNX_MAX_ABS_DIFFERENCE:
            logger.warning(
                "no ONNX export for %s %s: it differs from torch by %.2g (more than %g)",
                bundle.kind,
                bundle.version,
                difference,
                ONNX_MAX_ABS_DIFFERENCE,
            )
            return None
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide it from workers running as another user
        target = directory / ONNX_FILE
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    meta = {
        "bundle_version": bundle.version,
        "opset": OPSET,
        "max_abs_difference": difference,
        "sha256": file_sha256(target),
        "torch": torch.__version__,
    }
    _write_json_atomically(directory / ONNX_META_FILE, meta)
    logger.info("exported %s %s to ONNX (max abs difference %.2g)", bundle.kind, bundle.version, difference)
    return target


def _export(model: torch.nn.Module, probe: np.ndarray, path: Path) -> None:
    example = torch.zeros((1, *probe.shape[1:]))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about the fixed input size the bundle records anyway
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )


def _run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def _write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(temporary, path)
