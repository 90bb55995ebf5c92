"""The sandbox's in-memory Intercom workspace: contacts, companies, events, attributes, tags.

Each public method is one Intercom endpoint and returns ``(status, body, headers)`` with the
shapes and error envelopes the OpenAPI description documents, plus the quirks it does not
(SOURCE.md): 409 ``conflict`` naming the existing contact, a search index that lags, 410
``contact_merged`` with a ``Link`` header, the 120 event names, unknown custom attributes -> 400.
The HTTP server holds one lock around every call, so nothing here is thread-aware.

Over our usual ~400 lines: it is a fake Intercom workspace, one method per endpoint the
project calls, with Intercom's documented shapes and undocumented quirks in one place.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

Answer = tuple[int, Any, dict[str, str]]

EVENT_NAME_LIMIT = 120
ATTRIBUTE_LIMIT = 250
# Intercom's standard attributes, listed by GET /data_attributes alongside the custom ones.
STANDARD_ATTRIBUTES = {
    "contact": {
        "name": "string",
        "email": "string",
        "phone": "string",
        "external_id": "string",
        "signed_up_at": "date",
        "last_seen_at": "date",
        "unsubscribed_from_emails": "boolean",
        "owner_id": "integer",
    },
    "company": {
        "name": "string",
        "company_id": "string",
        "plan": "string",
        "size": "integer",
        "website": "string",
        "industry": "string",
        "monthly_spend": "float",
        "remote_created_at": "date",
    },
}
CONTACT_FIELDS = (
    "role",
    "external_id",
    "email",
    "phone",
    "name",
    "avatar",
    "signed_up_at",
    "last_seen_at",
    "owner_id",
    "unsubscribed_from_emails",
)
COMPANY_FIELDS = (
    "name",
    "plan",
    "size",
    "website",
    "industry",
    "monthly_spend",
    "remote_created_at",
)


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Answer:
    """Intercom's error envelope."""
    body = {
        "type": "error.list",
        "request_id": str(uuid.uuid4()),
        "errors": [{"code": code, "message": message}],
    }
    return status, body, headers or {}


def _new_id() -> str:
    return uuid.uuid4().hex[:24]


def _not_found(kind: str = "User") -> Answer:
    return error(404, "not_found", f"{kind} Not Found")


