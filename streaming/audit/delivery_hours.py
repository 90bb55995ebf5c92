"""The health page's summary rows: each sync's outcomes per settled hour (``DeliveryHour``),
written when missing and read together with what has not settled yet.

Counting a day of deliveries row by row costs as much as the traffic of that day (a million
deliveries a day: most of a second). Here an hour is counted once, after it has settled (an
hour later: retries and late completions have mostly happened), and the page adds up at most
24 summary rows per sync plus the deliveries of the last hour or two. The triggers of migration
0005 remove a summary row when a delivery of its hour changes a count (a replay, a late
completion, a deletion); the next read writes it again.

Correct under concurrency by one advisory lock per sync (``DeliveryHour.LOCK_CLASS``): the
triggers take it shared before removing a row, the reader exclusive (without waiting: a sync
whose lock is taken is counted row by row this time) and keeps it until its transaction ends,
so a change commits either before the reader counts or after, removing what it wrote.

PostgreSQL only (``date_trunc`` in UTC, ``generate_series``, advisory locks, the triggers);
hand-written SQL for the one statement the ORM cannot say, the INSERT .. SELECT of the hours
missing. Elsewhere ``streaming.audit.selectors`` counts the deliveries themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.db.models import Count, F, Min, Q, QuerySet, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from streaming.models import Delivery, DeliveryHour

# An hour is written once it ended this long ago: the triggers remove a row for a completion
# more than REOPENED_AFTER after its delivery's creation; the margin covers a statement that
# had evaluated that condition just before the hour was counted and commits just after.
SETTLED_AFTER = DeliveryHour.REOPENED_AFTER + timedelta(minutes=5)
HOUR = timedelta(hours=1)
S = Delivery.Status


@dataclass
class Outcomes:
    """One sync's deliveries created in the window, by final state; and the failed or expired
    ones of any age (what "replay all" sends)."""

    WINDOW_FIGURES = (
        "delivered_first_try",
        "delivered_after_retry",
        "failed",
        "expired",
        "skipped",
    )

    delivered_first_try: int = 0
    delivered_after_retry: int = 0
    failed: int = 0
    expired: int = 0
    skipped: int = 0
    replayable: int = 0

    def add(self, row: dict[str, int | None]) -> None:
        """Add the figures ``row`` has (NULL sums count as 0)."""
        for name in (*self.WINDOW_FIGURES, "replayable"):
            setattr(self, name, getattr(self, name) + (row.get(name) or 0))


def _hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _hour_ceil(moment: datetime) -> datetime:
    floor = _hour_floor(moment)
    return floor if floor == moment else floor + HOUR


def _final_counts(*, since: datetime | None) -> dict[str, Count]:
    """The window's figures of a delivery query (``since``: only rows created from then)."""
    window = Q(created_at__gte=since) if since is not None else Q()
    return {
        "delivered_first_try": Count("id", filter=window & Q(status=S.SUCCEEDED, attempts__lte=1)),
        "delivered_after_retry": Count("id", filter=window & Q(status=S.SUCCEEDED, attempts__gt=1)),
        "failed": Count("id", filter=window & Q(status=S.FAILED)),
        "expired": Count("id", filter=window & Q(status=S.EXPIRED)),
        "skipped": Count("id", filter=window & Q(status=S.SKIPPED)),
    }


def outcomes_counted(*, sync_ids: list[int], since: datetime) -> dict[int, Outcomes]:
    """Every figure row by row: the whole window, and the failed and expired of any age."""
    outcomes = {sync_id: Outcomes() for sync_id in sync_ids}
    window = Delivery.objects.filter(sync_id__in=sync_ids, created_at__gte=since)
    for row in window.values("sync_id").annotate(**_final_counts(since=None)):
        outcomes[row["sync_id"]].add(row)
    replayable = Delivery.objects.filter(sync_id__in=sync_ids, status__in=[S.FAILED, S.EXPIRED])
    for row in replayable.values("sync_id").annotate(replayable=Count("id")):
        outcomes[row["sync_id"]].add(row)
    return outcomes


