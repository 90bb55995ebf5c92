"""Intercom webhooks matched the way the source says: Intercom's user id, or email falling back
to the user id; a notification naming neither is dropped, counted with its reason, and shown on
the source's page and its syncs' health. Signed notifications over real HTTP (a live server)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from integrations.intercom.webhooks import signature_compute
from integrations.models import Source, WebhookMatchBy
from streaming.ingest.filtered import filtered_counts
from streaming.models import Event
from tests.factories import SourceFactory, SyncFactory

SECRET = "whs_matching_client_secret_77"

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_cache")]


def contact(**fields: Any) -> dict[str, Any]:
    return {"type": "contact", "id": "65c0ffee", "role": "user", **fields}


def notification(item: dict[str, Any], *, topic: str = "contact.user.tag.created", id: str = "n1"):
    return json.dumps(
        {
            "type": "notification_event",
            "app_id": "abc123",
            "id": id,
            "topic": topic,
            "created_at": 1_717_171_717,
            "data": {"type": "notification_event_data", "item": item},
        }
    ).encode()


def post(base_url: str, source: Source, body: bytes) -> requests.Response:
    return requests.post(
        base_url + reverse("intercom-webhook", kwargs={"source_id": source.pk}),
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-Hub-Signature": signature_compute(body=body, secret=SECRET),
        },
        timeout=10,
    )


def webhook_source(match_by: str) -> Source:
    return SourceFactory(
        name=f"intercom-{match_by}",
        kind=Source.Kind.INTERCOM_WEBHOOK,
        webhook_secret=SECRET,
        webhook_match_by=match_by,
    )


@pytest.mark.parametrize(
    ("match_by", "item", "user_id"),
    [
        (
            WebhookMatchBy.EMAIL,
            contact(email="ada@example.com", external_id="u-42"),
            "ada@example.com",
        ),
        (WebhookMatchBy.EMAIL, contact(external_id="u-42"), "u-42"),  # no email: the user id
        (WebhookMatchBy.USER_ID, contact(email="ada@example.com", external_id="u-42"), "u-42"),
        (
            WebhookMatchBy.EMAIL,
            {"type": "event", "event_name": "paid", "user_id": "u-7", "email": "bo@example.com"},
            "bo@example.com",
        ),
        (
            WebhookMatchBy.USER_ID,
            {
                "type": "conversation",
                "id": "1",
                "contacts": {"contacts": [contact(external_id="u-9")]},
            },
            "u-9",
        ),
    ],
)
def test_the_source_chooses_who_the_user_is(live_switchboard, match_by, item, user_id):
    source = webhook_source(match_by)

    response = post(live_switchboard, source, notification(item))

    assert response.status_code == 200
    assert response.json() == {"success": True, "duplicate": False}
    users = set(Event.objects.filter(source=source).values_list("user_id", flat=True))
    assert users == {user_id}


@pytest.mark.parametrize(
    ("match_by", "item", "reason"),
    [
        (WebhookMatchBy.EMAIL, contact(), "the contact has neither an email nor a user id"),
        (
            WebhookMatchBy.USER_ID,
            contact(email="ada@example.com"),
            "the contact has no user id (external_id)",
        ),
        (
            WebhookMatchBy.EMAIL,
            {"type": "company", "id": "c1", "name": "Acme"},
            "it is about no contact (a company item)",
        ),
    ],
)
def test_a_notification_naming_no_one_is_dropped_counted_and_shown(
    live_switchboard, match_by, item, reason, settings, django_user_model
):
    source = webhook_source(match_by)
    sync = SyncFactory(sources=[source])

    first = post(live_switchboard, source, notification(item, id="n1"))
    second = post(live_switchboard, source, notification(item, id="n2"))

    # Intercom is told it arrived (a retry could not do better), and nothing is stored
    assert (first.status_code, first.json()) == (200, {"success": True, "dropped": reason})
    assert second.status_code == 200
    assert not Event.objects.filter(source=source).exists()
    source.refresh_from_db()
    assert (source.dropped_notifications, source.last_dropped_reason) == (2, reason)
    assert source.last_dropped_at is not None
    # the sync's health counts it with the reason
    since = timezone.now() - timezone.timedelta(hours=1)
    assert filtered_counts(sync_id=sync.pk, since=since) == {
        f"Intercom notification dropped: {reason}": 2
    }
    # and the source's page says so
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    operator = Client()
    operator.force_login(django_user_model.objects.create_superuser("operator", password=None))
    html = operator.get(reverse("admin:integrations_source_change", args=[source.pk])).content
    assert "2 notifications dropped" in html.decode()
    assert reason in html.decode()


def test_by_default_a_contact_without_user_id_is_kept_under_its_intercom_id(live_switchboard):
    source = webhook_source(WebhookMatchBy.USER_ID_OR_CONTACT)

    response = post(live_switchboard, source, notification(contact(email="ada@example.com")))

    assert response.json() == {"success": True, "duplicate": False}
    assert set(Event.objects.values_list("user_id", "anonymous_id")) == {("", "65c0ffee")}
    source.refresh_from_db()
    assert source.dropped_notifications == 0
