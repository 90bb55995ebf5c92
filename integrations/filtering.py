"""Which calls a sync sends: its EventFilter rows as plain data, and the Segment opt-outs.

Runs at ingest for every call and every matching sync, so a ``FilterRule`` compiles its name
pattern, field path and value once, and ``filters_evaluate`` only reads the call. The semantics
are those of ``integrations.models.EventFilter`` (its docstring); this module is pure so the
selectors can cache the rules and tests need no database.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from integrations.intercom.identity import MISSING, call_path_get

INTEGRATION_NAME = "Intercom"  # the key of Segment's per-call `integrations` object

# Calls whose event-name patterns apply, and where their name is (EventFilter docstring).
_NAME_KEYS = {"track": "event", "page": "name", "screen": "name"}

OPERATOR_LABELS = {
    "exists": "exists",
    "not_exists": "does not exist",
    "eq": "=",
    "ne": "!=",
    "contains": "contains",
    "in": "in",
    "gt": ">",
    "lt": "<",
}


def _name_pattern(pattern: str) -> re.Pattern[str] | None:
    """``*`` matches anything (including nothing); every other character is literal."""
    if not pattern:
        return None
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _as_text(value: Any) -> str:
    """How a call's value compares with the text an operator typed."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class FilterRule:
    """One EventFilter row, compiled. ``action`` is "include" or "exclude"."""

    action: str
    event_name: str = ""
    field: str = ""
    operator: str = ""
    value: str = ""
    # `field` is a column name here, so the dataclasses helper is spelled out.
    _pattern: re.Pattern[str] | None = dataclasses.field(init=False, repr=False, compare=False)
    _parts: tuple[str, ...] = dataclasses.field(init=False, repr=False, compare=False)
    _choices: frozenset[str] = dataclasses.field(init=False, repr=False, compare=False)
    _number: float | None = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen (hashable, shareable between threads), so the compiled parts are set once here.
        object.__setattr__(self, "_pattern", _name_pattern(self.event_name))
        object.__setattr__(self, "_parts", tuple(self.field.split(".")) if self.field else ())
        choices = frozenset(part.strip() for part in self.value.split(",")) - {""}
        object.__setattr__(self, "_choices", choices)
        object.__setattr__(self, "_number", _number(self.value))

    @property
    def description(self) -> str:
        """Reads like EventFilter.__str__, as the operator saw it in the admin."""
        parts = [self.action.capitalize()]
        if self.event_name:
            parts.append(f"event {self.event_name!r}")
        if self.field:
            label = OPERATOR_LABELS.get(self.operator, self.operator)
            parts.append(f"where {self.field} {label} {self.value}".strip())
        return " ".join(parts)

    def matches(self, call: dict, name: str | None) -> bool | None:
        """True or False; None when the rule does not concern the call (a name pattern and a
        call without a name: identify, group, alias)."""
        if self._pattern is not None:
            if name is None:
                return None
            if not self._pattern.fullmatch(name):
                return False
        if not self._parts:
            return True
        return self._holds(call_path_get(call, self._parts))

    def _holds(self, found: Any) -> bool:
        operator = self.operator
        present = found is not MISSING and found is not None
        if operator == "exists":
            return present
        if operator == "not_exists":
            return not present
        if operator == "ne":
            # "plan != free" is true of a call without a plan: it is not free.
            return not present or not self._equals(found)
        if not present:
            return False
        if operator == "eq":
            return self._equals(found)
        if operator == "contains":
            if isinstance(found, list):
                return any(_as_text(item) == self.value for item in found)
            return isinstance(found, str) and self.value in found
        if operator == "in":
            if isinstance(found, list):
                return any(_as_text(item) in self._choices for item in found)
            return _as_text(found) in self._choices
        if operator in ("gt", "lt"):
            number = _number(found)
            if number is None or self._number is None:
                return False
            return number > self._number if operator == "gt" else number < self._number
        return False

    def _equals(self, found: Any) -> bool:
        if isinstance(found, int | float) and not isinstance(found, bool):
            return self._number is not None and float(found) == self._number
        return _as_text(found) == self.value


def _opted_out(integrations: Any) -> bool:
    """Segment's per-call opt-outs: {"Intercom": false}, or {"All": false} without
    {"Intercom": true} (an options object for Intercom counts as true)."""
    if not isinstance(integrations, dict) or not integrations:
        return False
    own = integrations.get(INTEGRATION_NAME)
    if own is not None:
        return own is False
    return integrations.get("All") is False


def filters_evaluate(*, call: dict, rules: Sequence[FilterRule]) -> str | None:
    """None when the sync sends the call; otherwise why not (stored as the skip reason)."""
    if _opted_out(call.get("integrations")):
        return "integrations opt-out"
    kind = call.get("type")
    if kind == "delete":
        # A deletion request (GDPR) reaches every workspace, whatever events a sync selects.
        return None
    name_key = _NAME_KEYS.get(kind)
    name = None
    if name_key is not None:
        raw = call.get(name_key)
        name = raw if isinstance(raw, str) else ""

    has_include = included = False
    for rule in rules:
        matched = rule.matches(call, name)
        if matched is None:
            continue
        if rule.action == "exclude":
            if matched:
                return f"excluded by: {rule.description}"
        else:
            has_include = True
            included = included or matched  # keep going: a later exclude still wins
    if has_include and not included:
        return "matches no include filter"
    return None
