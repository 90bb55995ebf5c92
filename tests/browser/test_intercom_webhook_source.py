"""An Intercom webhook source's page in Chromium: matching, dropped notifications, Connect."""

from __future__ import annotations

import pytest
from django.utils import timezone

from integrations.models import Source, WebhookMatchBy
from tests.factories import SourceFactory
from tests.fixtures.browser import artifacts_dir

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_webhook_source_says_how_it_matches_and_what_it_dropped(admin_browser, settings):
    settings.SWITCHBOARD_PUBLIC_URL = "https://switchboard.example"
    source = SourceFactory(
        name="intercom-activity",
        kind=Source.Kind.INTERCOM_WEBHOOK,
        webhook_secret="whs_browser_secret",
        webhook_match_by=WebhookMatchBy.EMAIL,
        dropped_notifications=3,
        last_dropped_at=timezone.now(),
        last_dropped_reason="the contact has neither an email nor a user id",
    )
    page = admin_browser.page

    admin_browser.goto(f"/admin/integrations/source/{source.pk}/change/")

    text = admin_browser.text()
    assert f"https://switchboard.example/webhooks/intercom/{source.pk}" in text
    assert "3 notifications dropped" in text
    assert "the contact has neither an email nor a user id" in text
    assert page.get_by_label("Match Intercom's people by").input_value() == "email"
    assert page.get_by_role("link", name="Connect to Intercom").is_visible()
    assert "whs_browser_secret" not in page.content()
    assert admin_browser.page_width() <= 1280
    artifacts_dir().mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(artifacts_dir() / "webhook-source.png"), full_page=True)

    # the operator changes the matching, and it is kept
    page.get_by_label("Match Intercom's people by").select_option("user_id")
    admin_browser.follow(page.get_by_role("button", name="Save and continue editing"))
    source.refresh_from_db()
    assert source.webhook_match_by == WebhookMatchBy.USER_ID
    assert source.webhook_secret == "whs_browser_secret"
