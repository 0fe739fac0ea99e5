"""Label the view (exterior / interior / other) of catalog images with the active gate, as Celery tasks."""

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from catalog.models import CarImage, ImageView
from classifier import tasks
from classifier.models import ModelKind
from classifier.selectors.registry import active_model_version


class Command(BaseCommand):
    help = "Queue gate runs over catalog images (a batch of image ids per task) to set their view."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--only-unknown", action="store_true", help="only images whose view is unknown")
        parser.add_argument("--batch-size", type=int, default=32, help="images per task (default 32)")

    def handle(self, *args: object, **options: object) -> None:
        if active_model_version(ModelKind.GATE) is None:
            raise CommandError("No gate is active: run `manage.py train_gate --zero-shot --activate` first.")
        batch_size = int(options["batch_size"])  # type: ignore[arg-type]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        images = CarImage.objects.order_by("pk")
        if options["only_unknown"]:
            images = images.filter(view=ImageView.UNKNOWN)
        ids = list(images.values_list("pk", flat=True))
        batches = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
        with transaction.atomic():
            for batch in batches:
                transaction.on_commit(lambda batch=batch: tasks.label_views.delay(batch))
        self.stdout.write(self.style.SUCCESS(f"Queued {len(ids)} images in {len(batches)} tasks."))
