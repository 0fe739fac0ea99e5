from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ml.data import ManifestRecord
from ml.train import TrainConfig, train

from .conftest import SHAPE_CLASSES


def _cfg(**kw) -> TrainConfig:
    base = dict(
        arch="efficientnet_lite0",
        weights="imagenet",
        epochs_head=1,
        epochs_finetune=3,
        lr_head=1e-2,
        lr_finetune=3e-4,
        warmup_epochs=0,
        batch_size=16,
        crop_size=64,
        resize_size=64,
        auto_augment=None,
        min_scale=0.6,
        seed=0,
        patience=10,
        label_smoothing=0.0,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow
def test_loss_falls_and_accuracy_rises_on_shapes(shapes: list[ManifestRecord], tmp_path: Path) -> None:
    train_recs = [r for i, r in enumerate(shapes) if i % 4 != 0]
    val_recs = [r for i, r in enumerate(shapes) if i % 4 == 0]
    res = train(_cfg(), train_recs, val_recs, SHAPE_CLASSES, tmp_path, progress=False)
    h = res.history
    assert len(h) == 4 and [r["phase"] for r in h] == ["head", "finetune", "finetune", "finetune"]
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    best_val = max(r["val_acc"] for r in h)
    assert best_val >= 0.8  # chance is 1/3; per-image accuracy over 18 val images
    assert res.best_val_acc == best_val
    for r in h:
        assert 0 <= r["data_wait_share"] <= 1 and r["images_per_s"] > 0
    assert not res.model.training


@pytest.mark.slow
def test_resume_continues_and_matches_uninterrupted_run(shapes: list[ManifestRecord], tmp_path: Path) -> None:
    recs = shapes[::3]  # 24 images keep this fast
    val = shapes[1::6]
    cfg = _cfg(epochs_head=1, epochs_finetune=2, max_steps_per_epoch=1, batch_size=8)
    full = train(cfg, recs, val, SHAPE_CLASSES, tmp_path / "full", progress=False)

    class Interrupt(Exception):
        pass

    def stop_after_two(row: dict) -> None:
        if row["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, recs, val, SHAPE_CLASSES, tmp_path / "cut", progress=False, on_epoch_end=stop_after_two)
    ckpt = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)
    assert ckpt["epoch"] == 1 and len(ckpt["history"]) == 2  # 0-based epoch index of the 2nd epoch
    resumed = train(cfg, recs, val, SHAPE_CLASSES, tmp_path / "cut", progress=False, resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for a, b in zip(full.history, resumed.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    last_full = torch.load(tmp_path / "full" / "last.pt", weights_only=False)["model"]
    last_resumed = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)["model"]
    for k, v in last_full.items():
        assert torch.allclose(v.float(), last_resumed[k].float(), atol=1e-5), k


def test_resume_refuses_other_labels(shapes: list[ManifestRecord], tmp_path: Path) -> None:
    cfg = _cfg(epochs_head=1, epochs_finetune=0, max_steps_per_epoch=1, batch_size=8)
    train(cfg, shapes[::6], [], SHAPE_CLASSES, tmp_path, progress=False)
    with pytest.raises(ValueError, match="labels"):
        train(cfg, shapes[::6], [], list(reversed(SHAPE_CLASSES)), tmp_path, progress=False, resume=True)


def test_finetune_optimizer_gives_the_head_its_own_learning_rate() -> None:
    from ml.models import create_model, head_parameters
    from ml.train import _make_optimizer

    model = create_model("efficientnet_lite0", 3, weights=None)
    head = list(head_parameters(model))
    opt = _make_optimizer(_cfg(weight_decay=0.01), list(model.parameters()), 1e-4, head, head_lr_mult=10.0)
    head_ids = {id(p) for p in head}
    seen = 0
    for group in opt.param_groups:
        kinds = {id(p) in head_ids for p in group["params"]}
        assert len(kinds) == 1  # a group is all head or all backbone
        assert group["lr"] == pytest.approx(1e-3 if kinds.pop() else 1e-4)
        # norms and biases (1-D) are never decayed
        assert group["weight_decay"] == (0.01 if group["params"][0].ndim > 1 else 0.0)
        seen += len(group["params"])
    assert seen == len(list(model.parameters()))


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_freeze_bn_keeps_pretrained_batchnorm_statistics_during_finetune(
    shapes: list[ManifestRecord], tmp_path: Path, freeze_bn: bool
) -> None:
    from ml.models import create_model

    cfg = _cfg(epochs_head=0, epochs_finetune=1, max_steps_per_epoch=1, batch_size=8, freeze_bn=freeze_bn)
    res = train(cfg, shapes[::6], [], SHAPE_CLASSES, tmp_path, progress=False)
    pretrained = create_model("efficientnet_lite0", len(SHAPE_CLASSES), "imagenet").state_dict()
    trained = res.model.state_dict()
    stats = [k for k in trained if k.endswith("running_mean")]
    moved = [k for k in stats if not torch.equal(trained[k], pretrained[k])]
    if freeze_bn:
        assert moved == []
    else:
        assert len(moved) == len(stats)
    # the weights themselves were trained either way
    assert not torch.equal(trained["stem.0.weight"], pretrained["stem.0.weight"])
