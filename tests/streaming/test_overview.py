"""The overview (the admin's landing page): the charts' buckets by minute, hour and day, the
figures and the deliveries each links to, the backlog's age and ETA, the rate-limit headroom and
the event-name budget, from summary rows on PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, timedelta
from html import unescape
from urllib.parse import parse_qsl, urlsplit

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from integrations.models import Destination
from streaming.audit.overview import duration_text, overview_build
from streaming.models import DeliveryHour
from tests.factories import (
    DestinationFactory,
    KnownEventNameFactory,
    SourceFactory,
    SyncFactory,
)
from tests.streaming.audit_rows import SECRET_TOKEN, attempt_make, delivery_make, event_make

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    if settings.REDIS_URL:
        redis.Redis.from_url(settings.REDIS_URL).delete(*_limiter_keys())


def _limiter_keys() -> list[str]:
    return [f"sb:ratelimit:{pk}" for pk in Destination.objects.values_list("pk", flat=True)] or [
        "sb:ratelimit:none"
    ]


@pytest.fixture
def month():
    """One sync's deliveries spread over 40 days, and a quiet sync in another workspace."""
    now = timezone.now()
    sync = SyncFactory(
        name="busy",
        sources=[SourceFactory()],
        destination=DestinationFactory(name="Busy workspace", access_token=SECRET_TOKEN),
    )
    quiet = SyncFactory(name="quiet", destination=DestinationFactory(name="Quiet workspace"))
    source = sync.sources.get()

    def add(status, ago, *, attempts=1, latency=timedelta(seconds=2)):
        at = now - ago
        event = event_make(source=source, received_at=at)
        return delivery_make(
            event=event,
            sync=sync,
            status=status,
            attempts=attempts if status != "pending" else 0,
            created_at=at,
            completed_at=at + latency if status != "pending" else None,
        )

    rows = {
        "now_ok": add("succeeded", timedelta(seconds=30)),
        "now_failed": add("failed", timedelta(seconds=40)),
        "now_pending": add("pending", timedelta(minutes=2)),
        "hours_ok": add("succeeded", timedelta(hours=5)),
        "hours_expired": add("expired", timedelta(hours=5), attempts=9),
        "hours_skipped": add("skipped", timedelta(hours=5), attempts=0),
        "days_ok": add("succeeded", timedelta(days=10)),
        "days_pending": add("pending", timedelta(days=10)),
        "too_old": add("succeeded", timedelta(days=40)),
    }
    return {"sync": sync, "quiet": quiet, "now": now, "rows": rows}


def totals(buckets, key):
    return sum(getattr(b, key) for b in buckets)


def test_the_last_hour_by_minute(month):
    overview = overview_build(span_key="hour", now=month["now"])
    busy = overview.destinations[0].syncs[0]
    assert len(busy.buckets) == 60
    assert busy.buckets[-1].start <= month["now"] < busy.buckets[-1].end
    assert (totals(busy.buckets, "delivered"), totals(busy.buckets, "failed")) == (1, 1)
    assert totals(busy.buckets, "pending") == 1
    minute_of_pending = busy.buckets[-3]
    assert (
        minute_of_pending.start <= month["rows"]["now_pending"].created_at < minute_of_pending.end
    )
    assert minute_of_pending.pending == 1


def test_the_last_day_by_hour(month):
    overview = overview_build(span_key="day", now=month["now"])
    busy = overview.destinations[0].syncs[0]
    assert len(busy.buckets) == 24
    assert totals(busy.buckets, "delivered") == 2
    assert totals(busy.buckets, "failed") == 2  # failed and expired
    assert totals(busy.buckets, "skipped") == 1
    assert totals(busy.buckets, "pending") == 1  # the one of 10 days ago is not in this span
    five_hours_ago = busy.buckets[-6]
    assert (five_hours_ago.delivered, five_hours_ago.failed, five_hours_ago.skipped) == (1, 1, 1)


