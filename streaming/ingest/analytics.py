"""The Python API: Segment calls from the host's own Django code, without HTTP.

    from streaming.ingest import analytics

    analytics.identify("u-42", {"email": "ada@example.com", "plan": "pro"})
    analytics.track("u-42", "Order Completed", {"total": 42.5})

Calls go through the same validation (``streaming.ingest.segment``) and the same ingest service as
``POST /v1/*``, into the source named by the ``source`` argument or, by default, by the setting
``SWITCHBOARD_PYTHON_SOURCE``. Inside the caller's transaction they join it: the events are
stored, and the workers woken, only if that transaction commits. Invalid input raises
``InvalidCall`` (a ``ValueError``) with field errors; a disabled source drops the call with a
warning, so switching a source off never breaks the host application.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypedDict, Unpack

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from integrations.models import Source
from streaming.ingest.events import IngestResult, events_ingest
from streaming.ingest.segment import InvalidCall, call_normalise, jsonable

__all__ = ["CallOptions", "InvalidCall", "alias", "group", "identify", "page", "screen", "track"]

log = logging.getLogger(__name__)


def _source_get(source: Source | str | None) -> Source:
    if isinstance(source, Source):
        return source
    name = source or settings.SWITCHBOARD_PYTHON_SOURCE
    if not name:
        raise ImproperlyConfigured(
            "Give source= or set SWITCHBOARD_PYTHON_SOURCE to the name of the source that "
            "in-process calls belong to."
        )
    found = Source.objects.filter(name=name).first()
    if found is None:
        raise ImproperlyConfigured(f"No source named {name!r} (SWITCHBOARD_PYTHON_SOURCE).")
    return found


class CallOptions(TypedDict, total=False):
    """What every call may carry besides its own fields (Segment's common fields)."""

    anonymous_id: str | int
    context: Mapping[str, Any]
    timestamp: datetime | str
    integrations: Mapping[str, Any]
    message_id: str
    # The source the call belongs to, by name or instance; default SWITCHBOARD_PYTHON_SOURCE.
    source: Source | str


def _send(call_type: str, fields: dict[str, Any], options: CallOptions) -> IngestResult:
    # ``**options`` takes any keyword at run time: a misspelt one must fail, not vanish.
    unknown = options.keys() - CallOptions.__annotations__.keys()
    if unknown:
        raise TypeError(f"{call_type}() got unexpected keyword arguments: {sorted(unknown)}")
    received_at = timezone.now()
    raw = {key: value for key, value in fields.items() if value is not None}
    raw.update(_common_fields(options))
    call = call_normalise(jsonable(raw), call_type=call_type, received_at=received_at)
    target = _source_get(options.get("source"))
    if not target.enabled:
        log.warning("source %s is disabled: %s call dropped", target.name, call_type)
        return IngestResult()
    return events_ingest(source=target, calls=[call], received_at=received_at)


def _common_fields(options: CallOptions) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "anonymousId": options.get("anonymous_id"),
        # The library names itself, as Segment's libraries do, so the admin can tell where calls
        # came from.
        "context": {"library": {"name": "switchboard-python"}, **(options.get("context") or {})},
        "timestamp": options.get("timestamp"),
        "integrations": options.get("integrations"),
        "messageId": options.get("message_id"),
    }
    return {key: value for key, value in fields.items() if value is not None}


def identify(
    user_id: str | int | None = None,
    traits: Mapping[str, Any] | None = None,
    **options: Unpack[CallOptions],
) -> IngestResult:
    """Who the user is: their traits (email, name, plan, company, ...)."""
    return _send("identify", {"userId": user_id, "traits": traits}, options)


def track(
    user_id: str | int | None = None,
    event: str | None = None,
    properties: Mapping[str, Any] | None = None,
    **options: Unpack[CallOptions],
) -> IngestResult:
    """Something the user did."""
    return _send("track", {"userId": user_id, "event": event, "properties": properties}, options)


def group(
    user_id: str | int | None = None,
    group_id: str | int | None = None,
    traits: Mapping[str, Any] | None = None,
    **options: Unpack[CallOptions],
) -> IngestResult:
    """The company (group) the user belongs to, with its traits."""
    return _send("group", {"userId": user_id, "groupId": group_id, "traits": traits}, options)


def page(
    user_id: str | int | None = None,
    name: str | None = None,
    properties: Mapping[str, Any] | None = None,
    *,
    category: str | None = None,
    **options: Unpack[CallOptions],
) -> IngestResult:
    """A web page the user viewed."""
    fields = {"userId": user_id, "name": name, "category": category, "properties": properties}
    return _send("page", fields, options)


def screen(
    user_id: str | int | None = None,
    name: str | None = None,
    properties: Mapping[str, Any] | None = None,
    **options: Unpack[CallOptions],
) -> IngestResult:
    """A mobile screen the user viewed."""
    return _send("screen", {"userId": user_id, "name": name, "properties": properties}, options)


def alias(
    previous_id: str | int, user_id: str | int, **options: Unpack[CallOptions]
) -> IngestResult:
    """The user known until now as ``previous_id`` (e.g. an anonymous id) is ``user_id``."""
    return _send("alias", {"previousId": previous_id, "userId": user_id}, options)
