"""Build or train the gate (exterior / interior / other) and register it."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.management.commands._training_args import add_training_arguments, training_options
from classifier.services.training import TrainingError, gate_build_zero_shot, gate_train
from ml import GATE_ARCH


class Command(BaseCommand):
    help = (
        "With --zero-shot: build the gate from ImageNet classes (no training). Otherwise cross-validate and "
        "train a 3-class view head on all catalog images whose view is known (--arch, --crop-size and --seed "
        "apply; the recipe is ml.gate.GateRecipe's)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--zero-shot", action="store_true", help="build the zero-shot gate from ImageNet")
        add_training_arguments(parser, default_arch=GATE_ARCH)

    def handle(self, *args: object, **options: object) -> None:
        try:
            if options["zero_shot"]:
                version = gate_build_zero_shot(arch=str(options["arch"]), activate=bool(options["activate"]))
                self.stdout.write(self.style.SUCCESS(f"Registered {version}"))
                return
            outcome = gate_train(
                training_options(options),
                activate=bool(options["activate"]),
                progress=bool(options["progress"]),
                reuse_cached=not options["retrain"],
            )
        except TrainingError as exc:
            raise CommandError(str(exc)) from None
        metrics = outcome.metrics
        summary = ", ".join(
            f"{name.replace('_', ' ')} {metrics[name]:.3f}"
            for name in ("macro_recall", "recall_exterior", "recall_interior", "recall_other")
            if isinstance(metrics.get(name), float)
        )
        folds = f" ({metrics['cv_folds']}-fold cross-validation)" if summary else ""
        self.stdout.write(
            self.style.SUCCESS(
                f"{'Reused' if outcome.reused_cached_bundle else 'Trained'} {outcome.model_version}"
                + (f": {summary}{folds}" if summary else "")
            )
        )
