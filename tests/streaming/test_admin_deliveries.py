"""The delivery admin: lists, filters, searches, read-only audit trail, actions and secrets."""

from __future__ import annotations

from datetime import timedelta
from html import unescape

import pytest
from django.urls import reverse
from django.utils import timezone

from streaming.models import Delivery, DeliveryAttempt, Event
from tests.factories import (
    ContactLinkFactory,
    DestinationFactory,
    SourceFactory,
    SyncFactory,
)
from tests.streaming.audit_rows import (
    SECRET_TOKEN,
    attempt_make,
    delivery_make,
    event_make,
    staff_make,
    wakeups_clear,
    wakeups_read,
)

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:streaming_delivery_changelist"


@pytest.fixture
def world():
    """Two syncs into two workspaces, with deliveries in every state."""
    source = SourceFactory()
    sync_a = SyncFactory(
        name="app-to-us",
        sources=[source],
        destination=DestinationFactory(name="US workspace", access_token=SECRET_TOKEN),
    )
    sync_b = SyncFactory(
        name="app-to-eu", sources=[source], destination=DestinationFactory(name="EU workspace")
    )
    now = timezone.now()
    ada = event_make(
        source=source,
        user_id="ada",
        event_name="Order Completed",
        traits=None,
        context={"traits": {"email": "ada@example.com"}},
        received_at=now - timedelta(minutes=5),
    )
    bob = event_make(
        source=source,
        user_id="bob",
        type="identify",
        traits={"email": "bob@example.com"},
        received_at=now - timedelta(minutes=4),
    )
    old = event_make(
        source=source, user_id="cyd", event_name="Signed Up", received_at=now - timedelta(days=3)
    )
    rows = {
        "ada_ok": delivery_make(
            event=ada, sync=sync_a, status="succeeded", attempts=1, completed_at=now
        ),
        "ada_failed": delivery_make(
            event=ada,
            sync=sync_b,
            status="failed",
            attempts=1,
            reason="400 parameter_invalid: bad metadata",
            completed_at=now,
        ),
        "bob_pending": delivery_make(
            event=bob,
            sync=sync_a,
            status="pending",
            attempts=2,
            next_attempt_at=now + timedelta(minutes=3),
        ),
        "cyd_expired": delivery_make(
            event=old,
            sync=sync_a,
            status="expired",
            attempts=9,
            reason="retry window used up",
            completed_at=now,
        ),
    }
    attempt_make(
        delivery=rows["ada_ok"],
        request_body={"event_name": "Order Completed", "metadata": {"total": 42}},
        response_excerpt="",
    )
    attempt_make(
        delivery=rows["ada_failed"],
        status_code=400,
        category=DeliveryAttempt.Category.PERMANENT,
        error_code="parameter_invalid",
        response_excerpt='{"type":"error.list","errors":[{"code":"parameter_invalid","message":"bad metadata"}]}',
    )
    ContactLinkFactory(destination=sync_a.destination, user_key="ada", contact_id="c-123")
    return {"source": source, "sync_a": sync_a, "sync_b": sync_b, **rows}


def listed_ids(response) -> set[int]:
    return {obj.pk for obj in response.context["cl"].result_list}


def test_every_audit_list_renders_with_data(admin_client, world):
    for name in ("delivery", "event", "deliveryattempt", "contactlink"):
        response = admin_client.get(reverse(f"admin:streaming_{name}_changelist"))
        assert response.status_code == 200, name
        assert response.context["cl"].result_count > 0, name


def test_delivery_list_filters_by_status_sync_destination_type_and_name(admin_client, world):
    url = reverse(CHANGELIST)
    by_status = admin_client.get(url, {"status__exact": "failed"})
    assert listed_ids(by_status) == {world["ada_failed"].pk}

    by_sync = admin_client.get(url, {"sync__id__exact": world["sync_b"].pk})
    assert listed_ids(by_sync) == {world["ada_failed"].pk}

    by_destination = admin_client.get(
        url, {"sync__destination__id__exact": world["sync_a"].destination_id}
    )
    assert listed_ids(by_destination) == {
        world["ada_ok"].pk,
        world["bob_pending"].pk,
        world["cyd_expired"].pk,
    }

    by_type = admin_client.get(url, {"event__type__exact": "identify"})
    assert listed_ids(by_type) == {world["bob_pending"].pk}

    by_name = admin_client.get(url, {"event_name": "Order Completed"})
    assert listed_ids(by_name) == {world["ada_ok"].pk, world["ada_failed"].pk}
    by_prefix = admin_client.get(url, {"event_name": "Sign*"})
    assert listed_ids(by_prefix) == {world["cyd_expired"].pk}


def test_delivery_list_filters_by_date(admin_client, world):
    since = (timezone.now() - timedelta(days=1)).isoformat()
    response = admin_client.get(reverse(CHANGELIST), {"created_at__gte": since})
    assert world["cyd_expired"].pk not in listed_ids(response)
    assert world["ada_ok"].pk in listed_ids(response)


