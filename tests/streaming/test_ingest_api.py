"""POST /v1/*: what a client sees for good and bad input, and what ends up stored."""

from __future__ import annotations

import base64
import gzip
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests
from django.test import override_settings
from django.utils import timezone

from integrations.models import EventFilter, Sync, WriteKey
from streaming.delivery import receivers
from streaming.ingest.filtered import filtered_counts
from streaming.ingest.segment import MAX_BATCH_BYTES, MAX_CALL_BYTES
from streaming.models import Delivery, Event, Lane
from streaming.signals import event_ingested
from tests.factories import (
    EventFilterFactory,
    LaneFactory,
    SourceFactory,
    SyncFactory,
    WriteKeyFactory,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_cache")]


@pytest.fixture
def write_key(source) -> str:
    return WriteKeyFactory(source=source, label="test").plaintext


def basic(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def post(client, path: str, body: object, key: str | None, **extra: str):
    data = body if isinstance(body, bytes) else json.dumps(body)
    headers = basic(key) if key else {}
    return client.post(path, data=data, content_type="application/json", **headers, **extra)


def stored_nothing() -> bool:
    return (
        not Event.objects.exists() and not Delivery.objects.exists() and not Lane.objects.exists()
    )


# --- accepted calls -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "event_name"),
    [
        ("/v1/identify", {"userId": "u1", "traits": {"email": "ada@example.com"}}, ""),
        ("/v1/track", {"userId": "u1", "event": "Order Completed"}, "Order Completed"),
        ("/v1/group", {"userId": "u1", "groupId": "acme", "traits": {"name": "Acme"}}, ""),
        ("/v1/page", {"userId": "u1", "name": "Pricing"}, "Pricing"),
        ("/v1/screen", {"userId": "u1", "name": "Settings"}, "Settings"),
        ("/v1/alias", {"userId": "u1", "previousId": "anon-1"}, ""),
    ],
)
def test_each_call_is_stored_with_one_delivery_per_sync(
    client, write_key, sync, path, body, event_name
):
    response = post(client, path, body, write_key)

    assert response.status_code == 200, response.content
    assert response.json() == {"success": True, "duplicate": False}
    event = Event.objects.get()
    assert event.type == path.rsplit("/", 1)[1]
    assert event.user_id == "u1"
    assert event.event_name == event_name
    delivery = Delivery.objects.get()
    assert (delivery.event, delivery.sync, delivery.user_key, delivery.status) == (
        event,
        sync,
        "u1",
        Delivery.Status.PENDING,
    )
    assert delivery.lane.user_key == "u1"
    assert delivery.lane.next_attempt_at is not None


def test_the_write_key_may_come_in_the_body(client, write_key, sync):
    response = post(client, "/v1/track", {"writeKey": write_key, "userId": 7, "event": "A"}, None)

    assert response.status_code == 200
    event = Event.objects.get()
    assert event.user_id == "7"
    assert write_key not in json.dumps(event.payload)


@pytest.mark.parametrize("accept", ["text/html", "application/xml", "image/png"])
def test_a_client_that_accepts_no_json_still_gets_its_call_stored_and_a_json_answer(
    client, write_key, sync, accept
):
    # a browser's Accept header must not turn an accepted call into a 406
    response = post(
        client, "/v1/track", {"userId": "u1", "event": "A"}, write_key, HTTP_ACCEPT=accept
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"success": True, "duplicate": False}
    assert Event.objects.get().event_name == "A"


def test_the_answer_comes_after_commit_and_wakes_the_lanes(
    client, write_key, sync, monkeypatch, django_capture_on_commit_callbacks
):
    woken: list[list[int]] = []
    ingested: list[list[int]] = []
    monkeypatch.setattr(receivers, "lanes_wake_soon", lambda ids: woken.append(sorted(ids)))

    def receiver(sender, event_ids, source_id, **kwargs):
        ingested.append(event_ids)

    event_ingested.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            response = post(
                client,
                "/v1/batch",
                {
                    "batch": [
                        {"type": "identify", "userId": "u1"},
                        {"type": "track", "userId": "u1", "event": "A"},
                        {"type": "track", "userId": "u2", "event": "A"},
                    ]
                },
                write_key,
            )
    finally:
        event_ingested.disconnect(receiver)

    assert response.status_code == 200
    assert callbacks, "waking the lanes must wait for the commit"
    assert woken == [sorted(Lane.objects.values_list("id", flat=True))]
    assert len(woken[0]) == 2
    assert ingested == [list(Event.objects.order_by("id").values_list("id", flat=True))]


def test_a_users_calls_share_one_lane_in_ingest_order(client, write_key, sync):
    post(
        client,
        "/v1/batch",
        {
            "batch": [
                {"type": "identify", "userId": "u1", "messageId": "m1"},
                {"type": "track", "userId": "u2", "event": "A", "messageId": "m2"},
                {"type": "track", "userId": "u1", "event": "B", "messageId": "m3"},
            ]
        },
        write_key,
    )
    post(client, "/v1/track", {"userId": "u1", "event": "C", "messageId": "m4"}, write_key)

    lane = Lane.objects.get(sync=sync, user_key="u1")
    assert list(lane.deliveries.order_by("id").values_list("event__message_id", flat=True)) == [
        "m1",
        "m3",
        "m4",
    ]
    assert Lane.objects.count() == 2


def test_an_idle_lane_is_marked_due_and_a_retrying_lane_keeps_its_backoff(client, write_key, sync):
    later = timezone.now() + timedelta(minutes=5)
    LaneFactory(sync=sync, user_key="idle", next_attempt_at=None)
    LaneFactory(sync=sync, user_key="retrying", next_attempt_at=later)

    post(
        client,
        "/v1/batch",
        {
            "batch": [
                {"type": "identify", "userId": "idle"},
                {"type": "identify", "userId": "retrying"},
            ]
        },
        write_key,
    )

    assert Lane.objects.get(user_key="idle").next_attempt_at is not None
    assert Lane.objects.get(user_key="retrying").next_attempt_at == later


def test_fan_out_reaches_the_syncs_of_the_source_a_disabled_one_counting_its_drop(
    client, write_key, source, sync, django_capture_on_commit_callbacks
):
    other_source_sync = SyncFactory(sources=[SourceFactory()])
    paused = SyncFactory(sources=[source], status=Sync.Status.PAUSED)
    disabled = SyncFactory(sources=[source], status=Sync.Status.DISABLED)
    second = SyncFactory(sources=[source])

    with django_capture_on_commit_callbacks(execute=True):
        post(client, "/v1/identify", {"userId": "u1"}, write_key)

    # a paused sync holds its delivery (pending, sent once it is enabled); a disabled one drops
    assert set(Delivery.objects.values_list("sync_id", flat=True)) == {
        sync.pk,
        second.pk,
        paused.pk,
    }
    assert not Delivery.objects.filter(sync__in=[other_source_sync, disabled]).exists()
    assert set(Lane.objects.values_list("sync_id", "user_key")) == {
        (sync.pk, "u1"),
        (second.pk, "u1"),
        (paused.pk, "u1"),
    }
    since = timezone.now() - timedelta(hours=1)
    assert filtered_counts(sync_id=disabled.pk, since=since) == {
        "the sync is disabled: what arrives is dropped": 1
    }


def test_a_sync_that_filters_a_call_out_gets_no_delivery_and_counts_the_reason(
    client, write_key, source, sync, django_capture_on_commit_callbacks
):
    picky = SyncFactory(sources=[source])
    EventFilterFactory(sync=picky, action=EventFilter.Action.EXCLUDE, event_name="Order *")

    with django_capture_on_commit_callbacks(execute=True):
        post(client, "/v1/track", {"userId": "u1", "event": "Order Completed"}, write_key)
        post(client, "/v1/track", {"userId": "u1", "event": "Order Refunded"}, write_key)
        post(client, "/v1/track", {"userId": "u1", "event": "Signed Up"}, write_key)

    assert Event.objects.count() == 3
    assert Delivery.objects.filter(sync=sync).count() == 3
    assert list(
        Delivery.objects.filter(sync=picky).values_list("event__event_name", flat=True)
    ) == ["Signed Up"]
    counts = filtered_counts(sync_id=picky.pk, since=timezone.now() - timedelta(hours=1))
    assert sum(counts.values()) == 2
    assert filtered_counts(sync_id=sync.pk, since=timezone.now() - timedelta(hours=1)) == {}


def test_an_integrations_opt_out_stores_the_event_but_delivers_nothing(
    client, write_key, sync, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(
            client,
            "/v1/track",
            {"userId": "u1", "event": "A", "integrations": {"Intercom": False}},
            write_key,
        )

    assert response.status_code == 200
    assert Event.objects.get().payload["integrations"] == {"Intercom": False}
    assert not Delivery.objects.exists()
    counts = filtered_counts(sync_id=sync.pk, since=timezone.now() - timedelta(hours=1))
    assert counts == {"integrations opt-out": 1}


def test_an_anonymous_call_is_not_delivered_by_a_sync_that_drops_them(client, write_key, sync):
    anonymous_too = SyncFactory(
        sources=list(sync.sources.all()), anonymous=Sync.Anonymous.ANONYMOUS_ID
    )

    post(client, "/v1/track", {"anonymousId": "anon-1", "event": "A"}, write_key)

    assert Event.objects.get().anonymous_id == "anon-1"
    assert list(Delivery.objects.values_list("sync_id", "user_key")) == [
        (anonymous_too.pk, "anon-1")
    ]


def test_clock_skew_is_corrected_on_ingest(client, write_key, sync):
    now = timezone.now()
    skew = timedelta(hours=3)  # the device's clock is 3 h fast
    post(
        client,
        "/v1/track",
        {
            "userId": "u1",
            "event": "A",
            "originalTimestamp": (now + skew - timedelta(seconds=10)).isoformat(),
            "sentAt": (now + skew).isoformat(),
        },
        write_key,
    )

    event = Event.objects.get()
    happened = event.received_at - timedelta(seconds=10)
    assert abs(event.timestamp - happened) < timedelta(milliseconds=2)


def test_gzip_bodies_are_accepted(client, write_key, sync):
    body = gzip.compress(json.dumps({"batch": [{"type": "identify", "userId": "u1"}]}).encode())

    response = post(client, "/v1/batch", body, write_key, HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 200, response.content
    assert Event.objects.get().user_id == "u1"


def test_import_is_a_batch(client, write_key, sync):
    response = post(
        client,
        "/v1/import",
        {
            "batch": [
                {"type": "track", "userId": "u1", "event": "A", "timestamp": "2020-01-01T00:00:00Z"}
            ]
        },
        write_key,
    )

    assert response.status_code == 200
    assert Event.objects.get().timestamp == datetime(2020, 1, 1, tzinfo=UTC)


# --- duplicates ---------------------------------------------------------------------------------


def test_a_repeated_message_id_is_acknowledged_but_stored_and_delivered_once(
    client, write_key, sync
):
    body = {"userId": "u1", "event": "A", "messageId": "m-1"}

    first = post(client, "/v1/track", body, write_key)
    again = post(client, "/v1/track", body, write_key)
    in_batch = post(
        client,
        "/v1/batch",
        {
            "batch": [
                {**body, "type": "track"},
                {**body, "type": "track", "messageId": "m-2"},
                {**body, "type": "track", "messageId": "m-2"},
            ]
        },
        write_key,
    )

    assert first.json()["duplicate"] is False
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert in_batch.json() == {"success": True, "accepted": 1, "duplicates": 2, "rejected": []}
    assert sorted(Event.objects.values_list("message_id", flat=True)) == ["m-1", "m-2"]
    assert Delivery.objects.count() == 2


def test_the_same_message_id_from_another_source_is_a_different_event(client, write_key, sync):
    other_key = WriteKeyFactory().plaintext
    body = {"userId": "u1", "event": "A", "messageId": "m-1"}

    post(client, "/v1/track", body, write_key)
    post(client, "/v1/track", body, other_key)

    assert Event.objects.count() == 2


# --- bad input: a clear answer, nothing stored ----------------------------------------------


def test_no_write_key_is_401(client, sync):
    response = post(client, "/v1/track", {"userId": "u1", "event": "A"}, None)

    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert "write key" in response.json()["message"]
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert stored_nothing()


@pytest.mark.parametrize("where", ["header", "body"])
def test_an_unknown_write_key_is_401(client, sync, where):
    body = {"userId": "u1", "event": "A"}
    if where == "body":
        response = post(client, "/v1/track", {**body, "writeKey": "sb_nope"}, None)
    else:
        response = post(client, "/v1/track", body, "sb_nope")

    assert response.status_code == 401
    assert "Invalid write key" in response.json()["message"]
    assert "sb_nope" not in response.content.decode()
    assert stored_nothing()


def test_a_revoked_write_key_is_401_at_once(client, source, write_key, sync):
    assert post(client, "/v1/identify", {"userId": "u1"}, write_key).status_code == 200

    WriteKey.objects.get(source=source).revoke()
    response = post(client, "/v1/identify", {"userId": "u2"}, write_key)

    assert response.status_code == 401
    assert list(Event.objects.values_list("user_id", flat=True)) == ["u1"]


def test_a_disabled_source_is_401(client, source, write_key, sync):
    source.enabled = False
    source.save()

    assert post(client, "/v1/identify", {"userId": "u1"}, write_key).status_code == 401
    assert stored_nothing()


@pytest.mark.parametrize("path", ["/v1/track", "/v1/batch"])
def test_malformed_json_is_400(client, write_key, sync, path):
    response = post(client, path, b'{"userId": "u1", "event": ', write_key)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"
    assert stored_nothing()


def test_a_corrupt_gzip_body_is_400(client, write_key, sync):
    response = post(
        client, "/v1/track", b"\x1f\x8bnot gzip", write_key, HTTP_CONTENT_ENCODING="gzip"
    )

    assert response.status_code == 400
    assert stored_nothing()


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/track", {"event": "A"}, "userId"),
        ("/v1/track", {"userId": "u1"}, "event"),
        ("/v1/identify", {"userId": "u1", "traits": ["a"]}, "traits"),
        ("/v1/track", {"userId": "u1", "event": "A", "properties": 3}, "properties"),
        ("/v1/identify", {"userId": "u1", "context": "web"}, "context"),
        ("/v1/group", {"userId": "u1"}, "groupId"),
        ("/v1/alias", {"userId": "u1"}, "previousId"),
        ("/v1/identify", {"userId": ["u1"]}, "userId"),
        ("/v1/identify", {"userId": "u1", "timestamp": "tomorrow"}, "timestamp"),
        ("/v1/identify", ["userId"], "non_field_errors"),
    ],
)
def test_bad_fields_are_400_with_field_errors(client, write_key, sync, path, body, field):
    response = post(client, path, body, write_key)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_call"
    assert field in response.json()["errors"]
    assert stored_nothing()


def test_a_call_over_32_kb_is_413(client, write_key, sync):
    body = {"userId": "u1", "event": "A", "properties": {"blob": "x" * MAX_CALL_BYTES}}

    response = post(client, "/v1/track", body, write_key)

    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert stored_nothing()


def test_a_gzip_call_that_inflates_over_32_kb_is_413(client, write_key, sync):
    body = gzip.compress(
        json.dumps(
            {"userId": "u1", "event": "A", "properties": {"blob": "x" * MAX_CALL_BYTES}}
        ).encode()
    )
    assert len(body) < 1024

    response = post(client, "/v1/track", body, write_key, HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 413
    assert stored_nothing()


def test_a_batch_over_500_kb_is_413(client, write_key, sync):
    item = {"type": "track", "userId": "u1", "event": "A", "properties": {"blob": "x" * 20_000}}
    body = {"batch": [item] * (MAX_BATCH_BYTES // 20_000 + 1)}

    response = post(client, "/v1/batch", body, write_key)

    assert response.status_code == 413
    assert stored_nothing()


def test_a_partly_invalid_batch_stores_the_valid_calls_and_names_the_rejected(
    client, write_key, sync
):
    response = post(
        client,
        "/v1/batch",
        {
            "batch": [
                {"type": "identify", "userId": "u1", "messageId": "ok-1"},
                {"type": "track", "userId": "u1"},
                {
                    "type": "track",
                    "userId": "u1",
                    "event": "A",
                    "properties": {"blob": "x" * MAX_CALL_BYTES},
                },
                {"type": "track", "event": "A"},
                {"type": "track", "userId": "u1", "event": "B", "messageId": "ok-2"},
            ]
        },
        write_key,
    )

    assert response.status_code == 200
    answer = response.json()
    assert (answer["accepted"], answer["duplicates"]) == (2, 0)
    assert [(r["index"], list(r["errors"])) for r in answer["rejected"]] == [
        (1, ["event"]),
        (2, ["non_field_errors"]),
        (3, ["userId"]),
    ]
    assert "32768" in answer["rejected"][1]["reason"]
    assert sorted(Event.objects.values_list("message_id", flat=True)) == ["ok-1", "ok-2"]
    assert Delivery.objects.count() == 2


def test_a_batch_with_no_valid_call_is_400(client, write_key, sync):
    response = post(client, "/v1/batch", {"batch": [{"type": "track", "userId": "u1"}]}, write_key)

    assert response.status_code == 400
    assert response.json()["errors"]["rejected"][0]["index"] == 0
    assert stored_nothing()


@override_settings(SWITCHBOARD_WRITE_KEY_RATE_LIMIT=1)
def test_over_the_write_key_rate_limit_is_429_with_retry_after(client, write_key, sync):
    answers = [post(client, "/v1/identify", {"userId": f"u{i}"}, write_key) for i in range(5)]

    limited = [a for a in answers if a.status_code == 429]
    assert limited, "five calls in a row at 1 call/s: at least two share a second"
    assert limited[0].headers["Retry-After"] == "1"
    assert limited[0].headers["X-RateLimit-Reset"] == "1"
    assert limited[0].json()["code"] == "rate_limited"
    accepted = [a for a in answers if a.status_code == 200]
    assert Event.objects.count() == len(accepted)


def test_the_rate_limit_is_per_write_key(client, source, write_key, sync):
    second_key = WriteKeyFactory(source=source).plaintext
    with override_settings(SWITCHBOARD_WRITE_KEY_RATE_LIMIT=1):
        post(client, "/v1/identify", {"userId": "u1"}, write_key)
        other = post(client, "/v1/identify", {"userId": "u2"}, second_key)

    assert other.status_code == 200


def test_a_cors_preflight_allows_browser_sdks(client):
    response = client.options(
        "/v1/track",
        HTTP_ORIGIN="https://app.example.com",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
    )

    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] in ("*", "https://app.example.com")
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed
    assert "content-type" in allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_the_openapi_schema_describes_the_ingest_api(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    schema = json.loads(response.content)
    for call in ("identify", "track", "group", "page", "screen", "alias", "batch", "import"):
        assert "post" in schema["paths"][f"/v1/{call}"], call
    track = schema["paths"]["/v1/track"]["post"]
    assert {"200", "400", "401", "413", "429"} <= set(track["responses"])
    assert schema["components"]["securitySchemes"]["writeKey"]["scheme"] == "basic"
    assert "event" in schema["components"]["schemas"]["TrackCall"]["required"]


def test_analytics_js_short_paths_with_the_key_in_a_text_plain_body(client, write_key, sync):
    # as Segment's browser SDK sends them: no Authorization header, no CORS preflight
    track = client.post(
        "/v1/t",
        data=json.dumps({"writeKey": write_key, "anonymousId": "a1", "userId": "u1", "event": "A"}),
        content_type="text/plain",
        HTTP_ORIGIN="https://app.example.com",
    )
    batch = client.post(
        "/v1/b",
        data=json.dumps(
            {"writeKey": write_key, "batch": [{"type": "page", "userId": "u1", "name": "Home"}]}
        ),
        content_type="text/plain",
    )

    assert (track.status_code, batch.status_code) == (200, 200)
    assert track.headers["Access-Control-Allow-Origin"] in ("*", "https://app.example.com")
    assert list(Event.objects.order_by("id").values_list("type", flat=True)) == ["track", "page"]


def test_a_cors_preflight_allows_rudderstacks_anonymous_id_header(client):
    response = client.options(
        "/v1/track",
        HTTP_ORIGIN="https://app.example.com",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="anonymousid, authorization, content-type",
    )

    assert response.status_code == 200
    assert "anonymousid" in response.headers["Access-Control-Allow-Headers"].lower()


@pytest.mark.django_db(transaction=True)
def test_a_failing_signal_receiver_does_not_turn_an_accepted_call_into_an_error(
    client, write_key, sync
):
    def broken_receiver(**kwargs):
        raise RuntimeError("host bug")

    event_ingested.connect(broken_receiver)
    try:
        response = post(client, "/v1/track", {"userId": "u1", "event": "A"}, write_key)
    finally:
        event_ingested.disconnect(broken_receiver)

    # the call is stored: a 500 would make the SDK send it again
    assert response.status_code == 200
    assert Event.objects.count() == 1


def test_concurrent_copies_of_a_batch_are_stored_and_delivered_once(live_switchboard, sync):
    key = WriteKeyFactory(source=sync.sources.get()).plaintext
    batch = {
        "batch": [
            {"type": "track", "userId": f"u{i % 7}", "event": "A", "messageId": f"m-{i}"}
            for i in range(60)
        ]
    }
    # The same batch, in two orders, sent by four clients at once (an SDK retrying a timeout).
    bodies = [batch, {"batch": batch["batch"][::-1]}] * 2

    def send(body: dict) -> requests.Response:
        return requests.post(f"{live_switchboard}/v1/batch", json=body, auth=(key, ""), timeout=30)

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(send, bodies))

    assert [a.status_code for a in answers] == [200] * 4
    assert sum(a.json()["accepted"] for a in answers) == 60
    assert Event.objects.count() == 60
    assert Delivery.objects.count() == 60
    for lane in Lane.objects.all():
        ids = list(lane.deliveries.order_by("id").values_list("event_id", flat=True))
        assert ids == sorted(ids)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"userId": "u1", "event": "A", "properties": {"ratio": NaN}}',
        b'{"userId": "u1", "event": "A", "properties": {"name": "a\\u0000b"}}',
        b'{"userId": "u1\\u0000", "event": "A"}',
        b'{"userId": "u1", "event": "A", "properties": {"name": "\\ud800"}}',
        b'{"userId": "u1", "event": "A", "properties": ' + b"[" * 10000 + b"]" * 10000 + b"}",
    ],
    ids=["nan", "nul-in-property", "nul-in-user-id", "lone-surrogate", "deep-nesting"],
)
def test_json_that_postgresql_cannot_store_is_400(client, write_key, sync, raw):
    response = post(client, "/v1/track", raw, write_key)

    assert response.status_code == 400
    assert stored_nothing()


def test_an_identity_too_long_for_a_lane_is_filtered_with_its_reason(
    client, write_key, source, django_capture_on_commit_callbacks
):
    by_email = SyncFactory(sources=[source], match_by=Sync.MatchBy.EMAIL)
    email = "a" * 250 + "@example.com"

    with django_capture_on_commit_callbacks(execute=True):
        response = post(
            client, "/v1/identify", {"userId": "u1", "traits": {"email": email}}, write_key
        )

    assert response.status_code == 200
    assert Event.objects.count() == 1
    assert not Delivery.objects.filter(sync=by_email).exists()
    counts = filtered_counts(sync_id=by_email.pk, since=timezone.now() - timedelta(hours=1))
    assert counts == {"user id longer than 255 characters": 1}
