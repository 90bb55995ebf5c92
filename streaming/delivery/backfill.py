"""Backfill: identify every existing host user through the normal pipeline.

The automatic identify (``streaming.ingest.host_identify``) fires only when a user is saved; a
backfill sends the users that already exist, with the very same traits
(``host_identify_traits``), as identify calls ingested like any other (``events_ingest``: the
suppression list, each sync's filters, one delivery per sync in the user's lane, behind what is
queued there; the workers then send them inside the destination's rate limit).

A ``BackfillJob`` walks the model in primary-key order, a batch at a time. Each batch's calls and
the job's cursor (the last primary key done) are committed in ONE transaction, so a run killed at
any instant resumes from the last committed batch and stores nobody twice; the calls' messageIds
are per (job, user) (``sb-backfill-<job>-<pk>``), so even a batch ingested again would be
acknowledged as duplicates. The ``manage.py switchboard backfill`` command runs a job in its own
process with a progress bar; the admin's button queues the same job on the workers
(``tasks.backfill_run``), which run it a slice at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist
from django.db import models, transaction
from django.db.models import QuerySet
from django.utils import timezone

from integrations.models import Source, Sync
from streaming.ingest.events import events_ingest
from streaming.ingest.host_identify import host_identify_traits
from streaming.ingest.segment import Call, InvalidCall, call_normalise, jsonable
from streaming.models import BackfillJob

logger = logging.getLogger(__name__)

BACKFILL_MESSAGE_PREFIX = "sb-backfill-"
DEFAULT_BATCH_SIZE = 500
MAX_BATCH_SIZE = 5000
# The fields a host model commonly records its creation in, tried in turn for ``since``.
SINCE_FIELDS = ("date_joined", "created_at", "created")


class BackfillRefused(ValueError):
    """A backfill that cannot start as asked; the message says why, and nothing was changed."""


@dataclass(frozen=True)
class BackfillPlan:
    """What a backfill would do: which users, into which source and syncs."""

    model: type[models.Model]
    source: Source
    sync: Sync | None
    since: datetime | None
    since_field: str
    batch_size: int

    @property
    def label(self) -> str:
        return self.model._meta.label

    def users(self) -> QuerySet[Any]:
        users = self.model._default_manager.order_by("pk")
        if self.since is not None:
            users = users.filter(**{f"{self.since_field}__gte": self.since})
        return users

    def syncs(self) -> list[Sync]:
        if self.sync is not None:
            return [self.sync]
        return list(self.source.syncs.order_by("name"))


def backfill_plan(
    *,
    model: str,
    source: str | Source | None = None,
    sync: str | Sync | None = None,
    since: datetime | None = None,
    since_field: str = "",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> BackfillPlan:
    """Check what an operator asked for; raises ``BackfillRefused`` with the reason."""
    try:
        model_class = apps.get_model(model)
    except (LookupError, ValueError):
        raise BackfillRefused(
            f"{model!r} is not an installed model (give app_label.Model, e.g. auth.User)."
        ) from None
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise BackfillRefused(f"The batch size must be between 1 and {MAX_BATCH_SIZE}.")
    sync_found = _sync_get(sync)
    source_found = _source_get(source, sync_found)
    if sync_found is not None and not sync_found.sources.filter(pk=source_found.pk).exists():
        raise BackfillRefused(
            f"The sync {sync_found.name!r} does not take calls from the source "
            f"{source_found.name!r}: pick one of its sources."
        )
    field = ""
    if since is not None:
        field = since_field or _since_field_guess(model_class)
        try:
            found = model_class._meta.get_field(field)
        except FieldDoesNotExist:
            raise BackfillRefused(f"{model_class._meta.label} has no field {field!r}.") from None
        if not isinstance(found, models.DateField):
            raise BackfillRefused(f"{field!r} is not a date or time field.")
    return BackfillPlan(
        model=model_class,
        source=source_found,
        sync=sync_found,
        since=since,
        since_field=field,
        batch_size=batch_size,
    )


def _sync_get(sync: str | Sync | None) -> Sync | None:
    if sync is None or isinstance(sync, Sync):
        return sync
    found = Sync.objects.filter(name=sync).first()
    if found is None and str(sync).isdigit():
        found = Sync.objects.filter(pk=int(sync)).first()
    if found is None:
        raise BackfillRefused(f"No sync named {sync!r}.")
    return found


def _source_get(source: str | Source | None, sync: Sync | None) -> Source:
    if isinstance(source, Source):
        return source
    name = source or settings.SWITCHBOARD_PYTHON_SOURCE
    if name:
        found = Source.objects.filter(name=name).first()
        if found is None:
            raise BackfillRefused(f"No source named {name!r}.")
        return found
    if sync is not None:
        first = sync.sources.order_by("id").first()
        if first is not None:
            return first
    raise BackfillRefused(
        "Which source do the calls come from? Give one, or set SWITCHBOARD_PYTHON_SOURCE "
        "(the source of the automatic identify)."
    )


def _since_field_guess(model: type[models.Model]) -> str:
    names = {f.name for f in model._meta.get_fields()}
    for name in SINCE_FIELDS:
        if name in names:
            return name
    raise BackfillRefused(
        f"{model._meta.label} has none of {', '.join(SINCE_FIELDS)}: name the date field "
        "that --since reads."
    )


# --- the job ---------------------------------------------------------------------------------


def backfill_start(
    *, plan: BackfillPlan, requested_by_name: str = "", via: str = "command"
) -> BackfillJob:
    """A new job for ``plan`` (its total counted now)."""
    now = timezone.now()
    return BackfillJob.objects.create(
        model=plan.label,
        source=plan.source,
        sync=plan.sync,
        since=plan.since,
        since_field=plan.since_field,
        batch_size=plan.batch_size,
        total=plan.users().count(),
        requested_by_name=requested_by_name,
        requested_via=via,
        requested_at=now,
        updated_at=now,
    )


def backfill_unfinished(*, plan: BackfillPlan) -> BackfillJob | None:
    """The latest job of the same model, source and sync that did not finish (to resume)."""
    return (
        BackfillJob.objects.filter(
            model=plan.label,
            source=plan.source,
            sync=plan.sync,
            status=BackfillJob.Status.RUNNING,
        )
        .order_by("-pk")
        .first()
    )


def backfill_job_plan(job: BackfillJob) -> BackfillPlan:
    return BackfillPlan(
        model=apps.get_model(job.model),
        source=job.source,
        sync=job.sync,
        since=job.since,
        since_field=job.since_field,
        batch_size=job.batch_size,
    )


def backfill_message_id(*, job_id: int, pk: Any) -> str:
    return f"{BACKFILL_MESSAGE_PREFIX}{job_id}-{pk}"


def _identify_calls(job: BackfillJob, users: list[models.Model], at: datetime) -> list[Call]:
    calls = []
    for user in users:
        raw = {
            "userId": str(user.pk),
            "traits": host_identify_traits(instance=user),
            "messageId": backfill_message_id(job_id=job.pk, pk=user.pk),
            "context": {
                "library": {"name": "switchboard-python"},
                "switchboard": {"backfill": job.pk},
            },
        }
        try:
            calls.append(call_normalise(jsonable(raw), call_type="identify", received_at=at))
        except InvalidCall as error:
            # One user's unusable traits must not stop everyone else's identify.
            logger.warning("backfill %s: user %s not sent: %s", job.pk, user.pk, error.errors)
    return calls


def backfill_batch(*, job: BackfillJob) -> int:
    """Identify the next batch of users; returns how many (0: the job is over).

    The batch's calls and the job's cursor commit together; the job's row is locked for it, so
    two runners of one job (the command and a worker, or two workers) take turns, never the
    same batch.
    """
    with transaction.atomic():
        locked = BackfillJob.objects.select_for_update().get(pk=job.pk)
        if locked.status != BackfillJob.Status.RUNNING:
            _refresh(job, locked)
            return 0
        plan = backfill_job_plan(locked)
        users = plan.users()
        if locked.cursor:
            users = users.filter(pk__gt=plan.model._meta.pk.to_python(locked.cursor))
        batch = list(users[: locked.batch_size])
        now = timezone.now()
        if not batch:
            locked.status = BackfillJob.Status.DONE
            locked.completed_at = locked.updated_at = now
            locked.save(update_fields=["status", "completed_at", "updated_at"])
            _refresh(job, locked)
            return 0
        calls = _identify_calls(locked, batch, now)
        if calls:
            events_ingest(
                source=locked.source,
                calls=calls,
                received_at=now,
                sync_ids=None if locked.sync_id is None else {locked.sync_id},
            )
        locked.cursor = str(batch[-1].pk)
        locked.done += len(batch)
        # Users added since the start are identified too (they sort after the cursor).
        locked.total = max(locked.total, locked.done)
        locked.updated_at = now
        locked.save(update_fields=["cursor", "done", "total", "updated_at"])
    _refresh(job, locked)
    return len(batch)


def _refresh(job: BackfillJob, source: BackfillJob) -> None:
    for name in ("status", "cursor", "done", "total", "updated_at", "completed_at"):
        setattr(job, name, getattr(source, name))


def backfill_run(
    *,
    job: BackfillJob,
    on_batch: Callable[[int], None] | None = None,
    seconds: float | None = None,
) -> bool:
    """Run batches until the job is over (True) or ``seconds`` have passed (False)."""
    started = time.monotonic()
    while True:
        done = backfill_batch(job=job)
        if done == 0:
            return True
        if on_batch is not None:
            on_batch(done)
        if seconds is not None and time.monotonic() - started >= seconds:
            return False


def backfill_cancel(*, job: BackfillJob) -> bool:
    """Stop a running job after its batch in flight; False when it was not running."""
    return bool(
        BackfillJob.objects.filter(pk=job.pk, status=BackfillJob.Status.RUNNING).update(
            status=BackfillJob.Status.CANCELLED, completed_at=timezone.now()
        )
    )


def jobs_running() -> list[BackfillJob]:
    return list(
        BackfillJob.objects.filter(status=BackfillJob.Status.RUNNING)
        .select_related("source", "sync")
        .order_by("requested_at")
    )
