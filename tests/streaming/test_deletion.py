"""Deleting a person (GDPR/CCPA): the contact deleted in Intercom through the lanes, the person's
data purged from every table, their id suppressed at ingest, a record without personal data.

Against PostgreSQL, Redis, the Intercom sandbox over HTTP, and (where said) real workers.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.db import connection
from django.utils import timezone
from rest_framework.authtoken.models import Token

from integrations.models import Destination, Sync
from streaming.delivery.deletion import person_deletion_request
from streaming.delivery.replay import deliveries_replay
from streaming.ingest.filtered import filtered_counts
from streaming.ingest.suppression import SUPPRESSED_REASON, subject_hash, suppressions_changed
from streaming.models import (
    ContactLink,
    Delivery,
    DeliveryAttempt,
    Event,
    PersonDeletion,
    PersonDeletionTarget,
    Suppression,
)
from tests.streaming.audit_rows import staff_make
from tests.streaming.delivery_setup import (
    drain_all,
    identify,
    ingest,
    sync_into,
    track,
    wait_settled,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_cache")]

PERSON = "person-7f3a9c"
EMAIL = f"{PERSON}@example.com"  # what identify() sends as the trait
DEVICE = "anon-device-51d2e0"  # the person's anonymousId before they signed in
BYSTANDER = "bystander-0b44"


@pytest.fixture(autouse=True)
def _suppressions_forgotten():
    # The suppression list is cached per process; the database is emptied after each test.
    yield
    suppressions_changed()


def deleter_token() -> str:
    user = staff_make(username="privacy-bot", perms=("streaming.delete_person",))
    return Token.objects.create(user=user).key


def api_delete(client: Any, token: str, user_id: str = PERSON, **body: Any) -> Any:
    return client.post(
        f"/api/v1/users/{user_id}/deletion",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Token {token}",
    )


def api_read(client: Any, token: str, url: str) -> dict[str, Any]:
    response = client.get(url, HTTP_AUTHORIZATION=f"Token {token}")
    assert response.status_code == 200, response.content
    return response.json()


def a_known_person(sync: Sync) -> None:
    """The person browsed anonymously, signed in, and did things; a bystander too."""
    ingest(sync, [{"type": "page", "anonymousId": DEVICE, "name": "Pricing"}])
    ingest(sync, [{**identify(PERSON, plan="pro"), "anonymousId": DEVICE}])
    ingest(sync, [track(PERSON, "Order Completed", total=42)])
    ingest(sync, [identify(BYSTANDER, plan="free"), track(BYSTANDER, "Order Completed")])


def contacts(sandbox: Any) -> set[str]:
    return {c.get("external_id") for c in sandbox.state()["contacts"]}


def tables_holding(*needles: str) -> list[tuple[str, str, str]]:
    """(table, column, needle) for every column of every table whose text holds a needle."""
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            for column in connection.introspection.get_table_description(cursor, table):
                quoted_table = connection.ops.quote_name(table)
                quoted_column = connection.ops.quote_name(column.name)
                for needle in needles:
                    # Every column, whatever its type, read as text (JSON and numbers too).
                    cursor.execute(
                        f"SELECT count(*) FROM {quoted_table} "
                        f"WHERE LOWER(CAST({quoted_column} AS TEXT)) LIKE %s",
                        [f"%{needle.lower()}%"],
                    )
                    if cursor.fetchone()[0]:
                        found.append((table, column.name, needle))
    return found


# --- the API flow, with a real worker -------------------------------------------------------------


@pytest.mark.worker
def test_the_api_deletes_the_contact_through_a_worker_and_leaves_a_record(
    client, intercom_sandbox, celery_worker_process
):
    # given a person Intercom knows, through a real worker
    sync = sync_into(intercom_sandbox)
    celery_worker_process.start(1)
    a_known_person(sync)
    wait_settled(sync, celery_worker_process)
    assert PERSON in contacts(intercom_sandbox)
    token = deleter_token()

    # when their deletion is asked for over the API
    response = api_delete(client, token)

    # then it is accepted with the record's id and where to read its state
    assert response.status_code == 202, response.content
    answer = response.json()
    assert response["Location"] == answer["url"] == f"/api/v1/deletions/{answer['id']}"
    assert answer["status"] == "deleting"
    assert answer["requested_by"] == "privacy-bot" and answer["requested_via"] == "api"
    assert [(d["id"], d["status"]) for d in answer["destinations"]] == [
        (sync.destination_id, "pending")
    ]
    # and the worker delivers the delete; the record says each workspace's answer
    deadline = time.monotonic() + 30
    while (record := api_read(client, token, answer["url"]))["status"] == "deleting":
        if time.monotonic() > deadline:
            pytest.fail("the deletion did not finish:\n" + celery_worker_process.logs())
        time.sleep(0.2)
    assert record["status"] == "done", record
    assert record["purged_at"] is not None
    (workspace,) = record["destinations"]
    assert workspace["status"] == "deleted" and workspace["status_code"] == 200
    assert PERSON not in contacts(intercom_sandbox)
    assert BYSTANDER in contacts(intercom_sandbox)
    # the delete was an HTTP exchange logged like any other
    deletes = [r for r in intercom_sandbox.requests if r["method"] == "DELETE"]
    assert len(deletes) == 1
    attempt = DeliveryAttempt.objects.get(method="DELETE")
    assert attempt.status_code == 200 and attempt.category == "success"
    assert attempt.user_key == f"deleted:{subject_hash(PERSON)}"
    assert json.dumps(record).find(PERSON) == -1


# --- the purge: every table ------------------------------------------------------------------------


def test_after_a_deletion_no_table_holds_the_id_or_the_email(client, intercom_sandbox):
    # given the person everywhere Switchboard keeps things: events (with an anonymous visit),
    # deliveries, attempts, a contact link, a lane, a destination's last error, the admin's
    # history, and a delivery of theirs still pending in a second (paused) workspace
    sync = sync_into(intercom_sandbox)
    a_known_person(sync)
    drain_all(sync)
    paused = sync_into(intercom_sandbox)
    ingest(paused, [identify(PERSON)])
    drain_all(paused)  # a contact link in that workspace too
    Sync.objects.filter(pk=paused.pk).update(status=Sync.Status.PAUSED)
    ingest(paused, [track(PERSON, "Viewed Invoice")])
    Destination.objects.filter(pk=paused.destination_id).update(
        last_error=f"409 conflict: a contact already has the email '{EMAIL}'"
    )
    event = Event.objects.filter(user_id=PERSON).first()
    LogEntry.objects.log_actions(
        staff_make(username="ops").pk, [event], CHANGE, f"looked at {PERSON}", single_object=True
    )
    assert ContactLink.objects.filter(user_key=PERSON).count() == 2
    assert tables_holding(PERSON)  # the search finds them before

    # when they are deleted (in the first workspace only) and the delete went out
    response = api_delete(client, deleter_token(), destinations=[sync.destination_id])
    assert response.status_code == 202
    drain_all(sync)

    # then no column of any table holds their id, their email or their anonymous id
    assert tables_holding(PERSON, EMAIL, DEVICE) == []
    # the record and the suppression entry hold the keyed hash, and only they (besides the
    # pseudonymous keys of the trail's rows)
    digest = subject_hash(PERSON)
    deletion = PersonDeletion.objects.get()
    assert deletion.subject_hash == digest and deletion.status == "done"
    assert Suppression.objects.get().subject_hash == digest
    assert {t[0] for t in tables_holding(digest)} == {
        "streaming_persondeletion",
        "streaming_suppression",
        "streaming_delivery",
        "streaming_deliveryattempt",
        "streaming_lane",
    }
    # the rows of the trail stay, without content: the health page still counts them
    # page, identify, track, the second workspace's identify and track, and the delete call
    assert Event.objects.filter(payload={}, user_id="").count() == 6
    assert DeliveryAttempt.objects.filter(
        request_body__isnull=True, response_excerpt=""
    ).count() == (DeliveryAttempt.objects.filter(user_key=f"deleted:{digest}").count())
    held = Delivery.objects.filter(sync=paused).latest("id")
    assert held.status == "skipped"
    assert held.reason == f"not sent: the person was deleted on request (deletion #{deletion.pk})"
    assert deletion.purged["contact_links"] == 1  # the delete call forgot the first one
    assert not ContactLink.objects.exclude(user_key=BYSTANDER).exists()
    # and the bystander is untouched
    assert Event.objects.filter(user_id=BYSTANDER).exclude(payload={}).count() == 2
    assert ContactLink.objects.filter(user_key=BYSTANDER).exists()
    assert BYSTANDER in contacts(intercom_sandbox)


# --- ingest ------------------------------------------------------------------------------------------


def test_calls_for_a_deleted_person_are_dropped_at_ingest_until_the_suppression_is_lifted(
    intercom_sandbox,
):
    # given a deleted person
    sync = sync_into(intercom_sandbox)
    a_known_person(sync)
    drain_all(sync)
    person_deletion_request(user_id=PERSON)
    drain_all(sync)
    stored = Event.objects.count()

    # when their app sends calls again, among a bystander's
    queued = ingest(
        sync, [identify(PERSON), track(PERSON, "Logged In"), track(BYSTANDER, "Logged In")]
    )

    # then theirs are neither stored nor queued, and are counted as filtered with the reason
    assert [d.user_key for d in queued] == [BYSTANDER]
    assert Event.objects.count() == stored + 1
    assert filtered_counts(sync_id=sync.pk, since=timezone.now())[SUPPRESSED_REASON] == 2
    assert tables_holding(PERSON) == []

    # when an operator lifts the suppression, their calls are accepted again
    from streaming.delivery.deletion import suppression_lift

    suppression_lift(suppression=Suppression.objects.get())
    assert [d.user_key for d in ingest(sync, [identify(PERSON)])] == [PERSON]


# --- idempotency, retries, answers ------------------------------------------------------------------


def test_a_second_request_for_the_same_person_returns_the_first_record(client, intercom_sandbox):
    sync = sync_into(intercom_sandbox)
    a_known_person(sync)
    drain_all(sync)
    token = deleter_token()

    first = api_delete(client, token)
    again = api_delete(client, token, destinations=[sync.destination_id])

    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert PersonDeletion.objects.count() == 1
    assert Event.objects.filter(type="delete").count() == 1  # one delete call, not two
    drain_all(sync)
    assert api_delete(client, token).json()["status"] == "done"
    assert len([r for r in intercom_sandbox.requests if r["method"] == "DELETE"]) == 1


@pytest.mark.worker
def test_a_5xx_on_the_delete_is_retried_and_the_purge_waits_for_it(
    client, intercom_sandbox, celery_worker_process
):
    # given a known person, and Intercom failing the first delete with a 503
    sync = sync_into(intercom_sandbox)
    celery_worker_process.start(
        1,
        beat=True,
        SWITCHBOARD_SWEEP_SECONDS=0.5,
        SWITCHBOARD_RETRY_BASE_SECONDS=1,
        SWITCHBOARD_RETRY_MAX_SECONDS=2,
    )
    a_known_person(sync)
    wait_settled(sync, celery_worker_process)
    intercom_sandbox.configure(force_status=503, force_count=1, force_method="DELETE")
    token = deleter_token()

    url = api_delete(client, token).json()["url"]

    # then the 503 is logged, the person's data is kept for the next try...
    deadline = time.monotonic() + 30
    while not DeliveryAttempt.objects.filter(method="DELETE", status_code=503).exists():
        assert time.monotonic() < deadline, celery_worker_process.logs()
        time.sleep(0.1)
    # ...and the retry deletes the contact, then the purge follows
    while (record := api_read(client, token, url))["status"] == "deleting":
        assert time.monotonic() < deadline, celery_worker_process.logs()
        time.sleep(0.2)
    assert record["status"] == "done"
    assert record["destinations"][0]["status"] == "deleted"
    delete = Delivery.objects.get(event__type="delete")
    assert delete.status == "succeeded" and delete.attempts == 2
    assert [a.status_code for a in delete.attempt_log.filter(method="DELETE").order_by("id")] == [
        503,
        200,
    ]
    assert PERSON not in contacts(intercom_sandbox)
    assert tables_holding(PERSON) == []


def test_the_delete_goes_after_what_is_already_queued_in_the_lane(intercom_sandbox):
    # given a person whose identify and track are still queued
    sync = sync_into(intercom_sandbox)
    queued = ingest(sync, [identify(PERSON), track(PERSON, "Signed Up")])

    person_deletion_request(user_id=PERSON)
    delete = Delivery.objects.get(event__type="delete")
    assert delete.lane_id == queued[0].lane_id and delete.pk > queued[-1].pk
    drain_all(sync)

    # then Intercom got the contact and its event first, then the delete
    calls = [(r["method"], r["path"]) for r in intercom_sandbox.requests]
    assert calls[-1][0] == "DELETE" and ("POST", "/events") in calls[:-1]
    assert PERSON not in contacts(intercom_sandbox)
    assert PersonDeletion.objects.get().status == "done"


def test_a_contact_already_absent_counts_as_deleted(intercom_sandbox):
    sync = sync_into(intercom_sandbox)
    a_known_person(sync)
    drain_all(sync)
    # someone deleted the contact in Intercom meanwhile
    contact_id = ContactLink.objects.get(user_key=PERSON).contact_id
    intercom_sandbox.sandbox.core.workspace.contact_delete(contact_id)

    person_deletion_request(user_id=PERSON)
    drain_all(sync)

    target = PersonDeletionTarget.objects.get()
    assert target.status == "absent" and target.status_code == 404
    assert PersonDeletion.objects.get().status == "done"
    assert tables_holding(PERSON) == []


def test_a_refused_delete_keeps_the_data_until_the_operator_purges_anyway(intercom_sandbox):
    # given Intercom refusing the delete for good (403)
    sync = sync_into(intercom_sandbox)
    a_known_person(sync)
    drain_all(sync)
    intercom_sandbox.configure(force_status=403, force_count=1, force_method="DELETE")
    deletion = person_deletion_request(user_id=PERSON).deletion
    drain_all(sync)

    # then the record says so, and the person's data stays (a replay needs it)
    deletion.refresh_from_db()
    target = deletion.targets.get()
    assert deletion.status == "failed" and deletion.purged_at is None
    assert (target.status, target.status_code, target.error_code) == ("failed", 403, "forbidden")
    assert Event.objects.filter(user_id=PERSON).exists()

    # when the operator gives up on that workspace
    from streaming.delivery.deletion import person_deletion_purge_anyway

    assert person_deletion_purge_anyway(deletion=deletion)
    deletion.refresh_from_db()
    assert deletion.status == "done"
    assert tables_holding(PERSON) == []
    assert deletion.targets.get().status == "failed"  # the answer stays on the record


def test_a_refused_delete_replayed_once_the_cause_is_fixed_finishes_the_deletion(
    intercom_sandbox,
):
    sync = sync_into(intercom_sandbox)
    a_known_person(sync)
    drain_all(sync)
    intercom_sandbox.configure(force_status=403, force_count=1, force_method="DELETE")
    deletion = person_deletion_request(user_id=PERSON).deletion
    drain_all(sync)
    delete = Delivery.objects.get(event__type="delete")
    assert delete.status == "failed"

    # the operator replays the delete like any failed delivery
    deliveries_replay(deliveries=Delivery.objects.filter(pk=delete.pk))
    drain_all(sync)

    deletion.refresh_from_db()
    assert deletion.status == "done"
    target = deletion.targets.get()
    assert (target.status, target.status_code) == ("deleted", 200)
    assert PERSON not in contacts(intercom_sandbox)
    assert tables_holding(PERSON) == []


def test_with_no_workspace_chosen_the_person_is_purged_and_suppressed_at_once(
    client, intercom_sandbox
):
    # given a known person, whose contact the operator keeps in Intercom
    sync = sync_into(intercom_sandbox)
    a_known_person(sync)
    drain_all(sync)

    response = api_delete(client, deleter_token(), destinations=[])

    # then nothing waits for Intercom: the purge follows the request
    assert response.status_code == 202
    assert response.json()["destinations"] == []
    deletion = PersonDeletion.objects.get()
    assert deletion.status == "done" and deletion.purged_at is not None
    assert tables_holding(PERSON, EMAIL) == []
    assert PERSON in contacts(intercom_sandbox)
    assert not any(r["method"] == "DELETE" for r in intercom_sandbox.requests)


# --- who may ------------------------------------------------------------------------------------------


def test_the_api_needs_the_delete_person_permission(client, intercom_sandbox):
    reader = staff_make(username="support", perms=("streaming.view_delivery",))
    token = Token.objects.create(user=reader).key
    response = api_delete(client, token)
    assert response.status_code == 403
    assert "streaming.delete_person" in response.json()["detail"]
    assert client.post(f"/api/v1/users/{PERSON}/deletion").status_code == 401
    assert not PersonDeletion.objects.exists()


def test_an_unknown_destination_is_refused_with_400(client, intercom_sandbox):
    response = api_delete(client, deleter_token(), destinations=[987654])
    assert response.status_code == 400
    assert response.json() == {"destinations": ["No such destination: 987654."]}
    assert not Suppression.objects.exists()


# --- the admin flow -------------------------------------------------------------------------------------


def test_the_timeline_offers_the_deletion_and_the_confirmation_page_lets_the_operator_choose(
    admin_client, intercom_sandbox
):
    # given a person known in two workspaces
    sync = sync_into(intercom_sandbox)
    other = sync_into(intercom_sandbox)
    other.sources.set(sync.sources.all())
    a_known_person(sync)
    drain_all(sync)
    drain_all(other)

    timeline = admin_client.get("/admin/streaming/delivery/timeline/", {"q": PERSON})
    assert b"Delete this person" in timeline.content

    page = admin_client.get("/admin/streaming/delivery/timeline/delete/", {"user": PERSON})
    assert page.status_code == 200
    text = page.content.decode()
    assert "What will happen" in text
    assert sync.destination.name in text and other.destination.name in text
    assert "dropped at ingest" in text

    # when the operator keeps the contact in the second workspace
    response = admin_client.post(
        "/admin/streaming/delivery/timeline/delete/",
        {"user": PERSON, "destination": [str(sync.destination_id)]},
    )

    # then the deletion record's page follows, with a delete queued in the first only
    deletion = PersonDeletion.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/admin/streaming/persondeletion/{deletion.pk}/change/"
    assert deletion.requested_via == "admin" and deletion.requested_by_name == "admin"
    assert [t.destination_id for t in deletion.targets.all()] == [sync.destination_id]
    drain_all(sync)
    deletion.refresh_from_db()
    assert deletion.status == "done"
    record = admin_client.get(response["Location"]).content.decode()
    assert "Deleted" in record and PERSON not in record
    # the timeline now says the id was deleted instead of offering it again
    timeline = admin_client.get("/admin/streaming/delivery/timeline/", {"q": PERSON})
    assert f"deletion #{deletion.pk}".encode() in timeline.content
    assert b"Delete this person" not in timeline.content


def test_the_admin_page_needs_the_delete_person_permission(client, intercom_sandbox):
    viewer = staff_make(
        username="viewer", perms=("streaming.view_delivery", "streaming.change_delivery")
    )
    client.force_login(viewer)
    timeline = client.get("/admin/streaming/delivery/timeline/", {"q": PERSON})
    assert b"Delete this person" not in timeline.content
    response = client.post("/admin/streaming/delivery/timeline/delete/", {"user": PERSON})
    assert response.status_code == 403
    assert not PersonDeletion.objects.exists()


def test_an_operator_lifts_a_suppression_from_the_list(admin_client, intercom_sandbox):
    sync = sync_into(intercom_sandbox)
    a_known_person(sync)
    drain_all(sync)
    person_deletion_request(user_id=PERSON)
    suppression = Suppression.objects.get()

    # the list is searched by user id (hashed the same way)
    listing = admin_client.get("/admin/streaming/suppression/", {"q": PERSON})
    assert f"deletion #{suppression.deletion_id}".encode() in listing.content
    response = admin_client.post(
        "/admin/streaming/suppression/",
        {"action": "lift_action", "_selected_action": [suppression.pk]},
    )

    assert response.status_code == 302
    suppression.refresh_from_db()
    assert suppression.lifted_at is not None and suppression.lifted_by_name == "admin"
    assert [d.user_key for d in ingest(sync, [track(PERSON, "Came Back")])] == [PERSON]
