"""Delivery: drain a lane into Intercom, sweep for lanes that need waking, purge old logs.

A lane is the ordered stream of one (sync, user)'s deliveries. ``lane_drain`` claims the lane
with a lease (one conditional UPDATE, so it works the same on PostgreSQL and SQLite and holds no
transaction open during HTTP; it only succeeds when the lane's head is due, so a wake-up for a
lane that is empty or held costs that one query), then sends the head delivery, moves it to its
next state and takes the next one, renewing the lease as it goes. A delivery's state change and
the completion of its last attempt are one statement (``rows_update_together``). Only one worker
holds a lane at a time, which is what keeps a user's calls in ingest order with any number of
workers (invariant 3); a worker that dies simply stops renewing, and the sweeper wakes the lane
again once the lease has lapsed.

What happens to a delivery (invariant 5):

- 2xx for every operation: ``succeeded`` (``delivery_succeeded`` is sent);
- nothing to send (filtered out, no identity, a page the sync ignores): ``skipped`` with the reason;
- a 4xx Intercom will answer the same way next time: ``failed`` with Intercom's message
  (``delivery_failed`` is sent);
- network error, timeout, 408, 5xx, 409 on create: one more try after a backoff (about 10 s,
  doubling, 5 min cap, with jitter); once the sync's retry window since ingest (or since the
  operator's replay) is used up:
  ``expired`` (``delivery_failed`` is sent). The retrying head blocks only its own lane;
- 429: the lane waits for the window's reset; the try does not count;
- 401: the destination is marked (``auth_failed_at``) and all its lanes are held, without using
  up tries, until someone saves it with a new token.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, Subquery
from django.utils import timezone

from integrations.intercom.client import (
    AuthenticationError,
    IntercomClient,
    PermanentError,
    RateLimitedError,
    RetryableError,
)
from integrations.models import Destination, Sync
from streaming.destination_state import AttemptRecorder, DestinationStore
from streaming.models import Delivery, DeliveryAttempt, Event, Lane
from streaming.ratelimit import rate_limiter_get
from streaming.signals import delivery_failed, delivery_succeeded
from streaming.statements import RowsUpdate, rows_update_together

if TYPE_CHECKING:
    from integrations.intercom.operations import Plan

logger = logging.getLogger(__name__)

PENDING = Delivery.Status.PENDING
# How often a destination's health columns are rewritten at most: every worker finishing a
# delivery would otherwise queue on the same row.
HEALTH_WRITE_INTERVAL = timedelta(seconds=5)
SWEEP_BATCH = 1000
HEAD_BATCH = 20
ORPHAN_SWEEP_SECONDS = 60
PURGE_BATCH = 5000


# --- the lease ----------------------------------------------------------------------------


@dataclass
class LaneLease:
    """A worker's claim on a lane, valid until ``SWITCHBOARD_LEASE_SECONDS`` after its renewal."""

    lane_id: int
    token: str
    renewed_at: float = 0.0

    @staticmethod
    def duration() -> timedelta:
        return timedelta(seconds=settings.SWITCHBOARD_LEASE_SECONDS)

    @classmethod
    def claim(cls, *, lane_id: int) -> LaneLease | None:
        """Take the lane if nobody holds it and its head is due; None otherwise."""
        token = uuid.uuid4().hex
        now = timezone.now()
        head = (
            Delivery.objects.filter(lane_id=lane_id, status=PENDING).order_by("id").values("id")[:1]
        )
        head_due = Delivery.objects.filter(pk=Subquery(head)).filter(
            Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
        )
        claimed = (
            Lane.objects.filter(pk=lane_id)
            .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
            .filter(Exists(head_due))
            .update(leased_until=now + cls.duration(), lease_token=token)
        )
        return cls(lane_id, token, time.monotonic()) if claimed else None

    def renew(self) -> bool:
        """Extend the lease; False when it was lost (it lapsed and another worker took it)."""
        kept = Lane.objects.filter(pk=self.lane_id, lease_token=self.token).update(
            leased_until=timezone.now() + self.duration()
        )
        self.renewed_at = time.monotonic()
        return bool(kept)

    def renew_if_due(self) -> bool:
        # A third of the lease leaves room for one slow HTTP exchange between two renewals.
        if time.monotonic() - self.renewed_at < settings.SWITCHBOARD_LEASE_SECONDS / 3:
            return True
        return self.renew()

    def release(self, **lane_fields: Any) -> None:
        """Give the lane up, writing ``lane_fields`` (its next due time) in the same UPDATE."""
        Lane.objects.filter(pk=self.lane_id, lease_token=self.token).update(
            leased_until=None, lease_token="", **lane_fields
        )


