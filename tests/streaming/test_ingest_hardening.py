"""Bad input and contention at the ingest door: a clear 4xx (or a 503 to retry), never a 500 page,
and nothing stored by what is refused."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import requests
from django.db import connection
from django.test import override_settings
from django.urls import reverse

from streaming.ingest import api
from streaming.models import Delivery, Event, Lane
from tests.factories import WriteKeyFactory

pytestmark = pytest.mark.usefixtures("fresh_cache")


@pytest.fixture
def write_key(source) -> str:
    return WriteKeyFactory(source=source, label="test").plaintext


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def stored_nothing() -> bool:
    return not (Event.objects.exists() or Delivery.objects.exists() or Lane.objects.exists())


# --- 1. contention ------------------------------------------------------------------------------


def test_parallel_batches_repeating_the_same_message_ids_all_succeed(
    live_switchboard, write_key, sync
):
    # given 300 calls an SDK sends again, in another order each time, from 8 clients at once
    calls = [
        {"type": "track", "userId": f"user-{i % 40}", "event": "Seen", "messageId": f"m-{i}"}
        for i in range(300)
    ]
    shuffler = random.Random(7)

    def send(_: int) -> requests.Response:
        batch = calls[:]
        shuffler.shuffle(batch)
        return requests.post(
            f"{live_switchboard}/v1/batch",
            json={"batch": batch},
            headers=basic(write_key),
            timeout=60,
        )

    deadlocks_before = _deadlocks()
    for _ in range(3):
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(send, range(8)))
        # then every client is told its calls are stored, and each is stored once
        assert [a.status_code for a in answers] == [200] * 8, [a.text[:300] for a in answers]
    assert Event.objects.count() == 300
    assert Delivery.objects.count() == 300
    # ...without PostgreSQL having to break a deadlock (each costs a second and a retry)
    assert _deadlocks(settle=deadlocks_before) == deadlocks_before
    # event ids still follow the order in which the first batch to store them sent them
    first = Event.objects.order_by("id").values_list("message_id", flat=True)
    assert len(set(first)) == 300


def _deadlocks(*, settle: int | None = None) -> int:
    """Deadlocks PostgreSQL detected in the test database; with ``settle``, waits up to 3 s for
    the server's statistics to move past it (backends report them when they end)."""
    deadline = time.monotonic() + (3 if settle is not None else 0)
    while True:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
            )
            count = cursor.fetchone()[0]
        if settle is None or count != settle or time.monotonic() > deadline:
            return count
        time.sleep(0.5)