def test_search_finds_deliveries_by_user_id_email_and_message_id(admin_client, world):
    url = reverse(CHANGELIST)
    assert listed_ids(admin_client.get(url, {"q": "bob"})) == {world["bob_pending"].pk}
    # context.traits.email on a track, traits.email on an identify
    assert listed_ids(admin_client.get(url, {"q": "ada@example.com"})) == {
        world["ada_ok"].pk,
        world["ada_failed"].pk,
    }
    assert listed_ids(admin_client.get(url, {"q": "bob@example.com"})) == {world["bob_pending"].pk}
    message_id = world["cyd_expired"].event.message_id
    assert listed_ids(admin_client.get(url, {"q": message_id})) == {world["cyd_expired"].pk}
    # Exact, not "contains": a fragment finds nothing rather than scanning the table.
    assert listed_ids(admin_client.get(url, {"q": "ad"})) == set()


def test_event_and_attempt_lists_search_by_user_and_email(admin_client, world):
    events = admin_client.get(reverse("admin:streaming_event_changelist"), {"q": "ada@example.com"})
    assert listed_ids(events) == {world["ada_ok"].event_id}
    attempts = admin_client.get(reverse("admin:streaming_deliveryattempt_changelist"), {"q": "ada"})
    assert {a.delivery_id for a in attempts.context["cl"].result_list} == {
        world["ada_ok"].pk,
        world["ada_failed"].pk,
    }
    failed_only = admin_client.get(
        reverse("admin:streaming_deliveryattempt_changelist"), {"status_class": "4xx"}
    )
    assert {a.delivery_id for a in failed_only.context["cl"].result_list} == {
        world["ada_failed"].pk
    }


def test_a_delivery_page_shows_its_attempts_read_only_and_pretty_printed(admin_client, world):
    delivery = world["ada_failed"]
    response = admin_client.get(reverse("admin:streaming_delivery_change", args=[delivery.pk]))
    html = unescape(response.content.decode())
    assert response.status_code == 200
    # Intercom's error, indented
    assert '"code": "parameter_invalid"' in html
    assert "400 parameter_invalid: bad metadata" in html
    assert 'name="_save"' not in html  # nothing to save: no form
    assert "Replay" in html


def test_posting_to_a_delivery_page_changes_nothing(admin_client, world):
    delivery = world["ada_failed"]
    admin_client.post(
        reverse("admin:streaming_delivery_change", args=[delivery.pk]),
        {"status": "succeeded", "reason": ""},
    )
    delivery.refresh_from_db()
    assert delivery.status == "failed"


def test_events_and_attempts_cannot_be_added_changed_or_deleted(admin_client, world):
    event = world["ada_ok"].event
    attempt = world["ada_ok"].attempt_log.get()
    assert admin_client.get(reverse("admin:streaming_event_add")).status_code == 403
    assert (
        admin_client.get(reverse("admin:streaming_event_delete", args=[event.pk])).status_code
        == 403
    )
    admin_client.post(
        reverse("admin:streaming_event_change", args=[event.pk]), {"user_id": "mallory"}
    )
    admin_client.post(
        reverse("admin:streaming_deliveryattempt_change", args=[attempt.pk]), {"status_code": 200}
    )
    assert (
        admin_client.get(
            reverse("admin:streaming_deliveryattempt_delete", args=[attempt.pk])
        ).status_code
        == 403
    )
    event.refresh_from_db()
    attempt.refresh_from_db()
    assert event.user_id == "ada"
    assert attempt.status_code == 202
    changelist = admin_client.get(reverse("admin:streaming_event_changelist"))
    assert "delete_selected" not in changelist.content.decode()


def test_the_event_page_pretty_prints_the_payload(admin_client, world):
    event = world["ada_ok"].event
    html = admin_client.get(
        reverse("admin:streaming_event_change", args=[event.pk])
    ).content.decode()
    assert "&quot;email&quot;: &quot;ada@example.com&quot;" in html


def test_retry_now_makes_pending_due_and_wakes_its_lane(
    admin_client, world, django_capture_on_commit_callbacks
):
    wakeups_clear()
    pending = world["bob_pending"]
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse(CHANGELIST),
            {
                "action": "retry_now_action",
                "_selected_action": [pending.pk, world["ada_failed"].pk],
            },
            follow=True,
        )
    assert "1 pending delivery is due now" in response.content.decode()
    pending.refresh_from_db()
    pending.lane.refresh_from_db()
    assert pending.next_attempt_at <= timezone.now()
    assert pending.lane.next_attempt_at <= timezone.now()
    assert wakeups_read() == [pending.lane_id]
    world["ada_failed"].refresh_from_db()
    assert world["ada_failed"].status == "failed"  # not pending: left alone


