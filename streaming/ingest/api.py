"""The Segment-compatible ingest API: POST /v1/identify, track, group, page, screen, alias, batch.

It follows Segment's HTTP Tracking API, so the Segment and RudderStack SDKs work when their host
points at Switchboard: the write key is the HTTP Basic username (empty password) or ``writeKey``
in the body, bodies may be gzip-compressed, and errors answer ``{"code", "message"}`` as the
SDKs expect. Each view parses, authenticates, validates (``streaming.ingest.segment``) and calls one
service (``streaming.ingest.events.events_ingest``); 200 means the events are committed.

What each view accepts and answers is described for OpenAPI in ``streaming.ingest.openapi``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import zlib
from typing import Any, ClassVar

from django.core.cache import cache
from django.db import OperationalError
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiExample,
    extend_schema,
    extend_schema_view,
)
from rest_framework import status
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import APIException, AuthenticationFailed
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from integrations.models import WriteKey
from integrations.selectors import ROUTES_VERSION_KEY
from integrations.services import (
    TooManyFailedKeys,
    write_key_authenticate,
    write_key_cache_names,
)
from streaming.ingest.events import CacheVersions, events_ingest
from streaming.ingest.openapi import (
    ANSWER_HEADERS,
    BATCH_DESCRIPTION,
    BATCH_RESPONSES,
    CALL_RESPONSES,
    CALL_SHAPES,
    BatchBody,
    IngestAutoSchema,
    call_description,
)
from streaming.ingest.ratelimit import write_key_rate_check
from streaming.ingest.segment import (
    MAX_BATCH_BYTES,
    MAX_BATCH_STORED_BYTES,
    MAX_CALL_BYTES,
    InvalidCall,
    batch_normalise,
    call_normalise,
)
from streaming.ingest.suppression import VERSION_KEY as SUPPRESSIONS_VERSION_KEY

log = logging.getLogger(__name__)

NO_KEY_MESSAGE = (
    "Missing write key: send it as the HTTP Basic username with an empty password, "
    "or as writeKey in the JSON body."
)
BAD_KEY_MESSAGE = "Invalid write key: unknown, revoked, or its source is disabled."
# A single call's two answers, encoded once: rendering them through DRF on every call (its
# renderer, a template response) was a twentieth of the call's CPU.
ANSWER_STORED = json.dumps({"success": True, "duplicate": False}, separators=(",", ":")).encode()
ANSWER_DUPLICATE = json.dumps({"success": True, "duplicate": True}, separators=(",", ":")).encode()
MAX_WRITE_KEY_LENGTH = 200  # longer is no write key: refused without hashing it
_VERSION_KEYS = (ROUTES_VERSION_KEY, SUPPRESSIONS_VERSION_KEY)


class IngestError(APIException):
    """An answer other than 200, in the shape the Segment SDKs read (``code`` and ``message``)."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        errors: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"success": False, "code": self.code, "message": self.message}
        if self.errors is not None:
            answer["errors"] = self.errors
        return answer


def _authenticate(request: Request, key: str) -> WriteKey | None:
    """The write key, braked per client address (``integrations.services``).

    One cache round trip per request: the write key's entries are read together with the
    versions of the routes and of the suppressions, which ingest needs next (kept on the request
    as ``cache_versions``). Each round trip to Redis costs more than the work around it on this
    path (docs/benchmarks.md, B1).
    """
    client = request.META.get("REMOTE_ADDR", "")
    cached = None
    if 0 < len(key) <= MAX_WRITE_KEY_LENGTH:
        names = [*write_key_cache_names(key=key, client=client), *_VERSION_KEYS]
        try:
            cached = cache.get_many(names)
        except Exception:
            # Each reader below reads on its own again and meets the cache's failure as it
            # does without this read.
            log.warning("ingest: cache unavailable", exc_info=True)
    if cached is not None:
        request.cache_versions = CacheVersions(
            routes=cached.get(ROUTES_VERSION_KEY), suppressions=cached.get(SUPPRESSIONS_VERSION_KEY)
        )
    try:
        return write_key_authenticate(key=key, client=client, cached=cached)
    except TooManyFailedKeys as exc:
        raise IngestError(
            429,
            "too_many_failed_keys",
            "Too many unknown write keys from this address; retry after the delay in Retry-After.",
            headers={"Retry-After": str(exc.retry_after)},
        ) from None