# --- draining -----------------------------------------------------------------------------


def lane_drain(*, lane_id: int) -> None:
    """Send the due deliveries of one lane, in order, until it is empty or must wait."""
    while True:
        lease = LaneLease.claim(lane_id=lane_id)
        if lease is None:
            # Another worker holds the lane (it looks again after releasing it), or its head is
            # not due (empty, or waiting for a retry the sweeper will wake).
            return
        end: LaneEnd = ("stopped", None)
        try:
            end = _lane_work(lease)
        finally:
            if end[0] == "stopped":
                lease.release()
            else:
                lease.release(next_attempt_at=end[1])
        # A wake-up that arrived while we held the lease was dropped by the worker that got it:
        # claim once more after emptying the lane, so a delivery queued meanwhile is not left
        # waiting (the claim fails at once when there is none).
        if end[0] != "empty":
            return


def _sync_held(sync: Sync) -> bool:
    return not sync.is_enabled or sync.destination.auth_failed_at is not None


def _heads(lane_id: int) -> list[Delivery]:
    return list(
        Delivery.objects.filter(lane_id=lane_id, status=PENDING)
        .select_related("event")
        .order_by("id")[:HEAD_BATCH]
    )


# How a lane's drain ended, and the lane's next due time to record with the release:
# "empty" (none), "waiting" for its head's next try, or "stopped" (the sync is held, the lease
# was lost, or the head's state change already recorded the lane's due time).
LaneEnd = tuple[Literal["empty", "waiting", "stopped"], datetime | None]


def _lane_work(lease: LaneLease) -> LaneEnd:
    lane = Lane.objects.select_related("sync__destination").get(pk=lease.lane_id)
    sync = lane.sync
    if _sync_held(sync):
        # Paused, or the token was refused: nothing is tried and no try is used up. The sweeper
        # skips held lanes; resuming the sync or saving a new token brings them back.
        return ("stopped", None)
    sender = DeliverySender(sync=sync, lease=lease)
    while lease.renew_if_due():
        # The lease makes this worker the only one moving the lane's deliveries, so a batch of
        # heads read at once stays valid; it saves a query per delivery on long lanes.
        batch = _heads(lease.lane_id)
        if not batch:
            return ("empty", None)
        for head in batch:
            now = timezone.now()
            if head.next_attempt_at is not None and head.next_attempt_at > now:
                return ("waiting", head.next_attempt_at)
            if sender.send(head) == "stop" or not lease.renew_if_due():
                return ("stopped", None)
        if len(batch) < HEAD_BATCH:
            # That was the whole lane; what arrived meanwhile is found by the next claim.
            return ("empty", None)
    return ("stopped", None)


Step = Literal["next", "stop"]


