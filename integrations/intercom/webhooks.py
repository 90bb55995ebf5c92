"""Intercom webhook notifications -> Segment calls: verify, parse, map (pure: no DB, no network).

Intercom signs each notification with the app's client secret (``X-Hub-Signature: sha1=<hex
HMAC-SHA1 of the raw body>``) and posts the envelope ``{type: "notification_event", id, topic,
created_at, app_id, data: {item}}``. ``signature_verify`` checks the header in constant time,
``notification_parse`` validates the envelope, and ``notification_calls`` maps it to the raw
Segment calls the ingest service accepts (they still go through ``streaming.ingest.segment``).

What a notification becomes (docs/webhooks.md has the table):

- always one **track** call ``[Intercom] <Object> <Action>`` (``topic_event_name``), with the
  useful ids and fields of the item as properties, ``timestamp`` from ``created_at`` and
  ``messageId`` = the notification id, so Intercom's retry of the same notification is
  acknowledged as a duplicate and stored once;
- for contact topics that describe a contact (created, updated, signed up, email changed), also
  an **identify** with the contact's standard fields; when a contact is attached to a company,
  also a **group**. Those two carry ``integrations: {"Intercom": false}``: they record what
  Intercom said for the host application and the user timeline, and must never be sent back into
  Intercom (an identify into the workspace it came from would fire ``contact.user.updated``
  again: a loop). The track calls are kept from looping by the ``[Intercom] *`` exclude filter
  every new sync starts with, which an operator may lift for a sync into another workspace.

Who a call is about depends on the source's ``match_by`` (``MATCH_BY``; Amplitude's promise for
its Intercom source: user id or email, email falling back to the user id, neither: dropped):

- ``user_id_or_contact`` (the default, nothing dropped): ``userId`` is the contact's
  ``external_id`` (``user_id`` in the legacy objects) when Intercom has one, else ``anonymousId``
  is Intercom's contact id. A notification about something that is not a contact (a company on
  its own, an admin, a ticket without contact) gets ``anonymousId`` ``<item type>:<item id>``
  (e.g. ``company:65a1...``), which can never be mistaken for a contact id;
- ``user_id``: ``userId`` is the ``external_id``; without one the notification is dropped;
- ``email``: ``userId`` is the contact's email, else its ``external_id``; with neither, dropped.

A dropped notification raises ``NotificationDropped`` with the reason, for the caller to count.
``ping`` maps to nothing.

Every call carries ``context.intercom`` = {topic, notification_id, app_id, item_type, item_id}:
where it came from, for filters (``context.intercom.topic``) and for people reading the timeline.
The raw item is never stored (a conversation with its parts easily exceeds the 32 KB a call may
have, and is full of message bodies); the ``intercom_activity`` signal hands it to the host app.

Over our usual ~400 lines: the table of Intercom's topics and one normaliser per item type
(contact, company, conversation, event), all pure, all read together when a topic is added.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

SIGNATURE_HEADER = "X-Hub-Signature"
EVENT_NAME_PREFIX = "[Intercom] "  # integrations.models.INTERCOM_EVENTS excludes "[Intercom] *"
PING_TOPIC = "ping"
STRING_MAX = 255  # Intercom's own limit for metadata strings; also keeps stored calls small

_SIGNATURE_RE = re.compile(r"sha1=([0-9a-fA-F]{40})")

# Topic -> event name, for the topics whose plain words (``_words_name``) would read badly.
# Names follow Segment's "Object Action" style. A contact's role (user / lead) is not part of the
# name (``_topic_normalise`` folds it away; it is in properties.role), so one event name covers
# both and the workspace's 120-event-name budget is spared. The actor of a conversation or
# ticket topic (admin / user) is named only where both can do the same thing.
KNOWN_TOPIC_NAMES: dict[str, str] = {
    "conversation.user.created": "Conversation Started by Contact",
    "conversation.admin.single.created": "Conversation Started by Admin",
    "conversation.user.replied": "Conversation Replied by Contact",
    "conversation.admin.replied": "Conversation Replied by Admin",
    "conversation.admin.noted": "Conversation Note Added",
    "conversation.admin.assigned": "Conversation Assigned",
    "conversation.admin.closed": "Conversation Closed",
    "conversation.admin.opened": "Conversation Opened",
    "conversation.admin.snoozed": "Conversation Snoozed",
    "conversation.admin.unsnoozed": "Conversation Unsnoozed",
    "conversation.rating.added": "Conversation Rated",
    "conversation_part.tag.created": "Conversation Part Tagged",
    "contact.created": "Contact Created",
    "contact.updated": "Contact Updated",
    "contact.signed_up": "Contact Signed Up",
    "contact.added_email": "Contact Email Added",
    "contact.tag.created": "Contact Tagged",
    "contact.tag.deleted": "Contact Untagged",
    "ticket.admin.assigned": "Ticket Assigned",
    "ticket.admin.closed": "Ticket Closed",
    "ticket.admin.replied": "Ticket Replied by Admin",
    "ticket.contact.replied": "Ticket Replied by Contact",
    "ticket.note.created": "Ticket Note Added",
}

# Contact topics after which the notification's item says who the contact now is.
_IDENTIFY_TOPICS = frozenset(
    {
        "contact.created",
        "contact.updated",
        "contact.signed_up",
        "contact.added_email",
        "contact.email.updated",
        "visitor.signed_up",
    }
)
_CONTACT_TYPES = frozenset({"contact", "user", "lead", "visitor"})


class WebhookError(ValueError):
    """A notification that cannot be accepted."""


class NotificationDropped(WebhookError):
    """The notification names no one the source's matching accepts; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


