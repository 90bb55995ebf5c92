"""Segment call -> Intercom operations: pure functions, no database, no network, no settings.

``plan_build`` turns one normalised call (as stored at ingest) and a sync's ``SyncConfig`` into a
``Plan`` (see ``operations.py``), addressed to the contact ``identity.identity_resolve`` names.
Everything that will not reach Intercom is reported as a ``Dropped`` with its reason, never
silently lost. docs/mapping.md's "Segment → Intercom mapping" is the table of what
maps to what; every row of it is a row of tests/integrations/intercom/test_transforms.py.

Over our usual ~400 lines: the whole Segment -> Intercom mapping, one pure function per call
type and the value rules they share (attribute values, metadata, dates, companies). It reads as
one table, as docs/mapping.md does; splitting it would split that table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from integrations.intercom.identity import (
    MISSING,
    call_path_get,
    identifier_text,
    identity_resolve,
    path_parts,
    path_walk,
    visitor_linked,
)
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
    Operation,
    Plan,
    SyncConfig,
)

# Intercom's limits (DESIGN.md "Intercom contract" and the API description).
STRING_MAX = 255  # custom attribute values, metadata strings, event names
METADATA_KEYS_MAX = 10  # POST /events: "first keys win" on Intercom's side; we choose them
ATTRIBUTE_NAME_MAX = 190  # PropertyMapping.intercom_name's length, so mapped names always fit
MONTHLY_SPEND_MAX = 2**31 - 1  # POST /companies: "upper limit of 2**31-1"
# Company `size` has no documented limit; it is stored like monthly_spend, Intercom's other
# integer company field, so it gets that documented 2**31-1 (no head count comes near it).
COMPANY_SIZE_MAX = 2**31 - 1
# Intercom stores integer attributes and metadata in 64 bits (signed).
INTEGER_MIN, INTEGER_MAX = -(2**63), 2**63 - 1
INTEGER_REASON = "integer too large for Intercom (64 bits)"
# Intercom's timestamps are Unix seconds (`integer`, `format: date-time` in the API description;
# metadata `_date` keys likewise). Before 1970 is no Unix time it documents, and dates far ahead
# are placeholders ("9999-12-31" = never, Go's zero time = year 1), which Intercom refuses or
# shows as nonsense: only 1970-01-01..2100-01-01 is sent, wide enough for any real date.
TIMESTAMP_MIN = 0  # 1970-01-01T00:00:00Z
TIMESTAMP_MAX = 4102444800  # 2100-01-01T00:00:00Z
TIMESTAMP_RANGE_REASON = "outside 1970-01-01..2100-01-01 (Intercom's Unix seconds)"
NOT_A_DATE_REASON = "not a date (ISO 8601 or Unix time)"
DEFAULT_CURRENCY = "USD"  # the Segment spec's default for `revenue`

# Attribute names: letters, digits, '_', '-' and currency symbols other than '$' (kept in step
# with integrations.models.INTERCOM_NAME_RE, which this pure module cannot import).
_ATTRIBUTE_NAME_INVALID_RE = re.compile(r"[^\w\-¢£¤¥€₹₽₩]+")
# Metadata keys only forbid '.' and '$' (Intercom reads them as paths/operators).
_METADATA_KEY_INVALID_RE = re.compile(r"[.$]+")
# Only full dates or date-times become Intercom `date` attributes; "2024" or "12:00" stay strings.
_ISO_DATE_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?"
)

# Traits that feed Intercom's standard contact fields (or companies), so "send all properties"
# does not also send them as custom attributes.
CONTACT_RESERVED_TRAITS = frozenset(
    {
        "id",
        "userId",
        "user_id",
        "email",
        "name",
        "firstName",
        "first_name",
        "lastName",
        "last_name",
        "phone",
        "avatar",
        "createdAt",
        "created_at",
        "ownerId",
        "owner_id",
        "unsubscribedFromEmails",
        "unsubscribed_from_emails",
        "company",
        "companies",
    }
)
COMPANY_RESERVED_TRAITS = frozenset(
    {
        "id",
        "company_id",
        "name",
        "plan",
        "employees",
        "size",
        "monthly_spend",
        "monthlySpend",
        "industry",
        "website",
        "createdAt",
        "created_at",
        "remove",
    }
)


# --- values -----------------------------------------------------------------------------------


def unix_seconds(value: Any) -> int | None:
    """Unix seconds from an ISO 8601 string, a datetime, or a number (seconds, or milliseconds)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and (value != value or abs(value) == float("inf")):
        return None
    if isinstance(value, int | float):
        if abs(value) < 1e11:
            return int(value)
        # A JavaScript Date.now() is in milliseconds: anything past year 5138 in seconds is one.
        # Integer division for ints: a 301-digit one would overflow a float.
        if isinstance(value, int):
            return value // 1000 if value >= 0 else -(-value // 1000)
        return int(value / 1000)
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return int(moment.timestamp())
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            return unix_seconds(float(text))
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        return unix_seconds(moment)
    return None


