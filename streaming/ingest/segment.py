"""Validation and normalisation of Segment-spec calls (pure: no database, no network).

One function, ``call_normalise``, turns one raw call (a dict decoded from JSON, or the keyword
arguments of the Python API) into a ``Call``: ids as strings, a messageId (generated when the
client sent none), the clock-skew corrected timestamp and the payload to store. Anything wrong
raises ``InvalidCall`` with field errors, so the HTTP API, the Python API and the webhook source
apply exactly the same rules.

Timestamps follow Segment's rules (https://segment.com/docs/connections/spec/common/#timestamps):
an explicit ``timestamp`` is kept as sent (it is how backfills say when something happened);
otherwise ``originalTimestamp`` is corrected for the client's clock skew,
``timestamp = receivedAt - (sentAt - originalTimestamp)``; with neither, it is ``receivedAt``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

CallType = Literal["identify", "track", "group", "page", "screen", "alias"]
CALL_TYPES: tuple[CallType, ...] = ("identify", "track", "group", "page", "screen", "alias")

# Segment's HTTP API limits (https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/#max-request-size).
MAX_CALL_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
# A batch's shared context and integrations are copied into each of its calls: measured as
# stored, a batch may hold at most this much (twice the request limit), so that a small request
# cannot expand into megabytes of rows (write keys are public in browser SDKs).
MAX_BATCH_STORED_BYTES = 2 * MAX_BATCH_BYTES
ID_MAX_LENGTH = 255  # Event.user_id / anonymous_id / message_id / event_name columns

_OBJECT_FIELDS = ("traits", "properties", "context", "integrations")
# Never stored: a write key is a secret, and these are recomputed here.
_DROPPED_FIELDS = ("writeKey",)


class InvalidCall(ValueError):
    """A call that cannot be accepted; ``errors`` maps each bad field to its messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class Call:
    """One valid, normalised call, ready to be stored as an Event."""

    type: CallType
    message_id: str
    user_id: str
    anonymous_id: str
    event_name: str
    timestamp: datetime
    payload: dict[str, Any]
    stored_bytes: int = 0  # the call's JSON with the batch's shared fields merged in


# A \u0000 escape that is not itself an escaped backslash followed by "u0000".
_NUL_ESCAPE = re.compile(r"(?:^|[^\\])(?:\\\\)*\\u0000")


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON: what the per-call 32 KB limit measures.

    Raises ``InvalidCall`` for what JSON parsers accept but PostgreSQL cannot store (NaN and
    Infinity, the NUL character, lone UTF-16 surrogates) or nesting too deep to handle, so that
    such input is a 400 rather than a failed insert.
    """
    try:
        text = json.dumps(
            value, separators=(",", ":"), default=str, ensure_ascii=False, allow_nan=False
        )
        size = len(text.encode())
    except ValueError as exc:  # NaN / Infinity
        raise InvalidCall({"non_field_errors": [f"Not storable as JSON: {exc}."]}) from None
    except UnicodeEncodeError:
        raise InvalidCall(
            {"non_field_errors": ["Text contains an unpaired UTF-16 surrogate."]}
        ) from None
    except RecursionError:
        raise InvalidCall({"non_field_errors": ["The call is nested too deeply."]}) from None
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise InvalidCall(
            {"non_field_errors": ["Text may not contain the NUL character (\\u0000)."]}
        )
    return size


def _id_string(value: Any, field: str, errors: dict[str, list[str]]) -> str:
    """Segment ids may be strings or numbers; they are stored as strings ("" when absent)."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        errors.setdefault(field, []).append("Must be a string or a number.")
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        # 42.0 from a JavaScript client is the id "42"; from 1e21 on, "1e+21" as JavaScript
        # prints it (not 22 digits and more, which could pass the 255-character limit).
        value = int(value)
    text = str(value)
    if len(text) > ID_MAX_LENGTH:  # counted as sent, surrounding spaces included
        errors.setdefault(field, []).append(f"At most {ID_MAX_LENGTH} characters.")
        return ""
    return text.strip()


