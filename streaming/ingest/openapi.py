"""The OpenAPI description of the ingest API (``/v1/*``), in drf-spectacular's terms.

Documentation only: the rules are ``streaming.ingest.segment``'s (shared with the Python API) and
the answers are ``streaming.ingest.api``'s. This module says the same rules as request and answer
shapes, so that what ``/api/schema/`` calls valid is what the server accepts, and what it calls
invalid is refused; ``tests/test_openapi_contract.py`` runs schemathesis against a live server to
keep the two together. What JSON Schema cannot say (sizes counted in bytes, the NUL character
refused anywhere in a call, the calendar's ends) is said in the descriptions.

Over our usual ~400 lines: one shape per call type, the batch's union of them and every error
answer, read together when a rule changes (splitting them would split one description).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema_field,
)
from rest_framework import serializers

from streaming.ingest.segment import (
    CALL_TYPES,
    ID_MAX_LENGTH,
    MAX_BATCH_BYTES,
    MAX_BATCH_STORED_BYTES,
    MAX_CALL_BYTES,
)


class WriteKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "streaming.ingest.api.WriteKeyAuthentication"
    name = "writeKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "basic",
            "description": "The write key as the username, an empty password. A `writeKey` "
            "field in the body is accepted too.",
        }


class IngestAutoSchema(AutoSchema):
    """The ingest views' schema: every call has a body (an empty one is invalid JSON).

    drf-spectacular marks a request body required only when one of its fields is, and an
    identify, page or screen call has no field that is required on its own.
    """

    def _get_request_body(self, direction: str = "request") -> dict[str, Any] | None:
        body = super()._get_request_body(direction)
        if body is not None:
            body["required"] = True
        return body


# --- fields: what a Segment value may be ---------------------------------------------------------

# A string is blank when str.strip() leaves nothing of it: "not blank" is one character that
# str.isspace() refuses. Spelled out, as regular expressions disagree on \s (ECMA-262's, which
# OpenAPI's patterns follow, counts U+FEFF and not U+001C-U+001F or U+0085).
NOT_BLANK = (
    r"[^\t\n\u000b\f\r\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
)


@extend_schema_field(
    {
        "oneOf": [{"type": "string", "maxLength": ID_MAX_LENGTH}, {"type": "number"}],
        "nullable": True,
    }
)
class IdField(serializers.Field):
    """A Segment id: a string or a number, stored as a string; null or blank means absent."""


# The shape of an id that must be there: the identity rule below and the required ids use it.
REQUIRED_ID_SCHEMA = {
    "oneOf": [
        {"type": "string", "maxLength": ID_MAX_LENGTH, "pattern": NOT_BLANK},
        {"type": "number"},
    ]
}


@extend_schema_field(REQUIRED_ID_SCHEMA)
class RequiredIdField(serializers.Field):
    """A Segment id that must be given: not null, not blank."""


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "format": "date-time"},
            {"type": "string", "maxLength": 0},
        ],
        "nullable": True,
    }
)
class TimestampField(serializers.Field):
    """An ISO-8601 date-time (RFC 3339); null or "" means absent."""


def _object_field(help_text: str = "Stored as sent.") -> serializers.DictField:
    return serializers.DictField(required=False, allow_null=True, help_text=help_text)


# --- requests ------------------------------------------------------------------------------------

_ID_RULE = (
    f"A string of at most {ID_MAX_LENGTH} characters or a number, stored as a string; "
    "null or blank counts as absent."
)
_REQUIRED_ID_RULE = (
    f"A string of at most {ID_MAX_LENGTH} characters, not blank, or a number; stored as a string."
)


class SegmentCall(serializers.Serializer):
    """A Segment call: a userId or an anonymousId is required. Other fields are stored as sent."""

    # Whether the call must name its user with a userId or an anonymousId (an alias needs its
    # userId): SegmentCallSchema says it, which a serializer's fields alone cannot.
    identity_required = True

    userId = IdField(required=False, help_text=f"userId or anonymousId is required. {_ID_RULE}")
    anonymousId = IdField(
        required=False, help_text=f"userId or anonymousId is required. {_ID_RULE}"
    )
    messageId = IdField(
        required=False,
        help_text="The idempotency key per source: a messageId already stored is answered 200 "
        f'with "duplicate": true and not stored again. Generated when absent. {_ID_RULE}',
    )
    timestamp = TimestampField(
        required=False, help_text="When it happened, kept as sent (backfills)."
    )
    originalTimestamp = TimestampField(
        required=False,
        help_text="The client's clock; without timestamp, corrected for the client's clock skew: "
        "timestamp = receivedAt - (sentAt - originalTimestamp).",
    )
    sentAt = TimestampField(required=False, help_text="When the client sent the call.")
    context = _object_field()
    integrations = _object_field(
        'Kept, and honoured: {"Intercom": false} (or {"All": false} without '
        '{"Intercom": true}) stores the call but sends it nowhere.'
    )
    traits = _object_field()
    properties = _object_field()
    writeKey = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        help_text="Instead of HTTP Basic (what browsers do); never stored.",
    )


class SegmentCallSchema(OpenApiSerializerExtension):
    """Adds the rule a serializer cannot state: a userId or an anonymousId, not blank."""

    target_class = SegmentCall
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_basic_serializer(self.target, direction)
        if self.target.identity_required:
            schema["anyOf"] = [
                {"required": [field], "properties": {field: REQUIRED_ID_SCHEMA}}
                for field in ("userId", "anonymousId")
            ]
        return schema


class IdentifyCall(SegmentCall):
    traits = _object_field(
        "Who the user is (email, name, createdAt, company...). Without it, context.traits "
        "(RudderStack's SDKs) is stored as traits."
    )


class TrackCall(SegmentCall):
    event = serializers.RegexField(
        NOT_BLANK, max_length=ID_MAX_LENGTH, help_text="The event's name; not blank."
    )
    properties = _object_field("The event's properties.")


class GroupCall(SegmentCall):
    groupId = RequiredIdField(help_text=f"The company's id. {_REQUIRED_ID_RULE}")
    traits = _object_field("The company's traits (name, plan, employees...).")


class PageCall(SegmentCall):
    name = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    category = serializers.JSONField(required=False, help_text="Stored as sent.")
    properties = _object_field("The page's properties (path, url, title...).")


class ScreenCall(SegmentCall):
    name = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    properties = _object_field("The screen's properties.")


class AliasCall(SegmentCall):
    """A Segment alias: previousId and userId are required. Other fields are stored as sent."""

    identity_required = False

    previousId = RequiredIdField(help_text=f"The identity being merged. {_REQUIRED_ID_RULE}")
    userId = RequiredIdField(
        help_text=f"The user it is merged into (an anonymousId is not enough). {_REQUIRED_ID_RULE}"
    )


CALL_SHAPES: dict[str, type[SegmentCall]] = {
    "identify": IdentifyCall,
    "track": TrackCall,
    "group": GroupCall,
    "page": PageCall,
    "screen": ScreenCall,
    "alias": AliasCall,
}


def _batch_item(call_type: str) -> type[SegmentCall]:
    """A call inside a batch: the same rules, and its own ``type`` (a single call's is its path)."""
    call = CALL_SHAPES[call_type]
    name = call.__name__.replace("Call", "BatchItem")
    field = serializers.ChoiceField(choices=[call_type], help_text="The call's type.")
    return type(name, (call,), {"__doc__": call.__doc__, "type": field})


@extend_schema_field(
    PolymorphicProxySerializer(
        component_name="BatchCall",
        serializers={call_type: _batch_item(call_type) for call_type in CALL_TYPES},
        resource_type_field_name="type",
        many=False,
    )
)
class BatchCallField(serializers.JSONField):
    """One call of a batch, of any type."""


class BatchBody(serializers.Serializer):
    batch = serializers.ListField(
        child=BatchCallField(),
        help_text="The calls, each with its `type`. Each invalid one is listed in the answer's "
        "`rejected` while the valid ones are stored; none valid is a 400.",
    )
    context = _object_field("Shared by every call that does not set its own (merged in).")
    integrations = _object_field("Shared by every call that does not set its own (merged in).")
    sentAt = TimestampField(
        required=False, help_text="When the batch was sent: each call's sentAt unless it has one."
    )
    writeKey = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        help_text="Instead of HTTP Basic (what browsers do); never stored.",
    )


