"""Visitors as leads, step by step in one process: routing at ingest, and the merge's timing."""

from __future__ import annotations

import pytest
from django.utils import timezone

from integrations.models import Sync
from streaming.delivery.lanes import lane_drain
from streaming.models import Delivery, Lane, VisitorLink
from tests.streaming.delivery_setup import drain_all, ingest, statuses, sync_into

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_cache")]


def page(device: str, name: str, **call) -> dict:
    return {"type": "page", "anonymousId": device, "name": name, **call}


def lead_sync(sandbox) -> Sync:
    return sync_into(sandbox, anonymous=Sync.Anonymous.LEAD, page_handling=Sync.PageHandling.EVENT)


def drain(sync: Sync, user_key: str) -> None:
    lane = Lane.objects.get(sync=sync, user_key=user_key)
    Delivery.objects.filter(lane=lane, status="pending").update(next_attempt_at=None)
    Lane.objects.filter(pk=lane.pk).update(next_attempt_at=timezone.now())
    lane_drain(lane_id=lane.pk)


def test_anonymous_calls_after_the_link_go_to_the_users_lane(intercom_sandbox):
    sync = lead_sync(intercom_sandbox)

    before = ingest(sync, [page("d-1", "Home")])
    linking = ingest(sync, [{"type": "identify", "userId": "u-1", "anonymousId": "d-1"}])
    after = ingest(sync, [page("d-1", "Docs"), page("d-2", "Home")])

    assert [d.user_key for d in before + linking + after] == ["d-1", "u-1", "u-1", "d-2"]
    assert list(VisitorLink.objects.values_list("anonymous_id", "user_id")) == [("d-1", "u-1")]


def test_a_link_in_the_same_batch_routes_the_calls_after_it(intercom_sandbox):
    sync = lead_sync(intercom_sandbox)

    deliveries = ingest(
        sync,
        [
            page("d-1", "Home"),
            {"type": "alias", "previousId": "d-1", "userId": "u-1"},
            page("d-1", "Docs"),
        ],
    )

    assert [d.user_key for d in deliveries] == ["d-1", "u-1", "u-1"]


def test_the_first_user_linked_to_a_visitor_keeps_them(intercom_sandbox):
    sync = lead_sync(intercom_sandbox)

    ingest(sync, [{"type": "identify", "userId": "u-1", "anonymousId": "d-1"}])
    ingest(sync, [{"type": "identify", "userId": "u-2", "anonymousId": "d-1"}])
    [later] = ingest(sync, [page("d-1", "Docs")])

    assert later.user_key == "u-1"


def test_a_sync_that_does_not_send_visitors_as_leads_keeps_no_links(intercom_sandbox):
    sync = sync_into(intercom_sandbox, anonymous=Sync.Anonymous.ANONYMOUS_ID)

    ingest(sync, [{"type": "identify", "userId": "u-1", "anonymousId": "d-1"}])
    [later] = ingest(sync, [page("d-1", "Docs")])

    assert later.user_key == "d-1"
    assert not VisitorLink.objects.exists()


def test_the_merge_waits_until_the_visitors_own_calls_went_out(intercom_sandbox):
    # given a visitor's page view queued in their lane, then their identify in the user's lane
    sync = lead_sync(intercom_sandbox)
    [viewed] = ingest(sync, [page("d-1", "Pricing")])
    [identified] = ingest(sync, [{"type": "identify", "userId": "u-1", "anonymousId": "d-1"}])

    # when a worker takes the user's lane first
    drain(sync, "u-1")

    # then the user is written, but the merge waits: merged now, the lead would be gone
    # for the page view, which would create a new lead that nothing merges
    identified.refresh_from_db()
    assert identified.status == "pending"
    assert "waiting for the calls about the visitor 'd-1'" in identified.reason
    assert [c["role"] for c in intercom_sandbox.state()["contacts"]] == ["user"]

    # when the visitor's lane is drained, then the user's again
    drain(sync, "d-1")
    drain(sync, "u-1")

    # then the lead (with its page view) is merged into the user, once
    assert statuses([viewed, identified]) == ["succeeded", "succeeded"]
    state = intercom_sandbox.state()
    [user] = state["contacts"]
    assert (user["role"], user["external_id"]) == ("user", "u-1")
    assert len(state["merged"]) == 1
    assert [(e["event_name"], e["contact_id"]) for e in state["events"]] == [
        ("Viewed Pricing", user["id"])
    ]


def test_a_visitors_calls_after_the_merge_reach_the_user_even_from_their_own_lane(
    intercom_sandbox,
):
    # given a merged visitor
    sync = lead_sync(intercom_sandbox)
    ingest(sync, [page("d-1", "Home"), {"type": "alias", "previousId": "d-1", "userId": "u-1"}])
    ingest(sync, [{"type": "identify", "userId": "u-1", "traits": {"email": "u1@example.com"}}])
    drain_all(sync)
    # (a call queued in the visitor's lane before the link was known: a replay, a race)
    late = Delivery.objects.get(sync=sync, user_key="d-1")
    Delivery.objects.filter(pk=late.pk).update(status="failed")

    # when it is replayed
    Delivery.objects.filter(pk=late.pk).update(status="pending", next_attempt_at=None)
    drain(sync, "d-1")

    # then it reaches the user: no new lead
    state = intercom_sandbox.state()
    assert [c["role"] for c in state["contacts"]] == ["user"]
    assert (
        len(
            [
                r
                for r in intercom_sandbox.requests
                if r["path"] == "/contacts" and r["method"] == "POST"
            ]
        )
        == 2
    )