def timestamp_parse(value: Any) -> datetime:
    """An ISO-8601 string (or a datetime) as an aware UTC datetime; ValueError otherwise."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        parsed = datetime.fromisoformat(text)
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    else:
        raise ValueError("not an ISO-8601 date-time")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # Segment's libraries send UTC when no zone is given
    return parsed.astimezone(UTC)


def _timestamp_field(
    raw: Mapping[str, Any], field: str, errors: dict[str, list[str]]
) -> datetime | None:
    value = raw.get(field)
    if value is None or value == "":
        return None
    try:
        return timestamp_parse(value)
    except (ValueError, TypeError, OverflowError):
        errors.setdefault(field, []).append(
            "Must be an ISO-8601 date-time, e.g. 2024-05-01T12:00:00.000Z."
        )
        return None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def jsonable(value: Any) -> Any:
    """Python API values (datetimes, Decimals, UUIDs, tuples) as what JSON would have carried."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return _iso(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def call_normalise(
    raw: Any,
    *,
    call_type: str | None,
    received_at: datetime,
    sent_at: Any = None,
    defaults: Mapping[str, Any] | None = None,
    defaults_bytes: int = 0,
) -> Call:
    """Validate one call and return it normalised; raise ``InvalidCall`` with field errors.

    ``call_type`` comes from the endpoint (``/v1/track``) and wins over the body's ``type``; for a
    batch item it is None and the item's own ``type`` is required. ``sent_at`` is the batch's
    ``sentAt`` (an item's own wins). ``defaults`` are a batch's shared ``context`` and
    ``integrations``, which an item's own keys override; ``defaults_bytes`` is their JSON size.
    The 32 KB limit applies to the call as stored, shared fields included.
    """
    if not isinstance(raw, Mapping):
        raise InvalidCall({"non_field_errors": ["A call must be a JSON object."]})
    errors: dict[str, list[str]] = {}

    raw_bytes = json_size(raw)
    if raw_bytes > MAX_CALL_BYTES:
        raise InvalidCall({"non_field_errors": [f"A call may be at most {MAX_CALL_BYTES} bytes."]})

    kind = call_type or raw.get("type")
    if kind not in CALL_TYPES:
        errors["type"] = [f"Must be one of: {', '.join(CALL_TYPES)}."]

    for field in _OBJECT_FIELDS:
        value = raw.get(field)
        if value is not None and not isinstance(value, dict):
            errors.setdefault(field, []).append("Must be an object.")
    if not isinstance(raw.get("writeKey"), str | None):  # dropped before storing, yet a key is text
        errors["writeKey"] = ["Must be a string."]

    user_id = _id_string(raw.get("userId"), "userId", errors)
    anonymous_id = _id_string(raw.get("anonymousId"), "anonymousId", errors)
    message_id = _id_string(raw.get("messageId"), "messageId", errors)
    if kind == "alias":
        previous_id = _id_string(raw.get("previousId"), "previousId", errors)
        if not previous_id and "previousId" not in errors:
            errors["previousId"] = ["An alias call needs the previousId."]
        if not user_id and "userId" not in errors:
            errors["userId"] = ["An alias call needs the userId."]
    elif not user_id and not anonymous_id and not {"userId", "anonymousId"} & errors.keys():
        errors["userId"] = ["Give a userId or an anonymousId."]

    event_name = ""
    if kind == "track":
        event = raw.get("event")
        if not isinstance(event, str) or not event.strip():
            errors["event"] = ["A track call needs the event name (a non-empty string)."]
        elif len(event) > ID_MAX_LENGTH:
            errors["event"] = [f"At most {ID_MAX_LENGTH} characters."]
        else:
            event_name = event
    elif kind == "group":
        group_id = _id_string(raw.get("groupId"), "groupId", errors)
        if not group_id and "groupId" not in errors:
            errors["groupId"] = ["A group call needs the groupId."]
    elif kind in ("page", "screen"):
        name = raw.get("name")
        if name is not None and not isinstance(name, str):
            errors["name"] = ["Must be a string."]
        elif name:
            event_name = name[:ID_MAX_LENGTH]

    timestamp = _timestamp_field(raw, "timestamp", errors)
    original = _timestamp_field(raw, "originalTimestamp", errors)
    own_sent_at = _timestamp_field(raw, "sentAt", errors)
    batch_sent_at = None
    if own_sent_at is None and sent_at not in (None, ""):
        try:
            batch_sent_at = timestamp_parse(sent_at)
        except (ValueError, TypeError, OverflowError):
            errors.setdefault("sentAt", []).append("Must be an ISO-8601 date-time.")
    if errors:
        raise InvalidCall(errors)

    sent = own_sent_at or batch_sent_at
    if timestamp is None and original is not None:
        try:
            timestamp = received_at - (sent - original) if sent is not None else original
        except OverflowError:
            raise InvalidCall(
                {"originalTimestamp": ["Too far from sentAt to correct the clock skew."]}
            ) from None
    if timestamp is None:
        timestamp = received_at

    payload: dict[str, Any] = dict(defaults or {})
    for field in ("context", "integrations"):
        if defaults and isinstance(defaults.get(field), dict) and field in raw:
            payload[field] = {**defaults[field], **(raw[field] or {})}
    for key, value in raw.items():
        if key in _DROPPED_FIELDS or (key in ("context", "integrations") and key in payload):
            continue
        payload[key] = value
    payload.update(
        type=kind,
        messageId=message_id or str(uuid.uuid4()),
        timestamp=_iso(timestamp),
        receivedAt=_iso(received_at),
    )
    if user_id:
        payload["userId"] = user_id
    else:
        payload.pop("userId", None)
    if anonymous_id:
        payload["anonymousId"] = anonymous_id
    else:
        payload.pop("anonymousId", None)
    if kind == "alias":
        payload["previousId"] = _id_string(raw["previousId"], "previousId", errors)
    if kind == "group":
        payload["groupId"] = _id_string(raw["groupId"], "groupId", errors)
    if kind == "identify" and payload.get("traits") is None:
        # RudderStack's SDKs send identify traits in context.traits only; a copy at the root
        # lets filters and mappings on traits.* treat every SDK alike.
        context_traits = (payload.get("context") or {}).get("traits")
        if isinstance(context_traits, dict):
            payload["traits"] = context_traits
    if sent is not None:
        payload["sentAt"] = _iso(sent)
    if original is not None:
        payload["originalTimestamp"] = _iso(original)
    for field in _OBJECT_FIELDS:
        if payload.get(field) is None:
            payload.pop(field, None)
    stored_bytes = raw_bytes + defaults_bytes
    if defaults_bytes and stored_bytes > MAX_CALL_BYTES:
        # Measured exactly only when the estimate is over: the fields merged may overlap.
        stored_bytes = json_size({k: v for k, v in payload.items() if k in raw or k in defaults})
        if stored_bytes > MAX_CALL_BYTES:
            raise InvalidCall(
                {
                    "non_field_errors": [
                        f"A call may be at most {MAX_CALL_BYTES} bytes as stored, with the "
                        "batch's shared context and integrations merged in."
                    ]
                }
            )

    return Call(
        type=kind,
        message_id=payload["messageId"],
        user_id=user_id,
        anonymous_id=anonymous_id,
        event_name=event_name,
        timestamp=timestamp,
        payload=payload,
        stored_bytes=stored_bytes,
    )


