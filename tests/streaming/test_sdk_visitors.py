"""Visitors as leads, end to end: the official SDKs, a live Switchboard, real workers, the sandbox.

Each visitor views pages anonymously, signs up (identify with their anonymousId), then acts
(tracks with their userId, and one more page view that carries only the anonymousId). Every
visitor must end as one user in Intercom with the page views of their lead moved over, the lead
merged exactly once, and no merge refused.
"""

from __future__ import annotations

from collections import Counter

import pytest
from rudderstack.analytics import Client as RudderClient
from rudderstack.analytics import request as rudder_request
from segment.analytics import Client as SegmentClient
from segment.analytics import request as segment_request

from integrations.models import Sync
from streaming.models import Delivery, Lane, VisitorLink
from tests.factories import SourceFactory, WriteKeyFactory
from tests.streaming.delivery_setup import sync_into, wait_settled

VISITORS = 50
FAST = {
    "SWITCHBOARD_SWEEP_SECONDS": 1,
    "SWITCHBOARD_RETRY_BASE_SECONDS": 0.5,
    "SWITCHBOARD_RETRY_MAX_SECONDS": 2,
}

pytestmark = [
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fresh_cache"),
]


@pytest.fixture(autouse=True)
def _sdk_sessions_closed():
    yield
    # The SDKs keep module-level keep-alive sessions; a server thread serving one would hold a
    # database connection open past the test.
    segment_request._session.close()
    rudder_request._session.close()


def visit_sign_up_and_act(client, prefix: str) -> None:
    """Per visitor: two anonymous page views, identify, two tracks, one anonymous page view."""
    for n in range(VISITORS):
        device, user = f"{prefix}-device-{n}", f"{prefix}-user-{n}"
        for page in ("Home", "Pricing"):
            ok, _ = client.page(anonymous_id=device, name=page, properties={"path": f"/{page}"})
            assert ok
        for ok, _ in (
            client.identify(user, {"email": f"{user}@example.com"}, anonymous_id=device),
            client.track(user, "Signed Up", {"plan": "pro"}, anonymous_id=device),
            client.track(user, "Report Exported", anonymous_id=device),
            # a tab still open without the userId: it must reach the user, not a new lead
            client.page(anonymous_id=device, name="Docs"),
        ):
            assert ok
    client.flush()


@pytest.mark.parametrize(
    "sdk",
    [
        pytest.param(SegmentClient, id="segment"),
        pytest.param(RudderClient, id="rudderstack"),
    ],
)
def test_every_visitor_ends_as_one_user_with_their_leads_page_views(
    sdk, live_switchboard, celery_worker_process, intercom_sandbox
):
    # given a sync that sends visitors as leads and page views as events, and two workers
    intercom_sandbox.configure(latency_ms=5)
    source = SourceFactory(name="website")
    key = WriteKeyFactory(source=source).plaintext
    sync = sync_into(
        intercom_sandbox,
        sources=[source],
        anonymous=Sync.Anonymous.LEAD,
        page_handling=Sync.PageHandling.EVENT,
    )
    celery_worker_process.start(2, beat=True, **FAST)
    errors: list = []
    client = sdk(key, host=live_switchboard, on_error=lambda e, batch: errors.append(e))

    # when the SDK sends every visitor's journey
    visit_sign_up_and_act(client, sdk.__module__.split(".")[0])
    client.shutdown()
    assert errors == []
    wait_settled(sync, celery_worker_process, timeout=180)

    # then every call was delivered
    outcomes = Counter(Delivery.objects.filter(sync=sync).values_list("status", flat=True))
    assert outcomes == {"succeeded": VISITORS * 6}, list(
        Delivery.objects.filter(sync=sync).exclude(status="succeeded").values_list("reason")
    )
    # and each visitor is one user, their lead merged into it exactly once, none refused
    state = intercom_sandbox.state()
    contacts = state["contacts"]
    assert len(contacts) == VISITORS
    assert {c["role"] for c in contacts} == {"user"}
    merges = [r for r in intercom_sandbox.requests if r["path"] == "/contacts/merge"]
    assert len(merges) == VISITORS
    assert {m["status"] for m in merges} == {200}
    assert len(state["merged"]) == VISITORS
    created_leads = [
        r
        for r in intercom_sandbox.requests
        if r["method"] == "POST" and r["path"] == "/contacts" and r["body"]["role"] == "lead"
    ]
    assert len(created_leads) == VISITORS  # no lead created again after its merge
    # with the lead's page views moved over, in the order the visitor made them
    events_by_contact: dict[str, list[str]] = {}
    for event in state["events"]:
        events_by_contact.setdefault(event["contact_id"], []).append(event["event_name"])
    for contact in contacts:
        assert sorted(events_by_contact[contact["id"]]) == sorted(
            ["Viewed Home", "Viewed Pricing", "Signed Up", "Report Exported", "Viewed Docs"]
        ), contact["external_id"]
    # Switchboard remembers each link, and routed the later anonymous page view to the user
    assert VisitorLink.objects.filter(sync=sync).count() == VISITORS
    docs_lanes = set(
        Delivery.objects.filter(sync=sync, event__payload__name="Docs").values_list(
            "lane__user_key", flat=True
        )
    )
    assert docs_lanes == set(
        Lane.objects.filter(sync=sync, user_key__contains="-user-").values_list(
            "user_key", flat=True
        )
    )
