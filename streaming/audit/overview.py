"""The admin's landing page: each Intercom workspace and its syncs at a glance.

Per sync: delivered / failed / pending / skipped over time (the last hour by minute, the last
day by hour, the last 30 days by day), the 24-hour figures of the health page (``syncs_health``:
success rate, p95 ingest -> Intercom), throughput, the backlog with its oldest pending delivery
and an ETA at the current rate. Per workspace: its state, Intercom's rate-limit headroom as the
shared limiter knows it, and the 120-event-name budget. Every figure comes with the URL of the
deliveries behind it.

Built to cost the same at millions of deliveries as at thousands: the hours and days come from
the hourly summary rows (``delivery_hours.hours_outcomes``) plus the deliveries of the last hour
or two; the minutes are the last hour's deliveries; the backlog is read through the index that
leads with status; throughput counts the last ``RATE_WINDOW`` of HTTP attempts (indexed by
``started_at``). Nothing here walks the trail.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django.db.models import Count, Min, Q, QuerySet
from django.db.models.functions import TruncHour, TruncMinute
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format

from integrations.models import Destination, Sync
from streaming.audit.delivery_hours import hours_outcomes
from streaming.audit.selectors import SyncHealth, syncs_health
from streaming.delivery.ratelimit import LimiterState, limiter_state
from streaming.models import Delivery, DeliveryAttempt

logger = logging.getLogger(__name__)
S = Delivery.Status
# Throughput and the backlog's ETA: the HTTP attempts of this last stretch of time.
RATE_WINDOW = timedelta(minutes=5)
# Intercom's windows last 10 seconds; "per minute" figures multiply a window's limit by this.
WINDOWS_PER_MINUTE = 6
EVENT_NAMES_MAX = 120  # Intercom's active event names per workspace
FAILED = (S.FAILED, S.EXPIRED)
# The chart's series, in stacking order: (key, label, colour).
SERIES = (
    ("delivered", "Delivered", "#16a34a"),
    ("failed", "Failed or expired", "#dc2626"),
    ("pending", "Pending", "#d97706"),
    ("skipped", "Skipped", "#9ca3af"),
)
STATUS_FILTER = {
    "delivered": S.SUCCEEDED,
    "failed": ",".join(FAILED),
    "pending": S.PENDING,
    "skipped": S.SKIPPED,
}


@dataclass(frozen=True)
class Span:
    """One of the charts' time ranges."""

    key: str
    title: str
    step: str  # "minute", "hour" or "day"
    buckets: int


SPANS = {
    "hour": Span("hour", "Last hour, by minute", "minute", 60),
    "day": Span("day", "Last 24 hours, by hour", "hour", 24),
    "month": Span("month", "Last 30 days, by day", "day", 30),
}
DEFAULT_SPAN = "day"
# Unfold's chart component takes Chart.js options as JSON (they replace its defaults): stacked
# bars, whole numbers, the legend shown (four series), no animation.
CHART_OPTIONS = json.dumps(
    {
        "animation": False,
        "responsive": True,
        "maintainAspectRatio": False,
        "datasets": {"bar": {"borderRadius": 2, "maxBarThickness": 24}},
        "plugins": {
            "legend": {
                "display": True,
                "position": "bottom",
                "labels": {"boxWidth": 10, "boxHeight": 10, "color": "#6b7280"},
            },
            "tooltip": {"enabled": True},
        },
        "scales": {
            "x": {"stacked": True, "grid": {"display": False}, "ticks": {"maxTicksLimit": 12}},
            "y": {"stacked": True, "beginAtZero": True, "ticks": {"precision": 0}},
        },
    }
)


@dataclass
class Bucket:
    start: datetime
    end: datetime
    label: str
    delivered: int = 0
    failed: int = 0
    pending: int = 0
    skipped: int = 0


