"""Plain-PyTorch training and torch-free serving of the car models (no Django here)."""

# The model architectures ml.models builds (torch-free here, so option checks need no torch).
ARCHITECTURES: tuple[str, ...] = (
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "efficientnet_b1",
    "resnet50",
    "resnet101",
)

# The backbones the car classifier and the gate are trained on by default (the demo's; bench/ml_benchmark.py
# cross-validates both).
CLASSIFIER_ARCH, GATE_ARCH = "efficientnet_lite1", "efficientnet_lite0"

TRAIN_EXTRA_HINT = "pip install 'carsite[train]' (or 'make install', which installs everything)"


def require_torch(purpose: str = "Training") -> None:
    """Raise a clear error when PyTorch is not installed (a serving install), naming the extra to install."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"{purpose} needs PyTorch, which this install lacks: {TRAIN_EXTRA_HINT}.") from exc
