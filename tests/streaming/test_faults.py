"""Fault drills: worker kill -9 mid-stream and a broker outage during ingest (invariants 1-2).

The broker is a redis-server of our own on a free port, so that stopping it disturbs nobody else.
It keeps nothing on disk: its restart loses every queued wake-up, which the sweeper must make up.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

import pytest

from faults import PrivateRedis
from streaming.models import Delivery, Event
from tests.streaming.delivery_setup import identify, ingest, sync_into, track

BROKER_OUTAGE_SECONDS = 30

pytestmark = [
    pytest.mark.worker,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


@pytest.fixture
def spare_redis(tmp_path: Path):
    """A redis-server of our own, to stop (kill -9) and start again on the same port."""
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


def counts(sync) -> Counter[str]:
    return Counter(Delivery.objects.filter(sync=sync).values_list("status", flat=True))


def test_nothing_accepted_is_lost_to_a_killed_worker_or_a_broker_outage(
    celery_worker_process, intercom_sandbox, spare_redis, caplog
):
    # given two workers (the first with the beat sweeper) on a broker we can stop
    workers = celery_worker_process
    workers.use_broker(spare_redis.url)
    fast = {
        "SWITCHBOARD_SWEEP_SECONDS": 1,
        "SWITCHBOARD_LEASE_SECONDS": 4,
        "SWITCHBOARD_RETRY_BASE_SECONDS": 0.5,
    }
    intercom_sandbox.configure(latency_ms=40)
    sync = sync_into(intercom_sandbox)
    workers.start(2, beat=True, **fast)
    users = [f"drill-{i}" for i in range(30)]

    # when a first stream is being delivered and one worker is killed -9 in the middle of it
    first = ingest(sync, [c for u in users for c in (identify(u), track(u, "Before"))])
    deadline = time.monotonic() + 30
    while counts(sync)["succeeded"] < 10:
        assert time.monotonic() < deadline, workers.logs()
        time.sleep(0.05)
    assert counts(sync)["pending"] > 0  # mid-stream
    workers.kill(1)
    # and the broker goes away for 30 s (losing every queued wake-up) while ingest goes on
    spare_redis.kill()
    started = time.monotonic()
    second: list = []
    rounds = 0
    while time.monotonic() - started < BROKER_OUTAGE_SECONDS:
        begun = time.monotonic()
        accepted = ingest(sync, [track(u, f"During {rounds}") for u in users])
        # accepted and durable although no wake-up went out, and not held up by the dead broker
        assert len(accepted) == len(users)
        assert time.monotonic() - begun < 5
        second += accepted
        rounds += 1
        time.sleep(1)
    assert "broker unavailable" in caplog.text
    spare_redis.start()
    workers.start(1, **fast)

    # then every accepted event is delivered once the broker is back
    deadline = time.monotonic() + 60
    while counts(sync)["pending"]:
        assert time.monotonic() < deadline, f"{counts(sync)}\n{workers.logs()}"
        time.sleep(0.25)
    assert counts(sync) == Counter({"succeeded": len(first) + len(second)})
    events = Counter(
        (request["body"].get("user_id"), request["body"]["event_name"])
        for request in intercom_sandbox.requests
        if request["path"] == "/events" and request["status"] == 202
    )
    for user in users:
        for name in ("Before", *(f"During {k}" for k in range(rounds))):
            assert events[(user, name)] >= 1, (user, name)
    # duplicates are at most what the killed worker had in flight (one delivery)
    duplicates = sum(n - 1 for n in events.values())
    contacts = Counter(c["external_id"] for c in intercom_sandbox.state()["contacts"])
    assert duplicates <= 1, events
    assert set(contacts.values()) == {1}
    assert Event.objects.filter(source__syncs=sync).count() == len(first) + len(second)
    # the surviving worker rode out the outage
    assert 0 in workers.alive()
