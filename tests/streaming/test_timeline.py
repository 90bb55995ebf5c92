"""The user timeline: one card per call, its deliveries and their tries, why a call was kept out,
filters, the start page's recent users, and the anonymous visits before sign-in."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest
from django.urls import reverse
from django.utils import timezone

from integrations.models import EventFilter
from streaming.audit.timeline import TimelineFilters, user_timeline
from streaming.audit.tries import attempts_by_try
from streaming.delivery.deletion import person_deletion_request
from streaming.delivery.sweep import retention_purge
from streaming.models import Delivery, DeliveryAttempt, Event, KeptOut, PersonDeletion
from tests.factories import DestinationFactory, SourceFactory, SyncFactory
from tests.streaming.audit_rows import SECRET_TOKEN, attempt_make, delivery_make, event_make
from tests.streaming.delivery_setup import drain_all, identify, ingest, sync_into, track

pytestmark = pytest.mark.django_db

TIMELINE = "admin:streaming_timeline"


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


@pytest.fixture
def story():
    """Ada identifies, tracks; the track is retried once after a 503; Bob does something too."""
    t0 = timezone.now() - timedelta(hours=1)
    sync = SyncFactory(
        name="app-to-intercom",
        sources=[SourceFactory()],
        destination=DestinationFactory(access_token=SECRET_TOKEN),
    )
    source = sync.sources.get()
    identify_event = event_make(
        source=source,
        user_id="ada",
        type="identify",
        traits={"email": "ada@example.com", "name": "Ada"},
        received_at=t0,
    )
    track_event = event_make(
        source=source,
        user_id="ada",
        event_name="Order Completed",
        received_at=t0 + timedelta(seconds=2),
    )
    bob = event_make(source=source, user_id="bob", received_at=t0 + timedelta(seconds=3))
    d_identify = delivery_make(
        event=identify_event, sync=sync, status="succeeded", attempts=1, completed_at=t0
    )
    attempt_make(
        delivery=d_identify,
        path="/contacts",
        status_code=200,
        response_excerpt='{"type":"contact","id":"c-1"}',
        started_at=t0,
    )
    d_track = delivery_make(event=track_event, sync=sync, status="succeeded", attempts=2)
    attempt_make(
        delivery=d_track,
        status_code=503,
        category=DeliveryAttempt.Category.RETRYABLE,
        response_excerpt="Service Unavailable",
        started_at=t0 + timedelta(seconds=3),
    )
    attempt_make(delivery=d_track, status_code=202, started_at=t0 + timedelta(seconds=14))
    delivery_make(event=bob, sync=sync, status="succeeded", attempts=1)
    return {
        "sync": sync,
        "identify": identify_event,
        "track": track_event,
        "d_identify": d_identify,
        "d_track": d_track,
    }


def test_one_card_per_call_newest_first_with_its_deliveries_and_tries(story):
    timeline = user_timeline(query="ada")

    assert [card.event.pk for card in timeline.cards] == [story["track"].pk, story["identify"].pk]
    (track_delivery,) = timeline.cards[0].deliveries
    assert track_delivery.delivery == story["d_track"]
    # the 503 ended a try; the 202 is the second try
    assert [(t.number, t.outcome) for t in track_delivery.tries] == [(1, "retry"), (2, "succeeded")]
    assert [t.path for t in track_delivery.tries] == ["Intercom error 503", "event sent"]


def test_the_page_shows_intercoms_answers_and_links_to_the_admin_objects(admin_client, story):
    response = admin_client.get(reverse(TIMELINE), {"q": "ada"})
    html = unescape(response.content.decode())
    assert response.status_code == 200
    assert "Service Unavailable" in html
    assert '"id": "c-1"' in html  # pretty-printed
    assert reverse("admin:streaming_delivery_change", args=[story["d_track"].pk]) in html
    assert reverse("admin:streaming_event_change", args=[story["track"].pk]) in html
    attempt = story["d_track"].attempt_log.order_by("id").first()
    assert reverse("admin:streaming_deliveryattempt_change", args=[attempt.pk]) in html
    assert html.index("Try 1") < html.index("Service Unavailable") < html.index("Try 2")
    assert "bob" not in text_of(html.split('id="sb-timeline"')[1])
    assert SECRET_TOKEN not in html
    # times to the second, with the timezone
    assert re.search(r"received \d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z]{2,5}", text_of(html))


def test_an_email_finds_the_user_and_all_their_calls(admin_client, story):
    # The email only appears on the identify; the track is found through its user id.
    response = admin_client.get(reverse(TIMELINE), {"q": "Ada@Example.com"})
    timeline = response.context["timeline"]
    assert {c.event.pk for c in timeline.cards} == {story["identify"].pk, story["track"].pk}
    assert "ada" in timeline.user_ids


def test_a_lane_key_finds_deliveries_of_syncs_matching_by_email(story):
    sync = story["sync"]
    event = event_make(source=sync.sources.get(), user_id="u-9")
    delivery = delivery_make(event=event, sync=sync, user_key="nine@example.com")
    timeline = user_timeline(query="nine@example.com")
    assert [d.delivery.pk for c in timeline.cards for d in c.deliveries] == [delivery.pk]


def test_an_unknown_user_says_so(admin_client, story):
    response = admin_client.get(reverse(TIMELINE), {"q": "nobody"})
    assert "Nothing found for “nobody”" in response.content.decode()


def test_the_start_page_lists_recent_users_to_open(admin_client, story):
    response = admin_client.get(reverse(TIMELINE))
    html = response.content.decode()
    assert 'name="q"' in html
    recent = html.split('id="sb-recent-users"')[1]
    assert '?q=bob"' in recent and '?q=ada"' in recent
    assert recent.index("?q=bob") < recent.index("?q=ada")  # the latest call first


def test_a_long_history_is_paged_newest_first(admin_client, story):
    sync = story["sync"]
    start = timezone.now()
    made = [
        event_make(
            source=sync.sources.get(), user_id="ada", received_at=start + timedelta(seconds=n)
        )
        for n in range(5)
    ]
    first = user_timeline(query="ada", limit=3)
    assert [c.event.pk for c in first.cards] == [e.pk for e in reversed(made[2:])]
    second = user_timeline(query="ada", limit=3, before=first.older)
    assert [c.event.pk for c in second.cards] == [made[1].pk, made[0].pk, story["track"].pk]
    html = admin_client.get(reverse(TIMELINE), {"q": "ada"}).content.decode()
    assert "next page" not in html  # 7 calls fit one page of 50


def test_filters_by_sync_type_and_outcome(story):
    sync = story["sync"]
    other = SyncFactory(name="other", sources=[sync.sources.get()])
    failed = event_make(source=sync.sources.get(), user_id="ada", event_name="Refund")
    delivery_make(event=failed, sync=other, status="failed", reason="Intercom said no")

    by_sync = user_timeline(query="ada", filters=TimelineFilters(sync_id=other.pk))
    assert [c.event.pk for c in by_sync.cards] == [failed.pk]
    by_type = user_timeline(query="ada", filters=TimelineFilters(call_type="identify"))
    assert [c.event.pk for c in by_type.cards] == [story["identify"].pk]
    by_outcome = user_timeline(query="ada", filters=TimelineFilters(outcome="failed"))
    assert [c.event.pk for c in by_outcome.cards] == [failed.pk]
    assert TimelineFilters.from_query({"outcome": "nonsense", "sync": "x"}) == TimelineFilters()


def test_the_normal_contact_missing_path_reads_as_one_succeeded_try(story):
    # given: POST /events 404 -> POST /contacts 200 -> POST /events 202, in one run of the door
    sync = story["sync"]
    event = event_make(source=sync.sources.get(), user_id="new-user")
    delivery = delivery_make(event=event, sync=sync, status="succeeded", attempts=1)
    t = timezone.now()
    attempt_make(
        delivery=delivery,
        status_code=404,
        category="permanent",
        error_code="not_found",
        started_at=t,
    )
    attempt_make(
        delivery=delivery, path="/contacts", status_code=200, started_at=t + timedelta(0, 0.1)
    )
    attempt_make(delivery=delivery, status_code=202, started_at=t + timedelta(seconds=0.2))

    (only,) = attempts_by_try(delivery, list(delivery.attempt_log.order_by("id")))

    assert only.outcome == "succeeded"
    assert only.path == "contact did not exist → contact created → event resent"
    assert [e.tone for e in only.exchanges] == ["handled", "success", "success"]


def test_a_replay_after_a_refusal_starts_a_new_try(story):
    sync = story["sync"]
    event = event_make(source=sync.sources.get(), user_id="ada")
    t = timezone.now() - timedelta(minutes=5)
    delivery = delivery_make(event=event, sync=sync, status="succeeded", attempts=1)
    attempt_make(delivery=delivery, status_code=400, category="permanent", started_at=t)
    Delivery.objects.filter(pk=delivery.pk).update(window_started_at=t + timedelta(seconds=2))
    attempt_make(delivery=delivery, status_code=202, started_at=t + timedelta(seconds=3))
    delivery.refresh_from_db()

    tries = attempts_by_try(delivery, list(delivery.attempt_log.order_by("id")))

    assert [(t.outcome, t.replayed) for t in tries] == [("failed", False), ("succeeded", True)]


def test_the_delivery_page_groups_attempts_by_try(admin_client, story):
    html = admin_client.get(
        reverse("admin:streaming_delivery_change", args=[story["d_track"].pk])
    ).content.decode()
    text = text_of(html)
    assert "Try 1" in text and "Try 2" in text
    assert "failed, to be tried again" in text
    assert 'data-try="2"' in html


# --- kept out, through the real ingest and the sandbox ------------------------------------------


@pytest.fixture
def filtered_sync(intercom_sandbox):
    sync = sync_into(intercom_sandbox, name="orders-only")
    EventFilter.objects.create(sync=sync, action=EventFilter.Action.INCLUDE, event_name="Order *")
    return sync


def test_a_call_a_sync_kept_out_says_why_on_the_users_timeline(admin_client, filtered_sync):
    ingest(filtered_sync, [track("ada", "Order Completed"), track("ada", "Page Scrolled")])

    (kept,) = KeptOut.objects.all()
    assert (kept.user_key, kept.sync_id, kept.reason) == (
        "ada",
        filtered_sync.pk,
        "matches no include filter",
    )
    html = admin_client.get(reverse(TIMELINE), {"q": "ada"}).content.decode()
    assert "Not sent to orders-only : matches no include filter" in text_of(html)
    kept_only = user_timeline(query="ada", filters=TimelineFilters(outcome="kept_out"))
    assert [c.event.event_name for c in kept_only.cards] == ["Page Scrolled"]


def test_the_recovery_path_of_a_new_contact_is_named_on_the_timeline(
    admin_client, intercom_sandbox
):
    sync = sync_into(intercom_sandbox, name="all")
    ingest(sync, [track("newcomer", "Order Completed")])
    drain_all(sync)

    (card,) = user_timeline(query="newcomer").cards
    (delivery,) = card.deliveries
    assert delivery.delivery.status == "succeeded"
    assert len(delivery.tries) == 1
    assert "contact did not exist" in delivery.tries[0].path
    assert delivery.tries[0].path.endswith("event resent")


def test_the_timeline_follows_an_alias_from_the_anonymous_id(admin_client, intercom_sandbox):
    sync = sync_into(intercom_sandbox, name="all")
    ingest(sync, [{"type": "track", "anonymousId": "anon-7", "event": "Viewed Pricing"}])
    ingest(sync, [{"type": "alias", "userId": "grace", "previousId": "anon-7"}])
    ingest(sync, [identify("grace")])

    timeline = user_timeline(query="grace")

    assert timeline.aliases == ["anon-7"]
    assert {c.event.type for c in timeline.cards} == {"track", "alias", "identify"}
    html = admin_client.get(reverse(TIMELINE), {"q": "grace"}).content.decode()
    assert "Also known before signing in as anon-7" in text_of(html)


def test_calls_kept_out_go_with_retention_and_with_a_deleted_person(
    settings, filtered_sync, django_capture_on_commit_callbacks
):
    ingest(filtered_sync, [track("old", "Scrolled"), track("gone", "Scrolled")])
    assert KeptOut.objects.count() == 2

    settings.SWITCHBOARD_RETENTION = timedelta(days=1)
    Event.objects.filter(user_id="old").update(received_at=timezone.now() - timedelta(days=2))
    retention_purge()
    assert list(KeptOut.objects.values_list("user_key", flat=True)) == ["gone"]

    with django_capture_on_commit_callbacks(execute=True):
        person_deletion_request(
            user_id="gone", destination_ids=None, requested_by=None, via=PersonDeletion.Via.API
        )
    assert not KeptOut.objects.exists()
