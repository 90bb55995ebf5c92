"""Intercom's contact as it is now, for an operator comparing it with what we last sent.

One GET, through the caller's client (its rate limiter) and reported to the caller's recorder,
so that the read is logged like any exchange: ``GET /contacts/{id}`` when the contact's id is
known, else ``GET /contacts/find_by_external_id/{external_id}`` (users only, per Intercom's API).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from integrations.intercom.client import IntercomClient, error_for
from integrations.intercom.operations import ExchangeRecorder


def contact_read(
    *,
    client: IntercomClient,
    recorder: ExchangeRecorder,
    contact_id: str = "",
    external_id: str = "",
) -> dict[str, Any] | None:
    """The contact as Intercom holds it now, or None when Intercom has none (404).

    Raises the door's errors for any other answer (401 ``AuthenticationError``, 429
    ``RateLimitedError``, ...). Needs ``contact_id`` or ``external_id``.
    """
    if contact_id:
        path = "/contacts/" + quote(contact_id, safe="")
    elif external_id:
        path = "/contacts/find_by_external_id/" + quote(external_id, safe="")
    else:
        raise ValueError("contact_read needs a contact id or an external id")
    handle = recorder.started(method="GET", url=client.url_for(path), body=None)
    result = client.request("GET", path)
    recorder.finished(handle, result)
    if result.ok and isinstance(result.body, dict):
        return result.body
    if result.status == 404:
        return None
    raise error_for(result)
