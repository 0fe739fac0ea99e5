"""A worker task runs its job together with other queued jobs: same answers, one result each, nothing lost."""

from __future__ import annotations

import pytest

from classifier.models import Classification, ClassificationPrediction, ClassificationStatus
from classifier.services import classification_postgres
from classifier.services.classification import (
    Upload,
    classification_create,
    classification_fail_stuck,
    classification_run,
)
from tests.classification.test_pipeline import INTERIOR_PHOTO, _prediction_rows

pytestmark = [pytest.mark.django_db, pytest.mark.slow, pytest.mark.serving]


def _queue(photos: list[bytes]) -> list[Classification]:
    """Queued jobs whose task messages have not run (on-commit callbacks are not executed here)."""
    return [classification_create(Upload(data, f"photo{i}.jpg")) for i, data in enumerate(photos)]


def _answer(job: Classification) -> tuple:
    job.refresh_from_db()
    rows = _prediction_rows(job)
    return (
        job.status,
        job.gate_verdict,
        round(job.gate_confidence, 4),
        [(rank, label, car_model_id) for rank, label, car_model_id, _ in rows],
        [round(probability, 4) for *_, probability in rows],
    )


@pytest.fixture
def interior_photo(shared_data) -> bytes:
    return (shared_data / "car-photos" / "images" / INTERIOR_PHOTO).read_bytes()


@pytest.fixture(params=["one statement", "orm"])
def write_path(request, monkeypatch) -> str:
    """Both ways a batch is claimed and written: PostgreSQL's single statements, and the portable ORM path."""
    if request.param == "orm":
        monkeypatch.setattr(classification_postgres, "applies", lambda: False)
    elif not classification_postgres.applies():
        pytest.skip("the single-statement writes are PostgreSQL's")
    return request.param


def _stored(job: Classification) -> tuple:
    """What a finished job holds, less what differs from run to run (times, ids)."""
    job.refresh_from_db()
    assert job.started_at <= job.finished_at and job.queue_wait_ms >= 0 and job.total_ms >= job.decode_ms >= 0
    return (
        *_answer(job),
        job.gate_version_id,
        job.classifier_version_id,
        job.predicted_car_model_id,
        job.abstained,
        job.make_fallback,
        job.attempts,
        job.batch_size,
        job.error,
        job.gate_ms is None,
        job.classifier_ms is None,
    )


def test_one_task_runs_queued_jobs_together_with_the_answers_they_get_alone(
    settings, active_gate, active_classifier, mdx_photo, interior_photo, write_path
):
    settings.CARSITE_CLASSIFY_WORKER_BATCH = 1
    alone = _queue([mdx_photo, interior_photo])
    for job in alone:
        classification_run(job.pk)
    expected = [_answer(job) for job in alone]
    assert [job.batch_size for job in alone] == [1, 1]

    settings.CARSITE_CLASSIFY_WORKER_BATCH = 4
    batched = _queue([mdx_photo, interior_photo, mdx_photo, interior_photo, mdx_photo])
    classification_run(batched[0].pk)

    for job in batched:
        job.refresh_from_db()
    # The leader's task took its own job and the three newest queued ones; the second waits for its own task.
    together, waiting = [batched[0], *batched[2:]], batched[1]
    assert [job.status for job in batched] == [ClassificationStatus.DONE, ClassificationStatus.QUEUED] + [
        ClassificationStatus.DONE
    ] * 3
    assert {job.batch_leader for job in together} == {batched[0].pk}
    assert {job.batch_size for job in together} == {4}
    assert [_answer(job) for job in together] == [expected[0], expected[0], expected[1], expected[0]]
    # Interior photos are never sent to the classifier, batched or not.
    assert batched[3].classifier_version_id is None
    assert batched[0].total_ms >= batched[0].gate_ms + batched[0].classifier_ms

    # The members' own task messages arrive later and change nothing.
    finished_at = {job.pk: job.finished_at for job in together}
    for job in together[1:]:
        classification_run(job.pk)
    for job in together:
        job.refresh_from_db()
        assert (job.attempts, job.finished_at) == (1, finished_at[job.pk])
    classification_run(waiting.pk)
    assert _answer(waiting) == expected[1]