MatchBy = Literal["user_id_or_contact", "user_id", "email"]
MATCH_BY: tuple[MatchBy, ...] = ("user_id_or_contact", "user_id", "email")


class NotificationInvalid(WebhookError):
    """The body is not a well-formed Intercom notification; ``errors`` says what is wrong."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


# --- signature ---------------------------------------------------------------------------------


def signature_compute(*, body: bytes, secret: str) -> str:
    """The ``X-Hub-Signature`` value Intercom sends for ``body`` (``sha1=<40 hex digits>``)."""
    digest = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    return f"sha1={digest}"


def signature_verify(*, body: bytes, header: str | None, secret: str) -> bool:
    """Whether ``header`` is Intercom's signature of ``body`` with ``secret`` (constant time).

    No secret never verifies: an unsigned notification must not be accepted because a source was
    saved without one.
    """
    if not secret or not header:
        return False
    match = _SIGNATURE_RE.fullmatch(header.strip())
    if match is None:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    return hmac.compare_digest(expected, match.group(1).lower())


# --- envelope ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    """One parsed notification; ``item`` is Intercom's object, as sent."""

    id: str
    topic: str
    created_at: datetime | None
    app_id: str
    item: dict[str, Any] = field(default_factory=dict)

    @property
    def is_ping(self) -> bool:
        return self.topic == PING_TOPIC


def _identifier(value: Any) -> str:
    """Intercom ids are strings, some older ones numbers; "" when absent or not an id."""
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, str | int):
        return str(value).strip()
    return ""