# What JSON Schema cannot say, said for the calls of a single request and of a batch alike.
_IN_WORDS = (
    "Text anywhere in a call may not contain the NUL character (\\u0000). Dates must stay "
    "within the years 1-9999 in UTC, the timestamp corrected for clock skew included. A "
    "number given as an id is stored as its decimal text (at most 255 characters too)."
)


def call_description(call_type: str) -> str:
    return (
        f"The body is one {call_type} call as JSON, at most {MAX_CALL_BYTES} bytes uncompressed "
        "(`Content-Encoding: gzip` is accepted; the limit applies to the inflated body), read "
        f"as JSON whatever its Content-Type (analytics.js sends text/plain). {_IN_WORDS} 200 "
        "means the call is stored, with its deliveries, in one transaction."
    )


BATCH_DESCRIPTION = (
    f"The body is at most {MAX_BATCH_BYTES} bytes uncompressed (`Content-Encoding: gzip` is "
    "accepted; the limit applies to the inflated body), read as JSON whatever its Content-Type "
    f"(analytics.js sends text/plain). Each call may be at most {MAX_CALL_BYTES} bytes as "
    "stored, with the batch's shared context and integrations merged in (a bigger one is "
    f"rejected alone), and the whole batch at most {MAX_BATCH_STORED_BYTES} bytes as stored. "
    f"{_IN_WORDS} 200 means the valid calls are stored, with their deliveries, in one "
    "transaction."
)


