"""Lanes: the lease that keeps one worker per user, the sweeper that re-wakes, retention."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from integrations.models import Destination, Sync
from streaming.delivery.lanes import LaneLease, lane_drain
from streaming.delivery.sweep import lanes_sweep, retention_purge
from streaming.models import Delivery, DeliveryAttempt, Event, Lane
from tests.streaming.delivery_setup import drain_all, identify, ingest, statuses, sync_into, track

pytestmark = pytest.mark.django_db


def test_only_one_worker_holds_a_lane_at_a_time(intercom_sandbox):
    sync = sync_into(intercom_sandbox)
    (delivery,) = ingest(sync, [identify("leased")])
    # given a worker holds the lane
    lease = LaneLease.claim(lane_id=delivery.lane_id)
    assert lease is not None
    # then another cannot claim it, and draining it elsewhere sends nothing
    assert LaneLease.claim(lane_id=delivery.lane_id) is None
    lane_drain(lane_id=delivery.lane_id)
    assert intercom_sandbox.requests == []
    assert statuses([delivery]) == ["pending"]
    # when the holder releases it, the lane can be drained
    lease.release()
    lane_drain(lane_id=delivery.lane_id)
    assert statuses([delivery]) == ["succeeded"]
    assert Lane.objects.get(pk=delivery.lane_id).leased_until is None


def test_a_dead_workers_lease_lapses_and_its_lane_is_taken_over(intercom_sandbox):
    sync = sync_into(intercom_sandbox)
    (delivery,) = ingest(sync, [identify("orphan")])
    # given a worker claimed the lane and died (it never renews)
    dead = LaneLease.claim(lane_id=delivery.lane_id)
    Lane.objects.filter(pk=delivery.lane_id).update(
        leased_until=timezone.now() - timedelta(seconds=1)
    )
    # when another worker drains it
    lane_drain(lane_id=delivery.lane_id)
    # then the delivery goes out, and the dead worker can no longer renew or release it
    assert statuses([delivery]) == ["succeeded"]
    assert dead.renew() is False


def test_deliveries_queued_while_a_lane_is_drained_are_not_left_behind(intercom_sandbox):
    sync = sync_into(intercom_sandbox)
    first, second = ingest(sync, [identify("busy"), track("busy", "One")])
    queued_meanwhile: list[Delivery] = []

    from streaming.signals import delivery_succeeded

    def ingest_during_drain(sender, delivery, **kwargs):
        # a call accepted while the lane is held: its wake-up finds the lane taken
        if delivery.pk == second.pk and not queued_meanwhile:
            queued_meanwhile.extend(ingest(sync, [track("busy", "Two")]))
            lane_drain(lane_id=delivery.lane_id)

    delivery_succeeded.connect(ingest_during_drain)
    try:
        lane_drain(lane_id=first.lane_id)
    finally:
        delivery_succeeded.disconnect(ingest_during_drain)
    assert statuses([first, second, *queued_meanwhile]) == ["succeeded"] * 3
    events = [r["body"]["event_name"] for r in intercom_sandbox.requests if r["path"] == "/events"]
    assert events == ["One", "Two"]


def test_the_sweeper_wakes_due_lanes_nobody_holds(intercom_sandbox, settings, monkeypatch):
    woken_calls: list[list[int]] = []
    monkeypatch.setattr(
        "streaming.delivery.sweep.lanes_wake",
        lambda ids: woken_calls.append(sorted(ids)) or sorted(ids),
    )
    settings.SWITCHBOARD_SWEEP_SECONDS = 5
    long_ago = timezone.now() - timedelta(minutes=1)
    sync = sync_into(intercom_sandbox)
    lost, retrying, fresh, leased = (
        ingest(sync, [identify(user)])[0] for user in ("lost", "retrying", "fresh", "leased")
    )
    # a wake-up lost with the broker: pending for a minute, never looked at
    Delivery.objects.filter(pk__in=[lost.pk, retrying.pk, leased.pk]).update(created_at=long_ago)
    Lane.objects.filter(pk=lost.lane_id).update(next_attempt_at=None)
    # a retry due a minute ago
    Lane.objects.filter(pk=retrying.lane_id).update(next_attempt_at=long_ago)
    # just ingested: its own wake-up is on its way
    Lane.objects.filter(pk=fresh.lane_id).update(next_attempt_at=timezone.now())
    # held by a live worker
    Lane.objects.filter(pk=leased.lane_id).update(next_attempt_at=long_ago)
    LaneLease.claim(lane_id=leased.lane_id)
    # a paused sync's lane and a held destination's lane are due but must stay asleep
    paused, held = sync_into(intercom_sandbox), sync_into(intercom_sandbox)
    for other in (paused, held):
        (d,) = ingest(other, [identify("asleep")])
        Delivery.objects.filter(pk=d.pk).update(created_at=long_ago)
        Lane.objects.filter(pk=d.lane_id).update(next_attempt_at=long_ago)
    Sync.objects.filter(pk=paused.pk).update(status=Sync.Status.PAUSED)
    Destination.objects.filter(pk=held.destination_id).update(auth_failed_at=timezone.now())

    cache.delete("sb:sweep:orphans")  # the once-a-minute search for lost wake-ups is due
    woken = lanes_sweep()

    assert sorted(woken) == sorted([lost.lane_id, retrying.lane_id])
    # a woken lane is not woken again at the next pass (its wake-up is queued)
    assert lanes_sweep() == []
    assert Lane.objects.get(pk=lost.lane_id).next_attempt_at > timezone.now()


def test_retention_purges_logs_and_payloads_by_age_only(intercom_sandbox, settings):
    settings.SWITCHBOARD_RETENTION = timedelta(days=30)
    sync = sync_into(intercom_sandbox)
    old_done, new_done = ingest(sync, [identify("old"), identify("new")])
    drain_all(sync)
    (old_pending,) = ingest(sync, [track("stuck", "Waiting")])
    long_ago = timezone.now() - timedelta(days=31)
    Event.objects.filter(pk__in=[old_done.event_id, old_pending.event_id]).update(
        received_at=long_ago
    )
    DeliveryAttempt.objects.filter(delivery=old_done).update(started_at=long_ago)
    kept_attempts = DeliveryAttempt.objects.filter(delivery=new_done).count()
    assert kept_attempts > 0

    attempts_deleted, payloads_blanked = retention_purge()

    # old logs and payloads go although the delivery succeeded; recent ones stay
    assert attempts_deleted > 0
    assert not DeliveryAttempt.objects.filter(delivery=old_done).exists()
    assert DeliveryAttempt.objects.filter(delivery=new_done).count() == kept_attempts
    assert Event.objects.get(pk=old_done.event_id).payload == {}
    assert Event.objects.get(pk=new_done.event_id).payload["userId"] == "new"
    # a payload still waiting to be delivered is what will be sent: it stays
    assert Event.objects.get(pk=old_pending.event_id).payload["event"] == "Waiting"
    assert payloads_blanked == 1
    # the delivery rows themselves remain (the trail of what happened)
    assert Delivery.objects.filter(pk=old_done.pk, status="succeeded").exists()


def test_a_lane_is_only_claimed_when_its_head_is_due(intercom_sandbox):
    sync = sync_into(intercom_sandbox)
    head, later = ingest(sync, [identify("waiting"), track("waiting", "Later")])
    # given the head waits for a retry a minute from now
    Delivery.objects.filter(pk=head.pk).update(
        next_attempt_at=timezone.now() + timedelta(minutes=1)
    )
    # then a wake-up neither claims the lane nor sends the delivery behind the head
    assert LaneLease.claim(lane_id=head.lane_id) is None
    lane_drain(lane_id=head.lane_id)
    assert intercom_sandbox.requests == []
    # when an older delivery is replayed in front of it (due now), the lane is due again
    Delivery.objects.filter(pk=head.pk).update(next_attempt_at=None)
    Delivery.objects.filter(pk=later.pk).update(
        next_attempt_at=timezone.now() + timedelta(minutes=1)
    )
    lane_drain(lane_id=head.lane_id)
    assert statuses([head, later]) == ["succeeded", "pending"]
    lane = Lane.objects.get(pk=head.lane_id)
    # and the lane records when its new head is due, for the sweeper
    assert lane.next_attempt_at == Delivery.objects.get(pk=later.pk).next_attempt_at
    assert lane.leased_until is None


def test_an_emptied_lane_has_no_due_time(intercom_sandbox):
    sync = sync_into(intercom_sandbox)
    (delivery,) = ingest(sync, [identify("done")])
    lane_drain(lane_id=delivery.lane_id)
    lane = Lane.objects.get(pk=delivery.lane_id)
    assert statuses([delivery]) == ["succeeded"]
    assert lane.next_attempt_at is None and lane.leased_until is None
    # a late wake-up for it finds nothing to claim
    assert LaneLease.claim(lane_id=delivery.lane_id) is None
