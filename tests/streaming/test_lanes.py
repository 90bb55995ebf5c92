"""Lanes: the lease that keeps one worker per user, the sweeper that re-wakes, retention."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from integrations.models import Destination, Sync
from streaming.delivery.lanes import LaneClaim, LaneLease, lane_drain, lanes_drain
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


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the one-statement release")
def test_a_lane_released_as_empty_that_holds_a_later_delivery_stays_due(intercom_sandbox):
    sync = sync_into(intercom_sandbox)
    (first,) = ingest(sync, [identify("late")])
    # given a worker claimed the lane, and a call was stored after the claim read its heads
    claim = LaneClaim.take(lane_ids=[first.lane_id])
    assert [d.pk for d in claim.heads[first.lane_id]] == [first.pk]
    (late,) = ingest(sync, [track("late", "After the claim")])
    # when the worker releases the lane as empty (and dies before it claims it again)
    claim.release({first.lane_id: ("empty", None)})
    # then the lane stays due, so the sweeper's next pass finds it, not only the orphan search
    lane = Lane.objects.get(pk=first.lane_id)
    assert lane.leased_until is None
    assert lane.next_attempt_at is not None and lane.next_attempt_at <= timezone.now()
    assert Delivery.objects.get(pk=late.pk).status == Delivery.Status.PENDING


def test_a_wake_up_of_single_delivery_lanes_costs_two_statements_a_lane_and_three_in_all(
    intercom_sandbox,
):
    if connection.vendor != "postgresql":
        pytest.skip("one claim for many lanes is PostgreSQL's (elsewhere a statement per lane)")
    # given ten users who exist in Intercom, and a track of each, one wake-up naming their lanes
    sync = sync_into(intercom_sandbox)
    users = [f"user-{i}" for i in range(10)]
    # (and the event name already known to the workspace, as it is after the first call)
    known = ingest(sync, [*(identify(user) for user in users), track("user-0", "Seen")])
    lanes_drain(lane_ids=[d.lane_id for d in known])
    tracks = ingest(sync, [track(user, "Seen") for user in users])
    # when a worker drains the wake-up
    with CaptureQueriesContext(connection) as queries:
        lanes_drain(lane_ids=sorted({d.lane_id for d in tracks}))
    # then every track went out, and the database saw, besides each delivery's attempt INSERT
    # and its state change: one claim of the ten lanes, one release, one claim that found them
    # empty (the destination's health columns are written a few times a minute at most)
    assert statuses(tracks) == ["succeeded"] * 10
    statements = [
        q["sql"]
        for q in queries.captured_queries
        if not q["sql"].startswith('UPDATE "integrations_destination"')
    ]
    attempts = [
        sql for sql in statements if sql.startswith('INSERT INTO "streaming_deliveryattempt"')
    ]
    state_changes = [sql for sql in statements if 'UPDATE "streaming_delivery" SET' in sql]
    lanes = [sql for sql in statements if sql not in attempts and sql not in state_changes]
    assert (len(attempts), len(state_changes)) == (10, 10)
    assert len(lanes) == 3, lanes
    assert len(statements) == 2 * 10 + 3


def test_a_wake_up_claims_only_its_lanes_that_are_free_and_due(intercom_sandbox):
    sync = sync_into(intercom_sandbox)
    due, held, waiting, paused_lane = (
        ingest(sync, [identify(user)])[0] for user in ("due", "held", "waiting", "paused")
    )
    # given a lane another worker holds, one whose head waits for a retry, and a paused sync's
    holder = LaneLease.claim(lane_id=held.lane_id)
    Delivery.objects.filter(pk=waiting.pk).update(
        next_attempt_at=timezone.now() + timedelta(minutes=1)
    )
    paused = sync_into(intercom_sandbox, status=Sync.Status.PAUSED)
    (paused_delivery,) = ingest(paused, [identify("paused")])
    # when one wake-up names all four
    lane_ids = [due.lane_id, held.lane_id, waiting.lane_id, paused_delivery.lane_id]
    lanes_drain(lane_ids=lane_ids)
    # then only the free, due lane was sent, and the holder still holds its lane
    assert statuses([due, held, waiting, paused_delivery]) == ["succeeded"] + ["pending"] * 3
    assert [
        r["body"]["external_id"] for r in intercom_sandbox.requests if r["method"] != "GET"
    ] == ["due"]
    assert holder.renew() is True
    assert Lane.objects.filter(pk__in=lane_ids, leased_until__isnull=False).count() == 1


def test_a_lane_taken_over_while_it_waited_for_its_turn_is_left_to_its_new_holder(
    intercom_sandbox, settings
):
    # given a wake-up of two lanes, and leases so short that each send renews first
    settings.SWITCHBOARD_LEASE_SECONDS = 0.03
    sync = sync_into(intercom_sandbox)
    first, second = (ingest(sync, [identify(user)])[0] for user in ("first", "second"))
    from streaming.signals import delivery_succeeded

    def take_over_the_second(sender, delivery, **kwargs):
        # while the first lane is sent, the second's lease lapses and another worker takes it
        if delivery.pk == first.pk:
            Lane.objects.filter(pk=second.lane_id).update(
                lease_token="another-worker", leased_until=timezone.now() + timedelta(minutes=1)
            )

    delivery_succeeded.connect(take_over_the_second)
    try:
        lanes_drain(lane_ids=[first.lane_id, second.lane_id])
    finally:
        delivery_succeeded.disconnect(take_over_the_second)
    # then the second lane is not sent by this worker, and its new holder keeps it
    assert statuses([first, second]) == ["succeeded", "pending"]
    assert Lane.objects.get(pk=second.lane_id).lease_token == "another-worker"


def test_lanes_the_broker_refused_to_wake_are_swept_again_at_the_next_pass(
    intercom_sandbox, settings, monkeypatch
):
    settings.SWITCHBOARD_SWEEP_SECONDS = 5
    sync = sync_into(intercom_sandbox)
    (retrying,) = ingest(sync, [identify("retrying")])
    Lane.objects.filter(pk=retrying.lane_id).update(
        next_attempt_at=timezone.now() - timedelta(minutes=1)
    )
    # given the broker refuses the sweeper's wake-ups
    monkeypatch.setattr("streaming.delivery.sweep.lanes_wake", lambda ids: [])
    assert lanes_sweep() == []
    # then the lane is still due, and the next pass (the broker back) wakes it
    assert Lane.objects.get(pk=retrying.lane_id).next_attempt_at <= timezone.now()
    woken: list[list[int]] = []
    monkeypatch.setattr(
        "streaming.delivery.sweep.lanes_wake", lambda ids: woken.append(list(ids)) or list(ids)
    )
    settings.SWITCHBOARD_SWEEP_SECONDS = 0
    assert lanes_sweep() == [retrying.lane_id]
    assert Lane.objects.get(pk=retrying.lane_id).next_attempt_at > timezone.now()
