"""The sweeper and retention: what Celery beat runs.

``lanes_sweep`` wakes lanes whose deliveries are due (retries, wake-ups lost to a broker restart
or a worker crash, a lease that lapsed with its worker); ``retention_purge`` deletes attempt
logs and blanks payloads past ``SWITCHBOARD_RETENTION``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from integrations.models import Sync
from streaming.delivery.lanes import LaneLease
from streaming.delivery.wakeups import lanes_wake
from streaming.models import Delivery, DeliveryAttempt, Event, Lane

PENDING = Delivery.Status.PENDING
SWEEP_BATCH = 1000
ORPHAN_SWEEP_SECONDS = 60
PURGE_BATCH = 5000


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
    woken = lanes_wake(lane_ids)
    if woken:
        Lane.objects.filter(id__in=woken).filter(
            Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
        ).update(next_attempt_at=now + LaneLease.duration())
    return woken


def destination_lanes_wake(*, destination_id: int) -> list[int]:
    """Wake every lane of a destination that has pending deliveries (after a token change)."""
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
