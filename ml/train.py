"""Transfer learning: two-phase training (frozen-backbone head, then fine-tune) with resumable checkpoints,
or the frozen-trunk recipe (cached trunk outputs, a trained tail); grouped cross-validation of either.

Run: python -m ml.train --manifest M.csv --arch efficientnet_lite0 --output BUNDLE_DIR
(torchrun --nproc_per_node=N -m ml.train ... for DDP; --recipe classifier --cv-folds 5: the car classifier's
recipe, cross-validated, then trained on every photo).
"""

# ruff: noqa: E402  (torch is imported after the check that names the extra to install)
from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import random
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ml import CLASSIFIER_ARCH, require_torch

require_torch("Training (ml.train)")  # before importing it: a serving install says which extra it lacks
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from ml.crossval import CrossValidation
from ml.data import ImageManifestDataset, ManifestRecord, Split, group_near_duplicates, read_manifest, split_grouped
from ml.evaluate import topk_accuracy
from ml.models import (
    LITE_PARAMS,
    LITE_STAGES,
    backbone_modules,
    create_model,
    default_preprocess,
    head_parameters,
    set_backbone_trainable,
)
from ml.presets import ClassificationPresetEval, ClassificationPresetTrain, PreprocessConfig

log = logging.getLogger("ml.train")


@dataclass
class TrainConfig:
    arch: str = "efficientnet_lite0"
    weights: str | None = "imagenet"
    # Defaults tuned on the train/val parts of the shared car photos (bench/ml_benchmark.py, ~120 training
    # photos, 7 classes): the head needs many steps at a high LR; whole-network fine-tuning at 1e-4 or more
    # (or a 10x faster head) lowered val accuracy, so it is gentle and kept only if val says it helps.
    epochs_head: int = 12  # phase 1: backbone frozen, only the new head learns
    epochs_finetune: int = 6  # phase 2: whole network at a much lower LR
    lr_head: float = 1e-2
    lr_finetune: float = 2e-5
    optimizer: str = "adamw"  # adamw | sgd
    momentum: float = 0.9
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    warmup_epochs: int = 1
    # fine-tune: the head's LR is lr_finetune times this (discriminative LRs; 1 = same as the backbone)
    finetune_head_lr_mult: float = 1.0
    # fine-tune with BatchNorm in eval mode: statistics of tiny batches of a few hundred photos are
    # noisier than the ImageNet ones, and train/eval BN mismatch costs accuracy on small data
    freeze_bn: bool = True
    batch_size: int = 16  # small data: more optimiser steps per epoch
    num_workers: int = 0
    crop_size: int | None = None  # None: the architecture's native resolution
    resize_size: int | None = None
    auto_augment: str | None = "trivialaugment"
    min_scale: float = 0.35
    random_erase: float = 0.0
    seed: int = 0
    patience: int = 5  # early stopping: fine-tune epochs without val improvement
    device: str = "auto"
    amp: bool = True  # only used on CUDA
    channels_last: bool = True  # only used on CUDA
    max_steps_per_epoch: int | None = None
    cache_images: bool = True  # decode once, keep in RAM (small datasets)
    # (height, width): feed the whole frame resized to it (PreprocessConfig.frame_size); None: resize + crop
    frame_size: tuple[int, int] | None = None
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect (width / height) range of the training crops
    # The frozen-trunk recipe when set (EfficientNet-Lite only): the stem and all blocks but the last
    # `tail_blocks` keep their ImageNet weights, and their output on each photo (plain, mirrored and
    # `cached_views` augmented views) is computed once; only the tail (those blocks, the 1x1 head conv and
    # the linear head) trains, for `epochs_finetune` epochs. -1: the linear head alone. None: train().
    tail_blocks: int | None = None
    cached_views: int = 4
    # EfficientNet-Lite: stages whose output is pooled beside the head's features (ml.models.with_pooled_stages)
    pooled_stages: tuple[int, ...] = ()

    def preprocess(self) -> PreprocessConfig:
        base = default_preprocess(self.arch)
        crop = self.crop_size or base.crop_size
        resize = self.resize_size or (base.resize_size if crop == base.crop_size else round(crop * 256 / 224))
        frame = tuple(self.frame_size) if self.frame_size is not None else None
        return PreprocessConfig(crop, resize, base.mean, base.std, base.interpolation, frame)  # type: ignore[arg-type]

    def train_preset(self) -> ClassificationPresetTrain:
        pre = self.preprocess()
        return ClassificationPresetTrain(
            pre.crop_size,
            pre.mean,
            pre.std,
            pre.interpolation,
            auto_augment=self.auto_augment,
            random_erase=self.random_erase,
            min_scale=self.min_scale,
            frame_size=pre.frame_size,
            ratio=tuple(self.crop_ratio),  # type: ignore[arg-type]
        )