@dataclass
class SyncOverview:
    health: SyncHealth
    buckets: list[Bucket]
    oldest_pending_at: datetime | None = None
    calls_per_minute: float = 0.0  # HTTP exchanges with Intercom, over RATE_WINDOW
    completed_per_minute: float = 0.0  # deliveries finished, over RATE_WINDOW
    links: dict[str, str] = field(default_factory=dict)

    @property
    def sync(self) -> Sync:
        return self.health.sync

    @property
    def delivered(self) -> int:
        return self.health.delivered_first_try + self.health.delivered_after_retry

    @property
    def failed(self) -> int:
        return self.health.failed + self.health.expired

    @property
    def success_rate(self) -> float | None:
        """Delivered out of what finished delivered or failed in 24 hours (skipped left out)."""
        finished = self.delivered + self.failed
        return 100.0 * self.delivered / finished if finished else None

    @property
    def oldest_pending_seconds(self) -> float | None:
        if self.oldest_pending_at is None:
            return None
        return max((timezone.now() - self.oldest_pending_at).total_seconds(), 0.0)

    @property
    def eta_seconds(self) -> float | None:
        """How long the backlog takes at the rate deliveries finished over RATE_WINDOW; None
        when there is no backlog or no progress (the page says which)."""
        if not self.health.pending or not self.completed_per_minute:
            return None
        return 60.0 * self.health.pending / self.completed_per_minute

    @property
    def oldest_pending_text(self) -> str:
        return duration_text(self.oldest_pending_seconds)

    @property
    def eta_text(self) -> str:
        if not self.health.pending:
            return "no backlog"
        if self.stalled:
            return "no progress in the last 5 minutes"
        return duration_text(self.eta_seconds)

    @property
    def stalled(self) -> bool:
        return bool(self.health.pending) and not self.completed_per_minute

    def chart(self) -> dict[str, Any]:
        """Chart.js data (a stacked bar per bucket), and the deliveries behind each bar."""
        return {
            "labels": [bucket.label for bucket in self.buckets],
            "datasets": [
                {
                    "label": label,
                    "data": [getattr(bucket, key) for bucket in self.buckets],
                    "backgroundColor": colour,
                    "stack": "deliveries",
                }
                for key, label, colour in SERIES
            ],
        }

    def chart_links(self) -> list[list[str]]:
        """Per series, per bar: the delivery list filtered on that sync, state and time."""
        return [
            [
                deliveries_url(
                    sync_id=self.sync.pk, status=STATUS_FILTER[key], since=b.start, until=b.end
                )
                for b in self.buckets
            ]
            for key, _, _ in SERIES
        ]

    def chart_json(self) -> str:
        return json.dumps(self.chart())

    def chart_links_json(self) -> str:
        return json.dumps(self.chart_links())


@dataclass
class DestinationOverview:
    destination: Destination
    syncs: list[SyncOverview]
    limiter: LimiterState | None
    event_names: int = 0
    links: dict[str, str] = field(default_factory=dict)

    @property
    def event_names_left(self) -> int:
        return max(EVENT_NAMES_MAX - self.event_names, 0)

    @property
    def event_names_percent(self) -> int:
        return min(round(100 * self.event_names / EVENT_NAMES_MAX), 100)

    @property
    def calls_per_minute(self) -> float:
        return sum(s.calls_per_minute for s in self.syncs)

    @property
    def limit_per_minute(self) -> int | None:
        """Intercom's limit as its headers announced it (a 10-second window's calls, x6)."""
        if self.limiter is None or not self.limiter.limit:
            return None
        return self.limiter.limit * WINDOWS_PER_MINUTE

    @property
    def headroom_percent(self) -> int | None:
        """What the last RATE_WINDOW left unused of the announced limit."""
        limit = self.limit_per_minute
        if limit is None:
            return None
        return max(0, min(100, round(100 * (1 - self.calls_per_minute / limit))))

    @property
    def window_left(self) -> int | None:
        """Calls left in Intercom's current window (its whole limit once the window ended)."""
        state = self.limiter
        if state is None or not state.limit:
            return None
        if state.window_end is None or state.window_end <= timezone.now().timestamp():
            return state.limit
        return max(state.remaining or 0, 0)

    @property
    def last_error(self) -> str:
        return self.syncs[0].health.last_error if self.syncs else ""

    @property
    def state(self) -> tuple[str, str]:
        """(tone, words): the workspace's health as the page's badge says it."""
        d = self.destination
        if d.auth_failed_at:
            return "bad", (
                f"Intercom refused the token (401) at {when(d.auth_failed_at)}: "
                "deliveries are held until the token changes"
            )
        if d.last_error_at and (not d.last_success_at or d.last_error_at > d.last_success_at):
            return "warn", f"Last exchange failed at {when(d.last_error_at)}"
        if d.last_success_at:
            return "ok", f"Working: last success {when(d.last_success_at)}"
        return "none", "No exchange yet"


@dataclass
class Overview:
    span: Span
    destinations: list[DestinationOverview]
    since: datetime  # the 24-hour figures' window start
    generated_at: datetime

    @property
    def syncs(self) -> list[SyncOverview]:
        return [s for d in self.destinations for s in d.syncs]


