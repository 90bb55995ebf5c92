"""Lanes: drain (sync, user) deliveries into Intercom, each lane in order, one worker at a time.

A lane is the ordered stream of one (sync, user)'s deliveries. A wake-up names up to ten lanes;
``lanes_drain`` claims those that are due with one statement (``storage.lanes_claim``: a lease
on each lane that nobody holds, whose sync is enabled, whose destination is not held and whose
head delivery is due, returning the first pending deliveries of each), hands each lane's
deliveries in turn to the ``DeliverySender``, which calls Intercom's one door
(``integrations.intercom.deliver``) and moves each delivery to its next state (``states``), and
releases the lanes with one statement. A lane with a single delivery therefore costs its share
of three statements (claim, release, the claim that finds it empty) besides its attempt and its
state change, instead of eight when each lane was claimed, read and released on its own
(docs/benchmarks.md, B7).

Only one worker holds a lane at a time, which is what keeps a user's calls in ingest order with
any number of workers (invariant 3); no transaction stays open during HTTP, and the lease is
renewed as the work goes on (also for the lanes of a wake-up still waiting for their turn). A
worker that dies simply stops renewing, and the sweeper wakes the lane again once the lease has
lapsed.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from integrations.intercom import (
    AuthenticationError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    client_for,
    deliver,
)
from integrations.selectors import SyncForDelivery, sync_for_delivery
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
from streaming.storage import LANE_DUE_UNCHANGED, lanes_claim, lanes_release

logger = logging.getLogger(__name__)

PENDING = Delivery.Status.PENDING
# Pending deliveries read at once per lane, by the claim and after it: the lease makes this
# worker the only one moving them, so they stay valid; it saves a query per delivery on long
# lanes.
HEAD_BATCH = 20


# --- the lease ----------------------------------------------------------------------------


def _lease_duration() -> timedelta:
    return timedelta(seconds=settings.SWITCHBOARD_LEASE_SECONDS)


@dataclass
class LaneLease:
    """A worker's claim on a lane, valid until ``SWITCHBOARD_LEASE_SECONDS`` after its renewal."""

    lane_id: int
    token: str
    renewed_at: float = 0.0

    @staticmethod
    def duration() -> timedelta:
        return _lease_duration()

    @classmethod
    def claim(cls, *, lane_id: int) -> LaneLease | None:
        """Take the lane if nobody holds it, its sync may send and its head is due."""
        claim = LaneClaim.take(lane_ids=[lane_id])
        return claim.lease(lane_id) if lane_id in claim.heads else None

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


@dataclass
class LaneClaim:
    """The lanes of a wake-up that one worker leased together (one token), with their heads."""

    token: str
    heads: dict[int, list[Delivery]]
    claimed_at: float

    @classmethod
    def take(cls, *, lane_ids: Sequence[int]) -> LaneClaim:
        """Lease those of ``lane_ids`` that can be drained now, in one statement."""
        token = uuid.uuid4().hex
        now = timezone.now()
        heads = lanes_claim(
            lane_ids=lane_ids,
            token=token,
            leased_until=now + _lease_duration(),
            now=now,
            heads=HEAD_BATCH,
        )
        return cls(token=token, heads=heads, claimed_at=time.monotonic())

    def lease(self, lane_id: int) -> LaneLease:
        return LaneLease(lane_id, self.token, self.claimed_at)

    def release(self, ends: dict[int, LaneEnd]) -> None:
        """Give every lane up in one statement, each with the due time its end calls for."""
        lanes_release(
            token=self.token,
            due={
                lane_id: LANE_DUE_UNCHANGED if kind == "stopped" else due
                for lane_id, (kind, due) in ends.items()
            },
        )


# --- draining -----------------------------------------------------------------------------

# How a lane's drain ended, and the lane's next due time to record with the release:
# "empty" (none), "waiting" for its head's next try, or "stopped" (the sync is held, the lease
# was lost, or the head's state change already recorded the lane's due time).
LaneEnd = tuple[Literal["empty", "waiting", "stopped"], datetime | None]
STOPPED: LaneEnd = ("stopped", None)


