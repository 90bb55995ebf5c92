"""Which calls a sync sends: EventFilter semantics and Segment opt-outs (pure: no database)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from integrations.filtering import FilterRule, filters_evaluate

BLOCK_INTERCOM = FilterRule("exclude", event_name="[Intercom] *")


def track(event: str = "Order Completed", **call: object) -> dict:
    return {"type": "track", "userId": "u1", "event": event, "properties": {}, **call}


def identify(**call: object) -> dict:
    return {"type": "identify", "userId": "u1", "traits": {}, **call}


def where(field: str, operator: str, value: str = "", action: str = "include") -> FilterRule:
    return FilterRule(action, field=field, operator=operator, value=value)


# (call, rules, None when sent or the reason it is not)
RULE_CASES = [
    pytest.param(
        track(integrations={"Intercom": False}),
        [],
        "integrations opt-out",
        id="filter-intercom-opt-out",
    ),
    pytest.param(
        track(integrations={"All": False}), [], "integrations opt-out", id="filter-all-opt-out"
    ),
    pytest.param(
        track(integrations={"All": False, "Intercom": True}),
        [],
        None,
        id="filter-all-opt-out-but-intercom",
    ),
    pytest.param(
        track(integrations={"All": False, "Intercom": {"appId": "x"}}),
        [],
        None,
        id="filter-all-opt-out-but-intercom-options",
    ),
    pytest.param(
        track(integrations={"Mixpanel": False}), [], None, id="filter-other-opt-out-ignored"
    ),
    pytest.param(
        track("[Intercom] Conversation closed"),
        [BLOCK_INTERCOM],
        "excluded by: Exclude event '[Intercom] *'",
        id="filter-exclude-intercom-events",
    ),
    pytest.param(track("Intercom stuff"), [BLOCK_INTERCOM], None, id="filter-pattern-is-anchored"),
    pytest.param(
        track("Order Completed"),
        [FilterRule("include", event_name="Order *")],
        None,
        id="filter-include-wildcard-matches",
    ),
    pytest.param(
        track("Signed Up"),
        [FilterRule("include", event_name="Order *")],
        "matches no include filter",
        id="filter-include-misses",
    ),
    pytest.param(
        track("order completed"),
        [FilterRule("include", event_name="Order Completed")],
        "matches no include filter",
        id="filter-names-are-case-sensitive",
    ),
    pytest.param(
        track("Order (1)"),
        [FilterRule("include", event_name="Order (1)")],
        None,
        id="filter-name-characters-are-literal",
    ),
    pytest.param(
        identify(),
        [BLOCK_INTERCOM, FilterRule("include", event_name="Order *")],
        None,
        id="filter-name-pattern-ignores-identify",
    ),
    pytest.param(
        identify(traits={"plan": "free"}),
        [where("traits.plan", "eq", "pro")],
        "matches no include filter",
        id="filter-condition-judges-identify",
    ),
    pytest.param(
        {"type": "page", "userId": "u1", "name": "Pricing"},
        [FilterRule("exclude", event_name="Pric*")],
        "excluded by: Exclude event 'Pric*'",
        id="filter-page-name-pattern",
    ),
    pytest.param(
        track(properties={"plan": "pro"}),
        [
            FilterRule(
                "include", event_name="Order *", field="properties.plan", operator="eq", value="pro"
            )
        ],
        None,
        id="filter-name-and-condition-both-hold",
    ),
    pytest.param(
        track(properties={"plan": "free"}),
        [
            FilterRule(
                "include", event_name="Order *", field="properties.plan", operator="eq", value="pro"
            )
        ],
        "matches no include filter",
        id="filter-name-and-condition-one-fails",
    ),
    pytest.param(
        track(properties={"test": True}),
        [FilterRule("include", event_name="*"), where("properties.test", "eq", "true", "exclude")],
        "excluded by: Exclude where properties.test = true",
        id="filter-exclude-wins-over-include",
    ),
    pytest.param(
        {"type": "delete", "userId": "u1"},
        [where("userId", "eq", "nobody")],
        None,
        id="filter-delete-always-sent",
    ),
]


@pytest.mark.parametrize(("call", "rules", "reason"), RULE_CASES)
def test_a_call_is_sent_or_filtered(call: dict, rules: list[FilterRule], reason: str | None):
    assert filters_evaluate(call=call, rules=rules) == reason


PROPERTIES = {
    "plan": "pro",
    "total": 42,
    "ratio": 0.5,
    "tags": ["a", "b"],
    "beta": True,
    "empty": None,
    "shipping": {"address": {"country": "FR"}},
}

# (field, operator, value, holds for a call with PROPERTIES)
CONDITION_CASES = [
    pytest.param("properties.plan", "exists", "", True, id="filter-exists"),
    pytest.param("properties.nope", "exists", "", False, id="filter-exists-missing"),
    pytest.param("properties.empty", "exists", "", False, id="filter-exists-null"),
    pytest.param("properties.nope", "not_exists", "", True, id="filter-not-exists"),
    pytest.param("properties.plan", "eq", "pro", True, id="filter-condition-eq"),
    pytest.param("properties.total", "eq", "42.0", True, id="filter-condition-eq-number"),
    pytest.param("properties.beta", "eq", "true", True, id="filter-condition-eq-boolean"),
    pytest.param("properties.plan", "ne", "free", True, id="filter-ne"),
    pytest.param("properties.plan", "ne", "pro", False, id="filter-ne-equal"),
    pytest.param("properties.nope", "ne", "free", True, id="filter-ne-missing"),
    pytest.param("properties.plan", "contains", "r", True, id="filter-contains-text"),
    pytest.param("properties.tags", "contains", "b", True, id="filter-contains-list-item"),
    pytest.param("properties.tags", "contains", "c", False, id="filter-contains-list-miss"),
    pytest.param("properties.plan", "in", "free, pro", True, id="filter-in"),
    pytest.param("properties.plan", "in", "free,team", False, id="filter-in-miss"),
    pytest.param("properties.total", "gt", "41.5", True, id="filter-gt"),
    pytest.param("properties.ratio", "lt", "1", True, id="filter-lt"),
    pytest.param("properties.plan", "gt", "1", False, id="filter-gt-not-a-number"),
    pytest.param("properties.nope", "lt", "1", False, id="filter-lt-missing"),
    pytest.param("properties.shipping.address.country", "eq", "FR", True, id="filter-nested"),
    pytest.param("userId", "eq", "u1", True, id="filter-user-id"),
    pytest.param("anonymousId", "exists", "", False, id="filter-anonymous-id"),
    pytest.param("event", "contains", "Order", True, id="filter-event-field"),
    pytest.param("context.app.version", "eq", "2.0", True, id="filter-context"),
    pytest.param("traits.plan", "eq", "team", True, id="filter-traits-from-context"),
]


@pytest.mark.parametrize(("field", "operator", "value", "holds"), CONDITION_CASES)
def test_a_condition_holds_or_not(field: str, operator: str, value: str, holds: bool) -> None:
    call = track(
        properties=PROPERTIES, context={"app": {"version": "2.0"}, "traits": {"plan": "team"}}
    )
    rules = [where(field, operator, value, action="exclude")]

    assert (filters_evaluate(call=call, rules=rules) is not None) is holds


def test_every_filter_row_of_the_mapping_table_has_a_test_row() -> None:
    table = (Path(__file__).parents[2] / "docs/mapping.md").read_text()
    documented = set(re.findall(r"`(filter-[a-z0-9-]+)`", table))
    tested = {case.id for cases in (RULE_CASES, CONDITION_CASES) for case in cases}

    assert documented
    assert documented - tested == set()
