"""Reads for the operator pages: events by email, and each sync's delivery health (a user's
timeline is ``timeline``).

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
    Event,
    KeptOut,
    KnownEventName,
)

logger = logging.getLogger(__name__)

HEALTH_WINDOW = timedelta(hours=24)
# The p95 of a busy sync is that of its latest successes in the window, this many at most.
P95_SAMPLE = 10_000

# --- events by email --------------------------------------------------------------------------


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


KEPT_OUT_SHOWN = 50


def kept_out_of_user(*, user_id: str, limit: int = KEPT_OUT_SHOWN) -> QuerySet[KeptOut]:
    """The latest calls syncs kept out about this user id (or anonymous id), newest first: one
    backward read of the ``(user_key, id)`` index."""
    return (
        KeptOut.objects.filter(user_key=user_id)
        .select_related("event", "sync__destination")
        .order_by("-id")[:limit]
    )


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