def _timestamp(source: str, value: Any, dropped: list[Dropped]) -> int | None:
    """Unix seconds within Intercom's range, or None with the reason reported as dropped."""
    seconds = unix_seconds(value)
    if seconds is None:
        dropped.append(Dropped(source, NOT_A_DATE_REASON))
        return None
    if not TIMESTAMP_MIN <= seconds <= TIMESTAMP_MAX:
        dropped.append(Dropped(source, TIMESTAMP_RANGE_REASON))
        return None
    return seconds


def _integer_fits(value: Any) -> bool:
    """False for an integer Intercom cannot store (64 bits, signed); True for anything else."""
    if not isinstance(value, int) or isinstance(value, bool):
        return True
    return INTEGER_MIN <= value <= INTEGER_MAX


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    """(source path, value) pairs: nested objects become ``parent_child`` names."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _flatten(f"{prefix}.{key}", inner)
    else:
        yield prefix, value


def _attribute_name(name: str) -> str:
    return _ATTRIBUTE_NAME_INVALID_RE.sub("_", name).strip("_")


def _attribute_value(
    source: str, value: Any, dropped: list[Dropped]
) -> tuple[str | int | float | bool | None, str | None] | None:
    """(value, Intercom data_type) for a custom attribute, or None when it cannot be sent."""
    if value is None:
        # null clears an attribute that exists; it cannot tell which type a new one should have.
        return None, None
    if isinstance(value, bool):
        return value, "boolean"
    if isinstance(value, int):
        if not _integer_fits(value):
            dropped.append(Dropped(source, INTEGER_REASON))
            return None
        return value, "integer"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            dropped.append(Dropped(source, "not a finite number"))
            return None
        return value, "float"
    if isinstance(value, str):
        if _ISO_DATE_RE.fullmatch(value.strip()):
            seconds = _iso_date_seconds(value.strip())
            if seconds is not None:
                if not TIMESTAMP_MIN <= seconds <= TIMESTAMP_MAX:
                    dropped.append(Dropped(source, TIMESTAMP_RANGE_REASON))
                    return None
                # Intercom date attributes hold Unix seconds; an ISO string would stay a string.
                return seconds, "date"
        return _cut(source, value, dropped), "string"
    if isinstance(value, list | tuple):
        dropped.append(Dropped(source, "lists are not accepted by Intercom"))
        return None
    dropped.append(Dropped(source, f"unsupported value type {type(value).__name__}"))
    return None


def _iso_date_seconds(text: str) -> int | None:
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
        return unix_seconds(text)
    except ValueError:
        return None


def _cut(source: str, text: str, dropped: list[Dropped]) -> str:
    if len(text) > STRING_MAX:
        dropped.append(Dropped(source, f"cut to {STRING_MAX} characters (was {len(text)})"))
        return text[:STRING_MAX]
    return text


class _Attributes:
    """Custom attributes of one contact or company, collected with their types and drops."""

    def __init__(self, model: str, dropped: list[Dropped]) -> None:
        self.model = model
        self.values: dict[str, str | int | float | bool | None] = {}
        self.types: dict[tuple[str, str], str] = {}
        self.sources: dict[str, str] = {}
        self.dropped = dropped

    def add(self, source: str, name: str, value: Any) -> None:
        for path, inner in _flatten(source, value):
            suffix = path[len(source) :].replace(".", "_")
            self._add_one(path, _attribute_name(name + suffix), inner)

    def _add_one(self, source: str, name: str, value: Any) -> None:
        if not name:
            self.dropped.append(Dropped(source, "no valid character for an Intercom name"))
            return
        if len(name) > ATTRIBUTE_NAME_MAX:
            self.dropped.append(
                Dropped(source, f"name longer than {ATTRIBUTE_NAME_MAX} characters")
            )
            return
        if name in self.values:
            self.dropped.append(
                Dropped(source, f"{name!r} is already set from {self.sources[name]}")
            )
            return
        converted = _attribute_value(source, value, self.dropped)
        if converted is None:
            return
        self.values[name], data_type = converted
        self.sources[name] = source
        if data_type is not None:
            self.types[(self.model, name)] = data_type


def _mapped_or_all(
    attributes: _Attributes,
    *,
    view: Mapping[str, Any],
    mappings: tuple[tuple[str, str], ...],
    send_all_root: str | None,
    reserved: frozenset[str],
    user_traits_fallback: bool = True,
) -> None:
    """Mapped paths under their Intercom names; then, with "send all", every other key of
    ``view[send_all_root]`` that no mapping consumed and no standard field uses."""
    consumed: set[str] = set()
    for source_path, intercom_name in mappings:
        parts = path_parts(source_path)
        value = call_path_get(view, parts) if user_traits_fallback else path_walk(view, parts)
        if len(parts) == 2 and parts[0] == send_all_root:
            consumed.add(parts[1])
        if value is not MISSING:
            attributes.add(source_path, intercom_name, value)
    if send_all_root is None:
        return
    root = view.get(send_all_root)
    if isinstance(root, dict):
        for key, value in root.items():
            if key not in reserved and key not in consumed:
                attributes.add(f"{send_all_root}.{key}", str(key), value)


def _fingerprint(
    fields: Mapping[str, Any],
    custom_attributes: Mapping[str, Any],
    company_operations: Iterable[Operation],
) -> str:
    """sha256 of the canonical JSON of everything an identify sends."""
    companies = [[type(op).__name__, dataclasses.asdict(op)] for op in company_operations]
    canonical = json.dumps(
        {"fields": fields, "custom_attributes": custom_attributes, "companies": companies},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- identify ---------------------------------------------------------------------------------


def _contact_fields(
    call: Mapping[str, Any], identity: Identity, config: SyncConfig, dropped: list[Dropped]
) -> dict[str, Any]:
    traits = _traits(call)
    fields: dict[str, Any] = {"role": identity.role}
    if identity.external_id is not None and identity.role == "user":
        # Intercom sets no external_id on a lead: leads are known by their Intercom id.
        fields["external_id"] = identity.external_id
    if identity.email is not None:
        fields["email"] = identity.email

    name = _string_trait(traits, ("name",), dropped)
    if name is None:
        first = _string_trait(traits, ("firstName", "first_name"), dropped)
        last = _string_trait(traits, ("lastName", "last_name"), dropped)
        name = " ".join(part for part in (first, last) if part) or None
    if name is not None:
        fields["name"] = _cut("traits.name", name, dropped)
    for field, keys in (("phone", ("phone",)), ("avatar", ("avatar",))):
        value = _string_trait(traits, keys, dropped)
        if value is not None:
            fields[field] = value

    created = _first(traits, ("createdAt", "created_at"))
    if created is not MISSING:
        seconds = _timestamp("traits.createdAt", created, dropped)
        if seconds is not None:
            fields["signed_up_at"] = seconds
    if config.update_last_seen and call.get("timestamp") is not None:
        seen = _timestamp("timestamp", call.get("timestamp"), dropped)
        if seen is not None:
            fields["last_seen_at"] = seen

    owner = _first(traits, ("ownerId", "owner_id"))
    if owner is not MISSING:
        # Intercom-Version 2.16 types owner_id as a string.
        owner_text = identifier_text(owner)
        if owner_text is None:
            dropped.append(Dropped("traits.owner_id", "not an admin id"))
        else:
            fields["owner_id"] = owner_text

    unsubscribed = _first(traits, ("unsubscribedFromEmails", "unsubscribed_from_emails"))
    if unsubscribed is MISSING:
        unsubscribed = path_walk(call.get("context"), ("Intercom", "unsubscribedFromEmails"))
    if isinstance(unsubscribed, bool):
        fields["unsubscribed_from_emails"] = unsubscribed
    elif unsubscribed is not MISSING:
        dropped.append(Dropped("traits.unsubscribedFromEmails", "not true or false"))
    return fields


def _traits(call: Mapping[str, Any]) -> dict[str, Any]:
    context = call.get("context")
    context_traits = context.get("traits") if isinstance(context, dict) else None
    traits = call.get("traits")
    return {
        **(context_traits if isinstance(context_traits, dict) else {}),
        **(traits if isinstance(traits, dict) else {}),
    }


def _first(traits: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if key in traits and traits[key] is not None:
            return traits[key]
    return MISSING


def _string_trait(
    traits: Mapping[str, Any], keys: tuple[str, ...], dropped: list[Dropped]
) -> str | None:
    value = _first(traits, keys)
    if value is MISSING:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    dropped.append(Dropped(f"traits.{keys[0]}", "not text"))
    return None


def _identify(
    call: Mapping[str, Any], identity: Identity, config: SyncConfig
) -> tuple[list[Operation], list[Dropped], dict[tuple[str, str], str]]:
    dropped: list[Dropped] = []
    fields = _contact_fields(call, identity, config, dropped)
    view = {**call, "traits": _traits(call)}
    attributes = _Attributes("contact", dropped)
    _mapped_or_all(
        attributes,
        view=view,
        mappings=config.contact_attributes,
        send_all_root="traits" if config.send_all_properties else None,
        reserved=CONTACT_RESERVED_TRAITS,
    )
    person = call.get("userId") or call.get("anonymousId")
    if config.timeline_link_attribute and config.timeline_url and person:
        # The link back from Intercom: an agent opens this person's audit trail from the inbox.
        link = config.timeline_url + quote(str(person), safe="")
        attributes.add("the sync's timeline link", config.timeline_link_attribute, link)
    types = dict(attributes.types)

    company_operations: list[Operation] = []
    companies = _companies_of(view["traits"])
    if companies and not config.send_companies:
        dropped.append(Dropped("traits.company", "the sync does not send companies"))
    elif companies:
        for source, company in companies:
            operations, company_types = _company_from_trait(source, company, config, dropped)
            company_operations.extend(operations)
            types.update(company_types)
    tag_operations = _contact_tags(view, config, dropped)
    upsert = ContactUpsert(
        fields=fields,
        custom_attributes=attributes.values,
        # The companies and tags count too: an unchanged fingerprint means the whole identify
        # (contact, companies, tags) would send what Intercom already has.
        fingerprint=_fingerprint(fields, attributes.values, [*company_operations, *tag_operations]),
    )
    operations: list[Operation] = [upsert, *company_operations, *tag_operations]
    visitor = visitor_linked(call=dict(call), identity=identity, config=config)
    if visitor is not None:
        # Last: the user exists by then. Done once (the executor remembers the merge).
        operations.append(ContactMerge(lead_key=visitor))
    return operations, dropped, types


# --- tags -------------------------------------------------------------------------------------

TAG_VALUE_REASON = "a tag mapping takes true / false or a list of tag names"


def _tag_names(source: str, value: list | tuple, dropped: list[Dropped]) -> tuple[str, ...]:
    """The tag names of a list, trimmed, without repeats (Intercom's names ignore case)."""
    names: dict[str, str] = {}
    for index, item in enumerate(value):
        name = item.strip() if isinstance(item, str) else ""
        if not name:
            dropped.append(Dropped(f"{source}.{index}", "not a tag name"))
        elif len(name) > ATTRIBUTE_NAME_MAX:
            dropped.append(
                Dropped(f"{source}.{index}", f"tag name longer than {ATTRIBUTE_NAME_MAX}")
            )
        else:
            names.setdefault(name.casefold(), name)
    return tuple(sorted(names.values(), key=str.casefold))


def _tag_mapping_values(
    view: Mapping[str, Any],
    mappings: tuple[tuple[str, str], ...],
    dropped: list[Dropped],
    *,
    user_traits_fallback: bool = True,
) -> Iterator[tuple[str, bool | tuple[str, ...]]]:
    """(tag name or list label, True/False or the list's names) per mapping the call carries."""
    for source_path, name in mappings:
        parts = path_parts(source_path)
        value = call_path_get(view, parts) if user_traits_fallback else path_walk(view, parts)
        if value is MISSING or value is None:
            continue
        if isinstance(value, bool):
            yield name, value
        elif isinstance(value, list | tuple):
            yield name, _tag_names(source_path, value, dropped)
        else:
            dropped.append(Dropped(source_path, TAG_VALUE_REASON))


def _contact_tags(
    view: Mapping[str, Any], config: SyncConfig, dropped: list[Dropped]
) -> list[Operation]:
    operations: list[Operation] = []
    for name, value in _tag_mapping_values(view, config.contact_tags, dropped):
        if isinstance(value, bool):
            operations.append(ContactTag(name=name, tagged=value))
        else:
            operations.append(ContactTagList(list_name=name, names=value))
    return operations


def _company_tags(
    company_id: str, view: Mapping[str, Any], config: SyncConfig, dropped: list[Dropped]
) -> list[Operation]:
    operations: list[Operation] = []
    # A group call's context.traits are the user's, never the company's.
    for name, value in _tag_mapping_values(
        view, config.company_tags, dropped, user_traits_fallback=False
    ):
        if isinstance(value, bool):
            operations.append(CompanyTag(company_id=company_id, name=name, tagged=value))
        else:
            operations.append(CompanyTagList(company_id=company_id, list_name=name, names=value))
    return operations


def _audience(call: Mapping[str, Any], config: SyncConfig) -> tuple[list[Operation], str]:
    """An audience change from ``POST /api/v1/audiences/{name}/members``: tag or untag."""
    if not config.send_users:
        return [], "the sync does not send users (audience)"
    name = call.get("audience")
    if not isinstance(name, str) or not name.strip():
        return [], "audience call without an audience name"
    return [ContactTag(name=name.strip(), tagged=call.get("member") is not False)], ""


def _companies_of(traits: Mapping[str, Any]) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    if traits.get("company") is not None:
        found.append(("traits.company", traits["company"]))
    companies = traits.get("companies")
    if isinstance(companies, list):
        found.extend((f"traits.companies.{index}", item) for index, item in enumerate(companies))
    return found


def _company_from_trait(
    source: str, company: Any, config: SyncConfig, dropped: list[Dropped]
) -> tuple[list[Operation], dict[tuple[str, str], str]]:
    if not isinstance(company, dict):
        dropped.append(Dropped(source, "a company must be an object with an id"))
        return [], {}
    company_id = identifier_text(company.get("id", company.get("company_id")))
    if company_id is None:
        # Intercom upserts companies on company_id; a name alone would create duplicates.
        dropped.append(Dropped(source, "a company needs an id"))
        return [], {}
    if company.get("remove") is True:
        return [CompanyDetach(company_id=company_id)], {}
    # The company's keys play the role of a group call's traits (company_attributes paths).
    upsert, types = _company_upsert(company_id, {"traits": company}, config, dropped, source)
    return [upsert, CompanyAttach(company_id=company_id)], types


# --- group ------------------------------------------------------------------------------------


def _company_upsert(
    company_id: str,
    view: Mapping[str, Any],
    config: SyncConfig,
    dropped: list[Dropped],
    source: str = "traits",
) -> tuple[CompanyUpsert, dict[tuple[str, str], str]]:
    traits = view.get("traits") if isinstance(view.get("traits"), dict) else {}
    # Collected apart so that, for traits.company, they can be reported under that path.
    local: list[Dropped] = []
    fields: dict[str, Any] = {}
    for field in ("name", "plan", "industry", "website"):
        value = traits.get(field)
        if value is None:
            continue
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            fields[field] = _cut(f"traits.{field}", str(value), local)
        else:
            local.append(Dropped(f"traits.{field}", "not text"))

    size = _first(traits, ("employees", "size"))
    if size is not MISSING:
        number = _integer(size)
        if number is None:
            local.append(Dropped("traits.employees", "not a whole number"))
        elif not 0 <= number <= COMPANY_SIZE_MAX:
            local.append(Dropped("traits.employees", f"outside 0..{COMPANY_SIZE_MAX} (Intercom)"))
        else:
            fields["size"] = number
    spend = _first(traits, ("monthly_spend", "monthlySpend"))
    if spend is not MISSING:
        number = _integer(spend)
        if number is None:
            local.append(Dropped("traits.monthly_spend", "not a number"))
        elif not 0 <= number <= MONTHLY_SPEND_MAX:
            local.append(
                Dropped("traits.monthly_spend", f"outside 0..{MONTHLY_SPEND_MAX} (Intercom)")
            )
        else:
            fields["monthly_spend"] = number
    created = _first(traits, ("createdAt", "created_at"))
    if created is not MISSING:
        seconds = _timestamp("traits.createdAt", created, local)
        if seconds is not None:
            fields["remote_created_at"] = seconds

    attributes = _Attributes("company", local)
    _mapped_or_all(
        attributes,
        view=view,
        mappings=config.company_attributes,
        send_all_root="traits" if config.send_all_properties else None,
        reserved=COMPANY_RESERVED_TRAITS,
        # A group call's context.traits are the user's, never the company's.
        user_traits_fallback=False,
    )
    for item in local:
        if source != "traits" and item.field.startswith("traits."):
            # Report under the path the operator sent (traits.company.x, not traits.x).
            item = Dropped(source + item.field[len("traits") :], item.reason)
        dropped.append(item)
    upsert = CompanyUpsert(
        company_id=company_id, fields=fields, custom_attributes=attributes.values
    )
    return upsert, attributes.types


def _integer(value: Any) -> int | None:
    """Whole numbers; floats are truncated like Intercom does for monthly_spend."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return int(value)
    if isinstance(value, str):
        try:
            return int(Decimal(value.strip()))
        except (InvalidOperation, ValueError, OverflowError):  # "many", "NaN", "Infinity"
            return None
    return None


# --- track and page/screen --------------------------------------------------------------------


def _is_rich_link(value: Mapping[str, Any]) -> bool:
    return set(value) == {"url", "value"} and all(isinstance(v, str) for v in value.values())


def _is_monetary_amount(value: Mapping[str, Any]) -> bool:
    return (
        set(value) == {"amount", "currency"}
        and isinstance(value["amount"], int)
        and not isinstance(value["amount"], bool)
        and isinstance(value["currency"], str)
    )


def _price(properties: Mapping[str, Any], dropped: list[Dropped]) -> dict[str, Any] | None:
    """Segment's ``revenue`` (a decimal amount) + ``currency`` -> an Intercom monetary amount."""
    revenue = properties.get("revenue")
    if isinstance(revenue, bool) or not isinstance(revenue, int | float | str):
        dropped.append(Dropped("properties.revenue", "not a number"))
        return None
    try:
        cents = int((Decimal(str(revenue).strip()) * 100).to_integral_value())
    except (InvalidOperation, ValueError, OverflowError):  # "lots", "NaN", "Infinity"
        dropped.append(Dropped("properties.revenue", "not a number"))
        return None
    if not _integer_fits(cents):
        dropped.append(Dropped("properties.revenue", INTEGER_REASON))
        return None
    currency = properties.get("currency")
    if not isinstance(currency, str) or not currency.strip():
        currency = DEFAULT_CURRENCY
    return {"amount": cents, "currency": currency.strip().upper()}


def _natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Alphabetical, ignoring case, with runs of digits compared as numbers (k2 before k10)."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.split(r"(\d+)", name.casefold())
        if part
    ) + ((1, name),)  # names equal but for case: a fixed order all the same


