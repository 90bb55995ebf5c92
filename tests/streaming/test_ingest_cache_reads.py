"""A single call reads the cache once: the write key with the routes' and suppressions' versions.

Each round trip to Redis costs more than the work around it on the single-call path (B1), so
the API reads the three together. These tests hold that, and that the versions read this way
still carry a change made by another process to the very next call.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator

import pytest
from django.core.cache import cache
from django.utils import timezone

from integrations.models import Sync
from integrations.selectors import ROUTES_VERSION_KEY
from streaming.ingest.suppression import VERSION_KEY as SUPPRESSIONS_VERSION_KEY
from streaming.ingest.suppression import subject_hash
from streaming.models import Delivery, Event, Suppression
from tests.factories import WriteKeyFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_cache")]

_READS = ("get", "get_many")
_WRITES = ("add", "set", "incr", "delete", "set_many")


@pytest.fixture
def cache_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Every call the request makes to Django's cache (the Redis cache under test), by name."""
    counts: Counter[str] = Counter()
    backend = cache._connections[cache._alias]  # this thread's backend: the test client's too
    for name in (*_READS, *_WRITES):
        original = getattr(backend, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(backend, name, counted)
    yield counts


def track(client, key: str, user_id: str, message_id: str):
    return client.post(
        "/v1/track",
        data=json.dumps({"userId": user_id, "event": "Order Completed", "messageId": message_id}),
        content_type="application/json",
        HTTP_AUTHORIZATION="Basic " + base64.b64encode(f"{key}:".encode()).decode(),
    )


def test_a_single_call_reads_the_cache_once(client, sync, cache_calls):
    # given a key that has been used (its entry cached, its last use marked, versions set)
    key = WriteKeyFactory(source=sync.sources.get()).plaintext
    assert track(client, key, "u-1", "m-1").status_code == 200
    cache_calls.clear()

    # when the next call comes
    answer = track(client, key, "u-2", "m-2")

    # then it is stored with its delivery after one cache read and no cache write
    assert answer.status_code == 200
    assert Delivery.objects.filter(event__message_id="m-2").count() == 1
    assert sum(cache_calls[name] for name in _READS) == 1, cache_calls
    assert sum(cache_calls[name] for name in _WRITES) == 0, cache_calls


def test_a_sync_disabled_by_another_process_drops_the_very_next_call(client, sync):
    key = WriteKeyFactory(source=sync.sources.get()).plaintext
    assert track(client, key, "u-1", "m-1").status_code == 200
    # another process disables the sync (no signal here) and bumps the routes' version
    Sync.objects.filter(pk=sync.pk).update(status=Sync.Status.DISABLED)
    cache.incr(ROUTES_VERSION_KEY)

    assert track(client, key, "u-2", "m-2").status_code == 200

    assert Event.objects.filter(message_id="m-2").exists()
    assert not Delivery.objects.filter(event__message_id="m-2").exists()


def test_a_person_suppressed_by_another_process_is_dropped_from_the_very_next_call(client, sync):
    key = WriteKeyFactory(source=sync.sources.get()).plaintext
    assert track(client, key, "u-1", "m-1").status_code == 200
    # another process suppresses u-1 (no signal here) and bumps the suppressions' version
    Suppression.objects.create(subject_hash=subject_hash("u-1"), created_at=timezone.now())
    cache.incr(SUPPRESSIONS_VERSION_KEY)

    assert track(client, key, "u-1", "m-2").status_code == 200

    assert not Event.objects.filter(message_id="m-2").exists()
    assert track(client, key, "u-3", "m-3").status_code == 200
    assert Event.objects.filter(message_id="m-3").exists()