def notification_parse(body: bytes) -> Notification:
    """Validate the envelope of a (signature-checked) body; raise ``NotificationInvalid``."""
    try:
        envelope = json.loads(body)
    except RecursionError:
        raise NotificationInvalid({"body": ["Nested too deeply."]}) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise NotificationInvalid({"body": [f"Not valid JSON: {exc}."]}) from None
    if not isinstance(envelope, dict):
        raise NotificationInvalid({"body": ["Must be a JSON object."]})

    errors: dict[str, list[str]] = {}
    if envelope.get("type") != "notification_event":
        errors["type"] = ['Must be "notification_event".']
    topic = envelope.get("topic")
    if not isinstance(topic, str) or not re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)*", topic):
        errors["topic"] = ["Must be an Intercom topic, e.g. conversation.admin.closed."]
        topic = ""
    notification_id = _identifier(envelope.get("id"))
    if not notification_id and topic != PING_TOPIC:
        # The id is what makes Intercom's retry a duplicate: without it, nothing can be deduped.
        errors["id"] = ["A notification needs its id."]
    elif len(notification_id) > STRING_MAX:
        errors["id"] = [f"At most {STRING_MAX} characters."]
    created_at = None
    raw_created = envelope.get("created_at")
    if raw_created is not None:
        if isinstance(raw_created, bool) or not isinstance(raw_created, int | float):
            errors["created_at"] = ["Must be a Unix timestamp in seconds."]
        else:
            try:
                created_at = datetime.fromtimestamp(raw_created, tz=UTC)
            except (OverflowError, OSError, ValueError):
                errors["created_at"] = ["Out of range."]
    data = envelope.get("data")
    item = data.get("item") if isinstance(data, dict) else None
    if not isinstance(item, dict) and topic != PING_TOPIC:
        errors["data.item"] = ["Must be an object (the Intercom object the topic is about)."]
    if errors:
        raise NotificationInvalid(errors)
    return Notification(
        id=notification_id,
        topic=topic,
        created_at=created_at,
        app_id=_identifier(envelope.get("app_id")),
        item=item if isinstance(item, dict) else {},
    )


# --- names -------------------------------------------------------------------------------------


def _topic_normalise(topic: str) -> str:
    """Fold the contact's role and the legacy ``user.*`` topics into ``contact.*``.

    ``contact.user.created``, ``contact.lead.created`` and the 1.x ``user.created`` all mean
    "a contact was created"; the role is a property, not a different event.
    """
    parts = topic.split(".")
    if parts[0] == "user":
        parts[0] = "contact"
    if parts[0] == "contact" and len(parts) > 2 and parts[1] in ("user", "lead"):
        del parts[1]
    return ".".join(parts)


def _words_name(topic: str) -> str:
    """``ticket.state.updated`` -> ``Ticket State Updated``: the topic's words, capitalised."""
    return " ".join(word.capitalize() for word in re.split(r"[._]", topic) if word)


def topic_event_name(topic: str) -> str:
    """The track event name of a topic: ``[Intercom] `` + a known name or the topic's words."""
    normalised = _topic_normalise(topic)
    return EVENT_NAME_PREFIX + KNOWN_TOPIC_NAMES.get(normalised, _words_name(normalised))


# --- the item ----------------------------------------------------------------------------------


def _scalar(value: Any) -> str | int | float | bool | None:
    """A value fit for a property: scalars as they are, strings cut to 255; None otherwise."""
    if isinstance(value, str):
        return value[:STRING_MAX] if value else None
    if isinstance(value, bool | int | float):
        return value
    return None