class WriteKeyAuthentication(BaseAuthentication):
    """HTTP Basic with the write key as the username and an empty password (Segment's scheme).

    Returns ``(None, WriteKey)``; no header means "not authenticated yet" because the key may
    still come in the body. A header with an unknown or revoked key fails at once, before the
    body is read.
    """

    def authenticate(self, request: Request) -> tuple[None, WriteKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded.strip():
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise IngestError(401, "unauthorized", "Malformed HTTP Basic credentials.") from None
        key = decoded.partition(":")[0]
        if not key:
            return None
        write_key = _authenticate(request, key)
        if write_key is None:
            raise IngestError(
                401, "unauthorized", BAD_KEY_MESSAGE, headers={"WWW-Authenticate": "Basic"}
            )
        return None, write_key

    def authenticate_header(self, request: Request) -> str:
        return 'Basic realm="Switchboard write key"'


def _raw_body(request: Request, limit: int) -> bytes:
    """The request's bytes, a chunked body included (at most ``limit + 1`` of them).

    A chunked body comes without Content-Length; Django reads a body by its Content-Length and
    would see nothing. Servers that decode chunked input (gunicorn, uWSGI) say so with
    ``wsgi.input_terminated``: their ``wsgi.input`` ends where the body ends, so it can be read
    to the end. Other servers hand over the raw socket, where a read would hang: 411.
    """
    meta = request.META
    chunked = "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower()
    if not chunked or meta.get("CONTENT_LENGTH"):
        return request.body
    if not meta.get("wsgi.input_terminated"):
        raise IngestError(
            411,
            "length_required",
            "This server cannot read a chunked body: send a Content-Length header.",
        )
    stream = meta["wsgi.input"]
    chunks, size = [], 0
    while size <= limit:
        chunk = stream.read(min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class JsonAlways(BaseContentNegotiation):
    """Every ingest answer is JSON, whatever the client's Accept header says.

    The SDKs read JSON; a browser's ``Accept: text/html`` must not turn an accepted call into a
    406. And DRF's negotiation, which parses the header on every call, was a twentieth of a
    single call's CPU.
    """

    def select_parser(self, request: Request, parsers: list) -> Any:
        return parsers[0]

    def select_renderer(self, request: Request, renderers: list, format_suffix: Any = None) -> Any:
        return renderers[0], renderers[0].media_type


class _IngestView(APIView):
    authentication_classes = [WriteKeyAuthentication]
    content_negotiation_class = JsonAlways
    permission_classes = [AllowAny]
    # Declared for the OpenAPI schema only: the view reads the raw body itself (gzip, size
    # limits) and never touches request.data.
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]
    schema = IngestAutoSchema()
    throttle_classes: ClassVar[list] = []
    max_bytes = MAX_CALL_BYTES

    def handle_exception(self, exc: Exception) -> Response:
        """Every answer but 200 in the SDKs' JSON shape, the unexpected ones included."""
        if isinstance(exc, AuthenticationFailed):
            exc = IngestError(401, "unauthorized", str(exc.detail))
        elif isinstance(exc, OperationalError):
            # The database refused for now (contention that outlasted the retries, a restart,
            # too many connections): nothing was stored, and the SDKs resend on a 503.
            log.warning("ingest unavailable: %s", exc)
            exc = IngestError(
                503,
                "unavailable",
                "The call could not be stored just now; nothing was stored. Retry shortly.",
                headers={"Retry-After": "1"},
            )
        elif not isinstance(exc, IngestError):
            if isinstance(exc, APIException):
                return super().handle_exception(exc)
            log.exception("ingest failed")
            exc = IngestError(
                500, "internal_error", "Switchboard could not handle this call; nothing was stored."
            )
        return Response(exc.body(), status=exc.status_code, headers=exc.headers)

    def _body(self, request: Request) -> Any:
        """The decoded JSON body: gunzipped, within ``max_bytes``, or an IngestError."""
        limit = self.max_bytes
        too_large = IngestError(
            413, "payload_too_large", f"The body may be at most {limit} bytes (uncompressed)."
        )
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            raise too_large  # refused before reading it
        raw = _raw_body(request, limit)
        encoding = request.META.get("HTTP_CONTENT_ENCODING", "").strip().lower()
        if encoding == "gzip":
            # Bounded: a small gzip bomb must not inflate into memory.
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                data = inflater.decompress(raw, limit + 1)
            except zlib.error:
                raise IngestError(400, "invalid_gzip", "The body is not valid gzip.") from None
            if len(data) > limit:
                raise too_large
            if not inflater.eof:
                raise IngestError(400, "invalid_gzip", "The gzip body is truncated.")
            if inflater.unused_data:
                raise IngestError(
                    400, "invalid_gzip", "The body has data after the end of its gzip stream."
                )
        elif encoding in ("", "identity"):
            data = raw
        else:
            raise IngestError(
                400, "unsupported_encoding", f"Content-Encoding {encoding!r}: use gzip or none."
            )
        if len(data) > limit:
            raise too_large
        try:
            return json.loads(data)
        except RecursionError:
            raise IngestError(400, "invalid_json", "The body is nested too deeply.") from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise IngestError(400, "invalid_json", f"The body is not valid JSON: {exc}.") from None

    def _write_key(self, request: Request, body: Any) -> WriteKey:
        write_key = request.auth
        if write_key is None:
            key = body.get("writeKey") if isinstance(body, dict) else None
            if not isinstance(key, str) or not key:
                raise IngestError(
                    401, "unauthorized", NO_KEY_MESSAGE, headers={"WWW-Authenticate": "Basic"}
                )
            write_key = _authenticate(request, key)
            if write_key is None:
                raise IngestError(401, "unauthorized", BAD_KEY_MESSAGE)
        wait = write_key_rate_check(key_id=write_key.pk)
        if wait is not None:
            raise IngestError(
                429,
                "rate_limited",
                "Too many calls for this write key; retry after the delay in Retry-After.",
                # analytics.js reads X-RateLimit-Reset (seconds), the others Retry-After.
                headers={
                    "Retry-After": str(max(1, math.ceil(wait))),
                    "X-RateLimit-Reset": str(max(1, math.ceil(wait))),
                },
            )
        return write_key


class CallView(_IngestView):
    """One call of the type named by the URL."""

    call_type: ClassVar[str]

    def post(self, request: Request) -> Response:
        received_at = timezone.now()
        body = self._body(request)
        write_key = self._write_key(request, body)
        try:
            call = call_normalise(body, call_type=self.call_type, received_at=received_at)
        except InvalidCall as exc:
            raise IngestError(400, "invalid_call", str(exc), errors=exc.errors) from None
        result = events_ingest(
            source=write_key.source,
            calls=[call],
            received_at=received_at,
            versions=getattr(request, "cache_versions", None),
        )
        return HttpResponse(
            ANSWER_DUPLICATE if result.duplicates else ANSWER_STORED,
            content_type="application/json",
        )


def _call_view(call_type: str, summary: str) -> type:
    example = {
        "identify": {"userId": "u-42", "traits": {"email": "ada@example.com", "plan": "pro"}},
        "track": {"userId": "u-42", "event": "Order Completed", "properties": {"total": 42.5}},
        "group": {"userId": "u-42", "groupId": "acme", "traits": {"name": "Acme", "plan": "pro"}},
        "page": {"userId": "u-42", "name": "Pricing", "properties": {"path": "/pricing"}},
        "screen": {"userId": "u-42", "name": "Settings"},
        "alias": {"previousId": "anon-7", "userId": "u-42"},
    }[call_type]

    def post(self: CallView, request: Request) -> Response:
        return CallView.post(self, request)

    view = type(f"{call_type.title()}View", (CallView,), {"call_type": call_type, "post": post})
    # A function of its own per view: extend_schema annotates the function it decorates.
    view.post = extend_schema(
        operation_id=f"v1_{call_type}",
        summary=summary,
        tags=["ingest"],
        description=call_description(call_type),
        request=CALL_SHAPES[call_type],
        responses=CALL_RESPONSES,
        parameters=ANSWER_HEADERS,
        examples=[OpenApiExample(call_type, value=example, request_only=True)],
    )(view.post)
    return view


IdentifyView = _call_view("identify", "Who a user is (upserts the Intercom contact)")
TrackView = _call_view("track", "Something a user did (an Intercom data event)")
GroupView = _call_view("group", "The company a user belongs to")
PageView = _call_view("page", "A web page view")
ScreenView = _call_view("screen", "A mobile screen view")
AliasView = _call_view("alias", "Merge an anonymous identity into a user")


class BatchView(_IngestView):
    """Many calls in one request: valid ones are stored, invalid ones reported by index."""

    max_bytes = MAX_BATCH_BYTES

    @extend_schema(
        operation_id="v1_batch",
        summary="Many calls at once (what the SDKs send); /v1/import is the same",
        tags=["ingest"],
        description=BATCH_DESCRIPTION,
        request=BatchBody,
        responses=BATCH_RESPONSES,
        parameters=ANSWER_HEADERS,
        examples=[
            OpenApiExample(
                "batch",
                request_only=True,
                value={
                    "batch": [
                        {"type": "identify", "userId": "u-42", "traits": {"email": "a@b.co"}},
                        {"type": "track", "userId": "u-42", "event": "Signed Up"},
                    ]
                },
            )
        ],
    )
    def post(self, request: Request) -> Response:
        received_at = timezone.now()
        body = self._body(request)
        write_key = self._write_key(request, body)
        try:
            calls, rejected = batch_normalise(body, received_at=received_at)
        except InvalidCall as exc:
            raise IngestError(400, "invalid_batch", str(exc), errors=exc.errors) from None
        answer_rejected = [
            {"index": r.index, "reason": r.reason, "errors": r.errors} for r in rejected
        ]
        stored = sum(call.stored_bytes for call in calls)
        if stored > MAX_BATCH_STORED_BYTES:
            raise IngestError(
                413,
                "payload_too_large",
                f"The batch would be {stored} bytes as stored (each call with the batch's shared "
                f"context and integrations); at most {MAX_BATCH_STORED_BYTES}.",
            )
        if rejected and not calls:
            raise IngestError(
                400,
                "invalid_batch",
                "No call in the batch is valid; nothing was stored.",
                errors={"rejected": answer_rejected},
            )
        result = events_ingest(
            source=write_key.source,
            calls=calls,
            received_at=received_at,
            versions=getattr(request, "cache_versions", None),
        )
        return Response(
            {
                "success": True,
                "accepted": len(result.event_ids),
                "duplicates": len(result.duplicates),
                "rejected": answer_rejected,
            },
            status=status.HTTP_200_OK,
        )


@extend_schema_view(
    post=extend_schema(
        operation_id="v1_import",
        summary="Historical calls (backfill): the same as /v1/batch",
    )
)
class ImportView(BatchView):
    """Segment's name for backfills; calls carry their own ``timestamp``."""


def short_path_view(view: type[_IngestView]) -> type[_IngestView]:
    """The same view under analytics.js's one-letter path (/v1/t, /v1/b, ...), not in the schema.

    Segment's browser SDK posts each call to ``<apiHost>/<first letter of the type>`` and batches
    to ``<apiHost>/b``, as text/plain (no CORS preflight) with the write key in the body.
    """
    return extend_schema_view(post=extend_schema(exclude=True))(
        type(f"Short{view.__name__}", (view,), {})
    )
