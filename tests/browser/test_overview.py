"""The overview in Chromium: the landing page with data, its charts drawn by unfold's Chart.js
(no console error), a figure and a bar followed to the deliveries behind them, no page wider than
1,280 px; and its screenshot for docs/admin-tour.md (``SWITCHBOARD_SCREENSHOTS=docs/screenshots``).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from integrations.models import Destination
from streaming.delivery.lanes import lane_drain
from streaming.models import Delivery, KnownEventName
from tests.factories import KnownEventNameFactory, SourceFactory
from tests.streaming.audit_rows import delivery_make, event_make
from tests.streaming.delivery_setup import identify, ingest, sync_into, track

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def a_day_of_traffic(sandbox):
    """demo-sync into demo-sandbox: live calls delivered through the sandbox, one refused, and a
    day of earlier deliveries (hourly, some failed, a few still pending)."""
    sync = sync_into(sandbox, name="demo-sync", sources=[SourceFactory(name="demo-http")])
    Destination.objects.filter(pk=sync.destination_id).update(name="demo-sandbox")
    ingest(sync, [identify("u1", name="Ada Lovelace"), track("u1", "Signed up", plan="pro")])
    for lane in sync.lanes.order_by("id"):
        lane_drain(lane_id=lane.pk)
    sandbox.configure(force_status=400, force_count=1, force_path="/events")
    (refused,) = ingest(sync, [track("u1", "Order Completed", total=42)])
    lane_drain(lane_id=refused.lane_id)
    now = timezone.now()
    source = sync.sources.get()
    for hour in range(1, 24):
        for n in range(3 + hour % 5):
            at = now - timedelta(hours=hour, minutes=n)
            status = "failed" if n == 4 else "pending" if hour < 3 and n == 0 else "succeeded"
            delivery_make(
                event=event_make(source=source, user_id=f"user-{hour}-{n}", received_at=at),
                sync=sync,
                status=status,
                attempts=0 if status == "pending" else 1,
                created_at=at,
                completed_at=None if status == "pending" else at + timedelta(seconds=2),
            )
    for n in range(37):
        KnownEventNameFactory(destination=sync.destination, name=f"Event {n}")
    return sync, refused


def test_the_overview_draws_its_charts_and_leads_to_the_deliveries(admin_browser, intercom_sandbox):
    sync, refused = a_day_of_traffic(intercom_sandbox)
    page = admin_browser.page
    console_errors, missing = [], []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
    admin_browser.goto("/admin/")

    card = page.locator(f"#sb-sync-{sync.pk}")
    assert card.locator("canvas.chart").count() == 1
    page.wait_for_function("document.querySelector('.sb-chart').dataset.linked === 'true'")
    drawn = page.evaluate(
        "(() => { const c = Chart.getChart(document.querySelector('.sb-chart canvas'));"
        " return {bars: c.data.labels.length, series: c.data.datasets.map(d => d.label),"
        " total: c.data.datasets.reduce((n, d) => n + d.data.reduce((a, b) => a + b, 0), 0)}; })()"
    )
    assert drawn["bars"] == 24
    assert drawn["series"] == ["Delivered", "Failed or expired", "Pending", "Skipped"]
    assert drawn["total"] == Delivery.objects.filter(sync=sync).count()
    names = KnownEventName.objects.filter(destination=sync.destination).count()
    assert names >= 37 and f"{names} of 120" in admin_browser.text()
    assert admin_browser.page_width() <= 1280
    # Chromium asks for /favicon.ico by itself; every file the page names must arrive
    missing = [url for url in missing if not url.endswith("/favicon.ico")]
    assert missing == [] and admin_browser.errors == []
    assert [e for e in console_errors if "404" not in e or missing] == []

    # a figure: the failed deliveries of the last 24 hours, exactly those
    failed = card.locator('[data-figure="failed"]')
    shown = int(failed.locator("strong").inner_text())
    assert shown == Delivery.objects.filter(sync=sync, status="failed").count()
    admin_browser.follow(failed)
    assert re.search(r"status__in=failed%2Cexpired", page.url)
    assert page.locator("#result_list tbody tr").count() == shown
    assert page.get_by_text(f"{refused.pk}", exact=True).count() >= 1

    # a bar: the hour of a pending delivery leads to that hour's pending deliveries
    admin_browser.goto("/admin/")
    page.wait_for_function("document.querySelector('.sb-chart').dataset.linked === 'true'")
    point = page.evaluate(
        "(() => { const canvas = document.querySelector('.sb-chart canvas');"
        " const chart = Chart.getChart(canvas); const pending = chart.getDatasetMeta(2);"
        " const i = chart.data.datasets[2].data.findIndex(n => n > 0);"
        " const bar = pending.data[i]; const box = canvas.getBoundingClientRect();"
        " return {x: box.left + bar.x, y: box.top + (bar.y + bar.base) / 2, n: chart.data.datasets[2].data[i]}; })()"
    )
    with page.expect_navigation():
        page.mouse.click(point["x"], point["y"])
    assert "status__exact=pending" in page.url and "created_at__gte" in page.url
    assert page.locator("#result_list tbody tr").count() == point["n"]


def test_each_span_draws_its_buckets(admin_browser, intercom_sandbox):
    a_day_of_traffic(intercom_sandbox)
    page = admin_browser.page
    for name, bars in (("Last hour, by minute", 60), ("Last 30 days, by day", 30)):
        admin_browser.goto("/admin/")
        admin_browser.follow(page.get_by_role("link", name=name))
        count = page.evaluate(
            "Chart.getChart(document.querySelector('.sb-chart canvas')).data.labels.length"
        )
        assert count == bars
        assert admin_browser.page_width() <= 1280
    assert admin_browser.errors == []


FOLDER = os.environ.get("SWITCHBOARD_SCREENSHOTS", "")


@pytest.mark.skipif(not FOLDER, reason="set SWITCHBOARD_SCREENSHOTS=<folder> to take it")
def test_screenshots_of_the_overview(admin_browser, intercom_sandbox):
    a_day_of_traffic(intercom_sandbox)
    folder = Path(settings.BASE_DIR) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    admin_browser.goto("/admin/")
    admin_browser.page.wait_for_function(
        "document.querySelector('.sb-chart').dataset.linked === 'true'"
    )
    assert admin_browser.page_width() <= 1280
    admin_browser.page.screenshot(path=str(folder / "overview.png"), full_page=True)
