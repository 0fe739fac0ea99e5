"""Import labelled car photos into the catalog (safe to run again)."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.services.photos import PhotoImportError, photos_import


class Command(BaseCommand):
    help = (
        "Import labelled photos as catalog images: a folder with a manifest.csv (file, make, model, year, "
        "view, subject), '<year> <make> <model>/' sub-folders, or The Car Connection file names "
        "'Make_Model_Year_….jpg'. Copies and near-copies of stored images are skipped (near-copies are kept "
        "with --keep-near-duplicates)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", help="folder of photos")
        parser.add_argument(
            "--view-from-manifest",
            action="store_true",
            help="take each photo's view (exterior/interior/other) from the manifest, with confidence 1.0",
        )
        parser.add_argument(
            "--year-as-label",
            action="store_true",
            help="file each photo under its own model year (creating e.g. '2011 Acura MDX'); by default all "
            "photos of a make and model go to the newest catalog car model of that make and model",
        )
        parser.add_argument(
            "--keep-near-duplicates",
            action="store_true",
            help="skip only exact copies: keep near-copies (resized or recompressed versions of one photo) as "
            "training data, which cross-validation keeps in one fold",
        )
        parser.add_argument("--verbose-items", action="store_true", help="list every file that was not imported")

    def handle(self, *args: object, **options: object) -> None:
        try:
            result = photos_import(
                Path(str(options["directory"])),
                view_from_manifest=bool(options["view_from_manifest"]),
                year_as_label=bool(options["year_as_label"]),
                near_duplicate_distance=0 if options["keep_near_duplicates"] else None,
            )
        except PhotoImportError as exc:
            raise CommandError(str(exc)) from None
        if int(options["verbosity"]) >= 2:
            for label in result.car_models_created:
                self.stdout.write(f"created car model {label}")
        elif result.car_models_created:
            self.stdout.write(f"{len(result.car_models_created)} car models created (-v 2 lists them).")
        reasons: dict[str, int] = {}
        for item in result.items:
            if item.outcome in ("rejected", "skipped"):
                if options["verbose_items"] or item.outcome == "rejected":
                    self.stdout.write(f"{item.outcome} {item.path.name}: {item.reason}")
                reasons[f"{item.outcome}: {item.reason}"] = reasons.get(f"{item.outcome}: {item.reason}", 0) + 1
        for reason, count in sorted(reasons.items()):
            self.stdout.write(f"  {count} × {reason}")
        if result.specs_from_names is not None:
            filled = result.specs_from_names.counts
            self.stdout.write(
                f"Specifications from the photos' file names (approximate): {filled['created']} created, "
                f"{filled['updated']} updated, {filled['unchanged']} unchanged, {filled['skipped']} skipped."
            )
        counts = result.counts
        self.stdout.write(
            self.style.SUCCESS(
                f"{counts['imported']} imported, {counts['duplicate']} duplicate, "
                f"{counts['skipped']} skipped, {counts['rejected']} rejected."
            )
        )
