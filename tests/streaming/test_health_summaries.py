"""The health page's summary rows: each settled hour counted once, and the figures right
whatever happens to its deliveries afterwards (replays, late completions, deletions, rows
written into the past), also while another transaction is changing them."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from streaming.audit.delivery_hours import SETTLED_AFTER, outcomes_counted, outcomes_summarised
from streaming.audit.selectors import syncs_health
from streaming.delivery.replay import deliveries_replay
from streaming.models import Delivery, DeliveryHour
from tests.streaming.audit_rows import delivery_make, event_make

pytestmark = pytest.mark.django_db

OUTCOMES = [
    ("succeeded", 1),
    ("succeeded", 1),
    ("succeeded", 3),
    ("failed", 1),
    ("expired", 9),
    ("skipped", 0),
    ("pending", 2),
]


def day_of(sync, *, hours: range = range(0, 50, 3)) -> dict[tuple[int, str], Delivery]:
    """Every outcome at 7 past each of ``hours`` hours ago; {(hours ago, status): delivery}."""
    now = timezone.now()
    made = {}
    for hours_ago in hours:
        for n, (status, attempts) in enumerate(OUTCOMES):
            received_at = now - timedelta(hours=hours_ago, minutes=7)
            event = event_make(
                source=sync.sources.get(), user_id=f"u{hours_ago}-{n}", received_at=received_at
            )
            made[(hours_ago, status)] = delivery_make(
                event=event,
                sync=sync,
                status=status,
                attempts=attempts,
                completed_at=None if status == "pending" else received_at + timedelta(seconds=n),
            )
    return made


def both(sync, *, hours: float = 24):
    since = timezone.now() - timedelta(hours=hours)
    return (
        outcomes_summarised(sync_ids=[sync.pk], since=since)[sync.pk],
        outcomes_counted(sync_ids=[sync.pk], since=since)[sync.pk],
    )


def hours_written(sync) -> set:
    return set(DeliveryHour.objects.filter(sync=sync).values_list("hour", flat=True))


def hour_of(delivery: Delivery):
    return delivery.created_at.replace(minute=0, second=0, microsecond=0)


def test_settled_hours_are_counted_once_and_add_up_to_the_deliveries(sync):
    made = day_of(sync)

    for hours in (24, 6, 0.5, 49, 24 * 30):
        summarised, counted = both(sync, hours=hours)
        assert summarised == counted, hours

    written = hours_written(sync)
    settled = timezone.now() - SETTLED_AFTER
    # every hour up to the settled boundary has its row (an hour without deliveries, a zero row);
    # the last hour or two are counted from the deliveries at each read
    assert hour_of(made[(3, "failed")]) in written
    assert hour_of(made[(0, "failed")]) not in written
    assert all(hour < settled for hour in written)
    summarised, _ = both(sync)
    assert summarised.failed == 8  # 7 to 0 hours... : every 3 hours of the last 24
    assert summarised.replayable == 2 * 17  # failed + expired, any age


def test_the_page_reads_the_same_figures_as_before(sync):
    day_of(sync, hours=range(0, 30, 5))
    (health,) = syncs_health()
    _, counted = both(sync)
    assert (health.delivered_first_try, health.delivered_after_retry) == (
        counted.delivered_first_try,
        counted.delivered_after_retry,
    )
    assert (health.failed, health.expired, health.skipped) == (
        counted.failed,
        counted.expired,
        counted.skipped,
    )
    assert health.pending == 6
    assert health.replayable == counted.replayable == 12


def test_a_replayed_delivery_reopens_its_hour(sync, fresh_cache):
    made = day_of(sync)
    both(sync)
    failed = made[(9, "failed")]
    assert hour_of(failed) in hours_written(sync)

    deliveries_replay(deliveries=Delivery.objects.filter(pk=failed.pk))

    assert hour_of(failed) not in hours_written(sync)
    summarised, counted = both(sync)
    assert summarised == counted
    assert summarised.failed == 7
    # and once the replay succeeds, late, the hour is counted again with it
    Delivery.objects.filter(pk=failed.pk).update(
        status="succeeded", attempts=1, completed_at=timezone.now()
    )
    summarised, counted = both(sync)
    assert summarised == counted


def test_a_delivery_completed_long_after_its_creation_reopens_its_hour(sync):
    made = day_of(sync)
    both(sync)
    late = made[(6, "pending")]
    assert hour_of(late) in hours_written(sync)
    before, _ = both(sync)

    Delivery.objects.filter(pk=late.pk).update(
        status="succeeded", attempts=3, completed_at=timezone.now()
    )

    assert hour_of(late) not in hours_written(sync)
    summarised, counted = both(sync)
    assert summarised == counted
    assert summarised.delivered_after_retry == before.delivered_after_retry + 1


def test_a_delivery_completed_within_the_hour_leaves_the_summaries_alone(sync):
    made = day_of(sync)
    both(sync)
    rows = list(DeliveryHour.objects.filter(sync=sync).values_list("id", "hour"))

    Delivery.objects.filter(pk=made[(0, "pending")].pk).update(
        status="succeeded", attempts=1, completed_at=timezone.now()
    )

    assert list(DeliveryHour.objects.filter(sync=sync).values_list("id", "hour")) == rows
    summarised, counted = both(sync)
    assert summarised == counted


def test_deleted_deliveries_reopen_their_hours(sync):
    made = day_of(sync)
    both(sync)
    gone = [made[(12, "succeeded")], made[(30, "expired")]]

    Delivery.objects.filter(pk__in=[d.pk for d in gone]).delete()

    assert not {hour_of(d) for d in gone} & hours_written(sync)
    summarised, counted = both(sync, hours=48)
    assert summarised == counted


def test_a_final_delivery_written_into_a_settled_hour_reopens_it(sync):
    made = day_of(sync)
    both(sync)
    hour = hour_of(made[(15, "failed")])

    event = event_make(source=sync.sources.get(), user_id="late", received_at=hour)
    delivery_make(event=event, sync=sync, status="failed", attempts=1, completed_at=hour)

    assert hour not in hours_written(sync)
    summarised, counted = both(sync)
    assert summarised == counted


def test_a_delivery_moved_to_another_hour_reopens_both(sync):
    made = day_of(sync)
    both(sync)
    moved = made[(18, "skipped")]
    to = hour_of(made[(27, "skipped")])

    Delivery.objects.filter(pk=moved.pk).update(created_at=to + timedelta(minutes=1))

    assert not {hour_of(moved), to} & hours_written(sync)
    summarised, counted = both(sync, hours=30)
    assert summarised == counted


def test_the_p95_is_that_of_the_latest_successes(sync, monkeypatch):
    from streaming.audit import selectors

    now = timezone.now()
    for n, seconds in enumerate([100, 200, 1, 2, 3]):  # the two slow ones are the oldest
        received_at = now - timedelta(minutes=50 - n)
        event = event_make(source=sync.sources.get(), user_id=f"p{n}", received_at=received_at)
        delivery_make(
            event=event,
            sync=sync,
            status="succeeded",
            attempts=1,
            completed_at=received_at + timedelta(seconds=seconds),
        )
    monkeypatch.setattr(selectors, "P95_SAMPLE", 3)

    (health,) = syncs_health()

    assert health.p95_seconds == pytest.approx(2.9)  # of 1, 2, 3 s


@pytest.mark.django_db(transaction=True)
def test_a_change_in_flight_is_counted_as_committed_and_never_waited_for(sync):
    made = day_of(sync, hours=range(3, 12, 4))
    failed = made[(7, "failed")]
    both(sync)
    changed, release = threading.Event(), threading.Event()

    def replay_held_open() -> None:
        try:
            with transaction.atomic():
                Delivery.objects.filter(pk=failed.pk).update(status="pending")
                changed.set()
                release.wait(10)
        finally:
            connection.close()

    other = threading.Thread(target=replay_held_open)
    other.start()
    assert changed.wait(10)
    try:
        # the other transaction holds the sync's summary lock (shared): this read does not
        # wait for it; it counts the deliveries as committed
        summarised, counted = both(sync)
        assert summarised == counted
        assert summarised.failed == 3
    finally:
        release.set()
        other.join(10)
    summarised, counted = both(sync)
    assert summarised == counted
    assert summarised.failed == 2


@pytest.mark.django_db(transaction=True)
def test_a_change_waits_for_a_read_in_progress_then_reopens_the_hour(sync):
    made = day_of(sync, hours=range(3, 12, 4))
    failed = made[(7, "failed")]
    done = threading.Event()

    def replay() -> None:
        try:
            Delivery.objects.filter(pk=failed.pk).update(status="pending")
            done.set()
        finally:
            connection.close()

    with transaction.atomic():
        outcomes_summarised(sync_ids=[sync.pk], since=timezone.now() - timedelta(hours=24))
        assert hour_of(failed) in hours_written(sync)
        other = threading.Thread(target=replay)
        other.start()
        # the read holds the sync's summary lock until its transaction ends
        assert not done.wait(0.5)
    other.join(10)
    assert done.is_set()
    assert hour_of(failed) not in hours_written(sync)
    summarised, counted = both(sync)
    assert summarised == counted
