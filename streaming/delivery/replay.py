"""Operator actions on the queue: retry now, replay, and the admin's "send test event".

These are the only writes the admin makes to deliveries. None of them rewrites history: attempts
stay in the log, a replayed delivery keeps its id and its past attempts, and a test event is
recorded as an ordinary Event -> Delivery -> DeliveryAttempt trail, marked as a test.

Order: a lane is drained in delivery-id order. A replayed delivery keeps its id, so it goes out
*before* any later pending delivery of the same (sync, user) lane: replaying yesterday's failed
identify makes today's pending track wait behind it. That is what keeps "identify before track"
true after a replay; it also means a replayed delivery that fails again blocks its lane for at
most the sync's retry window, as any head does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from integrations.intercom import AuthenticationError, IntercomError, client_for, deliver
from integrations.intercom.identity import identity_resolve
from integrations.models import Sync
from integrations.selectors import sync_config_build
from streaming.delivery.attempts import AttemptRecorder
from streaming.delivery.destination_store import DestinationStore
from streaming.delivery.ratelimit import rate_limiter_get
from streaming.delivery.states import destination_auth_hold, destination_health_record
from streaming.delivery.wakeups import lanes_wake
from streaming.ingest.segment import Call, call_normalise
from streaming.models import Delivery, DeliveryAttempt, Event, Lane

REPLAYABLE = (Delivery.Status.FAILED, Delivery.Status.EXPIRED)
# Waking a lane costs one broker message; past this many the sweeper (which re-wakes every lane
# that is due, every SWITCHBOARD_SWEEP_SECONDS) picks the rest up, so a replay of a whole day
# cannot flood the broker.
WAKE_LIMIT = 1000
# Test events carry this message-id prefix and a ``context.switchboard.test`` marker.
TEST_MESSAGE_PREFIX = "sb-test-"


@dataclass(frozen=True)
class QueueChange:
    """What an operator action did: how many deliveries changed and which lanes were woken."""

    deliveries: int
    lanes: int


def _lanes_make_due(*, lane_ids: QuerySet[Lane] | Iterable[int], now: Any) -> list[int]:
    """Make these lanes due now and wake them once the transaction commits."""
    lanes = Lane.objects.filter(id__in=lane_ids)
    lanes.filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__gt=now)).update(
        next_attempt_at=now
    )
    woken = list(lanes.order_by("id").values_list("id", flat=True)[:WAKE_LIMIT])
    transaction.on_commit(lambda: lanes_wake(woken))
    return woken


def deliveries_retry_now(*, deliveries: QuerySet[Delivery]) -> QueueChange:
    """Make pending deliveries due now (instead of at their backoff time) and wake their lanes.

    Order is kept: a lane goes out head first, so "retry now" on a delivery waiting behind a
    retrying head also makes every earlier pending delivery of that lane due now.
    """
    now = timezone.now()
    with transaction.atomic():
        selected = deliveries.filter(status=Delivery.Status.PENDING)
        lane_ids = list(selected.values_list("lane_id", flat=True).distinct())
        count = (
            Delivery.objects.filter(status=Delivery.Status.PENDING, lane_id__in=lane_ids)
            .filter(Exists(selected.filter(lane_id=OuterRef("lane_id"), id__gte=OuterRef("id"))))
            .update(next_attempt_at=now)
        )
        woken = _lanes_make_due(lane_ids=lane_ids, now=now)
    return QueueChange(deliveries=count, lanes=len(woken))


def deliveries_replay(*, deliveries: QuerySet[Delivery]) -> QueueChange:
    """Send failed or expired deliveries again: back to pending, tries reset, due now.

    Takes any queryset: one delivery, an admin selection, a filtered changelist, or every
    failed/expired delivery of a sync (``sync_replayable_deliveries``). Other states are left
    alone. Past attempts stay in the log; ``reason`` is cleared because it described the last
    outcome, which the attempt log still shows. The sync's retry window starts again now.
    """
    now = timezone.now()
    with transaction.atomic():
        replayable = Delivery.objects.filter(
            id__in=deliveries.filter(status__in=REPLAYABLE).values("id")
        ).select_for_update()
        ids = list(replayable.values_list("id", flat=True))
        if not ids:
            return QueueChange(deliveries=0, lanes=0)
        lane_ids = Lane.objects.filter(deliveries__id__in=ids).values("id").distinct()
        count = Delivery.objects.filter(id__in=ids).update(
            status=Delivery.Status.PENDING,
            attempts=0,
            next_attempt_at=now,
            reason="",
            completed_at=None,
            # A fresh retry window: measured from creation, an old delivery would expire at its
            # first retryable error.
            window_started_at=now,
        )
        woken = _lanes_make_due(lane_ids=lane_ids, now=now)
    return QueueChange(deliveries=count, lanes=len(woken))


def sync_held_release(*, sync: Sync) -> QueueChange:
    """Send what a paused sync held, now that it is enabled again, in each user's order.

    Its pending deliveries start a fresh retry window (the time the sync was paused must not
    count against it) and their lanes are made due and woken after the commit.
    """
    now = timezone.now()
    with transaction.atomic():
        held = Delivery.objects.filter(sync=sync, status=Delivery.Status.PENDING)
        count = held.update(window_started_at=now)
        woken = _lanes_make_due(lane_ids=held.values("lane_id"), now=now) if count else []
    return QueueChange(deliveries=count, lanes=len(woken))


def sync_replayable_deliveries(*, sync: Sync) -> QuerySet[Delivery]:
    """Every failed or expired delivery of a sync (the health page's "replay all")."""
    return Delivery.objects.filter(sync=sync, status__in=REPLAYABLE)


# --- Send test event -------------------------------------------------------------------------

TEST_CALL_TYPES = ("identify", "track", "group", "page", "screen")


@dataclass(frozen=True)
class TestEventResult:
    """What the result page shows: the call as sent, the logged delivery and its attempts."""

    call: dict[str, Any]
    delivery: Delivery
    attempts: list[DeliveryAttempt]
    dropped: list[tuple[str, str]]


def test_call_normalise(
    *,
    call_type: str,
    user_id: str,
    event_name: str = "",
    properties: dict[str, Any] | None = None,
    traits: dict[str, Any] | None = None,
    sent_by: str = "",
) -> Call:
    """The call a test sends, validated and normalised exactly as ingest does; marked as a test.

    Raises ``InvalidCall`` (with field errors) for a call ingest would refuse.
    """
    raw: dict[str, Any] = {
        "userId": user_id,
        "messageId": TEST_MESSAGE_PREFIX + uuid4().hex,
        "context": {"switchboard": {"test": True, "sent_by": sent_by}},
    }
    if call_type == "track":
        raw["event"] = event_name
        raw["properties"] = properties or {}
    elif call_type in ("page", "screen"):
        raw["name"] = event_name
        raw["properties"] = properties or {}
    elif call_type == "group":
        raw["groupId"] = event_name
        raw["traits"] = traits or {}
    else:
        raw["traits"] = traits or {}
    return call_normalise(raw, call_type=call_type, received_at=timezone.now())


def sync_test_event_send(*, sync: Sync, call: Call) -> TestEventResult:
    """Send one call through a sync right now, bypassing the queue, and log it as a test.

    It runs the same code as a worker (Intercom's door, ``deliver``, with the attempt
    recorder), synchronously, so the operator sees exactly what Intercom was asked and what it
    answered. The call is logged as an Event (message id ``sb-test-…``, payload
    ``context.switchboard.test``) with one Delivery and its attempts, so the user's timeline and
    the audit API show it like any other call. That Delivery is never pending, not even while
    the test runs (lane drains only read pending deliveries), so no worker can send it again.
    """
    source = sync.sources.order_by("id").first()
    if source is None:
        raise ValueError("This sync has no source: an event needs one.")
    config = sync_config_build(sync=sync)
    identity = identity_resolve(call=call.payload, config=config)
    user_key = identity.user_key if not isinstance(identity, str) else ""
    user_key = user_key or call.user_id or call.anonymous_id
    now = timezone.now()
    with transaction.atomic():
        event = Event.objects.create(
            source=source,
            message_id=call.message_id,
            type=call.type,
            user_id=call.user_id,
            anonymous_id=call.anonymous_id,
            event_name=call.event_name,
            payload=call.payload,
            timestamp=call.timestamp,
            received_at=now,
        )
        lane, _ = Lane.objects.get_or_create(sync=sync, user_key=user_key)
        delivery = Delivery.objects.create(
            event=event,
            sync=sync,
            lane=lane,
            user_key=user_key,
            status=Delivery.Status.SKIPPED,
            reason="Test event: being sent.",
            created_at=now,
        )
    destination = sync.destination
    recorder = AttemptRecorder(delivery=delivery)
    dropped: list[tuple[str, str]] = []
    try:
        outcome = deliver(
            call=call.payload,
            config=config,
            # The shared limiter: a test counts against Intercom's budget like any call.
            client=client_for(destination, limiter=rate_limiter_get(destination_id=destination.pk)),
            state=DestinationStore(destination=destination),
            recorder=recorder,
        )
    except AuthenticationError as error:
        # The same verdict a worker reaches: hold the destination until the token changes.
        destination_auth_hold(destination=destination, error=str(error))
        status, reason = Delivery.Status.FAILED, str(error)
    except IntercomError as error:
        # A worker would retry a retryable error; a test reports it and stops.
        destination_health_record(destination=destination, error=str(error))
        status, reason = Delivery.Status.FAILED, str(error)
    else:
        dropped = [(d.field, d.reason) for d in outcome.dropped]
        succeeded = outcome.status == "succeeded"
        status = Delivery.Status.SUCCEEDED if succeeded else Delivery.Status.SKIPPED
        reason = outcome.reason or ("" if recorder.exchanges else "Nothing to send.")
        if recorder.exchanges:
            destination_health_record(destination=destination, error="")
    attempts = list(delivery.attempt_log.order_by("id"))
    delivery.status = status
    delivery.reason = f"Test event. {reason}".strip()
    delivery.attempts = sum(
        1 for a in attempts if a.category != DeliveryAttempt.Category.RATE_LIMITED
    )
    delivery.completed_at = timezone.now()
    delivery.save(update_fields=["status", "reason", "attempts", "completed_at"])
    return TestEventResult(call=call.payload, delivery=delivery, attempts=attempts, dropped=dropped)