# --- answers -------------------------------------------------------------------------------------


class Accepted(serializers.Serializer):
    success = serializers.BooleanField()
    duplicate = serializers.BooleanField(
        help_text="True when this messageId was already stored (acknowledged, not stored again)."
    )


class RejectedCall(serializers.Serializer):
    index = serializers.IntegerField(min_value=0, help_text="The call's position in `batch`.")
    reason = serializers.CharField()
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Each bad field's messages (`non_field_errors` for the call as a whole).",
    )


class BatchAccepted(serializers.Serializer):
    success = serializers.BooleanField()
    accepted = serializers.IntegerField(min_value=0, help_text="Calls newly stored.")
    duplicates = serializers.IntegerField(
        min_value=0, help_text="Calls whose messageId was already stored."
    )
    rejected = RejectedCall(many=True, help_text="The invalid calls, none of them stored.")


class IngestRefusal(serializers.Serializer):
    """Every answer but 200, in the shape the Segment SDKs read."""

    success = serializers.BooleanField(help_text="Always false.")
    code = serializers.CharField()
    message = serializers.CharField()


def _refusal(name: str, *codes: str, errors: str = "") -> type[IngestRefusal]:
    """The refusal shape with its own ``code`` values (and ``errors``, for the 400s)."""
    fields: dict[str, Any] = {"code": serializers.ChoiceField(choices=codes)}
    if errors:
        fields["errors"] = serializers.DictField(required=False, help_text=errors)
    return type(name, (IngestRefusal,), {"__doc__": IngestRefusal.__doc__, **fields})


