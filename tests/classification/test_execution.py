"""A worker task runs its job and the oldest queued others: each answer as alone, one result each, nothing lost."""

from __future__ import annotations

import pytest

from classifier.models import Classification, ClassificationPrediction, ClassificationStatus
from classifier.services import execution as service
from classifier.services.execution import classification_fail_stuck, classification_run
from classifier.services.intake import Upload, classification_create
from tests.classification.test_pipeline import INTERIOR_PHOTO, _prediction_rows

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


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
        job.error,
        job.gate_ms is None,
        job.classifier_ms is None,
    )


@pytest.fixture
def interior_photo(shared_data) -> bytes:
    return (shared_data / "car-photos" / "images" / INTERIOR_PHOTO).read_bytes()


def _statuses(jobs: list[Classification]) -> list[str]:
    return [Classification.objects.get(pk=job.pk).status for job in jobs]


def test_a_task_runs_its_job_and_the_oldest_queued_ones_each_with_the_answer_it_gets_alone(
    active_gate, active_classifier, mdx_photo, interior_photo, settings
):
    settings.CARSITE_CLASSIFY_CLAIM_BATCH = 1
    alone = _queue([mdx_photo, interior_photo])
    for job in alone:
        assert classification_run(job.pk) == 1
    expected = [_stored(job) for job in alone]

    settings.CARSITE_CLASSIFY_CLAIM_BATCH = 3
    queued = _queue([mdx_photo, interior_photo, mdx_photo, interior_photo, mdx_photo])
    # The last job's task: its own job, then the two oldest queued ones.
    assert classification_run(queued[4].pk) == 3
    done, waiting = ClassificationStatus.DONE, ClassificationStatus.QUEUED
    assert _statuses(queued) == [done, done, waiting, waiting, done]
    # A task whose job another task has run still takes what is queued; then there is nothing left.
    assert classification_run(queued[0].pk) == 2
    assert classification_run(queued[1].pk) == 0
    assert [_stored(job) for job in queued] == [expected[0], expected[1], expected[0], expected[1], expected[0]]
    # Interior photos are never sent to the classifier.
    assert queued[1].classifier_version_id is None
    assert queued[0].total_ms >= queued[0].gate_ms + queued[0].classifier_ms

    # Later deliveries of the same jobs change nothing.
    finished_at = {job.pk: job.finished_at for job in queued}
    for job in queued:
        assert classification_run(job.pk) == 0
        job.refresh_from_db()
        assert (job.attempts, job.finished_at) == (1, finished_at[job.pk])


def test_a_delivery_of_a_finished_job_only_reads(active_gate, mdx_photo):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    (job,) = _queue([mdx_photo])
    assert classification_run(job.pk) == 1
    with CaptureQueriesContext(connection) as queries:
        assert classification_run(job.pk) == 0
    statements = [query["sql"].lstrip().split()[0].upper() for query in queries]
    # The claim's transaction shows as a savepoint inside the test's own transaction: its job, then the queue.
    assert [s for s in statements if s not in ("SAVEPOINT", "RELEASE")] == ["SELECT", "SELECT"]
    job.refresh_from_db()
    assert (job.status, job.attempts) == (ClassificationStatus.DONE, 1)


def test_a_run_whose_write_was_rolled_back_leaves_the_job_to_its_next_delivery(active_gate, mdx_photo):
    from django.db import transaction

    (job,) = _queue([mdx_photo])
    with pytest.raises(RuntimeError), transaction.atomic():
        classification_run(job.pk)
        raise RuntimeError("the write is rolled back")
    # Still queued in the database, so its next delivery must run it, not skip it.
    assert Classification.objects.get(pk=job.pk).status == ClassificationStatus.QUEUED
    assert classification_run(job.pk) == 1
    job.refresh_from_db()
    assert job.status == ClassificationStatus.DONE


def test_a_result_written_meanwhile_by_another_delivery_is_kept(active_gate, active_classifier, mdx_photo, monkeypatch):
    job, other = _queue([mdx_photo, mdx_photo])
    classify_image = service._classify_image

    def finished_elsewhere_meanwhile(image, active_ids):
        outcome = classify_image(image, active_ids)
        Classification.objects.filter(pk=job.pk).update(
            status=ClassificationStatus.DONE, gate_verdict="other", error="written by another delivery"
        )
        return outcome

    monkeypatch.setattr(service, "_classify_image", finished_elsewhere_meanwhile)
    assert classification_run(job.pk) == 2  # its batch-mate is written as usual
    assert classification_run(other.pk) == 0

    job.refresh_from_db()
    other.refresh_from_db()
    assert (job.gate_verdict, job.error) == ("other", "written by another delivery")
    assert not ClassificationPrediction.objects.filter(classification=job).exists()
    assert (other.status, other.gate_verdict) == (ClassificationStatus.DONE, "exterior")
    assert ClassificationPrediction.objects.filter(classification=other).count() == 5


