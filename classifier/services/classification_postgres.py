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
import functools
import json
import uuid
from collections.abc import Sequence
from typing import Any

from django.db import connection

from classifier.models import Classification, ClassificationPrediction, ClassificationStatus

# The columns written, by attribute name (a foreign key by its ``_id``), in the statement's order.
RESULT_FIELDS = (
    "id",
    "gate_verdict",
    "gate_confidence",
    "gate_version_id",
    "classifier_version_id",
    "predicted_car_model_id",
    "confidence",
    "abstained",
    "make_fallback",
    "queue_wait_ms",
    "decode_ms",
    "gate_ms",
    "classifier_ms",
)
PREDICTION_FIELDS = ("classification_id", "rank", "label", "car_model_id", "probability")


def applies() -> bool:
    return connection.vendor == "postgresql"


def _quote(name: str) -> str:
    return connection.ops.quote_name(name)


def _column(model: type, field_name: str) -> str:
    return _quote(model._meta.get_field(field_name).column)


def _array_type(model: type, field_name: str) -> str:
    """The array type one column's values are sent as (JSON goes as text, cast back by the statement)."""
    field = model._meta.get_field(field_name)
    return "text[]" if field.get_internal_type() == "JSONField" else f"{field.cast_db_type(connection)}[]"


def _column_arrays(model: type, field_names: Sequence[str], rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """One list per column, in ``field_names`` order: the parameters of ``unnest`` in the statements below."""
    arrays = []
    for name in field_names:
        field = model._meta.get_field(name)
        values = [row[name] for row in rows]
        if field.get_internal_type() == "JSONField":
            values = [json.dumps(value, cls=field.encoder) for value in values]
        arrays.append(values)
    return arrays


@functools.cache
def _claim_sql() -> str:
    table, field = _quote(Classification._meta.db_table), lambda name: _column(Classification, name)
    pk, status, created_at, started_at = field("id"), field("status"), field("created_at"), field("started_at")
    queue_wait = field("queue_wait_ms")
    # The members are locked with SKIP LOCKED (another worker's claim is never waited for), and only
    # once the leader is locked and queued: a leader that is gone or taken claims nothing.
    return f"""
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
            {field("lease_expires_at")} = %s,
            {field("batch_size")} = (SELECT count(*) FROM picked),
            {queue_wait} = COALESCE(
                job.{queue_wait},
                GREATEST(0, EXTRACT(EPOCH FROM COALESCE(job.{started_at}, %s) - job.{created_at}) * 1000)
            )
        FROM picked
        WHERE job.{pk} = picked.{pk}
        RETURNING job.*
    """


def claim_queued_batch(
    leader_id: uuid.UUID, size: int, now: dt.datetime, lease_expires_at: dt.datetime
) -> list[Classification]:
    """Mark a queued leader and up to ``size - 1`` of the newest other queued jobs running, in one statement.

    [] when the leader was not queued once its row was locked (another task took it, or it is being
    redone): the caller then decides through the general path. The leader comes first in the result.
    """
    queued = ClassificationStatus.QUEUED
    params = [
        leader_id, queued, queued, leader_id, size - 1, ClassificationStatus.RUNNING, now, leader_id, lease_expires_at,
        now,
    ]
    claimed = list(Classification.objects.raw(_claim_sql(), params))
    claimed.sort(key=lambda job: (job.pk != leader_id, -job.created_at.timestamp()))
    return claimed


@functools.cache
def _finish_sql() -> str:
    # Rows go in as one array per column (unnest), so the text and the number of parameters are the same
    # for every batch: psycopg then reuses its parse of the statement, which it does not for one with
    # a placeholder per value (over 50 of them).
    table, field = _quote(Classification._meta.db_table), lambda name: _column(Classification, name)
    pk, status = field("id"), field("status")
    result_columns = ", ".join(field(name) for name in RESULT_FIELDS)
    result_arrays = ", ".join(f"%s::{_array_type(Classification, name)}" for name in RESULT_FIELDS)
    copied = ", ".join(
        f"{field(name)} = result.{field(name)}"
        + ("::jsonb" if _array_type(Classification, name) == "text[]" else "")
        for name in RESULT_FIELDS
        if name != "id"
    )
    prediction_columns = ", ".join(_column(ClassificationPrediction, name) for name in PREDICTION_FIELDS)
    prediction_arrays = ", ".join(f"%s::{_array_type(ClassificationPrediction, name)}" for name in PREDICTION_FIELDS)
    return f"""
        WITH result AS (
            SELECT * FROM unnest({result_arrays}) AS result ({result_columns})
        ), finished AS (
            UPDATE {table} AS job SET
                {status} = %s, {copied}, {field("total_ms")} = %s, {field("error")} = '', {field("finished_at")} = %s
            FROM result
            WHERE job.{pk} = result.{pk} AND job.{status} <> %s
            RETURNING job.{pk}
        )
        INSERT INTO {_quote(ClassificationPrediction._meta.db_table)} ({prediction_columns})
        SELECT prediction.* FROM unnest({prediction_arrays}) AS prediction ({prediction_columns})
        JOIN finished ON finished.{pk} = prediction.{_column(ClassificationPrediction, "classification_id")}
    """


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
    params = [
        *_column_arrays(Classification, RESULT_FIELDS, results),
        ClassificationStatus.DONE,
        total_ms,
        finished_at,
        ClassificationStatus.DONE,
        *_column_arrays(ClassificationPrediction, PREDICTION_FIELDS, predictions),
    ]
    with connection.cursor() as cursor:
        cursor.execute(_finish_sql(), params)
