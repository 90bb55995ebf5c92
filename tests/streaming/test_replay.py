"""Retry now and replay: what they change in the queue, in which order, and who is woken."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from streaming.delivery.replay import (
    deliveries_replay,
    deliveries_retry_now,
    sync_replayable_deliveries,
)
from streaming.models import Delivery, Lane
from tests.factories import SyncFactory
from tests.streaming.audit_rows import (
    attempt_make,
    delivery_make,
    event_make,
    wakeups_clear,
    wakeups_read,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_broker():
    wakeups_clear()


def lane_order(lane: Lane) -> list[int]:
    """The order a worker drains a lane in: its pending deliveries by id."""
    return list(
        Delivery.objects.filter(lane=lane, status="pending")
        .order_by("id")
        .values_list("id", flat=True)
    )


def test_a_replayed_delivery_goes_before_later_deliveries_of_its_lane(
    sync, django_capture_on_commit_callbacks
):
    # given: yesterday's identify failed, today's track waits behind nothing
    now = timezone.now()
    source = sync.sources.get()
    identify = delivery_make(
        event=event_make(
            source=source, user_id="ada", type="identify", received_at=now - timedelta(days=1)
        ),
        sync=sync,
        status="failed",
        attempts=1,
        reason="400",
        completed_at=now,
    )
    attempt_make(delivery=identify, status_code=400, category="permanent")
    track = delivery_make(event=event_make(source=source, user_id="ada"), sync=sync)
    assert lane_order(track.lane) == [track.pk]

    # when
    with django_capture_on_commit_callbacks(execute=True):
        change = deliveries_replay(deliveries=Delivery.objects.filter(pk=identify.pk))

    # then: the identify keeps its id, so it is the head again, before the track
    assert change.deliveries == 1
    assert lane_order(track.lane) == [identify.pk, track.pk]
    identify.refresh_from_db()
    assert identify.attempts == 0 and identify.reason == "" and identify.completed_at is None
    assert identify.next_attempt_at <= timezone.now()
    assert identify.attempt_log.count() == 1
    assert wakeups_read() == [identify.lane_id]


def test_replay_leaves_other_states_alone(sync, django_capture_on_commit_callbacks):
    source = sync.sources.get()
    states = ["pending", "succeeded", "skipped", "failed", "expired"]
    rows = {
        s: delivery_make(event=event_make(source=source, user_id=f"u-{s}"), sync=sync, status=s)
        for s in states
    }
    with django_capture_on_commit_callbacks(execute=True):
        change = deliveries_replay(deliveries=Delivery.objects.all())
    assert change.deliveries == 2
    for status, delivery in rows.items():
        delivery.refresh_from_db()
        expected = "pending" if status in ("failed", "expired") else status
        assert delivery.status == expected, status
    assert wakeups_read() == sorted([rows["failed"].lane_id, rows["expired"].lane_id])


def test_replay_makes_a_lane_due_even_when_it_waited_for_later(sync):
    source = sync.sources.get()
    failed = delivery_make(event=event_make(source=source), sync=sync, status="failed")
    Lane.objects.filter(pk=failed.lane_id).update(
        next_attempt_at=timezone.now() + timedelta(hours=1)
    )
    deliveries_replay(deliveries=Delivery.objects.filter(pk=failed.pk))
    failed.lane.refresh_from_db()
    assert failed.lane.next_attempt_at <= timezone.now()


def test_retry_now_also_makes_the_deliveries_ahead_of_it_due(
    sync, django_capture_on_commit_callbacks
):
    # given: a head in backoff and a delivery behind it
    later = timezone.now() + timedelta(minutes=4)
    source = sync.sources.get()
    head = delivery_make(
        event=event_make(source=source, user_id="ada"), sync=sync, attempts=3, next_attempt_at=later
    )
    behind = delivery_make(
        event=event_make(source=source, user_id="ada"), sync=sync, next_attempt_at=later
    )
    after = delivery_make(
        event=event_make(source=source, user_id="ada"), sync=sync, next_attempt_at=later
    )
    other_user = delivery_make(
        event=event_make(source=source, user_id="bob"), sync=sync, next_attempt_at=later
    )

    with django_capture_on_commit_callbacks(execute=True):
        change = deliveries_retry_now(deliveries=Delivery.objects.filter(pk=behind.pk))

    # then: the lane goes at once, in order, up to the chosen one; nothing else moves
    assert change.deliveries == 2
    for row in (head, behind, after, other_user):
        row.refresh_from_db()
    assert head.next_attempt_at <= timezone.now()
    assert behind.next_attempt_at <= timezone.now()
    assert after.next_attempt_at == later
    assert other_user.next_attempt_at == later
    assert head.attempts == 3  # retry now is not a reset
    assert wakeups_read() == [head.lane_id]


def test_retry_now_ignores_deliveries_that_are_not_pending(
    sync, django_capture_on_commit_callbacks
):
    done = delivery_make(
        event=event_make(source=sync.sources.get()),
        sync=sync,
        status="succeeded",
        completed_at=timezone.now(),
    )
    with django_capture_on_commit_callbacks(execute=True):
        change = deliveries_retry_now(deliveries=Delivery.objects.filter(pk=done.pk))
    assert change.deliveries == 0
    assert wakeups_read() == []


def test_replay_all_of_a_sync_from_the_health_page(
    admin_client, sync, django_capture_on_commit_callbacks
):
    other_sync = SyncFactory(sources=[sync.sources.get()])
    source = sync.sources.get()
    mine = [
        delivery_make(event=event_make(source=source, user_id=f"u{n}"), sync=sync, status=s)
        for n, s in enumerate(["failed", "expired", "failed"])
    ]
    theirs = delivery_make(event=event_make(source=source), sync=other_sync, status="failed")

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:streaming_sync_replay", args=[sync.pk]), follow=True
        )

    assert "3 failed/expired deliveries replayed" in response.content.decode()
    assert sync_replayable_deliveries(sync=sync).count() == 0
    theirs.refresh_from_db()
    assert theirs.status == "failed"
    assert wakeups_read() == sorted(d.lane_id for d in mine)


def test_replay_all_needs_a_post(admin_client, sync):
    delivery_make(event=event_make(source=sync.sources.get()), sync=sync, status="failed")
    response = admin_client.get(reverse("admin:streaming_sync_replay", args=[sync.pk]))
    assert response.status_code == 405
    assert sync_replayable_deliveries(sync=sync).count() == 1


def test_replay_filtered_by_the_changelist_select_all(
    admin_client, sync, django_capture_on_commit_callbacks
):
    """Replay by filter: filter the list, "select all", run the action."""
    source = sync.sources.get()
    failed = [
        delivery_make(event=event_make(source=source, user_id=f"u{n}"), sync=sync, status="failed")
        for n in range(3)
    ]
    expired = delivery_make(event=event_make(source=source), sync=sync, status="expired")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:streaming_delivery_changelist") + "?status__exact=failed",
            {
                "action": "replay_action",
                "select_across": "1",
                "index": "0",
                "_selected_action": [failed[0].pk],
            },
        )
    assert Delivery.objects.filter(pk__in=[d.pk for d in failed], status="pending").count() == 3
    expired.refresh_from_db()
    assert expired.status == "expired"


def test_a_replayed_identify_reaches_intercom_before_the_track_that_followed_it(
    admin_client, intercom_sandbox, django_capture_on_commit_callbacks
):
    from streaming.delivery.lanes import lane_drain
    from tests.streaming.delivery_setup import identify, ingest, statuses, sync_into, track

    # given: Intercom refused the identify once (400), and a track for the same user came after
    sync = sync_into(intercom_sandbox)
    intercom_sandbox.configure(
        force_status=400, force_count=1, force_path="/contacts", force_method="POST"
    )
    (first,) = ingest(sync, [identify("u1", name="Ada")])
    lane_drain(lane_id=first.lane_id)
    assert statuses([first]) == ["failed"]
    (second,) = ingest(sync, [track("u1", "Paid")])
    before = len(intercom_sandbox.requests)

    # when: the operator replays the identify, and a worker takes the wake-up
    wakeups_clear()
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:streaming_delivery_changelist"),
            {"action": "replay_action", "_selected_action": [first.pk]},
        )
    for lane_id in wakeups_read():
        lane_drain(lane_id=lane_id)

    # then: the identify went first, then the track, and both succeeded
    assert statuses([first, second]) == ["succeeded", "succeeded"]
    after = intercom_sandbox.requests[before:]
    sent = [(r["method"], r["path"]) for r in after]
    creates = [r for r in after if (r["method"], r["path"]) == ("POST", "/contacts")]
    # the identify's own request (with the name), not a minimal contact made for the track
    assert creates[0]["body"].get("name") == "Ada"
    assert sent.index(("POST", "/contacts")) < sent.index(("POST", "/events"))
    assert first.attempt_log.filter(status_code=400).count() == 1  # the first failure is kept