class DeliverySender:
    """Sends deliveries of one sync and moves each to its next state."""

    def __init__(self, *, sync: Sync, lease: LaneLease | None = None) -> None:
        self.sync = sync
        self.destination = sync.destination
        self.lease = lease
        self._config = None
        # Looked up once per lane, not per delivery: the client (its pooled session, found by a
        # hash of the decrypted token), the shared limiter, the destination's caches.
        self.client = IntercomClient.from_destination(
            self.destination, limiter=rate_limiter_get(destination_id=self.destination.pk)
        )
        self.state = DestinationStore(destination=self.destination)

    def _plan(self, event: Event) -> Plan:
        from integrations.intercom.transforms import plan_build
        from integrations.selectors import sync_config_build

        if self._config is None:
            self._config = sync_config_build(sync=self.sync)
        return plan_build(call=event.payload, config=self._config)

    def send(self, delivery: Delivery) -> Step:
        recorder = AttemptRecorder(
            delivery=delivery,
            heartbeat=self.lease.renew_if_due if self.lease else None,
            completion_deferred=True,
        )
        try:
            return self._send(delivery, recorder)
        finally:
            # Every state change below takes the last attempt's completion with it; whatever
            # path did not (an error while writing) still gets the attempt completed.
            recorder.flush()

    def _send(self, delivery: Delivery, recorder: AttemptRecorder) -> Step:
        from integrations.intercom.executor import plan_execute

        try:
            # A plan without operations (filtered, no identity, ignored page) comes back as
            # "skipped" with its reason, without a request.
            outcome = plan_execute(
                plan=self._plan(delivery.event),
                client=self.client,
                state=self.state,
                recorder=recorder,
            )
        except RateLimitedError as exc:
            delivery_wait_for_reset(delivery=delivery, error=exc, recorder=recorder)
            destination_health_record(destination=self.destination, error=str(exc))
            return "stop"
        except AuthenticationError as exc:
            recorder.flush()
            destination_auth_hold(destination=self.destination, error=str(exc))
            Delivery.objects.filter(pk=delivery.pk).update(reason=str(exc))
            return "stop"
        except PermanentError as exc:
            delivery_finish(
                delivery=delivery,
                status=Delivery.Status.FAILED,
                reason=str(exc),
                recorder=recorder,
                attempts=delivery.attempts + 1,
            )
            destination_health_record(destination=self.destination, error=str(exc))
            return "next"
        except RetryableError as exc:
            destination_health_record(destination=self.destination, error=str(exc))
            return delivery_retry(
                delivery=delivery, sync=self.sync, error=str(exc), recorder=recorder
            )
        except Exception as exc:
            # A defect in the mapping or the executor must neither wedge the lane nor lose the
            # delivery: it is retried like a network error and expires with the traceback logged.
            logger.exception("delivery %s: unexpected error", delivery.pk)
            return delivery_retry(
                delivery=delivery,
                sync=self.sync,
                error=f"Internal error: {type(exc).__name__}: {exc}",
                recorder=recorder,
            )
        status = (
            Delivery.Status.SKIPPED if outcome.status == "skipped" else Delivery.Status.SUCCEEDED
        )
        # The try that reached Intercom counts, so "after N tries" and the health page's
        # "first try" / "after retry" read the same number.
        tries = {"attempts": delivery.attempts + 1} if recorder.exchanges else {}
        delivery_finish(
            delivery=delivery,
            status=status,
            reason=outcome.reason or "",
            recorder=recorder,
            **tries,
        )
        if recorder.exchanges:
            destination_health_record(destination=self.destination, error="")
        return "next"


# --- state transitions --------------------------------------------------------------------


def retry_delay(*, attempts: int) -> timedelta:
    """About 10 s after the first try, doubling, capped at 5 min, with +/- 20 % jitter.

    The jitter spreads the retries of lanes that failed together (a 5xx storm) so that they do
    not come back as one burst.
    """
    base = settings.SWITCHBOARD_RETRY_BASE_SECONDS
    cap = settings.SWITCHBOARD_RETRY_MAX_SECONDS
    seconds = min(cap, base * 2 ** max(attempts - 1, 0)) * random.uniform(0.8, 1.2)
    return timedelta(seconds=min(seconds, cap))


def _state_write(
    delivery_update: RowsUpdate, *others: RowsUpdate, recorder: AttemptRecorder | None
) -> int:
    """A delivery's state change, with the completion of its last attempt: one round trip."""
    completion = recorder.completion_take() if recorder is not None else None
    extra = (completion,) if completion is not None else ()
    return rows_update_together(delivery_update, *others, *extra)


