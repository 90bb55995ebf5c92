"""Plans performed against the sandbox: every operation type, the quirks, and the calls it costs."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from integrations.intercom.client import (
    AuthenticationError,
    IntercomClient,
    PermanentError,
    RateLimitedError,
    Result,
    RetryableError,
)
from integrations.intercom.executor import plan_execute
from integrations.intercom.operations import (
    CompanyAttach,
    CompanyDetach,
    CompanyTag,
    CompanyUpsert,
    ContactDelete,
    ContactMerge,
    ContactTag,
    ContactTagList,
    ContactTouch,
    ContactUpsert,
    EventCreate,
    Identity,
    Plan,
)


class MemoryState:
    """An in-memory ``DestinationState`` (the real one is the data plane's, over the DB)."""

    def __init__(self) -> None:
        self.contacts: dict[str, tuple[str, str]] = {}
        self.roles: dict[str, str] = {}
        self.attributes: dict[str, set[str]] = {}
        self.events: set[str] = set()
        self.pending_visitors: set[str] = set()
        self.tags: dict[str, str] | None = None
        self.tag_lists: dict[tuple[str, str], set[str]] = {}

    def contact_get(self, user_key: str) -> tuple[str, str] | None:
        return self.contacts.get(user_key)

    def contact_set(self, user_key: str, contact_id: str, role: str, fingerprint: str) -> None:
        self.contacts[user_key] = (contact_id, fingerprint)
        self.roles[user_key] = role

    def contact_forget(self, user_key: str) -> None:
        self.contacts.pop(user_key, None)

    def attribute_names(self, model: str) -> set[str] | None:
        names = self.attributes.get(model)
        return set(names) if names is not None else None

    def attribute_names_set(self, model: str, names: set[str]) -> None:
        self.attributes[model] = set(names)

    def contact_role(self, user_key: str) -> str | None:
        return self.roles.get(user_key) if user_key in self.contacts else None

    def lead_calls_pending(self, lead_key: str) -> bool:
        return lead_key in self.pending_visitors

    def tag_ids(self) -> dict[str, str] | None:
        return dict(self.tags) if self.tags is not None else None

    def tag_ids_set(self, tags: dict[str, str]) -> None:
        self.tags = dict(tags)

    def tags_sent(self, owner_key: str, list_name: str) -> set[str] | None:
        names = self.tag_lists.get((owner_key, list_name))
        return set(names) if names is not None else None

    def tags_sent_set(self, owner_key: str, list_name: str, names: set[str]) -> None:
        self.tag_lists[(owner_key, list_name)] = set(names)

    def event_names(self) -> set[str]:
        return set(self.events)

    def event_name_reserve(self, name: str, limit: int) -> bool:
        if name not in self.events and len(self.events) >= limit:
            return False
        self.events.add(name)
        return True


class ListRecorder:
    """An ``ExchangeRecorder`` that keeps (started, finished) pairs."""

    def __init__(self) -> None:
        self.started_calls: list[dict[str, Any]] = []
        self.finished_calls: list[tuple[int, Result]] = []

    def started(self, *, method: str, url: str, body: Any) -> object:
        self.started_calls.append({"method": method, "url": url, "body": body})
        return len(self.started_calls) - 1

    def finished(self, handle: object, result: Any) -> None:
        self.finished_calls.append((handle, result))


class Harness:
    """One destination's executor pieces, pointed at the sandbox."""

    def __init__(self, sandbox) -> None:
        self.sandbox = sandbox
        self.client = IntercomClient(
            base_url=sandbox.url, token=sandbox.token, api_version="2.16", read_timeout=5
        )
        self.state = MemoryState()
        self.recorder = ListRecorder()

    def run(self, plan: Plan):
        self.recorder = ListRecorder()
        return plan_execute(plan=plan, client=self.client, state=self.state, recorder=self.recorder)

    def api(self, method: str, path: str, body: Any = None) -> dict:
        """Set up Intercom's side directly, as if someone else had done it."""
        result = self.client.request(method, path, body=body)
        assert result.ok, result.excerpt
        return result.body

    def calls(self) -> list[str]:
        return [
            f"{c['method']} {c['url'].removeprefix(self.sandbox.url)}"
            for c in self.recorder.started_calls
        ]

    def contacts(self) -> list[dict]:
        return self.sandbox.state()["contacts"]


@pytest.fixture
def harness(intercom_sandbox) -> Harness:
    return Harness(intercom_sandbox)


USER = Identity(user_key="u-1", external_id="u-1", email="ada@example.com")
BY_EMAIL = Identity(user_key="ada@example.com", external_id=None, email="ada@example.com")
LEAD = Identity(user_key="anon-1", external_id=None, email=None, role="lead")


def identify(identity=USER, *, name="Ada", plan_name=None, unknown="create", **extra) -> Plan:
    attributes = {"plan_name": plan_name} if plan_name is not None else {}
    fields = {"name": name}
    fingerprint = f"{name}|{plan_name}"
    return Plan(
        identity=identity,
        operations=(
            ContactUpsert(fields=fields, custom_attributes=attributes, fingerprint=fingerprint),
        ),
        attribute_types={("contact", "plan_name"): "string"} if attributes else {},
        unknown_attributes=unknown,
        **extra,
    )


def track(identity=USER, *, name="Signed Up", created_at=1700000000, missing="create") -> Plan:
    return Plan(
        identity=identity,
        operations=(
            EventCreate(
                event_name=name,
                created_at=created_at,
                metadata={"plan": "pro", "seats": 3},
                missing_contact=missing,
            ),
        ),
    )


# --- identify ------------------------------------------------------------------------------


def test_a_cold_identify_creates_the_contact_and_caches_it(harness):
    outcome = harness.run(identify(plan_name="pro"))

    assert outcome.status == "succeeded"
    [contact] = harness.contacts()
    assert contact["external_id"] == "u-1"
    assert contact["email"] == "ada@example.com"
    assert contact["name"] == "Ada"
    assert contact["custom_attributes"] == {"plan_name": "pro"}
    assert harness.state.contacts["u-1"] == (contact["id"], "Ada|pro")
    assert outcome.contact_id == contact["id"]
    assert harness.calls() == [
        "GET /contacts/find_by_external_id/u-1",
        "GET /data_attributes?model=contact",
        "POST /data_attributes",
        "POST /contacts",
    ]


def test_a_warm_identify_without_changes_costs_no_call(harness):
    harness.run(identify(plan_name="pro"))

    outcome = harness.run(identify(plan_name="pro"))

    assert outcome.status == "skipped"
    assert outcome.reason == "unchanged"
    assert harness.calls() == []


def test_a_warm_identify_with_a_change_costs_one_call(harness):
    harness.run(identify(plan_name="pro"))

    outcome = harness.run(identify(plan_name="enterprise", name="Ada L."))

    assert outcome.status == "succeeded"
    contact_id = harness.state.contacts["u-1"][0]
    assert harness.calls() == [f"PUT /contacts/{contact_id}"]
    [contact] = harness.contacts()
    assert contact["name"] == "Ada L."
    assert contact["custom_attributes"]["plan_name"] == "enterprise"
    assert harness.state.contacts["u-1"][1] == "Ada L.|enterprise"


def test_an_existing_user_is_found_by_external_id_and_updated(harness):
    existing = harness.api("POST", "/contacts", {"role": "user", "external_id": "u-1"})

    harness.run(identify())

    assert harness.calls() == [
        "GET /contacts/find_by_external_id/u-1",
        f"PUT /contacts/{existing['id']}",
    ]
    assert len(harness.contacts()) == 1


def test_external_ids_are_url_quoted(harness):
    identity = Identity(user_key="a/b c?", external_id="a/b c?", email=None)
    harness.api("POST", "/contacts", {"role": "user", "external_id": "a/b c?"})

    harness.run(identify(identity))

    assert harness.calls()[0] == "GET /contacts/find_by_external_id/a%2Fb%20c%3F"
    assert len(harness.contacts()) == 1


def test_a_409_on_create_takes_the_id_and_updates_that_contact(harness):
    # given a contact the search index does not show yet
    harness.sandbox.configure(search_lag_seconds=600)
    existing = harness.api("POST", "/contacts", {"role": "user", "email": "ada@example.com"})

    # when it is identified by email
    outcome = harness.run(identify(BY_EMAIL, name="Ada"))

    # then the 409's id is used: one contact, updated
    assert outcome.status == "succeeded"
    assert harness.calls() == [
        "POST /contacts/search",
        "POST /contacts",
        f"PUT /contacts/{existing['id']}",
    ]
    [contact] = harness.contacts()
    assert contact["name"] == "Ada"
    assert harness.state.contacts["ada@example.com"][0] == existing["id"]


def test_a_contact_found_by_email_search_is_updated(harness):
    existing = harness.api("POST", "/contacts", {"role": "user", "email": "ada@example.com"})

    harness.run(identify(BY_EMAIL))

    assert harness.calls() == ["POST /contacts/search", f"PUT /contacts/{existing['id']}"]


def test_a_merged_contact_is_followed_to_the_survivor_and_the_cache_updated(harness):
    lead = harness.api("POST", "/contacts", {"role": "lead", "email": "ada@example.com"})
    user = harness.api(
        "POST", "/contacts", {"role": "user", "external_id": "u-1", "email": "ada@example.com"}
    )
    harness.api("POST", "/contacts/merge", {"from": lead["id"], "into": user["id"]})
    harness.state.contact_set("u-1", lead["id"], "user", "old")

    outcome = harness.run(identify(name="Ada Lovelace"))

    assert outcome.contact_id == user["id"]
    assert harness.calls() == [f"PUT /contacts/{lead['id']}", f"PUT /contacts/{user['id']}"]
    assert harness.recorder.finished_calls[0][1].status == 410
    assert harness.state.contacts["u-1"][0] == user["id"]
    [contact] = harness.contacts()
    assert contact["name"] == "Ada Lovelace"


def test_a_cached_id_that_404s_is_forgotten_and_resolved_again(harness):
    harness.state.contact_set("u-1", "deadbeefdeadbeefdeadbeef", "user", "stale")

    # (with the sync's "unarchive contacts" on: an archived contact would be unarchived)
    outcome = harness.run(identify(unarchive_contacts=True))

    assert outcome.status == "succeeded"
    [contact] = harness.contacts()
    assert harness.state.contacts["u-1"][0] == contact["id"]
    assert harness.calls() == [
        "PUT /contacts/deadbeefdeadbeefdeadbeef",
        "POST /contacts/deadbeefdeadbeefdeadbeef/unarchive",
        "GET /contacts/find_by_external_id/u-1",
        "POST /contacts",
    ]


def test_an_archived_contact_is_unarchived_then_updated(harness):
    existing = harness.api("POST", "/contacts", {"role": "user", "external_id": "u-1"})
    harness.api("POST", f"/contacts/{existing['id']}/archive")

    outcome = harness.run(identify(name="Back again", unarchive_contacts=True))

    assert outcome.status == "succeeded"
    [contact] = harness.contacts()
    assert contact["archived"] is False
    assert contact["name"] == "Back again"
    assert f"POST /contacts/{existing['id']}/unarchive" in harness.calls()


# --- custom attributes ---------------------------------------------------------------------


def test_unknown_attributes_are_created_when_the_sync_says_create(harness):
    harness.run(identify(plan_name="pro"))

    assert harness.sandbox.state()["data_attributes"]["contact"] == {"plan_name": "string"}
    assert harness.state.attributes["contact"] == {"plan_name"}


def test_unknown_attributes_are_dropped_and_reported_when_the_sync_says_drop(harness):
    outcome = harness.run(identify(plan_name="pro", unknown="drop"))

    assert outcome.status == "succeeded"
    assert "plan_name" in outcome.reason
    [contact] = harness.contacts()
    assert contact["custom_attributes"] == {}
    assert "POST /data_attributes" not in harness.calls()


def test_known_attributes_are_not_fetched_again(harness):
    harness.state.attribute_names_set("contact", {"plan_name"})
    harness.api(
        "POST", "/data_attributes", {"name": "plan_name", "model": "contact", "data_type": "string"}
    )

    harness.run(identify(plan_name="pro"))

    assert harness.calls() == ["GET /contacts/find_by_external_id/u-1", "POST /contacts"]


def test_a_stale_attribute_cache_is_refreshed_once_after_a_400(harness):
    # given a cache that believes the attribute exists, but Intercom does not have it
    harness.state.attribute_names_set("contact", {"plan_name"})

    outcome = harness.run(identify(plan_name="pro"))

    assert outcome.status == "succeeded"
    assert harness.calls() == [
        "GET /contacts/find_by_external_id/u-1",
        "POST /contacts",
        "GET /data_attributes?model=contact",
        "POST /data_attributes",
        "POST /contacts",
    ]
    [contact] = harness.contacts()
    assert contact["custom_attributes"] == {"plan_name": "pro"}


# --- events --------------------------------------------------------------------------------


def test_an_event_for_a_known_user_is_one_call(harness):
    harness.api("POST", "/contacts", {"role": "user", "external_id": "u-1"})

    outcome = harness.run(track())

    assert outcome.status == "succeeded"
    assert harness.calls() == ["POST /events"]
    assert harness.recorder.started_calls[0]["body"] == {
        "event_name": "Signed Up",
        "created_at": 1700000000,
        "user_id": "u-1",
        "metadata": {"plan": "pro", "seats": 3},
    }
    [event] = harness.sandbox.state()["events"]
    assert event["event_name"] == "Signed Up"
    assert harness.state.events == {"Signed Up"}


def test_an_event_by_email_sends_the_email(harness):
    harness.api("POST", "/contacts", {"role": "user", "email": "ada@example.com"})

    harness.run(track(BY_EMAIL))

    assert harness.recorder.started_calls[0]["body"]["email"] == "ada@example.com"
    assert len(harness.sandbox.state()["events"]) == 1


def test_an_event_for_a_lead_uses_intercoms_id(harness):
    lead = harness.api("POST", "/contacts", {"role": "lead"})
    harness.state.contact_set("anon-1", lead["id"], "lead", "")

    harness.run(track(LEAD))

    assert harness.calls() == ["POST /events"]
    assert harness.recorder.started_calls[0]["body"]["id"] == lead["id"]


def test_a_lead_is_created_without_an_external_id(harness):
    # Intercom sets no external_id on a lead (the sandbox refuses one, 400)
    outcome = harness.run(identify(LEAD))

    assert outcome.status == "succeeded"
    [created] = [c for c in harness.recorder.started_calls if c["method"] == "POST"]
    assert "external_id" not in created["body"]
    [contact] = harness.contacts()
    assert (contact["role"], contact["external_id"]) == ("lead", None)
    assert harness.state.contacts["anon-1"][0] == contact["id"]


def test_a_missing_contact_is_created_then_the_event_sent(harness):
    outcome = harness.run(track(missing="create"))

    assert outcome.status == "succeeded"
    [contact] = harness.contacts()
    assert contact["external_id"] == "u-1"
    [event] = harness.sandbox.state()["events"]
    assert event["contact_id"] == contact["id"]
    assert harness.calls() == [
        "POST /events",
        "GET /contacts/find_by_external_id/u-1",
        "POST /contacts",
        "POST /events",
    ]
    assert harness.state.contacts["u-1"][0] == contact["id"]


def test_a_missing_contact_with_retry_raises_retryable(harness):
    with pytest.raises(RetryableError, match="no Intercom contact"):
        harness.run(track(missing="retry"))

    assert harness.sandbox.state()["counts"]["contacts"] == 0


def test_a_missing_contact_with_skip_is_skipped_with_a_reason(harness):
    outcome = harness.run(track(missing="skip"))

    assert outcome.status == "skipped"
    assert "no Intercom contact" in outcome.reason
    assert harness.sandbox.state()["counts"]["events"] == 0


def test_a_missing_lead_is_created_with_create(harness):
    outcome = harness.run(track(LEAD, missing="create"))

    assert outcome.status == "succeeded"
    [contact] = harness.contacts()
    assert contact["role"] == "lead"
    assert harness.sandbox.state()["events"][0]["contact_id"] == contact["id"]


def test_a_121st_event_name_fails_without_calling_intercom(harness):
    harness.state.events = {f"event-{n}" for n in range(120)}

    with pytest.raises(PermanentError, match="120 event names"):
        harness.run(track(name="one too many"))

    assert harness.calls() == []


def test_a_known_event_name_still_goes_at_the_limit(harness):
    harness.api("POST", "/contacts", {"role": "user", "external_id": "u-1"})
    harness.state.events = {f"event-{n}" for n in range(119)} | {"Signed Up"}

    outcome = harness.run(track(name="Signed Up"))

    assert outcome.status == "succeeded"


# --- companies -----------------------------------------------------------------------------


def group_plan() -> Plan:
    return Plan(
        identity=USER,
        operations=(
            CompanyUpsert(
                company_id="acme",
                fields={"name": "Acme", "plan": "pro", "size": 12},
                custom_attributes={"tier": "gold"},
            ),
            CompanyAttach(company_id="acme"),
        ),
        attribute_types={("company", "tier"): "string"},
    )


def test_group_upserts_the_company_and_attaches_the_user(harness):
    harness.api("POST", "/contacts", {"role": "user", "external_id": "u-1"})

    outcome = harness.run(group_plan())

    assert outcome.status == "succeeded"
    state = harness.sandbox.state()
    [company] = state["companies"]
    assert company["company_id"] == "acme"
    assert company["custom_attributes"] == {"tier": "gold"}
    [contact] = state["contacts"]
    assert state["company_members"][contact["id"]] == [company["id"]]
    assert "POST /data_attributes" in harness.calls()


def test_group_for_an_unknown_user_creates_the_contact(harness):
    harness.run(group_plan())

    state = harness.sandbox.state()
    [contact] = state["contacts"]
    assert state["company_members"][contact["id"]] == [state["companies"][0]["id"]]


def test_detach_removes_the_company_found_by_company_id(harness):
    harness.run(group_plan())
    plan = Plan(identity=USER, operations=(CompanyDetach(company_id="acme"),))

    outcome = harness.run(plan)

    assert outcome.status == "succeeded"
    company_id = harness.sandbox.state()["companies"][0]["id"]
    contact_id = harness.state.contacts["u-1"][0]
    assert harness.calls() == [
        "GET /companies?company_id=acme",
        f"DELETE /contacts/{contact_id}/companies/{company_id}",
    ]
    assert harness.sandbox.state()["company_members"][contact_id] == []


def test_detach_from_an_unknown_company_is_skipped_with_a_reason(harness):
    plan = Plan(identity=USER, operations=(CompanyDetach(company_id="nope"),))

    outcome = harness.run(plan)

    assert outcome.status == "skipped"
    assert "no such company" in outcome.reason


# --- touch, merge, delete ------------------------------------------------------------------


def test_touch_updates_last_seen(harness):
    harness.run(identify())

    outcome = harness.run(Plan(identity=USER, operations=(ContactTouch(last_seen_at=1700000123),)))

    assert outcome.status == "succeeded"
    assert harness.contacts()[0]["last_seen_at"] == 1700000123
    assert len(harness.calls()) == 1
    assert harness.state.contacts["u-1"][1] == "Ada|None"  # the fingerprint is kept


MERGE = Plan(identity=USER, operations=(ContactMerge(lead_key="anon-1"),))


def test_alias_merges_the_lead_into_the_user_once(harness):
    lead = harness.api("POST", "/contacts", {"role": "lead"})
    user = harness.api("POST", "/contacts", {"role": "user", "external_id": "u-1"})
    harness.state.contact_set("anon-1", lead["id"], "lead", "")

    outcome = harness.run(MERGE)

    assert outcome.status == "succeeded"
    state = harness.sandbox.state()
    assert [c["id"] for c in state["contacts"]] == [user["id"]]
    assert state["merged"] == {lead["id"]: user["id"]}
    # the visitor's key now names the user: their later calls reach the user
    assert harness.state.contacts["anon-1"][0] == user["id"]
    assert harness.state.roles["anon-1"] == "user"
    # and the merge is not asked for again (a re-delivery, another identify)
    again = harness.run(MERGE)
    assert (again.status, again.reason) == (
        "skipped",
        "the visitor was merged into the user already",
    )
    assert harness.calls() == []


def test_a_merge_whose_answer_was_lost_settles_on_the_retry(harness):
    lead = harness.api("POST", "/contacts", {"role": "lead"})
    user = harness.api("POST", "/contacts", {"role": "user", "external_id": "u-1"})
    harness.state.contact_set("anon-1", lead["id"], "lead", "")
    harness.api(
        "POST",
        "/contacts/merge",
        {"from": lead["id"], "into": user["id"], "skip_duplicate_validation": True},
    )

    outcome = harness.run(MERGE)

    assert "no longer exists" in outcome.reason
    assert harness.state.contacts["anon-1"][0] == user["id"]


def test_the_merge_waits_for_the_visitors_calls_still_queued(harness):
    lead = harness.api("POST", "/contacts", {"role": "lead"})
    harness.api("POST", "/contacts", {"role": "user", "external_id": "u-1"})
    harness.state.contact_set("anon-1", lead["id"], "lead", "")
    harness.state.pending_visitors.add("anon-1")

    with pytest.raises(RetryableError, match="waiting for the calls about the visitor"):
        harness.run(MERGE)

    assert harness.calls() == []
    assert harness.state.roles["anon-1"] == "lead"


def test_a_merge_without_a_lead_links_the_visitor_to_the_user(harness):
    user = harness.api("POST", "/contacts", {"role": "user", "external_id": "u-1"})

    outcome = harness.run(Plan(identity=USER, operations=(ContactMerge(lead_key="anon-9"),)))

    assert outcome.status == "skipped"
    assert "no call about the visitor 'anon-9' reached Intercom" in outcome.reason
    assert harness.state.contacts["anon-9"][0] == user["id"]


def test_a_merged_visitors_later_calls_reach_the_user(harness):
    user = harness.api("POST", "/contacts", {"role": "user", "external_id": "u-1"})
    harness.state.contact_set("anon-1", user["id"], "user", "")

    harness.run(identify(LEAD, name="Ada Visitor"))
    harness.run(track(LEAD))

    assert harness.calls()[-1] == "POST /events"
    [contact] = harness.contacts()
    assert (contact["role"], contact["name"]) == ("user", "Ada Visitor")
    assert harness.sandbox.state()["events"][0]["contact_id"] == user["id"]
    assert harness.state.roles["anon-1"] == "user"


def test_delete_removes_the_contact_and_forgets_it(harness):
    harness.run(identify())

    outcome = harness.run(Plan(identity=USER, operations=(ContactDelete(),)))

    assert outcome.status == "succeeded"
    assert harness.contacts() == []
    assert "u-1" not in harness.state.contacts


def test_delete_of_an_unknown_contact_is_skipped(harness):
    outcome = harness.run(Plan(identity=USER, operations=(ContactDelete(),)))

    assert outcome.status == "skipped"
    assert outcome.reason == "no such contact"


# --- errors and the attempt log ------------------------------------------------------------


def test_an_empty_plan_is_skipped_with_its_reason(harness):
    outcome = harness.run(Plan(identity=USER, skip_reason="filtered out"))

    assert (outcome.status, outcome.reason) == ("skipped", "filtered out")


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (503, RetryableError),
        (500, RetryableError),
        (400, PermanentError),
        (429, RateLimitedError),
        (401, AuthenticationError),
    ],
)
def test_intercoms_errors_are_raised_typed(harness, status, error_class):
    harness.api("POST", "/contacts", {"role": "user", "external_id": "u-1"})
    harness.sandbox.configure(force_status=status, force_count=1, force_path="/events")

    with pytest.raises(error_class) as caught:
        harness.run(track())

    assert caught.value.status == status
    assert type(caught.value) is error_class


