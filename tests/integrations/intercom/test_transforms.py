"""The Segment -> Intercom mapping, one table row per row of docs/mapping.md's mapping table (pure)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from integrations.intercom.identity import identity_resolve
from integrations.intercom.operations import (
    CompanyAttach,
    CompanyDetach,
    CompanyTag,
    CompanyTagList,
    CompanyUpsert,
    ContactDelete,
    ContactMerge,
    ContactTag,
    ContactTagList,
    ContactTouch,
    ContactUpsert,
    Dropped,
    EventCreate,
    Identity,
    Plan,
    SyncConfig,
)
from integrations.intercom.transforms import plan_build

T = "2024-03-01T12:00:00Z"
T_UNIX = 1709294400
JAN_1_2024 = 1704067200
JUNE_1_2024 = 1717200000
LIMIT_REASON = "Intercom keeps at most 10 metadata keys"
LIST_REASON = "lists are not accepted by Intercom"
RANGE_REASON = "outside 1970-01-01..2100-01-01 (Intercom's Unix seconds)"


def identify(traits: dict | None = None, **call: Any) -> dict:
    return {"type": "identify", "userId": "u1", "timestamp": T, "traits": traits or {}, **call}


def track(event: Any = "Order Completed", properties: dict | None = None, **call: Any) -> dict:
    return {
        "type": "track",
        "userId": "u1",
        "timestamp": T,
        "event": event,
        "properties": properties or {},
        **call,
    }


def group(traits: dict | None = None, **call: Any) -> dict:
    return {"type": "group", "userId": "u1", "groupId": "g1", "timestamp": T, **call} | {
        "traits": traits or {}
    }


def page(name: str | None = None, properties: dict | None = None, **call: Any) -> dict:
    return {
        "type": "page",
        "userId": "u1",
        "timestamp": T,
        "name": name,
        "properties": properties or {},
        **call,
    }


def contact(fields: dict | None = None, attributes: dict | None = None) -> tuple:
    return (
        "contact upsert",
        {"role": "user", "external_id": "u1", **(fields or {})},
        attributes or {},
    )


def event(
    name: str = "Order Completed", metadata: dict | None = None, **kwargs: Any
) -> EventCreate:
    return EventCreate(event_name=name, created_at=T_UNIX, metadata=metadata or {}, **kwargs)


def operations_of(plan: Plan) -> list:
    # The fingerprint is a hash: compared by its own tests, not spelled out in every row.
    return [
        ("contact upsert", op.fields, op.custom_attributes) if isinstance(op, ContactUpsert) else op
        for op in plan.operations
    ]


ALL = SyncConfig(send_all_properties=True)

# (call, config, expected operations, expected drops as (field, reason))
MAPPING_CASES = [
    # --- identify -> contact -----------------------------------------------------------------
    pytest.param(
        identify(
            {
                "email": "ann@example.com",
                "name": "Ann Lee",
                "phone": "+33 1 23 45 67 89",
                "avatar": "https://example.com/ann.png",
                "createdAt": "2024-01-01T00:00:00Z",
                "ownerId": 42,
                "unsubscribedFromEmails": True,
            }
        ),
        SyncConfig(),
        [
            contact(
                {
                    "email": "ann@example.com",
                    "name": "Ann Lee",
                    "phone": "+33 1 23 45 67 89",
                    "avatar": "https://example.com/ann.png",
                    "signed_up_at": JAN_1_2024,
                    "owner_id": "42",
                    "unsubscribed_from_emails": True,
                }
            )
        ],
        [],
        id="identify-standard-fields",
    ),
    pytest.param(
        identify({"firstName": "Ann", "last_name": "Lee"}),
        SyncConfig(),
        [contact({"name": "Ann Lee"})],
        [],
        id="identify-first-and-last-name",
    ),
    pytest.param(
        identify({"created_at": JAN_1_2024 * 1000}),
        SyncConfig(),
        [contact({"signed_up_at": JAN_1_2024})],
        [],
        id="identify-created-at-in-milliseconds",
    ),
    pytest.param(
        identify({"createdAt": "last tuesday"}),
        SyncConfig(),
        [contact()],
        [("traits.createdAt", "not a date (ISO 8601 or Unix time)")],
        id="identify-created-at-not-a-date",
    ),
    pytest.param(
        identify(),
        SyncConfig(update_last_seen=True),
        [contact({"last_seen_at": T_UNIX})],
        [],
        id="identify-last-seen-when-enabled",
    ),
    pytest.param(
        identify(),
        SyncConfig(),
        [contact()],
        [],
        id="identify-no-last-seen-by-default",
    ),
    pytest.param(
        identify(context={"Intercom": {"unsubscribedFromEmails": True}}),
        SyncConfig(),
        [contact({"unsubscribed_from_emails": True})],
        [],
        id="identify-unsubscribed-from-context-intercom",
    ),
    pytest.param(
        identify(),
        SyncConfig(contact_role="lead"),
        # Intercom sets no external_id on a lead
        [("contact upsert", {"role": "lead"}, {})],
        [],
        id="identify-role-lead",
    ),
    pytest.param(
        identify({"plan": "pro", "seats": 3, "not_selected": "x"}),
        SyncConfig(contact_attributes=(("traits.plan", "plan_name"), ("traits.seats", "seats"))),
        [contact(attributes={"plan_name": "pro", "seats": 3})],
        [],
        id="identify-mapped-traits-only",
    ),
    pytest.param(
        identify(),
        SyncConfig(
            timeline_link_attribute="switchboard_timeline",
            timeline_url="https://sb.example/admin/streaming/delivery/timeline/?q=",
        ),
        [
            contact(
                attributes={
                    "switchboard_timeline": "https://sb.example/admin/streaming/delivery/"
                    "timeline/?q=u1"
                }
            )
        ],
        [],
        id="identify-timeline-link",
    ),
    pytest.param(
        identify({"email": "a@example.com", "name": "A", "plan": "pro", "logins": 7, "vip": True}),
        ALL,
        [
            contact(
                {"email": "a@example.com", "name": "A"},
                {"plan": "pro", "logins": 7, "vip": True},
            )
        ],
        [],
        id="identify-send-all-traits",
    ),
    pytest.param(
        identify({"address": {"city": "Paris", "geo": {"lat": 48.85}}}),
        ALL,
        [contact(attributes={"address_city": "Paris", "address_geo_lat": 48.85})],
        [],
        id="identify-nested-flattened",
    ),
    pytest.param(
        identify({"address": {"city": "Paris"}}),
        SyncConfig(contact_attributes=(("traits.address", "home"),)),
        [contact(attributes={"home_city": "Paris"})],
        [],
        id="identify-mapped-object-flattened",
    ),
    pytest.param(
        identify({"tags": ["a", "b"]}),
        ALL,
        [contact()],
        [("traits.tags", LIST_REASON)],
        id="identify-list-dropped",
    ),
    pytest.param(
        identify({"bio": "x" * 300}),
        ALL,
        [contact(attributes={"bio": "x" * 255})],
        [("traits.bio", "cut to 255 characters (was 300)")],
        id="identify-string-cut-to-255",
    ),
    pytest.param(
        identify({"my.key": 1, "$price": 2, "two words": 3, "$$": 4}),
        ALL,
        [contact(attributes={"my_key": 1, "price": 2, "two_words": 3})],
        [("traits.$$", "no valid character for an Intercom name")],
        id="identify-names-made-valid",
    ),
    pytest.param(
        identify({"a.b": 1, "a b": 2}),
        ALL,
        [contact(attributes={"a_b": 1})],
        [("traits.a b", "'a_b' is already set from traits.a.b")],
        id="identify-name-collision",
    ),
    pytest.param(
        identify({"trial_ends": "2024-06-01", "renewal": "2024-06-01T10:00:00+02:00"}),
        ALL,
        [contact(attributes={"trial_ends": JUNE_1_2024, "renewal": JUNE_1_2024 + 8 * 3600})],
        [],
        id="identify-iso-dates-become-unix-seconds",
    ),
    pytest.param(
        identify({"plan": None}),
        ALL,
        [contact(attributes={"plan": None})],
        [],
        id="identify-null-clears-an-attribute",
    ),
    pytest.param(
        identify({"big": 2**63, "fine": 2**63 - 1}),
        ALL,
        [contact(attributes={"fine": 2**63 - 1})],
        [("traits.big", "integer too large for Intercom (64 bits)")],
        id="identify-integer-too-large",
    ),
    pytest.param(
        identify({"createdAt": "0001-01-01T00:00:00Z"}),
        SyncConfig(),
        [contact()],
        [("traits.createdAt", RANGE_REASON)],
        id="identify-created-at-out-of-range",
    ),
    pytest.param(
        identify({"ends": "9999-12-31"}),
        ALL,
        [contact()],
        [("traits.ends", RANGE_REASON)],
        id="identify-date-attribute-out-of-range",
    ),
    pytest.param(
        identify({"company": {"id": "c1", "name": "Acme", "plan": "pro", "employees": 12}}),
        SyncConfig(),
        [
            contact(),
            CompanyUpsert(
                company_id="c1",
                fields={"name": "Acme", "plan": "pro", "size": 12},
                custom_attributes={},
            ),
            CompanyAttach(company_id="c1"),
        ],
        [],
        id="identify-company-upsert-and-attach",
    ),
    pytest.param(
        identify({"companies": [{"id": "c1"}, {"company_id": 2}]}),
        SyncConfig(),
        [
            contact(),
            CompanyUpsert(company_id="c1", fields={}, custom_attributes={}),
            CompanyAttach(company_id="c1"),
            CompanyUpsert(company_id="2", fields={}, custom_attributes={}),
            CompanyAttach(company_id="2"),
        ],
        [],
        id="identify-companies-list",
    ),
    pytest.param(
        identify({"company": {"id": "c1", "remove": True}}),
        SyncConfig(),
        [contact(), CompanyDetach(company_id="c1")],
        [],
        id="identify-company-remove-detaches",
    ),
    pytest.param(
        identify({"company": {"name": "Acme"}}),
        SyncConfig(),
        [contact()],
        [("traits.company", "a company needs an id")],
        id="identify-company-without-id",
    ),
    pytest.param(
        identify({"company": {"id": "c1"}}),
        SyncConfig(send_companies=False),
        [contact()],
        [("traits.company", "the sync does not send companies")],
        id="identify-company-when-companies-are-off",
    ),
    pytest.param(
        identify({"company": {"id": "c1", "tier": "gold", "tags": ["x"]}}),
        ALL,
        [
            contact(),
            CompanyUpsert(company_id="c1", fields={}, custom_attributes={"tier": "gold"}),
            CompanyAttach(company_id="c1"),
        ],
        [("traits.company.tags", LIST_REASON)],
        id="identify-company-custom-attributes",
    ),
    # --- track -> event ----------------------------------------------------------------------
    pytest.param(
        track(properties={"total": 10}),
        SyncConfig(),
        [event()],
        [],
        id="track-event-name-and-time",
    ),
    pytest.param(
        track(properties={"total": 10, "other": 1}, context={"app": {"version": "1.2"}}),
        SyncConfig(
            event_metadata=(("properties.total", "total"), ("context.app.version", "app_version"))
        ),
        [event(metadata={"total": 10, "app_version": "1.2"})],
        [],
        id="track-mapped-metadata-only",
    ),
    pytest.param(
        track(properties={"total": 10.5, "coupon": "X", "paid": True}),
        ALL,
        [event(metadata={"total": 10.5, "coupon": "X", "paid": True})],
        [],
        id="track-send-all-properties",
    ),
    pytest.param(
        track(properties={f"k{i}": i for i in range(12)}),
        ALL,
        [event(metadata={f"k{i}": i for i in range(10)})],
        [("properties.k10", LIMIT_REASON), ("properties.k11", LIMIT_REASON)],
        id="track-at-most-10-metadata-keys",
    ),
    pytest.param(
        track(
            properties={
                "invoice": {"url": "https://example.com/i/1", "value": "Invoice 1"},
                "paid": {"amount": 1999, "currency": "eur"},
            }
        ),
        ALL,
        [
            event(
                metadata={
                    "invoice": {"url": "https://example.com/i/1", "value": "Invoice 1"},
                    "paid": {"amount": 1999, "currency": "eur"},
                }
            )
        ],
        [],
        id="track-rich-link-and-monetary-amount-kept",
    ),
    pytest.param(
        track(properties={"revenue": 19.99, "currency": "eur"}),
        ALL,
        [event(metadata={"price": {"amount": 1999, "currency": "EUR"}})],
        [],
        id="track-revenue-to-price-in-cents",
    ),
    pytest.param(
        track(properties={"revenue": "5"}),
        ALL,
        [event(metadata={"price": {"amount": 500, "currency": "USD"}})],
        [],
        id="track-revenue-default-currency",
    ),
    pytest.param(
        track(properties={"revenue": 12.5, "currency": "GBP"}),
        SyncConfig(event_metadata=(("properties.revenue", "amount_paid"),)),
        [event(metadata={"amount_paid": {"amount": 1250, "currency": "GBP"}})],
        [],
        id="track-mapped-revenue",
    ),
    pytest.param(
        track(properties={"revenue": "lots"}),
        ALL,
        [event()],
        [("properties.revenue", "not a number")],
        id="track-revenue-not-a-number",
    ),
    pytest.param(
        track(properties={"revenue": "NaN", "currency": "EUR"}),
        ALL,
        [event()],
        [("properties.revenue", "not a number")],
        id="track-revenue-nan",
    ),
    pytest.param(
        track(properties={"order": {"id": "o1", "shipping": {"country": "FR"}}}),
        ALL,
        [event(metadata={"order_id": "o1", "order_shipping_country": "FR"})],
        [],
        id="track-nested-flattened",
    ),
    pytest.param(
        track(properties={"items": [1, 2]}),
        ALL,
        [event()],
        [("properties.items", LIST_REASON)],
        id="track-list-dropped",
    ),
    pytest.param(
        track(properties={"a.b": 1, "$c": 2, "with space": 3}),
        ALL,
        [event(metadata={"a_b": 1, "_c": 2, "with space": 3})],
        [],
        id="track-keys-made-valid",
    ),
    pytest.param(
        track(properties={"note": "y" * 256}),
        ALL,
        [event(metadata={"note": "y" * 255})],
        [("properties.note", "cut to 255 characters (was 256)")],
        id="track-string-cut-to-255",
    ),
    pytest.param(
        track(properties={"coupon": None}),
        ALL,
        [event()],
        [("properties.coupon", "null values are not sent")],
        id="track-null-dropped",
    ),
    pytest.param(
        track(properties={"big": 2**63, "huge": 10**300, "fine": 2**63 - 1}),
        ALL,
        [event(metadata={"fine": 2**63 - 1})],
        [
            ("properties.big", "integer too large for Intercom (64 bits)"),
            ("properties.huge", "integer too large for Intercom (64 bits)"),
        ],
        id="track-integer-too-large",
    ),
    pytest.param(
        track(properties={"renewal_date": "2024-06-01", "trial_date": T, "bad_date": "soon"}),
        ALL,
        [event(metadata={"renewal_date": JUNE_1_2024, "trial_date": T_UNIX})],
        [("properties.bad_date", "not a date (ISO 8601 or Unix time)")],
        id="track-date-keys-become-unix-seconds",
    ),
    pytest.param(
        track(properties={f"k{i}": i for i in range(12)}),
        SyncConfig(send_all_properties=True, event_metadata=(("properties.k11", "k11"),)),
        [event(metadata={"k11": 11, **{f"k{i}": i for i in range(9)}})],
        [("properties.k9", LIMIT_REASON), ("properties.k10", LIMIT_REASON)],
        id="track-mapped-keys-first-then-alphabetical",
    ),
    pytest.param(
        track(),
        SyncConfig(missing_contact="skip"),
        [event(missing_contact="skip")],
        [],
        id="track-missing-contact-setting",
    ),
    # --- group -> company --------------------------------------------------------------------
    pytest.param(
        group(
            {
                "name": "Acme",
                "plan": "pro",
                "employees": "25",
                "monthly_spend": 99.9,
                "industry": "Retail",
                "website": "https://acme.example",
                "createdAt": "2024-01-01T00:00:00Z",
                "tier": "gold",
            }
        ),
        SyncConfig(),
        [
            CompanyUpsert(
                company_id="g1",
                fields={
                    "name": "Acme",
                    "plan": "pro",
                    "size": 25,
                    "monthly_spend": 99,
                    "industry": "Retail",
                    "website": "https://acme.example",
                    "remote_created_at": JAN_1_2024,
                },
                custom_attributes={},
            ),
            CompanyAttach(company_id="g1"),
        ],
        [],
        id="group-company-fields-and-attach",
    ),
    pytest.param(
        group({"size": 7}),
        SyncConfig(),
        [
            CompanyUpsert(company_id="g1", fields={"size": 7}, custom_attributes={}),
            CompanyAttach(company_id="g1"),
        ],
        [],
        id="group-size",
    ),
    pytest.param(
        group({"tier": "gold"}, context={"traits": {"region": "user's, not the company's"}}),
        SyncConfig(company_attributes=(("traits.tier", "tier"), ("traits.region", "region"))),
        [
            CompanyUpsert(company_id="g1", fields={}, custom_attributes={"tier": "gold"}),
            CompanyAttach(company_id="g1"),
        ],
        [],
        id="group-mapped-traits-only",
    ),
    pytest.param(
        group({"name": "Acme", "tier": "gold"}),
        ALL,
        [
            CompanyUpsert(
                company_id="g1", fields={"name": "Acme"}, custom_attributes={"tier": "gold"}
            ),
            CompanyAttach(company_id="g1"),
        ],
        [],
        id="group-send-all-traits",
    ),
    pytest.param(
        group({"monthly_spend": 2**31}),
        SyncConfig(),
        [
            CompanyUpsert(company_id="g1", fields={}, custom_attributes={}),
            CompanyAttach(company_id="g1"),
        ],
        [("traits.monthly_spend", "outside 0..2147483647 (Intercom)")],
        id="group-monthly-spend-limit",
    ),
    pytest.param(
        group({"employees": 10**300}),
        SyncConfig(),
        [
            CompanyUpsert(company_id="g1", fields={}, custom_attributes={}),
            CompanyAttach(company_id="g1"),
        ],
        [("traits.employees", "outside 0..2147483647 (Intercom)")],
        id="group-size-limit",
    ),
    pytest.param(
        group({"createdAt": "9999-12-31T23:59:59Z"}),
        SyncConfig(),
        [
            CompanyUpsert(company_id="g1", fields={}, custom_attributes={}),
            CompanyAttach(company_id="g1"),
        ],
        [("traits.createdAt", RANGE_REASON)],
        id="group-created-at-out-of-range",
    ),
    # --- page / screen -----------------------------------------------------------------------
    pytest.param(
        page("Pricing"),
        SyncConfig(page_handling="last_seen"),
        [ContactTouch(last_seen_at=T_UNIX)],
        [],
        id="page-updates-last-seen",
    ),
    pytest.param(
        page(
            "Pricing",
            {"url": "https://x.example/pricing", "path": "/pricing", "title": "Pricing", "x": 1},
        ),
        SyncConfig(page_handling="event"),
        [
            event(
                "Viewed Pricing",
                {"url": "https://x.example/pricing", "path": "/pricing", "title": "Pricing"},
            )
        ],
        [],
        id="page-as-event",
    ),
    pytest.param(
        page(context={"page": {"url": "https://x.example/", "path": "/", "title": "Home"}}),
        SyncConfig(page_handling="event"),
        [event("Viewed page", {"url": "https://x.example/", "path": "/", "title": "Home"})],
        [],
        id="page-without-name-as-event",
    ),
    pytest.param(
        page("Settings", type="screen"),
        SyncConfig(page_handling="event"),
        [event("Viewed Settings")],
        [],
        id="screen-as-event",
    ),
    pytest.param(
        page(type="screen"),
        SyncConfig(page_handling="event"),
        [event("Viewed screen")],
        [],
        id="screen-without-name-as-event",
    ),
    # --- alias, delete -----------------------------------------------------------------------
    pytest.param(
        {"type": "alias", "userId": "u1", "previousId": "anon-7", "timestamp": T},
        SyncConfig(),
        [ContactMerge(lead_key="anon-7")],
        [],
        id="alias-merges-the-lead",
    ),
    pytest.param(
        {"type": "delete", "userId": "u1", "timestamp": T},
        SyncConfig(),
        [ContactDelete()],
        [],
        id="delete-deletes-the-contact",
    ),
    # --- visitors as leads -------------------------------------------------------------------
    pytest.param(
        identify(anonymousId="anon-7"),
        SyncConfig(anonymous="lead"),
        [contact(), ContactMerge(lead_key="anon-7")],
        [],
        id="identify-links-the-visitor",
    ),
    pytest.param(
        identify(anonymousId="anon-7"),
        SyncConfig(anonymous="anonymous_id"),
        [contact()],
        [],
        id="identify-with-anonymous-id-when-visitors-are-not-leads",
    ),
    pytest.param(
        identify({"name": "Ada"}, userId=None, anonymousId="anon-7"),
        SyncConfig(anonymous="lead"),
        [("contact upsert", {"role": "lead", "name": "Ada"}, {})],
        [],
        id="identify-of-a-visitor-updates-the-lead",
    ),
    # --- tags --------------------------------------------------------------------------------
    pytest.param(
        identify({"vip": True, "churned": False}),
        SyncConfig(contact_tags=(("traits.vip", "VIP"), ("traits.churned", "Churned"))),
        [contact(), ContactTag(name="VIP"), ContactTag(name="Churned", tagged=False)],
        [],
        id="identify-boolean-trait-tags-and-untags",
    ),
    pytest.param(
        identify({"audiences": ["Trial", " power users ", "trial", "", 7]}),
        SyncConfig(contact_tags=(("traits.audiences", "audiences"),)),
        [contact(), ContactTagList(list_name="audiences", names=("power users", "Trial"))],
        [
            ("traits.audiences.3", "not a tag name"),
            ("traits.audiences.4", "not a tag name"),
        ],
        id="identify-list-of-tag-names",
    ),
    pytest.param(
        identify({"vip": "yes"}),
        SyncConfig(contact_tags=(("traits.vip", "VIP"),)),
        [contact()],
        [("traits.vip", "a tag mapping takes true / false or a list of tag names")],
        id="identify-tag-value-not-boolean-or-list",
    ),
    pytest.param(
        group({"enterprise": True, "segments": ["EMEA"]}),
        SyncConfig(company_tags=(("traits.enterprise", "Enterprise"), ("traits.segments", "s"))),
        [
            CompanyUpsert(company_id="g1", fields={}, custom_attributes={}),
            CompanyAttach(company_id="g1"),
            CompanyTag(company_id="g1", name="Enterprise"),
            CompanyTagList(company_id="g1", list_name="s", names=("EMEA",)),
        ],
        [],
        id="group-company-tags",
    ),
    pytest.param(
        {"type": "audience", "userId": "u1", "audience": "Trial", "member": False},
        SyncConfig(),
        [ContactTag(name="Trial", tagged=False)],
        [],
        id="audience-untags-a-member",
    ),
]


@pytest.mark.parametrize(("call", "config", "operations", "dropped"), MAPPING_CASES)
def test_a_call_becomes_these_intercom_operations(
    call: dict, config: SyncConfig, operations: list, dropped: list[tuple[str, str]]
) -> None:
    plan = plan_build(call=call, config=config)

    assert plan.skip_reason == ""
    assert operations_of(plan) == operations
    assert list(plan.dropped) == [Dropped(field, reason) for field, reason in dropped]


# (call, config, the reason shown in the admin)
SKIP_CASES = [
    pytest.param(
        identify(),
        SyncConfig(send_users=False),
        "the sync does not send users (identify)",
        id="identify-when-users-are-off",
    ),
    pytest.param(
        track(),
        SyncConfig(send_events=False),
        "the sync does not send events (track)",
        id="track-when-events-are-off",
    ),
    pytest.param(
        track(""), SyncConfig(), "track call without an event name", id="track-empty-name"
    ),
    pytest.param(
        track("x" * 256),
        SyncConfig(),
        "event name longer than 255 characters",
        id="track-name-over-255",
    ),
    pytest.param(
        track(timestamp="0001-01-01T00:00:00Z"),
        SyncConfig(),
        f"timestamp 0001-01-01T00:00:00Z is {RANGE_REASON}",
        id="track-timestamp-out-of-range",
    ),
    pytest.param(
        group(),
        SyncConfig(send_companies=False),
        "the sync does not send companies (group)",
        id="group-when-companies-are-off",
    ),
    pytest.param(
        group(groupId=None),
        SyncConfig(),
        "group call without a groupId",
        id="group-without-group-id",
    ),
    pytest.param(page("Home"), SyncConfig(), "the sync ignores page calls", id="page-ignored"),
    pytest.param(
        page("Home"),
        SyncConfig(page_handling="event", send_events=False),
        "the sync does not send events (page as an event)",
        id="page-as-event-when-events-are-off",
    ),
    pytest.param(
        page("Home"),
        SyncConfig(page_handling="last_seen", send_users=False),
        "the sync does not send users (last seen)",
        id="page-last-seen-when-users-are-off",
    ),
    pytest.param(
        {"type": "screenshot", "userId": "u1", "timestamp": T},
        SyncConfig(),
        "unknown call type 'screenshot'",
        id="unknown-call-type",
    ),
    pytest.param(
        page(type="screen"), SyncConfig(), "the sync ignores screen calls", id="screen-ignored"
    ),
    pytest.param(
        {"type": "alias", "userId": "u1", "timestamp": T},
        SyncConfig(),
        "alias call without a previousId",
        id="alias-without-previous-id",
    ),
    pytest.param(
        {"type": "alias", "userId": "u1", "previousId": "u1", "timestamp": T},
        SyncConfig(),
        "previousId is the same as the user's id",
        id="alias-to-itself",
    ),
    pytest.param(
        track(userId=None, anonymousId="a1"),
        SyncConfig(),
        "anonymous call (no userId) and the sync drops anonymous calls",
        id="anonymous-call-dropped",
    ),
]


@pytest.mark.parametrize(("call", "config", "reason"), SKIP_CASES)
def test_a_call_is_skipped_with_a_reason(call: dict, config: SyncConfig, reason: str) -> None:
    plan = plan_build(call=call, config=config)

    assert plan.operations == ()
    assert plan.skip_reason == reason


IDENTITY_CASES = [
    pytest.param(
        identify({"email": "ann@example.com"}),
        SyncConfig(),
        Identity(user_key="u1", external_id="u1", email="ann@example.com"),
        id="identity-user-id-and-email",
    ),
    pytest.param(
        track(context={"traits": {"email": "ann@example.com"}}),
        SyncConfig(),
        Identity(user_key="u1", external_id="u1", email="ann@example.com"),
        id="identity-email-from-context-traits",
    ),
    pytest.param(
        track(userId=42),
        SyncConfig(),
        Identity(user_key="42", external_id="42", email=None),
        id="identity-numeric-user-id",
    ),
    pytest.param(
        identify({"account_id": "acc-1"}),
        SyncConfig(external_id_path="traits.account_id"),
        Identity(user_key="acc-1", external_id="acc-1", email=None),
        id="identity-external-id-from-a-trait",
    ),
    pytest.param(
        track(context={"traits": {"account_id": "acc-1"}}),
        SyncConfig(external_id_path="traits.account_id"),
        Identity(user_key="acc-1", external_id="acc-1", email=None),
        id="identity-trait-path-on-a-track-call",
    ),
    pytest.param(
        track(),
        SyncConfig(external_id_path="traits.account_id"),
        "no external id at traits.account_id",
        id="identity-path-missing",
    ),
    pytest.param(
        track(userId=None, anonymousId="a1"),
        SyncConfig(anonymous="anonymous_id"),
        # RudderStack's "anonymousId as secondary user id": a contact of the sync's role
        Identity(user_key="a1", external_id="a1", email=None, role="user"),
        id="identity-anonymous-id",
    ),
    pytest.param(
        track(userId=None, anonymousId="a1"),
        SyncConfig(anonymous="lead", contact_role="user"),
        # a lead has no external_id: it is known by the Intercom id kept for its anonymousId
        Identity(user_key="a1", external_id=None, email=None, role="lead"),
        id="identity-visitor-as-lead",
    ),
    pytest.param(
        track(anonymousId="a1"),
        SyncConfig(anonymous="lead"),
        Identity(user_key="u1", external_id="u1", email=None, role="user"),
        id="identity-visitor-as-lead-with-user-id",
    ),
    pytest.param(
        identify({"email": " Ann@Example.com"}),
        SyncConfig(match_by="email"),
        Identity(user_key="ann@example.com", external_id=None, email="Ann@Example.com"),
        id="identity-match-by-email",
    ),
    pytest.param(
        identify(),
        SyncConfig(match_by="email"),
        "no email in traits.email or context.traits.email (the sync matches by email)",
        id="identity-match-by-email-without-email",
    ),
    pytest.param(
        group({"email": "billing@acme.example"}),
        SyncConfig(),
        Identity(user_key="u1", external_id="u1", email=None),
        id="identity-group-traits-are-the-company",
    ),
    pytest.param(
        identify(),
        SyncConfig(contact_role="lead"),
        Identity(user_key="u1", external_id="u1", email=None, role="lead"),
        id="identity-role-lead",
    ),
]


@pytest.mark.parametrize(("call", "config", "expected"), IDENTITY_CASES)
def test_the_identity_of_a_call(call: dict, config: SyncConfig, expected: Identity | str) -> None:
    assert identity_resolve(call=call, config=config) == expected


# (trait value, Intercom data_type, value sent)
TYPE_CASES = [
    pytest.param("pro", "string", "pro", id="type-string"),
    pytest.param(3, "integer", 3, id="type-integer"),
    pytest.param(4.5, "float", 4.5, id="type-float"),
    pytest.param(True, "boolean", True, id="type-boolean"),
    pytest.param("2024-06-01", "date", JUNE_1_2024, id="type-date"),
    pytest.param("2024", "string", "2024", id="type-year-is-a-string"),
]


@pytest.mark.parametrize(("value", "data_type", "sent"), TYPE_CASES)
def test_custom_attributes_carry_their_intercom_data_type(
    value: Any, data_type: str, sent: Any
) -> None:
    plan = plan_build(call=identify({"x": value}), config=ALL)

    assert plan.attribute_types == {("contact", "x"): data_type}
    assert plan.operations[0].custom_attributes == {"x": sent}


def test_company_attribute_types_are_reported_for_the_company_model() -> None:
    plan = plan_build(call=group({"seats": 4}), config=ALL)

    assert plan.attribute_types == {("company", "seats"): "integer"}


def test_a_null_attribute_has_no_type_so_it_never_creates_one() -> None:
    plan = plan_build(call=identify({"plan": None}), config=ALL)

    assert plan.attribute_types == {}


def test_the_unknown_attribute_policy_travels_with_the_plan() -> None:
    plan = plan_build(call=identify({"plan": "pro"}), config=SyncConfig(unknown_attributes="drop"))

    assert plan.unknown_attributes == "drop"


def fingerprint(traits: dict, config: SyncConfig = ALL) -> str:
    return plan_build(call=identify(traits), config=config).operations[0].fingerprint


MAPPED_PLAN = SyncConfig(contact_attributes=(("traits.plan", "plan"),))

# (traits before, traits after, config, whether the contact is sent again)
FINGERPRINT_CASES = [
    pytest.param(
        {"plan": "pro", "seats": 3},
        {"seats": 3, "plan": "pro"},
        ALL,
        False,
        id="fingerprint-same-data-any-order",
    ),
    pytest.param({"plan": "pro"}, {"plan": "free"}, ALL, True, id="fingerprint-changed-trait"),
    pytest.param(
        {"plan": "pro", "x": 1},
        {"plan": "pro", "x": 2},
        MAPPED_PLAN,
        False,
        id="fingerprint-unselected-trait",
    ),
    pytest.param({"name": "Ann"}, {"name": "Anne"}, ALL, True, id="fingerprint-standard-field"),
    pytest.param(
        {"company": {"id": "c1", "plan": "a"}},
        {"company": {"id": "c1", "plan": "b"}},
        SyncConfig(),
        True,
        id="fingerprint-company-change",
    ),
]


@pytest.mark.parametrize(("before", "after", "config", "sent_again"), FINGERPRINT_CASES)
def test_only_a_change_to_what_is_sent_changes_the_fingerprint(
    before: dict, after: dict, config: SyncConfig, sent_again: bool
) -> None:
    changed = fingerprint(before, config) != fingerprint(after, config)

    assert changed is sent_again


def test_the_event_name_is_kept_as_given() -> None:
    plan = plan_build(call=track(" Signed Up  "), config=SyncConfig())

    assert plan.operations[0].event_name == " Signed Up  "


def test_every_row_of_the_mapping_table_has_a_test_row() -> None:
    readme = (Path(__file__).parents[3] / "docs/mapping.md").read_text()
    # docs/mapping.md's mapping section: from its heading to the next section of the same level
    section = re.search(r"^## Segment → Intercom mapping$(.*?)^## ", readme, re.M | re.S)
    assert section, "docs/mapping.md has no '## Segment → Intercom mapping' section"
    table = section[1]
    last_cells = re.findall(r"\|([^|\n]*)\|[ \t]*$", table, re.MULTILINE)
    documented = {
        test_id
        for cell in last_cells
        for test_id in re.findall(r"`([a-z0-9-]+)`", cell)
        if not test_id.startswith("filter-")  # tests/integrations/test_filtering.py checks those
    }
    tested = {
        case.id
        for cases in (MAPPING_CASES, SKIP_CASES, IDENTITY_CASES, TYPE_CASES, FINGERPRINT_CASES)
        for case in cases
    }

    assert documented, "docs/mapping.md's mapping table lists no test ids"
    assert documented - tested == set()
