"""Retention: past ``SWITCHBOARD_RETENTION`` the attempts, the final deliveries and the events
left without them are deleted, batch by batch; nothing pending is ever deleted."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from streaming.delivery import sweep
from streaming.delivery.sweep import retention_purge
from streaming.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryHour,
    Event,
    PersonDeletion,
    PersonDeletionTarget,
)
from tests.streaming.audit_rows import attempt_make, delivery_make, event_make

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _thirty_days(settings):
    settings.SWITCHBOARD_RETENTION = timedelta(days=30)


def days_ago(days: float):
    return timezone.now() - timedelta(days=days)


def delivered(sync, *, user: str, received_days_ago: float, status: str = "succeeded", **fields):
    """An event, its delivery (final unless said otherwise) and one attempt, all that old."""
    received_at = days_ago(received_days_ago)
    event = event_make(source=sync.sources.get(), user_id=user, received_at=received_at)
    done = None if status == "pending" else received_at + timedelta(seconds=1)
    delivery = delivery_make(
        event=event, sync=sync, status=status, attempts=1, completed_at=done, **fields
    )
    attempt_make(delivery=delivery, started_at=received_at)
    return delivery


def test_past_retention_attempts_final_deliveries_and_their_events_go(sync):
    old = {
        status: delivered(sync, user=f"old-{status}", received_days_ago=40, status=status)
        for status in ("succeeded", "failed", "expired", "skipped")
    }
    recent = delivered(sync, user="recent", received_days_ago=29)
    lonely = event_make(source=sync.sources.get(), user_id="filtered", received_at=days_ago(31))

    attempts_deleted, payloads_blanked = retention_purge()

    assert attempts_deleted == 4
    assert payloads_blanked == 0
    assert not Delivery.objects.filter(pk__in=[d.pk for d in old.values()]).exists()
    assert not Event.objects.filter(pk__in=[d.event_id for d in old.values()]).exists()
    assert not Event.objects.filter(pk=lonely.pk).exists()  # no sync wanted it
    # what is younger than the retention stays whole
    assert Delivery.objects.filter(pk=recent.pk).exists()
    assert Event.objects.get(pk=recent.event_id).payload["userId"] == "recent"
    assert DeliveryAttempt.objects.filter(delivery=recent).count() == 1


def test_a_pending_delivery_is_never_deleted_and_keeps_its_payload(sync):
    waiting = delivered(sync, user="paused", received_days_ago=90, status="pending")

    retention_purge()

    assert Delivery.objects.get(pk=waiting.pk).status == "pending"
    assert Event.objects.get(pk=waiting.event_id).payload["userId"] == "paused"
    # its log goes by age, like every other
    assert not DeliveryAttempt.objects.filter(delivery=waiting).exists()


def test_a_delivery_replayed_recently_stays_with_its_event_whose_payload_is_blanked(sync):
    replayed = delivered(sync, user="replayed", received_days_ago=45)
    Delivery.objects.filter(pk=replayed.pk).update(completed_at=days_ago(2))
    attempt_make(delivery=replayed, started_at=days_ago(2))

    attempts_deleted, payloads_blanked = retention_purge()

    assert Delivery.objects.filter(pk=replayed.pk).exists()
    assert Event.objects.get(pk=replayed.event_id).payload == {}
    assert payloads_blanked == 1
    assert attempts_deleted == 1  # the old one; the replay's attempt is recent
    assert DeliveryAttempt.objects.filter(delivery=replayed).count() == 1


def test_a_reference_another_model_sets_null_lets_go(sync):
    old = delivered(sync, user="erased", received_days_ago=60)
    deletion = PersonDeletion.objects.create(
        subject_hash="0" * 64, requested_via="api", requested_at=days_ago(60)
    )
    target = PersonDeletionTarget.objects.create(
        deletion=deletion, destination=sync.destination, sync=sync, delivery=old
    )

    retention_purge()

    assert not Delivery.objects.filter(pk=old.pk).exists()
    target.refresh_from_db()
    assert target.delivery_id is None


def test_a_run_stopped_by_its_budget_goes_on_where_it_stopped(sync, monkeypatch):
    monkeypatch.setattr(sweep, "PURGE_BATCH", 2)
    old = [delivered(sync, user=f"u{n}", received_days_ago=40 - n) for n in range(5)]
    recent = delivered(sync, user="recent", received_days_ago=1)

    def left() -> list[int]:
        return sorted(Delivery.objects.values_list("pk", flat=True))

    retention_purge(seconds=0)  # one batch, the two oldest events
    assert left() == sorted([d.pk for d in old[2:]] + [recent.pk])
    retention_purge(seconds=0)
    assert left() == sorted([old[4].pk, recent.pk])
    retention_purge()
    assert left() == [recent.pk]


def test_the_health_summaries_of_hours_past_retention_go(sync):
    old_hour = days_ago(31).replace(minute=0, second=0, microsecond=0)
    recent_hour = days_ago(2).replace(minute=0, second=0, microsecond=0)
    for hour in (old_hour, recent_hour):
        DeliveryHour.objects.create(sync=sync, hour=hour, delivered_first_try=3)

    retention_purge()

    assert list(DeliveryHour.objects.values_list("hour", flat=True)) == [recent_hour]
