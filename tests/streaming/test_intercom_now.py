"""Intercom now: the contact as Intercom holds it now, beside what Switchboard last sent, read
from the sandbox over HTTP with one GET that is logged like any call."""

from __future__ import annotations

import re
from html import unescape

import pytest
import requests
from django.urls import reverse

from streaming.delivery.intercom_now import LOOKUP_MESSAGE_PREFIX
from streaming.models import ContactLink, Delivery, DeliveryAttempt, Event
from tests.streaming.delivery_setup import drain_all, identify, ingest, sync_into

pytestmark = pytest.mark.django_db

PAGE = "admin:streaming_intercom_now"


def operator_headers(sandbox) -> dict[str, str]:
    """Someone changing the contact in Intercom directly, as Intercom's API asks."""
    return {
        "Authorization": f"Bearer {sandbox.token}",
        "Accept": "application/json",
        "Intercom-Version": "2.16",
    }


def test_intercom_now_shows_what_intercom_holds_beside_what_was_sent(
    admin_client, intercom_sandbox
):
    # given: Ada identified and sent; then someone renamed her in Intercom
    sync = sync_into(intercom_sandbox, name="main")
    (delivery,) = ingest(sync, [identify("ada", name="Ada Lovelace")])
    drain_all(sync)
    link = ContactLink.objects.get(user_key="ada")
    renamed = requests.put(
        f"{intercom_sandbox.url}/contacts/{link.contact_id}",
        json={"name": "Countess of Lovelace"},
        headers=operator_headers(intercom_sandbox),
        timeout=5,
    )
    assert renamed.status_code == 200
    before = len(intercom_sandbox.requests)

    # when: the operator asks Intercom now
    url = reverse(PAGE)
    assert admin_client.get(url, {"delivery": delivery.pk}).status_code == 200
    assert len(intercom_sandbox.requests) == before  # the page asks before it reads
    response = admin_client.post(url, {"delivery": delivery.pk})

    # then: one GET of the contact, logged as an attempt of a lookup in Ada's trail
    html = unescape(response.content.decode())
    (sent,) = intercom_sandbox.requests[before:]
    assert (sent["method"], sent["path"]) == ("GET", f"/contacts/{link.contact_id}")
    lookup = Event.objects.get(message_id__startswith=LOOKUP_MESSAGE_PREFIX)
    assert (lookup.type, lookup.user_id) == ("lookup", "ada")
    (attempt,) = DeliveryAttempt.objects.filter(event=lookup)
    assert (attempt.method, attempt.status_code) == ("GET", 200)
    assert Delivery.objects.get(event=lookup).status == "skipped"
    # the name differs and is highlighted; the email agrees
    row = re.search(r'<tr class="sb-row-differs"><td>name</td>(.*?)</tr>', html).group(1)
    assert "Ada Lovelace" in row and "Countess of Lovelace" in row and "sb-differs" in row
    assert re.search(r"<tr class=\"\"><td>email</td><td>ada@example.com</td>", html)
    assert intercom_sandbox.token not in html


def test_a_contact_gone_from_intercom_is_said_so(admin_client, intercom_sandbox):
    sync = sync_into(intercom_sandbox, name="main")
    (delivery,) = ingest(sync, [identify("bob")])
    drain_all(sync)
    link = ContactLink.objects.get(user_key="bob")
    requests.delete(
        f"{intercom_sandbox.url}/contacts/{link.contact_id}",
        headers=operator_headers(intercom_sandbox),
        timeout=5,
    )
    html = admin_client.post(reverse(PAGE), {"delivery": delivery.pk}).content.decode()
    assert "Intercom has no such contact now (404)" in unescape(html)


def test_a_viewer_without_the_operate_permission_cannot_ask(client, intercom_sandbox):
    from tests.streaming.audit_rows import staff_make

    sync = sync_into(intercom_sandbox, name="main")
    (delivery,) = ingest(sync, [identify("cy")])
    client.force_login(staff_make(username="viewer", perms=("streaming.view_delivery",)))
    assert client.post(reverse(PAGE), {"delivery": delivery.pk}).status_code == 403
    assert not Event.objects.filter(type="lookup").exists()
