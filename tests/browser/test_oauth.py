"""Connect to Intercom in Chromium: the operator clicks Connect, authorises (or denies) on the
sandbox's Intercom page, and comes back to the destination's page."""

from __future__ import annotations

import re

import pytest

from integrations.models import Destination
from tests.factories import DestinationFactory
from tests.fixtures.browser import artifacts_dir

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def oauth_app(settings):
    settings.SWITCHBOARD_INTERCOM_CLIENT_ID = "sandbox-client-id"
    settings.SWITCHBOARD_INTERCOM_CLIENT_SECRET = "sandbox-client-secret"


def test_an_operator_connects_a_destination_with_oauth(admin_browser, intercom_sandbox, oauth_app):
    destination = DestinationFactory(
        name="production", base_url=intercom_sandbox.url, access_token=""
    )
    page = admin_browser.page
    admin_browser.goto(f"/admin/integrations/destination/{destination.pk}/change/")
    assert (
        "Not connected: nothing is sent until you use Connect to Intercom" in admin_browser.text()
    )

    admin_browser.follow(page.get_by_role("button", name="Connect to Intercom"))
    assert page.url.startswith(intercom_sandbox.url + "/oauth?")
    assert "Authorise Switchboard?" in admin_browser.text()
    admin_browser.follow(page.get_by_role("button", name="Authorise"))

    page.wait_for_url(re.compile(rf"/admin/integrations/destination/{destination.pk}/change/$"))
    text = admin_browser.text()
    assert "Connected to Intercom workspace “Switchboard Sandbox”" in text
    assert "Connected to workspace “Switchboard Sandbox” with Connect to Intercom at" in text
    assert intercom_sandbox.token not in page.content()
    assert admin_browser.page_width() <= 1280
    destination.refresh_from_db()
    assert destination.access_token == intercom_sandbox.token
    assert destination.auth_failed_at is None
    artifacts_dir().mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(artifacts_dir() / "oauth-connected.png"), full_page=True)

    # Disconnect forgets it
    admin_browser.follow(page.get_by_role("button", name="Disconnect"))
    assert "Disconnected: the token of “production” is forgotten." in admin_browser.text()
    assert Destination.objects.get(pk=destination.pk).access_token == ""


def test_an_operator_who_denies_comes_back_to_a_clear_message(
    admin_browser, intercom_sandbox, oauth_app
):
    destination = DestinationFactory(base_url=intercom_sandbox.url, access_token="pasted-token")
    page = admin_browser.page
    admin_browser.goto(f"/admin/integrations/destination/{destination.pk}/change/")

    admin_browser.follow(page.get_by_role("button", name="Connect to Intercom"))
    admin_browser.follow(page.get_by_role("button", name="Deny"))

    page.wait_for_url(re.compile(rf"/admin/integrations/destination/{destination.pk}/change/$"))
    assert "Intercom says the app was not authorised" in admin_browser.text()
    destination.refresh_from_db()
    assert destination.access_token == "pasted-token"
