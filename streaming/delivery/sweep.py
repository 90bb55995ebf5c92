"""The sweeper and retention: what Celery beat runs.

``lanes_sweep`` wakes lanes whose deliveries are due (retries, wake-ups lost to a broker restart
or a worker crash, a lease that lapsed with its worker); ``retention_purge`` deletes the
attempts, final deliveries and events past ``SWITCHBOARD_RETENTION``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import SET_NULL, Exists, F, Model, OuterRef, Q, QuerySet
from django.db.models.fields.reverse_related import ForeignObjectRel
from django.utils import timezone

from integrations.models import Sync
from streaming.delivery.lanes import LaneLease
from streaming.delivery.wakeups import lanes_wake
from streaming.models import Delivery, DeliveryAttempt, DeliveryHour, Event, KeptOut, Lane

logger = logging.getLogger(__name__)

PENDING = Delivery.Status.PENDING
SWEEP_BATCH = 1000
ORPHAN_SWEEP_SECONDS = 60
# Events a purge transaction takes, with their deliveries and attempts (about 4 rows each).
PURGE_BATCH = 2000
# A purge rests this share of the time it works (a backlog of months goes at half speed and
# leaves the database's other half to ingest), and stops after PURGE_SECONDS: the next run
# (hourly) goes on from where it stopped.
PURGE_REST = 1.0
PURGE_SECONDS = 15 * 60


def lanes_sweep(*, limit: int = SWEEP_BATCH) -> list[int]:
    """Wake the lanes that are due and that no worker holds. Returns their ids.

    A lane is due when its head's next try has come (``Lane.next_attempt_at``, which ingest sets
    for a lane it adds to). Lanes are only swept a sweep interval after they became due, so the
    sweeper does not duplicate fresh wake-ups from ingest; a woken lane is not swept again for
    ``SWITCHBOARD_LEASE_SECONDS`` unless a worker looks at it first. Once a minute it also looks
    for pending deliveries in lanes without a due time (a worker died just as it found its lane
    empty while a call arrived): that search reads every pending delivery, hence not every pass.
    """
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
    if not lane_ids:
        return []
    # Pushed before the wake-ups leave, not after: a worker's claim skips a lane whose row is
    # being written, and would skip these while this UPDATE held them.
    pushed_until = now + LaneLease.duration()
    _lanes_push(lane_ids, now=now, until=pushed_until)
    woken = lanes_wake(lane_ids)
    if len(woken) < len(lane_ids):
        # The broker refused: the next pass tries again.
        missed = set(lane_ids) - set(woken)
        Lane.objects.filter(id__in=missed, next_attempt_at=pushed_until).update(next_attempt_at=now)
    return woken


def _lanes_push(lane_ids: list[int], *, now: datetime, until: datetime) -> None:
    """Not sweep these lanes again before ``until`` (a worker that looks at one sets its due
    time itself). Lanes whose row another transaction is writing are skipped rather than waited
    for: a multi-row UPDATE waiting on ingest or a worker could close a lock cycle with them."""
    with transaction.atomic():
        free = (
            Lane.objects.filter(id__in=lane_ids)
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
            .select_for_update(skip_locked=True)
            .values("pk")
        )
        Lane.objects.filter(pk__in=free).update(next_attempt_at=until)


def destination_lanes_wake(*, destination_id: int) -> list[int]:
    """Wake every lane of a destination that has pending deliveries (after a token change)."""
    lane_ids = Delivery.objects.filter(
        status=PENDING, sync__destination_id=destination_id
    ).values_list("lane_id", flat=True)
    return lanes_wake(set(lane_ids))


def retention_purge(
    *, now: datetime | None = None, seconds: float = PURGE_SECONDS
) -> tuple[int, int]:
    """Purge what is older than ``SWITCHBOARD_RETENTION``. Returns (attempts deleted, payloads
    blanked); the deliveries and events deleted are logged.

    By age only, never because a delivery succeeded: the trail is the product, so it all goes
    at the same age. Past retention, HTTP attempts are deleted; then each delivery that is
    final (never a pending one: its payload is what will be sent) and whose last change (its
    completion, else its creation) is past retention; then each event left without deliveries
    or attempts. An event kept for a delivery that is final but recent (a replay) has its
    payload blanked; one kept for a pending delivery keeps it.

    Linear: the events are walked once, oldest id first, ``PURGE_BATCH`` at a time, each batch
    in a short transaction of its own; ingest only adds rows at the other end and never waits
    for the purge. A run works for ``seconds`` at most, resting ``PURGE_REST`` of the time it
    works; the next run starts from the oldest event left, where this one stopped.
    """
    cutoff = (now or timezone.now()) - settings.SWITCHBOARD_RETENTION
    newest = (
        Event.objects.filter(received_at__lt=cutoff)
        .order_by("-received_at")
        .values_list("id", flat=True)
        .first()
    )
    purged: Counter[str] = Counter()
    started = time.monotonic()
    next_id = Event.objects.order_by("id").values_list("id", flat=True).first()
    while newest is not None and next_id is not None and next_id <= newest:
        began = time.monotonic()
        ids = list(
            Event.objects.filter(id__gte=next_id, id__lte=newest)
            .order_by("id")
            .values_list("id", flat=True)[:PURGE_BATCH]
        )
        if not ids:
            break
        with transaction.atomic():
            purged += _events_purge(first=ids[0], last=ids[-1], cutoff=cutoff)
        next_id = ids[-1] + 1
        if time.monotonic() - started > seconds:
            break
        time.sleep((time.monotonic() - began) * PURGE_REST)
    # The health page's summary rows of hours gone by (it writes them again if a delivery is left).
    DeliveryHour.objects.filter(hour__lt=cutoff - timedelta(hours=1)).delete()
    if purged:
        logger.info(
            "retention: %d attempts, %d deliveries and %d events deleted, %d payloads blanked",
            purged["attempts"],
            purged["deliveries"],
            purged["events"],
            purged["payloads"],
        )
    return purged["attempts"], purged["payloads"]


def _events_purge(*, first: int, last: int, cutoff: datetime) -> Counter[str]:
    """One batch of ``retention_purge``: the events with ids first..last and what hangs off them."""
    purged: Counter[str] = Counter()
    in_batch = {"event_id__gte": first, "event_id__lte": last}
    purged["attempts"] = _rows_delete(
        DeliveryAttempt.objects.filter(**in_batch, started_at__lt=cutoff)
    )
    purged["deliveries"] = _rows_delete(
        Delivery.objects.filter(**in_batch)
        .exclude(status=PENDING)
        .filter(Q(completed_at__lt=cutoff) | Q(completed_at__isnull=True, created_at__lt=cutoff))
        .exclude(Exists(DeliveryAttempt.objects.filter(delivery_id=OuterRef("pk"))))
    )
    old_events = Event.objects.filter(id__gte=first, id__lte=last, received_at__lt=cutoff)
    # Why a sync kept an old call out goes with the call.
    purged["kept_out"] = _rows_delete(
        KeptOut.objects.filter(**in_batch, event_id__in=old_events.values("id"))
    )
    purged["events"] = _rows_delete(
        old_events.exclude(Exists(Delivery.objects.filter(event_id=OuterRef("pk")))).exclude(
            Exists(DeliveryAttempt.objects.filter(event_id=OuterRef("pk")))
        )
    )
    purged["payloads"] = (
        old_events.exclude(payload={})
        .exclude(Exists(Delivery.objects.filter(event_id=OuterRef("pk"), status=PENDING)))
        .update(payload={})
    )
    return purged


# The trail's own references, which the purge deletes in order (attempts, deliveries, events).
_TRAIL = (DeliveryAttempt, Delivery, KeptOut, Event)


def _references(model: type[Model]) -> list[ForeignObjectRel]:
    """Every foreign key to ``model``, those without a reverse accessor (``related_name="+"``)
    included."""
    return [
        field
        for field in model._meta.get_fields(include_hidden=True)
        if field.auto_created and not field.concrete and (field.one_to_many or field.one_to_one)
    ]


def _rows_delete(rows: QuerySet) -> int:
    """Delete ``rows`` in one statement (Django's collector would load every row, payloads
    included, to cascade to what the purge has already deleted).

    A row that another model still refers to is kept, unless the reference is ``SET_NULL``:
    then it is set to NULL (the trail's own references are deleted first, by the purge).
    """
    model = rows.model
    released = []
    for relation in _references(model):
        if relation.related_model in _TRAIL:
            continue
        if relation.on_delete is SET_NULL:
            released.append(relation)
        else:
            rows = rows.exclude(
                Exists(
                    relation.related_model._base_manager.filter(
                        **{relation.field.attname: OuterRef("pk")}
                    )
                )
            )
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        if not released:
            subquery, params = rows.values("pk").query.sql_with_params()
            cursor.execute(f"DELETE FROM {table} WHERE id IN ({subquery})", params)
            return cursor.rowcount
        # Locked, so that the references let go of are exactly those of the rows deleted.
        ids = list(rows.select_for_update().values_list("pk", flat=True))
        for relation in released:
            relation.related_model._base_manager.filter(
                **{f"{relation.field.attname}__in": ids}
            ).update(**{relation.field.attname: None})
        deleted = 0
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            cursor.execute(
                f"DELETE FROM {table} WHERE id IN ({', '.join(['%s'] * len(chunk))})", chunk
            )
            deleted += cursor.rowcount
        return deleted
