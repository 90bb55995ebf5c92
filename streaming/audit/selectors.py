"""Reads for the operator pages: one user's timeline and each sync's delivery health.

Both are built to cost the same at millions of rows as at thousands (bench/b9_audit_scale.py):
every query starts from an indexed column (``Event.user_id``, the events' email expressions,
``Delivery.user_key``, ``Delivery(status, sync, created_at)``), the health figures come from
hourly summary rows (``delivery_hours``) plus the deliveries of the last hour or two, and the
figures are SQL aggregates, never Python loops over rows (except the SQLite p95 fallback).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from django.db import connection
from django.db.models import Aggregate, Count, DurationField, ExpressionWrapper, F, Q, QuerySet
from django.utils import timezone

from integrations.models import Destination, Sync
from streaming.audit.delivery_hours import outcomes_counted, outcomes_summarised
from streaming.ingest.filtered import filtered_counts
from streaming.models import (
    CONTEXT_TRAITS_EMAIL,
    TRAITS_EMAIL,
    Delivery,
    DeliveryAttempt,
    Event,
    KnownEventName,
)

logger = logging.getLogger(__name__)

TIMELINE_EVENTS_MAX = 200
HEALTH_WINDOW = timedelta(hours=24)
# The p95 of a busy sync is that of its latest successes in the window, this many at most.
P95_SAMPLE = 10_000

# --- user timeline ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEntry:
    """One line of a user's timeline: an event received, an HTTP attempt, or a delivery outcome."""

    at: datetime
    kind: Literal["event", "attempt", "delivery"]
    event: Event
    delivery: Delivery | None = None
    attempt: DeliveryAttempt | None = None


@dataclass
class Timeline:
    query: str
    entries: list[TimelineEntry] = field(default_factory=list)
    user_ids: list[str] = field(default_factory=list)
    events: int = 0
    truncated: bool = False


def events_by_email(*, email: str) -> QuerySet[Event]:
    """Events whose ``traits.email`` or ``context.traits.email`` is this address (as typed, or
    lowercased).

    Written with the expressions ``Event`` indexes (``TRAITS_EMAIL``, ``CONTEXT_TRAITS_EMAIL``):
    two index scans on PostgreSQL, whatever the number of events.
    """
    variants = sorted({email, email.lower()})
    return Event.objects.alias(
        traits_email=TRAITS_EMAIL, context_traits_email=CONTEXT_TRAITS_EMAIL
    ).filter(Q(traits_email__in=variants) | Q(context_traits_email__in=variants))


def user_timeline(*, query: str, limit: int = TIMELINE_EVENTS_MAX) -> Timeline:
    """Everything about one user, oldest first: the latest ``limit`` events, their deliveries to
    every sync, each HTTP attempt with Intercom's answer, and each delivery's outcome.

    ``query`` is a user id (``Event.user_id`` or a lane's user key, which may be an external id
    taken from a trait, an anonymous id, or an email for syncs matching by email) or an email
    (matched in the events' traits, then widened to every event of the user ids found).
    """
    query = query.strip()
    timeline = Timeline(query=query)
    if not query:
        return timeline
    user_ids = {query}
    direct_event_ids: set[int] = set()
    if "@" in query:
        for event_id, user_id in events_by_email(email=query).values_list("id", "user_id")[
            : limit * 5
        ]:
            direct_event_ids.add(event_id)
            if user_id:
                user_ids.add(user_id)
    timeline.user_ids = sorted(user_ids)

    newest_first = ("-received_at", "-id")
    candidates: dict[int, datetime] = {}
    for event_id, received_at in (
        Event.objects.filter(user_id__in=user_ids)
        .order_by(*newest_first)
        .values_list("id", "received_at")[: limit + 1]
    ):
        candidates[event_id] = received_at
    for event_id, received_at in (
        Event.objects.filter(
            id__in=Delivery.objects.filter(user_key__in=user_ids).values("event_id")
        )
        .order_by(*newest_first)
        .values_list("id", "received_at")[: limit + 1]
    ):
        candidates[event_id] = received_at
    if direct_event_ids:
        for event_id, received_at in Event.objects.filter(id__in=direct_event_ids).values_list(
            "id", "received_at"
        ):
            candidates[event_id] = received_at
    chosen = sorted(candidates, key=lambda i: (candidates[i], i), reverse=True)
    timeline.truncated = len(chosen) > limit
    chosen = chosen[:limit]
    timeline.events = len(chosen)
    if not chosen:
        return timeline

    events = {e.id: e for e in Event.objects.filter(id__in=chosen).select_related("source")}
    deliveries = {
        d.id: d
        for d in Delivery.objects.filter(event_id__in=chosen).select_related("sync__destination")
    }
    entries = [TimelineEntry(at=e.received_at, kind="event", event=e) for e in events.values()]
    for attempt in DeliveryAttempt.objects.filter(event_id__in=chosen).defer("request_body"):
        delivery = deliveries.get(attempt.delivery_id)
        if delivery is None:
            continue
        entries.append(
            TimelineEntry(
                at=attempt.started_at,
                kind="attempt",
                event=events[attempt.event_id],
                delivery=delivery,
                attempt=attempt,
            )
        )
    for delivery in deliveries.values():
        at = delivery.completed_at or delivery.next_attempt_at or delivery.created_at
        entries.append(
            TimelineEntry(
                at=at, kind="delivery", event=events[delivery.event_id], delivery=delivery
            )
        )
    # Ties (same microsecond) read naturally: the event, then its attempts, then the outcome.
    order = {"event": 0, "attempt": 1, "delivery": 2}
    entries.sort(
        key=lambda x: (
            x.at,
            order[x.kind],
            x.attempt.id if x.attempt else 0,
            x.delivery.id if x.delivery else 0,
        )
    )
    timeline.entries = entries
    return timeline


