"""Model bundles: a directory with weights + everything needed to serve them reproducibly.

Layout: weights.safetensors, bundle.json, split.json (optional), report.csv, report.md,
confusion_matrix.png, curves.png, metrics.json (optional). The version id is the first 12 hex
digits of sha256(weights file bytes + canonical bundle.json without "version"/"created_at"),
so identical content always gets the same id and any edit to weights or config is detected.
Reading a bundle's metadata needs no torch (a serving install has none); its weights do.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.preprocess import PreprocessConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ml.data import Split

WEIGHTS_FILE = "weights.safetensors"
META_FILE = "bundle.json"
SPLIT_FILE = "split.json"
REPORT_FILES = ("report.csv", "report.md", "confusion_matrix.png", "curves.png", "risk_coverage.png", "metrics.json")
# fields that describe *when/how* rather than *what*: excluded from the content hash
_UNHASHED = ("version", "created_at")


class BundleIntegrityError(RuntimeError):
    """bundle.json or weights.safetensors don't match the recorded version hash."""


def _content_hash(weights_path: Path, meta: dict[str, Any]) -> str:
    h = hashlib.sha256()
    with weights_path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    hashed = {k: v for k, v in meta.items() if k not in _UNHASHED}
    h.update(json.dumps(hashed, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode())
    return h.hexdigest()


@dataclass
class Bundle:
    path: Path
    meta: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.meta["version"])

    @property
    def kind(self) -> str:
        return str(self.meta["kind"])

    @property
    def arch(self) -> str:
        return str(self.meta["arch"])

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    @property
    def mode(self) -> str:
        return str(self.meta.get("mode", "softmax"))

    @property
    def num_outputs(self) -> int:
        return int(self.meta["num_outputs"])

    @property
    def pooled_stages(self) -> list[int]:
        return [int(stage) for stage in self.meta.get("pooled_stages", [])]

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.meta["preprocess"])

    @property
    def temperature(self) -> float:
        return float(self.meta.get("temperature", 1.0))

    @property
    def abstain_threshold(self) -> float:
        return float(self.meta.get("abstain_threshold", 0.0))

    def split(self) -> Split | None:
        from ml.data import Split

        p = self.path / SPLIT_FILE
        return Split.from_json(p.read_text(encoding="utf-8")) if p.is_file() else None

    def load_model(self, device: str | torch.device = "cpu") -> nn.Module:
        from safetensors.torch import load_file

        from ml.models import create_model

        # weights=None here is followed by a strict load of every tensor: never a silent random init
        model = create_model(self.arch, self.num_outputs, weights=None, pooled_stages=self.pooled_stages)
        state = load_file(str(self.path / WEIGHTS_FILE), device=str(device))
        model.load_state_dict(state, strict=True)
        return model.to(device).eval()


# softmax: one class per output; imagenet_groups: ImageNet classes summed into groups (zero-shot gate);
# hybrid_gate: ImageNet head and a trained view head side by side on one backbone (see ml.gate).
BUNDLE_MODES = ("softmax", "imagenet_groups", "hybrid_gate")


def _torchvision_version() -> str:
    import torchvision  # only here: loading a bundle (every worker start) does not need it

    return torchvision.__version__


def save_bundle(
    out_dir: str | Path,
    model: nn.Module,
    *,
    kind: str,
    arch: str,
    labels: list[str],
    preprocess: PreprocessConfig,
    temperature: float = 1.0,
    abstain_threshold: float = 0.0,
    mode: str = "softmax",
    metrics: dict[str, Any] | None = None,
    split: Split | None = None,
    extra: dict[str, Any] | None = None,
    command: list[str] | None = None,
    report_dir: str | Path | None = None,
) -> Bundle:
    """Write the bundle directory (overwriting bundle files in it) and return the loaded Bundle."""
    import torch
    from safetensors.torch import save_file

    if kind not in ("gate", "classifier"):
        raise ValueError("kind must be 'gate' or 'classifier'")
    if mode not in BUNDLE_MODES:
        raise ValueError(f"mode must be one of {', '.join(BUNDLE_MODES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(getattr(model, "module", None), torch.nn.Module):  # unwrap DDP
        model = model.module  # type: ignore[assignment]
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    from ml.models import head_module

    num_outputs = head_module(model).out_features
    save_file(state, str(out / WEIGHTS_FILE))
    meta: dict[str, Any] = {
        "format": 1,
        "kind": kind,
        "arch": arch,
        "mode": mode,
        "labels": list(labels),
        "num_outputs": int(num_outputs),
        "preprocess": preprocess.to_dict(),
        "temperature": float(temperature),
        "abstain_threshold": float(abstain_threshold),
        "metrics": metrics or {},
        "command": command if command is not None else list(sys.argv),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": _torchvision_version(),
        },
        "extra": extra or {},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    pooled_stages = list(getattr(model, "pooled_stages", ()))
    if pooled_stages:  # absent otherwise, so the bundles of published networks keep their version hash
        meta["pooled_stages"] = pooled_stages
    meta["version"] = _content_hash(out / WEIGHTS_FILE, meta)[:12]
    (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    if split is not None:
        (out / SPLIT_FILE).write_text(split.to_json(), encoding="utf-8")
    if report_dir is not None and Path(report_dir).resolve() != out.resolve():
        for name in REPORT_FILES:
            src = Path(report_dir) / name
            if src.is_file():
                shutil.copyfile(src, out / name)
    return load_bundle(out)


def load_bundle(path: str | Path) -> Bundle:
    """Read bundle.json and verify the content hash; raise BundleIntegrityError if it doesn't match."""
    p = Path(path)
    meta_path, weights_path = p / META_FILE, p / WEIGHTS_FILE
    if not meta_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(f"{p} is not a model bundle (needs {META_FILE} and {WEIGHTS_FILE})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BundleIntegrityError(f"{meta_path} is not valid JSON: {exc}") from exc
    expected = str(meta.get("version", ""))
    actual = _content_hash(weights_path, meta)[:12]
    if actual != expected:
        raise BundleIntegrityError(
            f"bundle {p} is corrupt or was modified: recorded version {expected!r}, content hash {actual!r}"
        )
    return Bundle(p, meta)


# The ONNX export (ml.export) lives beside the weights; onnx.json names the bundle version it was made from.
ONNX_FILE = "model.onnx"
ONNX_META_FILE = "onnx.json"
# Largest difference from the torch model on the check inputs for an export to be served.
ONNX_MAX_ABS_DIFFERENCE = 1e-4


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_export_file(bundle: Bundle) -> Path | None:
    """The bundle's model.onnx if onnx.json says it was made from this very bundle version, passed its check
    and is the file it describes (a copy cut short or another export's file is not)."""
    onnx_path, meta_path = bundle.path / ONNX_FILE, bundle.path / ONNX_META_FILE
    if not onnx_path.is_file() or not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if meta.get("bundle_version") != bundle.version:
        return None
    if not float(meta.get("max_abs_difference", 1.0)) <= ONNX_MAX_ABS_DIFFERENCE:
        return None
    return onnx_path if meta.get("sha256") == file_sha256(onnx_path) else None