class _Metadata:
    """Event metadata within Intercom's limits: first keys win, every loss reported."""

    def __init__(self, dropped: list[Dropped]) -> None:
        self.values: dict[str, Any] = {}
        self.dropped = dropped

    def add(self, source: str, key: str, value: Any) -> None:
        if isinstance(value, dict) and (_is_rich_link(value) or _is_monetary_amount(value)):
            self._add_one(source, key, dict(value))
            return
        for path, inner in _flatten(source, value):
            self._add_one(path, key + path[len(source) :].replace(".", "_"), inner)

    def _add_one(self, source: str, key: str, value: Any) -> None:
        key = _METADATA_KEY_INVALID_RE.sub("_", key).strip()
        if not key:
            self.dropped.append(Dropped(source, "no valid character for a metadata key"))
            return
        if value is None:
            self.dropped.append(Dropped(source, "null values are not sent"))
            return
        if isinstance(value, list | tuple):
            self.dropped.append(Dropped(source, "lists are not accepted by Intercom"))
            return
        if key in self.values:
            self.dropped.append(Dropped(source, f"metadata key {key!r} is already set"))
            return
        if len(self.values) >= METADATA_KEYS_MAX:
            self.dropped.append(
                Dropped(source, f"Intercom keeps at most {METADATA_KEYS_MAX} metadata keys")
            )
            return
        if key.endswith("_date") and not isinstance(value, dict):
            # Intercom reads a `_date` key as Unix seconds (POST /events, "Date" metadata):
            # ISO text there would be shown as text, or refused.
            value = _timestamp(source, value, self.dropped)
            if value is None:
                return
        elif isinstance(value, str):
            value = _cut(source, value, self.dropped)
        elif isinstance(value, float) and (value != value or abs(value) == float("inf")):
            self.dropped.append(Dropped(source, "not a finite number"))
            return
        elif not _integer_fits(value.get("amount", 0) if isinstance(value, dict) else value):
            # An integer, or a monetary amount's cents, beyond what Intercom stores.
            self.dropped.append(Dropped(source, INTEGER_REASON))
            return
        elif not isinstance(value, int | float | bool | dict):
            self.dropped.append(Dropped(source, f"unsupported value type {type(value).__name__}"))
            return
        self.values[key] = value