def lanes_drain(*, lane_ids: Sequence[int]) -> None:
    """Send the due deliveries of these lanes, each lane in order, until each is empty or must
    wait. A lane that fails is logged and left to the sweeper; the others go on."""
    wanted = list(lane_ids)
    senders: dict[int, DeliverySender | None] = {}
    while wanted:
        claim = LaneClaim.take(lane_ids=wanted)
        # Lanes another worker holds are left to it (it claims again after releasing them);
        # lanes whose head is not due wait for the sweeper.
        ends: dict[int, LaneEnd] = {lane_id: STOPPED for lane_id in claim.heads}
        try:
            for lane_id, heads in claim.heads.items():
                ends[lane_id] = _lane_drain_logged(claim.lease(lane_id), heads, senders)
        finally:
            claim.release(ends)
        # A wake-up that arrived while we held a lane was dropped by the worker that got it:
        # claim once more the lanes we emptied, so a delivery queued meanwhile is not left
        # waiting (the claim finds nothing when there is none).
        wanted = [lane_id for lane_id, (kind, _) in ends.items() if kind == "empty"]


def lane_drain(*, lane_id: int) -> None:
    """Send the due deliveries of one lane, in order, until it is empty or must wait."""
    lanes_drain(lane_ids=[lane_id])


def _lane_drain_logged(
    lease: LaneLease, heads: list[Delivery], senders: dict[int, DeliverySender | None]
) -> LaneEnd:
    try:
        sync_id = heads[0].sync_id
        if sync_id not in senders:
            loaded = sync_for_delivery(sync_id=sync_id)
            senders[sync_id] = DeliverySender(loaded) if loaded is not None else None
        sender = senders[sync_id]
        if sender is None or sender.held:
            # Deleted meanwhile, or a 401 on an earlier lane held its destination.
            return STOPPED
        return _lane_work(lease, heads, sender)
    except Exception:
        # One lane's failure must not hold back the others of the wake-up. The lane is released
        # with its due time unchanged, so the sweeper wakes it again.
        logger.exception("lane %s not drained; left to the sweeper", lease.lane_id)
        # A connection the error broke is replaced for the next lane (never inside a caller's
        # transaction: an eager run in tests).
        if not transaction.get_connection().in_atomic_block:
            close_old_connections()
        return STOPPED


def _lane_work(lease: LaneLease, batch: list[Delivery], sender: DeliverySender) -> LaneEnd:
    while True:
        for head in batch:
            if head.next_attempt_at is not None and head.next_attempt_at > timezone.now():
                return ("waiting", head.next_attempt_at)
            # Before each send: the lanes of a wake-up wait their turn under one lease.
            if not lease.renew_if_due() or sender.send(head, lease=lease) == "stop":
                return STOPPED
        if len(batch) < HEAD_BATCH:
            # That was the whole lane; what arrived meanwhile is found by the next claim.
            return ("empty", None)
        if not lease.renew_if_due():
            return STOPPED
        batch = _heads(lease.lane_id)
        if not batch:
            return ("empty", None)


def _heads(lane_id: int) -> list[Delivery]:
    return list(
        Delivery.objects.filter(lane_id=lane_id, status=PENDING)
        .select_related("event")
        .order_by("id")[:HEAD_BATCH]
    )


class DeliverySender:
    """Sends deliveries of one sync and moves each to its next state."""

    def __init__(self, loaded: SyncForDelivery) -> None:
        self.sync = loaded.sync
        self.destination = loaded.sync.destination
        self.config = loaded.config
        # Once per wake-up, not per delivery: the client (its pooled session, found by a hash of
        # the decrypted token), the shared limiter, the caches.
        self.client = client_for(
            self.destination, limiter=rate_limiter_get(destination_id=self.destination.pk)
        )
        self.state = DestinationStore(destination=self.destination)
        # Set by a 401: the destination is held, nothing more is sent to it.
        self.held = False

    def send(self, delivery: Delivery, *, lease: LaneLease | None = None) -> Step:
        recorder = AttemptRecorder(
            delivery=delivery,
            heartbeat=lease.renew_if_due if lease else None,
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
            self.held = True
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
