"""Who a call is about: the paths read out of a call, and the contact a sync addresses it to.

``identity_resolve`` is cheap on purpose: ingest calls it for every call and sync to choose the
delivery lane (one lane per (sync, user)), and ``transforms.plan_build`` calls it again to
address the Intercom operations. The path helpers (``call_path_get`` and friends) are the one
way the mapping, the filters and identity read a value out of a stored call. Pure: no database,
no network, no settings.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from integrations.intercom.operations import Identity, SyncConfig

MISSING = object()  # a path that is absent (None is a value: null)


# --- reading the call -------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def path_parts(path: str) -> tuple[str, ...]:
    """``"traits.company.size"`` -> its parts; cached, as ingest resolves the same few paths
    for every call."""
    return tuple(path.split("."))


def call_path_get(call: Mapping[str, Any], parts: tuple[str, ...]) -> Any:
    """The value at a dotted path split into ``parts``, or ``MISSING``.

    ``traits.x`` falls back to ``context.traits.x``: Segment puts a user's traits there on every
    call other than identify, so one path works for every call type.
    """
    value = path_walk(call, parts)
    if value is MISSING and parts and parts[0] == "traits":
        value = path_walk(call.get("context"), ("traits", *parts[1:]))
    return value


def path_walk(value: Any, parts: Iterable[str]) -> Any:
    for part in parts:
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def identifier_text(value: Any) -> str | None:
    """A non-empty identifier as text (ids may arrive as numbers), else None."""
    if isinstance(value, str):  # the usual case first: this runs at ingest for every call
        return value.strip() or None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        text = str(value).strip()
        return text or None
    return None


def user_view(call: Mapping[str, Any]) -> Mapping[str, Any]:
    """The call as seen for the user: a group call's traits describe the company, not the user."""
    if call.get("type") == "group":
        return {**call, "traits": {}}
    return call


def email_of(call: Mapping[str, Any]) -> str | None:
    value = call_path_get(user_view(call), ("traits", "email"))
    return (value.strip() or None) if isinstance(value, str) else None


# --- identity ---------------------------------------------------------------------------------


def identity_resolve(*, call: dict, config: SyncConfig) -> Identity | str:
    """Which contact the call is about, or the reason there is none (the delivery is skipped).

    Called at ingest for every call and sync to choose the delivery lane, so it only reads a few
    keys.
    """
    email = email_of(call)
    if config.match_by == "email":
        if email is None:
            return "no email in traits.email or context.traits.email (the sync matches by email)"
        # Intercom compares emails case-insensitively; the lane key must too.
        return Identity(
            user_key=email.lower(), external_id=None, email=email, role=config.contact_role
        )

    parts = path_parts(config.external_id_path)
    external_id = identifier_text(call_path_get(user_view(call), parts))
    if external_id is None and config.anonymous != "drop":
        anonymous_id = identifier_text(call.get("anonymousId"))
        if anonymous_id is not None and config.anonymous == "lead":
            # A visitor is a lead, the only role Intercom merges into a user (POST
            # /contacts/merge), and a lead has no external_id: it is known by the Intercom id
            # remembered for its anonymousId (ContactLink), which is also its lane's key.
            return Identity(user_key=anonymous_id, external_id=None, email=email, role="lead")
        # RudderStack's "anonymousId as secondary user id": a contact of the sync's role.
        external_id = anonymous_id
    if external_id is None:
        if config.external_id_path != "userId":
            return f"no external id at {config.external_id_path}"
        if config.anonymous == "drop":
            return "anonymous call (no userId) and the sync drops anonymous calls"
        return "no userId and no anonymousId"
    return Identity(
        user_key=external_id, external_id=external_id, email=email, role=config.contact_role
    )


def visitor_linked(*, call: dict, identity: Identity, config: SyncConfig) -> str | None:
    """The anonymousId an identify or alias links to the user it is about, when the sync sends
    visitors as leads; None otherwise. The visitor's lead is merged into that user."""
    if config.anonymous != "lead" or identity.external_id is None:
        return None
    kind = call.get("type")
    if kind == "identify":
        anonymous_id = identifier_text(call.get("anonymousId"))
    elif kind == "alias":
        anonymous_id = identifier_text(call.get("previousId"))
    else:
        return None
    return anonymous_id if anonymous_id not in (None, identity.user_key) else None