def _get(value: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _contact_of(item: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The contact a notification is about, wherever this item type keeps it."""
    if item.get("type") in _CONTACT_TYPES:
        return item
    for key in ("contact", "user", "lead"):
        if isinstance(item.get(key), Mapping):
            return item[key]
    contacts = item.get("contacts")
    if isinstance(contacts, Mapping):  # 2.x: {"type": "contact.list", "contacts": [...]}
        contacts = contacts.get("contacts")
    if isinstance(contacts, list):
        for contact in contacts:
            if isinstance(contact, Mapping):
                return contact
    author = _get(item, "source", "author")
    if isinstance(author, Mapping) and author.get("type") in _CONTACT_TYPES:
        return author
    return None


@dataclass(frozen=True)
class _Subject:
    user_id: str
    anonymous_id: str
    contact_id: str


def _email(value: Any) -> str:
    email = value.strip() if isinstance(value, str) else ""
    return email if "@" in email else ""


def _subject(notification: Notification, match_by: MatchBy) -> _Subject:
    item = notification.item
    if item.get("type") == "event":
        # A data event names its contact by external id (user_id), Intercom id and email.
        external_id = _identifier(item.get("user_id"))
        contact_id = _identifier(item.get("intercom_user_id"))
        email = _email(item.get("email"))
        is_person = bool(external_id or contact_id or email)
    else:
        contact = _contact_of(item)
        is_person = contact is not None
        contact = contact or {}
        external_id = _identifier(contact.get("external_id") or contact.get("user_id"))
        contact_id = _identifier(contact.get("id"))
        email = _email(contact.get("email"))
    if match_by == "email":
        if email or external_id:
            return _Subject(user_id=email or external_id, anonymous_id="", contact_id=contact_id)
        raise NotificationDropped(
            "the contact has neither an email nor a user id"
            if is_person
            else f"it is about no contact (a {_identifier(item.get('type')) or 'bare'} item)"
        )
    if match_by == "user_id" and not external_id:
        raise NotificationDropped(
            "the contact has no user id (external_id)"
            if is_person
            else f"it is about no contact (a {_identifier(item.get('type')) or 'bare'} item)"
        )
    if external_id:
        return _Subject(user_id=external_id, anonymous_id="", contact_id=contact_id)
    if contact_id:
        return _Subject(user_id="", anonymous_id=contact_id, contact_id=contact_id)
    item_type = _identifier(item.get("type")) or "intercom"
    item_id = _identifier(item.get("id")) or notification.app_id or notification.id
    return _Subject(user_id="", anonymous_id=f"{item_type}:{item_id}", contact_id="")


def _role(contact: Mapping[str, Any]) -> Any:
    """user or lead: 2.x contacts say it in ``role``, legacy user / lead objects in ``type``."""
    if contact.get("role"):
        return contact["role"]
    return contact.get("type") if contact.get("type") in ("user", "lead") else None


def _tag_names(value: Any) -> list[str]:
    tags = value.get("tags") if isinstance(value, Mapping) else value
    if not isinstance(tags, list):
        return []
    return [
        str(tag["name"])[:STRING_MAX]
        for tag in tags
        if isinstance(tag, Mapping) and tag.get("name")
    ]


def _conversation_properties(item: Mapping[str, Any]) -> dict[str, Any]:
    parts = _get(item, "conversation_parts", "conversation_parts")
    last_part = parts[-1] if isinstance(parts, list) and parts else {}
    author = _get(last_part, "author") or {}
    properties = {
        "conversation_id": item.get("id"),
        "state": item.get("state"),
        "priority": item.get("priority"),
        "title": item.get("title"),
        "admin_assignee_id": item.get("admin_assignee_id"),
        "team_assignee_id": item.get("team_assignee_id"),
        "channel": _get(item, "source", "delivered_as") or _get(item, "source", "type"),
        # The latest part is what this notification is about: the reply, note, close...
        "part_type": _get(last_part, "part_type"),
        "author_type": _get(author, "type"),
        "author_id": _get(author, "id"),
        "author_name": _get(author, "name"),
        "rating": _get(item, "conversation_rating", "rating"),
        "rating_remark": _get(item, "conversation_rating", "remark"),
    }
    if author.get("type") == "admin":
        properties["admin_id"] = author.get("id")
        properties["admin_name"] = author.get("name")
    return properties


def _company_properties(company: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "company_id": company.get("company_id"),
        "intercom_company_id": company.get("id"),
        "company_name": company.get("name"),
        "plan": _get(company, "plan", "name") or company.get("plan"),
        "monthly_spend": company.get("monthly_spend"),
        "user_count": company.get("user_count"),
    }


def _item_properties(item: Mapping[str, Any]) -> dict[str, Any]:
    """The useful fields of the item, by its type (unknown types: only the contact's ids)."""
    item_type = item.get("type")
    properties: dict[str, Any] = {}
    if item_type == "conversation":
        properties.update(_conversation_properties(item))
    elif item_type == "ticket":
        properties.update(
            ticket_id=item.get("id"),
            ticket_state=_get(item, "ticket_state", "name") or item.get("ticket_state"),
            ticket_type=_get(item, "ticket_type", "name"),
            admin_assignee_id=item.get("admin_assignee_id"),
            team_assignee_id=item.get("team_assignee_id"),
        )
    elif item_type == "company":
        properties.update(_company_properties(item))
    elif item_type == "event":
        properties.update(event_name=item.get("event_name"))
        if isinstance(item.get("metadata"), Mapping):
            properties["metadata"] = {
                str(key): value
                for key, value in item["metadata"].items()
                if _scalar(value) is not None
            }
    elif item_type == "admin":
        properties.update(
            admin_id=item.get("id"),
            admin_name=item.get("name"),
            away_mode_enabled=item.get("away_mode_enabled"),
        )
    if isinstance(item.get("tag"), Mapping):  # contact_tag / user_tag items
        properties.update(tag_id=item["tag"].get("id"), tag_name=item["tag"].get("name"))
    if isinstance(item.get("company"), Mapping):  # company.contact.attached / detached
        properties.update(_company_properties(item["company"]))
    contact = _contact_of(item)
    if contact is not None:
        properties.update(
            contact_id=contact.get("id"),
            role=_role(contact),
        )
    tags = _tag_names(item.get("tags"))
    if tags:
        properties["tags"] = tags
    cleaned: dict[str, Any] = {}
    for key, value in properties.items():
        if key in ("tags", "metadata"):
            cleaned[key] = value
        elif _scalar(value) is not None:
            cleaned[key] = _scalar(value)
    return cleaned


def _contact_traits(contact: Mapping[str, Any]) -> dict[str, Any]:
    traits: dict[str, Any] = {
        "email": contact.get("email"),
        "name": contact.get("name"),
        "phone": contact.get("phone"),
        "intercom_contact_id": contact.get("id"),
        "intercom_role": _role(contact),
        "unsubscribed_from_emails": contact.get("unsubscribed_from_emails"),
    }
    created = contact.get("signed_up_at") or contact.get("created_at")
    if isinstance(created, int) and not isinstance(created, bool) and created > 0:
        traits["createdAt"] = datetime.fromtimestamp(created, tz=UTC).isoformat()
    return {key: _scalar(value) for key, value in traits.items() if _scalar(value) is not None}


# --- calls -------------------------------------------------------------------------------------


def notification_calls(
    notification: Notification, *, match_by: MatchBy = "user_id_or_contact"
) -> list[dict[str, Any]]:
    """The raw Segment calls a notification becomes (module doc); [] for ``ping``.

    Identify / group come before the track call, so a host app reading a user's timeline in
    order sees who the contact is before what happened. Raises ``NotificationDropped`` when
    ``match_by`` finds no one to attribute it to.
    """
    if notification.is_ping:
        return []
    item = notification.item
    subject = _subject(notification, match_by)
    item_type = _identifier(item.get("type"))
    base: dict[str, Any] = {
        "context": {
            "intercom": {
                "topic": notification.topic,
                "notification_id": notification.id,
                "app_id": notification.app_id,
                "item_type": item_type,
                "item_id": _identifier(item.get("id")),
            }
        }
    }
    if notification.created_at is not None:
        base["timestamp"] = notification.created_at.isoformat()
    if subject.user_id:
        base["userId"] = subject.user_id
    else:
        base["anonymousId"] = subject.anonymous_id

    # Never back into Intercom (module doc): the per-call opt-out every sync honours.
    not_to_intercom = {"Intercom": False}
    calls: list[dict[str, Any]] = []
    normalised = _topic_normalise(notification.topic)
    contact = _contact_of(item) if item_type != "event" else None
    if normalised in _IDENTIFY_TOPICS and contact is not None:
        calls.append(
            {
                **base,
                "type": "identify",
                "messageId": f"{notification.id}:identify",
                "traits": _contact_traits(contact),
                "integrations": not_to_intercom,
            }
        )
    company = item.get("company") if isinstance(item.get("company"), Mapping) else None
    group_id = _identifier(company.get("company_id") or company.get("id")) if company else ""
    if normalised == "company.contact.attached" and group_id and subject.contact_id:
        traits = {
            "name": company.get("name"),
            "plan": _get(company, "plan", "name"),
            "intercom_company_id": company.get("id"),
        }
        calls.append(
            {
                **base,
                "type": "group",
                "messageId": f"{notification.id}:group",
                "groupId": group_id,
                "traits": {k: _scalar(v) for k, v in traits.items() if _scalar(v) is not None},
                "integrations": not_to_intercom,
            }
        )
    calls.append(
        {
            **base,
            "type": "track",
            "messageId": notification.id,
            "event": topic_event_name(notification.topic),
            "properties": _item_properties(item),
        }
    )
    return calls
