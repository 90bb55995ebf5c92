"""The OpenAPI description at /api/schema/ against a live server, with schemathesis.

Schemathesis loads the description from the live server and, for every operation, sends the
description's examples, its boundary cases (the coverage phase) and generated requests, valid
and invalid, then checks each answer: no server error, a status code, Content-Type, body and
headers as described, and a refusal (4xx) for every request the description calls invalid.
The data is stored in the test database like any client's: a source with a write key and a sync,
and an account whose token may read the audit trail (with deliveries to read for the example
user). Deterministic (derandomized, no example database), loopback only.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.cache import cache
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from integrations.selectors import routes_cache_clear
from streaming.ingest.openapi import NOT_BLANK
from streaming.models import DeliveryAttempt
from tests.factories import DestinationFactory, SourceFactory, SyncFactory, WriteKeyFactory
from tests.streaming.audit_rows import (
    attempt_make,
    delivery_make,
    event_make,
    staff_make,
    wakeups_clear,
)

# Generated requests per operation (valid and invalid together), on top of the description's
# examples and the boundary cases of the coverage phase, which schemathesis sends regardless.
EXAMPLES_PER_OPERATION = 25
AUDITED_USER = "user-42"  # the user_id example in the description of the audit API
BATCH_PATHS = ("/v1/batch", "/v1/import")


@pytest.fixture
def contract_schema(live_switchboard: str) -> Iterator[schemathesis.schemas.BaseSchema]:
    # given: a source with a write key and a sync (so calls fan out into deliveries), and an
    # account that may read the audit trail, with a delivery of the example user to read
    cache.clear()
    routes_cache_clear()
    source = SourceFactory()
    sync = SyncFactory(sources=[source], destination=DestinationFactory())
    write_key = WriteKeyFactory(source=source).plaintext
    reader = staff_make(username="support-bot", perms=("streaming.view_delivery",))
    token = Token.objects.create(user=reader).key
    delivery = delivery_make(
        event=event_make(source=source, user_id=AUDITED_USER),
        sync=sync,
        status="failed",
        attempts=1,
        reason="HTTP 400: parameter_invalid",
    )
    attempt_make(
        delivery=delivery,
        status_code=400,
        category=DeliveryAttempt.Category.PERMANENT,
        error_code="parameter_invalid",
        response_excerpt='{"type":"error.list"}',
    )

    # The configuration schemathesis.toml would hold, for this server only.
    config = SchemathesisConfig.from_dict(
        {
            "base-url": live_switchboard,
            "generation": {
                "max-examples": EXAMPLES_PER_OPERATION,
                "deterministic": True,
                "database": "none",
                # The NUL character is refused anywhere in a call (PostgreSQL cannot store
                # it), which the description says in words: JSON Schema cannot forbid a
                # character in the keys and values of free-form objects (traits, context...).
                "allow-x00": False,
            },
            # The description's security schemes: the write key as the HTTP Basic username
            # (empty password) for /v1/*, a DRF token for the audit API.
            "auth": {
                "openapi": {
                    "writeKey": {"username": write_key, "password": ""},
                    "tokenAuth": {"api_key": f"Token {token}"},
                }
            },
        }
    )
    schema = schemathesis.openapi.from_url(f"{live_switchboard}/api/schema/", config=config)
    yield schema
    wakeups_clear()  # the lanes woken by the calls stored: no worker here to drain them
    cache.clear()
    routes_cache_clear()


@pytest.fixture(autouse=True)
def _pytest_node_id(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32 renames the test item per operation through ``Item._nodeid``, an
    # attribute pytest 9.2 no longer has (its node ids are structured); without it, the test
    # stops at an AttributeError before the first request.
    request.node._nodeid = request.node.nodeid


@schemathesis.check
def batch_negative_data_rejection(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """negative_data_rejection, where a batch that rejects a call has refused it.

    A batch stores its valid calls and answers 200 listing each invalid one in ``rejected`` (as
    the SDKs expect, and as the description says): for an invalid batch, that answer is the
    refusal. Any other answer is judged by the built-in check.
    """
    if case.method == "POST" and response.status_code == 200 and response.json()["rejected"]:
        return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

schema = schemathesis.pytest.from_fixture("contract_schema")


@schema.parametrize()
def test_every_answer_is_one_the_description_gives(case: schemathesis.Case) -> None:
    # when / then: each generated request, valid or not, gets an answer the description gives
    if case.operation.path in BATCH_PATHS:
        refusal = batch_negative_data_rejection
    else:
        refusal = negative_data_rejection
    case.call_and_validate(checks=[*CHECKS, refusal])


# --- the cases issue 10 found, pinned: what the description says and what the server does ---


def _described_as_valid(description: dict[str, Any], path: str, body: object) -> bool:
    content = description["paths"][path]["post"]["requestBody"]["content"]
    root = {**content["application/json"]["schema"], "components": description["components"]}
    return OAS30Validator(root, format_checker=oas30_format_checker).is_valid(body)


TRACK = {"userId": "u-1", "event": "Signed Up"}


@pytest.mark.parametrize(
    ("path", "body", "valid"),
    [
        # ids may be strings or numbers; object fields may be null; blank ids count as absent
        ("/v1/alias", {"previousId": 0, "userId": "u-1"}, True),
        ("/v1/identify", {"userId": "u-1", "traits": None}, True),
        ("/v1/identify", {"userId": "", "anonymousId": "a-1"}, True),
        # a userId or an anonymousId, not blank; an alias needs its userId and previousId
        ("/v1/identify", {"traits": {"plan": "pro"}}, False),
        ("/v1/identify", {"userId": "   "}, False),
        ("/v1/alias", {"previousId": "a-1", "anonymousId": "a-2"}, False),
        # at most 255 characters, counted as sent
        ("/v1/track", {**TRACK, "event": "e" * 256}, False),
        ("/v1/identify", {"userId": " " + "u" * 255}, False),
        ("/v1/track", {**TRACK, "writeKey": 5}, False),
        # batch calls need their type; the batch's own fields are checked even when unused
        ("/v1/batch", {"batch": [TRACK]}, False),
        ("/v1/batch", {"batch": [{**TRACK, "type": "track"}], "sentAt": ""}, True),
        (
            "/v1/batch",
            {"batch": [{**TRACK, "type": "track", "sentAt": "2024-05-01T12:00:00Z"}], "sentAt": 1},
            False,
        ),
    ],
)
def test_the_description_and_the_server_agree_on(client, db, path, body, valid):
    # given
    write_key = WriteKeyFactory(source=SourceFactory()).plaintext
    basic = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
    description = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    # when
    response = client.post(
        path, json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=basic
    )

    # then
    assert _described_as_valid(json.loads(description.content), path, body) is valid
    assert response.status_code == (200 if valid else 400), response.json()


def test_the_description_calls_blank_what_the_server_strips():
    # The server trims ids and event names with str.strip(); the description's pattern must
    # call a one-character string blank exactly when str.strip() removes it.
    pattern = re.compile(NOT_BLANK)
    characters = map(chr, range(sys.maxunicode + 1))
    assert [c for c in characters if (pattern.fullmatch(c) is None) != c.isspace()] == []