def _event_name(name: Any) -> str | None:
    if not isinstance(name, str) or not name.strip():
        return None
    return name


def _track(
    call: Mapping[str, Any], config: SyncConfig
) -> tuple[list[Operation], list[Dropped], str]:
    name = _event_name(call.get("event"))
    if name is None:
        return [], [], "track call without an event name"
    if len(name) > STRING_MAX:
        return [], [], f"event name longer than {STRING_MAX} characters"
    dropped: list[Dropped] = []
    created_at, skip_reason = _event_time(call, dropped)
    if created_at is None:
        return [], dropped, skip_reason
    metadata = _Metadata(dropped)
    properties = call.get("properties") if isinstance(call.get("properties"), dict) else {}
    consumed: set[str] = set()
    for source_path, key in config.event_metadata:
        parts = path_parts(source_path)
        if len(parts) == 2 and parts[0] == "properties":
            consumed.add(parts[1])
        if source_path == "properties.revenue" and "revenue" in properties:
            price = _price(properties, dropped)
            if price is not None:
                metadata.add(source_path, key, price)
            continue
        value = call_path_get(call, parts)
        if value is not MISSING:
            metadata.add(source_path, key, value)
    if config.send_all_properties:
        if "revenue" in properties and "revenue" not in consumed:
            consumed.add("currency")  # it rides on revenue's `price`
        # Alphabetical, not the call's order: stored as JSONB, a call's keys come back shortest
        # first, so "first 10 as sent" would not be the order the app sent them in anyway.
        for key in sorted((k for k in properties if k not in consumed), key=_natural_key):
            if key == "revenue":
                price = _price(properties, dropped)
                if price is not None:
                    metadata.add("properties.revenue", "price", price)
                continue
            metadata.add(f"properties.{key}", str(key), properties[key])
    event = EventCreate(
        event_name=name,
        created_at=created_at,
        metadata=metadata.values,
        missing_contact=config.missing_contact,
    )
    return [event], dropped, ""