def test_replay_action_sends_failed_and_expired_again(
    admin_client, world, django_capture_on_commit_callbacks
):
    wakeups_clear()
    selected = [world["ada_failed"], world["cyd_expired"], world["ada_ok"]]
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse(CHANGELIST),
            {"action": "replay_action", "_selected_action": [d.pk for d in selected]},
            follow=True,
        )
    assert "2 deliveries replayed" in response.content.decode()
    for delivery in selected:
        delivery.refresh_from_db()
    assert [d.status for d in selected] == ["pending", "pending", "succeeded"]
    assert selected[0].attempts == 0 and selected[0].reason == ""
    assert selected[0].attempt_log.count() == 1  # the history stays
    assert wakeups_read() == sorted([selected[0].lane_id, selected[1].lane_id])


def test_the_replay_button_on_a_delivery_page(
    admin_client, world, django_capture_on_commit_callbacks
):
    wakeups_clear()
    delivery = world["cyd_expired"]
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:streaming_delivery_operate", args=[delivery.pk]),
            {"operation": "replay"},
        )
    delivery.refresh_from_db()
    assert delivery.status == "pending"
    assert wakeups_read() == [delivery.lane_id]


def test_a_staff_user_without_permission_sees_nothing(client, world):
    client.force_login(staff_make(username="intern"))
    for name in ("delivery", "event", "deliveryattempt", "contactlink"):
        assert client.get(reverse(f"admin:streaming_{name}_changelist")).status_code == 403
    assert client.get(reverse("admin:streaming_timeline"), {"q": "ada"}).status_code == 403
    assert client.get(reverse("admin:streaming_sync_health")).status_code == 403
    assert client.get(reverse("admin:streaming_test_event")).status_code == 403
    response = client.post(
        reverse("admin:streaming_delivery_operate", args=[world["ada_failed"].pk]),
        {"operation": "replay"},
    )
    assert response.status_code == 403
    world["ada_failed"].refresh_from_db()
    assert world["ada_failed"].status == "failed"


def test_a_viewer_cannot_run_the_actions(client, world):
    client.force_login(staff_make(username="support", perms=("streaming.view_delivery",)))
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    assert "replay_action" not in response.content.decode()
    client.post(
        reverse(CHANGELIST),
        {"action": "replay_action", "_selected_action": [world["ada_failed"].pk]},
    )
    world["ada_failed"].refresh_from_db()
    assert world["ada_failed"].status == "failed"


def test_the_delivery_list_does_not_query_per_row(
    admin_client, world, django_assert_max_num_queries
):
    url = reverse(CHANGELIST)
    admin_client.get(url)  # warm the content-type and session caches
    with django_assert_max_num_queries(12) as few:
        admin_client.get(url)
    for n in range(40):
        event = event_make(source=world["source"], user_id=f"u{n}")
        delivery_make(event=event, sync=world["sync_a"], status="succeeded", attempts=1)
    with django_assert_max_num_queries(len(few.captured_queries)):
        admin_client.get(url)


def test_no_secret_on_any_page(admin_client, world):
    delivery = world["ada_ok"]
    urls = [
        reverse(CHANGELIST),
        reverse("admin:streaming_delivery_change", args=[delivery.pk]),
        reverse("admin:streaming_event_change", args=[delivery.event_id]),
        reverse("admin:streaming_deliveryattempt_changelist"),
        reverse("admin:streaming_deliveryattempt_change", args=[delivery.attempt_log.get().pk]),
        reverse("admin:streaming_contactlink_changelist"),
    ]
    for url in urls:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert SECRET_TOKEN not in response.content.decode(), url
    assert Event.objects.count() == 3 and Delivery.objects.count() == 4


def test_an_unfiltered_list_of_a_large_table_is_not_counted_row_by_row(
    admin_client, world, monkeypatch
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from streaming.audit.admin import LargeTablePaginator

    # given: PostgreSQL's statistics know the table; "large" lowered to fit a test
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE streaming_delivery")
    monkeypatch.setattr(LargeTablePaginator, "ESTIMATE_ABOVE", 1)

    with CaptureQueriesContext(connection) as unfiltered:
        response = admin_client.get(reverse(CHANGELIST))
    with CaptureQueriesContext(connection) as filtered:
        admin_client.get(reverse(CHANGELIST), {"status__exact": "failed"})

    def counts(queries):
        return [q for q in queries if "COUNT(*)" in q["sql"] and "streaming_delivery" in q["sql"]]

    assert counts(unfiltered.captured_queries) == []
    assert response.context["cl"].result_count == 4  # the estimate, exact here
    assert len(counts(filtered.captured_queries)) == 1  # a filtered list is counted exactly


def test_replaying_into_a_paused_sync_says_it_will_wait(
    admin_client, world, django_capture_on_commit_callbacks
):
    world["sync_b"].status = "paused"
    world["sync_b"].save()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse(CHANGELIST),
            {"action": "replay_action", "_selected_action": [world["ada_failed"].pk]},
            follow=True,
        )
    html = response.content.decode()
    assert "1 of these deliveries belongs to a paused sync" in html
    world["ada_failed"].refresh_from_db()
    assert world["ada_failed"].status == "pending"  # replayed all the same, it waits its turn
