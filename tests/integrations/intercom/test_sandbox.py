"""The Intercom sandbox behaves like Intercom over real HTTP, and its control endpoint works."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from integrations.intercom.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[3]


class Api:
    """Raw HTTP to the sandbox, the way any Intercom client would talk to it."""

    def __init__(self, sandbox) -> None:
        self.url = sandbox.url
        self.session = requests.Session()
        self.session.headers.update(
            {
                "Authorization": f"Bearer {sandbox.token}",
                "Intercom-Version": "2.16",
                "Accept": "application/json",
            }
        )

    def __call__(self, method: str, path: str, body=None, **kwargs) -> requests.Response:
        return self.session.request(method, self.url + path, json=body, timeout=5, **kwargs)


@pytest.fixture
def api(intercom_sandbox) -> Api:
    return Api(intercom_sandbox)


def error_code(response: requests.Response) -> str:
    body = response.json()
    assert body["type"] == "error.list"
    return body["errors"][0]["code"]


def test_a_wrong_token_gets_401(intercom_sandbox):
    response = requests.get(
        intercom_sandbox.url + "/me",
        headers={
            "Authorization": "Bearer nope",
            "Accept": "application/json",
            "Intercom-Version": "2.16",
        },
        timeout=5,
    )

    assert response.status_code == 401
    assert error_code(response) == "unauthorized"


def test_me_describes_the_admin_and_workspace(api):
    response = api("GET", "/me")

    assert response.status_code == 200
    assert response.json()["app"]["id_code"] == "sandbox"


def test_a_duplicate_external_id_gets_intercoms_409(api):
    first = api("POST", "/contacts", {"role": "user", "external_id": "u-1"}).json()

    response = api("POST", "/contacts", {"role": "user", "external_id": "u-1", "name": "x"})

    assert response.status_code == 409
    assert response.json()["errors"][0] == {
        "code": "conflict",
        "message": f"A contact matching those details already exists with id={first['id']}",
    }


def test_a_duplicate_user_email_gets_409_but_a_lead_may_share_it(api):
    api("POST", "/contacts", {"role": "user", "email": "a@example.com"})

    assert api("POST", "/contacts", {"role": "user", "email": "a@example.com"}).status_code == 409
    assert api("POST", "/contacts", {"role": "lead", "email": "a@example.com"}).status_code == 200


def test_search_lags_behind_creation_but_find_by_external_id_does_not(intercom_sandbox, api):
    intercom_sandbox.configure(search_lag_seconds=300)
    api("POST", "/contacts", {"role": "user", "external_id": "u-1", "email": "a@example.com"})
    query = {"query": {"field": "email", "operator": "=", "value": "a@example.com"}}

    assert api("POST", "/contacts/search", query).json()["data"] == []
    assert api("GET", "/contacts/find_by_external_id/u-1").status_code == 200

    intercom_sandbox.configure(search_lag_seconds=0)
    api("POST", "/contacts", {"role": "user", "external_id": "u-2", "email": "b@example.com"})
    query["query"]["value"] = "b@example.com"
    assert [c["external_id"] for c in api("POST", "/contacts/search", query).json()["data"]] == [
        "u-2"
    ]


def test_search_combines_filters(api):
    api("POST", "/contacts", {"role": "lead", "email": "x@example.com"})
    api("POST", "/contacts", {"role": "user", "email": "x@example.com"})
    query = {
        "query": {
            "operator": "AND",
            "value": [
                {"field": "email", "operator": "=", "value": "x@example.com"},
                {"field": "role", "operator": "=", "value": "lead"},
            ],
        }
    }

    found = api("POST", "/contacts/search", query).json()

    assert found["total_count"] == 1
    assert found["data"][0]["role"] == "lead"


def test_a_merged_contact_answers_410_with_a_link_to_the_survivor(api):
    lead = api("POST", "/contacts", {"role": "lead", "email": "a@example.com"}).json()
    user = api("POST", "/contacts", {"role": "user", "email": "a@example.com"}).json()

    merged = api("POST", "/contacts/merge", {"from": lead["id"], "into": user["id"]})
    gone = api("GET", f"/contacts/{lead['id']}")

    assert merged.status_code == 200
    assert merged.json()["id"] == user["id"]
    assert gone.status_code == 410
    assert error_code(gone) == "contact_merged"
    assert gone.headers["Link"] == f'</contacts/{user["id"]}>; rel="canonical"'


def test_merging_unrelated_contacts_needs_skip_duplicate_validation(api):
    lead = api("POST", "/contacts", {"role": "lead", "email": "a@example.com"}).json()
    user = api("POST", "/contacts", {"role": "user", "email": "b@example.com"}).json()

    refused = api("POST", "/contacts/merge", {"from": lead["id"], "into": user["id"]})
    forced = api(
        "POST",
        "/contacts/merge",
        {"from": lead["id"], "into": user["id"], "skip_duplicate_validation": True},
    )

    assert error_code(refused) == "invalid_merge"
    assert forced.status_code == 200


def test_archived_contacts_are_hidden_until_unarchived(api):
    contact = api("POST", "/contacts", {"role": "user", "external_id": "u-1"}).json()

    assert api("POST", f"/contacts/{contact['id']}/archive").json()["archived"] is True
    assert api("GET", "/contacts/find_by_external_id/u-1").status_code == 404
    assert api("PUT", f"/contacts/{contact['id']}", {"name": "x"}).status_code == 404
    assert api("POST", f"/contacts/{contact['id']}/unarchive").json()["archived"] is False
    assert api("PUT", f"/contacts/{contact['id']}", {"name": "x"}).status_code == 200


def test_delete_removes_the_contact(api):
    contact = api("POST", "/contacts", {"role": "user", "external_id": "u-1"}).json()

    deleted = api("DELETE", f"/contacts/{contact['id']}")

    assert deleted.json() == {
        "type": "contact",
        "id": contact["id"],
        "external_id": "u-1",
        "deleted": True,
    }
    assert api("GET", f"/contacts/{contact['id']}").status_code == 404


def test_companies_upsert_on_company_id_attach_and_detach(intercom_sandbox, api):
    first = api("POST", "/companies", {"company_id": "acme", "name": "Acme"}).json()
    second = api("POST", "/companies", {"company_id": "acme", "plan": "pro"}).json()
    contact = api("POST", "/contacts", {"role": "user", "external_id": "u-1"}).json()

    attached = api("POST", f"/contacts/{contact['id']}/companies", {"id": first["id"]})
    found = api("GET", "/companies", params={"company_id": "acme"}).json()
    detached = api("DELETE", f"/contacts/{contact['id']}/companies/{first['id']}")

    assert second["id"] == first["id"]
    assert second["name"] == "Acme"
    assert second["plan"]["name"] == "pro"
    assert attached.status_code == 200
    assert [c["user_count"] for c in found["data"]] == [1]
    assert detached.status_code == 200
    assert intercom_sandbox.state()["company_members"][contact["id"]] == []
    assert api("GET", "/companies", params={"company_id": "nope"}).status_code == 404


def test_events_answer_202_and_need_an_existing_contact(api):
    api("POST", "/contacts", {"role": "user", "external_id": "u-1"})
    event = {"event_name": "Signed Up", "created_at": 1700000000, "user_id": "u-1"}

    accepted = api("POST", "/events", event)
    missing = api("POST", "/events", {**event, "user_id": "nobody"})

    assert accepted.status_code == 202
    assert accepted.content == b""
    assert missing.status_code == 404


def test_duplicate_events_are_silently_dropped(intercom_sandbox, api):
    api("POST", "/contacts", {"role": "user", "external_id": "u-1"})
    event = {"event_name": "Signed Up", "created_at": 1700000000, "user_id": "u-1"}

    statuses = [api("POST", "/events", event).status_code for _ in range(3)]
    api("POST", "/events", {**event, "created_at": 1700000001})

    assert statuses == [202, 202, 202]
    assert intercom_sandbox.state()["counts"]["events"] == 2


def test_a_workspace_takes_at_most_120_event_names(intercom_sandbox, api):
    api("POST", "/contacts", {"role": "user", "external_id": "u-1"})
    for n in range(120):
        event = {"event_name": f"event-{n}", "created_at": 1700000000, "user_id": "u-1"}
        assert api("POST", "/events", event).status_code == 202

    refused = api("POST", "/events", {"event_name": "new", "created_at": 1, "user_id": "u-1"})
    known = api("POST", "/events", {"event_name": "event-3", "created_at": 2, "user_id": "u-1"})

    assert refused.status_code == 400
    assert "120" in refused.json()["errors"][0]["message"]
    assert known.status_code == 202


def test_unknown_custom_attributes_are_refused_until_created(api):
    contact = {"role": "user", "external_id": "u-1", "custom_attributes": {"plan_name": "pro"}}

    refused = api("POST", "/contacts", contact)
    created = api(
        "POST", "/data_attributes", {"name": "plan_name", "model": "contact", "data_type": "string"}
    )
    listed = api("GET", "/data_attributes", params={"model": "contact"}).json()["data"]
    accepted = api("POST", "/contacts", contact)

    assert refused.status_code == 400
    assert error_code(refused) == "parameter_invalid"
    assert created.status_code == 200
    assert {a["name"] for a in listed if a["custom"]} == {"plan_name"}
    assert accepted.json()["custom_attributes"] == {"plan_name": "pro"}


def test_tags_are_created_once_by_name(api):
    first = api("POST", "/tags", {"name": "vip"}).json()
    second = api("POST", "/tags", {"name": "vip"}).json()

    assert first["id"] == second["id"]


def test_the_rate_limit_window_sends_headers_and_429(intercom_sandbox, api):
    intercom_sandbox.configure(rate_limit=2)

    responses = [api("GET", "/me") for _ in range(3)]
    if responses[-1].status_code != 429:  # the 10 s window rolled over mid-test
        responses = [api("GET", "/me") for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[0].headers["X-RateLimit-Limit"] == "2"
    assert responses[0].headers["X-RateLimit-Remaining"] == "1"
    assert responses[2].headers["X-RateLimit-Remaining"] == "0"
    assert int(responses[2].headers["X-RateLimit-Reset"]) % 10 == 0
    assert error_code(responses[2]) == "rate_limit_exceeded"


def test_without_a_set_limit_the_default_window_is_announced_on_every_answer(intercom_sandbox, api):
    # Intercom sends the headers on every authenticated answer, whatever the limit.
    headers = api("GET", "/me").headers
    missing = api("GET", "/contacts/nope").headers

    assert headers["X-RateLimit-Limit"] == "1000000"
    assert int(headers["X-RateLimit-Remaining"]) >= 999_990
    assert int(headers["X-RateLimit-Reset"]) % 10 == 0
    assert missing["X-RateLimit-Limit"] == "1000000"


def test_a_default_window_of_zero_sends_no_rate_limit_headers(intercom_sandbox, api):
    intercom_sandbox.configure(default_rate_limit=0)

    assert "X-RateLimit-Limit" not in api("GET", "/me").headers


def test_forced_statuses_hit_only_the_next_matching_requests(intercom_sandbox, api):
    intercom_sandbox.configure(force_status=503, force_count=2, force_path="/contacts")

    statuses = [api("GET", "/me").status_code] + [
        api("POST", "/contacts", {"role": "user", "external_id": f"u-{n}"}).status_code
        for n in range(3)
    ]

    assert statuses == [200, 503, 503, 200]


def test_an_error_rate_of_one_answers_5xx(intercom_sandbox, api):
    intercom_sandbox.configure(error_rate=1.0)

    response = api("GET", "/me")

    assert response.status_code in (500, 502, 503)
    assert response.json()["type"] == "error.list"


def test_the_request_log_keeps_everything_but_the_token(intercom_sandbox, api):
    api("POST", "/contacts", {"role": "user", "external_id": "u-1"})

    [entry] = intercom_sandbox.requests

    assert entry["method"] == "POST"
    assert entry["path"] == "/contacts"
    assert entry["body"] == {"role": "user", "external_id": "u-1"}
    assert entry["status"] == 200
    assert entry["time"] <= time.time()
    assert "Authorization" not in entry["headers"]
    assert intercom_sandbox.token not in str(entry)


def test_the_control_endpoint_works_over_http(intercom_sandbox, api):
    base = intercom_sandbox.url + "/_sandbox"

    config = requests.post(base + "/config", json={"latency_ms": 5, "rate_limit": 7}, timeout=5)
    api("POST", "/contacts", {"role": "user", "external_id": "u-1"})
    api("POST", "/contacts", {"role": "user", "external_id": "u-2"})
    logged = requests.get(base + "/requests", timeout=5).json()["requests"]
    since = requests.get(base + "/requests", params={"since": logged[0]["seq"]}, timeout=5)
    state = requests.get(base + "/state", timeout=5).json()
    bad = requests.post(base + "/config", json={"no_such_flag": 1}, timeout=5)
    reset = requests.post(base + "/reset", timeout=5)

    assert config.json()["latency_ms"] == 5
    assert config.json()["rate_limit"] == 7
    assert [e["body"]["external_id"] for e in logged] == ["u-1", "u-2"]
    assert [e["body"]["external_id"] for e in since.json()["requests"]] == ["u-2"]
    assert state["counts"]["contacts"] == 2
    assert [c["external_id"] for c in state["contacts"]] == ["u-1", "u-2"]
    assert bad.status_code == 400
    assert reset.status_code == 200
    assert intercom_sandbox.state()["counts"] == {
        "contacts": 0,
        "companies": 0,
        "events": 0,
        "event_names": 0,
        "requests": 0,
    }
    assert intercom_sandbox.configure()["rate_limit"] == 0  # back to the start flags


def test_bad_json_and_unknown_routes_get_intercom_errors(intercom_sandbox, api):
    intercom_sandbox.conformance_off("sends requests Intercom does not document, on purpose")

    bad = api.session.post(
        intercom_sandbox.url + "/contacts",
        data=b"{nope",
        headers={"Content-Type": "application/json"},
    )
    unknown = api("GET", "/no/such/thing")

    assert bad.status_code == 400
    assert unknown.status_code == 404
    assert error_code(unknown) == "not_found"


def test_a_sandbox_starts_on_a_free_port_and_stops():
    with Sandbox(token="t") as sandbox:
        url = sandbox.url
        response = requests.get(url + "/me", headers={"Authorization": "Bearer t"}, timeout=5)
        assert response.status_code == 200

    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/me", timeout=2)


def test_the_management_command_serves_the_sandbox():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "intercom_sandbox",
            "--port",
            "0",
            "--token",
            "cmd-token",
            "--rate-limit",
            "5",
            "--force-status",
            "503",
            "--force-count",
            "1",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert "Intercom sandbox on http://" in line, line
        url = line.split(" on ")[1].split()[0]

        headers = {"Authorization": "Bearer cmd-token"}
        forced = requests.get(url + "/me", headers=headers, timeout=5)
        response = requests.get(url + "/me", headers=headers, timeout=5)

        assert forced.status_code == 503
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "5"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_state_counts_requests_per_rate_limit_window(intercom_sandbox, api):
    intercom_sandbox.configure(rate_limit=2)

    statuses = [api("GET", "/me").status_code for _ in range(5)]

    windows = intercom_sandbox.state()["windows"]
    assert all(w["start"] % 10 == 0 for w in windows)
    assert all(w["requests"] <= 2 for w in windows)
    assert sum(w["requests"] for w in windows) == statuses.count(200)
    assert sum(w["rate_limited"] for w in windows) == statuses.count(429) >= 1
