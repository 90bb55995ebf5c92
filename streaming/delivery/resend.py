"""Re-send: send again what a sync already sent, as new deliveries marked as re-sends.

Two operator actions (replay, by contrast, only moves failed and expired deliveries back to
pending, in their old place):

- **A user's current profile** (``profile_resend``): one identify whose traits are those of
  every identify the sync received for the user, merged oldest first, so each trait has its
  latest value, as Intercom holds them once all were sent. Stored as a new Event (messageId
  ``sb-resend-…``, ``context.switchboard.resend``) with one delivery in that user's lane.
- **A sync's calls in a time range** (``resend_job_start``): every delivery of the sync created
  in the range that reached a final state (succeeded ones included), each sent again as a NEW
  delivery of the same event, with ``resend_of`` naming the original. A ``ResendJob`` creates
  them in batches (``resend_job_batch``, run by ``tasks.resend_job_run``); each batch commits
  with the job's cursor, so a worker that dies is resumed where it stopped.

Order and budget: a re-send is appended to its user's lane, so it goes out after everything
already queued for that user (live traffic first, per lane), and through the same workers and
the destination's shared rate limiter as any call. An identify whose traits did not change
costs no call (the contact's fingerprint, ``ContactLink``); a re-send is meant to reach
Intercom, so the fingerprints of the users it re-sends are forgotten when it is queued.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import uuid4

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from integrations.intercom.identity import identity_resolve
from integrations.models import Sync
from integrations.selectors import sync_config_build
from streaming import storage
from streaming.delivery.ratelimit import WINDOW_SECONDS, rate_limiter_get
from streaming.delivery.wakeups import lanes_wake_soon
from streaming.ingest.segment import call_normalise
from streaming.ingest.suppression import suppressed_user_ids
from streaming.models import CallType, ContactLink, Delivery, Event, Lane, ResendJob

RESEND_MESSAGE_PREFIX = "sb-resend-"
# What a range re-sends: deliveries that ended. Pending ones are on their way already.
RESENDABLE = (
    Delivery.Status.SUCCEEDED,
    Delivery.Status.FAILED,
    Delivery.Status.EXPIRED,
    Delivery.Status.SKIPPED,
)
BATCH_SIZE = 500
# Intercom's documented default: 10,000 calls a minute per app, counted in 10-second windows
# (DESIGN.md, invariant 4). The preview uses it until an answer's headers told the real limit.
INTERCOM_DEFAULT_PER_WINDOW = 10_000 * WINDOW_SECONDS / 60


class ResendRefused(ValueError):
    """A re-send that cannot be done as asked; the message says why, nothing was changed."""

    def __init__(self, message: str, *, field: str = "sync") -> None:
        super().__init__(message)
        self.field = field


def _sync_check(sync: Sync) -> None:
    if sync.status == Sync.Status.DISABLED:
        raise ResendRefused(
            f"The sync {sync.name!r} is disabled: it sends nothing. Enable it (or pause it, "
            "to hold the re-sends until it is enabled) first."
        )


# --- one user's profile ----------------------------------------------------------------------


def profile_identifies(*, sync: Sync, user_id: str) -> QuerySet[Event]:
    """The identify calls the sync received for ``user_id``, oldest first."""
    return (
        Event.objects.filter(
            user_id=user_id,
            type=CallType.IDENTIFY,
            deliveries__sync=sync,
            deliveries__resend_of=None,
        )
        .distinct()
        .order_by("timestamp", "id")
    )


def profile_traits(*, sync: Sync, user_id: str) -> dict[str, Any] | None:
    """The user's traits as Intercom holds them once every identify went out: merged oldest
    first, a later value replacing an earlier one. None when the sync never identified them."""
    traits: dict[str, Any] = {}
    found = False
    for payload in profile_identifies(sync=sync, user_id=user_id).values_list("payload", flat=True):
        found = True
        traits.update(payload.get("traits") or {})
    return traits if found else None


def profile_resend(*, sync: Sync, user_id: str, requested_by: str = "") -> Delivery:
    """Queue one identify with the user's current profile in their lane of ``sync``."""
    _sync_check(sync)
    if suppressed_user_ids([user_id]):
        raise ResendRefused("This person was deleted on request.", field="user_id")
    traits = profile_traits(sync=sync, user_id=user_id)
    if traits is None:
        raise ResendRefused(
            f"The sync {sync.name!r} never received an identify for this user.", field="user_id"
        )
    latest = profile_identifies(sync=sync, user_id=user_id).reverse().values("source_id").first()
    now = timezone.now()
    call = call_normalise(
        {
            "userId": user_id,
            "traits": traits,
            "messageId": f"{RESEND_MESSAGE_PREFIX}{uuid4().hex}",
            "context": {"switchboard": {"resend": "profile", "sent_by": requested_by}},
        },
        call_type="identify",
        received_at=now,
    )
    identity = identity_resolve(call=call.payload, config=sync_config_build(sync=sync))
    if isinstance(identity, str):
        raise ResendRefused(f"The sync cannot address this user: {identity}", field="user_id")
    with transaction.atomic():
        stored = storage.calls_store(
            events=[
                {
                    "source_id": latest["source_id"],
                    "message_id": call.message_id,
                    "type": call.type,
                    "user_id": call.user_id,
                    "anonymous_id": call.anonymous_id,
                    "event_name": "",
                    "payload": call.payload,
                    "timestamp": call.timestamp,
                }
            ],
            routes=[(call.message_id, sync.pk, identity.user_key)],
            received_at=now,
            now=now,
        )
        _fingerprints_forget(sync=sync, user_keys=[identity.user_key])
        lane_ids = list(stored.lane_ids)
        transaction.on_commit(lambda: lanes_wake_soon(lane_ids))
    return Delivery.objects.select_related("event").get(
        event_id=stored.event_ids[call.message_id], sync=sync
    )


