"""Reads from the model registry: active versions, supported car models, evaluation reports."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from django.db.models import QuerySet

from catalog.models import CarModel
from classifier.models import ModelKind, ModelVersion
from classifier.services.registry import model_version_bundle_dir

# The only report files the admin may serve from a bundle directory.
REPORT_IMAGES = ("confusion_matrix.png", "curves.png", "risk_coverage.png")
REPORT_TABLE = "report.csv"
REPORT_MARKDOWN = "report.md"


def active_model_version(kind: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(kind=kind, is_active=True).first()


def active_model_version_id(kind: str) -> int | None:
    """The primary key of the active version of ``kind``: one cheap indexed query."""
    return ModelVersion.objects.filter(kind=kind, is_active=True).values_list("pk", flat=True).first()


def active_model_version_ids() -> dict[str, int]:
    """The primary key of the active version of every kind that has one, in one query."""
    return dict(ModelVersion.objects.filter(is_active=True).values_list("kind", "pk"))


def model_version_find(identifier: str, *, kind: str | None = None) -> ModelVersion:
    """A version by primary key or version id (a unique prefix of it will do).

    Raises ModelVersion.DoesNotExist or MultipleObjectsReturned with a message naming the candidates.
    """
    queryset = ModelVersion.objects.all()
    if kind:
        queryset = queryset.filter(kind=kind)
    identifier = identifier.strip()
    if identifier.isdigit():
        by_pk = queryset.filter(pk=int(identifier)).first()
        if by_pk is not None:
            return by_pk
    matches = list(queryset.filter(version__startswith=identifier.lower())[:5]) if identifier else []
    if not matches:
        raise ModelVersion.DoesNotExist(f"No model version {identifier!r}" + (f" of kind {kind}" if kind else ""))
    if len(matches) > 1:
        names = ", ".join(f"{m.kind} {m.version} (#{m.pk})" for m in matches)
        raise ModelVersion.MultipleObjectsReturned(f"{identifier!r} matches several versions: {names}; use --kind")
    return matches[0]


def supported_car_models() -> QuerySet[CarModel]:
    """Car models the active classifier can name (through its label mapping)."""
    active = active_model_version(ModelKind.CLASSIFIER)
    if active is None:
        return CarModel.objects.none()
    ids = active.label_links.exclude(car_model__isnull=True).values_list("car_model_id", flat=True)
    return (
        CarModel.objects.filter(pk__in=ids)
        .select_related("manufacturer")
        .order_by("manufacturer__name", "name", "-year")
    )


def model_version_label_map(model_version: ModelVersion) -> dict[str, int | None]:
    """Output label -> catalog car model id (None when the label names no catalog car model)."""
    return dict(model_version.label_links.values_list("label", "car_model_id"))


@dataclass
class ModelReport:
    bundle_dir: Path
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    markdown: str = ""
    images: dict[str, Path] = field(default_factory=dict)

    @property
    def has_table(self) -> bool:
        return bool(self.rows)


def model_version_report(model_version: ModelVersion) -> ModelReport:
    """The evaluation report stored in the version's bundle: table rows, markdown and image paths."""
    bundle_dir = model_version_bundle_dir(model_version)
    report = ModelReport(bundle_dir=bundle_dir)
    table = bundle_dir / REPORT_TABLE
    if table.is_file():
        with table.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        if rows:
            report.columns, report.rows = rows[0], rows[1:]
    markdown = bundle_dir / REPORT_MARKDOWN
    if markdown.is_file():
        report.markdown = markdown.read_text(encoding="utf-8")
    for name in REPORT_IMAGES:
        if (bundle_dir / name).is_file():
            report.images[name] = bundle_dir / name
    return report


def model_version_report_image(model_version: ModelVersion, name: str) -> Path | None:
    """One whitelisted report image of the version's bundle, or None; never any other path."""
    if name not in REPORT_IMAGES:
        return None
    path = model_version_bundle_dir(model_version) / name
    return path if path.is_file() else None
