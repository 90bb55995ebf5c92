"""Edge cases met in the field (issue 10): values Intercom refuses, anonymous visitors and alias,
`_date` metadata, the 120 event names under concurrent workers, archived contacts, which 10
metadata keys survive a JSONB round trip, and two users sharing an email."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection

from integrations.intercom.client import IntercomClient, PermanentError
from integrations.intercom.executor import EVENT_NAME_LIMIT, plan_execute
from integrations.intercom.operations import (
    ContactUpsert,
    Dropped,
    EventCreate,
    Identity,
    Plan,
    SyncConfig,
)
from integrations.intercom.transforms import plan_build
from integrations.models import Sync
from integrations.selectors import sync_config_build
from streaming.delivery.destination_store import DestinationStore
from streaming.models import Delivery, Event, KnownEventName
from tests.factories import DestinationFactory, EventFactory, SyncFactory
from tests.integrations.intercom.test_executor import Harness, ListRecorder
from tests.streaming.delivery_setup import drain_all, ingest, statuses, sync_into

T = "2024-03-01T12:00:00Z"
T_UNIX = 1709294400
ALL = SyncConfig(send_all_properties=True)
RANGE = "outside 1970-01-01..2100-01-01 (Intercom's Unix seconds)"
TOO_LARGE = "integer too large for Intercom (64 bits)"
USER = Identity(user_key="u-1", external_id="u-1", email="ada@example.com")


@pytest.fixture
def harness(intercom_sandbox) -> Harness:
    return Harness(intercom_sandbox)


def track(properties: dict[str, Any], **call: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": "u1",
        "timestamp": T,
        "event": "Order Completed",
        "properties": properties,
        **call,
    }


def stored(event: Event) -> dict[str, Any]:
    """The call as a worker reads it: from the database, after PostgreSQL's JSONB."""
    return Event.objects.get(pk=event.pk).payload


# --- 6. values Intercom refuses never reach it ------------------------------------------------