def outcomes_summarised(*, sync_ids: list[int], since: datetime) -> dict[int, Outcomes]:
    """The same figures from the summary rows plus the deliveries not summarised yet.

    Runs in its own transaction; the locks of the syncs it summarises last until its end.
    """
    with transaction.atomic():
        locked = _locks_try(sync_ids)
        outcomes = outcomes_counted(sync_ids=[i for i in sync_ids if i not in locked], since=since)
        if not locked:
            return outcomes
        settled = _hour_floor(timezone.now() - SETTLED_AFTER)
        _hours_write(sorted(locked), settled_before=settled)
        window_hour = _hour_ceil(since)
        outcomes.update({sync_id: Outcomes() for sync_id in locked})
        in_window = Q(hour__gte=window_hour)
        summed = {
            f"{name}_in_window": Sum(name, filter=in_window) for name in Outcomes.WINDOW_FIGURES
        }
        for row in (
            DeliveryHour.objects.filter(sync_id__in=locked, hour__lt=settled)
            .values("sync_id")
            .annotate(**summed, replayable=Sum(F("failed") + F("expired")))
        ):
            outcomes[row["sync_id"]].add(
                {
                    **{name: row[f"{name}_in_window"] for name in Outcomes.WINDOW_FIGURES},
                    "replayable": row["replayable"],
                }
            )
        # Not summarised: the hours since ``settled``, and the window's first (partial) hour.
        rest: QuerySet[Delivery] = Delivery.objects.filter(sync_id__in=locked).filter(
            Q(created_at__gte=settled) | Q(created_at__gte=since, created_at__lt=window_hour)
        )
        for row in rest.values("sync_id").annotate(
            **_final_counts(since=since),
            replayable=Count(
                "id", filter=Q(created_at__gte=settled, status__in=[S.FAILED, S.EXPIRED])
            ),
        ):
            outcomes[row["sync_id"]].add(row)
        return outcomes


def _locks_try(sync_ids: list[int]) -> set[int]:
    """Take each sync's summary lock if it is free, in id order; the ids taken."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM unnest(%s::bigint[]) AS s(id)"
            " WHERE pg_try_advisory_xact_lock(%s, id::integer) ORDER BY id",
            [sorted(sync_ids), DeliveryHour.LOCK_CLASS],
        )
        return {row[0] for row in cursor.fetchall()}


def _hours_write(sync_ids: list[int], *, settled_before: datetime) -> None:
    """Write the summary rows missing for the hours before ``settled_before``."""
    oldest = Delivery.objects.aggregate(oldest=Min("created_at"))["oldest"]
    if oldest is None or _hour_floor(oldest) >= settled_before:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s.id, h FROM unnest(%s::bigint[]) AS s(id)"
            " CROSS JOIN generate_series(%s::timestamptz, %s::timestamptz, interval '1 hour') AS h"
            " WHERE NOT EXISTS (SELECT 1 FROM streaming_deliveryhour x"
            " WHERE x.sync_id = s.id AND x.hour = h)",
            [sync_ids, _hour_floor(oldest), settled_before - HOUR],
        )
        missing = cursor.fetchall()
        # One statement per run of consecutive hours: each reads only its hours' deliveries.
        for run in _runs(sorted({hour for _, hour in missing})):
            hours = set(run)
            pairs = [(sync_id, hour) for sync_id, hour in missing if hour in hours]
            cursor.execute(
                HOURS_INSERT,
                [
                    [sync_id for sync_id, _ in pairs],
                    [hour for _, hour in pairs],
                    run[0],
                    run[-1] + HOUR,
                    sync_ids,
                ],
            )


def _runs(hours: list[datetime]) -> list[list[datetime]]:
    """Consecutive hours grouped: [[h1, h2, h3], [h7], ...] (sorted input)."""
    runs: list[list[datetime]] = []
    for hour in hours:
        if runs and hour - runs[-1][-1] == HOUR:
            runs[-1].append(hour)
        else:
            runs.append([hour])
    return runs


HOURS_INSERT = """
    INSERT INTO streaming_deliveryhour (sync_id, hour, delivered_first_try,
        delivered_after_retry, failed, expired, skipped)
    SELECT m.sync_id, m.hour, coalesce(c.first, 0), coalesce(c.retried, 0),
        coalesce(c.failed, 0), coalesce(c.expired, 0), coalesce(c.skipped, 0)
    FROM unnest(%s::bigint[], %s::timestamptz[]) AS m(sync_id, hour)
    LEFT JOIN (
        SELECT sync_id, date_trunc('hour', created_at, 'UTC') AS hour,
            count(*) FILTER (WHERE status = 'succeeded' AND attempts <= 1) AS first,
            count(*) FILTER (WHERE status = 'succeeded' AND attempts > 1) AS retried,
            count(*) FILTER (WHERE status = 'failed') AS failed,
            count(*) FILTER (WHERE status = 'expired') AS expired,
            count(*) FILTER (WHERE status = 'skipped') AS skipped
        FROM streaming_delivery
        WHERE created_at >= %s AND created_at < %s AND sync_id = ANY(%s::bigint[])
        GROUP BY 1, 2
    ) c ON c.sync_id = m.sync_id AND c.hour = m.hour
    ON CONFLICT (sync_id, hour) DO NOTHING
