"""The screenshots of docs/admin-tour.md, taken at 1,280 px from the demo's story.

Not part of a normal run: ``SWITCHBOARD_SCREENSHOTS=docs/screenshots bin/test tests/browser -k
screenshots`` writes them there (the folder is relative to the checkout).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings

from integrations.models import Destination, EventFilter, Source
from streaming.delivery.lanes import lane_drain
from streaming.delivery.replay import deliveries_replay
from streaming.models import Delivery, Lane
from tests.factories import PropertyMappingFactory, SourceFactory
from tests.streaming.delivery_setup import identify, ingest, sync_into, track

FOLDER = os.environ.get("SWITCHBOARD_SCREENSHOTS", "")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not FOLDER, reason="set SWITCHBOARD_SCREENSHOTS=<folder> to take them"),
]


def test_screenshots_of_the_index_the_timeline_and_a_delivery(admin_browser, intercom_sandbox):
    folder = Path(settings.BASE_DIR) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    # the demo of bin/run: demo-http -> demo-sync -> demo-sandbox, and u1's afternoon
    sync = sync_into(intercom_sandbox, name="demo-sync", sources=[SourceFactory(name="demo-http")])
    Destination.objects.filter(pk=sync.destination_id).update(name="demo-sandbox")
    PropertyMappingFactory(
        sync=sync, target="event_metadata", source_path="properties.plan", intercom_name="plan"
    )
    # a second sync that sends orders only: the timeline says why it kept the rest out
    orders = sync_into(intercom_sandbox, name="orders-sync", sources=[sync.sources.get()])
    EventFilter.objects.create(sync=orders, action=EventFilter.Action.INCLUDE, event_name="Order *")
    Destination.objects.filter(pk=orders.destination_id).update(name="sales-workspace")
    ingest(sync, [identify("u1", name="Ada Lovelace"), track("u1", "Signed up", plan="pro")])
    ingest(sync, [identify("u2", name="Grace Hopper"), track("u2", "Signed up", plan="free")])
    for lane in Lane.objects.order_by("id"):
        lane_drain(lane_id=lane.pk)
    intercom_sandbox.configure(force_status=400, force_count=1, force_path="/events")
    (order,) = ingest(sync, [track("u1", "Order Completed", plan="pro", total=42)])
    lane_drain(lane_id=order.lane_id)
    deliveries_replay(deliveries=Delivery.objects.filter(pk=order.pk))
    for lane in Lane.objects.order_by("id"):
        lane_drain(lane_id=lane.pk)
    assert Source.objects.count() == 1

    shots = {
        "admin-index.png": "/admin/",
        "timeline.png": "/admin/streaming/delivery/timeline/?q=u1",
        "delivery.png": f"/admin/streaming/delivery/{order.pk}/change/",
        "deliveries.png": "/admin/streaming/delivery/",
    }
    for name, path in shots.items():
        admin_browser.goto(path)
        if name == "timeline.png":  # one body opened, as support reads it
            admin_browser.page.locator(".sb-exchange-line summary").first.click()
        assert admin_browser.page_width() <= 1280, path
        admin_browser.page.screenshot(path=str(folder / name), full_page=True)