def test_jobs_left_running_by_a_dead_worker_are_redone_once(active_gate, active_classifier, mdx_photo):
    from datetime import timedelta

    from django.utils import timezone

    jobs = _queue([mdx_photo, mdx_photo, mdx_photo])
    for job in jobs:
        classification_run(job.pk)
    expected = _answer(jobs[1])
    # What a worker killed mid-job leaves behind: running, the lease expired.
    Classification.objects.filter(pk__in=[job.pk for job in jobs]).update(
        status=ClassificationStatus.RUNNING, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    # Each job's own message redoes it, once.
    for job in jobs:
        assert classification_run(job.pk) == 1
        assert classification_run(job.pk) == 0
    for job in jobs:
        job.refresh_from_db()
        assert (job.status, job.attempts) == (ClassificationStatus.DONE, 2)
        assert ClassificationPrediction.objects.filter(classification=job).count() == 5
        assert _answer(job) == expected


def test_a_delivery_of_a_deleted_job_runs_only_what_is_queued(active_gate, mdx_photo):
    job, other = _queue([mdx_photo, mdx_photo])
    Classification.objects.filter(pk=job.pk).delete()

    assert classification_run(job.pk) == 1

    assert Classification.objects.get(pk=other.pk).status == ClassificationStatus.DONE
    assert not Classification.objects.filter(pk=job.pk).exists()
    assert classification_run(job.pk) == 0


def test_an_unreadable_photo_fails_alone(active_gate, active_classifier, mdx_photo):
    jobs = _queue([mdx_photo, mdx_photo, mdx_photo])
    jobs[1].image.storage.delete(jobs[1].image.name)

    for job in jobs:
        classification_run(job.pk)

    statuses = list(
        Classification.objects.filter(pk__in=[job.pk for job in jobs])
        .order_by("created_at")
        .values_list("status", flat=True)
    )
    assert statuses == [ClassificationStatus.DONE, ClassificationStatus.FAILED, ClassificationStatus.DONE]
    assert "could not be found" in Classification.objects.get(pk=jobs[1].pk).error


def test_a_stopped_task_fails_its_job_only(active_gate, mdx_photo):
    jobs = _queue([mdx_photo, mdx_photo, mdx_photo])
    Classification.objects.filter(pk__in=[jobs[0].pk, jobs[1].pk]).update(status=ClassificationStatus.RUNNING)

    assert classification_fail_stuck(jobs[0].pk, "Classification took too long and was stopped.") == 1

    jobs_by_status = dict(Classification.objects.values_list("pk", "status"))
    assert jobs_by_status[jobs[0].pk] == ClassificationStatus.FAILED
    assert jobs_by_status[jobs[1].pk] == ClassificationStatus.RUNNING
    assert jobs_by_status[jobs[2].pk] == ClassificationStatus.QUEUED
    # A finished job is never failed afterwards.
    assert classification_run(jobs[2].pk) == 1
    assert classification_fail_stuck(jobs[2].pk, "stopped") == 0
    assert Classification.objects.get(pk=jobs[2].pk).status == ClassificationStatus.DONE


def test_jobs_whose_task_was_lost_are_queued_again_and_finish(
    active_gate, active_classifier, mdx_photo, django_capture_on_commit_callbacks, settings
):
    settings.CARSITE_CLASSIFY_CLAIM_BATCH = 1  # each task its own job, so a lost message leaves its job queued
    from datetime import timedelta

    from django.core.management import CommandError, call_command
    from django.utils import timezone

    from classifier.services.execution import classifications_requeue_stuck

    lost, recent, dead, dead_too, busy, finished = _queue([mdx_photo] * 6)
    long_ago = timezone.now() - timedelta(hours=3)
    # Queued long ago: the broker lost its message. Queued just now: its message is on its way.
    Classification.objects.filter(pk=lost.pk).update(created_at=long_ago)
    # Jobs whose worker died hours ago (one claimed before leases existed), and one running right now.
    Classification.objects.filter(pk__in=[dead.pk, dead_too.pk]).update(
        status=ClassificationStatus.RUNNING, started_at=long_ago, attempts=1
    )
    Classification.objects.filter(pk=dead_too.pk).update(lease_expires_at=long_ago)
    Classification.objects.filter(pk=busy.pk).update(
        status=ClassificationStatus.RUNNING,
        started_at=timezone.now(),
        attempts=1,
        lease_expires_at=timezone.now() + timedelta(minutes=1),
    )
    classification_run(finished.pk)

    # No broker in these tests: the tasks sent again run in-process once the sweep commits, as in the
    # embedded default.
    with django_capture_on_commit_callbacks(execute=True):
        assert classifications_requeue_stuck(queued_for=timedelta(minutes=30)) == 3

    statuses = dict(Classification.objects.values_list("pk", "status"))
    for job in (lost, dead, dead_too, finished):
        assert statuses[job.pk] == ClassificationStatus.DONE, job
    assert (statuses[recent.pk], statuses[busy.pk]) == (ClassificationStatus.QUEUED, ClassificationStatus.RUNNING)
    assert Classification.objects.get(pk=dead.pk).attempts == 2
    assert Classification.objects.get(pk=finished.pk).attempts == 1
    assert ClassificationPrediction.objects.filter(classification=dead).count() == 5
    # Nothing stuck is left: running it again (here through the command) sends nothing.
    call_command("requeue_stuck_classifications", "--queued-minutes", "30")
    assert classifications_requeue_stuck(queued_for=timedelta(minutes=30)) == 0
    with pytest.raises(CommandError, match="more than 0"):
        call_command("requeue_stuck_classifications", "--queued-minutes", "0")
