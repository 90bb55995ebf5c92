"""Lanes: drain one (sync, user)'s deliveries into Intercom, in order, one worker at a time.

A lane is the ordered stream of one (sync, user)'s deliveries. ``lane_drain`` claims the lane
with a lease (one conditional UPDATE, so it works the same on PostgreSQL and SQLite and holds no
transaction open during HTTP; it only succeeds when the lane's head is due, so a wake-up for a
lane that is empty or held costs that one query), then hands the head delivery to the
``DeliverySender``, which calls Intercom's one door (``integrations.intercom.deliver``) and
moves the delivery to its next state (``states``), and takes the next one, renewing the lease
as it goes. Only one worker holds a lane at a time, which is what keeps a user's calls in
ingest order with any number of workers (invariant 3); a worker that dies simply stops
renewing, and the sweeper wakes the lane again once the lease has lapsed.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from django.conf import settings
from django.db.models import Exists, Q, Subquery
from django.utils import timezone

from integrations.intercom import (
    AuthenticationError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    client_for,
    deliver,
)
from integrations.models import Sync
from integrations.selectors import sync_config_build
from streaming.delivery.attempts import AttemptRecorder
from streaming.delivery.destination_store import DestinationStore
from streaming.delivery.ratelimit import rate_limiter_get
from streaming.delivery.states import (
    Step,
    delivery_finish,
    delivery_retry,
    delivery_wait_for_reset,
    destination_auth_hold,
    destination_health_record,
)
from streaming.models import Delivery, Lane

logger = logging.getLogger(__name__)

PENDING = Delivery.Status.PENDING
HEAD_BATCH = 20


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


class DeliverySender:
    """Sends deliveries of one sync and moves each to its next state."""

    def __init__(self, *, sync: Sync, lease: LaneLease | None = None) -> None:
        self.sync = sync
        self.destination = sync.destination
        self.lease = lease
        # Looked up once per lane, not per delivery: the sync's mapping, the client (its pooled
        # session, found by a hash of the decrypted token), the shared limiter, the caches.
        self.config = sync_config_build(sync=sync)
        self.client = client_for(
            self.destination, limiter=rate_limiter_get(destination_id=self.destination.pk)
        )
        self.state = DestinationStore(destination=self.destination)

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
        try:
            outcome = deliver(
                call=delivery.event.payload,
                config=self.config,
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
