"""Celery glue: each task takes ids, calls one service, and keeps no state of its own."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import close_old_connections, transaction

from streaming.delivery import lanes, sweep

logger = logging.getLogger(__name__)


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
