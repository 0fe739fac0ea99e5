"""Classification intake: validate an uploaded photo, store it and queue its job.

The website and the REST API come through here. An upload is validated and normalised once
(``catalog.imaging.normalise``) in the request; only the upright RGB JPEG is stored (an upload that
already is one is kept as it came, less its metadata). The job's task is sent once the row is
committed; when the broker cannot take it the job stays queued and ``task_unsent_since`` tells the
periodic requeue (``classifier.services.execution``) to send it later.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from catalog import imaging
from classifier.models import Classification

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upload:
    """One uploaded file as received: its bytes and the name the visitor gave it."""

    data: bytes
    filename: str = ""


def upload_read(file: Any, limits: imaging.ImageLimits | None = None) -> Upload:
    """Read a Django UploadedFile, refusing one over the byte limit before reading it into memory."""
    limits = limits or imaging.limits_from_settings()
    size = getattr(file, "size", None)
    if size is not None and size > limits.max_bytes:
        raise imaging.ImageRejected(
            f"The file is {size / (1024 * 1024):.0f} MB; the limit is {limits.max_bytes / (1024 * 1024):.0f} MB.",
            "too_large",
        )
    data = file.read(limits.max_bytes + 1)
    return Upload(data=data, filename=os.path.basename(getattr(file, "name", "") or "")[:255])


def batch_limit() -> int:
    return int(getattr(settings, "CARSITE_CLASSIFY_BATCH_LIMIT", 10))


def classification_create(
    upload: Upload, *, owner_token: str = "", user: Any = None, limits: imaging.ImageLimits | None = None
) -> Classification:
    """Validate one upload, store it and queue its classification. Raises ``ImageRejected``."""
    return classification_create_batch([upload], owner_token=owner_token, user=user, limits=limits)[0]


def batch_size_check(count: int) -> None:
    """Refuse a request of more photos than one batch may hold (``ImageRejected``, code too_many_images)."""
    if count > batch_limit():
        raise imaging.ImageRejected(
            f"{count} images were sent; at most {batch_limit()} can be classified in one request.",
            "too_many_images",
        )


def classification_create_batch(
    uploads: Sequence[Upload],
    *,
    owner_token: str = "",
    user: Any = None,
    limits: imaging.ImageLimits | None = None,
) -> list[Classification]:
    """Validate every upload first, then store them all in one transaction: one bad image rejects the batch."""
    if not uploads:
        raise imaging.ImageRejected("No image was uploaded.", "missing_image")
    batch_size_check(len(uploads))
    limits = limits or imaging.limits_from_settings()
    normalised: list[tuple[Upload, imaging.NormalisedImage]] = []
    for index, upload in enumerate(uploads):
        try:
            image = imaging.normalise(upload.data, limits, perceptual_hash=False, keep_clean_jpeg=True)
            normalised.append((upload, image))
        except imaging.ImageRejected as exc:
            if len(uploads) == 1:
                raise
            name = upload.filename or f"image {index + 1}"
            raise imaging.ImageRejected(f"{name}: {exc}", exc.code) from exc

    owner = user if user is not None and getattr(user, "is_authenticated", False) else None
    created: list[Classification] = []
    stored_files: list[Classification] = []
    try:
        with transaction.atomic():  # several photos are stored all or nothing
            for upload, image in normalised:
                classification = Classification(
                    id=uuid.uuid4(),
                    original_filename=upload.filename,
                    sha256=image.sha256,
                    owner_token=owner_token,
                    user=owner,
                    created_at=timezone.now(),
                )
                # The name comes from the UUID (see classification_upload_to): never a visitor's file name.
                classification.image.save("upload.jpg", ContentFile(image.jpeg), save=False)
                # Known from normalising: set after the save, which would otherwise re-read them from the file.
                classification.width, classification.height = image.width, image.height
                stored_files.append(classification)
                classification.save(force_insert=True)
                created.append(classification)
                classification_enqueue_on_commit(classification.pk)
    except Exception:
        for classification in stored_files:
            classification.image.delete(save=False)
        raise
    return created


def classification_enqueue_on_commit(classification_id: uuid.UUID) -> None:
    """Send the job's task once the current transaction commits (at once outside one)."""

    def enqueue() -> None:
        from classifier.tasks import classify

        try:
            classify.delay(str(classification_id))
        except Exception:
            # The upload is committed and stays queued: the periodic requeue sends its task once the broker is back.
            logger.exception("could not send the task of classification %s: it stays queued", classification_id)
            Classification.objects.filter(pk=classification_id, task_unsent_since__isnull=True).update(
                task_unsent_since=timezone.now()
            )

    transaction.on_commit(enqueue)