def delivery_finish(
    *,
    delivery: Delivery,
    status: str,
    reason: str = "",
    recorder: AttemptRecorder | None = None,
    **fields: Any,
) -> bool:
    """Move a pending delivery to a final state. False when it was no longer pending.

    ``recorder``: its held-back attempt completion is written in the same statement.
    """
    now = timezone.now()
    moved = _state_write(
        RowsUpdate(
            Delivery,
            {"pk": delivery.pk, "status": PENDING},
            {
                "status": status,
                "reason": reason,
                "completed_at": now,
                "next_attempt_at": None,
                **fields,
            },
        ),
        recorder=recorder,
    )
    if not moved:
        return False
    delivery.status, delivery.reason, delivery.completed_at = status, reason, now
    delivery.next_attempt_at = None
    for name, value in fields.items():
        setattr(delivery, name, value)
    if status == Delivery.Status.SUCCEEDED:
        delivery_succeeded.send(sender=Delivery, delivery=delivery)
    elif status in (Delivery.Status.FAILED, Delivery.Status.EXPIRED):
        delivery_failed.send(sender=Delivery, delivery=delivery)
    return True


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
    _state_write(
        RowsUpdate(
            Delivery,
            {"pk": delivery.pk, "status": PENDING},
            {"attempts": attempts, "next_attempt_at": next_attempt_at, "reason": error},
        ),
        RowsUpdate(Lane, {"pk": delivery.lane_id}, {"next_attempt_at": next_attempt_at}),
        recorder=recorder,
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
    _state_write(
        RowsUpdate(
            Delivery,
            {"pk": delivery.pk, "status": PENDING},
            {"next_attempt_at": next_attempt_at, "reason": str(error)},
        ),
        RowsUpdate(Lane, {"pk": delivery.lane_id}, {"next_attempt_at": next_attempt_at}),
        recorder=recorder,
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


# --- sweeping and retention ---------------------------------------------------------------


def lanes_sweep(*, limit: int = SWEEP_BATCH) -> list[int]:
    """Wake the lanes that are due and that no worker holds. Returns their ids.

    A lane is due when its head's next try has come (``Lane.next_attempt_at``, which ingest sets
    for a lane it adds to). Lanes are only swept a sweep interval after they became due, so the
    sweeper does not duplicate fresh wake-ups from ingest; a woken lane is not swept again for
    ``SWITCHBOARD_LEASE_SECONDS`` unless a worker looks at it first. Once a minute it also looks
    for pending deliveries in lanes without a due time (a worker died just as it found its lane
    empty while a call arrived): that search reads every pending delivery, hence not every pass.
    """
    from streaming.tasks import lanes_wake

    now = timezone.now()
    grace = timedelta(seconds=settings.SWITCHBOARD_SWEEP_SECONDS)
    has_pending = Exists(Delivery.objects.filter(lane_id=OuterRef("pk"), status=PENDING))
    due = Q(next_attempt_at__lte=now - grace)
    if cache.add("sb:sweep:orphans", 1, ORPHAN_SWEEP_SECONDS):
        orphans = Delivery.objects.filter(
            status=PENDING, created_at__lte=now - grace, lane__next_attempt_at__isnull=True
        ).values("lane_id")
        due |= Q(next_attempt_at__isnull=True, id__in=orphans)
    lane_ids = list(
        Lane.objects.filter(due, has_pending)
        .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
        .filter(sync__status=Sync.Status.ENABLED, sync__destination__auth_failed_at__isnull=True)
        .order_by(F("next_attempt_at").asc(nulls_first=True))
        .values_list("id", flat=True)[:limit]
    )
    woken = lanes_wake(lane_ids)
    if woken:
        Lane.objects.filter(id__in=woken).filter(
            Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
        ).update(next_attempt_at=now + LaneLease.duration())
    return woken


def destination_lanes_wake(*, destination_id: int) -> list[int]:
    """Wake every lane of a destination that has pending deliveries (after a token change)."""
    from streaming.tasks import lanes_wake

    lane_ids = Delivery.objects.filter(
        status=PENDING, sync__destination_id=destination_id
    ).values_list("lane_id", flat=True)
    return lanes_wake(set(lane_ids))


def retention_purge(*, now: datetime | None = None) -> tuple[int, int]:
    """Delete attempt logs and blank event payloads older than ``SWITCHBOARD_RETENTION``.

    By age only, never because a delivery succeeded: the trail is the product. An event whose
    delivery is still pending keeps its payload, since the payload is what will be sent.
    Returns (attempts deleted, payloads blanked).
    """
    cutoff = (now or timezone.now()) - settings.SWITCHBOARD_RETENTION
    attempts_deleted = 0
    while True:
        ids = list(
            DeliveryAttempt.objects.filter(started_at__lt=cutoff).values_list("id", flat=True)[
                :PURGE_BATCH
            ]
        )
        if not ids:
            break
        attempts_deleted += DeliveryAttempt.objects.filter(id__in=ids).delete()[0]
    payloads_blanked = 0
    while True:
        ids = list(
            Event.objects.filter(received_at__lt=cutoff)
            .exclude(payload={})
            .exclude(deliveries__status=PENDING)
            .values_list("id", flat=True)[:PURGE_BATCH]
        )
        if not ids:
            break
        with transaction.atomic():
            payloads_blanked += Event.objects.filter(id__in=ids).update(payload={})
    return attempts_deleted, payloads_blanked