def test_deliveries_of_jobs_a_batch_finished_here_ask_the_database_nothing(
    settings, active_gate, mdx_photo, write_path, django_capture_on_commit_callbacks, monkeypatch
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from classifier.services import classification as service

    settings.CARSITE_CLASSIFY_WORKER_BATCH = 2
    leader, member = _queue([mdx_photo, mdx_photo])
    with django_capture_on_commit_callbacks(execute=True):
        assert classification_run(leader.pk) == 2
    with CaptureQueriesContext(connection) as queries:
        assert classification_run(member.pk) == 0
    assert len(queries) == 0

    # Remembered for a while only: later deliveries ask the database again (one status query).
    monkeypatch.setattr(service, "_FINISHED_HERE_SECONDS", 0.0)
    with CaptureQueriesContext(connection) as queries:
        assert classification_run(member.pk) == 0
    assert len(queries) == 1
    member.refresh_from_db()
    assert (member.status, member.attempts) == (ClassificationStatus.DONE, 1)


def test_a_batch_whose_write_was_rolled_back_is_not_remembered_as_finished(
    settings, active_gate, mdx_photo, django_capture_on_commit_callbacks
):
    from django.db import transaction

    settings.CARSITE_CLASSIFY_WORKER_BATCH = 2
    leader, member = _queue([mdx_photo, mdx_photo])
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            classification_run(leader.pk)
            raise RuntimeError("the write is rolled back")
        # Still queued in the database, so its own delivery must run it, not skip it.
        assert classification_run(member.pk) == 2
    member.refresh_from_db()
    assert member.status == ClassificationStatus.DONE


def test_both_write_paths_store_the_same_result(
    settings, active_gate, active_classifier, mdx_photo, interior_photo, monkeypatch
):
    if not classification_postgres.applies():
        pytest.skip("the single-statement writes are PostgreSQL's")
    settings.CARSITE_CLASSIFY_WORKER_BATCH = 3
    photos = [mdx_photo, interior_photo, mdx_photo]
    one_statement = _queue(photos)
    classification_run(one_statement[0].pk)
    monkeypatch.setattr(classification_postgres, "applies", lambda: False)
    orm = _queue(photos)
    classification_run(orm[0].pk)

    assert [_stored(job) for job in one_statement] == [_stored(job) for job in orm]
    for leader, job in ((one_statement[0], one_statement[1]), (orm[0], orm[1])):
        assert (job.batch_leader, job.started_at) == (leader.pk, Classification.objects.get(pk=leader.pk).started_at)


def test_a_result_written_meanwhile_by_another_delivery_is_kept(
    settings, active_gate, active_classifier, mdx_photo, write_path, monkeypatch
):
    from classifier.services import classification as service

    settings.CARSITE_CLASSIFY_WORKER_BATCH = 2
    leader, member = _queue([mdx_photo, mdx_photo])
    classify_images = service._classify_images

    def finished_elsewhere_meanwhile(images):
        outcomes = classify_images(images)
        Classification.objects.filter(pk=member.pk).update(
            status=ClassificationStatus.DONE, gate_verdict="other", error="written by another delivery"
        )
        return outcomes

    monkeypatch.setattr(service, "_classify_images", finished_elsewhere_meanwhile)
    classification_run(leader.pk)

    leader.refresh_from_db()
    member.refresh_from_db()
    assert (leader.status, leader.gate_verdict) == (ClassificationStatus.DONE, "exterior")
    assert ClassificationPrediction.objects.filter(classification=leader).count() == 5
    assert (member.gate_verdict, member.error) == ("other", "written by another delivery")
    assert not ClassificationPrediction.objects.filter(classification=member).exists()


def test_a_batch_left_running_by_a_dead_worker_is_redone_once(settings, active_gate, active_classifier, mdx_photo):
    from datetime import timedelta

    from django.utils import timezone

    settings.CARSITE_CLASSIFY_WORKER_BATCH = 3
    jobs = _queue([mdx_photo, mdx_photo, mdx_photo])
    classification_run(jobs[0].pk)
    expected = _answer(jobs[1])
    # What a worker killed mid-batch leaves behind: all three running under the leader, the lease expired.
    Classification.objects.filter(pk__in=[job.pk for job in jobs]).update(
        status=ClassificationStatus.RUNNING, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    # A member's own message redoes it alone; the leader's redoes the rest of its batch.
    assert classification_run(jobs[1].pk) == 1
    assert classification_run(jobs[0].pk) == 2
    for job in jobs:
        job.refresh_from_db()
        assert (job.status, job.attempts) == (ClassificationStatus.DONE, 2)
        assert ClassificationPrediction.objects.filter(classification=job).count() == 5
        assert _answer(job) == expected


def test_a_deleted_leader_still_brings_back_its_batch(settings, active_gate, active_classifier, mdx_photo):
    settings.CARSITE_CLASSIFY_WORKER_BATCH = 2
    leader, member = _queue([mdx_photo, mdx_photo])
    Classification.objects.filter(pk__in=[leader.pk, member.pk]).update(
        status=ClassificationStatus.RUNNING, batch_leader=leader.pk, attempts=1
    )
    Classification.objects.filter(pk=leader.pk).delete()

    classification_run(leader.pk)

    member.refresh_from_db()
    assert (member.status, member.attempts) == (ClassificationStatus.DONE, 2)


def test_an_unreadable_photo_fails_alone_in_its_batch(
    settings, active_gate, active_classifier, mdx_photo, write_path
):
    settings.CARSITE_CLASSIFY_WORKER_BATCH = 3
    jobs = _queue([mdx_photo, mdx_photo, mdx_photo])
    jobs[1].image.storage.delete(jobs[1].image.name)

    classification_run(jobs[0].pk)

    statuses = list(
        Classification.objects.filter(pk__in=[job.pk for job in jobs]).order_by("created_at").values_list(
            "status", flat=True
        )
    )
    assert statuses == [ClassificationStatus.DONE, ClassificationStatus.FAILED, ClassificationStatus.DONE]
    assert "could not be found" in Classification.objects.get(pk=jobs[1].pk).error


def test_a_stopped_task_fails_every_job_of_its_batch(settings, active_gate, mdx_photo):
    jobs = _queue([mdx_photo, mdx_photo, mdx_photo])
    Classification.objects.filter(pk__in=[jobs[0].pk, jobs[1].pk]).update(
        status=ClassificationStatus.RUNNING, batch_leader=jobs[0].pk
    )

    assert classification_fail_stuck(jobs[0].pk, "Classification took too long and was stopped.") == 2

    jobs_by_status = dict(Classification.objects.values_list("pk", "status"))
    assert jobs_by_status[jobs[0].pk] == jobs_by_status[jobs[1].pk] == ClassificationStatus.FAILED
    assert jobs_by_status[jobs[2].pk] == ClassificationStatus.QUEUED


def test_jobs_whose_task_was_lost_are_queued_again_and_finish(
    settings, active_gate, active_classifier, mdx_photo, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.core.management import CommandError, call_command
    from django.utils import timezone

    from classifier.services.classification import classifications_requeue_stuck

    settings.CARSITE_CLASSIFY_WORKER_BATCH = 1
    lost, recent, dead_leader, dead_member, busy, orphan, finished_leader = _queue([mdx_photo] * 7)
    long_ago = timezone.now() - timedelta(hours=3)
    # Queued long ago: the broker lost its message. Queued just now: its message is on its way.
    Classification.objects.filter(pk=lost.pk).update(created_at=long_ago)
    # A batch whose worker died hours ago, and one running right now.
    Classification.objects.filter(pk__in=[dead_leader.pk, dead_member.pk]).update(
        status=ClassificationStatus.RUNNING, batch_leader=dead_leader.pk, started_at=long_ago, attempts=1
    )
    Classification.objects.filter(pk=busy.pk).update(
        status=ClassificationStatus.RUNNING, batch_leader=busy.pk, started_at=timezone.now(), attempts=1,
        lease_expires_at=timezone.now() + timedelta(minutes=1),
    )
    # Left running under a leader that has finished since: that leader's task would do nothing for it.
    classification_run(finished_leader.pk)
    Classification.objects.filter(pk=orphan.pk).update(
        status=ClassificationStatus.RUNNING, batch_leader=finished_leader.pk, started_at=long_ago, attempts=1
    )

    # No broker in these tests: the tasks sent again run in-process once the sweep commits, as in the
    # embedded default.
    with django_capture_on_commit_callbacks(execute=True):
        assert classifications_requeue_stuck(queued_for=timedelta(minutes=30)) == 4

    statuses = dict(Classification.objects.values_list("pk", "status"))
    for job in (lost, dead_leader, dead_member, orphan):
        assert statuses[job.pk] == ClassificationStatus.DONE, job
    assert (statuses[recent.pk], statuses[busy.pk]) == (ClassificationStatus.QUEUED, ClassificationStatus.RUNNING)
    assert Classification.objects.get(pk=dead_member.pk).attempts == 2
    assert ClassificationPrediction.objects.filter(classification=dead_member).count() == 5
    # Nothing stuck is left: running it again (here through the command) sends nothing.
    call_command("requeue_stuck_classifications", "--queued-minutes", "30")
    assert classifications_requeue_stuck(queued_for=timedelta(minutes=30)) == 0
    with pytest.raises(CommandError, match="more than 0"):
        call_command("requeue_stuck_classifications", "--queued-minutes", "0")
