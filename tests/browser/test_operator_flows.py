"""The README's tour, clicked through in Chromium as an operator would, against a live server.

Each test starts from a page an operator would be on, uses only what the page shows (labels,
buttons, links), and checks what the operator would see, then what was stored.
"""

from __future__ import annotations

import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from integrations.models import Destination, EventFilter, PropertyMapping, Source, Sync, WriteKey
from integrations.services import write_key_authenticate
from streaming.delivery.lanes import lane_drain
from streaming.models import Delivery
from tests.factories import DestinationFactory, PropertyMappingFactory, SourceFactory
from tests.fixtures.browser import ADMIN_PASSWORD
from tests.streaming.delivery_setup import identify, ingest, sync_into, track, wait_settled

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_operator_logs_in_and_lands_on_the_console(browser_context, live_switchboard, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("ada", "ada@example.com", ADMIN_PASSWORD)
    page = browser_context.new_page()

    page.goto(live_switchboard + "/")  # the root leads to the admin, which asks for a login
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()

    page.wait_for_url(re.compile(r"/admin/$"))
    landing = page.locator("#sb-console")
    assert landing.get_by_role("link", name="Open sync health").is_visible()
    assert landing.get_by_role("link", name="Send a test event").is_visible()
    assert landing.get_by_placeholder("User id or email").is_visible()
    assert page.get_by_role("link", name="View site").count() == 0  # there is no public site
    # the theme's stylesheet arrived (a WhiteNoise or finder 404 would leave the page bare)
    assert page.evaluate("getComputedStyle(document.body).fontFamily").startswith("Inter")


def test_a_new_destination_has_its_token_checked_when_saved(admin_browser, intercom_sandbox):
    page = admin_browser.page
    admin_browser.goto("/admin/integrations/destination/add/")
    page.get_by_label("Name").fill("production")
    page.get_by_label("Region").select_option(label="Custom base URL (sandbox, proxy)")
    # a malformed URL gets one message, about the URL typed
    page.get_by_label("Base URL").fill("http//127.0.0.1")
    page.get_by_label("Access token").fill("a-wrong-token")
    admin_browser.follow(page.get_by_role("button", name="Save", exact=True))
    errors = page.locator(".errorlist li").all_inner_texts()
    assert errors == ["Enter an http:// or https:// URL, e.g. http://127.0.0.1:8765."]
    assert not Destination.objects.exists()

    # a wrong token is saved, and the operator is told Intercom refused it
    page.get_by_label("Base URL").fill(intercom_sandbox.url)
    page.get_by_label("Access token").fill("a-wrong-token")
    admin_browser.follow(page.get_by_role("button", name="Save and continue editing"))
    text = admin_browser.text()
    assert (
        "Saved, but Intercom refused this token (HTTP 401: unauthorized: Access Token Invalid)"
        in text
    )
    assert "Nothing is sent to this workspace until a token that works is saved" in text
    destination = Destination.objects.get(name="production")
    assert destination.auth_failed_at is not None

    # the right token: Intercom says whose it is
    page.get_by_label("Access token").fill(intercom_sandbox.token)
    admin_browser.follow(page.get_by_role("button", name="Save and continue editing"))
    assert (
        "Intercom accepted the token: it belongs to admin Sandbox Operator" in admin_browser.text()
    )
    destination.refresh_from_db()
    assert destination.auth_failed_at is None
    assert destination.workspace_name == "Switchboard Sandbox"
    assert [r["path"] for r in intercom_sandbox.requests] == ["/me", "/me"]


def test_a_write_key_is_issued_shown_once_copied_and_revoked(admin_browser):
    source = SourceFactory(name="web-app")
    page = admin_browser.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    admin_browser.goto(f"/admin/integrations/source/{source.pk}/change/")
    # an HTTP source shows write keys, not the webhook secret
    assert not page.get_by_label("Webhook secret", exact=True).is_visible()
    assert "Used by No sync sends this source's calls anywhere yet." in admin_browser.text()

    admin_browser.follow(page.get_by_role("link", name="Issue a new write key"))
    page.get_by_label("Label").fill("web app (production)")
    admin_browser.follow(page.get_by_role("button", name="Issue the key"))

    key_text = page.locator("code.write-key").inner_text()
    assert write_key_authenticate(key=key_text).source == source
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == key_text

    # a reload shows the key no more, and issues none
    page.reload()
    assert "already shown" in admin_browser.text()
    assert key_text not in page.content()
    assert WriteKey.objects.filter(source=source).count() == 1

    # back to the source, and revoke it there
    admin_browser.follow(page.get_by_role("link", name="Back to web-app"))
    page.locator("input[name='write_keys-0-revoke']").check()
    admin_browser.follow(page.get_by_role("button", name="Save", exact=True))
    assert "was changed successfully" in admin_browser.text()
    assert write_key_authenticate(key=key_text) is None
    assert WriteKey.objects.get(source=source).revoked_at is not None


def test_a_webhook_source_shows_its_secret_and_no_write_keys(admin_browser):
    source = SourceFactory(name="intercom-activity", kind="intercom_webhook", webhook_secret="s")
    page = admin_browser.page
    admin_browser.goto(f"/admin/integrations/source/{source.pk}/change/")
    assert page.get_by_label("Webhook secret", exact=True).is_visible()
    assert page.get_by_role("link", name="Issue a new write key").count() == 0
    assert page.locator("input[name='write_keys-TOTAL_FORMS']").count() == 0  # no keys part
    assert admin_browser.url(f"/webhooks/intercom/{source.pk}") in admin_browser.text()


def test_a_sync_is_created_with_a_filter_and_a_mapping(admin_browser):
    SourceFactory(name="web-app")
    DestinationFactory(name="main-workspace")
    page = admin_browser.page
    admin_browser.goto("/admin/integrations/sync/add/")
    page.get_by_label("Name").fill("orders")
    page.get_by_label("web-app").check()
    page.get_by_label("Destination").select_option(label="main-workspace")
    page.get_by_role("link", name="Add another Event filter").click()
    page.locator("[name='filters-0-action']").select_option("include")
    page.locator("[name='filters-0-event_name']").fill("Order *")
    page.get_by_role("link", name="Add another Property mapping").click()
    page.locator("[name='mappings-0-target']").select_option("event_metadata")
    page.locator("[name='mappings-0-source_path']").fill("properties.total")
    page.locator("[name='mappings-0-intercom_name']").fill("total")
    admin_browser.follow(page.get_by_role("button", name="Save", exact=True))

    assert "was added successfully" in admin_browser.text()
    sync = Sync.objects.get(name="orders")
    assert [s.name for s in sync.sources.all()] == ["web-app"]
    filters = {(f.action, f.event_name) for f in sync.filters.all()}
    assert (EventFilter.Action.INCLUDE, "Order *") in filters
    assert list(sync.mappings.values_list("target", "source_path", "intercom_name")) == [
        (PropertyMapping.Target.EVENT_METADATA, "properties.total", "total")
    ]


def test_a_test_event_says_which_properties_were_not_sent(admin_browser, intercom_sandbox):
    sync = sync_into(intercom_sandbox, name="orders", sources=[SourceFactory()])
    PropertyMappingFactory(
        sync=sync, target="event_metadata", source_path="properties.plan", intercom_name="plan"
    )
    page = admin_browser.page
    admin_browser.goto(f"/admin/integrations/sync/{sync.pk}/change/")
    admin_browser.follow(
        page.get_by_role("link", name=re.compile(r"Test event$"))
    )  # its icon names it too

    page.get_by_label("Call type").select_option("track")
    page.get_by_label("User id").fill("ada")
    page.get_by_label("Event name").fill("Plan Chosen")
    page.get_by_label("Properties").fill('{"plan": "pro", "colour": "teal"}')
    admin_browser.follow(page.get_by_role("button", name="Send test event"))

    text = admin_browser.text()
    assert "Result: Succeeded" in text
    not_sent = page.locator("#sb-not-sent li").all_inner_texts()
    assert len(not_sent) == 1 and not_sent[0].startswith("properties.colour: not mapped")
    (event,) = intercom_sandbox.state()["events"]
    assert event["metadata"] == {"plan": "pro"}


def test_a_users_timeline_is_found_from_the_landing_page(
    admin_browser, intercom_sandbox, celery_worker_process
):
    # given: a sync that sends orders only, and a real worker delivering
    sync = sync_into(intercom_sandbox, name="app-to-intercom", sources=[SourceFactory()])
    EventFilter.objects.create(sync=sync, action=EventFilter.Action.INCLUDE, event_name="Order *")
    celery_worker_process.start(1)
    ingest(sync, [track("u-42", "Order Completed"), track("u-42", "Page Scrolled")])
    ingest(sync, [track("someone-else", "Order Completed")])
    wait_settled(sync, celery_worker_process)
    page = admin_browser.page
    admin_browser.goto("/admin/")

    page.get_by_placeholder("User id or email").fill("u-42")
    admin_browser.follow(page.get_by_role("button", name="Find"))

    # then: one card per call, newest first; the kept-out one says why
    page.wait_for_url(re.compile(r"/timeline/\?q=u-42"))
    cards = page.locator("#sb-timeline article")
    assert cards.count() == 2
    assert "Not sent to app-to-intercom: matches no include filter" in cards.nth(0).inner_text()
    order = cards.nth(1)
    assert "Succeeded" in order.inner_text()
    # the contact did not exist: one try, its path named, nothing shown as a failure
    assert order.locator(".sb-try").count() == 1
    path = order.locator(".sb-try-path").inner_text()
    assert path.startswith("contact did not exist → ")
    assert path.endswith("→ contact created → event resent")
    assert order.locator(".sb-try .sb-status-failed").count() == 0
    # bodies are collapsed until asked for
    request_body = order.locator(".sb-exchange-line pre").first
    assert not request_body.is_visible()
    order.locator(".sb-exchange-line summary").first.click()
    assert '"event_name": "Order Completed"' in request_body.inner_text()
    assert "someone-else" not in page.locator("#sb-timeline").inner_text()

    # filter: only what was kept out
    page.get_by_label("Outcome").select_option(label="Kept out")
    admin_browser.follow(page.get_by_role("button", name="Show timeline"))
    assert page.locator("#sb-timeline article").count() == 1
    assert "Page Scrolled" in page.locator("#sb-timeline").inner_text()

    # the start page offers the latest users
    admin_browser.goto("/admin/streaming/delivery/timeline/")
    admin_browser.follow(page.locator("#sb-recent-users").get_by_role("link", name="u-42"))
    assert page.locator("#sb-timeline article").count() == 2


def test_intercom_now_compares_the_contact_with_what_was_sent(
    admin_browser, intercom_sandbox, celery_worker_process
):
    sync = sync_into(intercom_sandbox, name="app-to-intercom", sources=[SourceFactory()])
    celery_worker_process.start(1)
    ingest(sync, [identify("u-7", name="Ada")])
    wait_settled(sync, celery_worker_process)
    page = admin_browser.page
    admin_browser.goto("/admin/streaming/delivery/timeline/?q=u-7")

    admin_browser.follow(page.get_by_role("link", name="Intercom now"))
    admin_browser.follow(page.get_by_role("button", name="Ask Intercom now"))

    answer = page.locator("#sb-intercom-now")
    assert "200" in answer.inner_text() and "GET" in answer.inner_text()
    row = answer.locator("tr", has_text="email")
    assert "u-7@example.com" in row.inner_text()
    assert answer.locator("td.sb-differs").count() == 0  # Intercom holds what we sent
    assert admin_browser.page_width() <= 1280


def test_a_failed_delivery_is_replayed_from_the_list(
    admin_browser, intercom_sandbox, celery_worker_process
):
    sync = sync_into(intercom_sandbox, name="app-to-intercom", sources=[SourceFactory()])
    intercom_sandbox.configure(force_status=400, force_count=1, force_path="/events")
    celery_worker_process.start(1)
    (failed,) = ingest(sync, [track("ada", "Paid")])
    wait_settled(sync, celery_worker_process)
    failed.refresh_from_db()
    assert failed.status == "failed"
    page = admin_browser.page
    admin_browser.goto("/admin/streaming/delivery/?status__exact=failed")

    # the reason is readable in the list, at 1,280 px, without scrolling sideways
    reason = page.locator("td.field-reason_short").first
    box = reason.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1280
    assert "Forced by the sandbox" in reason.inner_text()

    page.locator("input.action-select").first.check()
    page.locator("select[name='action']").select_option("replay_action")
    admin_browser.follow(page.get_by_role("button", name="Run"))

    assert "1 delivery replayed: it will be sent again" in admin_browser.text()
    # the real worker sends it again; the delivery's page then tells the whole story by try
    wait_settled(sync, celery_worker_process)
    admin_browser.goto(f"/admin/streaming/delivery/{failed.pk}/change/")
    text = admin_browser.text()
    assert "Succeeded" in text
    assert "Try 1" in text and "refused by Intercom" in text
    assert "Try 2 (after a replay) succeeded" in text and "event resent" in text
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", text)  # to the second, with the zone
    assert Delivery.objects.get(pk=failed.pk).completed_at <= timezone.now()


PAGES = [
    "/admin/",
    "/admin/streaming/delivery/",
    "/admin/streaming/delivery/{delivery}/change/",
    "/admin/streaming/delivery/timeline/?q=ada",
    "/admin/streaming/delivery/timeline/",
    "/admin/streaming/delivery/timeline/?q=ada&outcome=succeeded",
    "/admin/streaming/delivery/timeline/intercom-now/?delivery={delivery}",
    "/admin/streaming/delivery/health/",
    "/admin/streaming/delivery/test-event/",
    "/admin/streaming/event/",
    "/admin/streaming/deliveryattempt/",
    "/admin/integrations/source/{source}/change/",
    "/admin/integrations/destination/{destination}/change/",
    "/admin/integrations/sync/{sync}/change/",
    "/admin/integrations/sync/",
]


def test_no_page_is_wider_than_a_1280_pixel_screen(admin_browser, intercom_sandbox):
    sync = sync_into(intercom_sandbox, name="app-to-intercom", sources=[SourceFactory()])
    (delivery,) = ingest(sync, [track("ada", "Order Completed", total=42, currency="EUR")])
    lane_drain(lane_id=delivery.lane_id)
    ids = {
        "delivery": delivery.pk,
        "source": Source.objects.get().pk,
        "destination": sync.destination_id,
        "sync": sync.pk,
    }
    too_wide = {}
    for path in PAGES:
        admin_browser.goto(path.format(**ids))
        width = admin_browser.page_width()
        if width > 1280:
            too_wide[path] = width
    assert too_wide == {}
    assert admin_browser.errors == []