@pytest.mark.django_db
def test_an_unexpected_failure_answers_json_not_an_html_page(client, write_key, sync, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("a defect")

    monkeypatch.setattr(api, "events_ingest", broken)
    response = client.post(
        "/v1/track",
        data=json.dumps({"userId": "u1", "event": "Seen"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=basic(write_key)["Authorization"],
    )

    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "internal_error"


# --- 2. storage amplification -------------------------------------------------------------------


@pytest.mark.django_db
def test_a_small_batch_that_would_expand_into_megabytes_is_refused(client, write_key, sync):
    # given a 165 KB batch: a 20 KB shared context and 2,000 tiny calls
    body = {
        "context": {"padding": "x" * 20_000},
        "batch": [{"type": "track", "userId": "u", "event": "e"} for _ in range(2000)],
    }
    response = client.post(
        "/v1/batch",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=basic(write_key)["Authorization"],
    )

    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert "as stored" in response.json()["message"]
    assert stored_nothing()


@pytest.mark.django_db
def test_a_call_over_32_kb_once_the_shared_context_is_merged_in_is_rejected_alone(
    client, write_key, sync
):
    body = {
        "context": {"padding": "x" * 20_000},
        "batch": [
            {"type": "track", "userId": "u", "event": "small"},
            {"type": "track", "userId": "u", "event": "big", "properties": {"p": "y" * 15_000}},
        ],
    }
    response = client.post(
        "/v1/batch",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=basic(write_key)["Authorization"],
    )

    assert response.status_code == 200, response.content
    assert response.json()["accepted"] == 1
    assert [r["index"] for r in response.json()["rejected"]] == [1]
    assert "as stored" in response.json()["rejected"][0]["reason"]
    assert list(Event.objects.values_list("event_name", flat=True)) == ["small"]


# --- 3. NUL characters --------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_nul_in_the_audit_api_path_is_a_400_in_json(client):
    response = client.get("/api/v1/users/%00/deliveries")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_text"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "query"),
    [
        ("admin:streaming_timeline", "q=%00"),
        ("admin:streaming_delivery_changelist", "status=%00"),
        ("admin:streaming_delivery_changelist", "q=a%00b"),
    ],
)
def test_a_nul_in_an_admin_query_is_a_400(admin_client, url, query):
    response = admin_client.get(f"{reverse(url)}?{query}")

    assert response.status_code == 400
    assert b"NUL" in response.content


# --- 4. chunked bodies --------------------------------------------------------------------------


def _post_chunked(base_url: str, path: str, body: bytes, key: str) -> tuple[int, dict]:
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        headers = {"Content-Type": "application/json", **basic(key)}
        connection.request(
            "POST", path, body=iter([body[:10], body[10:]]), headers=headers, encode_chunked=True
        )
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read() or b"{}")
    finally:
        connection.close()


def test_a_chunked_body_is_read_by_the_production_server(live_gunicorn, write_key, sync):
    status, answer = _post_chunked(
        live_gunicorn, "/v1/track", b'{"userId": "u1", "event": "Chunked"}', write_key
    )

    assert (status, answer) == (200, {"success": True, "duplicate": False})
    assert list(Event.objects.values_list("event_name", flat=True)) == ["Chunked"]


def test_a_chunked_body_to_a_server_that_cannot_read_it_is_a_411(live_switchboard, write_key, sync):
    status, answer = _post_chunked(
        live_switchboard, "/v1/track", b'{"userId": "u1", "event": "Chunked"}', write_key
    )

    assert status == 411
    assert answer["code"] == "length_required"
    assert stored_nothing()


# --- 5. gzip with trailing junk -----------------------------------------------------------------


@pytest.mark.django_db
def test_gzip_with_data_after_its_end_is_refused(client, write_key, sync):
    body = gzip.compress(json.dumps({"userId": "u1", "event": "Seen"}).encode()) + b"junk"

    response = client.post(
        "/v1/track",
        data=body,
        content_type="application/json",
        HTTP_CONTENT_ENCODING="gzip",
        HTTP_AUTHORIZATION=basic(write_key)["Authorization"],
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_gzip"
    assert stored_nothing()


# --- 8. brute force -----------------------------------------------------------------------------


@pytest.mark.django_db
@override_settings(SWITCHBOARD_FAILED_WRITE_KEYS_PER_MINUTE=30)
def test_an_address_guessing_write_keys_is_refused_even_its_right_key(client, write_key, sync):
    def track(key: str, address: str):
        return client.post(
            "/v1/track",
            data=json.dumps({"userId": "u1", "event": "Seen"}),
            content_type="application/json",
            HTTP_AUTHORIZATION=basic(key)["Authorization"],
            REMOTE_ADDR=address,
        )

    answers = [track(f"sb_guess{i}", "203.0.113.9").status_code for i in range(31)]

    assert answers == [401] * 30 + [429]
    refused = track(write_key, "203.0.113.9")
    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_failed_keys"
    assert int(refused["Retry-After"]) >= 1
    # another address is not held back
    assert track(write_key, "198.51.100.4").status_code == 200


@pytest.mark.django_db
def test_repeated_wrong_admin_passwords_lock_the_login_out(client, django_user_model):
    django_user_model.objects.create_superuser("ops", "ops@example.com", "right-password")
    login = reverse("admin:login")

    answers = [
        client.post(login, {"username": "ops", "password": "wrong"}).status_code for _ in range(10)
    ]
    locked = client.post(login, {"username": "ops", "password": "right-password"})

    assert answers == [200] * 9 + [429]  # the form again with its error, then the lockout

    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