def when(moment: datetime) -> str:
    """A time as every admin page shows it: to the second, with the timezone."""
    return date_format(timezone.localtime(moment), "DATETIME_FORMAT")


def duration_text(seconds: float | None) -> str:
    """A span of time as an operator reads it: "42 s", "7 min 5 s", "3 h 12 min", "2 d 4 h"."""
    if seconds is None:
        return "—"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def deliveries_url(
    *,
    sync_id: int | None = None,
    destination_id: int | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    oldest_first: bool = False,
) -> str:
    """The delivery list with the admin's filters set: the deliveries behind a figure."""
    query: dict[str, str] = {}
    if sync_id is not None:
        query["sync__id__exact"] = str(sync_id)
    if destination_id is not None:
        query["sync__destination__id__exact"] = str(destination_id)
    if status:
        query["status__in" if "," in status else "status__exact"] = status
    if since is not None:
        query["created_at__gte"] = since.astimezone(UTC).isoformat()
    if until is not None:
        query["created_at__lt"] = until.astimezone(UTC).isoformat()
    if oldest_first:
        query["o"] = "1"  # the first column, id, ascending
    return reverse("admin:streaming_delivery_changelist") + "?" + urlencode(query)


def _buckets(span: Span, now: datetime) -> list[Bucket]:
    """The span's buckets, oldest first; the last one holds ``now``."""
    local = timezone.localtime(now)
    if span.step == "day":
        today = local.date()
        days = [today - timedelta(days=n) for n in range(span.buckets - 1, -1, -1)]
        starts = [_local_midnight(day) for day in days]
        ends = [*starts[1:], _local_midnight(today + timedelta(days=1))]
        return [
            Bucket(start=s, end=e, label=f"{d:%b} {d.day}")
            for s, e, d in zip(starts, ends, days, strict=True)
        ]
    step = timedelta(minutes=1) if span.step == "minute" else timedelta(hours=1)
    floor = now.astimezone(UTC).replace(second=0, microsecond=0)
    if span.step == "hour":
        floor = floor.replace(minute=0)
    first = floor - step * (span.buckets - 1)
    return [
        Bucket(
            start=first + step * n,
            end=first + step * (n + 1),
            label=timezone.localtime(first + step * n).strftime("%H:%M"),
        )
        for n in range(span.buckets)
    ]


def _local_midnight(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_current_timezone())


def _bucket_index(buckets: list[Bucket]) -> Any:
    """A function: a moment -> its bucket's index, or None outside the span."""
    starts = [b.start for b in buckets]
    end = buckets[-1].end

    def index(moment: datetime) -> int | None:
        if moment < starts[0] or moment >= end:
            return None
        low, high = 0, len(starts) - 1
        while low < high:  # the last start <= moment
            middle = (low + high + 1) // 2
            if starts[middle] <= moment:
                low = middle
            else:
                high = middle - 1
        return low

    return index


def _series_fill(span: Span, sync_ids: list[int], now: datetime) -> dict[int, list[Bucket]]:
    """Each sync's buckets, counted: minutes from the deliveries, hours and days from the
    summary rows plus the unsettled hours; the pending ones of the span by their creation."""
    series = {sync_id: _buckets(span, now) for sync_id in sync_ids}
    if not sync_ids:
        return series
    any_buckets = next(iter(series.values()))
    since = any_buckets[0].start
    index = _bucket_index(any_buckets)
    recent = Delivery.objects.filter(sync_id__in=sync_ids, created_at__gte=since)
    if span.step == "minute":
        rows = (
            recent.annotate(at=TruncMinute("created_at", tzinfo=UTC))
            .values("sync_id", "at", "status")
            .annotate(n=Count("id"))
        )
        for row in rows:
            i = index(row["at"])
            if i is None:
                continue
            bucket = series[row["sync_id"]][i]
            key = _series_key(row["status"])
            setattr(bucket, key, getattr(bucket, key) + row["n"])
        return series
    # Hours and days: a bucket starts on a UTC hour (a local midnight too, for whole-hour zones).
    hour_since = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    for hour in hours_outcomes(sync_ids=sync_ids, since=hour_since):
        i = index(hour.hour)
        if i is None:
            continue
        bucket = series[hour.sync_id][i]
        bucket.delivered += hour.delivered
        bucket.failed += hour.failed
        bucket.skipped += hour.skipped
    pending = (
        recent.filter(status=S.PENDING)
        .annotate(at=TruncHour("created_at", tzinfo=UTC))
        .values("sync_id", "at")
        .annotate(n=Count("id"))
    )
    for row in pending:
        i = index(max(row["at"], since))
        if i is not None:
            series[row["sync_id"]][i].pending += row["n"]
    return series