def _event_time(call: Mapping[str, Any], dropped: list[Dropped]) -> tuple[int | None, str]:
    """The call's timestamp in Unix seconds, or None and why the call cannot be sent.

    An event without its time cannot be sent, and sending it at another time would misplace it
    on the contact's timeline (and defeat Intercom's de-duplication on the time): skipped.
    """
    timestamp = call.get("timestamp")
    if unix_seconds(timestamp) is None:
        return None, "no valid timestamp"
    seconds = _timestamp("timestamp", timestamp, dropped)
    if seconds is None:
        return None, f"timestamp {timestamp} is {TIMESTAMP_RANGE_REASON}"
    return seconds, ""


def _page(
    call: Mapping[str, Any], config: SyncConfig
) -> tuple[list[Operation], list[Dropped], str]:
    kind = call.get("type")
    if config.page_handling == "ignore":
        return [], [], f"the sync ignores {kind} calls"
    dropped: list[Dropped] = []
    seconds, skip_reason = _event_time(call, dropped)
    if seconds is None:
        return [], dropped, skip_reason
    if config.page_handling == "last_seen":
        if not config.send_users:
            return [], [], "the sync does not send users (last seen)"
        return [ContactTouch(last_seen_at=seconds)], [], ""
    if not config.send_events:
        return [], [], f"the sync does not send events ({kind} as an event)"
    name = call.get("name")
    name = name.strip() if isinstance(name, str) else ""
    event_name = f"Viewed {name}" if name else f"Viewed {kind}"
    if len(event_name) > STRING_MAX:
        return [], [], f"event name longer than {STRING_MAX} characters"
    metadata = _Metadata(dropped)
    properties = call.get("properties") if isinstance(call.get("properties"), dict) else {}
    page = path_walk(call.get("context"), ("page",))
    page = page if isinstance(page, dict) else {}
    for key in ("url", "path", "title"):
        if isinstance(properties.get(key), str):
            metadata.add(f"properties.{key}", key, properties[key])
        elif isinstance(page.get(key), str):
            metadata.add(f"context.page.{key}", key, page[key])
    event = EventCreate(
        event_name=event_name,
        created_at=seconds,
        metadata=metadata.values,
        missing_contact=config.missing_contact,
    )
    return [event], dropped, ""