def test_the_last_30_days_by_day(month):
    overview = overview_build(span_key="month", now=month["now"])
    busy = overview.destinations[0].syncs[0]
    assert len(busy.buckets) == 30
    assert busy.buckets[-1].start <= month["now"] < busy.buckets[-1].end
    assert totals(busy.buckets, "delivered") == 3  # not the one of 40 days ago
    assert totals(busy.buckets, "pending") == 2
    ten_days_ago = next(
        b for b in busy.buckets if b.start <= month["rows"]["days_ok"].created_at < b.end
    )
    assert (ten_days_ago.delivered, ten_days_ago.pending) == (1, 1)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="summary rows: PostgreSQL only")
def test_days_come_from_summary_rows_kept_right_by_the_triggers(month):
    overview_build(span_key="month", now=month["now"])
    ten_days_hour = (
        month["rows"]["days_ok"]
        .created_at.astimezone(UTC)
        .replace(minute=0, second=0, microsecond=0)
    )
    row = DeliveryHour.objects.get(sync=month["sync"], hour=ten_days_hour)
    assert row.delivered_first_try == 1
    # A summary row changed behind the page's back is what the page shows (it reads the rows)...
    DeliveryHour.objects.filter(pk=row.pk).update(delivered_first_try=7)
    busy = overview_build(span_key="month", now=month["now"]).destinations[0].syncs[0]
    assert totals(busy.buckets, "delivered") == 2 + 7
    # ... and a delivery of that hour changing state removes the row: counted again, right.
    days_ok = month["rows"]["days_ok"]
    type(days_ok).objects.filter(pk=days_ok.pk).update(status="failed")
    busy = overview_build(span_key="month", now=month["now"]).destinations[0].syncs[0]
    assert (totals(busy.buckets, "delivered"), totals(busy.buckets, "failed")) == (2, 3)


def test_figures_of_24_hours_backlog_and_eta(month):
    now = timezone.now()
    rows = month["rows"]
    # two deliveries finished through attempts of the last minutes: 2 / 5 minutes
    attempt_make(delivery=rows["now_ok"], started_at=now - timedelta(minutes=1))
    attempt_make(
        delivery=rows["now_failed"], started_at=now - timedelta(minutes=1), status_code=400
    )
    attempt_make(
        delivery=rows["now_pending"], started_at=now - timedelta(minutes=1), status_code=500
    )
    busy = overview_build(span_key="day").destinations[0].syncs[0]
    assert (busy.delivered, busy.failed, busy.health.pending) == (2, 2, 2)
    assert busy.success_rate == pytest.approx(50.0)
    assert busy.calls_per_minute == pytest.approx(3 / 5)
    assert busy.completed_per_minute == pytest.approx(2 / 5)
    assert busy.eta_seconds == pytest.approx(60 * 2 / (2 / 5))
    assert busy.oldest_pending_at == rows["days_pending"].created_at
    assert busy.oldest_pending_text.startswith("10 d")


def test_a_backlog_without_progress_says_so(month):
    busy = overview_build(span_key="day").destinations[0].syncs[0]
    assert busy.stalled
    assert busy.eta_text == "no progress in the last 5 minutes"
    quiet = overview_build(span_key="day").destinations[1].syncs[0]
    assert quiet.eta_text == "no backlog" and quiet.oldest_pending_text == "—"


def test_durations_read_as_an_operator_reads_them():
    assert [duration_text(s) for s in (None, 42, 425, 3 * 3600 + 720, 2 * 86400 + 4 * 3600)] == [
        "—",
        "42 s",
        "7 min 5 s",
        "3 h 12 min",
        "2 d 4 h",
    ]


def test_every_figure_links_to_the_deliveries_behind_it(admin_client, month):
    page = admin_client.get(reverse("admin:index"))
    assert page.status_code == 200
    html = unescape(page.content.decode())
    busy = month["sync"]
    links = {
        figure: _query(html, f'data-figure="{figure}"')
        for figure in ("delivered", "failed", "pending", "oldest_pending", "success_rate")
    }
    assert links["delivered"]["status__exact"] == "succeeded"
    assert links["failed"]["status__in"] == "failed,expired"
    assert links["pending"]["status__exact"] == "pending"
    assert links["oldest_pending"]["o"] == "1"
    for query in links.values():
        assert query["sync__id__exact"] == str(busy.pk)
    # The list opened from a figure shows exactly the deliveries the figure counts.
    listed = admin_client.get(
        reverse("admin:streaming_delivery_changelist"), links["failed"]
    ).context["cl"]
    assert {d.pk for d in listed.queryset} == {
        month["rows"]["now_failed"].pk,
        month["rows"]["hours_expired"].pk,
    }
    listed = admin_client.get(
        reverse("admin:streaming_delivery_changelist"), links["delivered"]
    ).context["cl"]
    assert {d.pk for d in listed.queryset} == {
        month["rows"]["now_ok"].pk,
        month["rows"]["hours_ok"].pk,
    }