class Workspace:
    """One Intercom workspace's data. ``search_lag_seconds`` delays new contacts in search."""

    def __init__(self, *, search_lag_seconds: float = 0.0, app_id: str = "sandbox") -> None:
        self.search_lag_seconds = search_lag_seconds
        self.app_id = app_id
        self.contacts: dict[str, dict[str, Any]] = {}  # id -> contact (insertion order)
        # Indexes, so that a benchmark's thousands of contacts cost nothing per request.
        self.by_external_id: dict[str, str] = {}
        self.by_email: dict[tuple[str, str], str] = {}  # (role, email) -> id
        self.by_company_id: dict[str, str] = {}
        self.merged_external_ids: dict[str, str] = {}  # external_id -> merged-away id
        self.merged_into: dict[str, str] = {}  # merged-away id -> surviving id
        self.indexed_at: dict[str, float] = {}  # id -> when search sees it
        self.archived: set[str] = set()
        self.companies: dict[str, dict[str, Any]] = {}  # Intercom id -> company
        self.company_members: dict[str, list[str]] = {}  # contact id -> company ids
        self.events: list[dict[str, Any]] = []
        self.event_keys: set[tuple[str, str, int]] = set()
        self.event_names: set[str] = set()
        self.attributes: dict[str, dict[str, str]] = {"contact": {}, "company": {}}
        self.tags: dict[str, dict[str, Any]] = {}
        self.contact_tags: dict[str, list[str]] = {}  # contact id -> tag ids
        self.company_tags: dict[str, list[str]] = {}  # Intercom company id -> tag ids
        self.event_name_limit = EVENT_NAME_LIMIT

    # --- views ----------------------------------------------------------------------------

    def contact_view(self, contact: dict[str, Any]) -> dict[str, Any]:
        companies = [
            {"type": "company", "id": cid, "url": f"/companies/{cid}"}
            for cid in self.company_members.get(contact["id"], [])
        ]
        return {
            **contact,
            "companies": {
                "type": "list",
                "data": companies,
                "url": f"/contacts/{contact['id']}/companies",
                "total_count": len(companies),
                "has_more": False,
            },
            "tags": {
                "type": "list",
                "data": [
                    {"type": "tag", "id": tag_id, "name": self.tags[tag_id]["name"]}
                    for tag_id in self.contact_tags.get(contact["id"], [])
                    if tag_id in self.tags
                ],
                "url": f"/contacts/{contact['id']}/tags",
                "total_count": len(self.contact_tags.get(contact["id"], [])),
                "has_more": False,
            },
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything stored, for GET /_sandbox/state."""
        contacts = [
            {**self.contact_view(c), "archived": c["id"] in self.archived}
            for c in self.contacts.values()
        ]
        return {
            "contacts": contacts,
            "merged": dict(self.merged_into),
            "companies": list(self.companies.values()),
            "company_members": {k: list(v) for k, v in self.company_members.items()},
            "events": list(self.events),
            "data_attributes": {m: dict(v) for m, v in self.attributes.items()},
            "tags": list(self.tags.values()),
            "contact_tags": {k: list(v) for k, v in self.contact_tags.items() if v},
            "company_tags": {k: list(v) for k, v in self.company_tags.items() if v},
            "counts": {
                "contacts": len(self.contacts),
                "companies": len(self.companies),
                "events": len(self.events),
                "event_names": len(self.event_names),
            },
        }

    # --- admins ---------------------------------------------------------------------------

    def me(self) -> Answer:
        return (
            200,
            {
                "type": "admin",
                "id": "991267460",
                "email": "operator@sandbox.example",
                "name": "Sandbox Operator",
                "email_verified": True,
                "app": {
                    "type": "app",
                    "id_code": self.app_id,
                    "name": "Switchboard Sandbox",
                    "region": "US",
                    "timezone": "UTC",
                    "created_at": 1700000000,
                    "identity_verification": False,
                },
                "avatar": {"type": "avatar", "image_url": None},
                "has_inbox_seat": True,
            },
            {},
        )

    # --- contacts -------------------------------------------------------------------------

    def _live(self, contact_id: str) -> dict[str, Any] | None:
        contact = self.contacts.get(contact_id)
        if contact is None or contact_id in self.archived:
            return None
        return contact

    def _merged(self, contact_id: str) -> Answer | None:
        """410 for a merged-away id, naming the end of the merge chain."""
        if contact_id not in self.merged_into:
            return None
        target = contact_id
        while target in self.merged_into:
            target = self.merged_into[target]
        return error(
            410,
            "contact_merged",
            "This contact has been merged. See the 'Link' header for the canonical contact.",
            {"Link": f'</contacts/{target}>; rel="canonical"'},
        )

    def _conflict(self, fields: dict[str, Any], role: str, exclude: str = "") -> str | None:
        external_id = fields.get("external_id")
        email = fields.get("email")
        for found in (
            self.by_external_id.get(external_id) if external_id else None,
            self.by_email.get((role, email)) if email else None,
        ):
            if found and found != exclude:
                return found
        return None

    def _index(self, contact: dict[str, Any], *, add: bool) -> None:
        keys = []
        if contact.get("external_id"):
            keys.append((self.by_external_id, contact["external_id"]))
        if contact.get("email"):
            keys.append((self.by_email, (contact["role"], contact["email"])))
        for index, key in keys:
            if add:
                index[key] = contact["id"]
            elif index.get(key) == contact["id"]:
                del index[key]

    def _unknown_attribute(self, model: str, attributes: Any) -> Answer | None:
        if attributes is None:
            return None
        if not isinstance(attributes, dict):
            return error(400, "parameter_invalid", "custom_attributes must be an object")
        for name in attributes:
            if name not in self.attributes[model]:
                return error(400, "parameter_invalid", f"Custom attribute '{name}' does not exist")
        return None

    def _apply_contact_fields(self, contact: dict[str, Any], body: dict[str, Any]) -> None:
        self._index(contact, add=False)
        for name in CONTACT_FIELDS:
            if name in body:
                contact[name] = body[name]
        if body.get("custom_attributes"):
            contact["custom_attributes"].update(body["custom_attributes"])
        contact["updated_at"] = int(time.time())
        self._index(contact, add=True)

    def contact_create(self, body: dict[str, Any]) -> Answer:
        role = body.get("role") or "user"
        if role not in ("user", "lead"):
            return error(400, "parameter_invalid", "role must be user or lead")
        if role == "lead" and body.get("external_id"):
            # As Intercom: an external_id is a user's; a lead is known by its Intercom id.
            return error(400, "parameter_invalid", "External IDs cannot be set for leads")
        if not (body.get("email") or body.get("external_id") or body.get("role")):
            return error(
                400, "parameter_not_found", "Must specify one of email, external_id or role"
            )
        problem = self._unknown_attribute("contact", body.get("custom_attributes"))
        if problem:
            return problem
        existing = self._conflict(body, role)
        if existing:
            return error(
                409,
                "conflict",
                f"A contact matching those details already exists with id={existing}",
            )
        now = int(time.time())
        contact: dict[str, Any] = {
            "type": "contact",
            "id": _new_id(),
            "workspace_id": self.app_id,
            "external_id": None,
            "role": role,
            "email": None,
            "phone": None,
            "name": None,
            "avatar": None,
            "owner_id": None,
            "signed_up_at": None,
            "last_seen_at": None,
            "unsubscribed_from_emails": False,
            "created_at": now,
            "updated_at": now,
            "custom_attributes": {},
        }
        contact["role"] = role
        self._apply_contact_fields(contact, {**body, "role": role})
        self.contacts[contact["id"]] = contact
        self.indexed_at[contact["id"]] = time.time() + self.search_lag_seconds
        return 200, self.contact_view(contact), {}

    def contact_get(self, contact_id: str) -> Answer:
        merged = self._merged(contact_id)
        if merged:
            return merged
        contact = self._live(contact_id)
        return (200, self.contact_view(contact), {}) if contact else _not_found()

    def contact_update(self, contact_id: str, body: dict[str, Any]) -> Answer:
        merged = self._merged(contact_id)
        if merged:
            return merged
        contact = self._live(contact_id)
        if contact is None:
            return _not_found()
        problem = self._unknown_attribute("contact", body.get("custom_attributes"))
        if problem:
            return problem
        if (body.get("role") or contact["role"]) == "lead" and body.get("external_id"):
            return error(400, "parameter_invalid", "External IDs cannot be set for leads")
        existing = self._conflict(body, body.get("role") or contact["role"], exclude=contact_id)
        if existing:
            return error(
                409,
                "conflict",
                f"A contact matching those details already exists with id={existing}",
            )
        self._apply_contact_fields(contact, body)
        return 200, self.contact_view(contact), {}

    def contact_find_by_external_id(self, external_id: str) -> Answer:
        # Users only, per the API description; archived contacts are not found.
        contact_id = self.by_external_id.get(external_id)
        if contact_id is None and external_id in self.merged_external_ids:
            return self._merged(self.merged_external_ids[external_id]) or _not_found()
        contact = self._live(contact_id or "")
        if contact is None or contact["role"] != "user":
            return _not_found()
        return 200, self.contact_view(contact), {}

    def _matches(self, contact: dict[str, Any], query: dict[str, Any]) -> bool:
        operator = query.get("operator")
        if operator in ("AND", "OR"):
            parts = [self._matches(contact, q) for q in query.get("value") or []]
            return all(parts) if operator == "AND" else any(parts)
        value = contact.get(query.get("field") or "")
        if operator == "=":
            return value == query.get("value")
        if operator == "!=":
            return value != query.get("value")
        if operator == "IN":
            return value in (query.get("value") or [])
        if operator == "NIN":
            return value not in (query.get("value") or [])
        if operator == "~":
            return isinstance(value, str) and str(query.get("value")) in value
        return False

    def contact_search(self, body: dict[str, Any]) -> Answer:
        query = body.get("query")
        if not isinstance(query, dict):
            return error(400, "parameter_invalid", "query is required")
        now = time.time()
        found = [
            self.contact_view(c)
            for c in self.contacts.values()
            if c["id"] not in self.archived
            and c["id"] not in self.merged_into
            and self.indexed_at.get(c["id"], 0) <= now
            and self._matches(c, query)
        ]
        per_page = int((body.get("pagination") or {}).get("per_page") or 50)
        data = found[:per_page]
        return (
            200,
            {
                "type": "list",
                "data": data,
                "total_count": len(found),
                "pages": {"type": "pages", "page": 1, "per_page": per_page, "total_pages": 1},
            },
            {},
        )

    def contact_merge(self, body: dict[str, Any]) -> Answer:
        source = self._live(str(body.get("from") or ""))
        target = self._live(str(body.get("into") or ""))
        if source is None or target is None:
            return _not_found()
        if source["role"] != "lead" or target["role"] != "user":
            # As Intercom answers a user merged into a user (or into a lead).
            return error(400, "invalid_merge", "Only a lead can be merged into a user")
        duplicates = (source.get("email") and source.get("email") == target.get("email")) or (
            source.get("phone") and source.get("phone") == target.get("phone")
        )
        if not duplicates and not body.get("skip_duplicate_validation"):
            return error(
                400,
                "invalid_merge",
                "Contacts can only be merged when they are duplicates (matching email or phone). "
                "Pass skip_duplicate_validation=true to override this check.",
            )
        for name, value in source["custom_attributes"].items():
            target["custom_attributes"].setdefault(name, value)
        self._index(source, add=False)
        if source.get("external_id"):
            self.merged_external_ids[source["external_id"]] = source["id"]
        self._index(target, add=False)
        for name in ("email", "phone", "name"):
            if not target.get(name) and source.get(name):
                target[name] = source[name]
        self._index(target, add=True)
        for company_id in self.company_members.pop(source["id"], []):
            members = self.company_members.setdefault(target["id"], [])
            if company_id not in members:
                members.append(company_id)
        for tag_id in self.contact_tags.pop(source["id"], []):
            tags = self.contact_tags.setdefault(target["id"], [])
            if tag_id not in tags:
                tags.append(tag_id)
        for event in self.events:
            if event["contact_id"] == source["id"]:
                event["contact_id"] = target["id"]
        self.merged_into[source["id"]] = target["id"]
        del self.contacts[source["id"]]
        target["updated_at"] = int(time.time())
        return 200, self.contact_view(target), {}

    def contact_delete(self, contact_id: str) -> Answer:
        merged = self._merged(contact_id)
        if merged:
            return merged
        contact = self.contacts.pop(contact_id, None)
        if contact is None:
            return _not_found()
        self._index(contact, add=False)
        self.archived.discard(contact_id)
        self.company_members.pop(contact_id, None)
        self.contact_tags.pop(contact_id, None)
        return (
            200,
            {
                "type": "contact",
                "id": contact_id,
                "external_id": contact.get("external_id"),
                "deleted": True,
            },
            {},
        )

    def contact_archive(self, contact_id: str, archived: bool) -> Answer:
        merged = self._merged(contact_id)
        if merged:
            return merged
        contact = self.contacts.get(contact_id)
        if contact is None:
            return _not_found()
        if archived:
            self.archived.add(contact_id)
        else:
            self.archived.discard(contact_id)
        return (
            200,
            {
                "type": "contact",
                "id": contact_id,
                "external_id": contact.get("external_id"),
                "archived": archived,
            },
            {},
        )

    # --- companies ------------------------------------------------------------------------

    def company_view(self, company: dict[str, Any]) -> dict[str, Any]:
        members = sum(1 for ids in self.company_members.values() if company["id"] in ids)
        # Intercom leaves out what was never set (the description has them non-nullable).
        view = {k: v for k, v in company.items() if v is not None}
        view["tags"] = {
            "type": "tag.list",
            "tags": [
                {"type": "tag", "id": tag_id, "name": self.tags[tag_id]["name"]}
                for tag_id in self.company_tags.get(company["id"], [])
                if tag_id in self.tags
            ],
        }
        view["segments"] = {"type": "segment.list", "segments": []}
        return {**view, "user_count": members}

    def company_upsert(self, body: dict[str, Any]) -> Answer:
        company_id = body.get("company_id")
        if not company_id:
            return error(400, "parameter_not_found", "company_id is required")
        problem = self._unknown_attribute("company", body.get("custom_attributes"))
        if problem:
            return problem
        company = self.companies.get(self.by_company_id.get(str(company_id), ""))
        now = int(time.time())
        if company is None:
            company = {
                "type": "company",
                "id": _new_id(),
                "company_id": str(company_id),
                "app_id": self.app_id,
                "name": None,
                "plan": {},
                "size": None,
                "website": None,
                "industry": None,
                "monthly_spend": 0,
                "remote_created_at": None,
                "created_at": now,
                "custom_attributes": {},
                "session_count": 0,
            }
            self.companies[company["id"]] = company
            self.by_company_id[company["company_id"]] = company["id"]
        for name in COMPANY_FIELDS:
            if name in body:
                company[name] = body[name]
        if "plan" in body:
            company["plan"] = {"type": "plan", "id": _new_id()[:8], "name": body["plan"]}
        company["custom_attributes"].update(body.get("custom_attributes") or {})
        company["updated_at"] = now
        return 200, self.company_view(company), {}

    def company_find(self, company_id: str) -> Answer:
        """GET /companies?company_id=: a one-company list, as the API description shows."""
        company = self.companies.get(self.by_company_id.get(company_id, ""))
        if company is None:
            return error(404, "company_not_found", "Company Not Found")
        return 200, self._company_list([company]), {}

    def company_list(self) -> Answer:
        return 200, self._company_list(list(self.companies.values())), {}

    def _company_list(self, companies: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "type": "list",
            "data": [self.company_view(c) for c in companies],
            "pages": {"type": "pages", "next": None, "page": 1, "per_page": 15, "total_pages": 1},
            "total_count": len(companies),
        }

    def company_attach(self, contact_id: str, body: dict[str, Any]) -> Answer:
        merged = self._merged(contact_id)
        if merged:
            return merged
        if self._live(contact_id) is None:
            return _not_found()
        company = self.companies.get(str(body.get("id") or ""))
        if company is None:
            return _not_found("Company")
        members = self.company_members.setdefault(contact_id, [])
        if company["id"] not in members:
            members.append(company["id"])
        return 200, self.company_view(company), {}

    def company_detach(self, contact_id: str, company_id: str) -> Answer:
        merged = self._merged(contact_id)
        if merged:
            return merged
        if self._live(contact_id) is None:
            return _not_found()
        company = self.companies.get(company_id)
        if company is None:
            return _not_found("Company")
        members = self.company_members.get(contact_id, [])
        if company_id in members:
            members.remove(company_id)
        return 200, self.company_view(company), {}

    # --- events ---------------------------------------------------------------------------

    def _event_contact(self, body: dict[str, Any]) -> dict[str, Any] | None:
        if body.get("id"):
            return self._live(str(body["id"]))
        if body.get("user_id"):
            return self._live(self.by_external_id.get(str(body["user_id"]), ""))
        email = str(body.get("email"))
        return self._live(self.by_email.get(("user", email), "")) or self._live(
            self.by_email.get(("lead", email), "")
        )

    def event_create(self, body: dict[str, Any]) -> Answer:
        name = body.get("event_name")
        created_at = body.get("created_at")
        if not name or not isinstance(created_at, int):
            return error(400, "parameter_invalid", "event_name and created_at are required")
        if not (body.get("id") or body.get("user_id") or body.get("email")):
            return error(400, "parameter_not_found", "Must specify one of id, user_id or email")
        contact = self._event_contact(body)
        if contact is None:
            return _not_found()
        if name not in self.event_names and len(self.event_names) >= self.event_name_limit:
            return error(
                400,
                "parameter_invalid",
                f"This workspace already has {self.event_name_limit} active event names; "
                f"archive some before sending '{name}'",
            )
        key = (contact["id"], name, created_at)
        if key in self.event_keys:
            # Intercom answers 202 and silently keeps the first one.
            return 202, None, {}
        self.event_keys.add(key)
        self.event_names.add(name)
        self.events.append(
            {
                "event_name": name,
                "created_at": created_at,
                "contact_id": contact["id"],
                "user_id": body.get("user_id"),
                "email": body.get("email"),
                "id": body.get("id"),
                "metadata": body.get("metadata") or {},
            }
        )
        return 202, None, {}

    # --- data attributes and tags ---------------------------------------------------------

    def attribute_list(self, model: str | None) -> Answer:
        models = [model] if model else ["contact", "company"]
        if any(m not in ("contact", "company") for m in models):
            return error(400, "parameter_invalid", "model must be contact or company")
        data = []
        for m in models:
            for name, data_type in STANDARD_ATTRIBUTES[m].items():
                data.append(self._attribute_view(m, name, data_type, custom=False))
            for name, data_type in self.attributes[m].items():
                data.append(self._attribute_view(m, name, data_type, custom=True))
        return 200, {"type": "list", "data": data}, {}

    def _attribute_view(self, model: str, name: str, data_type: str, *, custom: bool) -> dict:
        return {
            "type": "data_attribute",
            "name": name,
            "full_name": f"custom_attributes.{name}" if custom else name,
            "label": name,
            "description": "",
            "data_type": data_type,
            "model": model,
            "custom": custom,
            "archived": False,
            "api_writable": True,
            "messenger_writable": False,
            "ui_writable": True,
        }

    def attribute_create(self, body: dict[str, Any]) -> Answer:
        name, model, data_type = body.get("name"), body.get("model"), body.get("data_type")
        if model not in ("contact", "company") or not name or not data_type:
            return error(400, "parameter_invalid", "name, model and data_type are required")
        if data_type not in ("string", "integer", "float", "boolean", "datetime", "date"):
            return error(400, "parameter_invalid", f"Unsupported data_type '{data_type}'")
        if name in self.attributes[model] or name in STANDARD_ATTRIBUTES[model]:
            return error(400, "parameter_invalid", f"You already have '{name}' in your workspace.")
        if sum(len(v) for v in self.attributes.values()) >= ATTRIBUTE_LIMIT:
            return error(
                400, "parameter_invalid", f"A workspace has at most {ATTRIBUTE_LIMIT} attributes"
            )
        self.attributes[model][name] = data_type
        return 200, self._attribute_view(model, name, data_type, custom=True), {}

    def _tag_named(self, name: str) -> dict[str, Any]:
        # Intercom's tag names ignore case: "VIP" and "vip" are one tag.
        tag = next((t for t in self.tags.values() if t["name"].casefold() == name.casefold()), None)
        if tag is None:
            tag = {"type": "tag", "id": str(len(self.tags) + 101), "name": name}
            self.tags[tag["id"]] = tag
        return tag

    def tag_create(self, body: dict[str, Any]) -> Answer:
        """POST /tags: create (or find) a tag by name; with ``companies``, tag or untag them."""
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            return error(400, "parameter_not_found", "name is required")
        companies = body.get("companies")
        if companies is not None:
            if not isinstance(companies, list) or not companies:
                return error(400, "parameter_invalid", "companies must be a non-empty list")
            found = []
            for item in companies:
                item = item if isinstance(item, dict) else {}
                company_id = str(item.get("id") or "")
                if not company_id and item.get("company_id"):
                    company_id = self.by_company_id.get(str(item["company_id"]), "")
                if company_id not in self.companies:
                    return error(404, "company_not_found", "Company Not Found")
                found.append((company_id, item.get("untag") is True))
            tag = self._tag_named(name)
            for company_id, untag in found:
                tags = self.company_tags.setdefault(company_id, [])
                if untag and tag["id"] in tags:
                    tags.remove(tag["id"])
                elif not untag and tag["id"] not in tags:
                    tags.append(tag["id"])
            return 200, tag, {}
        return 200, self._tag_named(name), {}

    def contact_tag_add(self, contact_id: str, body: dict[str, Any]) -> Answer:
        """POST /contacts/{id}/tags {id}: tag a contact with an existing tag."""
        merged = self._merged(contact_id)
        if merged:
            return merged
        if self._live(contact_id) is None:
            return _not_found()
        tag = self.tags.get(str((body or {}).get("id") or ""))
        if tag is None:
            return _not_found("Tag")
        tags = self.contact_tags.setdefault(contact_id, [])
        if tag["id"] not in tags:
            tags.append(tag["id"])
        return 200, {**tag, "applied_at": int(time.time())}, {}

    def contact_tag_remove(self, contact_id: str, tag_id: str) -> Answer:
        """DELETE /contacts/{id}/tags/{tag_id}: 404 when the contact does not have it."""
        merged = self._merged(contact_id)
        if merged:
            return merged
        if self._live(contact_id) is None:
            return _not_found()
        tags = self.contact_tags.get(contact_id, [])
        if tag_id not in self.tags or tag_id not in tags:
            return _not_found("Tag")
        tags.remove(tag_id)
        return 200, self.tags[tag_id], {}

    def tag_list(self) -> Answer:
        return 200, {"type": "list", "data": list(self.tags.values())}, {}
