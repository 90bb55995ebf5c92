"""Real Celery worker processes deliver in per-user order (invariant 3)."""

from __future__ import annotations

from collections import defaultdict

import pytest

from integrations.models import Sync
from streaming.models import Delivery, DeliveryAttempt
from tests.streaming.delivery_setup import identify, ingest, sync_into, track, wait_settled

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_four_workers_send_each_users_identify_before_their_tracks(
    celery_worker_process, intercom_sandbox
):
    # given four worker processes and a sync that skips events of contacts it cannot find
    # (so a track overtaking its identify would show as skipped)
    intercom_sandbox.configure(latency_ms=15)
    sync = sync_into(intercom_sandbox, missing_contact=Sync.MissingContact.SKIP)
    celery_worker_process.start(4)
    users = [f"user-{i}" for i in range(40)]
    # when each user's identify and two tracks arrive, interleaved across users, in 3 batches
    deliveries = []
    for step in range(3):
        calls = [
            identify(u, plan="pro") if step == 0 else track(u, f"Step {step}", n=step)
            for u in users
        ]
        deliveries += ingest(sync, calls)
    wait_settled(sync, celery_worker_process)
    # then everything succeeded...
    states = Delivery.objects.filter(pk__in=[d.pk for d in deliveries])
    assert {d.status for d in states} == {"succeeded"}, [
        (d.user_key, d.status, d.reason) for d in states if d.status != "succeeded"
    ]
    # ...and Intercom saw, for every user, the contact before its events, events in order
    per_user: dict[str, list[str]] = defaultdict(list)
    contact_ids = {c["id"]: c["external_id"] for c in intercom_sandbox.state()["contacts"]}
    for request in intercom_sandbox.requests:
        body = request["body"] or {}
        if request["method"] == "POST" and request["path"] == "/contacts":
            per_user[body["external_id"]].append("contact")
        elif request["path"] == "/events":
            user = body.get("user_id") or contact_ids.get(body.get("id"))
            per_user[user].append(body["event_name"])
    assert set(per_user) == set(users)
    for user in users:
        assert per_user[user] == ["contact", "Step 1", "Step 2"], (user, per_user[user])
    # and the work was shared: more than one worker process sent requests
    assert DeliveryAttempt.objects.count() == len(intercom_sandbox.requests)
    logs = celery_worker_process.logs()
    busy = [chunk for chunk in logs.split("--- ")[1:] if "switchboard.lanes_drain" in chunk]
    assert len(busy) > 1