def _series_key(status: str) -> str:
    return {
        S.SUCCEEDED: "delivered",
        S.FAILED: "failed",
        S.EXPIRED: "failed",
        S.PENDING: "pending",
    }.get(status, "skipped")


def _rates(sync_ids: list[int], now: datetime) -> dict[int, tuple[float, float]]:
    """Per sync: HTTP calls per minute, and deliveries finished per minute, over RATE_WINDOW."""
    minutes = RATE_WINDOW.total_seconds() / 60
    rows = (
        DeliveryAttempt.objects.filter(
            started_at__gte=now - RATE_WINDOW, delivery__sync_id__in=sync_ids
        )
        .values("delivery__sync_id")
        .annotate(
            calls=Count("id"),
            finished=Count("delivery_id", distinct=True, filter=~Q(delivery__status=S.PENDING)),
        )
    )
    return {
        row["delivery__sync_id"]: (row["calls"] / minutes, row["finished"] / minutes)
        for row in rows
    }


def overview_build(
    *,
    span_key: str = DEFAULT_SPAN,
    syncs: QuerySet[Sync] | None = None,
    now: datetime | None = None,
) -> Overview:
    """The overview of every sync (or ``syncs``), grouped by destination."""
    now = now or timezone.now()
    span = SPANS.get(span_key, SPANS[DEFAULT_SPAN])
    syncs = (syncs if syncs is not None else Sync.objects.all()).order_by(
        "destination__name", "name"
    )
    healths = syncs_health(syncs=syncs, now=now)
    ids = [h.sync.pk for h in healths]
    series = _series_fill(span, ids, now)
    oldest = dict(
        Delivery.objects.filter(status=S.PENDING, sync_id__in=ids)
        .values("sync_id")
        .annotate(oldest=Min("created_at"))
        .values_list("sync_id", "oldest")
    )
    rates = _rates(ids, now)
    since = now - timedelta(hours=24)
    destinations: dict[int, DestinationOverview] = {}
    for health in healths:
        sync_id = health.sync.pk
        calls, finished = rates.get(sync_id, (0.0, 0.0))
        overview = SyncOverview(
            health=health,
            buckets=series[sync_id],
            oldest_pending_at=oldest.get(sync_id),
            calls_per_minute=calls,
            completed_per_minute=finished,
            links=_sync_links(sync_id, since),
        )
        destination = health.sync.destination
        if destination.pk not in destinations:
            destinations[destination.pk] = DestinationOverview(
                destination=destination,
                syncs=[],
                limiter=_limiter(destination.pk),
                event_names=health.event_names,
                links={
                    "deliveries": deliveries_url(destination_id=destination.pk),
                    "event_names": reverse("admin:streaming_knowneventname_changelist")
                    + f"?destination__id__exact={destination.pk}",
                    "change": reverse(
                        "admin:integrations_destination_change", args=[destination.pk]
                    ),
                },
            )
        destinations[destination.pk].syncs.append(overview)
    return Overview(
        span=span, destinations=list(destinations.values()), since=since, generated_at=now
    )


def _limiter(destination_id: int) -> LimiterState | None:
    try:
        return limiter_state(destination_id=destination_id)
    except Exception:
        # Redis down: the page an operator opens when things break still shows the rest.
        logger.warning(
            "rate-limit state unavailable for destination %s", destination_id, exc_info=True
        )
        return None


def _sync_links(sync_id: int, since: datetime) -> dict[str, str]:
    return {
        "all": deliveries_url(sync_id=sync_id, since=since),
        "delivered": deliveries_url(sync_id=sync_id, status=S.SUCCEEDED, since=since),
        "failed": deliveries_url(sync_id=sync_id, status=STATUS_FILTER["failed"], since=since),
        "skipped": deliveries_url(sync_id=sync_id, status=S.SKIPPED, since=since),
        "pending": deliveries_url(sync_id=sync_id, status=S.PENDING),
        "oldest_pending": deliveries_url(sync_id=sync_id, status=S.PENDING, oldest_first=True),
        "recent": deliveries_url(sync_id=sync_id, since=timezone.now() - RATE_WINDOW),
    }
