"""The sync health page: each figure computed right on a crafted day of deliveries."""

from __future__ import annotations

from datetime import timedelta
from html import unescape

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from integrations.models import Destination
from streaming.audit.selectors import percentile_cont, syncs_health
from streaming.ingest.filtered import filtered_count
from tests.factories import (
    DestinationFactory,
    KnownEventNameFactory,
    SourceFactory,
    SyncFactory,
)
from tests.streaming.audit_rows import SECRET_TOKEN, delivery_make, event_make

pytestmark = pytest.mark.django_db

HEALTH = "admin:streaming_sync_health"


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()  # the filtered counters live in the (Redis) cache


@pytest.fixture
def day():
    now = timezone.now()
    busy = SyncFactory(
        name="busy",
        sources=[SourceFactory()],
        destination=DestinationFactory(name="Busy workspace", access_token=SECRET_TOKEN),
    )
    quiet = SyncFactory(name="quiet", sources=[busy.sources.get()])
    source = busy.sources.get()

    def add(status, *, received_ago, latency=None, attempts=1, sync=busy):
        received_at = now - received_ago
        event = event_make(source=source, received_at=received_at)
        return delivery_make(
            event=event,
            sync=sync,
            status=status,
            attempts=attempts,
            created_at=received_at,
            completed_at=received_at + latency if latency is not None else None,
        )

    hour = timedelta(hours=1)
    # delivered first try in 1, 2 and 3 s; after retries in 10 and 20 s
    for seconds in (1, 2, 3):
        add("succeeded", received_ago=hour, latency=timedelta(seconds=seconds))
    for seconds in (10, 20):
        add("succeeded", received_ago=hour, latency=timedelta(seconds=seconds), attempts=3)
    add("failed", received_ago=hour, latency=timedelta(seconds=1))
    add("expired", received_ago=5 * hour, latency=timedelta(hours=4), attempts=9)
    add("expired", received_ago=5 * hour, latency=timedelta(hours=4), attempts=9)
    add("skipped", received_ago=hour, latency=timedelta(0), attempts=0)
    add("pending", received_ago=hour, attempts=0)
    add("pending", received_ago=timedelta(minutes=1), attempts=0)
    # older than the window: only the backlog and "replay all" see them
    add("pending", received_ago=timedelta(days=3), attempts=2)
    add("failed", received_ago=timedelta(days=3), latency=timedelta(seconds=1))
    add("succeeded", received_ago=timedelta(days=3), latency=timedelta(hours=9))
    filtered_count(
        counts={(busy.pk, "excluded by [Intercom] *"): 4, (busy.pk, "not in the include list"): 1},
        at=now,
    )
    return {"busy": busy, "quiet": quiet}


def test_the_figures_of_the_last_24_hours(day):
    by_name = {row.sync.name: row for row in syncs_health()}
    busy = by_name["busy"]
    assert busy.delivered_first_try == 3
    assert busy.delivered_after_retry == 2
    assert busy.pending == 3  # the whole backlog, the 3-day-old one included
    assert busy.failed == 1
    assert busy.expired == 2
    assert busy.skipped == 1
    assert busy.filtered == {"excluded by [Intercom] *": 4, "not in the include list": 1}
    assert busy.filtered_total == 5
    # percentile_cont over 1, 2, 3, 10, 20 s: 10 + 0.8 * (20 - 10)
    assert busy.p95_seconds == pytest.approx(18.0)
    assert busy.replayable == 4  # failed + expired, any age

    quiet = by_name["quiet"]
    assert (quiet.delivered_first_try, quiet.pending, quiet.failed, quiet.filtered_total) == (
        0,
        0,
        0,
        0,
    )
    assert quiet.p95_seconds is None


def test_the_event_names_used_in_each_workspace_are_counted(admin_client, day):
    destination = day["busy"].destination
    for name in ("Signed Up", "Order Completed", "Plan Changed"):
        KnownEventNameFactory(destination=destination, name=name)
    by_name = {row.sync.name: row for row in syncs_health()}
    assert by_name["busy"].event_names == 3
    html = admin_client.get(reverse(HEALTH)).content.decode()
    assert "Event names: 3 of Intercom's 120" in html
    names = admin_client.get(reverse("admin:streaming_knowneventname_changelist"))
    assert names.context["cl"].result_count == 3


def test_with_the_cache_down_the_page_still_shows_the_database_figures(admin_client, day, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
        }
    }
    response = admin_client.get(reverse(HEALTH))
    assert response.status_code == 200
    busy = next(row for row in response.context["rows"] if row.sync.name == "busy")
    assert busy.filtered is None
    assert busy.delivered_first_try == 3
    assert "unavailable" in response.content.decode()


def test_the_python_fallback_interpolates_like_postgresql():
    assert percentile_cont([20, 1, 10, 3, 2], 0.95) == pytest.approx(18.0)
    assert percentile_cont([7], 0.95) == 7
    assert percentile_cont([], 0.95) is None


def test_the_page_shows_each_sync_and_its_figures(admin_client, day):
    response = admin_client.get(reverse(HEALTH))
    assert response.status_code == 200
    html = response.content.decode()
    busy_row = html.split(f'id="sb-health-{day["busy"].pk}"')[1].split("</tr>")[0]
    assert 'data-figure="p95">18.00 s' in busy_row
    assert "Replay all 4 failed/expired" in busy_row
    assert f'?sync__id__exact={day["busy"].pk}&amp;status__exact=failed">1<' in busy_row
    assert "not in the include list: 1" in busy_row


def test_the_page_can_show_one_sync(admin_client, day):
    response = admin_client.get(reverse(HEALTH), {"sync": day["quiet"].pk})
    assert [row.sync.name for row in response.context["rows"]] == ["quiet"]


def test_the_destination_state_is_shown_without_its_secrets(admin_client, day):
    now = timezone.now()
    Destination.objects.filter(pk=day["busy"].destination_id).update(
        auth_failed_at=now,
        last_error=f"POST /contacts: HTTP 401: unauthorized (token {SECRET_TOKEN})",
        last_error_at=now,
    )
    response = admin_client.get(reverse(HEALTH))
    html = unescape(response.content.decode())
    assert "Intercom refused the token (401)" in html
    assert "HTTP 401: unauthorized (token [secret])" in html
    assert SECRET_TOKEN not in html


def test_the_sync_pages_link_to_their_health(admin_client, day):
    sync = day["busy"]
    change = admin_client.get(reverse("admin:integrations_sync_change", args=[sync.pk]))
    assert f"{reverse(HEALTH)}?sync={sync.pk}" in change.content.decode()
    assert f"{reverse('admin:streaming_test_event')}?sync={sync.pk}" in change.content.decode()
    changelist = admin_client.get(reverse("admin:integrations_sync_changelist"))
    assert reverse(HEALTH) in changelist.content.decode()


def test_a_support_viewer_sees_the_figures_but_no_replay_button(client, day):
    from tests.streaming.audit_rows import staff_make

    client.force_login(staff_make(username="support", perms=("streaming.view_delivery",)))
    response = client.get(reverse(HEALTH))
    assert response.status_code == 200
    assert "Replay all" not in response.content.decode()
    assert (
        client.post(reverse("admin:streaming_sync_replay", args=[day["busy"].pk])).status_code
        == 403
    )
