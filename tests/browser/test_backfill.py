"""Backfill and re-send from the admin, in Chromium, as an operator would: from a sync's page,
with a preview first and the progress on the overview; a profile re-send from the timeline."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User

from streaming.delivery.backfill import backfill_run
from streaming.delivery.lanes import lane_drain
from streaming.delivery.resend import resend_job_run
from streaming.models import BackfillJob, Delivery, ResendJob
from tests.fixtures.browser import screenshot_save
from tests.streaming.delivery_setup import identify, ingest, sync_into, track

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def drain(sync) -> None:
    for lane in sync.lanes.all():
        lane_drain(lane_id=lane.pk)


def test_an_operator_backfills_the_host_users_and_follows_it_on_the_overview(
    admin_browser, intercom_sandbox
):
    # given a sync into Intercom and three users in the host app (the operator is one more)
    sync = sync_into(intercom_sandbox, name="app-to-intercom")
    User.objects.bulk_create(User(username=f"u{n}", email=f"u{n}@example.com") for n in range(3))
    page = admin_browser.page
    admin_browser.goto(f"/admin/integrations/sync/{sync.pk}/change/")

    # when the operator opens "Backfill users" and counts them
    admin_browser.follow(page.get_by_role("link", name="Backfill users"))
    page.wait_for_url(re.compile(rf"/backfill/\?sync={sync.pk}"))
    assert "userId = the primary key" in admin_browser.text()
    admin_browser.follow(page.get_by_role("button", name="Count users"))

    # then the preview says how many and how long Intercom's limit needs for them
    text = admin_browser.text()
    assert "4 auth.User to identify" in text
    assert "two calls each" in text
    assert page.locator("#sb-backfill-duration").inner_text() == "1 s"
    assert admin_browser.page_width() <= 1280
    screenshot_save(page, "backfill-preview", [])

    # when they start it
    admin_browser.follow(page.get_by_role("button", name="Backfill 4 users"))
    job = BackfillJob.objects.get()
    assert f"Backfill #{job.pk} started: 4 auth.User will be identified" in admin_browser.text()

    # then the overview shows it running, with its progress
    admin_browser.goto("/admin/")
    progress = page.locator(f'.sb-overview-job[data-job="{job.pk}"]')
    assert "0 of 4 users identified (0 %)" in progress.inner_text()
    screenshot_save(page, "overview-jobs", [])

    # once a worker ran it, it is done and gone from the overview; the workspace has them
    backfill_run(job=job)
    drain(sync)
    page.reload()
    assert page.locator(".sb-overview-job").count() == 0
    admin_browser.goto(f"/admin/streaming/delivery/backfill/?sync={sync.pk}")
    assert "4 of 4 users identified" in page.locator(f'.sb-job[data-job="{job.pk}"]').inner_text()
    external_ids = {c.get("external_id") for c in intercom_sandbox.state()["contacts"]}
    assert {str(u.pk) for u in User.objects.all()} <= external_ids


def test_an_operator_re_sends_a_range_after_a_preview(admin_browser, intercom_sandbox):
    # given three calls the sync delivered
    sync = sync_into(intercom_sandbox, name="app-to-intercom")
    ingest(sync, [identify("ada"), track("ada", "Paid"), track("bob", "Paid")])
    drain(sync)
    page = admin_browser.page
    admin_browser.goto(f"/admin/integrations/sync/{sync.pk}/change/")

    # when the operator opens "Re-send" and previews the last day
    admin_browser.follow(page.get_by_role("link", name="Re-send"))
    admin_browser.follow(page.get_by_role("button", name="Preview"))

    # then the preview says how many calls, and the rate limit's time
    text = admin_browser.text()
    assert "3 calls to send again" in text
    assert "as its answers announce it" in text
    assert admin_browser.page_width() <= 1280
    screenshot_save(page, "resend-preview", [])

    # when they re-send them
    admin_browser.follow(page.get_by_role("button", name="Re-send 3 calls"))
    job = ResendJob.objects.get()
    assert f"Re-send #{job.pk} started: 3 calls will be queued as new deliveries" in (
        admin_browser.text()
    )
    resend_job_run(job=job)
    drain(sync)
    resent = Delivery.objects.filter(sync=sync, resend_of__isnull=False)
    assert sorted(resent.values_list("status", flat=True)) == ["succeeded"] * 3
    # and each re-send's page names the delivery it repeats
    one = resent.first()
    admin_browser.goto(f"/admin/streaming/delivery/{one.pk}/change/")
    assert str(one.resend_of) in admin_browser.text()


def test_an_operator_re_sends_a_profile_from_the_timeline(admin_browser, intercom_sandbox):
    sync = sync_into(intercom_sandbox, name="app-to-intercom", send_all_properties=True)
    ingest(sync, [identify("ada", plan="free"), identify("ada", plan="pro")])
    drain(sync)
    page = admin_browser.page
    admin_browser.goto("/admin/streaming/delivery/timeline/?q=ada")

    admin_browser.follow(page.get_by_role("button", name="Re-send profile to app-to-intercom"))

    text = admin_browser.text()
    assert "ada's current profile is queued to app-to-intercom as delivery #" in text
    resend = Delivery.objects.filter(sync=sync).order_by("-id").first()
    assert resend.event.payload["traits"]["plan"] == "pro"
    assert resend.status == "pending"
