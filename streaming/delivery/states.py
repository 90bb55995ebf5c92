"""A delivery's next state, decided by what Intercom answered (DESIGN.md, invariant 5).

- 2xx for every operation: ``succeeded`` (``delivery_succeeded`` is sent);
- nothing to send (filtered out, no identity, a page the sync ignores): ``skipped`` with the reason;
- a 4xx Intercom will answer the same way next time: ``failed`` with Intercom's message
  (``delivery_failed`` is sent);
- network error, timeout, 408, 5xx, 409 on create: one more try after a backoff (about 10 s,
  doubling, 5 min cap, with jitter); once the sync's retry window since ingest (or since the
  operator's replay) is used up: ``expired`` (``delivery_failed`` is sent). The retrying head
  blocks only its own lane;
- 429: the lane waits for the window's reset; the try does not count;
- 401: the destination is marked (``auth_failed_at``) and all its lanes are held, without using
  up tries, until someone saves it with a new token.

Each change is one statement with the answer to the delivery's last attempt
(``storage.delivery_state_write``).
"""

from __future__ import annotations

import logging
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from integrations.intercom import RateLimitedError
from integrations.models import Destination, Sync
from streaming.delivery.attempts import AttemptRecorder
from streaming.delivery.deletion import deletion_delivery_finished, is_delete
from streaming.models import Delivery
from streaming.signals import delivery_failed, delivery_succeeded
from streaming.storage import RowsUpdate, delivery_state_write

logger = logging.getLogger(__name__)

# How often a destination's health columns are rewritten at most: every worker finishing a
# delivery would otherwise queue on the same row.
HEALTH_WRITE_INTERVAL = timedelta(seconds=5)

# What the lane does after a delivery: take the next one, or stop (the head waits).
Step = Literal["next", "stop"]


def retry_delay(*, attempts: int) -> timedelta:
    """About 10 s after the first try, doubling, capped at 5 min, with +/- 20 % jitter.

    The jitter spreads the retries of lanes that failed together (a 5xx storm) so that they do
    not come back as one burst.
    """
    base = settings.SWITCHBOARD_RETRY_BASE_SECONDS
    cap = settings.SWITCHBOARD_RETRY_MAX_SECONDS
    seconds = min(cap, base * 2 ** max(attempts - 1, 0)) * random.uniform(0.8, 1.2)
    return timedelta(seconds=min(seconds, cap))


def _answer(recorder: AttemptRecorder | None) -> RowsUpdate | None:
    # The last attempt's answer, held back to ride with the delivery's state change.
    return recorder.completion_take() if recorder is not None else None


def delivery_finish(
    *,
    delivery: Delivery,
    status: str,
    reason: str = "",
    recorder: AttemptRecorder | None = None,
    **fields: Any,
) -> bool:
    """Move a pending delivery to a final state. False when it was no longer pending.

    ``recorder``: its held-back attempt completion is written in the same statement. A
    deletion's delete call keeps the workspace's answer on the deletion record, and the
    person's purge once every delete is done, in the same transaction (``deletion``).
    """
    now = timezone.now()
    values = {
        "status": status,
        "reason": reason,
        "completed_at": now,
        "next_attempt_at": None,
        **fields,
    }
    if is_delete(delivery):
        with transaction.atomic():
            moved = delivery_state_write(
                delivery_id=delivery.pk, values=values, answer=_answer(recorder)
            )
            if moved:
                _in_memory(delivery, values)
                deletion_delivery_finished(delivery=delivery)
    else:
        moved = delivery_state_write(
            delivery_id=delivery.pk, values=values, answer=_answer(recorder)
        )
    if not moved:
        return False
    _in_memory(delivery, values)
    if status == Delivery.Status.SUCCEEDED:
        delivery_succeeded.send(sender=Delivery, delivery=delivery)
    elif status in (Delivery.Status.FAILED, Delivery.Status.EXPIRED):
        delivery_failed.send(sender=Delivery, delivery=delivery)
    return True


def _in_memory(delivery: Delivery, values: dict[str, Any]) -> None:
    for name, value in values.items():
        setattr(delivery, name, value)


def delivery_retry(
    *, delivery: Delivery, sync: Sync, error: str, recorder: AttemptRecorder | None = None
) -> Step:
    """Count a failed try; schedule the next one, or expire past the sync's retry window."""
    now = timezone.now()
    attempts = delivery.attempts + 1
    # The window runs from the delivery's last (re)queuing: a replay starts a new one.
    if now >= delivery.retry_window_start + sync.retry_window:
        delivery_finish(
            delivery=delivery,
            status=Delivery.Status.EXPIRED,
            reason=f"Retry window ({sync.retry_window}) used up after {attempts} tries. "
            f"Last error: {error}",
            recorder=recorder,
            attempts=attempts,
        )
        delivery.attempts = attempts
        return "next"
    next_attempt_at = now + retry_delay(attempts=attempts)
    delivery_state_write(
        delivery_id=delivery.pk,
        values={"attempts": attempts, "next_attempt_at": next_attempt_at, "reason": error},
        lane_id=delivery.lane_id,
        lane_due=next_attempt_at,
        answer=_answer(recorder),
    )
    delivery.attempts, delivery.next_attempt_at, delivery.reason = attempts, next_attempt_at, error
    return "stop"


def delivery_wait_for_reset(
    *, delivery: Delivery, error: RateLimitedError, recorder: AttemptRecorder | None = None
) -> None:
    """429: try again when Intercom's window resets; the try is not counted."""
    now = timezone.now()
    reset_at = datetime.fromtimestamp(error.reset_at, tz=UTC) if error.reset_at else now
    # Never sooner than a second from now, so a wrong clock cannot make a tight loop.
    next_attempt_at = max(reset_at, now + timedelta(seconds=1))
    delivery_state_write(
        delivery_id=delivery.pk,
        values={"next_attempt_at": next_attempt_at, "reason": str(error)},
        lane_id=delivery.lane_id,
        lane_due=next_attempt_at,
        answer=_answer(recorder),
    )


def destination_auth_hold(*, destination: Destination, error: str) -> None:
    """401: hold every lane of the destination until its token changes."""
    now = timezone.now()
    Destination.objects.filter(pk=destination.pk).update(
        auth_failed_at=now, last_error=error, last_error_at=now
    )
    destination.auth_failed_at = now
    logger.warning("destination %s: token refused, deliveries held: %s", destination.pk, error)


_health_written: dict[tuple[int, object, bool], float] = {}


def destination_health_record(*, destination: Destination, error: str) -> None:
    """Keep ``last_success_at`` / ``last_error`` current, writing the row a few times a minute.

    Every worker thread finishing a delivery would otherwise queue on the same row; the check in
    this process spares the query, the condition in the UPDATE spares the write across processes.
    """
    key = (destination.pk, destination.created_at, bool(error))
    if time.monotonic() - _health_written.get(key, -1e9) < HEALTH_WRITE_INTERVAL.total_seconds():
        return
    _health_written[key] = time.monotonic()
    now = timezone.now()
    recently = now - HEALTH_WRITE_INTERVAL
    rows = Destination.objects.filter(pk=destination.pk)
    if error:
        rows.filter(Q(last_error_at__isnull=True) | Q(last_error_at__lt=recently)).update(
            last_error=error, last_error_at=now
        )
    else:
        rows.filter(Q(last_success_at__isnull=True) | Q(last_success_at__lt=recently)).update(
            last_success_at=now
        )
