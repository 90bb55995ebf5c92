"""POST /webhooks/intercom/<source id>: what Intercom sees, what is stored, who is told."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from integrations.intercom.webhooks import notification_parse, signature_compute
from integrations.models import INTERCOM_EVENTS, EventFilter, Source
from integrations.selectors import routes_cache_clear
from streaming.ingest.filtered import filtered_counts
from streaming.ingest.intercom_webhook import intercom_notification_ingest
from streaming.models import Delivery, Event, Lane
from streaming.signals import intercom_activity
from tests.factories import SourceFactory, SyncFactory
from tests.streaming.delivery_setup import drain_all, sync_into

SECRET = "whs_PLAINTEXT_client_secret_1234"

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("fresh_cache"),
    # the source is an Intercom webhook, verified with the app's client secret
    pytest.mark.source_fields(
        name="intercom", kind=Source.Kind.INTERCOM_WEBHOOK, webhook_secret=SECRET
    ),
]
CREATED_AT = 1_717_171_717

CONVERSATION = {
    "type": "conversation",
    "id": "147",
    "state": "closed",
    "contacts": {
        "type": "contact.list",
        "contacts": [{"type": "contact", "id": "65c0ffee", "external_id": "u-42"}],
    },
    "conversation_parts": {
        "conversation_parts": [
            {"part_type": "close", "body": "<p>Bye</p>", "author": {"type": "admin", "id": "991"}}
        ]
    },
}
CONTACT = {
    "type": "contact",
    "id": "65c0ffee",
    "role": "user",
    "external_id": "u-42",
    "email": "ada@example.com",
}


@pytest.fixture
def activity():
    """The intercom_activity signals sent, as (source_id, topic, event_ids, committed)."""
    seen: list[tuple[int, str, list[int], bool]] = []

    def receiver(sender, source_id, notification, event_ids, **kwargs):
        committed = Event.objects.filter(id__in=event_ids).count() == len(event_ids)
        seen.append((source_id, notification.topic, event_ids, committed))

    intercom_activity.connect(receiver)
    yield seen
    intercom_activity.disconnect(receiver)


def notification(
    topic: str = "conversation.admin.closed", item: Any = None, **fields: Any
) -> bytes:
    return json.dumps(
        {
            "type": "notification_event",
            "app_id": "abc123",
            "id": "notif_1",
            "topic": topic,
            "created_at": CREATED_AT,
            "data": {"type": "notification_event_data", "item": item or CONVERSATION},
            **fields,
        }
    ).encode()


def url(source: Source) -> str:
    return reverse("intercom-webhook", kwargs={"source_id": source.pk})


def deliver(client: Client, source: Source, body: bytes, *, secret: str | None = SECRET, **extra):
    headers = (
        {"HTTP_X_HUB_SIGNATURE": signature_compute(body=body, secret=secret)} if secret else {}
    )
    return client.post(
        url(source), data=body, content_type="application/json", **{**headers, **extra}
    )


def stored_nothing() -> bool:
    return (
        not Event.objects.exists() and not Delivery.objects.exists() and not Lane.objects.exists()
    )


# --- accepted -------------------------------------------------------------------------------


def test_a_signed_notification_is_stored_as_an_intercom_event(client, source):
    response = deliver(client, source, notification())

    assert response.status_code == 200
    assert response.json() == {"success": True, "duplicate": False}
    event = Event.objects.get()
    assert (event.source, event.type, event.event_name) == (
        source,
        "track",
        "[Intercom] Conversation Closed",
    )
    assert (event.user_id, event.message_id) == ("u-42", "notif_1")
    assert event.timestamp == datetime.fromtimestamp(CREATED_AT, tz=UTC)
    assert event.payload["properties"]["conversation_id"] == "147"
    assert event.payload["context"]["intercom"]["topic"] == "conversation.admin.closed"


def test_intercoms_retry_of_a_notification_is_acknowledged_and_stored_once(client, source):
    first = deliver(client, source, notification())
    retry = deliver(client, source, notification())

    assert (first.status_code, retry.status_code) == (200, 200)
    assert retry.json() == {"success": True, "duplicate": True}
    assert Event.objects.count() == 1


def test_a_contact_notification_stores_an_identify_and_a_track(client, source):
    response = deliver(client, source, notification("contact.user.created", CONTACT))

    assert response.status_code == 200
    stored = list(Event.objects.order_by("id").values_list("type", "message_id", "user_id"))
    assert stored == [("identify", "notif_1:identify", "u-42"), ("track", "notif_1", "u-42")]


def test_ping_is_answered_without_storing_anything(client, source, activity):
    response = deliver(client, source, notification("ping", {"type": "ping", "message": "hi"}))

    assert response.status_code == 200
    assert response.json() == {"success": True, "ping": True}
    assert stored_nothing()
    assert activity == []


def test_intercom_can_check_the_url_with_a_head_request(client, source):
    assert client.head(url(source)).status_code == 200
    assert (
        client.head(reverse("intercom-webhook", kwargs={"source_id": 999_999})).status_code == 404
    )
    assert client.get(url(source)).status_code == 405


# --- refused: nothing stored --------------------------------------------------------------


def test_a_notification_without_a_signature_is_refused(client, source):
    response = deliver(client, source, notification(), secret=None)

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature"
    assert stored_nothing()


@pytest.mark.parametrize(
    "header",
    [
        "sha1=" + "0" * 40,
        "not-a-signature",
        signature_compute(body=notification(), secret="another app's secret"),
        # signed, then changed on the way
        signature_compute(body=notification(topic="conversation.admin.opened"), secret=SECRET),
    ],
    ids=["wrong MAC", "malformed", "wrong secret", "tampered body"],
)
def test_a_notification_with_a_bad_signature_is_refused(client, source, header):
    response = client.post(
        url(source),
        data=notification(),
        content_type="application/json",
        HTTP_X_HUB_SIGNATURE=header,
    )

    assert response.status_code == 401
    assert stored_nothing()


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        json.dumps({"type": "notification_event", "topic": "conversation.admin.closed"}).encode(),
        notification(type="something_else"),
        notification(id="x" * 300),
    ],
    ids=["not JSON", "no id nor item", "not a notification", "id too long"],
)
def test_a_signed_but_malformed_notification_is_a_400(client, source, body):
    response = deliver(client, source, body)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_notification"
    assert stored_nothing()


def test_an_id_too_long_for_ingest_is_a_400_with_nothing_stored(client, source):
    item = {**CONTACT, "external_id": "u" * 300}

    response = deliver(client, source, notification("contact.user.created", item))

    assert response.status_code == 400
    assert "userId" in response.json()["errors"]
    assert stored_nothing()


def test_an_unknown_source_or_an_http_source_is_a_404(client, source):
    http_source = SourceFactory(name="web")
    body = notification()
    signature = signature_compute(body=body, secret=SECRET)

    for path in (
        reverse("intercom-webhook", kwargs={"source_id": 999_999}),
        url(http_source),
    ):
        response = client.post(
            path, data=body, content_type="application/json", HTTP_X_HUB_SIGNATURE=signature
        )
        assert response.status_code == 404
    assert stored_nothing()


def test_a_disabled_source_refuses_signed_notifications(client, source):
    source.enabled = False
    source.save()

    response = deliver(client, source, notification())

    assert response.status_code == 403
    assert response.json()["code"] == "source_disabled"
    assert stored_nothing()


def test_the_secret_never_appears_in_answers_or_logs(client, source, caplog):
    caplog.set_level(logging.DEBUG)
    body = notification()
    responses = [
        deliver(client, source, body),
        deliver(client, source, body, secret=None),
        deliver(client, source, body, secret="wrong"),
        deliver(client, source, b"{not json"),
        deliver(client, source, notification("ping", {"type": "ping"})),
    ]

    signature = signature_compute(body=body, secret=SECRET)
    for response in responses:
        assert SECRET not in response.content.decode()
        assert signature.removeprefix("sha1=") not in response.content.decode()
    assert SECRET not in caplog.text
    assert signature.removeprefix("sha1=") not in caplog.text
    assert "missing or invalid X-Hub-Signature" in caplog.text  # the refusals are logged


# --- routed like any call -------------------------------------------------------------------


def test_by_default_a_sync_does_not_send_intercoms_activity_back_to_intercom(
    client, source, django_capture_on_commit_callbacks
):
    sync = SyncFactory(sources=[source])

    with django_capture_on_commit_callbacks(execute=True):  # filtered counts are kept on commit
        deliver(client, source, notification())

    assert Event.objects.count() == 1
    assert not Delivery.objects.exists()
    reason = f"excluded by: Exclude event {INTERCOM_EVENTS!r}"
    assert filtered_counts(sync_id=sync.pk, since=timezone.now()) == {reason: 1}


def test_without_the_loop_filter_the_event_reaches_the_syncs_destination(
    client, source, intercom_sandbox
):
    # given a sync into another workspace, whose operator lifted the "[Intercom] *" block
    sync = sync_into(intercom_sandbox, sources=[source])
    EventFilter.objects.filter(sync=sync, event_name=INTERCOM_EVENTS).delete()
    routes_cache_clear()

    # when Intercom notifies a close, and the contact's identify is stored with it
    deliver(client, source, notification())
    deliver(client, source, notification("contact.user.updated", CONTACT, id="notif_2"))
    drain_all(sync)

    # then both track calls went out, in order (the identify never does: it would loop)
    deliveries = Delivery.objects.order_by("id")
    assert [(d.event.type, d.status) for d in deliveries] == [("track", "succeeded")] * 2
    events = intercom_sandbox.state()["events"]
    assert [event["event_name"] for event in events] == [
        "[Intercom] Conversation Closed",
        "[Intercom] Contact Updated",
    ]
    assert Event.objects.filter(type="identify").count() == 1


# --- the signal --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_intercom_activity_is_sent_once_per_notification_after_commit(client, source, activity):
    deliver(client, source, notification())
    deliver(client, source, notification())  # Intercom's retry

    event_id = Event.objects.get().pk
    assert activity == [(source.pk, "conversation.admin.closed", [event_id], True)]


@pytest.mark.django_db(transaction=True)
def test_intercom_activity_waits_for_the_callers_commit(source, activity):
    parsed = notification_parse(notification("contact.user.created", CONTACT))

    with transaction.atomic():
        result = intercom_notification_ingest(
            source=source, notification=parsed, received_at=timezone.now()
        )
        assert activity == []  # not before the commit

    assert activity == [(source.pk, "contact.user.created", result.event_ids, True)]
    assert len(result.event_ids) == 2


@pytest.mark.django_db(transaction=True)
def test_a_failing_receiver_does_not_turn_an_accepted_notification_into_an_error(client, source):
    def receiver(**kwargs):
        raise RuntimeError("the host app's bug")

    intercom_activity.connect(receiver)
    try:
        response = deliver(client, source, notification())
    finally:
        intercom_activity.disconnect(receiver)

    assert response.status_code == 200
    assert Event.objects.count() == 1


# --- the admin ----------------------------------------------------------------------------


@pytest.fixture
def operator(client: Client, django_user_model: Any, settings: Any) -> Client:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    user = django_user_model.objects.create_superuser(username="operator", password=None)
    client.force_login(user)
    return client


def test_the_source_admin_shows_the_url_to_paste_into_intercom(operator, source):
    page = operator.get(reverse("admin:integrations_source_change", args=[source.pk]))
    html = page.content.decode()

    webhook_url = f"http://testserver{url(source)}"
    assert webhook_url in html
    assert SECRET not in html
    # the URL shown is the one that works
    body = notification()
    response = Client().post(
        webhook_url,
        data=body,
        content_type="application/json",
        HTTP_X_HUB_SIGNATURE=signature_compute(body=body, secret=SECRET),
    )
    assert response.status_code == 200


def test_an_http_source_has_no_webhook_url(operator):
    http_source = SourceFactory(name="web")

    html = operator.get(reverse("admin:integrations_source_change", args=[http_source.pk]))

    assert "/webhooks/intercom/" not in html.content.decode()
