"""Celery glue: tasks take ids, re-fetch, and call one service.

A task message is only a wake-up for a lane; the database is the queue of record, so a lost
message delays a lane until the sweeper's next pass and loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from celery import shared_task
from django.conf import settings

logger = logging.getLogger(__name__)


@shared_task(name="switchboard.lane_drain")
def lane_drain(lane_id: int) -> None:
    from streaming.delivery import lane_drain as drain

    drain(lane_id=lane_id)


@shared_task(name="switchboard.lanes_sweep")
def lanes_sweep() -> int:
    from streaming.delivery import lanes_sweep as sweep

    return len(sweep())


@shared_task(name="switchboard.retention_purge")
def retention_purge() -> None:
    from streaming.delivery import retention_purge as purge

    attempts, payloads = purge()
    if attempts or payloads:
        logger.info("retention: %d attempts deleted, %d payloads blanked", attempts, payloads)


def lanes_wake(lane_ids: Iterable[int]) -> list[int]:
    """Ask the workers to drain these lanes. Call it from ``transaction.on_commit``.

    Never raises: it runs after the ingest transaction committed, when the caller must answer
    "accepted" whatever the broker's state. A wake-up that cannot be published is logged and
    left to the sweeper. Returns the lanes whose wake-up was published.
    """
    woken: list[int] = []
    for lane_id in sorted(set(lane_ids)):
        try:
            # No publish retries: with the broker down, each would hold the caller for seconds.
            lane_drain.apply_async(
                (lane_id,), queue=settings.CELERY_TASK_DEFAULT_QUEUE, retry=False
            )
        except Exception as exc:
            logger.warning(
                "broker unavailable, %d lane wake-ups left to the sweeper: %s",
                len(set(lane_ids)) - len(woken),
                exc,
            )
            break
        woken.append(lane_id)
    return woken
