"""The audit lists on large tables: counts that stop at an estimate and say so, deep pages read
through their ids from the nearer end, and searches served by indexes (bench/b9_audit_scale.py
measures the speed; these tests hold the behaviour)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from streaming.audit.admin import DeliveryAdmin, LargeTablePaginator
from streaming.audit.selectors import events_by_email
from streaming.audit.timeline import user_timeline
from streaming.models import Delivery
from tests.streaming.audit_rows import delivery_make, event_make

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:streaming_delivery_changelist"


@pytest.fixture
def thirteen(sync):
    """13 deliveries (ids ascending with time), every third failed; lists of 4 a page."""
    now = timezone.now()
    made = []
    for n in range(13):
        event = event_make(
            source=sync.sources.get(),
            user_id=f"user-{n}",
            received_at=now - timedelta(minutes=60 - n),
            traits={"email": f"user-{n}@example.com"},
            type="identify",
        )
        made.append(
            delivery_make(event=event, sync=sync, status="failed" if n % 3 == 0 else "succeeded")
        )
    return made


@pytest.fixture
def four_a_page(monkeypatch):
    monkeypatch.setattr(DeliveryAdmin, "list_per_page", 4)


def listed(response) -> list[int]:
    return [row.pk for row in response.context["cl"].result_list]


def count_line(response) -> str:
    match = re.search(r"((?:about )?\d+)\s+deliver(?:y|ies)\s*</div>", response.content.decode())
    assert match, "the count under the list"
    return match.group(1)


def test_every_page_shows_the_rows_an_offset_would(admin_client, thirteen, four_a_page):
    newest_first = list(Delivery.objects.order_by("-id").values_list("pk", flat=True))

    pages = [listed(admin_client.get(reverse(CHANGELIST), {"p": p})) for p in (1, 2, 3, 4)]

    # pages 2 and 3 are read forwards then backwards (past the middle), page 4 from the end
    assert pages == [newest_first[0:4], newest_first[4:8], newest_first[8:12], newest_first[12:]]


def test_a_deep_page_of_a_filtered_list_is_the_same_read_from_either_end(
    admin_client, thirteen, four_a_page
):
    failed = list(
        Delivery.objects.filter(status="failed").order_by("-id").values_list("pk", flat=True)
    )

    pages = [
        listed(admin_client.get(reverse(CHANGELIST), {"status__exact": "failed", "p": p}))
        for p in (1, 2)
    ]

    assert pages == [failed[0:4], failed[4:]]


def test_a_long_filtered_list_is_counted_up_to_a_bound_then_estimated(
    admin_client, thirteen, monkeypatch
):
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE streaming_delivery")
    monkeypatch.setattr(LargeTablePaginator, "COUNT_EXACTLY_UP_TO", 3)

    long_list = admin_client.get(reverse(CHANGELIST), {"status__exact": "succeeded"})
    short_list = admin_client.get(reverse(CHANGELIST), {"q": "user-4"})

    assert count_line(long_list).startswith("about ")
    assert long_list.context["cl"].result_count >= 4
    assert count_line(short_list) == "1"


def test_the_last_page_of_an_estimated_list_is_its_oldest_rows(
    admin_client, thirteen, four_a_page, monkeypatch
):
    # given PostgreSQL's estimate is a little over the real count, as estimates are
    monkeypatch.setattr(LargeTablePaginator, "ESTIMATE_ABOVE", 1)
    monkeypatch.setattr(LargeTablePaginator, "_table_estimate", staticmethod(lambda qs: 15))

    first = admin_client.get(reverse(CHANGELIST))
    pages = [listed(admin_client.get(reverse(CHANGELIST), {"p": p})) for p in (2, 3, 4)]

    assert count_line(first) == "about 15"
    oldest_first = list(Delivery.objects.order_by("id").values_list("pk", flat=True))
    # each page an id range counted from the nearer end: as exact as the estimate
    assert pages[0] == list(reversed(oldest_first[-8:-4]))
    assert pages[1] == list(reversed(oldest_first[3:7]))
    assert pages[2] == list(reversed(oldest_first[:3]))


def test_an_email_is_looked_up_through_the_email_indexes(thirteen):
    query = events_by_email(email="User-4@Example.com").values("id")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        sql, params = query.query.sql_with_params()
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "event_traits_email" in plan
    assert "event_context_traits_email" in plan
    assert list(query) == [{"id": thirteen[4].event_id}]  # the address lowercased matches


def test_a_search_and_a_timeline_by_email_find_the_user(admin_client, thirteen):
    listed_by_email = listed(admin_client.get(reverse(CHANGELIST), {"q": "user-7@example.com"}))
    timeline = user_timeline(query="user-7@example.com")

    assert listed_by_email == [thirteen[7].pk]
    assert timeline.user_ids == ["user-7", "user-7@example.com"]
    assert timeline.events == 1
