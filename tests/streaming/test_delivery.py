"""Delivering a lane into the Intercom sandbox: states, the attempt log, signals, health."""

from __future__ import annotations

import pytest

from integrations.models import Destination, Sync
from streaming.delivery.attempts import excerpt_cut
from streaming.models import ContactLink, Delivery, DeliveryAttempt, KnownEventName
from streaming.signals import delivery_failed, delivery_succeeded
from tests.streaming.delivery_setup import drain_all, identify, ingest, statuses, sync_into, track

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent_signals():
    received: list[tuple[str, int, str]] = []

    def on_success(sender, delivery, **kwargs):
        received.append(("succeeded", delivery.pk, delivery.status))

    def on_failure(sender, delivery, **kwargs):
        received.append(("failed", delivery.pk, delivery.status))

    delivery_succeeded.connect(on_success)
    delivery_failed.connect(on_failure)
    yield received
    delivery_succeeded.disconnect(on_success)
    delivery_failed.disconnect(on_failure)


def test_identify_then_track_reach_intercom_in_order_and_succeed(intercom_sandbox, sent_signals):
    # given
    sync = sync_into(intercom_sandbox)
    deliveries = ingest(sync, [identify("u1", name="Ada"), track("u1", "Signed Up")])
    # when
    drain_all(sync)
    # then
    assert statuses(deliveries) == ["succeeded", "succeeded"]
    contacts = intercom_sandbox.state()["contacts"]
    assert [c["external_id"] for c in contacts] == ["u1"]
    paths = [(r["method"], r["path"]) for r in intercom_sandbox.requests]
    first_event = paths.index(("POST", "/events"))
    assert any(p == ("POST", "/contacts") for p in paths[:first_event])
    assert [s[0] for s in sent_signals] == ["succeeded", "succeeded"]
    assert all(status == "succeeded" for _, _, status in sent_signals)
    link = ContactLink.objects.get(destination=sync.destination, user_key="u1")
    assert link.contact_id == contacts[0]["id"]
    assert set(KnownEventName.objects.values_list("name", flat=True)) == {"Signed Up"}
    assert Destination.objects.get(pk=sync.destination_id).last_success_at is not None


def test_every_http_exchange_is_logged_without_the_token(intercom_sandbox):
    sync = sync_into(intercom_sandbox)
    deliveries = ingest(sync, [identify("u2"), track("u2", "Paid", plan="pro")])
    drain_all(sync)
    attempts = list(DeliveryAttempt.objects.order_by("id"))
    # one row per request the sandbox received, in the same order, with its answer
    assert [
        (a.method, a.url.split("?")[0].removeprefix(intercom_sandbox.url), a.status_code)
        for a in attempts
    ] == [(r["method"], r["path"], r["status"]) for r in intercom_sandbox.requests]
    for attempt in attempts:
        # a lookup that finds nothing (404) is part of creating the contact
        expected = "success" if attempt.status_code < 300 else "permanent"
        assert attempt.category == expected
        assert attempt.duration_ms is not None
        assert attempt.user_key == "u2"
        assert attempt.delivery_id in {d.pk for d in deliveries}
        assert (
            intercom_sandbox.token
            not in f"{attempt.url} {attempt.request_body} {attempt.response_excerpt}"
        )
    event_attempt = next(a for a in attempts if a.url.endswith("/events"))
    assert event_attempt.request_body["event_name"] == "Paid"
    assert event_attempt.event_id == deliveries[1].event_id


def test_a_refused_call_fails_with_intercoms_reason_and_is_not_retried(
    intercom_sandbox, sent_signals
):
    # given Intercom refuses the event with a 400
    sync = sync_into(intercom_sandbox)
    first, second = ingest(sync, [identify("u3"), track("u3", "Bad")])
    drain_all(sync)
    intercom_sandbox.conformance_off("a forced 400 is not a request problem")
    later = ingest(sync, [track("u3", "Refused")])[0]
    intercom_sandbox.configure(force_status=400, force_count=1, force_path="/events")
    # when
    drain_all(sync)
    drain_all(sync)
    # then
    later.refresh_from_db()
    assert later.status == Delivery.Status.FAILED
    assert "HTTP 400" in later.reason and "parameter_invalid" in later.reason
    assert later.completed_at is not None
    refused = [r for r in intercom_sandbox.requests if r["status"] == 400]
    assert len(refused) == 1  # not tried again
    assert ("failed", later.pk, "failed") in sent_signals
    attempt = DeliveryAttempt.objects.get(delivery=later, status_code=400)
    assert attempt.category == DeliveryAttempt.Category.PERMANENT
    assert attempt.error_code == "parameter_invalid"
    destination = Destination.objects.get(pk=sync.destination_id)
    assert "parameter_invalid" in destination.last_error


def test_a_call_with_nothing_to_send_is_skipped_with_the_reason(intercom_sandbox):
    sync = sync_into(intercom_sandbox, page_handling=Sync.PageHandling.IGNORE)
    (page,) = ingest(sync, [{"type": "page", "userId": "u4", "name": "Home"}])
    drain_all(sync)
    page.refresh_from_db()
    assert page.status == Delivery.Status.SKIPPED
    assert page.reason
    assert intercom_sandbox.requests == []


def test_a_paused_sync_holds_its_deliveries(intercom_sandbox):
    sync = sync_into(intercom_sandbox)
    (delivery,) = ingest(sync, [identify("u5")])
    Sync.objects.filter(pk=sync.pk).update(status=Sync.Status.PAUSED)
    drain_all(sync)
    assert statuses([delivery]) == ["pending"]
    assert intercom_sandbox.requests == []
    Sync.objects.filter(pk=sync.pk).update(status=Sync.Status.ENABLED)
    drain_all(sync)
    assert statuses([delivery]) == ["succeeded"]


def test_response_excerpts_are_cut_at_4_kb_without_splitting_characters():
    text = "é" * 3000  # 6000 bytes of UTF-8
    cut = excerpt_cut(text)
    assert len(cut.encode()) <= 4096
    assert cut == "é" * 2048
    assert excerpt_cut("short") == "short"
