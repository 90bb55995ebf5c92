"""Given-steps shared by the delivery tests: a sync into the sandbox, calls through real ingest."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

import pytest
from django.utils import timezone

from integrations.models import Sync
from streaming.delivery.lanes import lane_drain
from streaming.delivery.ratelimit import rate_limiter_get
from streaming.ingest.events import events_ingest
from streaming.ingest.segment import call_normalise
from streaming.models import Delivery, Lane
from tests.factories import DestinationFactory, SyncFactory


def sync_into(sandbox: Any, **fields: Any) -> Sync:
    """An enabled sync whose destination is the sandbox (with the sandbox's token)."""
    destination = DestinationFactory(base_url=sandbox.url, access_token=sandbox.token)
    # Test databases reuse ids from run to run; the limiter's Redis state must not carry over.
    rate_limiter_get(destination_id=destination.pk).reset()
    return SyncFactory(destination=destination, **fields)


def identify(user: str, **traits: Any) -> dict[str, Any]:
    return {
        "type": "identify",
        "userId": user,
        "traits": {"email": f"{user}@example.com", **traits},
    }


def track(user: str, event: str, **properties: Any) -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": event, "properties": properties}


def ingest(sync: Sync, calls: Iterable[dict[str, Any]]) -> list[Delivery]:
    """Accept calls through the real ingest service; returns the deliveries it queued, in order."""
    now = timezone.now()
    normalised = [
        call_normalise({"messageId": uuid.uuid4().hex, **raw}, call_type=None, received_at=now)
        for raw in calls
    ]
    result = events_ingest(source=sync.sources.get(), calls=normalised, received_at=now)
    return list(Delivery.objects.filter(event_id__in=result.event_ids, sync=sync).order_by("id"))


def drain_all(sync: Sync) -> None:
    """What the workers would do once: drain every lane of the sync that is due."""
    for lane_id in Lane.objects.filter(sync=sync).order_by("id").values_list("id", flat=True):
        lane_drain(lane_id=lane_id)


def statuses(deliveries: Iterable[Delivery]) -> list[str]:
    return [Delivery.objects.get(pk=d.pk).status for d in deliveries]


def wait_settled(sync: Sync, workers: Any, *, timeout: float = 60.0) -> None:
    """Wait until real workers left no delivery of ``sync`` pending (fail with their logs)."""
    deadline = time.monotonic() + timeout
    while Delivery.objects.filter(sync=sync, status=Delivery.Status.PENDING).exists():
        if time.monotonic() > deadline:
            pytest.fail("deliveries still pending; worker logs:\n" + workers.logs())
        time.sleep(0.2)
