"""The Python API (streaming.ingest.analytics): same validation and path as POST /v1/*."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.test import override_settings

from streaming.ingest import analytics
from streaming.models import Delivery, Event
from streaming.signals import event_ingested
from tests.factories import SourceFactory

pytestmark = [
    pytest.mark.usefixtures("fresh_cache"),
    # the default source of the Python API below (SWITCHBOARD_PYTHON_SOURCE)
    pytest.mark.source_fields(name="backend"),
]


@override_settings(SWITCHBOARD_PYTHON_SOURCE="backend")
def test_each_call_goes_to_the_default_source_with_its_deliveries(source, sync):
    analytics.identify("u1", {"email": "ada@example.com"})
    analytics.track("u1", "Order Completed", {"total": Decimal("42.50")})
    analytics.group("u1", "acme", {"name": "Acme"})
    analytics.page("u1", "Pricing", {"path": "/pricing"})
    analytics.screen("u1", "Settings")
    analytics.alias("anon-1", "u1")

    events = list(Event.objects.order_by("id"))
    assert [e.type for e in events] == ["identify", "track", "group", "page", "screen", "alias"]
    assert {e.source_id for e in events} == {source.pk}
    assert events[1].payload["properties"] == {"total": 42.5}
    assert events[2].payload["groupId"] == "acme"
    assert events[5].payload["previousId"] == "anon-1"
    assert events[0].payload["context"]["library"]["name"] == "switchboard-python"
    assert Delivery.objects.filter(sync=sync).count() == 6


def test_the_source_may_be_named_or_given(source, sync):
    other = SourceFactory(name="billing")

    analytics.track(7, "Invoice Paid", source="billing")
    analytics.track(7, "Invoice Paid", source=source)

    assert list(Event.objects.order_by("id").values_list("source_id", "user_id")) == [
        (other.pk, "7"),
        (source.pk, "7"),
    ]


def test_python_values_are_stored_as_json_would_carry_them(source):
    analytics.identify(
        "u1",
        {"signed_up": datetime(2024, 5, 1, 12, 0, tzinfo=UTC), "plan": ("pro", "team")},
        timestamp=datetime(2024, 5, 2, tzinfo=UTC),
        source=source,
    )

    event = Event.objects.get()
    assert event.payload["traits"] == {
        "signed_up": "2024-05-01T12:00:00.000Z",
        "plan": ["pro", "team"],
    }
    assert event.timestamp == datetime(2024, 5, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: analytics.track("u1", None, source=s), "event"),
        (lambda s: analytics.identify(None, {"email": "a@b.co"}, source=s), "userId"),
        (lambda s: analytics.identify("u1", ["email"], source=s), "traits"),
        (lambda s: analytics.group("u1", None, source=s), "groupId"),
    ],
)
def test_invalid_calls_raise_with_field_errors_and_store_nothing(source, call, field):
    with pytest.raises(analytics.InvalidCall) as caught:
        call(source)

    assert field in caught.value.errors
    assert isinstance(caught.value, ValueError)
    assert not Event.objects.exists()


def test_a_repeated_message_id_is_stored_once(source, sync):
    first = analytics.track("u1", "A", message_id="m-1", source=source)
    again = analytics.track("u1", "A", message_id="m-1", source=source)

    assert len(first.event_ids) == 1
    assert again.event_ids == [] and again.duplicates == ["m-1"]
    assert Delivery.objects.count() == 1


def test_without_a_source_or_setting_it_says_how_to_configure_it(db):
    with override_settings(SWITCHBOARD_PYTHON_SOURCE=""), pytest.raises(ImproperlyConfigured):
        analytics.track("u1", "A")
    with override_settings(SWITCHBOARD_PYTHON_SOURCE="nope"), pytest.raises(ImproperlyConfigured):
        analytics.track("u1", "A")


def test_a_disabled_source_drops_the_call_without_breaking_the_host(source):
    source.enabled = False
    source.save()

    result = analytics.track("u1", "A", source=source)

    assert result.event_ids == []
    assert not Event.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_calls_inside_a_rolled_back_transaction_are_not_stored(source, sync):
    with pytest.raises(RuntimeError), transaction.atomic():
        analytics.track("u1", "A", source=source)
        raise RuntimeError("the host's request failed")

    assert not Event.objects.exists()
    assert not Delivery.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_event_ingested_is_sent_after_commit_with_the_event_ids(source, sync):
    seen: list[tuple[int, list[int], bool]] = []

    def receiver(sender, source_id, event_ids, **kwargs):
        committed = Event.objects.filter(id__in=event_ids).count() == len(event_ids)
        seen.append((source_id, event_ids, committed))

    event_ingested.connect(receiver)
    try:
        with transaction.atomic():
            result = analytics.track("u1", "A", source=source)
            assert seen == []  # not before the commit
    finally:
        event_ingested.disconnect(receiver)

    assert seen == [(source.pk, result.event_ids, True)]


def test_a_misspelt_option_is_an_error_not_ignored(db) -> None:
    with pytest.raises(TypeError, match="mesage_id"):
        analytics.track("u1", "A", mesage_id="m-1")
