"""Lane wake-ups: a few messages, each naming a chunk of lanes, that real workers drain.

A wake-up is only a hint (the database is the queue of record), so these tests check what a
user would notice: how many messages a batch costs the broker, that every lane of an ingest is
named in exactly one of them, and that real worker processes drain every lane they name.
"""

from __future__ import annotations

import logging
import math
import threading

import pytest

from streaming.delivery import lanes, tasks, wakeups
from streaming.delivery.tasks import lanes_drain
from streaming.delivery.wakeups import LANES_PER_WAKEUP, lanes_wake
from streaming.models import Delivery
from tests.streaming.audit_rows import wakeup_messages, wakeups_clear
from tests.streaming.delivery_setup import identify, ingest, sync_into, track, wait_settled


@pytest.fixture(autouse=True)
def _empty_queue():
    wakeups_clear()
    yield
    wakeups_clear()


@pytest.mark.django_db
@pytest.mark.parametrize("users", [1, LANES_PER_WAKEUP, LANES_PER_WAKEUP + 1, 45])
def test_a_batch_of_n_users_publishes_one_message_per_chunk_of_lanes(
    intercom_sandbox, django_capture_on_commit_callbacks, users
):
    # given a sync and a batch with one track for each of ``users`` users, one of them twice
    sync = sync_into(intercom_sandbox)
    calls = [track(f"user-{i}", "Seen") for i in range(users)] + [track("user-0", "Again")]
    # when it is ingested
    with django_capture_on_commit_callbacks(execute=True):
        deliveries = ingest(sync, calls)
    assert wakeups.wakeup_publisher.flush()
    # then the broker holds ceil(users / chunk) messages, none over the chunk size...
    messages = wakeup_messages()
    assert len(messages) == math.ceil(users / LANES_PER_WAKEUP)
    assert all(0 < len(message) <= LANES_PER_WAKEUP for message in messages)
    # ...and together they name every lane of the batch exactly once
    named = [lane_id for message in messages for lane_id in message]
    assert sorted(named) == sorted({d.lane_id for d in deliveries})
    assert len(named) == users


@pytest.mark.django_db
def test_lanes_wake_answers_the_lanes_it_published_once_each():
    woken = lanes_wake([5, 3, 5, 1, *range(100, 125)])

    assert woken == [1, 3, 5, *range(100, 125)]
    assert sorted(lane for message in wakeup_messages() for lane in message) == woken
    assert lanes_wake([]) == []


@pytest.mark.django_db
def test_a_lane_that_fails_does_not_hold_back_the_others_of_its_message(
    intercom_sandbox, monkeypatch, caplog
):
    # given three users' lanes named by one message, the middle one failing to drain
    sync = sync_into(intercom_sandbox)
    first, broken, last = ingest(sync, [identify("first"), identify("broken"), identify("last")])
    real_send = lanes.DeliverySender.send

    def send(self, delivery, **kwargs):
        if delivery.lane_id == broken.lane_id:
            raise RuntimeError("database went away")
        return real_send(self, delivery, **kwargs)

    monkeypatch.setattr(lanes.DeliverySender, "send", send)
    # when a worker runs the message
    with caplog.at_level(logging.ERROR, logger=lanes.__name__):
        lanes_drain([first.lane_id, broken.lane_id, last.lane_id])
    # then the lanes around the failure are delivered, the failed one stays pending (the
    # sweeper wakes it again) and the failure is logged with its lane
    statuses = {d.user_key: d.status for d in Delivery.objects.filter(sync=sync)}
    assert statuses == {"first": "succeeded", "broken": "pending", "last": "succeeded"}
    assert f"lane {broken.lane_id} not drained" in caplog.text


@pytest.mark.worker
def test_real_workers_drain_every_lane_of_a_big_batch_and_old_messages_too(
    celery_worker_process, intercom_sandbox
):
    # given two worker processes, no sweeper, and a sync into the sandbox
    sync = sync_into(intercom_sandbox)
    celery_worker_process.start(2)
    users = [f"user-{i}" for i in range(3 * LANES_PER_WAKEUP + 4)]
    # when a batch with every user's identify then track is accepted (its wake-ups are chunked)
    deliveries = ingest(sync, [identify(u) for u in users] + [track(u, "Signed Up") for u in users])
    # and a lane is woken by the message of an older version (one lane, task lane_drain)
    (old,) = ingest(sync, [identify("woken-the-old-way")])
    tasks.lane_drain.apply_async((old.lane_id,), queue=celery_worker_process.queue)
    # then every delivery reaches Intercom, in each user's order, with no sweeper to help
    wait_settled(sync, celery_worker_process)
    assert {d.status for d in Delivery.objects.filter(sync=sync)} == {"succeeded"}
    assert len(deliveries) == 2 * len(users)
    contacts = {c["external_id"] for c in intercom_sandbox.state()["contacts"]}
    assert contacts == {*users, "woken-the-old-way"}
    logs = celery_worker_process.logs()
    assert "switchboard.lanes_drain" in logs
    assert "switchboard.lane_drain" in logs


@pytest.mark.django_db(transaction=True)
def test_with_the_broker_down_lanes_wake_publishes_nothing_and_does_not_raise(
    celery_worker_process, caplog
):
    # given a broker nobody listens on
    celery_worker_process.use_broker("redis://127.0.0.1:9/0")
    # when lanes are woken
    with caplog.at_level(logging.WARNING, logger=wakeups.__name__):
        woken = lanes_wake(range(1, 26))
    # then nothing is claimed as published, and the sweeper is told to take over
    assert woken == []
    assert "broker unavailable, 25 lane wake-ups left to the sweeper" in caplog.text


@pytest.mark.django_db
def test_wake_ups_handed_over_meanwhile_go_out_together(monkeypatch):
    # given a broker that takes a while to answer the first publish
    published: list[list[int]] = []
    first_started, release_first = threading.Event(), threading.Event()
    real_wake = wakeups.lanes_wake

    def slow_wake(lane_ids):
        published.append(sorted(lane_ids))
        if len(published) == 1:
            first_started.set()
            release_first.wait(5)
        return real_wake(lane_ids)

    monkeypatch.setattr(wakeups, "lanes_wake", slow_wake)
    publisher = wakeups.WakeupPublisher()
    # when one ingest hands its lane over, and three more do while it is being published
    publisher.submit([1])
    assert first_started.wait(5)
    for handed in ([2], [3, 4], [2, 5]):
        publisher.submit(handed)
    release_first.set()
    # then the three go out as one publish, each lane once, and all reach the broker
    assert publisher.flush()
    assert published == [[1], [2, 3, 4, 5]]
    assert sorted(lane for message in wakeup_messages() for lane in message) == [1, 2, 3, 4, 5]


@pytest.mark.django_db
def test_a_publish_that_fails_leaves_the_publisher_working(monkeypatch, caplog):
    calls: list[list[int]] = []

    def wake(lane_ids):
        calls.append(sorted(lane_ids))
        if len(calls) == 1:
            raise RuntimeError("serializer broke")
        return sorted(lane_ids)

    monkeypatch.setattr(wakeups, "lanes_wake", wake)
    publisher = wakeups.WakeupPublisher()

    with caplog.at_level(logging.ERROR, logger=wakeups.__name__):
        publisher.submit([7])
        assert publisher.flush()
    publisher.submit([8])

    assert publisher.flush()
    assert calls == [[7], [8]]
    assert "1 lane wake-ups left to the sweeper" in caplog.text
