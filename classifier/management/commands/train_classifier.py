"""Train a car model classifier on the catalog's exterior images and register it."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.management.commands._training_args import add_training_arguments, training_options
from classifier.services.training import LABEL_LEVELS, TrainingError, classifier_train
from ml import CLASSIFIER_ARCH


class Command(BaseCommand):
    help = (
        "Train a classifier on the catalog's exterior images (labels: 'Make Model' or model-year catalog "
        "labels) on all of them, with figures, temperature and abstain threshold from a near-duplicate-grouped "
        "cross-validation (--cv-folds 0: a train/val/test split instead), and register the bundle."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--years", type=int, nargs="*", help="only car models of these model years")
        parser.add_argument("--label-level", choices=LABEL_LEVELS, default="model")
        parser.add_argument("--cv-folds", type=int, default=5, help="cross-validation folds (0: one split)")
        add_training_arguments(parser, default_arch=CLASSIFIER_ARCH)

    def handle(self, *args: object, **options: object) -> None:
        try:
            opts = training_options(
                options,
                years=options["years"] or None,
                label_level=options["label_level"],
                cv_folds=options["cv_folds"],
            )
            outcome = classifier_train(
                opts,
                activate=bool(options["activate"]),
                progress=bool(options["progress"]),
                reuse_cached=not options["retrain"],
            )
        except TrainingError as exc:
            raise CommandError(str(exc)) from None
        training_set = outcome.training_set
        for label, count in training_set.counts.items():
            self.stdout.write(f"  {label}: {count} images")
        for label, count in training_set.dropped.items():
            self.stdout.write(f"  dropped {label}: only {count} images (< {opts.min_images_per_class})")
        self.stdout.write(
            f"  accepted feedback photos: {training_set.feedback} of the {len(training_set.records)} images"
        )
        metrics = outcome.metrics
        summary = ", ".join(
            f"{name} {metrics[name]:.3f}"
            for name in ("top1", "top3", "macro_f1", "ece_calibrated", "coverage")
            if isinstance(metrics.get(name), float)
        )
        if metrics.get("folds"):
            summary += f" ({metrics['evaluated_on']})"
        self.stdout.write(
            self.style.SUCCESS(
                f"{'Reused' if outcome.reused_cached_bundle else 'Trained'} {outcome.model_version}"
                f"{' (active)' if outcome.model_version.is_active else ''}: {summary or 'no test metrics'}"
            )
        )