def _fingerprints_forget(*, sync: Sync, user_keys: list[str]) -> None:
    ContactLink.objects.filter(destination_id=sync.destination_id, user_key__in=user_keys).update(
        fingerprint=""
    )


# --- a sync's calls in a time range ----------------------------------------------------------


def range_deliveries(*, sync: Sync, since: datetime, until: datetime) -> QuerySet[Delivery]:
    """What a range re-sends: the sync's original deliveries created in [since, until) that
    ended (test events, deletes and earlier re-sends left out)."""
    return (
        Delivery.objects.filter(
            sync=sync,
            created_at__gte=since,
            created_at__lt=until,
            status__in=RESENDABLE,
            resend_of=None,
        )
        .exclude(event__type=CallType.DELETE)
        .exclude(event__message_id__startswith="sb-test-")
    )


@dataclass(frozen=True)
class ResendPreview:
    """What a range re-send would do, shown before it starts."""

    calls: int
    per_window: float  # Intercom calls the destination allows per window
    limit_known: bool  # told by Intercom's headers (else Intercom's documented default)

    @property
    def seconds(self) -> int:
        """How long the rate limit alone needs for the calls (each at least one request)."""
        return math.ceil(self.calls / self.per_window * WINDOW_SECONDS) if self.calls else 0