def test_a_429_reports_the_reset_time(harness):
    harness.sandbox.configure(rate_limit=1)
    harness.client.me()

    with pytest.raises(RateLimitedError) as caught:
        for _ in range(2):  # the window may roll over once
            harness.run(track())

    assert caught.value.reset_at is not None
    assert caught.value.reset_at % 10 == 0


def test_every_exchange_is_recorded_before_and_after(harness):
    harness.run(track(missing="create"))

    sent = harness.sandbox.requests
    assert len(harness.recorder.started_calls) == len(sent) == 4
    assert [h for h, _ in harness.recorder.finished_calls] == [0, 1, 2, 3]
    statuses = [r.status for _, r in harness.recorder.finished_calls]
    assert statuses == [entry["status"] for entry in sent]


def test_a_plan_without_identity_fails_clearly(harness):
    with pytest.raises(PermanentError, match="no identity"):
        harness.run(Plan(identity=None, operations=(ContactDelete(),)))


def test_the_sandbox_control_endpoint_matches_what_the_executor_sees(harness):
    harness.run(identify())

    over_http = requests.get(f"{harness.sandbox.url}/_sandbox/state", timeout=5).json()

    assert over_http["counts"]["contacts"] == 1


def test_group_with_a_stale_cached_contact_resolves_it_again(harness):
    harness.api("POST", "/contacts", {"role": "user", "external_id": "u-1"})
    harness.state.contact_set("u-1", "deadbeefdeadbeefdeadbeef", "user", "")

    outcome = harness.run(group_plan())

    assert outcome.status == "succeeded"
    state = harness.sandbox.state()
    [contact] = state["contacts"]
    assert state["company_members"][contact["id"]] == [state["companies"][0]["id"]]
    assert harness.state.contacts["u-1"][0] == contact["id"]


