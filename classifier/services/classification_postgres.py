"""The worker's two hot writes as single PostgreSQL statements.

Every photo passes through a claim and a result write. Through the ORM they take five statements
(a transaction around locking reads and an update) and seven (a transaction around an update per job
and an insert of the predictions) per batch; the worker then spends about as much CPU in Django, psycopg
and PostgreSQL as on a twentieth of the photo's model compute. Each is one statement here, atomic by
itself, so it needs no transaction around it.

Only the common case comes here: a queued leader, and results for jobs on their first attempt.
``classification.py`` keeps the portable ORM path, which handles the rest (redelivered batches,
redone jobs) and every other database.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from django.db import connection

from classifier.models import Classification, ClassificationPrediction, ClassificationStatus

RESULT_FIELDS = (
    "id",
    "gate_verdict",
    "gate_confidence",
    "gate_version",
    "classifier_version",
    "predicted_car_model",
    "confidence",
    "abstained",
    "make_fallback",
    "queue_wait_ms",
    "decode_ms",
    "gate_ms",
    "classifier_ms",
)
PREDICTION_FIELDS = ("classification", "rank", "label", "car_model", "probability")


def applies() -> bool:
    return connection.vendor == "postgresql"


def _quote(name: str) -> str:
    return connection.ops.quote_name(name)


def _column(model: type, field_name: str) -> str:
    return _quote(model._meta.get_field(field_name).column)


def _values_rows(model: type, field_names: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
    """A VALUES list whose every placeholder is cast to its column's type, and the parameters prepared for it."""
    fields = [model._meta.get_field(name) for name in field_names]
    placeholders = "(" + ", ".join(f"%s::{field.cast_db_type(connection)}" for field in fields) + ")"
    params = [
        field.get_db_prep_save(value, connection) for row in rows for field, value in zip(fields, row, strict=True)
    ]
    return "VALUES " + ", ".join([placeholders] * len(rows)), params


def claim_queued_batch(leader_id: uuid.UUID, size: int, now: dt.datetime) -> list[Classification]:
    """Mark a queued leader and up to ``size - 1`` of the newest other queued jobs running, in one statement.

    [] when the leader was not queued once its row was locked (another task took it, or it is being
    redone): the caller then decides through the general path. The leader comes first in the result.
    """
    table, field = _quote(Classification._meta.db_table), lambda name: _column(Classification, name)
    pk, status, created_at, started_at = field("id"), field("status"), field("created_at"), field("started_at")
    queue_wait = field("queue_wait_ms")
    # The members are locked with SKIP LOCKED (another worker's claim is never waited for), and only
    # once the leader is locked and queued: a leader that is gone or taken claims nothing.
    sql = f"""
        WITH leader AS (
            SELECT {pk} FROM {table} WHERE {pk} = %s AND {status} = %s FOR UPDATE
        ), members AS (
            SELECT {pk} FROM {table}
            WHERE {status} = %s AND {pk} <> %s AND EXISTS (SELECT 1 FROM leader)
            ORDER BY {created_at} DESC
            LIMIT %s
            FOR UPDATE SKIP LOCKED
        ), picked AS (
            SELECT {pk} FROM leader UNION ALL SELECT {pk} FROM members
        )
        UPDATE {table} AS job SET
            {status} = %s,
            {field("attempts")} = job.{field("attempts")} + 1,
            {started_at} = %s,
            {field("batch_leader")} = %s,
            {field("batch_size")} = (SELECT count(*) FROM picked),
            {queue_wait} = COALESCE(
                job.{queue_wait},
                GREATEST(0, EXTRACT(EPOCH FROM COALESCE(job.{started_at}, %s) - job.{created_at}) * 1000)
            )
        FROM picked
        WHERE job.{pk} = picked.{pk}
        RETURNING job.*
    """
    queued = ClassificationStatus.QUEUED
    params = [leader_id, queued, queued, leader_id, size - 1, ClassificationStatus.RUNNING, now, leader_id, now]
    claimed = list(Classification.objects.raw(sql, params))
    claimed.sort(key=lambda job: (job.pk != leader_id, -job.created_at.timestamp()))
    return claimed


def finish_batch(
    results: Sequence[dict[str, Any]],
    predictions: Sequence[dict[str, Any]],
    *,
    total_ms: float,
    finished_at: dt.datetime,
) -> None:
    """Write the results of jobs on their first attempt and their predictions, in one statement.

    ``results`` hold ``RESULT_FIELDS``, ``predictions`` hold ``PREDICTION_FIELDS``. A job another
    delivery has already finished keeps its result: its row is skipped, and so are its predictions.
    """
    table, field = _quote(Classification._meta.db_table), lambda name: _column(Classification, name)
    pk, status = field("id"), field("status")
    result_values, params = _values_rows(
        Classification, RESULT_FIELDS, [[result[name] for name in RESULT_FIELDS] for result in results]
    )
    copied = ", ".join(f"{field(name)} = result.{field(name)}" for name in RESULT_FIELDS if name != "id")
    update = f"""
        UPDATE {table} AS job SET
            {status} = %s, {copied}, {field("total_ms")} = %s, {field("error")} = '', {field("finished_at")} = %s
        FROM result
        WHERE job.{pk} = result.{pk} AND job.{status} <> %s
        RETURNING job.{pk}
    """
    params += [ClassificationStatus.DONE, total_ms, finished_at, ClassificationStatus.DONE]
    with_result = f"WITH result ({', '.join(field(name) for name in RESULT_FIELDS)}) AS ({result_values})"
    if not predictions:
        sql = f"{with_result} {update}"
    else:
        prediction_columns = [_column(ClassificationPrediction, name) for name in PREDICTION_FIELDS]
        prediction_values, prediction_params = _values_rows(
            ClassificationPrediction,
            PREDICTION_FIELDS,
            [[prediction[name] for name in PREDICTION_FIELDS] for prediction in predictions],
        )
        # Only the predictions of the jobs this statement finished.
        sql = f"""
            {with_result}, finished AS ({update})
            INSERT INTO {_quote(ClassificationPrediction._meta.db_table)} ({", ".join(prediction_columns)})
            SELECT {", ".join(f"prediction.{column}" for column in prediction_columns)}
            FROM ({prediction_values}) AS prediction ({", ".join(prediction_columns)})
            JOIN finished ON finished.{pk} = prediction.{_column(ClassificationPrediction, "classification")}
        """
        params += prediction_params
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