def classifier_recipe(arch: str = CLASSIFIER_ARCH) -> TrainConfig:
    """The car classifier's recipe, chosen by grouped 5-fold cross-validation on the shared photos
    (bench/ml_benchmark.py; its docstring has every variant's figures): a frozen ImageNet trunk whose
    features on the plain, mirrored and four augmented views of each photo are cached, and the linear head
    trained on them for a fixed 60 epochs. The features are the head's pooled output and the pooled output
    of every stage: on lite0 the head alone gave 76.8% top-1 and answered 56% of the photos at 90% precision;
    adding the stages from the last one down raised both step by step, to about 82% and 77-79%; lite1 (the
    demo's) 85.4% and 91%."""
    if arch not in LITE_PARAMS:  # ResNet-50/101 with the user's weights: split_tail knows only Lite trunks
        return TrainConfig(arch=arch)
    return TrainConfig(
        arch=arch,
        pooled_stages=tuple(range(LITE_STAGES)),
        auto_augment="colorjitter",
        min_scale=0.35,
        tail_blocks=-1,
        cached_views=4,
        epochs_head=0,
        epochs_finetune=60,
        lr_finetune=1e-3,
        warmup_epochs=1,
        batch_size=32,
        label_smoothing=0.1,
    )


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_acc: float | None
    labels: list[str]
    preprocess: PreprocessConfig
    work_dir: Path
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class _DistInfo:
    def __init__(self) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def _resolve_device(name: str, dist_info: _DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and dist_info.enabled:
        return torch.device("cuda", dist_info.local_rank)
    return torch.device(name)


def _lr_lambda(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Linear warm-up then cosine decay to 0, per optimiser step."""

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def _make_optimizer(
    cfg: TrainConfig,
    params: list[nn.Parameter],
    lr: float,
    head_params: Sequence[nn.Parameter] = (),
    head_lr_mult: float = 1.0,
) -> torch.optim.Optimizer:
    """Parameter groups: decay/no-decay x backbone/head; head params get lr * head_lr_mult."""
    head_ids = {id(p) for p in head_params}
    groups = []
    for is_head, group_lr in ((False, lr), (True, lr * head_lr_mult)):
        mine = [p for p in params if (id(p) in head_ids) == is_head]
        # no weight decay on norms and biases (1-D tensors): decaying them only hurts
        for decay, wd in ((True, cfg.weight_decay), (False, 0.0)):
            chosen = [p for p in mine if (p.ndim > 1) == decay]
            if chosen:
                groups.append({"params": chosen, "weight_decay": wd, "lr": group_lr})
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=True)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def _evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """(mean loss, accuracy) computed per image over the whole loader."""
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    with torch.inference_mode():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out = model(x).float()
            loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            count += len(y)
    return (loss_sum / count, correct / count) if count else (float("nan"), float("nan"))


def keep_batchnorm_statistics(module: nn.Module) -> None:
    """Put every BatchNorm of a training ``module`` in eval mode: it normalises with, and keeps, its statistics."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def train_one_epoch(
    net: nn.Module,
    model: nn.Module,
    loader: DataLoader,
    steps: int,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    *,
    phase: str,
    freeze_bn: bool,
    channels_last: bool,
    use_amp: bool,
    bar: Any,
) -> tuple[float, int, int, float]:
    """``steps`` optimiser steps of ``net`` (``model``, or its DDP wrapper) over ``loader``.

    Returns (summed loss, correct, images, seconds spent waiting for data) of this process."""
    net.train()
    if phase == "head":
        for m in backbone_modules(model):
            m.eval()  # frozen backbone: keep its BatchNorm statistics too
    elif freeze_bn:
        keep_batchnorm_statistics(model)
    loss_sum, correct, count, wait = 0.0, 0, 0, 0.0
    t_ready = time.perf_counter()
    for step, (x, y) in enumerate(loader):
        if step >= steps:
            break
        wait += time.perf_counter() - t_ready
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            out = net(x)
            loss = criterion(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        loss_sum += float(loss.detach()) * len(y)
        correct += int((out.detach().argmax(1) == y).sum())
        count += len(y)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum / count:.3f}", acc=f"{correct / count:.3f}")
        t_ready = time.perf_counter()
    bar.close()
    return loss_sum, correct, count, wait


@dataclass
class _Progress:
    """Where a run is and what it has chosen: what last.pt carries besides the weights and the optimiser."""

    history: list[dict[str, Any]] = field(default_factory=list)
    next_epoch: int = 0
    best_epoch: int = -1
    best_key: tuple[float, float] = (-math.inf, -math.inf)  # (val accuracy, -val loss)
    stopped_early: bool = False


def _resume(last_path: Path, model: nn.Module, config: TrainConfig, labels: list[str]) -> tuple[_Progress, dict]:
    """Restore the weights, progress and RNG state of ``last_path``; also returns the checkpoint itself (its
    optimiser state is restored once the phase it was saved in is rebuilt)."""
    ckpt = torch.load(last_path, map_location="cpu", weights_only=False)
    if ckpt["labels"] != labels or ckpt["config"]["arch"] != config.arch:
        raise ValueError(f"checkpoint {last_path} was trained with other labels/arch; refusing to resume")
    model.load_state_dict(ckpt["model"])
    _set_rng_state(ckpt["rng"])
    progress = _Progress(
        history=list(ckpt["history"]),
        next_epoch=int(ckpt["epoch"]) + 1,
        best_epoch=int(ckpt["best_epoch"]),
        best_key=tuple(ckpt["best_key"]),
        stopped_early=bool(ckpt.get("stopped_early", False)),
    )
    return progress, ckpt


def _save_checkpoint(path: Path, progress: _Progress, epoch: int, phase: str, parts: dict[str, Any]) -> None:
    """last.pt: everything a resumed run needs to replay what an uninterrupted one would have done."""
    state = {
        **parts,
        "epoch": epoch,
        "phase": phase,
        "history": progress.history,
        "best_epoch": progress.best_epoch,
        "best_key": list(progress.best_key),
        "stopped_early": progress.stopped_early,
        "rng": _rng_state(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a crash mid-save never leaves a broken checkpoint


def _epoch_loader(
    config: TrainConfig,
    train_ds: ImageManifestDataset,
    epoch: int,
    sampler: DistributedSampler | None,
    device: torch.device,
) -> DataLoader:
    """Epoch ``epoch``'s batches, reseeded from (seed, epoch) so a resumed run draws what an uninterrupted one
    would."""
    _seed_everything(config.seed * 1000 + epoch)
    if sampler is not None:
        sampler.set_epoch(epoch)
        epoch_sampler: Any = sampler
    else:
        epoch_sampler = RandomSampler(train_ds, generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
    return DataLoader(
        train_ds,
        batch_size=config.batch_size,
        sampler=epoch_sampler,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        drop_last=len(train_ds) > config.batch_size,
        persistent_workers=False,
    )


def _phase_optimizer(
    config: TrainConfig, model: nn.Module, phase: str, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimiser and schedule of ``phase``: "head" trains the new head alone, "finetune" the whole network."""
    frozen = phase == "head"
    set_backbone_trainable(model, not frozen)
    params = [p for p in model.parameters() if p.requires_grad]
    lr = config.lr_head if frozen else config.lr_finetune
    optimizer = _make_optimizer(
        config, params, lr, list(head_parameters(model)), 1.0 if frozen else config.finetune_head_lr_mult
    )
    epochs = config.epochs_head if frozen else config.epochs_finetune
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(config.warmup_epochs * steps_per_epoch, epochs * steps_per_epoch)
    )
    return optimizer, scheduler


def _log_epoch(row: dict[str, Any], total_epochs: int) -> None:
    log.info(
        "epoch %d/%d %s train loss %.4f acc %.3f | val loss %s acc %s | lr %.2e | %.1f img/s | data wait %.0f%%",
        row["epoch"],
        total_epochs,
        row["phase"],
        row["train_loss"],
        row["train_acc"],
        "-" if row["val_loss"] is None else f"{row['val_loss']:.4f}",
        "-" if row["val_acc"] is None else f"{row['val_acc']:.3f}",
        row["lr"],
        row["images_per_s"],
        100 * row["data_wait_share"],
    )


def train(
    config: TrainConfig,
    train_records: Sequence[ManifestRecord],
    val_records: Sequence[ManifestRecord],
    labels: Sequence[str],
    work_dir: str | Path,
    progress: bool = True,
    resume: bool = False,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train `config.arch` on the records; returns the best-on-validation model (eval mode).

    A frozen-trunk recipe (``tail_blocks`` set) trains its tail on cached views for its fixed epochs instead
    (``train_frozen_trunk``): no checkpoints, no early stopping.
    Checkpoints go to work_dir/last.pt every epoch (model, optimiser, scheduler, epoch, history,
    RNG) and work_dir/best.pt. Each epoch reseeds from (seed, epoch), so a resumed run replays
    exactly what an uninterrupted run would have done.
    """
    from tqdm.auto import tqdm

    labels = list(labels)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if config.tail_blocks is not None:
        return train_frozen_trunk(config, train_records, val_records, labels, work)
    dist_info = _DistInfo()
    if dist_info.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = _resolve_device(config.device, dist_info)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    use_amp = config.amp and device.type == "cuda"
    channels_last = config.channels_last and device.type == "cuda"
    is_main = dist_info.is_main
    show_bar = progress and is_main

    _seed_everything(config.seed)
    pre = config.preprocess()
    class_to_idx = {lab: i for i, lab in enumerate(labels)}
    train_ds = ImageManifestDataset(train_records, class_to_idx, config.train_preset(), cache=config.cache_images)
    val_ds = ImageManifestDataset(
        val_records, class_to_idx, ClassificationPresetEval.from_config(pre), cache=config.cache_images
    )
    if len(train_ds) == 0:
        raise ValueError("no training records")
    sampler: DistributedSampler | None = None
    if dist_info.enabled:
        sampler = DistributedSampler(train_ds, shuffle=True, seed=config.seed, drop_last=False)
    val_loader = DataLoader(val_ds, batch_size=config.batch_size, shuffle=False, num_workers=config.num_workers)

    model = create_model(config.arch, len(labels), config.weights, config.pooled_stages).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    total_epochs = config.epochs_head + config.epochs_finetune
    last_path, best_path = work / "last.pt", work / "best.pt"
    run, ckpt = _Progress(), None
    if resume and last_path.is_file():
        run, ckpt = _resume(last_path, model, config, labels)
        if is_main:
            log.info("resumed from %s at epoch %d", last_path, run.next_epoch)

    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    phase: str | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
    net: nn.Module = model

    for epoch in range(run.next_epoch, 0 if run.stopped_early else total_epochs):
        train_loader = _epoch_loader(config, train_ds, epoch, sampler, device)
        steps_per_epoch = len(train_loader)
        if config.max_steps_per_epoch:
            steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
        want = "head" if epoch < config.epochs_head else "finetune"
        if want != phase:
            phase = want
            optimizer, scheduler = _phase_optimizer(config, model, phase, steps_per_epoch)
            if ckpt is not None and ckpt.get("phase") == phase:  # resuming mid-phase
                optimizer.load_state_dict(ckpt["optimizer"])
                scheduler.load_state_dict(ckpt["scheduler"])
                if use_amp and ckpt.get("scaler"):
                    scaler.load_state_dict(ckpt["scaler"])
            ckpt = None
            net = model
            if dist_info.enabled:
                net = nn.parallel.DistributedDataParallel(
                    model, device_ids=[device.index] if device.type == "cuda" else None
                )
        assert optimizer is not None and scheduler is not None and phase is not None

        t_start = time.perf_counter()
        loss_sum, correct, count, wait = train_one_epoch(
            net,
            model,
            train_loader,
            steps_per_epoch,
            criterion,
            optimizer,
            scheduler,
            scaler,
            device,
            phase=phase,
            freeze_bn=config.freeze_bn,
            channels_last=channels_last,
            use_amp=use_amp,
            bar=tqdm(
                total=steps_per_epoch,
                desc=f"epoch {epoch + 1}/{total_epochs} [{phase}]",
                disable=not show_bar,
                leave=False,
            ),
        )
        train_time = time.perf_counter() - t_start
        if dist_info.enabled:
            t = torch.tensor([loss_sum, correct, count], dtype=torch.float64, device=device)
            dist.all_reduce(t)
            loss_sum, correct, count = float(t[0]), int(t[1]), int(t[2])
        val_loss, val_acc = _evaluate(model, val_loader, device) if len(val_ds) else (None, None)
        row = {
            "epoch": epoch + 1,
            "phase": phase,
            "train_loss": loss_sum / max(count, 1),
            "train_acc": correct / max(count, 1),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": optimizer.param_groups[0]["lr"],  # the backbone's (or, in the head phase, the head's)
            "images_per_s": count / train_time if train_time > 0 else float("nan"),
            "data_wait_share": wait / train_time if train_time > 0 else 0.0,
            "epoch_time_s": time.perf_counter() - t_start,
        }
        run.history.append(row)
        if is_main:
            _log_epoch(row, total_epochs)
        # model selection: best val accuracy, ties broken by lower val loss
        key = (val_acc, -val_loss) if val_acc is not None and val_loss is not None else (float(epoch), 0.0)
        if key > run.best_key:
            run.best_key, run.best_epoch = key, epoch
            if is_main:
                torch.save({"model": model.state_dict(), "epoch": epoch}, best_path)
        since_best = epoch - max(run.best_epoch, config.epochs_head - 1)
        run.stopped_early = (
            phase == "finetune" and val_acc is not None and since_best >= config.patience and epoch < total_epochs - 1
        )
        if is_main:
            parts = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if use_amp else None,
                "labels": labels,
                "config": asdict(config),
            }
            _save_checkpoint(last_path, run, epoch, phase, parts)
        if dist_info.enabled:
            dist.barrier()
        if on_epoch_end is not None:
            on_epoch_end(row)
        if run.stopped_early:
            if is_main:
                log.info("early stopping: no val improvement for %d epochs", since_best)
            break

    if best_path.is_file():
        model.load_state_dict(torch.load(best_path, map_location=device, weights_only=True)["model"])
    model.eval()
    return TrainResult(
        model=model,
        history=run.history,
        best_epoch=run.best_epoch + 1,
        best_val_acc=run.best_key[0] if run.history and run.history[0]["val_acc"] is not None else None,
        labels=labels,
        preprocess=pre,
        work_dir=work,
        stopped_early=run.stopped_early,
    )


# ---------------------------------------------------------------- the frozen-trunk recipe


def split_tail(model: nn.Module, tail_blocks: int) -> tuple[nn.Module, nn.Module]:
    """(trunk, tail) of an EfficientNet-Lite, made of the model's own modules: tail(trunk(x)) == model(x)."""
    stem, head, pool, classifier = (_submodule(model, name) for name in ("stem", "head", "pool", "classifier"))
    blocks = list(_submodule(model, "blocks").children())
    if tail_blocks < 0:  # the linear head alone, on the features the model's own forward pools
        return _PooledFeatures(model), classifier
    if getattr(model, "pooled_stages", ()):
        raise ValueError("a model with pooled stages trains its linear head alone (tail_blocks -1)")
    cut = len(blocks) - tail_blocks
    tail = nn.Sequential(*blocks[cut:], head, pool, nn.Flatten(1), classifier)
    return nn.Sequential(stem, *blocks[:cut]), tail


class _PooledFeatures(nn.Module):
    """What an EfficientNet-Lite's classifier sees: its ``forward_features``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)  # type: ignore[operator]


def _submodule(model: nn.Module, name: str) -> nn.Module:
    module = getattr(model, name)
    if not isinstance(module, nn.Module):
        raise TypeError(f"{type(model).__name__}.{name} is not a module: not an EfficientNet-Lite")
    return module


class TrunkFeatures:
    """The frozen trunk's output on every photo's views, computed once per photo and kept.

    The trunk has ImageNet weights and sees no label, so the cross-validation folds and the final model
    share these: view 0 is the photo as the eval preset prepares it, view 1 its mirror image, the rest
    training augmentations seeded by the photo's path (the same views whichever fold asks first).
    """

    def __init__(self, config: TrainConfig, num_classes: int) -> None:
        self.config = config
        torch.manual_seed(config.seed)  # the new head's initial weights
        self.model = create_model(config.arch, num_classes, config.weights, config.pooled_stages).eval()
        self.trunk, _ = split_tail(self.model, config.tail_blocks if config.tail_blocks is not None else -1)
        self.eval_tf = ClassificationPresetEval.from_config(config.preprocess())
        self.train_tf = config.train_preset()
        self._views: dict[str, torch.Tensor] = {}

    def views(self, records: Sequence[ManifestRecord]) -> torch.Tensor:
        """[photos, views, ...] trunk outputs of ``records``."""
        from ml.data import load_rgb

        for r in records:
            key = str(r.path)
            if key not in self._views:
                img = load_rgb(r.path)
                plain = self.eval_tf(img)
                torch.manual_seed(self.config.seed * 1_000_003 + zlib.crc32(Path(key).name.encode()))
                views = [plain, plain.flip(-1), *(self.train_tf(img) for _ in range(self.config.cached_views))]
                with torch.inference_mode():
                    self._views[key] = self.trunk(torch.stack(views)).clone()
        return torch.stack([self._views[str(r.path)] for r in records])

    def logits(self, model: nn.Module, records: Sequence[ManifestRecord]) -> torch.Tensor:
        """``model``'s logits on the plain view of ``records``: what ``model(eval preset(photo))`` gives."""
        _, tail = split_tail(model, self.config.tail_blocks if self.config.tail_blocks is not None else -1)
        with torch.inference_mode():
            return tail.eval()(self.views(records)[:, 0]).float()


def train_tail_one_epoch(
    tail: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batch_size: int,
    generator: torch.Generator,
) -> float:
    """One pass over the cached views in a seeded order; BatchNorm keeps its ImageNet statistics. Mean loss."""
    tail.train()
    keep_batchnorm_statistics(tail)
    order, loss_sum = torch.randperm(len(x), generator=generator), 0.0
    for start in range(0, len(x), batch_size):
        batch = order[start : start + batch_size]
        loss = criterion(tail(x[batch]), y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += float(loss.detach()) * len(batch)
    return loss_sum / len(x)


def train_tail(
    config: TrainConfig, features: TrunkFeatures, records: Sequence[ManifestRecord], labels: Sequence[str]
) -> nn.Module:
    """A copy of the ImageNet model whose tail learned ``records`` from their cached views (eval mode)."""
    assert config.tail_blocks is not None
    # views first: computing them reseeds torch per photo, which must not change the training's random draws
    views = features.views(records)
    torch.manual_seed(config.seed)
    c2i = {lab: i for i, lab in enumerate(labels)}
    x = views.flatten(0, 1)
    y = torch.tensor([c2i[r.label] for r in records]).repeat_interleave(views.shape[1])
    model = copy.deepcopy(features.model)
    _, tail = split_tail(model, config.tail_blocks)
    params = list(tail.parameters())
    optimizer = _make_optimizer(
        config, params, config.lr_finetune, list(head_parameters(model)), config.finetune_head_lr_mult
    )
    steps = math.ceil(len(x) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(config.warmup_epochs * steps, config.epochs_finetune * steps)
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    generator = torch.Generator().manual_seed(config.seed)
    for epoch in range(config.epochs_finetune):
        loss = train_tail_one_epoch(tail, x, y, criterion, optimizer, scheduler, config.batch_size, generator)
        log.debug("tail epoch %d/%d loss %.4f", epoch + 1, config.epochs_finetune, loss)
    return model.eval()


def train_frozen_trunk(
    config: TrainConfig,
    train_records: Sequence[ManifestRecord],
    val_records: Sequence[ManifestRecord],
    labels: Sequence[str],
    work_dir: Path,
) -> TrainResult:
    """``train`` for a frozen-trunk recipe: the tail learns ``train_records`` for the recipe's fixed epochs;
    ``val_records`` are only scored (they calibrate the bundle in ``fit_bundle``)."""
    labels = list(labels)
    features = TrunkFeatures(config, len(labels))
    model = train_tail(config, features, train_records, labels)
    val_acc = None
    if val_records:
        targets = torch.tensor([labels.index(r.label) for r in val_records])
        val_acc = topk_accuracy(features.logits(model, val_records), targets, 1)
    return TrainResult(
        model=model,
        history=[],
        best_epoch=config.epochs_finetune,
        best_val_acc=val_acc,
        labels=labels,
        preprocess=config.preprocess(),
        work_dir=work_dir,
    )


# ---------------------------------------------------------------- cross-validate -> train on all -> bundle


def cross_validate_and_fit(
    config: TrainConfig,
    records: Sequence[ManifestRecord],
    labels: Sequence[str],
    k: int = 5,
    work_dir: str | Path | None = None,
    progress: bool = False,
) -> tuple[CrossValidation, nn.Module]:
    """Out-of-fold predictions of the recipe over ``records`` (grouped ``k``-fold), and its model on all of them.

    The recipe makes no choice on the scored fold: it trains for a fixed number of epochs (no validation
    split, no early stopping) or chooses inside the training folds, and temperature and threshold come from
    the out-of-fold predictions.
    """
    from ml.crossval import cross_validate

    labels = list(labels)
    score: Callable[[nn.Module, Sequence[ManifestRecord]], torch.Tensor]
    if config.tail_blocks is not None:
        trunk = TrunkFeatures(config, len(labels))

        def fit_model(train_records: list[ManifestRecord]) -> nn.Module:
            return train_tail(config, trunk, train_records, labels)

        score = trunk.logits
    else:
        work = Path(work_dir or tempfile.mkdtemp(prefix="cv-"))
        runs = iter(range(k + 1))

        def fit_model(train_records: list[ManifestRecord]) -> nn.Module:
            return train(config, train_records, [], labels, work / f"run{next(runs)}", progress=progress).model

        def score_model(model: nn.Module, held_out: Sequence[ManifestRecord]) -> torch.Tensor:
            from ml.evaluate import predict_logits

            eval_tf = ClassificationPresetEval.from_config(config.preprocess())
            unlabelled = ImageManifestDataset([replace(r, label=labels[0]) for r in held_out], {labels[0]: 0}, eval_tf)
            return predict_logits(model, unlabelled)[0]

        score = score_model

    def fit(train_records: list[ManifestRecord]) -> Callable[[list[ManifestRecord]], torch.Tensor]:
        model = fit_model(train_records)
        return lambda held_out: score(model, held_out)

    cv = cross_validate(records, labels, fit, k=k, seed=config.seed)
    return cv, fit_model(list(records))


def fit_bundle_cv(
    config: TrainConfig,
    records: Sequence[ManifestRecord],
    output: str | Path,
    kind: str = "classifier",
    labels: Sequence[str] | None = None,
    k: int = 5,
    work_dir: str | Path | None = None,
    progress: bool = False,
    target_precision: float = 0.9,
    extra_metrics: dict[str, Any] | None = None,
) -> tuple[Path, nn.Module, dict[str, Any]]:
    """Cross-validate the recipe, train it on all ``records`` and save a bundle whose metrics, temperature
    and abstain threshold are the out-of-fold ones (records need their near-duplicate groups set)."""
    from ml.bundle import save_bundle

    labels = sorted({r.label for r in records}) if labels is None else list(labels)
    output = Path(output)
    work = Path(work_dir) if work_dir else output.parent / f".{output.name}-work"
    cv, model = cross_validate_and_fit(config, records, labels, k, work, progress)
    temperature, threshold = cv.calibration(target_precision)
    report_dir = work / "report"
    metrics = cv.report(report_dir, temperature, threshold)
    metrics.update({"n_train": len(records), "target_precision": target_precision, **(extra_metrics or {})})
    save_bundle(
        output,
        model,
        kind=kind,
        arch=config.arch,
        labels=labels,
        preprocess=config.preprocess(),
        temperature=temperature,
        abstain_threshold=threshold,
        mode="softmax",
        metrics=metrics,
        split=Split(train=list(records)),
        extra={"train_config": asdict(config), "cv_folds": cv.folds},
        report_dir=report_dir,
    )
    return output, model, metrics


# ---------------------------------------------------------------- train -> calibrate -> bundle


def fit_bundle(
    config: TrainConfig,
    split: Split,
    output: str | Path,
    kind: str = "classifier",
    labels: Sequence[str] | None = None,
    work_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool = False,
    target_precision: float = 0.9,
    extra_metrics: dict[str, Any] | None = None,
) -> tuple[Path, TrainResult, dict[str, Any]]:
    """Train on split.train, calibrate on split.val, score on split.test and save a bundle.

    ``extra_metrics`` (facts about the training data, such as how many photos came from feedback) join
    the bundle's metrics."""
    from ml.bundle import save_bundle
    from ml.evaluate import choose_abstain_threshold, evaluate_predictions, fit_temperature, predict_logits

    labels = sorted({r.label for r in split.train}) if labels is None else list(labels)
    output = Path(output)
    work = Path(work_dir) if work_dir else output.parent / f".{output.name}-work"
    result = train(config, split.train, split.val, labels, work, progress=progress, resume=resume)
    if not _DistInfo().is_main:
        return output, result, {}  # only rank 0 calibrates and writes the bundle
    c2i = {lab: i for i, lab in enumerate(labels)}
    eval_tf = ClassificationPresetEval.from_config(result.preprocess)
    temperature, threshold = 1.0, 0.0
    if split.val:
        v_logits, v_t = predict_logits(result.model, ImageManifestDataset(split.val, c2i, eval_tf))
        temperature = fit_temperature(v_logits, v_t)
        threshold = choose_abstain_threshold((v_logits / temperature).softmax(1), v_t, target_precision)
    report_dir = work / "report"
    test_records = split.test or split.val
    metrics: dict[str, Any] = {"evaluated_on": "test" if split.test else "val"}
    if test_records:
        t_logits, t_t = predict_logits(result.model, ImageManifestDataset(test_records, c2i, eval_tf))
        metrics.update(evaluate_predictions(t_logits, t_t, labels, report_dir, temperature, result.history))
    metrics.update(
        {
            "best_epoch": result.best_epoch,
            "best_val_acc": result.best_val_acc,
            "n_train": len(split.train),
            "n_val": len(split.val),
            "n_test": len(split.test),
            **(extra_metrics or {}),
        }
    )
    save_bundle(
        output,
        result.model,
        kind=kind,
        arch=config.arch,
        labels=labels,
        preprocess=result.preprocess,
        temperature=temperature,
        abstain_threshold=threshold,
        mode="softmax",
        metrics=metrics,
        split=split,
        extra={"train_config": asdict(config), "history": result.history},
        report_dir=report_dir,
    )
    return output, result, metrics


def main(argv: list[str] | None = None) -> int:
    d = TrainConfig()  # the CLI's defaults are the tuned recipe's
    p = argparse.ArgumentParser(description="Train a carsite classifier/gate and write a model bundle.")
    p.add_argument("--manifest", required=True, help="CSV with path,label[,group]")
    p.add_argument("--output", required=True, help="bundle directory to write")
    p.add_argument("--kind", choices=["classifier", "gate"], default="classifier")
    p.add_argument(
        "--recipe",
        choices=["classifier", "options"],
        default="options",
        help="'classifier': ml.train.classifier_recipe (only --arch/--weights/--seed/--device apply)",
    )
    p.add_argument(
        "--cv-folds",
        type=int,
        default=0,
        help="grouped k-fold cross-validation, then train on everything (0: one train/val/test split)",
    )
    p.add_argument("--arch", default="efficientnet_lite0")
    p.add_argument("--weights", default="imagenet", help="'imagenet', 'none' or a local state-dict path")
    p.add_argument("--epochs-head", type=int, default=d.epochs_head)
    p.add_argument("--epochs-finetune", type=int, default=d.epochs_finetune)
    p.add_argument("--lr-head", type=float, default=d.lr_head)
    p.add_argument("--lr-finetune", type=float, default=d.lr_finetune)
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--crop-size", type=int, default=None, help="default: the architecture's resolution")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--test-fraction", type=float, default=0.15)
    p.add_argument("--dedup-distance", type=int, default=6, help="dHash distance for near-duplicate groups")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = TrainConfig(
        arch=a.arch,
        weights=None if a.weights == "none" else a.weights,
        epochs_head=a.epochs_head,
        epochs_finetune=a.epochs_finetune,
        lr_head=a.lr_head,
        lr_finetune=a.lr_finetune,
        optimizer=a.optimizer,
        weight_decay=a.weight_decay,
        label_smoothing=a.label_smoothing,
        warmup_epochs=a.warmup_epochs,
        batch_size=a.batch_size,
        num_workers=a.num_workers,
        patience=a.patience,
        crop_size=a.crop_size,
        seed=a.seed,
        device=a.device,
    )
    if a.recipe == "classifier":
        cfg = replace(classifier_recipe(a.arch), weights=cfg.weights, seed=a.seed, device=a.device)
    records = group_near_duplicates(read_manifest(a.manifest), max_distance=a.dedup_distance)
    if a.cv_folds:
        out, _, metrics = fit_bundle_cv(
            cfg, records, a.output, kind=a.kind, k=a.cv_folds, work_dir=a.work_dir, progress=not a.no_progress
        )
        print(
            f"bundle written to {out}; {metrics['evaluated_on']}: top-1 {metrics['top1_mean']:.3f} "
            f"± {metrics['top1_std']:.3f}, coverage {metrics['coverage']:.3f}, ECE {metrics['ece_calibrated']:.3f}"
        )
        return 0
    split = split_grouped(records, a.val_fraction, a.test_fraction, a.seed)
    log.info("split: %d train / %d val / %d test", len(split.train), len(split.val), len(split.test))
    out, _, metrics = fit_bundle(
        cfg, split, a.output, kind=a.kind, work_dir=a.work_dir, progress=not a.no_progress, resume=a.resume
    )
    if _DistInfo().is_main:
        print(f"bundle written to {out}; test top-1 {metrics.get('top1')}")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
