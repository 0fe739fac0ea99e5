"""The cross-validated recipe: out-of-fold metrics, calibration from out-of-fold predictions, the final model
trained on everything, and the whole-frame geometry through a bundle and serving."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ml.bundle import load_bundle
from ml.data import ManifestRecord, load_rgb
from ml.evaluate import choose_abstain_threshold, fit_temperature, topk_accuracy
from ml.predict import Predictor
from ml.presets import ClassificationPresetEval
from ml.train import TrainConfig, TrunkFeatures, cross_validate_and_fit, fit_bundle_cv, train_tail

from .conftest import SHAPE_CLASSES


def _cfg(**kw) -> TrainConfig:
    base = dict(
        arch="efficientnet_lite0",
        weights="imagenet",
        epochs_finetune=4,
        lr_finetune=3e-3,
        warmup_epochs=0,
        batch_size=16,
        frame_size=(48, 64),
        tail_blocks=-1,
        cached_views=1,
        auto_augment=None,
        min_scale=0.6,
        label_smoothing=0.0,
        seed=0,
    )
    base.update(kw)
    return TrainConfig(**base)


def _grouped(shapes: list[ManifestRecord]) -> list[ManifestRecord]:
    return [ManifestRecord(r.path, r.label, f"{r.label}{i // 2}") for i, r in enumerate(shapes)]


@pytest.mark.parametrize(("tail_blocks", "pooled_stages"), [(-1, ()), (1, ()), (-1, (3, 4, 5, 6))])
def test_the_tail_on_cached_views_is_the_model_on_the_eval_preset(
    shapes, tail_blocks: int, pooled_stages: tuple[int, ...]
) -> None:
    cfg = _cfg(tail_blocks=tail_blocks, pooled_stages=pooled_stages, epochs_finetune=1)
    features = TrunkFeatures(cfg, len(SHAPE_CLASSES))
    model = train_tail(cfg, features, shapes[::4], SHAPE_CLASSES)
    held_out = shapes[1::8]
    eval_tf = ClassificationPresetEval.from_config(cfg.preprocess())
    with torch.inference_mode():
        direct = model(torch.stack([eval_tf(load_rgb(r.path)) for r in held_out]))
    assert features.views(held_out).shape[:2] == (len(held_out), 3)  # plain, mirrored, one augmented
    torch.testing.assert_close(features.logits(model, held_out), direct, atol=1e-4, rtol=1e-4)
    # the training views stay the same whichever records are asked for first
    again = TrunkFeatures(cfg, len(SHAPE_CLASSES))
    torch.testing.assert_close(again.views(held_out[::-1]).flip(0), features.views(held_out))


def test_the_bundle_records_out_of_fold_figures_and_calibration(shapes, tmp_path: Path) -> None:
    records = _grouped(shapes)
    cfg = _cfg()
    out, model, metrics = fit_bundle_cv(cfg, records, tmp_path / "bundle", labels=SHAPE_CLASSES, k=3)
    cv, _ = cross_validate_and_fit(cfg, records, SHAPE_CLASSES, k=3)  # deterministic: the same folds and logits
    bundle = load_bundle(out)
    temperature = fit_temperature(cv.logits, cv.targets)
    assert bundle.temperature == pytest.approx(temperature)
    assert bundle.abstain_threshold == pytest.approx(
        choose_abstain_threshold((cv.logits / temperature).softmax(1), cv.targets, 0.9)
    )
    recorded = bundle.meta["metrics"]
    assert recorded["folds"] == 3 and recorded["n"] == len(records) == recorded["n_train"]
    assert recorded["top1"] == pytest.approx(topk_accuracy(cv.logits, cv.targets, 1))
    assert recorded["top1_mean"] == pytest.approx(cv.summary()["top1_mean"])
    assert recorded["evaluated_on"] == "out-of-fold (3-fold grouped cross-validation)"
    assert 0 < recorded["coverage"] <= 1
    assert (out / "risk_coverage.png").is_file() and (out / "report.md").is_file()
    # the deployed model learned from every photo, and is not one of the fold models
    assert len(bundle.split().train) == len(records) and not bundle.split().test
    # whole-frame geometry round-trips, and serving preprocesses exactly like evaluation
    assert bundle.preprocess == cfg.preprocess() and bundle.preprocess.input_size == (48, 64)
    predictor = Predictor(bundle, device="cpu")
    img = load_rgb(records[0].path)
    eval_x = ClassificationPresetEval.from_config(cfg.preprocess())(img)
    assert torch.equal(torch.from_numpy(predictor.preprocess([img])[0]), eval_x)
    with torch.inference_mode():
        expected = (model(eval_x[None]) / temperature).softmax(1)
    torch.testing.assert_close(torch.from_numpy(predictor.probabilities([img])), expected, atol=1e-4, rtol=1e-4)


def test_the_two_phase_recipe_cross_validates_with_fixed_epochs(shapes, tmp_path: Path) -> None:
    records = _grouped(shapes[::2])
    cfg = _cfg(tail_blocks=None, epochs_head=1, epochs_finetune=0, max_steps_per_epoch=1)
    cv, model = cross_validate_and_fit(cfg, records, SHAPE_CLASSES, k=3, work_dir=tmp_path)
    assert cv.logits.shape == (len(records), 3) and sorted(set(cv.folds)) == [0, 1, 2]
    assert not model.training


def test_a_resnet_gets_the_two_phase_recipe_not_the_lite_only_frozen_trunk():
    from ml.train import classifier_recipe

    lite, resnet = classifier_recipe("efficientnet_lite0"), classifier_recipe("resnet50")
    assert lite.tail_blocks == -1  # only EfficientNet-Lite trunks can be split (ml.train.split_tail)
    assert (resnet.arch, resnet.tail_blocks) == ("resnet50", None)


def test_one_split_training_of_the_frozen_trunk_recipe_trains_its_head_alone(shapes, tmp_path: Path) -> None:
    # fit_bundle and `python -m ml.train` without --cv-folds go through train(): it must train the recipe's
    # head on cached views, not fine-tune the whole network with the head's learning rate.
    from ml.models import create_model
    from ml.train import train

    cfg = _cfg(epochs_finetune=2)
    result = train(cfg, shapes[::4], shapes[1::8], SHAPE_CLASSES, tmp_path)
    expected = train_tail(cfg, TrunkFeatures(cfg, len(SHAPE_CLASSES)), shapes[::4], SHAPE_CLASSES).state_dict()
    trained, imagenet = result.model.state_dict(), create_model(cfg.arch, len(SHAPE_CLASSES), "imagenet").state_dict()
    assert trained.keys() == expected.keys()
    assert all(torch.equal(trained[k], expected[k]) for k in trained)
    assert all(torch.equal(trained[k], imagenet[k]) for k in trained if not k.startswith("classifier."))
    assert result.best_val_acc is not None and result.preprocess == cfg.preprocess() and not result.model.training