# --- sync health ------------------------------------------------------------------------------


class PercentileCont(Aggregate):
    """PostgreSQL's ordered-set aggregate ``percentile_cont(f) WITHIN GROUP (ORDER BY x)``."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: object, *, fraction: float, **extra: object) -> None:
        # A float we control, formatted into the SQL: never user input.
        super().__init__(expression, fraction=repr(float(fraction)), **extra)


def percentile_cont(values: list[float], fraction: float) -> float | None:
    """The same linear interpolation as PostgreSQL's ``percentile_cont`` (SQLite fallback)."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class SyncHealth:
    """One sync's last 24 hours (deliveries created in the window, in their state now)."""

    sync: Sync
    delivered_first_try: int = 0
    delivered_after_retry: int = 0
    pending: int = 0  # the whole backlog, whatever its age
    failed: int = 0
    expired: int = 0
    skipped: int = 0
    filtered: dict[str, int] | None = field(default_factory=dict)  # None: cache unavailable
    # acceptance -> Intercom's success, of the latest P95_SAMPLE successes of the window
    p95_seconds: float | None = None
    replayable: int = 0  # failed + expired of any age: what "replay all" would send again
    event_names: int = 0  # names the workspace received through us (Intercom allows 120)

    @property
    def filtered_total(self) -> int | None:
        return None if self.filtered is None else sum(self.filtered.values())

    @property
    def destination(self) -> Destination:
        return self.sync.destination

    @property
    def last_error(self) -> str:
        """The destination's last error, with its secrets cut out should a message quote them."""
        text = self.destination.last_error
        for secret in (
            self.destination.access_token,
            self.destination.identity_verification_secret,
        ):
            if secret and len(secret) >= 8:
                text = text.replace(secret, "[secret]")
        return text


def syncs_health(
    *, syncs: QuerySet[Sync] | None = None, now: datetime | None = None
) -> list[SyncHealth]:
    """Delivery health of each sync over the last 24 hours, with a handful of grouped queries.

    On PostgreSQL the window's outcomes come from hourly summary rows (``delivery_hours``) and
    the p95 from the latest ``P95_SAMPLE`` successes of the window, so the page costs about the
    same whatever the traffic; elsewhere (SQLite, the embedded mode) from the deliveries.
    """
    now = now or timezone.now()
    since = now - HEALTH_WINDOW
    syncs = (syncs if syncs is not None else Sync.objects.all()).select_related("destination")
    report = {s.id: SyncHealth(sync=s) for s in syncs}
    if not report:
        return []
    ids = list(report)
    S = Delivery.Status
    postgresql = connection.vendor == "postgresql"
    outcomes = (outcomes_summarised if postgresql else outcomes_counted)(sync_ids=ids, since=since)
    for sync_id, figures in outcomes.items():
        health = report[sync_id]
        health.delivered_first_try = figures.delivered_first_try
        health.delivered_after_retry = figures.delivered_after_retry
        health.failed = figures.failed
        health.expired = figures.expired
        health.skipped = figures.skipped
        health.replayable = figures.replayable
    # The backlog, whatever its age: as many rows as are pending (the index leads with status).
    for row in (
        Delivery.objects.filter(status=S.PENDING, sync_id__in=ids)
        .values("sync_id")
        .annotate(pending=Count("id"))
    ):
        report[row["sync_id"]].pending = row["pending"]

    # Latency from acceptance (a delivery is created when its event is received) to success.
    latency = ExpressionWrapper(F("completed_at") - F("created_at"), output_field=DurationField())
    for sync_id in ids:
        latest = Delivery.objects.filter(
            sync_id=sync_id, status=S.SUCCEEDED, created_at__gte=since, completed_at__isnull=False
        ).order_by("-created_at")[:P95_SAMPLE]
        if postgresql:
            p95 = latest.annotate(latency=latency).aggregate(
                p95=PercentileCont("latency", fraction=0.95, output_field=DurationField())
            )["p95"]
            report[sync_id].p95_seconds = p95.total_seconds() if p95 is not None else None
        else:
            values = [
                (completed_at - created_at).total_seconds()
                for completed_at, created_at in latest.values_list("completed_at", "created_at")
            ]
            report[sync_id].p95_seconds = percentile_cont(values, 0.95)

    names = dict(
        KnownEventName.objects.filter(
            destination_id__in={h.sync.destination_id for h in report.values()}
        )
        .values("destination_id")
        .annotate(n=Count("id"))
        .values_list("destination_id", "n")
    )
    for health in report.values():
        try:
            health.filtered = dict(filtered_counts(sync_id=health.sync.id, since=since))
        except Exception:
            # The counters live in the cache (Redis): with it down, the page an operator opens
            # precisely when things break must still show everything the database knows.
            logger.warning("filtered counts unavailable for sync %s", health.sync.id, exc_info=True)
            health.filtered = None
        health.event_names = names.get(health.sync.destination_id, 0)
    return list(report.values())