def test_each_bar_links_to_its_deliveries(admin_client, month):
    page = admin_client.get(reverse("admin:index") + "?span=day")
    html = page.content.decode()
    start = html.index('data-links="', html.index(f'id="sb-sync-{month["sync"].pk}"'))
    links = json.loads(unescape(html[start + len('data-links="') : html.index('"', start + 12)]))
    delivered, failed, _, _ = links
    five_hours_ago = dict(parse_qsl(urlsplit(failed[-6]).query))
    listed = admin_client.get(
        reverse("admin:streaming_delivery_changelist"), five_hours_ago
    ).context["cl"]
    assert [d.pk for d in listed.queryset] == [month["rows"]["hours_expired"].pk]
    assert len(delivered) == 24


def test_the_page_draws_a_chart_per_sync_with_unfolds_chart_js(admin_client, month):
    html = admin_client.get(reverse("admin:index") + "?span=hour").content.decode()
    assert html.count('class="chart"') == 2
    assert "unfold/js/chart/chart.js" in html
    assert "Last hour, by minute" in html
    data = json.loads(unescape(html.split('data-value="')[1].split('"')[0]))
    assert [d["label"] for d in data["datasets"]] == [
        "Delivered",
        "Failed or expired",
        "Pending",
        "Skipped",
    ]
    assert len(data["labels"]) == 60
    # the slot for long-running jobs is there, and says nothing when there is nothing
    assert "sb-overview-jobs" not in html


def test_the_event_name_budget_and_the_workspace_state(admin_client, month):
    destination = month["sync"].destination
    for n in range(100):
        KnownEventNameFactory(destination=destination, name=f"Event {n}")
    Destination.objects.filter(pk=destination.pk).update(
        auth_failed_at=timezone.now(), last_error=f"HTTP 401: unauthorized {SECRET_TOKEN}"
    )
    html = unescape(admin_client.get(reverse("admin:index")).content.decode())
    assert "100 of 120" in html and "20 left" in html
    assert "Intercom refused the token (401)" in html
    assert SECRET_TOKEN not in html


@pytest.mark.skipif(not settings.REDIS_URL, reason="the shared limiter lives in Redis")
def test_the_rate_limit_headroom_is_what_the_shared_limiter_knows(month):
    destination = month["sync"].destination
    client = redis.Redis.from_url(settings.REDIS_URL)
    window_end = timezone.now().timestamp() + 8
    client.hset(
        f"sb:ratelimit:{destination.pk}",
        mapping={"limit": 100, "remaining": 40, "window_end": window_end},
    )
    now = timezone.now()
    for row in ("now_ok", "now_failed"):
        for _ in range(30):
            attempt_make(delivery=month["rows"][row], started_at=now - timedelta(minutes=2))
    busy, quiet = overview_build().destinations
    assert busy.limit_per_minute == 600
    assert busy.window_left == 40
    assert busy.calls_per_minute == pytest.approx(12.0)
    assert busy.headroom_percent == 98
    assert quiet.limiter is not None and quiet.limiter.limit is None  # no answer yet
    client.hset(f"sb:ratelimit:{destination.pk}", "window_end", window_end - 60)
    assert overview_build().destinations[0].window_left == 100  # that window ended


def test_a_viewer_without_delivery_rights_gets_no_overview(client, month):
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user("config", password="x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_sync"))
    client.force_login(user)
    html = client.get(reverse("admin:index")).content.decode()
    assert 'class="chart"' not in html and "Configuration" in html


def _query(html: str, marker: str) -> dict[str, str]:
    tag_start = html.rindex("<a ", 0, html.index(marker))
    href = html[tag_start:].split('href="')[1].split('"')[0]
    return dict(parse_qsl(urlsplit(href).query))
