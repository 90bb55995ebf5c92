"""Deleting a person from their timeline, in Chromium, as an operator would (GDPR/CCPA)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from streaming.delivery.lanes import lane_drain
from streaming.ingest.suppression import suppressions_changed
from streaming.models import Event, PersonDeletion
from tests.factories import SourceFactory
from tests.streaming.delivery_setup import identify, ingest, sync_into, track

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _suppressions_forgotten():
    yield
    suppressions_changed()  # the list is cached per process; the database is emptied


def test_an_operator_deletes_a_person_from_their_timeline(admin_browser, intercom_sandbox):
    # given a person Intercom knows, in two workspaces
    source = SourceFactory()
    sync = sync_into(intercom_sandbox, name="app-to-intercom", sources=[source])
    other = sync_into(intercom_sandbox, name="app-to-sales", sources=[source])
    ingest(sync, [identify("ada-7f3a", name="Ada"), track("ada-7f3a", "Signed Up")])
    for lane in [*sync.lanes.all(), *other.lanes.all()]:
        lane_drain(lane_id=lane.pk)
    page = admin_browser.page
    admin_browser.goto("/admin/streaming/delivery/timeline/?q=ada-7f3a")

    # when the operator asks to delete this person
    admin_browser.follow(page.get_by_role("link", name="Delete this person"))

    # then a confirmation page says what will happen and in which workspaces
    page.wait_for_url(re.compile(r"/timeline/delete/\?user=ada-7f3a"))
    text = admin_browser.text()
    assert "What will happen" in text
    assert "dropped at ingest" in text and "deletion record" in text
    boxes = page.get_by_role("checkbox")
    assert boxes.count() == 2
    expect(page.get_by_label(other.destination.name)).to_be_checked()
    # the operator keeps the contact in the second workspace
    page.get_by_label(other.destination.name).uncheck()
    admin_browser.follow(page.get_by_role("button", name="Delete this person"))

    # then the deletion record's page, saying a delete is queued
    deletion = PersonDeletion.objects.get()
    page.wait_for_url(re.compile(rf"/admin/streaming/persondeletion/{deletion.pk}/change/"))
    assert f"Deletion #{deletion.pk} started: a delete call is queued in 1 workspace" in (
        admin_browser.text()
    )
    assert [t.destination_id for t in deletion.targets.all()] == [sync.destination_id]

    # what a worker does with the wake-up; the record then says the workspace's answer
    for lane in sync.lanes.all():
        lane_drain(lane_id=lane.pk)
    page.reload()
    text = admin_browser.text()
    assert "Done: deleted and purged" in text
    assert "Deleted" in text and "200" in text
    assert "ada-7f3a" not in text  # the record holds no personal data
    assert not Event.objects.filter(user_id="ada-7f3a").exists()
    assert "ada-7f3a" not in {c.get("external_id") for c in intercom_sandbox.state()["contacts"]}

    # and the timeline tells the next operator, instead of offering the deletion again
    admin_browser.goto("/admin/streaming/delivery/timeline/?q=ada-7f3a")
    text = admin_browser.text()
    assert f"ada-7f3a was deleted on request: deletion #{deletion.pk}" in text
    assert page.get_by_role("link", name="Delete this person").count() == 0
