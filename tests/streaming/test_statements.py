"""The hot path's precompiled statements do what the ORM calls they replace do."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from streaming.models import Delivery, DeliveryAttempt, Lane
from streaming.storage import RowsUpdate, row_insert, rows_update_together
from tests.factories import SyncFactory
from tests.streaming.delivery_setup import ingest, track

pytestmark = pytest.mark.django_db


@pytest.fixture
def delivery() -> Delivery:
    return ingest(SyncFactory(), [track("ada", "Signed Up")])[0]


def test_an_inserted_row_takes_the_model_defaults_and_its_json_as_json(delivery):
    body = {"event_name": "Signed Up", "metadata": {"plan": "pro", "seats": 3}}

    pk = row_insert(
        DeliveryAttempt,
        delivery_id=delivery.pk,
        event_id=delivery.event_id,
        user_key="ada",
        method="POST",
        url="https://api.intercom.io/events",
        request_body=body,
        started_at=timezone.now(),
    )

    attempt = DeliveryAttempt.objects.get(pk=pk)
    assert attempt.request_body == body
    assert attempt.category == DeliveryAttempt.Category.IN_FLIGHT
    assert (attempt.response_excerpt, attempt.error_code, attempt.status_code) == ("", "", None)
    assert DeliveryAttempt.objects.filter(request_body__metadata__plan="pro").count() == 1


def test_a_misspelt_field_is_an_error_and_inserts_nothing(delivery):
    with pytest.raises(TypeError, match="no field delivery"):
        row_insert(DeliveryAttempt, delivery=delivery.pk, started_at=timezone.now())

    assert not DeliveryAttempt.objects.exists()


def test_updates_together_change_only_matching_rows_and_count_the_main_one(delivery):
    later = timezone.now()
    pending = {"pk": delivery.pk, "status": Delivery.Status.PENDING}

    changed = rows_update_together(
        RowsUpdate(Delivery, pending, {"attempts": 2, "next_attempt_at": later, "reason": "503"}),
        RowsUpdate(Lane, {"pk": delivery.lane_id}, {"next_attempt_at": later}),
    )

    assert changed == 1
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.next_attempt_at, delivery.reason) == (2, later, "503")
    assert Lane.objects.get(pk=delivery.lane_id).next_attempt_at == later

    Delivery.objects.filter(pk=delivery.pk).update(status=Delivery.Status.SUCCEEDED)
    unchanged = rows_update_together(
        RowsUpdate(Delivery, pending, {"reason": "too late"}),
        RowsUpdate(Lane, {"pk": delivery.lane_id}, {"next_attempt_at": None}),
    )

    assert unchanged == 0
    assert Delivery.objects.get(pk=delivery.pk).reason == "503"
    # The others run whatever the main statement matched (the lane's due time is cleared).
    assert Lane.objects.get(pk=delivery.lane_id).next_attempt_at is None


def test_on_postgresql_the_statements_are_prepared_once_per_connection(delivery, settings):
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    for reason in ("first", "second", "third"):
        update = RowsUpdate(Delivery, {"pk": delivery.pk}, {"reason": reason})
        assert update.run() == 1

    assert _prepared_update_statements() == 1
    assert Delivery.objects.get(pk=delivery.pk).reason == "third"
    # Django's query capture still reads what a prepared statement ran.
    with CaptureQueriesContext(connection) as captured:
        RowsUpdate(Delivery, {"pk": delivery.pk}, {"reason": "fourth"}).run()
    assert captured.captured_queries[0]["sql"].startswith('UPDATE "streaming_delivery"')

    settings.SWITCHBOARD_DATABASE_PREPARE = False
    RowsUpdate(Delivery, {"pk": delivery.pk}, {"attempts": 1}).run()

    assert _prepared_update_statements() == 1


def _prepared_update_statements() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ["UPDATE %streaming_delivery%"],
        )
        return cursor.fetchone()[0]
