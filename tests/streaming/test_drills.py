"""The short fault drills as CI tests (bench/drills.py runs the long versions over HTTP; both
judge with faults.py).

Real Celery workers drain into the sandbox while something breaks: a worker is killed -9, the
broker is shut down without saving, Intercom answers 503 for a while, a sync's retry window runs
out. Each drill judges what the sandbox received against what ingest accepted, with the same
verdict as the benchmark drills: nothing accepted is lost (delivered, or visibly expired),
duplicates stay within what was in flight, and each user's calls arrive in ingest order.
"""

from __future__ import annotations

import shutil
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from faults import PrivateRedis, Sent, call_identify, call_track, sandbox_verdict
from streaming.models import Delivery, DeliveryAttempt, Event
from tests.streaming.delivery_setup import ingest, sync_into

pytestmark = [
    pytest.mark.worker,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

# Drill speed: sweep every second, leases lapse after 4 s, retries from 0.5 s up to 2 s.
FAST = {
    "SWITCHBOARD_SWEEP_SECONDS": 1,
    "SWITCHBOARD_LEASE_SECONDS": 4,
    "SWITCHBOARD_RETRY_BASE_SECONDS": 0.5,
    "SWITCHBOARD_RETRY_MAX_SECONDS": 2,
}


class Stream:
    """Calls of a few users (identify, then tracks), ingested round by round; what was accepted."""

    def __init__(self, sync: Any, users: int) -> None:
        self.sync = sync
        tag = uuid.uuid4().hex[:6]
        self.users = [f"{tag}-u{i}" for i in range(users)]
        self.accepted: dict[str, Sent] = {}
        self.round = 0
        self.base = int(time.time()) - 3600

    def next_round(self) -> None:
        calls = []
        for user in self.users:
            mid = f"{user}-{self.round}"
            if self.round == 0:
                calls.append(call_identify(user, mid))
            else:
                calls.append(call_track(user, mid, self.round, created_at=self.base + self.round))
        for delivery in ingest(self.sync, calls):
            event = Event.objects.get(pk=delivery.event_id)
            self.accepted[event.message_id] = Sent(
                event.user_id, "identify" if event.type == "identify" else "track", event.pk
            )
        self.round += 1

    def verdict(self, sandbox: Any) -> dict[str, Any]:
        outcome = sandbox_verdict(self.accepted, sandbox.requests)
        ended = Delivery.objects.filter(
            sync=self.sync, status__in=[Delivery.Status.EXPIRED, Delivery.Status.FAILED]
        ).count()
        outcome["lost"] = outcome["not_delivered"] - ended
        outcome["in_flight"] = DeliveryAttempt.objects.filter(
            delivery__sync=self.sync, category=DeliveryAttempt.Category.IN_FLIGHT
        ).count()
        return outcome


def settle(sync: Any, workers: Any, *, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while Delivery.objects.filter(sync=sync, status=Delivery.Status.PENDING).exists():
        assert time.monotonic() < deadline, workers.logs()
        time.sleep(0.25)


def wait_succeeded(sync: Any, count: int, workers: Any, *, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while Delivery.objects.filter(sync=sync, status=Delivery.Status.SUCCEEDED).count() < count:
        assert time.monotonic() < deadline, workers.logs()
        time.sleep(0.05)


def test_a_worker_killed_mid_stream_loses_nothing_and_keeps_order(
    celery_worker_process, intercom_sandbox
):
    # given two workers draining 20 users' identify + 4 tracks
    intercom_sandbox.configure(latency_ms=30)
    sync = sync_into(intercom_sandbox, send_all_properties=True)
    celery_worker_process.start(2, beat=True, **FAST)
    stream = Stream(sync, users=20)
    for _ in range(5):
        stream.next_round()
    # when one of them is killed -9 in the middle, and a new one starts
    wait_succeeded(sync, 20, celery_worker_process)
    assert Delivery.objects.filter(sync=sync, status=Delivery.Status.PENDING).exists()
    celery_worker_process.kill(1)
    celery_worker_process.start(1, **FAST)
    settle(sync, celery_worker_process)
    # then everything accepted arrived, in each user's order, duplicated at most in flight
    outcome = stream.verdict(intercom_sandbox)
    assert outcome["accepted"] == 100
    assert outcome["lost"] == 0, outcome
    assert outcome["delivered"] == 100, outcome
    assert outcome["order_violations"] == 0, outcome
    assert outcome["duplicates"] <= outcome["in_flight"], outcome


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_a_broker_shut_down_without_saving_loses_nothing(
    celery_worker_process, intercom_sandbox, tmp_path: Path
):
    # given workers on a broker of our own
    broker = PrivateRedis(tmp_path)
    broker.start()
    try:
        celery_worker_process.use_broker(broker.url)
        intercom_sandbox.configure(latency_ms=20)
        sync = sync_into(intercom_sandbox, send_all_properties=True)
        celery_worker_process.start(2, beat=True, **FAST)
        stream = Stream(sync, users=15)
        stream.next_round()
        stream.next_round()
        # when the broker shuts down (every queued wake-up lost) while calls are accepted
        redis.Redis.from_url(broker.url).shutdown(nosave=True)
        stream.next_round()
        stream.next_round()
        time.sleep(2)
        broker.start()
        stream.next_round()
        settle(sync, celery_worker_process)
        # then every accepted call is delivered once, in order
        outcome = stream.verdict(intercom_sandbox)
    finally:
        broker.shutdown_nosave()
    assert outcome["accepted"] == 75
    assert outcome["delivered"] == 75, outcome
    assert outcome["duplicates"] == 0, outcome
    assert outcome["order_violations"] == 0, outcome


def test_a_503_burst_is_retried_until_delivered_in_order(celery_worker_process, intercom_sandbox):
    # given a stream being delivered
    sync = sync_into(intercom_sandbox, send_all_properties=True)
    celery_worker_process.start(2, beat=True, **FAST)
    stream = Stream(sync, users=10)
    stream.next_round()
    # when Intercom answers 503 to everything for a few seconds while calls keep coming
    intercom_sandbox.configure(force_status=503, force_count=10**9)
    stream.next_round()
    stream.next_round()
    time.sleep(4)
    intercom_sandbox.configure(force_count=0)
    stream.next_round()
    settle(sync, celery_worker_process)
    # then everything arrives once, in order, and the 503s were counted as tries
    outcome = stream.verdict(intercom_sandbox)
    assert any(r["status"] == 503 for r in intercom_sandbox.requests)
    assert outcome["delivered"] == outcome["accepted"] == 40, outcome
    assert outcome["duplicates"] == 0, outcome
    assert outcome["order_violations"] == 0, outcome
    assert Delivery.objects.filter(sync=sync, attempts__gt=0).exists()


def test_a_used_up_retry_window_expires_deliveries_visibly_and_frees_the_lanes(
    celery_worker_process, intercom_sandbox
):
    # given a sync with a 3-second retry window, and Intercom down
    sync = sync_into(intercom_sandbox, send_all_properties=True, retry_window=timedelta(seconds=3))
    intercom_sandbox.configure(force_status=503, force_count=10**9)
    celery_worker_process.start(1, beat=True, **FAST)
    stream = Stream(sync, users=5)
    stream.next_round()
    stream.next_round()
    # when the window runs out
    settle(sync, celery_worker_process, timeout=45)
    # then nothing is pending or lost: every delivery is expired, saying why
    expired = Delivery.objects.filter(sync=sync)
    assert {d.status for d in expired} == {Delivery.Status.EXPIRED}
    assert all("Retry window" in d.reason for d in expired)
    assert stream.verdict(intercom_sandbox)["lost"] == 0
    # and once Intercom is back, the same users' new calls go through
    intercom_sandbox.configure(force_count=0)
    stream.next_round()
    settle(sync, celery_worker_process)
    assert Delivery.objects.filter(sync=sync, status=Delivery.Status.SUCCEEDED).count() == 5