@pytest.mark.parametrize("created_at", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", -1])
def test_a_signup_date_outside_intercoms_range_is_dropped_with_its_reason(created_at) -> None:
    plan = plan_build(
        call={
            "type": "identify",
            "userId": "u1",
            "timestamp": T,
            "traits": {"createdAt": created_at},
        },
        config=SyncConfig(),
    )

    assert "signed_up_at" not in plan.operations[0].fields
    assert plan.dropped == (Dropped("traits.createdAt", RANGE),)


def test_an_event_dated_in_year_9999_is_skipped_saying_why() -> None:
    plan = plan_build(call=track({}, timestamp="9999-12-31T23:59:59Z"), config=SyncConfig())

    assert plan.operations == ()
    assert plan.skip_reason == f"timestamp 9999-12-31T23:59:59Z is {RANGE}"
    assert plan.dropped == (Dropped("timestamp", RANGE),)


def test_last_seen_in_year_1_is_dropped_not_sent() -> None:
    call = {"type": "identify", "userId": "u1", "timestamp": "0001-01-01T00:00:00Z", "traits": {}}

    plan = plan_build(call=call, config=SyncConfig(update_last_seen=True))

    assert "last_seen_at" not in plan.operations[0].fields
    assert plan.dropped == (Dropped("timestamp", RANGE),)


@pytest.mark.django_db
def test_employees_1e300_read_back_from_jsonb_is_not_sent_as_the_company_size() -> None:
    # given a group call stored as JSONB: 1e300 comes back as an integer of 301 digits
    event = EventFactory(type="group", traits={"employees": 1e300, "plan": "pro"})
    call = stored(event)
    assert len(str(call["traits"]["employees"])) == 301

    plan = plan_build(call=call, config=SyncConfig())

    upsert = plan.operations[0]
    assert upsert.fields == {"plan": "pro"}
    assert plan.dropped == (Dropped("traits.employees", "outside 0..2147483647 (Intercom)"),)


@pytest.mark.django_db
def test_metadata_integers_beyond_64_bits_are_dropped_with_the_reason() -> None:
    event = EventFactory(
        properties={"views": 1e300, "big": 2**63, "max": 2**63 - 1, "min": -(2**63), "n": 3}
    )

    plan = plan_build(call=stored(event), config=ALL)

    assert plan.operations[0].metadata == {"max": 2**63 - 1, "min": -(2**63), "n": 3}
    assert plan.dropped == (
        Dropped("properties.big", TOO_LARGE),
        Dropped("properties.views", TOO_LARGE),
    )


def test_a_monetary_amount_beyond_64_bits_is_dropped() -> None:
    plan = plan_build(
        call=track({"revenue": 1e300, "paid": {"amount": 2**64, "currency": "EUR"}}), config=ALL
    )

    assert plan.operations[0].metadata == {}
    assert set(plan.dropped) == {
        Dropped("properties.paid", TOO_LARGE),
        Dropped("properties.revenue", TOO_LARGE),
    }


def test_a_date_attribute_in_year_9999_is_dropped() -> None:
    call = {"type": "identify", "userId": "u1", "timestamp": T, "traits": {"ends": "9999-12-31"}}

    plan = plan_build(call=call, config=ALL)

    assert plan.operations[0].custom_attributes == {}
    assert plan.dropped == (Dropped("traits.ends", RANGE),)


def test_what_is_dropped_shows_on_the_outcome(harness) -> None:
    harness.api("POST", "/contacts", {"role": "user", "external_id": "u1"})
    plan = plan_build(call=track({"views": 10**300, "n": 1}), config=ALL)

    outcome = harness.run(plan)

    assert outcome.status == "succeeded"
    assert f"properties.views: {TOO_LARGE}" in outcome.reason
    assert harness.recorder.started_calls[0]["body"]["metadata"] == {"n": 1}


# --- 9a. an anonymous visitor is a lead, and alias merges it into the user --------------------


def test_the_sandbox_refuses_to_merge_a_user_into_a_user_as_intercom_does(harness) -> None:
    one = harness.api("POST", "/contacts", {"role": "user", "external_id": "anon-1"})
    two = harness.api("POST", "/contacts", {"role": "user", "external_id": "u-1"})

    result = harness.client.request(
        "POST",
        "/contacts/merge",
        body={"from": one["id"], "into": two["id"], "skip_duplicate_validation": True},
    )

    assert result.status == 400
    assert result.body["errors"][0]["code"] == "invalid_merge"


@pytest.mark.django_db
def test_an_anonymous_visitor_becomes_a_lead_that_alias_merges_into_the_user(
    intercom_sandbox,
) -> None:
    # given a sync that sends visitors as leads, and a visitor who viewed pricing before signing up
    sync = sync_into(intercom_sandbox, anonymous=Sync.Anonymous.LEAD)
    before = ingest(sync, [{"type": "track", "anonymousId": "anon-7", "event": "Viewed Pricing"}])
    drain_all(sync)
    [lead] = intercom_sandbox.state()["contacts"]
    # Intercom sets no external_id on a lead: Switchboard knows it by its Intercom id
    assert (lead["role"], lead["external_id"]) == ("lead", None)

    # when they sign up: identify, then alias from the anonymous id to the user id
    after = ingest(
        sync,
        [
            {"type": "identify", "userId": "u-7", "anonymousId": "anon-7", "traits": {}},
            {"type": "alias", "previousId": "anon-7", "userId": "u-7"},
        ],
    )
    drain_all(sync)

    # then the identify merges the lead into the user, its event with it; the alias, which asks
    # for the same merge, finds it done
    assert statuses(before + after) == ["succeeded", "succeeded", "skipped"]
    state = intercom_sandbox.state()
    [user] = state["contacts"]
    assert (user["role"], user["external_id"]) == ("user", "u-7")
    assert state["merged"] == {lead["id"]: user["id"]}
    [merge] = [r for r in intercom_sandbox.requests if r["path"] == "/contacts/merge"]
    assert (merge["body"]["from"], merge["body"]["into"]) == (lead["id"], user["id"])
    assert [e["contact_id"] for e in state["events"]] == [user["id"]]


# --- 9b. `_date` metadata is sent as Unix seconds ---------------------------------------------


def test_iso_dates_under_date_keys_become_unix_seconds() -> None:
    properties = {"renewal_date": "2024-06-01", "trial_date": T, "paid_date": 1717200000}

    plan = plan_build(call=track({**properties, "bad_date": "next week"}), config=ALL)

    assert plan.operations[0].metadata == {
        "renewal_date": 1717200000,
        "trial_date": T_UNIX,
        "paid_date": 1717200000,
    }
    assert plan.dropped == (Dropped("properties.bad_date", "not a date (ISO 8601 or Unix time)"),)


def test_a_mapped_date_key_is_converted_too() -> None:
    config = SyncConfig(event_metadata=(("properties.renews", "renews_date"),))

    plan = plan_build(call=track({"renews": "2024-03-01T12:00:00+00:00"}), config=config)

    assert plan.operations[0].metadata == {"renews_date": T_UNIX}


# --- 9c. at most 120 event names, with any number of workers ----------------------------------


def _in_threads(count: int, work) -> None:
    """Run ``work(index)`` in ``count`` threads started together, each with its own connection."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            work(index)
        except BaseException as error:  # reported by the test, not lost in the thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


@pytest.mark.django_db(transaction=True)
def test_reserving_126_event_names_from_8_threads_keeps_exactly_120() -> None:
    destination = DestinationFactory()
    names = [f"event-{n}" for n in range(126)]
    granted: dict[str, bool] = {}

    def reserve(index: int) -> None:
        store = DestinationStore(destination=destination)
        for name in names[index::8]:
            granted[name] = store.event_name_reserve(name, EVENT_NAME_LIMIT)

    _in_threads(8, reserve)

    kept = set(
        KnownEventName.objects.filter(destination=destination).values_list("name", flat=True)
    )
    assert sum(granted.values()) == 120
    assert kept == {name for name, ok in granted.items() if ok}
    # a name already known is still granted at the limit
    assert DestinationStore(destination=destination).event_name_reserve(min(kept), 120)


@pytest.mark.django_db(transaction=True)
def test_workers_sending_new_event_names_at_once_never_pass_intercoms_120(
    intercom_sandbox,
) -> None:
    # given a workspace with 119 event names, all sent through us
    destination = DestinationFactory(
        base_url=intercom_sandbox.url, access_token=intercom_sandbox.token
    )
    setup = Harness(intercom_sandbox)
    setup.api("POST", "/contacts", {"role": "user", "external_id": "u-1"})
    for n in range(119):
        event = {"event_name": f"event-{n}", "created_at": 1700000000, "user_id": "u-1"}
        setup.client.request("POST", "/events", body=event)
    KnownEventName.objects.bulk_create(
        KnownEventName(destination=destination, name=f"event-{n}") for n in range(119)
    )
    outcomes: list[str] = []

    # when seven workers each send an event with a new name at the same moment
    def send(index: int) -> None:
        client = IntercomClient(
            base_url=intercom_sandbox.url, token=intercom_sandbox.token, api_version="2.16"
        )
        plan = Plan(
            identity=USER,
            operations=(
                EventCreate(event_name=f"new-{index}", created_at=1700000000, metadata={}),
            ),
        )
        try:
            plan_execute(
                plan=plan,
                client=client,
                state=DestinationStore(destination=destination),
                recorder=ListRecorder(),
            )
            outcomes.append("sent")
        except PermanentError as error:
            outcomes.append(error.code)
        finally:
            client.close()

    _in_threads(7, send)

    # then one took the 120th name; the others failed before reaching Intercom
    assert sorted(outcomes) == ["event_name_limit"] * 6 + ["sent"]
    events = [r for r in intercom_sandbox.requests if r["path"] == "/events"]
    assert [r["status"] for r in events] == [202] * 120
    assert intercom_sandbox.state()["counts"]["event_names"] == 120


# --- 9d. an archived contact is unarchived only when the sync says so -------------------------


def archived_user(harness: Harness) -> dict:
    contact = harness.api("POST", "/contacts", {"role": "user", "external_id": "u-1"})
    harness.api("POST", f"/contacts/{contact['id']}/archive")
    return contact


def event_plan(**plan: Any) -> Plan:
    event = EventCreate(event_name="Signed Up", created_at=1700000000, metadata={})
    return Plan(identity=USER, operations=(event,), **plan)


def test_an_event_for_an_archived_contact_is_skipped_by_default_saying_so(harness) -> None:
    contact = archived_user(harness)

    outcome = harness.run(event_plan())

    assert outcome.status == "skipped"
    assert outcome.reason == (
        f"Intercom contact {contact['id']} ('u-1') is archived in Intercom and the sync does not "
        "unarchive contacts: nothing was sent to it"
    )
    assert not any(call.endswith("/unarchive") for call in harness.calls())
    [stored_contact] = harness.contacts()
    assert stored_contact["archived"] is True
    assert harness.sandbox.state()["events"] == []


def test_an_identify_of_an_archived_contact_is_skipped_by_default(harness) -> None:
    archived_user(harness)
    upsert = ContactUpsert(fields={"name": "Ada"}, custom_attributes={}, fingerprint="x")

    outcome = harness.run(Plan(identity=USER, operations=(upsert,)))

    assert outcome.status == "skipped"
    assert "is archived in Intercom" in outcome.reason
    assert harness.contacts()[0]["name"] is None


def test_an_event_for_an_archived_contact_unarchives_it_when_the_sync_says_so(harness) -> None:
    contact = archived_user(harness)

    outcome = harness.run(event_plan(unarchive_contacts=True))

    assert outcome.status == "succeeded"
    assert f"POST /contacts/{contact['id']}/unarchive" in harness.calls()
    assert harness.contacts()[0]["archived"] is False
    assert len(harness.sandbox.state()["events"]) == 1


@pytest.mark.django_db
def test_the_sync_setting_is_off_by_default_and_reaches_the_mapping() -> None:
    assert SyncFactory().unarchive_contacts is False
    assert sync_config_build(sync=SyncFactory(unarchive_contacts=True)).unarchive_contacts
    call = track({})
    assert plan_build(call=call, config=SyncConfig(unarchive_contacts=True)).unarchive_contacts
    assert not plan_build(call=call, config=SyncConfig()).unarchive_contacts


@pytest.mark.django_db
def test_the_timeline_says_the_contact_is_archived(intercom_sandbox) -> None:
    sync = sync_into(intercom_sandbox)
    setup = Harness(intercom_sandbox)
    contact = setup.api("POST", "/contacts", {"role": "user", "external_id": "u-3"})
    setup.api("POST", f"/contacts/{contact['id']}/archive")

    [delivery] = ingest(sync, [{"type": "track", "userId": "u-3", "event": "Paid"}])
    drain_all(sync)

    delivery = Delivery.objects.get(pk=delivery.pk)
    assert delivery.status == Delivery.Status.SKIPPED
    assert "is archived in Intercom and the sync does not unarchive contacts" in delivery.reason


# --- 9e. which 10 metadata keys are kept, after JSONB ----------------------------------------

ELEVEN = {
    "conversation_id": "c-1",
    "title": "Hello",
    "zone": "eu",
    "plan": "pro",
    "seats": 3,
    "tier": "gold",
    "color": "red",
    "size": "m",
    "kind": "a",
    "mode": "b",
    "step": 2,
}


@pytest.mark.django_db
def test_all_properties_keep_the_first_10_in_alphabetical_order_whatever_jsonb_did() -> None:
    # JSONB gives the keys back shortest first: conversation_id came last and was dropped
    call = stored(EventFactory(properties=ELEVEN))
    assert list(call["properties"])[-1] == "conversation_id"

    plan = plan_build(call=call, config=ALL)

    assert list(plan.operations[0].metadata) == sorted(ELEVEN)[:10]
    assert plan.dropped == (Dropped("properties.zone", "Intercom keeps at most 10 metadata keys"),)


@pytest.mark.django_db
def test_mapped_properties_come_first_in_the_syncs_mapping_order() -> None:
    call = stored(EventFactory(properties=ELEVEN))
    config = SyncConfig(
        send_all_properties=True,
        event_metadata=(("properties.zone", "zone"), ("properties.step", "step")),
    )

    plan = plan_build(call=call, config=config)

    rest = sorted(set(ELEVEN) - {"zone", "step"})
    assert list(plan.operations[0].metadata) == ["zone", "step", *rest[:8]]
    assert [d.field for d in plan.dropped] == ["properties.title"]


def test_numbers_in_names_sort_by_value() -> None:
    plan = plan_build(call=track({f"item_{n}": n for n in (10, 2, 1, 11)}), config=ALL)

    assert list(plan.operations[0].metadata) == ["item_1", "item_2", "item_10", "item_11"]


# --- 10. two users sharing an email -----------------------------------------------------------


def identify_plan(identity: Identity, **fields: Any) -> Plan:
    fields = {"role": "user", "external_id": identity.external_id, **fields}
    if identity.email:
        fields["email"] = identity.email
    upsert = ContactUpsert(fields=fields, custom_attributes={}, fingerprint=repr(fields))
    return Plan(identity=identity, operations=(upsert,))


def test_a_second_user_with_the_same_email_fails_naming_the_other_contact(harness) -> None:
    first = harness.api(
        "POST", "/contacts", {"role": "user", "external_id": "u-1", "email": "ada@example.com"}
    )
    second = Identity(user_key="u-2", external_id="u-2", email="ada@example.com")

    with pytest.raises(PermanentError) as failed:
        harness.run(identify_plan(second, name="Ada Two"))

    message = str(failed.value)
    assert f"Intercom contact {first['id']} (external_id 'u-1')" in message
    assert "the email 'ada@example.com'" in message
    assert "one user per email unless the workspace allows duplicate emails" in message
    assert failed.value.status == 409
    # the first user's contact is left as it was
    [contact] = harness.contacts()
    assert (contact["external_id"], contact["name"]) == ("u-1", None)


def test_a_contact_with_the_email_and_no_external_id_becomes_ours(harness) -> None:
    # given a contact made in Intercom with the user's email, but no external id
    existing = harness.api("POST", "/contacts", {"role": "user", "email": "ada@example.com"})

    outcome = harness.run(identify_plan(USER, name="Ada"))

    assert outcome.status == "succeeded"
    [contact] = harness.contacts()
    assert (contact["id"], contact["external_id"], contact["name"]) == (
        existing["id"],
        "u-1",
        "Ada",
    )
    assert harness.calls() == [
        "GET /contacts/find_by_external_id/u-1",
        "POST /contacts",
        f"GET /contacts/{existing['id']}",
        f"PUT /contacts/{existing['id']}",
    ]


def test_an_event_for_a_user_whose_email_is_on_a_contact_without_external_id_is_sent(
    harness,
) -> None:
    existing = harness.api("POST", "/contacts", {"role": "user", "email": "ada@example.com"})

    outcome = harness.run(event_plan())

    assert outcome.status == "succeeded"
    [event] = harness.sandbox.state()["events"]
    assert event["contact_id"] == existing["id"]
    assert harness.contacts()[0]["external_id"] == "u-1"