@dataclass(frozen=True)
class Rejected:
    """A batch item that was not accepted: its index in the batch and why."""

    index: int
    reason: str
    errors: dict[str, list[str]]


def batch_normalise(body: Any, *, received_at: datetime) -> tuple[list[Call], list[Rejected]]:
    """Split a ``/v1/batch`` body into valid calls and rejected items (index + reason).

    Raises ``InvalidCall`` when the body itself is unusable (not an object, no ``batch`` list).
    """
    if not isinstance(body, Mapping):
        raise InvalidCall({"non_field_errors": ["The body must be a JSON object."]})
    items = body.get("batch")
    if not isinstance(items, list):
        raise InvalidCall({"batch": ["Must be a list of calls."]})
    defaults: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for field in ("context", "integrations"):
        value = body.get(field)
        if value is None:
            continue
        if isinstance(value, dict):
            defaults[field] = value
        else:
            errors[field] = ["Must be an object."]
    if not isinstance(body.get("writeKey"), str | None):
        errors["writeKey"] = ["Must be a string."]
    # Checked here too, not only by the calls that take it: one with its own sentAt never reads it.
    _timestamp_field(body, "sentAt", errors)
    if errors:
        raise InvalidCall(errors)
    defaults_bytes = json_size(defaults) if defaults else 0  # storable, and its size

    calls: list[Call] = []
    rejected: list[Rejected] = []
    for index, item in enumerate(items):
        try:
            calls.append(
                call_normalise(
                    item,
                    call_type=None,
                    received_at=received_at,
                    sent_at=body.get("sentAt"),
                    defaults=defaults,
                    defaults_bytes=defaults_bytes,
                )
            )
        except InvalidCall as exc:
            rejected.append(Rejected(index=index, reason=str(exc), errors=exc.errors))
    return calls, rejected
