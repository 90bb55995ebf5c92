"""Celery glue: each task takes ids, calls one service, and keeps no state of its own."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import close_old_connections, transaction

from streaming.delivery import backfill, lanes, resend, sweep
from streaming.models import BackfillJob, ResendJob

logger = logging.getLogger(__name__)

# A long job runs a slice at a time and queues its next slice, so one job never holds a worker
# thread for an hour and a cancel or a deploy takes effect between slices (each slice's
# batches are committed with the job's cursor: a slice lost with its worker is run again).
JOB_SLICE_SECONDS = 20.0


@shared_task(name="switchboard.lanes_drain")
def lanes_drain(lane_ids: list[int]) -> None:
    try:
        lanes.lanes_drain(lane_ids=lane_ids)
    except Exception:
        # Each lane's failure is logged and contained by the drain; what reaches here is the
        # claim or the release failing (the database went away). The lanes are still due in
        # the database, or leased until the lease lapses: the sweeper wakes them again.
        logger.exception("lanes %s not drained; left to the sweeper", lane_ids)
        # A connection the error broke is replaced for the next message (never inside a
        # caller's transaction: an eager run in tests).
        if not transaction.get_connection().in_atomic_block:
            close_old_connections()


@shared_task(name="switchboard.lane_drain")
def lane_drain(lane_id: int) -> None:
    """One lane per message, as published before ``lanes_drain`` existed: kept registered so
    that messages still queued from an older version are drained."""
    lanes.lane_drain(lane_id=lane_id)


@shared_task(name="switchboard.lanes_sweep")
def lanes_sweep() -> int:
    return len(sweep.lanes_sweep())


@shared_task(name="switchboard.retention_purge")
def retention_purge() -> None:
    attempts, payloads = sweep.retention_purge()
    if attempts or payloads:
        logger.info("retention: %d attempts deleted, %d payloads blanked", attempts, payloads)


@shared_task(name="switchboard.backfill_run")
def backfill_run(job_id: int) -> None:
    job = BackfillJob.objects.filter(pk=job_id).first()
    if job is not None and not backfill.backfill_run(job=job, seconds=JOB_SLICE_SECONDS):
        transaction.on_commit(lambda: backfill_run.delay(job_id))


@shared_task(name="switchboard.resend_job_run")
def resend_job_run(job_id: int) -> None:
    job = ResendJob.objects.filter(pk=job_id).first()
    if job is not None and not resend.resend_job_run(job=job, seconds=JOB_SLICE_SECONDS):
        transaction.on_commit(lambda: resend_job_run.delay(job_id))