_BAD_INPUT_CODES = ("invalid_json", "invalid_gzip", "unsupported_encoding", "invalid_text")
_BAD_INPUT = (
    "invalid_json: the body is not JSON (or not UTF-8). invalid_gzip, unsupported_encoding: a "
    "corrupt or truncated gzip body, or an encoding other than gzip. invalid_text: the query "
    "holds the NUL character (%00)."
)
_PAYLOAD_TOO_LARGE = _refusal("PayloadTooLarge", "payload_too_large")
_REFUSALS = {
    401: OpenApiResponse(
        _refusal("WriteKeyRefused", "unauthorized"),
        description="No write key, an unknown or revoked one, or its source is disabled.",
    ),
    411: OpenApiResponse(
        _refusal("LengthRequired", "length_required"),
        description="A chunked body (no Content-Length) sent to a server that cannot decode it.",
    ),
    429: OpenApiResponse(
        _refusal("TooManyRequests", "rate_limited", "too_many_failed_keys"),
        description="rate_limited: over the write key's requests per second (a batch counts "
        "once). too_many_failed_keys: this address sent too many unknown write keys this "
        "minute. Send again after Retry-After seconds.",
    ),
    500: OpenApiResponse(
        _refusal("InternalError", "internal_error"),
        description="A defect in Switchboard; nothing was stored, and the error is logged.",
    ),
    503: OpenApiResponse(
        _refusal("Unavailable", "unavailable"),
        description="The database refused for now; nothing was stored. Send again after "
        "Retry-After seconds.",
    ),
}

CALL_RESPONSES = {
    200: OpenApiResponse(Accepted, description="Stored (or a duplicate messageId)."),
    400: OpenApiResponse(
        _refusal(
            "CallRefused",
            *_BAD_INPUT_CODES,
            "invalid_call",
            errors='Each bad field\'s messages: {"userId": ["Give a userId or an anonymousId."]}.',
        ),
        description=f"{_BAD_INPUT} invalid_call: a field breaks the rules. Nothing was stored.",
    ),
    401: _REFUSALS[401],
    411: _REFUSALS[411],
    413: OpenApiResponse(
        _PAYLOAD_TOO_LARGE, description=f"The body is over {MAX_CALL_BYTES} bytes (uncompressed)."
    ),
    429: _REFUSALS[429],
    500: _REFUSALS[500],
    503: _REFUSALS[503],
}

BATCH_RESPONSES = {
    200: OpenApiResponse(
        BatchAccepted, description="The valid calls stored; each invalid one listed in rejected."
    ),
    400: OpenApiResponse(
        _refusal(
            "BatchRefused",
            *_BAD_INPUT_CODES,
            "invalid_batch",
            errors="Each bad field's messages, or `rejected`: each call's index, reason, errors.",
        ),
        description=f"{_BAD_INPUT} invalid_batch: no batch list, a bad shared field, or no "
        "valid call. Nothing was stored.",
    ),
    401: _REFUSALS[401],
    411: _REFUSALS[411],
    413: OpenApiResponse(
        _PAYLOAD_TOO_LARGE,
        description=f"The body is over {MAX_BATCH_BYTES} bytes (uncompressed), or the batch over "
        f"{MAX_BATCH_STORED_BYTES} bytes as stored (each call with the shared context and "
        "integrations merged in).",
    ),
    429: _REFUSALS[429],
    500: _REFUSALS[500],
    503: _REFUSALS[503],
}

ANSWER_HEADERS = [
    OpenApiParameter(
        "Retry-After",
        OpenApiTypes.INT,
        OpenApiParameter.HEADER,
        required=True,
        response=[429, 503],
        description="Seconds to wait before sending again.",
    ),
    OpenApiParameter(
        "X-RateLimit-Reset",
        OpenApiTypes.INT,
        OpenApiParameter.HEADER,
        response=[429],
        description="The same as Retry-After, for analytics.js (rate_limited only).",
    ),
    OpenApiParameter(
        "WWW-Authenticate",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=[401],
        description="`Basic`, when no write key came, or an HTTP Basic one is unknown.",
    ),
]