def _range_check(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    if since is None or until is None:
        raise ResendRefused("Give the start and the end of the range.", field="since")
    if since >= until:
        raise ResendRefused("The range must start before it ends.", field="until")
    return since, until


def calls_preview(*, sync: Sync, calls: int) -> ResendPreview:
    """How long ``calls`` Intercom calls take at the limit of the sync's destination: the one
    its answers announced, else Intercom's documented default."""
    known = rate_limiter_get(destination_id=sync.destination_id).window_limit()
    return ResendPreview(
        calls=calls,
        per_window=float(known) if known else INTERCOM_DEFAULT_PER_WINDOW,
        limit_known=bool(known),
    )


def resend_preview(*, sync: Sync, since: datetime, until: datetime) -> ResendPreview:
    since, until = _range_check(since, until)
    return calls_preview(
        sync=sync, calls=range_deliveries(sync=sync, since=since, until=until).count()
    )


def resend_job_start(
    *, sync: Sync, since: datetime, until: datetime, requested_by_name: str = ""
) -> ResendJob:
    """Create the job; its batches are queued by ``tasks.resend_job_run`` after commit."""
    _sync_check(sync)
    since, until = _range_check(since, until)
    now = timezone.now()
    job = ResendJob.objects.create(
        sync=sync,
        since=since,
        until=until,
        total=range_deliveries(sync=sync, since=since, until=until).count(),
        requested_by_name=requested_by_name,
        requested_at=now,
        updated_at=now,
    )
    if job.total == 0:
        job.status, job.completed_at = ResendJob.Status.DONE, now
        job.save(update_fields=["status", "completed_at"])
    return job


def resend_job_batch(*, job: ResendJob, batch_size: int = BATCH_SIZE) -> int:
    """Queue the next batch of re-sends; returns how many (0: the job is over).

    The new deliveries, the lanes made due and the job's cursor commit together; the job's row
    is locked meanwhile, so two runners of one job take turns and never repeat a batch.
    """
    with transaction.atomic():
        locked = ResendJob.objects.select_for_update().select_related("sync").get(pk=job.pk)
        if locked.status != ResendJob.Status.RUNNING:
            _refresh(job, locked)
            return 0
        originals = list(
            range_deliveries(sync=locked.sync, since=locked.since, until=locked.until)
            .filter(id__gt=locked.cursor)
            .order_by("id")
            .values("id", "event_id", "lane_id", "user_key")[:batch_size]
        )
        now = timezone.now()
        if not originals:
            locked.status = ResendJob.Status.DONE
            locked.completed_at = locked.updated_at = now
            locked.save(update_fields=["status", "completed_at", "updated_at"])
            _refresh(job, locked)
            return 0
        Delivery.objects.bulk_create(
            Delivery(
                event_id=original["event_id"],
                sync_id=locked.sync_id,
                lane_id=original["lane_id"],
                user_key=original["user_key"],
                created_at=now,
                resend_of=original["id"],
            )
            for original in originals
        )
        lane_ids = sorted({original["lane_id"] for original in originals})
        # An idle lane becomes due now; a lane waiting for a retry keeps its backoff (its
        # head goes first anyway), as ingest does.
        Lane.objects.filter(pk__in=lane_ids, next_attempt_at=None).update(next_attempt_at=now)
        _fingerprints_forget(
            sync=locked.sync, user_keys=sorted({original["user_key"] for original in originals})
        )
        locked.cursor = originals[-1]["id"]
        locked.queued += len(originals)
        locked.total = max(locked.total, locked.queued)
        locked.updated_at = now
        locked.save(update_fields=["cursor", "queued", "total", "updated_at"])
        transaction.on_commit(lambda: lanes_wake_soon(lane_ids))
    _refresh(job, locked)
    return len(originals)


def _refresh(job: ResendJob, source: ResendJob) -> None:
    for name in ("status", "cursor", "queued", "total", "updated_at", "completed_at"):
        setattr(job, name, getattr(source, name))


def resend_job_run(*, job: ResendJob, seconds: float | None = None) -> bool:
    """Queue batches until the job is over (True) or ``seconds`` have passed (False)."""
    started = time.monotonic()
    while resend_job_batch(job=job):
        if seconds is not None and time.monotonic() - started >= seconds:
            return False
    return True


def resend_job_cancel(*, job: ResendJob) -> bool:
    """Stop queuing (what is queued already is sent); False when it was not running."""
    return bool(
        ResendJob.objects.filter(pk=job.pk, status=ResendJob.Status.RUNNING).update(
            status=ResendJob.Status.CANCELLED, completed_at=timezone.now()
        )
    )


def resend_jobs_running() -> list[ResendJob]:
    return list(
        ResendJob.objects.filter(status=ResendJob.Status.RUNNING)
        .select_related("sync")
        .order_by("requested_at")
    )