# --- identify with companies and nulls -------------------------------------------------------


def identify_with_company(*, name="Ada") -> Plan:
    """An identify carrying ``traits.company``: its fingerprint covers the company too."""
    return Plan(
        identity=USER,
        operations=(
            ContactUpsert(fields={"name": name}, custom_attributes={}, fingerprint=f"{name}|acme"),
            CompanyUpsert(company_id="acme", fields={"name": "Acme"}, custom_attributes={}),
            CompanyAttach(company_id="acme"),
        ),
    )


def test_a_warm_identify_with_an_unchanged_company_costs_no_call(harness):
    harness.run(identify_with_company())

    outcome = harness.run(identify_with_company())

    assert outcome.status == "skipped"
    assert outcome.reason == "unchanged"
    assert harness.calls() == []


def test_an_identify_whose_company_attach_failed_is_sent_again_in_full(harness):
    # given the contact went through but the attach got a 503
    harness.sandbox.configure(
        force_status=503, force_count=1, force_path="/contacts/", force_method="POST"
    )
    with pytest.raises(RetryableError):
        harness.run(identify_with_company())

    # when the delivery is retried
    outcome = harness.run(identify_with_company())

    # then it is not mistaken for "unchanged": the company is attached this time
    assert outcome.status == "succeeded"
    assert "POST /companies" in harness.calls()
    state = harness.sandbox.state()
    [contact] = state["contacts"]
    assert len(state["company_members"][contact["id"]]) == 1
    assert harness.state.contacts["u-1"][1] == "Ada|acme"