# --- the plan ---------------------------------------------------------------------------------


def plan_build(*, call: dict, config: SyncConfig) -> Plan:
    """The Intercom operations one call becomes under one sync's configuration."""
    identity = identity_resolve(call=call, config=config)
    if isinstance(identity, str):
        return Plan(identity=None, skip_reason=identity)

    kind = call.get("type")
    operations: list[Operation] = []
    dropped: list[Dropped] = []
    types: dict[tuple[str, str], str] = {}
    skip_reason = ""
    if kind == "identify":
        if not config.send_users:
            skip_reason = "the sync does not send users (identify)"
        else:
            operations, dropped, types = _identify(call, identity, config)
    elif kind == "track":
        if not config.send_events:
            skip_reason = "the sync does not send events (track)"
        else:
            operations, dropped, skip_reason = _track(call, config)
    elif kind == "group":
        group_id = identifier_text(call.get("groupId"))
        if not config.send_companies:
            skip_reason = "the sync does not send companies (group)"
        elif group_id is None:
            skip_reason = "group call without a groupId"
        else:
            upsert, types = _company_upsert(group_id, call, config, dropped)
            operations = [
                upsert,
                CompanyAttach(company_id=group_id),
                *_company_tags(group_id, call, config, dropped),
            ]
    elif kind in ("page", "screen"):
        operations, dropped, skip_reason = _page(call, config)
    elif kind == "alias":
        previous = identifier_text(call.get("previousId"))
        if not config.send_users:
            skip_reason = "the sync does not send users (alias)"
        elif previous is None:
            skip_reason = "alias call without a previousId"
        elif previous == identity.user_key:
            skip_reason = "previousId is the same as the user's id"
        else:
            operations = [ContactMerge(lead_key=previous)]
    elif kind == "delete":
        operations = [ContactDelete()]
    elif kind == "audience":
        operations, skip_reason = _audience(call, config)
    else:
        skip_reason = f"unknown call type {kind!r}"

    return Plan(
        identity=identity,
        operations=tuple(operations),
        dropped=tuple(dropped),
        skip_reason=skip_reason if not operations else "",
        attribute_types=types,
        unknown_attributes=config.unknown_attributes,
        unarchive_contacts=config.unarchive_contacts,
    )
