"""Intercom webhook notifications -> Segment calls: signature, envelope and the topic table (pure)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from integrations.filtering import FilterRule, filters_evaluate
from integrations.intercom.webhooks import (
    EVENT_NAME_PREFIX,
    KNOWN_TOPIC_NAMES,
    NotificationInvalid,
    notification_calls,
    notification_parse,
    signature_compute,
    signature_verify,
    topic_event_name,
)
from integrations.models import INTERCOM_EVENTS

SECRET = "client-secret-9f2e"
CREATED_AT = 1_717_171_717  # 2024-05-31T16:08:37Z

# --- items as Intercom sends them (trimmed to what matters) --------------------------------

CONTACT = {
    "type": "contact",
    "id": "65c0ffee0000000000000001",
    "role": "user",
    "external_id": "u-42",
    "email": "ada@example.com",
    "name": "Ada Lovelace",
    "phone": "+44 20 7946 0000",
    "signed_up_at": 1_700_000_000,
    "unsubscribed_from_emails": False,
}
LEAD = {
    "type": "contact",
    "id": "65c0ffee0000000000000002",
    "role": "lead",
    "external_id": None,
    "email": "visitor@example.com",
}
CONVERSATION = {
    "type": "conversation",
    "id": "147",
    "state": "closed",
    "priority": "not_priority",
    "admin_assignee_id": 991,
    "team_assignee_id": None,
    "source": {
        "type": "conversation",
        "delivered_as": "customer_initiated",
        "author": {"type": "user", "id": CONTACT["id"], "name": "Ada"},
    },
    "contacts": {
        "type": "contact.list",
        "contacts": [{"type": "contact", "id": CONTACT["id"], "external_id": "u-42"}],
    },
    "tags": {"type": "tag.list", "tags": [{"type": "tag", "id": "7", "name": "vip"}]},
    "conversation_parts": {
        "type": "conversation_part.list",
        "conversation_parts": [
            {
                "type": "conversation_part",
                "part_type": "close",
                "body": "<p>Glad we could help!</p>",
                "author": {"type": "admin", "id": "991", "name": "Grace", "email": "g@example.com"},
            }
        ],
    },
}
LEGACY_CONVERSATION = {  # 1.x: the contact is `user`, with `user_id` as the external id
    "type": "conversation",
    "id": "148",
    "user": {"type": "user", "id": "5a1b", "user_id": "u-7"},
}
COMPANY = {
    "type": "company",
    "id": "6a1c",
    "company_id": "acme",
    "name": "Acme",
    "plan": {"type": "plan", "id": "1", "name": "pro"},
    "monthly_spend": 99,
    "user_count": 4,
}


def envelope(topic: str, item: dict[str, Any] | None, **fields: Any) -> dict[str, Any]:
    return {
        "type": "notification_event",
        "app_id": "abc123",
        "id": "notif_1",
        "topic": topic,
        "created_at": CREATED_AT,
        "data": {"type": "notification_event_data", "item": item},
        **fields,
    }


def calls_of(topic: str, item: dict[str, Any]) -> list[dict[str, Any]]:
    return notification_calls(notification_parse(json.dumps(envelope(topic, item)).encode()))


def track_of(topic: str, item: dict[str, Any]) -> dict[str, Any]:
    (track,) = [call for call in calls_of(topic, item) if call["type"] == "track"]
    return track


# --- signature -------------------------------------------------------------------------------


def test_intercoms_signature_of_the_raw_body_verifies():
    body = json.dumps(envelope("ping", {})).encode()
    header = signature_compute(body=body, secret=SECRET)

    assert header.startswith("sha1=") and len(header) == 45
    assert signature_verify(body=body, header=header, secret=SECRET)
    assert signature_verify(
        body=body, header=header.upper().replace("SHA1=", "sha1="), secret=SECRET
    )


@pytest.mark.parametrize(
    ("header", "secret", "why"),
    [
        (None, SECRET, "missing header"),
        ("", SECRET, "empty header"),
        ("SIGNATURE", SECRET, "the sha1= prefix is checked"),
        ("sha1=" + "0" * 40, SECRET, "a well-formed but wrong MAC"),
        ("sha256=" + "0" * 64, SECRET, "another algorithm"),
        ("SIGNED_WITH_OTHER", "another-secret", "signed with another app's secret"),
        ("SIGNED", "", "no secret configured never verifies"),
    ],
)
def test_a_missing_or_wrong_signature_does_not_verify(header, secret, why):
    body = json.dumps(envelope("conversation.admin.closed", CONVERSATION)).encode()
    good = signature_compute(body=body, secret=SECRET)
    if header in ("SIGNATURE", "SIGNED_WITH_OTHER", "SIGNED"):
        header = {
            "SIGNATURE": good.removeprefix("sha1="),
            "SIGNED_WITH_OTHER": good,
            "SIGNED": signature_compute(body=body, secret=""),
        }[header]

    assert not signature_verify(body=body, header=header, secret=secret), why


def test_a_body_changed_after_signing_does_not_verify():
    body = json.dumps(envelope("conversation.admin.closed", CONVERSATION)).encode()
    header = signature_compute(body=body, secret=SECRET)
    # The same JSON re-serialised (spaces) is another body: the raw bytes are what is signed.
    reformatted = json.dumps(json.loads(body), indent=1).encode()

    assert not signature_verify(body=body + b" ", header=header, secret=SECRET)
    assert not signature_verify(body=reformatted, header=header, secret=SECRET)


# --- envelope --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"[]", "body"),
        (json.dumps(envelope("conversation.admin.closed", CONVERSATION, type="event")), "type"),
        (json.dumps(envelope("", CONVERSATION)), "topic"),
        (json.dumps(envelope("Conversation Closed!", CONVERSATION)), "topic"),
        (json.dumps(envelope("conversation.admin.closed", CONVERSATION, id=None)), "id"),
        (json.dumps(envelope("conversation.admin.closed", CONVERSATION, id="x" * 256)), "id"),
        (json.dumps(envelope("conversation.admin.closed", None)), "data.item"),
        (
            json.dumps(envelope("conversation.admin.closed", CONVERSATION, created_at="now")),
            "created_at",
        ),
        (
            json.dumps(envelope("conversation.admin.closed", CONVERSATION, created_at=10**20)),
            "created_at",
        ),
    ],
)
def test_a_malformed_notification_is_refused_naming_the_field(body, field):
    raw = body if isinstance(body, bytes) else body.encode()
    with pytest.raises(NotificationInvalid) as caught:
        notification_parse(raw)
    assert field in caught.value.errors


def test_ping_maps_to_no_call():
    notification = notification_parse(json.dumps(envelope("ping", {"type": "ping"})).encode())

    assert notification.is_ping
    assert notification_calls(notification) == []


# --- event names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "name"),
    [
        ("conversation.admin.closed", "[Intercom] Conversation Closed"),
        ("conversation.user.created", "[Intercom] Conversation Started by Contact"),
        ("conversation.admin.single.created", "[Intercom] Conversation Started by Admin"),
        ("conversation.user.replied", "[Intercom] Conversation Replied by Contact"),
        ("conversation.admin.replied", "[Intercom] Conversation Replied by Admin"),
        ("conversation.admin.noted", "[Intercom] Conversation Note Added"),
        ("conversation.admin.assigned", "[Intercom] Conversation Assigned"),
        ("conversation.read", "[Intercom] Conversation Read"),
        ("conversation.deleted", "[Intercom] Conversation Deleted"),
        ("conversation_part.tag.created", "[Intercom] Conversation Part Tagged"),
        # a contact's role and the legacy user.* topics fold into one name
        ("contact.user.created", "[Intercom] Contact Created"),
        ("contact.lead.created", "[Intercom] Contact Created"),
        ("user.created", "[Intercom] Contact Created"),
        ("contact.lead.signed_up", "[Intercom] Contact Signed Up"),
        ("contact.user.tag.created", "[Intercom] Contact Tagged"),
        ("user.tag.deleted", "[Intercom] Contact Untagged"),
        ("contact.email.updated", "[Intercom] Contact Email Updated"),
        ("contact.archived", "[Intercom] Contact Archived"),
        ("contact.merged", "[Intercom] Contact Merged"),
        ("contact.lead.merged", "[Intercom] Contact Merged"),
        ("company.created", "[Intercom] Company Created"),
        ("company.contact.attached", "[Intercom] Company Contact Attached"),
        ("event.created", "[Intercom] Event Created"),
        ("visitor.signed_up", "[Intercom] Visitor Signed Up"),
        ("ticket.contact.replied", "[Intercom] Ticket Replied by Contact"),
        # any other topic: its words
        ("ticket.state.updated", "[Intercom] Ticket State Updated"),
        ("admin.away_mode_updated", "[Intercom] Admin Away Mode Updated"),
    ],
)
def test_each_topic_has_a_clear_event_name(topic, name):
    assert topic_event_name(topic) == name


def test_known_names_are_distinct_and_all_blocked_by_the_default_loop_filter():
    names = [topic_event_name(topic) for topic in KNOWN_TOPIC_NAMES]
    block = FilterRule(action="exclude", event_name=INTERCOM_EVENTS)

    assert len(set(names)) == len(names)
    for name in names:
        assert name.startswith(EVENT_NAME_PREFIX) and len(name) <= 255
        call = {"type": "track", "event": name, "userId": "u"}
        assert filters_evaluate(call=call, rules=[block]) is not None


# --- what each topic family becomes --------------------------------------------------------


FAMILIES = [
    # (topic, item, identity, properties expected among the track's, extra call types)
    (
        "conversation.admin.closed",
        CONVERSATION,
        {"userId": "u-42"},
        {
            "conversation_id": "147",
            "state": "closed",
            "admin_id": "991",
            "admin_name": "Grace",
            "admin_assignee_id": 991,
            "part_type": "close",
            "channel": "customer_initiated",
            "tags": ["vip"],
            "contact_id": CONTACT["id"],
        },
        [],
    ),
    (
        "conversation.user.replied",
        LEGACY_CONVERSATION,
        {"userId": "u-7"},
        {"conversation_id": "148", "contact_id": "5a1b", "role": "user"},
        [],
    ),
    (
        "conversation.user.created",
        {**CONVERSATION, "contacts": {"contacts": [{"type": "contact", "id": LEAD["id"]}]}},
        {"anonymousId": LEAD["id"]},
        {"conversation_id": "147", "contact_id": LEAD["id"]},
        [],
    ),
    (
        "contact.user.created",
        CONTACT,
        {"userId": "u-42"},
        {"contact_id": CONTACT["id"], "role": "user"},
        ["identify"],
    ),
    (
        "contact.lead.created",
        LEAD,
        {"anonymousId": LEAD["id"]},
        {"contact_id": LEAD["id"], "role": "lead"},
        ["identify"],
    ),
    (
        "contact.deleted",
        {"type": "contact", "id": CONTACT["id"], "external_id": "u-42"},
        {"userId": "u-42"},
        {"contact_id": CONTACT["id"]},
        [],
    ),
    (
        "contact.user.tag.created",
        {"type": "contact_tag", "tag": {"id": "7", "name": "vip"}, "contact": CONTACT},
        {"userId": "u-42"},
        {"tag_id": "7", "tag_name": "vip", "contact_id": CONTACT["id"]},
        [],
    ),
    (
        "company.created",
        COMPANY,
        {"anonymousId": "company:6a1c"},
        {"company_id": "acme", "company_name": "Acme", "plan": "pro", "monthly_spend": 99},
        [],
    ),
    (
        "company.contact.attached",
        {"type": "contact_company", "id": "cc1", "company": COMPANY, "contact": CONTACT},
        {"userId": "u-42"},
        {"company_id": "acme", "contact_id": CONTACT["id"]},
        ["group"],
    ),
    (
        "event.created",
        {
            "type": "event",
            "id": "ev1",
            "event_name": "invited-friend",
            "user_id": "u-42",
            "intercom_user_id": CONTACT["id"],
            "metadata": {"invitee": "bob@example.com", "nested": {"no": 1}},
        },
        {"userId": "u-42"},
        {"event_name": "invited-friend", "metadata": {"invitee": "bob@example.com"}},
        [],
    ),
    (
        "visitor.signed_up",
        {"type": "visitor", "id": "v1", "user_id": "u-9", "email": "v@example.com"},
        {"userId": "u-9"},
        {"contact_id": "v1"},
        ["identify"],
    ),
    (
        "ticket.state.updated",
        {
            "type": "ticket",
            "id": "t1",
            "ticket_state": {"name": "In progress"},
            "ticket_type": {"name": "Bug"},
            "contacts": {
                "contacts": [{"type": "contact", "id": CONTACT["id"], "external_id": "u-42"}]
            },
        },
        {"userId": "u-42"},
        {"ticket_id": "t1", "ticket_state": "In progress", "ticket_type": "Bug"},
        [],
    ),
    (
        "admin.logged_in",
        {"type": "admin", "id": "991", "name": "Grace", "away_mode_enabled": False},
        {"anonymousId": "admin:991"},
        {"admin_id": "991", "admin_name": "Grace", "away_mode_enabled": False},
        [],
    ),
]


@pytest.mark.parametrize(
    ("topic", "item", "identity", "properties", "extra"),
    FAMILIES,
    ids=[row[0] for row in FAMILIES],
)
def test_every_topic_family_becomes_a_track_call_about_the_right_person(
    topic, item, identity, properties, extra
):
    calls = calls_of(topic, copy.deepcopy(item))

    assert [call["type"] for call in calls] == [*extra, "track"]
    track = calls[-1]
    assert track["event"] == topic_event_name(topic)
    assert track["messageId"] == "notif_1"
    assert track["timestamp"] == "2024-05-31T16:08:37+00:00"
    for call in calls:
        assert {key: call[key] for key in ("userId", "anonymousId") if key in call} == identity
        assert call["context"]["intercom"]["topic"] == topic
        assert call["context"]["intercom"]["notification_id"] == "notif_1"
        assert call["context"]["intercom"]["app_id"] == "abc123"
    assert properties.items() <= track["properties"].items()


def test_a_contact_notification_also_identifies_the_contact_but_never_back_into_intercom():
    identify, track = calls_of("contact.user.updated", CONTACT)

    assert identify["messageId"] == "notif_1:identify"
    assert identify["traits"] == {
        "email": "ada@example.com",
        "name": "Ada Lovelace",
        "phone": "+44 20 7946 0000",
        "intercom_contact_id": CONTACT["id"],
        "intercom_role": "user",
        "unsubscribed_from_emails": False,
        "createdAt": "2023-11-14T22:13:20+00:00",
    }
    # A sync without any filter still does not send it: an identify would loop back.
    assert filters_evaluate(call=identify, rules=[]) == "integrations opt-out"
    assert "integrations" not in track  # the track is held back by the "[Intercom] *" filter


def test_a_contact_attached_to_a_company_is_grouped_with_it():
    item = {"type": "contact_company", "company": COMPANY, "contact": CONTACT}
    group, _ = calls_of("company.contact.attached", item)

    assert group["messageId"] == "notif_1:group"
    assert group["groupId"] == "acme"
    assert group["traits"] == {"name": "Acme", "plan": "pro", "intercom_company_id": "6a1c"}
    assert group["integrations"] == {"Intercom": False}


def test_message_bodies_are_not_copied_and_a_long_conversation_stays_small():
    conversation = copy.deepcopy(CONVERSATION)
    part = conversation["conversation_parts"]["conversation_parts"][0]
    conversation["conversation_parts"]["conversation_parts"] = [
        {**part, "body": f"<p>{'x' * 1000} secret-ish body {n}</p>"} for n in range(100)
    ]
    conversation["title"] = "T" * 1000

    (track,) = calls_of("conversation.admin.closed", conversation)

    text = json.dumps(track)
    assert "body" not in text
    assert len(text) < 2000
    assert track["properties"]["title"] == "T" * 255


def test_a_notification_without_created_at_leaves_the_timestamp_to_ingest():
    body = envelope("conversation.admin.closed", CONVERSATION)
    del body["created_at"]

    (track,) = notification_calls(notification_parse(json.dumps(body).encode()))

    assert "timestamp" not in track
