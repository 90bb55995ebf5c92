"""``POST /api/v1/audiences/{name}/members``: many users tagged and untagged, each in their lane."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.authtoken.models import Token

from integrations.models import Sync
from streaming.models import AudienceChange, Delivery, Event
from tests.factories import SourceFactory
from tests.streaming.audit_rows import staff_make, wakeups_clear
from tests.streaming.delivery_setup import drain_all, identify, ingest, statuses, sync_into

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_cache")]


@pytest.fixture(autouse=True)
def _no_wakeups_left():
    yield
    wakeups_clear()


@pytest.fixture
def token(db) -> str:
    user = staff_make(username="cohort-bot", perms=("streaming.change_audience_members",))
    return Token.objects.create(user=user).key


def post(client: Any, token: str, name: str, body: Any, **headers: str) -> Any:
    return client.post(
        f"/api/v1/audiences/{name}/members",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Token {token}",
        **headers,
    )


def tags_of(sandbox, external_id: str) -> list[str]:
    state = sandbox.state()
    names = {tag["id"]: tag["name"] for tag in state["tags"]}
    [contact] = [c for c in state["contacts"] if c["external_id"] == external_id]
    return sorted(names[t] for t in state["contact_tags"].get(contact["id"], []))


def test_members_are_tagged_and_untagged_in_each_users_lane(client, token, intercom_sandbox):
    # given a sync, and a user whose identify is still queued
    sync = sync_into(intercom_sandbox)
    [queued_identify] = ingest(sync, [identify("u-1", name="Ada")])

    # when a cohort adds three users
    response = post(client, token, "Power users", {"add": ["u-1", "u-2", 3]})

    # then the answer counts what was queued: one call per user, in the user's lane
    assert response.status_code == 202, response.content
    answer = response.json()
    assert (answer["added"], answer["removed"], answer["deliveries"]) == (3, 0, 3)
    assert answer["syncs"] == [{"id": sync.pk, "name": sync.name, "deliveries": 3, "skipped": ""}]
    calls = Delivery.objects.filter(event__type="audience").order_by("id")
    assert [d.user_key for d in calls] == ["u-1", "u-2", "3"]
    assert calls[0].lane_id == queued_identify.lane_id  # after the identify, in its lane
    drain_all(sync)
    assert set(statuses(calls)) == {"succeeded"}
    # the identify went first; the tag was created once, looked up by name
    paths = [(r["method"], r["path"]) for r in intercom_sandbox.requests]
    assert paths.index(("POST", "/contacts")) < paths.index(("GET", "/tags"))
    assert [p for p in paths if p == ("POST", "/tags")] == [("POST", "/tags")]
    assert tags_of(intercom_sandbox, "u-1") == ["Power users"]
    assert tags_of(intercom_sandbox, "3") == ["Power users"]

    # when one of them leaves the cohort
    response = post(client, token, "Power users", {"remove": ["u-2"]})
    drain_all(sync)

    # then their tag is removed, the others keep it
    assert response.json()["removed"] == 1
    assert tags_of(intercom_sandbox, "u-2") == []
    assert tags_of(intercom_sandbox, "u-1") == ["Power users"]
    assert AudienceChange.objects.count() == 2


def test_a_repeated_request_with_an_idempotency_key_is_stored_once(client, token, intercom_sandbox):
    sync_into(intercom_sandbox)

    first = post(client, token, "trial", {"add": ["u-1"]}, HTTP_IDEMPOTENCY_KEY="k-1")
    again = post(client, token, "trial", {"add": ["u-1"]}, HTTP_IDEMPOTENCY_KEY="k-1")

    assert (first.json()["deliveries"], again.json()["deliveries"]) == (1, 0)
    assert Event.objects.filter(type="audience").count() == 1


def test_a_sync_that_does_not_know_users_by_user_id_takes_none(client, token, intercom_sandbox):
    by_email = sync_into(intercom_sandbox, match_by=Sync.MatchBy.EMAIL)

    answer = post(client, token, "trial", {"add": ["u-1"]}).json()

    assert answer["deliveries"] == 0
    assert answer["syncs"][0]["id"] == by_email.pk
    assert "not known by userId" in answer["syncs"][0]["skipped"]


@pytest.mark.parametrize(
    ("name", "body", "field", "message"),
    [
        ("trial", {}, "non_field_errors", "Give user ids in add, remove, or both."),
        ("trial", {"add": "u-1"}, "add", 'Expected a list of items but got type "str".'),
        ("trial", {"add": [""]}, "add", "This field may not be blank."),
        ("trial", {"add": [{"id": 1}]}, "add", "Not a valid string."),
        ("trial", {"add": ["x" * 256]}, "add", "Ensure this field has no more than 255"),
        (
            "trial",
            {"add": ["u-1"], "remove": ["u-1"]},
            "non_field_errors",
            "A user id cannot be both added and removed: 'u-1'.",
        ),
        (" trial", {"add": ["u-1"]}, "audience", "An audience name is the tag's name"),
        ("trial", ["u-1"], "non_field_errors", "Send a JSON object"),
    ],
)
def test_bad_input_is_refused_with_the_reason_and_stores_nothing(
    client, token, intercom_sandbox, name, body, field, message
):
    sync_into(intercom_sandbox)

    response = post(client, token, name, body)

    assert response.status_code == 400
    errors = response.json()[field]
    assert message in str(errors), errors
    assert not Event.objects.exists()
    assert not AudienceChange.objects.exists()


def test_too_many_members_are_refused(client, token, intercom_sandbox):
    response = post(client, token, "trial", {"add": [f"u-{n}" for n in range(10_001)]})

    assert response.status_code == 400
    assert "At most 10000 user ids" in json.dumps(response.json())


def test_the_permission_is_needed(client, intercom_sandbox):
    reader = staff_make(username="reader", perms=("streaming.view_delivery",))
    token = Token.objects.create(user=reader).key

    response = post(client, token, "trial", {"add": ["u-1"]})
    anonymous = client.post(
        "/api/v1/audiences/trial/members", data={}, content_type="application/json"
    )

    assert response.status_code == 403
    assert "change_audience_members" in response.json()["detail"]
    assert anonymous.status_code == 401
    assert not Event.objects.exists()


def test_people_deleted_on_request_are_left_out(client, token, intercom_sandbox):
    from streaming.delivery.deletion import person_deletion_request

    sync_into(intercom_sandbox, sources=[SourceFactory()])
    person_deletion_request(user_id="gone-1")

    answer = post(client, token, "trial", {"add": ["gone-1", "u-1"]}).json()

    assert (answer["suppressed"], answer["deliveries"]) == (1, 1)
    assert list(Event.objects.filter(type="audience").values_list("user_id", flat=True)) == ["u-1"]
