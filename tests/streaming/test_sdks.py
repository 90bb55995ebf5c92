"""The official Segment and RudderStack Python SDKs, pointed at a live Switchboard.

Nothing is adapted for them: they post to <host>/v1/batch (gzip for RudderStack), with the write
key as HTTP Basic username (Segment also puts it in the body), exactly as to their own clouds.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from rudderstack.analytics import Client as RudderClient
from rudderstack.analytics import request as rudder_request
from segment.analytics import Client as SegmentClient
from segment.analytics import request as segment_request
from segment.analytics.request import post as segment_post

from streaming.models import Delivery, Event, Lane
from tests.factories import SourceFactory, SyncFactory, WriteKeyFactory

USERS = 20

pytestmark = pytest.mark.usefixtures("fresh_cache")


@pytest.fixture(autouse=True)
def _sdk_sessions_closed():
    yield
    # The SDKs keep module-level keep-alive sessions; a server thread serving one would hold a
    # database connection open past the test.
    segment_request._session.close()
    rudder_request._session.close()


@pytest.fixture
def source_key(live_switchboard):
    source = SourceFactory(name="sdk")
    plaintext = WriteKeyFactory(source=source).plaintext
    sync = SyncFactory(sources=[source])
    return sync, plaintext


def segment_client(key: str, host: str, errors: list, **options: object) -> SegmentClient:
    return SegmentClient(
        key,
        host=host,
        on_error=lambda error, batch: errors.append(error),
        max_retries=0,
        **options,
    )


def rudder_client(key: str, host: str, errors: list, **options: object) -> RudderClient:
    return RudderClient(
        key,
        host=host,
        on_error=lambda error, batch: errors.append(error),
        max_retries=0,
        **options,
    )


def send_users(client) -> list[str]:
    """identify -> track -> group for each user; the messageIds the SDK generated."""
    message_ids = []
    for n in range(USERS):
        user = f"user-{n}"
        for ok, message in (
            client.identify(user, {"email": f"{user}@example.com", "plan": "pro"}),
            client.track(user, "Report Exported", {"format": "csv", "rows": n}),
            client.group(user, f"company-{n % 3}", {"name": f"Company {n % 3}"}),
        ):
            assert ok
            message_ids.append(message["messageId"])
    client.flush()
    return message_ids


def assert_stored_once_in_order(sync, message_ids: list[str]) -> None:
    assert Event.objects.count() == len(message_ids)
    assert set(Event.objects.values_list("message_id", flat=True)) == set(message_ids)
    assert Delivery.objects.filter(sync=sync).count() == len(message_ids)
    assert Lane.objects.filter(sync=sync).count() == USERS
    per_lane = defaultdict(list)
    for user_key, call_type in Delivery.objects.order_by("id").values_list(
        "lane__user_key", "event__type"
    ):
        per_lane[user_key].append(call_type)
    assert set(map(tuple, per_lane.values())) == {("identify", "track", "group")}


@pytest.mark.parametrize("options", [{}, {"gzip": True}, {"sync_mode": True}])
def test_the_segment_sdk_delivers_every_call_once(live_switchboard, source_key, options):
    sync, key = source_key
    errors: list = []
    client = segment_client(key, live_switchboard, errors, **options)

    message_ids = send_users(client)
    if not options.get("sync_mode"):
        client.shutdown()

    assert errors == []
    assert_stored_once_in_order(sync, message_ids)
    event = Event.objects.get(message_id=message_ids[1])
    assert event.payload["properties"] == {"format": "csv", "rows": 0}
    assert event.payload["context"]["library"]["name"] == "analytics-python"
    assert "writeKey" not in event.payload


@pytest.mark.parametrize("options", [{}, {"gzip": False}, {"sync_mode": True}])
def test_the_rudderstack_sdk_delivers_every_call_once(live_switchboard, source_key, options):
    sync, key = source_key
    errors: list = []
    client = rudder_client(key, live_switchboard, errors, **options)

    message_ids = send_users(client)
    if not options.get("sync_mode"):
        client.shutdown()

    assert errors == []
    assert_stored_once_in_order(sync, message_ids)
    identify = Event.objects.get(message_id=message_ids[0]).payload
    # RudderStack sends identify traits in context.traits; they are also at the root, as
    # Segment sends them, so filters and mappings on traits.* work alike.
    assert identify["context"]["traits"]["plan"] == "pro"
    assert identify["traits"]["plan"] == "pro"


def test_an_sdk_resending_a_batch_after_a_lost_answer_stores_it_once(live_switchboard, source_key):
    sync, key = source_key
    batch = [
        {"type": "identify", "userId": "u1", "messageId": "m-1", "traits": {"email": "a@b.co"}},
        {"type": "track", "userId": "u1", "messageId": "m-2", "event": "Signed Up"},
    ]

    first = segment_post(key, host=live_switchboard, gzip=True, batch=batch)
    retry = segment_post(key, host=live_switchboard, gzip=True, batch=batch)

    assert (first.status_code, retry.status_code) == (200, 200)
    assert retry.json()["duplicates"] == 2
    assert Event.objects.count() == 2
    assert Delivery.objects.filter(sync=sync).count() == 2


def test_an_sdk_with_a_wrong_write_key_is_told_why(live_switchboard, source_key):
    errors: list = []
    client = segment_client("sb_wrong", live_switchboard, errors, sync_mode=True)

    with pytest.raises(Exception) as caught:
        client.track("u1", "Signed Up")

    assert caught.value.status == 401
    assert caught.value.code == "unauthorized"
    assert "write key" in caught.value.message
    assert not Event.objects.exists()
