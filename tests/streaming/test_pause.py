"""Pause holds, disable drops: an operator who pauses a sync during an Intercom incident loses
nothing, and what a disabled sync drops is counted."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from integrations.models import Sync
from streaming.delivery.wakeups import wakeup_publisher
from streaming.ingest.filtered import filtered_counts
from streaming.models import Delivery
from tests.streaming.delivery_setup import identify, ingest, sync_into, track, wait_settled

pytestmark = pytest.mark.usefixtures("fresh_cache")


@pytest.mark.worker
def test_calls_to_a_paused_sync_wait_and_go_out_in_order_once_it_is_enabled(
    celery_worker_process, intercom_sandbox
):
    # given a sync paused during an incident, with a real worker running
    sync = sync_into(intercom_sandbox)
    celery_worker_process.start(1)
    sync.status = Sync.Status.PAUSED
    sync.save()
    # when calls arrive while it is paused
    calls = [identify("ada"), track("ada", "Signed Up"), track("ada", "Paid")]
    held = ingest(sync, calls)
    # then they are stored, pending, and nothing reaches Intercom
    assert [d.status for d in held] == ["pending"] * 3
    assert wakeup_publisher.flush()
    time.sleep(1.5)  # the worker got the wake-up and found the sync held
    assert intercom_sandbox.requests == []
    assert [d.status for d in Delivery.objects.filter(sync=sync)] == ["pending"] * 3
    # when the operator enables it again, 5 hours later (past the sync's 4 h retry window)
    Delivery.objects.filter(pk__in=[d.pk for d in held]).update(
        created_at=timezone.now() - timedelta(hours=5)
    )
    sync.status = Sync.Status.ENABLED
    sync.save()
    # then everything it held goes out, in the user's order, with a retry window of its own
    wait_settled(sync, celery_worker_process)
    assert [d.status for d in Delivery.objects.filter(sync=sync).order_by("id")] == [
        "succeeded"
    ] * 3
    events = [r["body"]["event_name"] for r in intercom_sandbox.requests if r["path"] == "/events"]
    assert events == ["Signed Up", "Paid"]
    for delivery in Delivery.objects.filter(sync=sync):
        assert delivery.window_started_at is not None
        assert delivery.window_started_at > timezone.now() - timedelta(minutes=5)


@pytest.mark.django_db
def test_a_disabled_sync_stores_nothing_and_counts_what_it_dropped(
    intercom_sandbox, django_capture_on_commit_callbacks
):
    sync = sync_into(intercom_sandbox, status=Sync.Status.DISABLED)

    with django_capture_on_commit_callbacks(execute=True):
        assert ingest(sync, [identify("ada"), track("ada", "Signed Up")]) == []

    assert not Delivery.objects.filter(sync=sync).exists()
    counts = filtered_counts(sync_id=sync.pk, since=timezone.now() - timedelta(hours=1))
    assert counts == {"the sync is disabled: what arrives is dropped": 2}
