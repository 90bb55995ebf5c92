"""Validation and normalisation of Segment calls (pure functions, no database)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streaming.ingest.segment import (
    MAX_CALL_BYTES,
    InvalidCall,
    batch_normalise,
    call_normalise,
)

RECEIVED = datetime(2024, 5, 1, 12, 0, 5, tzinfo=UTC)


def normalise(raw: dict, call_type: str | None = "track", **kwargs: object):
    return call_normalise(raw, call_type=call_type, received_at=RECEIVED, **kwargs)


def errors_of(raw: object, call_type: str | None = "track") -> dict[str, list[str]]:
    with pytest.raises(InvalidCall) as caught:
        call_normalise(raw, call_type=call_type, received_at=RECEIVED)
    return caught.value.errors


def test_numeric_ids_become_strings():
    call = normalise({"userId": 42, "anonymousId": 7.0, "event": "Signed Up", "messageId": 99})

    assert (call.user_id, call.anonymous_id, call.message_id) == ("42", "7", "99")
    assert call.payload["userId"] == "42"
    assert call.payload["anonymousId"] == "7"


def test_a_call_without_user_id_or_anonymous_id_is_refused():
    assert "userId" in errors_of({"event": "Signed Up", "userId": ""})


@pytest.mark.parametrize(
    ("raw", "call_type", "field"),
    [
        ({"userId": "u1"}, "track", "event"),
        ({"userId": "u1", "event": ""}, "track", "event"),
        ({"userId": "u1", "event": 12}, "track", "event"),
        ({"userId": "u1"}, "group", "groupId"),
        ({"userId": "u1"}, "alias", "previousId"),
        ({"anonymousId": "a1", "previousId": "p"}, "alias", "userId"),
        ({"userId": "u1", "traits": ["email"]}, "identify", "traits"),
        ({"userId": "u1", "event": "x", "properties": "plan=pro"}, "track", "properties"),
        ({"userId": "u1", "context": 3}, "identify", "context"),
        ({"userId": "u1", "integrations": True}, "identify", "integrations"),
        ({"userId": {"id": 1}}, "identify", "userId"),
        ({"userId": True}, "identify", "userId"),
        ({"userId": "u" * 256}, "identify", "userId"),
        ({"userId": "u1", "timestamp": "yesterday"}, "identify", "timestamp"),
        ({"userId": "u1", "timestamp": 1714564805}, "identify", "timestamp"),
        ({"userId": "u1", "name": 3}, "page", "name"),
        ({"userId": "u1", "type": "delete"}, None, "type"),
    ],
)
def test_a_bad_field_is_named_in_the_errors(raw, call_type, field):
    assert field in errors_of(raw, call_type)


def test_the_endpoint_decides_the_type_not_the_body():
    call = normalise({"userId": "u1", "type": "identify", "event": "Clicked"}, "track")

    assert call.type == "track"
    assert call.payload["type"] == "track"


def test_a_message_id_is_generated_when_absent_and_kept_when_given():
    generated = normalise({"userId": "u1", "event": "A"})
    given = normalise({"userId": "u1", "event": "A", "messageId": "m-1"})

    assert len(generated.message_id) == 36
    assert generated.payload["messageId"] == generated.message_id
    assert given.message_id == "m-1"


def test_clock_skew_is_corrected_from_sent_at_and_original_timestamp():
    # given a client whose clock is two hours behind: it says it sent at 10:00:05
    call = normalise(
        {
            "userId": "u1",
            "event": "A",
            "originalTimestamp": "2024-05-01T10:00:00.000Z",
            "sentAt": "2024-05-01T10:00:05.000Z",
        }
    )

    # then the event happened 5 s before we received it, by our clock
    assert call.timestamp == datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert call.payload["timestamp"] == "2024-05-01T12:00:00.000Z"
    assert call.payload["originalTimestamp"] == "2024-05-01T10:00:00.000Z"
    assert call.payload["receivedAt"] == "2024-05-01T12:00:05.000Z"


def test_the_batch_sent_at_corrects_every_item_unless_the_item_has_its_own():
    calls, rejected = batch_normalise(
        {
            "sentAt": "2024-05-01T10:00:05Z",
            "batch": [
                {
                    "type": "track",
                    "userId": "u",
                    "event": "A",
                    "originalTimestamp": "2024-05-01T10:00:00Z",
                },
                {
                    "type": "track",
                    "userId": "u",
                    "event": "B",
                    "originalTimestamp": "2024-05-01T10:00:00Z",
                    "sentAt": "2024-05-01T10:00:01Z",
                },
            ],
        },
        received_at=RECEIVED,
    )

    assert rejected == []
    assert [c.timestamp.time().isoformat() for c in calls] == ["12:00:00", "12:00:04"]


def test_an_explicit_timestamp_is_kept_as_sent():
    call = normalise(
        {
            "userId": "u1",
            "event": "A",
            "timestamp": "2020-01-01T00:00:00+02:00",
            "sentAt": "2024-05-01T10:00:05Z",
        }
    )

    assert call.timestamp == datetime(2019, 12, 31, 22, 0, tzinfo=UTC)


def test_without_any_timestamp_the_call_happened_when_received():
    assert normalise({"userId": "u1", "event": "A"}).timestamp == RECEIVED


def test_the_write_key_is_never_stored_in_the_payload():
    call = normalise({"userId": "u1", "event": "A", "writeKey": "sb_secret"})

    assert "writeKey" not in call.payload
    assert "sb_secret" not in str(call.payload)


def test_integrations_and_unknown_fields_are_kept():
    call = normalise(
        {"userId": "u1", "event": "A", "integrations": {"Intercom": False}, "channel": "server"}
    )

    assert call.payload["integrations"] == {"Intercom": False}
    assert call.payload["channel"] == "server"


def test_a_call_over_32_kb_is_refused():
    with pytest.raises(InvalidCall) as caught:
        normalise({"userId": "u1", "event": "A", "properties": {"blob": "x" * MAX_CALL_BYTES}})

    assert "32768 bytes" in str(caught.value)


def test_a_batch_reports_each_rejected_item_by_index_and_keeps_the_valid_ones():
    calls, rejected = batch_normalise(
        {
            "batch": [
                {"type": "identify", "userId": "u1"},
                {"type": "track", "userId": "u1"},
                "not an object",
                {"type": "group", "userId": "u1", "groupId": "acme"},
                {"type": "unknown", "userId": "u1"},
            ]
        },
        received_at=RECEIVED,
    )

    assert [c.type for c in calls] == ["identify", "group"]
    assert [(r.index, list(r.errors)) for r in rejected] == [
        (1, ["event"]),
        (2, ["non_field_errors"]),
        (4, ["type"]),
    ]
    assert "event" in rejected[0].reason


def test_batch_context_and_integrations_apply_to_every_item_which_may_override_them():
    calls, _ = batch_normalise(
        {
            "context": {"library": {"name": "analytics.js"}, "ip": "10.0.0.1"},
            "integrations": {"All": True},
            "batch": [
                {"type": "identify", "userId": "u1"},
                {"type": "identify", "userId": "u2", "context": {"ip": "10.0.0.2"}},
            ],
        },
        received_at=RECEIVED,
    )

    assert calls[0].payload["context"] == {"library": {"name": "analytics.js"}, "ip": "10.0.0.1"}
    assert calls[1].payload["context"] == {"library": {"name": "analytics.js"}, "ip": "10.0.0.2"}
    assert calls[1].payload["integrations"] == {"All": True}


@pytest.mark.parametrize("body", [[], "batch", {"batch": {"type": "track"}}, {"calls": []}])
def test_a_batch_body_without_a_batch_list_is_refused(body):
    with pytest.raises(InvalidCall):
        batch_normalise(body, received_at=RECEIVED)


def test_identify_traits_sent_only_in_context_traits_are_also_the_root_traits():
    # as RudderStack's SDKs send them
    call = normalise({"userId": "u1", "context": {"traits": {"plan": "pro"}}}, "identify")
    track = normalise({"userId": "u1", "event": "A", "context": {"traits": {"plan": "pro"}}})

    assert call.payload["traits"] == {"plan": "pro"}
    assert "traits" not in track.payload


@pytest.mark.parametrize(
    "properties",
    [
        {"ratio": float("nan")},
        {"ratio": float("inf")},
        {"name": "a\x00b"},
        {"name": "\ud800"},
    ],
    ids=["nan", "infinity", "nul", "lone-surrogate"],
)
def test_values_postgresql_cannot_store_are_refused(properties):
    errors = errors_of({"userId": "u1", "event": "A", "properties": properties})

    assert "non_field_errors" in errors


def test_an_escaped_backslash_before_u0000_is_ordinary_text():
    call = normalise({"userId": "u1", "event": "A", "properties": {"path": "C:\\u0000"}})

    assert call.payload["properties"]["path"] == "C:\\u0000"


def test_a_too_deeply_nested_call_is_refused():
    nested: dict = {}
    inner = nested
    for _ in range(5000):
        inner["x"] = {}
        inner = inner["x"]

    assert "non_field_errors" in errors_of({"userId": "u1", "event": "A", "properties": nested})


def test_a_skew_correction_out_of_any_calendar_is_a_field_error():
    errors = errors_of(
        {
            "userId": "u1",
            "event": "A",
            "originalTimestamp": "0001-01-01T00:00:00Z",
            "sentAt": "9999-12-31T00:00:00Z",
        }
    )

    assert "originalTimestamp" in errors
