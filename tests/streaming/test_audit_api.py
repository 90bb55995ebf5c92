"""GET /api/v1/users/{user_id}/deliveries: who may read it, what it says, page by page."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token

from streaming.models import DeliveryAttempt
from tests.streaming.audit_rows import (
    SECRET_TOKEN,
    attempt_make,
    delivery_make,
    event_make,
    staff_make,
)

pytestmark = [
    pytest.mark.django_db,
    # the names the answer shows, and a token it must not
    pytest.mark.sync_fields(name="app-to-intercom"),
    pytest.mark.destination_fields(name="Main workspace", access_token=SECRET_TOKEN),
]


def url(user_id: str) -> str:
    return f"/api/v1/users/{user_id}/deliveries"


@pytest.fixture
def reader_token():
    user = staff_make(username="support-bot", perms=("streaming.view_delivery",))
    return Token.objects.create(user=user).key


def test_without_credentials_the_answer_is_401(client, sync):
    response = client.get(url("ada"))
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Token")


def test_a_user_without_the_view_permission_gets_403(client, sync):
    token = Token.objects.create(user=staff_make(username="intern")).key
    response = client.get(url("ada"), HTTP_AUTHORIZATION=f"Token {token}")
    assert response.status_code == 403
    assert "streaming.view_delivery" in response.json()["detail"]


def test_a_wrong_token_gets_401(client, sync):
    response = client.get(url("ada"), HTTP_AUTHORIZATION="Token not-a-real-token")
    assert response.status_code == 401


def test_a_logged_in_admin_reads_it_with_the_session(admin_client, sync):
    event = event_make(source=sync.sources.get(), user_id="ada")
    delivery_make(event=event, sync=sync, status="succeeded", attempts=1)
    response = admin_client.get(url("ada"))
    assert response.status_code == 200
    assert response.json()["count"] == 1


def test_each_delivery_comes_with_its_event_sync_status_and_attempts(client, sync, reader_token):
    now = timezone.now()
    event = event_make(
        source=sync.sources.get(), user_id="ada", event_name="Order Completed", received_at=now
    )
    delivery = delivery_make(
        event=event,
        sync=sync,
        status="failed",
        attempts=1,
        reason="400 bad metadata",
        completed_at=now,
    )
    attempt_make(
        delivery=delivery,
        status_code=400,
        category=DeliveryAttempt.Category.PERMANENT,
        error_code="parameter_invalid",
        response_excerpt='{"type":"error.list"}',
    )
    other = event_make(source=sync.sources.get(), user_id="bob")
    delivery_make(event=other, sync=sync)

    body = client.get(url("ada"), HTTP_AUTHORIZATION=f"Token {reader_token}").json()

    assert body["count"] == 1
    (item,) = body["results"]
    assert item["id"] == delivery.pk
    assert item["status"] == "failed"
    assert item["reason"] == "400 bad metadata"
    assert item["tries"] == 1
    assert item["test"] is False
    assert item["event"]["type"] == "track"
    assert item["event"]["name"] == "Order Completed"
    assert item["event"]["messageId"] == event.message_id
    assert item["event"]["timestamp"]
    assert item["sync"] == {
        "id": sync.pk,
        "name": "app-to-intercom",
        "destination": "Main workspace",
    }
    (attempt,) = item["attempts"]
    assert attempt["method"] == "POST"
    assert attempt["url"] == "http://127.0.0.1:8765/events"
    assert attempt["status_code"] == 400
    assert attempt["response_excerpt"] == '{"type":"error.list"}'
    assert attempt["duration_ms"] == 87
    assert attempt["category"] == "permanent"
    assert "request_body" not in attempt


def test_a_user_is_also_found_by_the_key_a_sync_chose_for_them(client, sync, reader_token):
    # A sync matching by email keys the lane by the address, not the userId.
    event = event_make(source=sync.sources.get(), user_id="ada")
    delivery = delivery_make(event=event, sync=sync, user_key="ada@example.com")
    body = client.get(url("ada@example.com"), HTTP_AUTHORIZATION=f"Token {reader_token}").json()
    assert [d["id"] for d in body["results"]] == [delivery.pk]
    body = client.get(url("ada"), HTTP_AUTHORIZATION=f"Token {reader_token}").json()
    assert [d["id"] for d in body["results"]] == [delivery.pk]


def test_results_are_paginated_newest_first(client, sync, reader_token):
    start = timezone.now() - timedelta(hours=1)
    ids = []
    for n in range(55):
        event = event_make(
            source=sync.sources.get(), user_id="ada", received_at=start + timedelta(seconds=n)
        )
        ids.append(delivery_make(event=event, sync=sync, status="succeeded", attempts=1).pk)

    first = client.get(url("ada"), HTTP_AUTHORIZATION=f"Token {reader_token}").json()
    assert first["count"] == 55
    assert [d["id"] for d in first["results"]] == ids[::-1][:50]
    second = client.get(first["next"], HTTP_AUTHORIZATION=f"Token {reader_token}").json()
    assert [d["id"] for d in second["results"]] == ids[::-1][50:]
    assert second["next"] is None


def test_the_query_count_does_not_grow_with_the_page(
    client, sync, reader_token, django_assert_max_num_queries
):
    def deliveries_add(n: int) -> None:
        for _ in range(n):
            event = event_make(source=sync.sources.get(), user_id="ada")
            delivery = delivery_make(event=event, sync=sync, status="succeeded", attempts=1)
            attempt_make(delivery=delivery)
            attempt_make(delivery=delivery)

    deliveries_add(1)
    with django_assert_max_num_queries(10) as one:
        client.get(url("ada"), HTTP_AUTHORIZATION=f"Token {reader_token}")
    deliveries_add(19)
    with django_assert_max_num_queries(len(one.captured_queries)):
        response = client.get(url("ada"), HTTP_AUTHORIZATION=f"Token {reader_token}")
    assert len(response.json()["results"]) == 20


def test_no_secret_in_the_answer(client, sync, reader_token):
    event = event_make(source=sync.sources.get(), user_id="ada")
    attempt_make(delivery=delivery_make(event=event, sync=sync))
    response = client.get(url("ada"), HTTP_AUTHORIZATION=f"Token {reader_token}")
    assert SECRET_TOKEN not in response.content.decode()
    assert "access_token" not in response.content.decode()


def test_calls_a_sync_kept_out_are_listed_with_why(client, sync, reader_token):
    # given: a sync that sends only orders, and Ada's call that is not one (through real ingest)
    from integrations.models import EventFilter
    from tests.streaming.delivery_setup import ingest, track

    EventFilter.objects.create(sync=sync, action=EventFilter.Action.INCLUDE, event_name="Order *")
    ingest(sync, [track("ada", "Order Completed"), track("ada", "Page Scrolled")])

    body = client.get(url("ada"), HTTP_AUTHORIZATION=f"Token {reader_token}").json()

    assert [d["event"]["name"] for d in body["results"]] == ["Order Completed"]
    (kept,) = body["kept_out"]
    assert kept["reason"] == "matches no include filter"
    assert kept["event"]["name"] == "Page Scrolled"
    assert kept["sync"] == {
        "id": sync.pk,
        "name": "app-to-intercom",
        "destination": "Main workspace",
    }
    assert (
        client.get(url("bob"), HTTP_AUTHORIZATION=f"Token {reader_token}").json()["kept_out"] == []
    )
