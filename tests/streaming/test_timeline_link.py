"""The link back from Intercom: a sync sets a contact attribute to the person's timeline URL in
Switchboard with each identify, the attribute created in Intercom first like any other."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from integrations.models import Sync
from streaming.models import Delivery
from tests.streaming.delivery_setup import drain_all, identify, ingest, statuses, sync_into

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_cache")]

PUBLIC = "https://switchboard.example"


def test_an_identify_sets_the_timeline_link_on_the_contact(intercom_sandbox, settings):
    settings.SWITCHBOARD_PUBLIC_URL = PUBLIC
    sync = sync_into(intercom_sandbox, timeline_link_attribute="switchboard_timeline")

    deliveries = ingest(sync, [identify("u 42/a")])
    drain_all(sync)

    assert statuses(deliveries) == [Delivery.Status.SUCCEEDED]
    (contact,) = intercom_sandbox.state()["contacts"]
    timeline = reverse("admin:streaming_timeline")  # the page an agent lands on
    assert contact["custom_attributes"]["switchboard_timeline"] == (
        f"{PUBLIC}{timeline}?q=u%2042%2Fa"
    )
    # created in Intercom like any unknown custom attribute, before the contact was written
    paths = [(r["method"], r["path"]) for r in intercom_sandbox.requests]
    assert paths.index(("POST", "/data_attributes")) < paths.index(("POST", "/contacts"))
    created = [r["body"] for r in intercom_sandbox.requests if r["path"] == "/data_attributes"]
    assert {"name": "switchboard_timeline", "model": "contact", "data_type": "string"} in [
        {k: body[k] for k in ("name", "model", "data_type")} for body in created if body
    ]


def test_without_the_option_no_link_is_sent(intercom_sandbox, settings):
    settings.SWITCHBOARD_PUBLIC_URL = PUBLIC
    sync = sync_into(intercom_sandbox)

    ingest(sync, [identify("u-7")])
    drain_all(sync)

    (contact,) = intercom_sandbox.state()["contacts"]
    assert "switchboard_timeline" not in (contact.get("custom_attributes") or {})


def test_the_option_needs_a_public_url_and_a_valid_name(settings, intercom_sandbox):
    sync = sync_into(intercom_sandbox)
    settings.SWITCHBOARD_PUBLIC_URL = ""
    sync.timeline_link_attribute = "switchboard_timeline"
    with pytest.raises(ValidationError, match="Set SWITCHBOARD_PUBLIC_URL first"):
        sync.full_clean()

    settings.SWITCHBOARD_PUBLIC_URL = PUBLIC
    sync.timeline_link_attribute = "timeline link"
    with pytest.raises(ValidationError, match="no spaces"):
        sync.full_clean()
    sync.timeline_link_attribute = "switchboard_timeline"
    sync.full_clean()
    assert isinstance(sync, Sync)
