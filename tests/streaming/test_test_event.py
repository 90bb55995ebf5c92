"""Send test event: one call through a sync, now, against the Intercom sandbox, shown and logged."""

from __future__ import annotations

import re
from html import unescape

import pytest
from django.urls import reverse

from integrations.models import Destination
from streaming.models import Delivery, DeliveryAttempt, Event
from tests.factories import DestinationFactory
from tests.streaming.audit_rows import staff_make

pytestmark = pytest.mark.django_db

TEST_EVENT = "admin:streaming_test_event"


@pytest.fixture
def destination(intercom_sandbox) -> Destination:
    """The `sync` fixture's workspace is the sandbox: test events really go out."""
    return DestinationFactory(base_url=intercom_sandbox.url, access_token=intercom_sandbox.token)


def page_text(response) -> str:
    """The page as a reader sees it: tags removed, entities decoded."""
    return unescape(re.sub(r"<[^>]+>", "", response.content.decode()))


def send(client, sync, **fields):
    data = {
        "sync": sync.pk,
        "call_type": "identify",
        "user_id": "ada",
        "event_name": "",
        "properties": "{}",
        "traits": "{}",
        **fields,
    }
    return client.post(reverse(TEST_EVENT), data)


def test_an_identify_reaches_intercom_and_every_exchange_is_shown(
    admin_client, sync, intercom_sandbox
):
    response = send(
        admin_client, sync, traits='{"name": "Ada Lovelace", "email": "ada@example.com"}'
    )

    html = page_text(response)
    assert response.status_code == 200
    assert "Result: Succeeded" in html
    (contact,) = intercom_sandbox.state()["contacts"]
    assert contact["external_id"] == "ada"
    assert contact["name"] == "Ada Lovelace"
    # each request the sandbox received is on the page, with its answer
    for request in intercom_sandbox.requests:
        assert f"{request['method']} {intercom_sandbox.url}{request['path']}" in html
    assert '"name": "Ada Lovelace"' in html  # the request body, indented
    assert contact["id"] in html  # Intercom's answer
    raw = response.content.decode()
    assert intercom_sandbox.token not in raw
    assert "Bearer" not in raw


def test_a_test_is_logged_as_a_marked_event_and_never_queued(admin_client, sync, intercom_sandbox):
    send(
        admin_client,
        sync,
        call_type="track",
        event_name="Test Clicked",
        properties='{"plan": "pro"}',
    )

    event = Event.objects.get()
    assert event.message_id.startswith("sb-test-")
    assert event.payload["context"]["switchboard"] == {"test": True, "sent_by": "admin"}
    delivery = Delivery.objects.get()
    assert delivery.status == "succeeded"
    assert delivery.reason.startswith("Test event.")
    assert delivery.completed_at is not None
    assert not Delivery.objects.filter(status="pending").exists()
    attempts = list(delivery.attempt_log.order_by("id"))
    assert [(a.method, a.url.removeprefix(intercom_sandbox.url)) for a in attempts] == [
        (r["method"], r["path"] + (f"?{r['query']}" if r["query"] else ""))
        for r in intercom_sandbox.requests
    ]
    assert attempts[-1].category == DeliveryAttempt.Category.SUCCESS
    assert [e["event_name"] for e in intercom_sandbox.state()["events"]] == ["Test Clicked"]

    # the timeline shows it, marked as a test
    timeline = admin_client.get(reverse("admin:streaming_timeline"), {"q": "ada"})
    assert 'class="sb-test">test<' in timeline.content.decode()


def test_a_refused_token_is_shown_and_holds_the_destination_like_a_worker_would(
    admin_client, sync, intercom_sandbox
):
    Destination.objects.filter(pk=sync.destination_id).update(access_token="revoked-token-value")
    sync.refresh_from_db()

    response = send(admin_client, sync)

    html = page_text(response)
    assert "Result: Failed" in html
    assert "401" in html and "unauthorized" in html
    assert "revoked-token-value" not in html
    assert Delivery.objects.get().status == "failed"
    assert Destination.objects.get(pk=sync.destination_id).auth_failed_at is not None


def test_a_call_that_would_be_skipped_says_why_without_a_request(
    admin_client, sync, intercom_sandbox
):
    sync.send_events = False
    sync.save()

    response = send(admin_client, sync, call_type="track", event_name="Ignored")

    html = page_text(response)
    assert "Result: Skipped" in html
    assert "does not send events" in html
    assert intercom_sandbox.requests == []
    assert Delivery.objects.get().status == "skipped"


def test_an_invalid_form_sends_nothing(admin_client, sync, intercom_sandbox):
    response = send(admin_client, sync, call_type="track", event_name="", properties="[1, 2]")
    assert response.status_code == 200
    assert response.context["form"].errors
    assert intercom_sandbox.requests == []
    assert not Event.objects.exists()


def test_the_form_opens_with_the_sync_chosen(admin_client, sync):
    response = admin_client.get(reverse(TEST_EVENT), {"sync": sync.pk})
    assert response.context["form"].initial["sync"] == str(sync.pk)


def test_a_viewer_cannot_send_test_events(client, sync, intercom_sandbox):
    client.force_login(staff_make(username="support", perms=("streaming.view_delivery",)))
    assert send(client, sync).status_code == 403
    assert intercom_sandbox.requests == []


def test_the_lists_tell_test_events_from_live_calls(admin_client, sync, intercom_sandbox):
    from tests.streaming.audit_rows import delivery_make, event_make

    live = delivery_make(event=event_make(source=sync.sources.get(), user_id="bob"), sync=sync)
    send(admin_client, sync)
    test = Delivery.objects.exclude(pk=live.pk).get()

    def listed(**params):
        response = admin_client.get(reverse("admin:streaming_delivery_changelist"), params)
        return {d.pk for d in response.context["cl"].result_list}

    assert listed(origin="test") == {test.pk}
    assert listed(origin="live") == {live.pk}
    events = admin_client.get(reverse("admin:streaming_event_changelist"), {"origin": "test"})
    assert [e.pk for e in events.context["cl"].result_list] == [test.event_id]
    assert (
        "(test)"
        in admin_client.get(reverse("admin:streaming_delivery_changelist")).content.decode()
    )
