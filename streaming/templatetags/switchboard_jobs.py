"""Template tags of the re-send and backfill pages that other pages include: the running jobs
(the overview's ``admin/switchboard/overview_jobs.html``) and the syncs a user's profile can be
re-sent to (the timeline's ``admin/streaming/timeline_resend.html``). Tags, so that an include
brings its own data and the page that includes it needs no change to its view."""

from __future__ import annotations

from typing import Any

from django import template

from integrations.models import Sync
from streaming.delivery.backfill import jobs_running
from streaming.delivery.resend import resend_jobs_running
from streaming.models import CallType

register = template.Library()


@register.simple_tag
def running_jobs() -> list[dict[str, Any]]:
    """Each running backfill and re-send: what, where, how far (for a progress bar)."""
    jobs: list[dict[str, Any]] = []
    for job in jobs_running():
        jobs.append(
            {
                "kind": "backfill",
                "id": job.pk,
                "title": f"Backfill #{job.pk}: {job.model}",
                "where": job.sync.name if job.sync else f"every sync of {job.source.name}",
                "done": job.done,
                "total": job.total,
                "unit": "users identified",
                "sync_id": job.sync_id,
                "updated_at": job.updated_at,
            }
        )
    for job in resend_jobs_running():
        jobs.append(
            {
                "kind": "resend",
                "id": job.pk,
                "title": f"Re-send #{job.pk}",
                "where": job.sync.name,
                "done": job.queued,
                "total": job.total,
                "unit": "calls queued again",
                "sync_id": job.sync_id,
                "updated_at": job.updated_at,
            }
        )
    for job in jobs:
        job["percent"] = int(100 * job["done"] / job["total"]) if job["total"] else 100
    return jobs


@register.simple_tag
def profile_resend_syncs(user_id: str) -> list[Sync]:
    """The syncs that received an identify for ``user_id`` (its profile can be re-sent)."""
    return list(
        Sync.objects.filter(
            deliveries__event__user_id=user_id, deliveries__event__type=CallType.IDENTIFY
        )
        .distinct()
        .order_by("name")
    )
