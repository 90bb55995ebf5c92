"""Retry only what can succeed (invariant 5): backoff, storms, 429, expiry, the 401 hold."""

from __future__ import annotations

import socket
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from integrations.models import Destination
from streaming.delivery.states import retry_delay
from streaming.delivery.sweep import lanes_sweep
from streaming.models import Delivery, DeliveryAttempt, Event, Lane
from streaming.signals import delivery_failed
from tests.streaming.delivery_setup import drain_all, identify, ingest, statuses, sync_into, track

pytestmark = pytest.mark.django_db


def drain_until(sync, done, *, timeout: float = 15.0, every: float = 0.05) -> None:
    """Play the workers and the sweeper: drain the sync's due lanes until ``done()``."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "deliveries did not settle"
        drain_all(sync)
        time.sleep(every)


def all_settled(sync) -> bool:
    return not Delivery.objects.filter(sync=sync, status=Delivery.Status.PENDING).exists()


def test_the_backoff_starts_near_10_seconds_doubles_and_caps_at_5_minutes(settings):
    settings.SWITCHBOARD_RETRY_BASE_SECONDS = 10
    settings.SWITCHBOARD_RETRY_MAX_SECONDS = 300
    for attempts, nominal in [(1, 10), (2, 20), (3, 40), (6, 300), (20, 300)]:
        delays = [retry_delay(attempts=attempts).total_seconds() for _ in range(50)]
        assert all(0.8 * nominal <= d <= min(1.2 * nominal, 300) for d in delays)
        assert len(set(delays)) > 1  # jitter


def test_a_5xx_is_retried_later_and_blocks_only_its_own_lane(intercom_sandbox):
    # given two users; Intercom answers the first request of the first one with a 503
    sync = sync_into(intercom_sandbox)
    a_identify, a_track = ingest(sync, [identify("a"), track("a", "Clicked")])
    b_identify, b_track = ingest(sync, [identify("b"), track("b", "Clicked")])
    intercom_sandbox.configure(force_status=503, force_count=1)
    # when
    before = timezone.now()
    drain_all(sync)
    # then a's head waits about 10 s with one counted try, its track waits behind it; b is done
    a_identify.refresh_from_db()
    assert a_identify.status == "pending" and a_identify.attempts == 1
    assert "HTTP 503" in a_identify.reason
    assert (
        before + timedelta(seconds=7)
        <= a_identify.next_attempt_at
        <= before + timedelta(seconds=13)
    )
    assert Lane.objects.get(pk=a_identify.lane_id).next_attempt_at == a_identify.next_attempt_at
    assert statuses([a_track, b_identify, b_track]) == ["pending", "succeeded", "succeeded"]
    assert DeliveryAttempt.objects.get(status_code=503).category == "retryable"
    # and nothing is tried before it is due
    count = len(intercom_sandbox.requests)
    drain_all(sync)
    assert len(intercom_sandbox.requests) == count
    # when the time has come
    Delivery.objects.filter(pk=a_identify.pk).update(next_attempt_at=timezone.now())
    drain_all(sync)
    # then a's calls go out, identify first
    assert statuses([a_identify, a_track]) == ["succeeded", "succeeded"]
    a_paths = [r["path"] for r in intercom_sandbox.requests[count:]]
    assert a_paths.index("/events") > a_paths.index("/contacts")


def test_a_5xx_storm_backs_off_then_everything_is_delivered_and_logged(intercom_sandbox, settings):
    settings.SWITCHBOARD_RETRY_BASE_SECONDS = 0.2
    settings.SWITCHBOARD_RETRY_MAX_SECONDS = 1.0
    intercom_sandbox.conformance_off("the storm answers 5xx to valid requests")
    sync = sync_into(intercom_sandbox)
    users = [f"storm-{i}" for i in range(4)]
    deliveries = ingest(sync, [c for u in users for c in (identify(u), track(u, "Stormy"))])
    # given Intercom fails every request for two seconds
    intercom_sandbox.configure(error_rate=1.0)
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        drain_all(sync)
        time.sleep(0.02)
    # then each lane was tried only a few times (0.2 s, 0.4 s, 0.8 s, 1 s...), not in a loop
    storm = len(intercom_sandbox.requests)
    assert len(users) <= storm <= len(users) * 6
    heads = Delivery.objects.filter(pk__in=[d.pk for d in deliveries[::2]])
    assert all(2 <= head.attempts <= 6 for head in heads)
    assert statuses(deliveries[1::2]) == ["pending"] * len(users)  # never tried: behind the head
    # when Intercom recovers
    intercom_sandbox.configure(error_rate=0.0)
    drain_until(sync, lambda: all_settled(sync))
    # then everything was delivered, and every exchange of the storm is in the attempt log
    assert statuses(deliveries) == ["succeeded"] * len(deliveries)
    assert DeliveryAttempt.objects.count() == len(intercom_sandbox.requests)
    failed = DeliveryAttempt.objects.filter(status_code__gte=500)
    assert failed.count() == storm
    assert set(failed.values_list("category", flat=True)) == {"retryable"}


def test_a_429_waits_for_the_reset_and_is_not_a_failed_try(intercom_sandbox):
    # given a workspace that refuses the next call with 429
    intercom_sandbox.configure(rate_limit=1000, force_status=429, force_count=1)
    sync = sync_into(intercom_sandbox)
    first, *others = ingest(sync, [identify(f"busy-{i}") for i in range(3)])
    # when
    drain_all(sync)
    # then the refused delivery waits for the window's reset, without a counted try
    refused = intercom_sandbox.requests[0]
    assert refused["status"] == 429
    reset = (int(refused["time"] // 10) + 1) * 10
    first.refresh_from_db()
    assert first.status == "pending" and first.attempts == 0
    # (never sooner than a second after the 429, should the reset be closer than that)
    assert reset <= first.next_attempt_at.timestamp() <= max(reset, refused["time"] + 1.5)
    # and the other lanes of the destination held their calls until the reset too
    later = intercom_sandbox.requests[1:]
    assert later and all(r["time"] >= reset for r in later)
    assert statuses(others) == ["succeeded", "succeeded"]
    # when the lanes are drained again, the refused one goes out once more and succeeds
    drain_until(sync, lambda: all_settled(sync), timeout=15, every=0.25)
    first.refresh_from_db()
    # (one counted try: the one that succeeded; the 429 did not count)
    assert first.status == "succeeded" and first.attempts == 1
    assert DeliveryAttempt.objects.filter(category="rate_limited").count() == 1
    assert DeliveryAttempt.objects.count() == len(intercom_sandbox.requests)


def test_a_delivery_expires_when_its_retry_window_is_used_up(intercom_sandbox):
    expired: list[Delivery] = []

    def on_failure(sender, delivery, **kwargs):
        expired.append(delivery)

    delivery_failed.connect(on_failure)
    try:
        # given a sync with a one-minute retry window and a delivery accepted two minutes ago
        sync = sync_into(intercom_sandbox, retry_window=timedelta(minutes=1))
        (delivery,) = ingest(sync, [identify("late")])
        Delivery.objects.filter(pk=delivery.pk).update(
            created_at=timezone.now() - timedelta(minutes=2)
        )
        intercom_sandbox.configure(force_status=503, force_count=1)
        # when its try fails with a retryable error
        drain_all(sync)
    finally:
        delivery_failed.disconnect(on_failure)
    # then it expires with the last error, and is not tried again
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.EXPIRED
    assert "Retry window" in delivery.reason and "HTTP 503" in delivery.reason
    assert delivery.attempts == 1
    assert [d.pk for d in expired] == [delivery.pk]
    drain_all(sync)
    assert len(intercom_sandbox.requests) == 1


def test_a_replayed_old_delivery_gets_a_new_retry_window(intercom_sandbox):
    from streaming.delivery.replay import deliveries_replay

    # given a sync with a one-hour retry window and a delivery accepted two days ago, expired
    sync = sync_into(intercom_sandbox, retry_window=timedelta(hours=1))
    (delivery,) = ingest(sync, [identify("old")])
    Delivery.objects.filter(pk=delivery.pk).update(
        created_at=timezone.now() - timedelta(days=2),
        status=Delivery.Status.EXPIRED,
        attempts=5,
        reason="Retry window used up",
        completed_at=timezone.now() - timedelta(days=1),
    )
    # when the operator replays it and its first try fails with a retryable error
    deliveries_replay(deliveries=Delivery.objects.filter(pk=delivery.pk))
    intercom_sandbox.configure(force_status=503, force_count=1)
    drain_all(sync)
    # then it waits for a retry within the new window instead of expiring
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.PENDING
    assert delivery.attempts == 1
    assert delivery.next_attempt_at > timezone.now()
    assert "HTTP 503" in delivery.reason
    # and once due again it is delivered
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    Lane.objects.filter(pk=delivery.lane_id).update(next_attempt_at=timezone.now())
    drain_all(sync)
    assert statuses([delivery]) == ["succeeded"]


def test_a_401_holds_the_destination_until_its_token_changes(intercom_sandbox):
    # given a destination whose token Intercom refuses
    sync = sync_into(intercom_sandbox)
    Destination.objects.filter(pk=sync.destination_id).update(auth_failed_at=None)
    destination = Destination.objects.get(pk=sync.destination_id)
    destination.access_token = "revoked-token"
    destination.save()
    deliveries = ingest(sync, [identify("held"), track("held", "Waited")])
    # when
    drain_all(sync)
    # then the destination is marked, the delivery keeps its tries and waits
    destination.refresh_from_db()
    assert destination.auth_failed_at is not None
    assert "401" in destination.last_error
    first = Delivery.objects.get(pk=deliveries[0].pk)
    assert first.status == "pending" and first.attempts == 0
    assert DeliveryAttempt.objects.get().status_code == 401
    # and nothing is tried while held, by the workers or the sweeper
    Delivery.objects.update(created_at=timezone.now() - timedelta(minutes=1))
    drain_all(sync)
    assert lanes_sweep() == []
    assert len(intercom_sandbox.requests) == 1
    # when the operator saves the right token
    destination.access_token = intercom_sandbox.token
    destination.save()
    # then the hold is lifted and everything goes out
    destination.refresh_from_db()
    assert destination.auth_failed_at is None
    drain_all(sync)
    assert statuses(deliveries) == ["succeeded", "succeeded"]


def test_a_call_the_mapping_cannot_handle_is_retried_then_expires_without_wedging_its_lane(
    intercom_sandbox,
):
    # given a stored call that is not an object (a corrupted row the mapping cannot read)
    sync = sync_into(intercom_sandbox, retry_window=timedelta(minutes=1))
    broken, after = ingest(sync, [identify("odd"), track("odd", "Later")])
    Event.objects.filter(pk=broken.event_id).update(payload=["not", "a", "call"])
    # when its lane is drained
    drain_all(sync)
    # then it counts a try with the error, and the lane is free again (not held by a lease)
    broken.refresh_from_db()
    assert broken.status == "pending" and broken.attempts == 1
    assert broken.reason.startswith("Internal error")
    assert Lane.objects.get(pk=broken.lane_id).leased_until is None
    # and once its retry window is used up it expires, letting the next call through
    Delivery.objects.filter(pk=broken.pk).update(
        created_at=timezone.now() - timedelta(minutes=2), next_attempt_at=timezone.now()
    )
    drain_all(sync)
    assert statuses([broken, after]) == ["expired", "succeeded"]


def test_a_network_error_is_logged_and_retried(intercom_sandbox):
    # given a destination whose address answers nothing (a closed loopback port)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    sync = sync_into(intercom_sandbox)
    Destination.objects.filter(pk=sync.destination_id).update(
        base_url=f"http://127.0.0.1:{closed_port}"
    )
    (delivery,) = ingest(sync, [identify("unreachable")])
    # when
    drain_all(sync)
    # then the exchange is in the log as a network error, and the delivery will be tried again
    attempt = DeliveryAttempt.objects.get(delivery=delivery)
    assert attempt.category == DeliveryAttempt.Category.NETWORK
    assert attempt.status_code is None
    assert "ConnectionError" in attempt.error_code
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.attempts == 1
    assert delivery.next_attempt_at > timezone.now()