"""


@dataclass(frozen=True)
class HourOutcomes:
    """The final states of one sync's deliveries created in one UTC hour (the overview's bars)."""

    sync_id: int
    hour: datetime
    delivered: int
    failed: int  # failed or expired: Intercom refused, or the retry window ran out
    skipped: int


def _hour_rows(rows: QuerySet) -> list[HourOutcomes]:
    return [
        HourOutcomes(
            sync_id=row["sync_id"],
            hour=row["hour"],
            delivered=(row["delivered_first_try"] or 0) + (row["delivered_after_retry"] or 0),
            failed=(row["failed"] or 0) + (row["expired"] or 0),
            skipped=row["skipped"] or 0,
        )
        for row in rows
    ]


def _hours_counted(*, sync_ids: list[int], since: datetime) -> list[HourOutcomes]:
    """Row by row: the deliveries created from ``since``, per sync and UTC hour."""
    rows = (
        Delivery.objects.filter(sync_id__in=sync_ids, created_at__gte=since)
        .exclude(status=S.PENDING)
        .annotate(hour=TruncHour("created_at", tzinfo=UTC))
        .values("sync_id", "hour")
        .annotate(**_final_counts(since=None))
    )
    return _hour_rows(rows)


def hours_outcomes(*, sync_ids: list[int], since: datetime) -> list[HourOutcomes]:
    """Each sync's final outcomes per UTC hour from ``since`` (an hour's start): the settled
    hours from the summary rows (written if missing, like ``outcomes_summarised``), the hours
    since counted row by row. Elsewhere than PostgreSQL, all row by row."""
    if connection.vendor != "postgresql":
        return _hours_counted(sync_ids=sync_ids, since=since)
    with transaction.atomic():
        locked = _locks_try(sync_ids)
        hours = _hours_counted(sync_ids=[i for i in sync_ids if i not in locked], since=since)
        if not locked:
            return hours
        settled = _hour_floor(timezone.now() - SETTLED_AFTER)
        _hours_write(sorted(locked), settled_before=settled)
        summary = DeliveryHour.objects.filter(
            sync_id__in=locked, hour__gte=since, hour__lt=settled
        ).values(
            "sync_id",
            "hour",
            "delivered_first_try",
            "delivered_after_retry",
            "failed",
            "expired",
            "skipped",
        )
        return [
            *hours,
            *_hour_rows(summary),
            *_hours_counted(sync_ids=sorted(locked), since=max(since, settled)),
        ]
