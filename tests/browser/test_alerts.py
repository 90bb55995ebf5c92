"""Alerts in Chromium: an operator configures a rule for a sync, sends a test alert, and
receives it on a webhook server on loopback; the condition becomes true (the destination's
token refused), beat's evaluation raises the alert, it is received and logged; the token works
again, and the "resolved" message follows. No page wider than 1,280 px."""

from __future__ import annotations

import pytest
from django.utils import timezone

from integrations.models import Destination
from streaming.audit.alerts import alerts_evaluate
from streaming.models import Alert, AlertRule
from tests.factories import SourceFactory, SyncFactory
from tests.streaming.test_alerts import SECRET_PATH, Hook

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def hook():
    server = Hook()
    yield server
    server.close()


def test_an_operator_configures_an_alert_and_receives_it_then_its_resolution(admin_browser, hook):
    sync = SyncFactory(name="orders", sources=[SourceFactory()])
    page = admin_browser.page
    admin_browser.goto("/admin/")
    admin_browser.follow(page.get_by_role("link", name="Alert rules"))
    admin_browser.follow(page.locator('a[href$="/alertrule/add/"]').last)
    page.get_by_label("Sync").select_option(label=str(sync))
    page.get_by_label("Failure rate percent").fill("20")
    page.get_by_label("Backlog minutes").fill("30")
    page.get_by_label("Email to").fill("ops@example.com")
    page.get_by_label("Webhook url").fill(hook.url)
    assert admin_browser.page_width() <= 1280
    admin_browser.follow(page.get_by_role("button", name="Save and continue editing"))
    # saved: the webhook is stored, and never shown again (write-only, like a token)
    assert page.get_by_label("Webhook url").input_value() == ""
    admin_browser.follow(page.get_by_role("button", name="Save and send a test alert"))

    assert "Test alert for orders" in admin_browser.text()
    assert "HTTP 200" in admin_browser.text()
    assert "sent by operator" in hook.texts()[0]
    rule = AlertRule.objects.get()
    assert rule.webhook_url == hook.url and rule.token_refused
    assert SECRET_PATH not in page.content()

    Destination.objects.filter(pk=sync.destination_id).update(auth_failed_at=timezone.now())
    alerts_evaluate()  # what Celery beat runs every SWITCHBOARD_ALERTS_SECONDS
    assert "Token refused: orders" in hook.texts()[-1]
    admin_browser.goto("/admin/")
    admin_browser.follow(page.locator('a[href$="/admin/streaming/alert/"]').first)
    row = page.locator("#result_list tbody tr", has_text="Token refused")
    assert "open" in row.inner_text()
    assert admin_browser.page_width() <= 1280

    Destination.objects.filter(pk=sync.destination_id).update(auth_failed_at=None)
    alerts_evaluate()
    assert hook.texts()[-1].startswith("*[Switchboard] Resolved: Token refused: orders*")
    page.reload()
    assert (
        "resolved" in page.locator("#result_list tbody tr", has_text="Token refused").inner_text()
    )
    assert Alert.objects.filter(kind="token_refused", resolved_at__isnull=False).count() == 1
    assert admin_browser.errors == []