def test_a_null_for_an_attribute_intercom_lacks_is_dropped_not_created(harness):
    harness.state.attribute_names_set("contact", set())
    plan = Plan(
        identity=USER,
        operations=(
            ContactUpsert(
                fields={"name": "Ada"}, custom_attributes={"plan_name": None}, fingerprint="x"
            ),
        ),
        attribute_types={("contact", "plan_name"): "string"},
        unknown_attributes="create",
    )

    outcome = harness.run(plan)

    assert outcome.status == "succeeded"
    assert "POST /data_attributes" not in harness.calls()
    assert "plan_name" in outcome.reason and "null" in outcome.reason
    [contact] = harness.contacts()
    assert contact["custom_attributes"] == {}


# --- tags ---------------------------------------------------------------------------------


def tags_of_contact(harness, contact_id: str) -> list[str]:
    state = harness.sandbox.state()
    names = {tag["id"]: tag["name"] for tag in state["tags"]}
    return sorted(names[t] for t in state["contact_tags"].get(contact_id, []))


def test_a_tag_list_tags_new_names_and_untags_the_names_gone(harness):
    user = harness.api("POST", "/contacts", {"role": "user", "external_id": "u-1"})
    harness.api("POST", "/tags", {"name": "Trial"})  # exists already: looked up, not created

    def audiences(*names: str) -> Plan:
        return Plan(identity=USER, operations=(ContactTagList("audiences", names),))

    harness.run(audiences("trial", "Beta"))
    assert tags_of_contact(harness, user["id"]) == ["Beta", "Trial"]
    assert [tag["name"] for tag in harness.sandbox.state()["tags"]] == ["Trial", "Beta"]

    harness.run(audiences("Beta", "Power"))

    assert tags_of_contact(harness, user["id"]) == ["Beta", "Power"]
    # only the changes were sent: Power tagged, Trial untagged (tag ids from the cache)
    assert [c for c in harness.calls() if "/tags" in c] == [
        "POST /tags",
        f"POST /contacts/{user['id']}/tags",
        f"DELETE /contacts/{user['id']}/tags/{harness.state.tags['trial']}",
    ]
    assert harness.state.tag_lists[("u-1", "audiences")] == {"Beta", "Power"}


def test_untagging_a_tag_the_contact_lacks_is_noted_not_failed(harness):
    harness.api("POST", "/contacts", {"role": "user", "external_id": "u-1"})
    harness.api("POST", "/tags", {"name": "VIP"})

    outcome = harness.run(Plan(identity=USER, operations=(ContactTag("VIP", tagged=False),)))

    assert outcome.status == "skipped"
    assert "the contact did not have it" in outcome.reason


def test_a_company_is_tagged_and_untagged_by_name(harness):
    company = harness.api("POST", "/companies", {"company_id": "acme"})

    harness.run(Plan(identity=USER, operations=(CompanyTag("acme", "Enterprise"),)))
    tagged = harness.sandbox.state()["company_tags"]
    harness.run(Plan(identity=USER, operations=(CompanyTag("acme", "Enterprise", tagged=False),)))

    assert len(tagged[company["id"]]) == 1
    assert harness.sandbox.state()["company_tags"] == {}
    assert harness.recorder.started_calls[-1]["body"] == {
        "name": "Enterprise",
        "companies": [{"id": company["id"], "untag": True}],
    }
