"""Perform a ``Plan`` against Intercom with the client: the stateful half of the mapping.

``plan_execute`` walks the plan's operations in order. It resolves the contact once (ContactLink
cache -> find by external id or search -> create, 409 -> take the id -> PUT), makes sure custom
attributes exist before they are written, keeps to the 120 event names, and reports every HTTP
exchange to the ``ExchangeRecorder`` before and after it happens. Intercom answers that end the
delivery are raised as the client's typed errors; everything else becomes the ``Outcome``.

Intercom quirks handled here, with where they come from:
- ``POST /contacts`` answers 409 "A contact matching those details already exists with id=<id>"
  when the search index has not caught up, or when another contact has the email (SOURCE.md):
  with an external id, the named contact is read first. Ours, or one without an external id
  (a lead-turned-user, a contact made in Intercom's inbox), gets ours and is updated; one with
  a different external id is another user, and the delivery fails saying which (Intercom allows
  one user per email unless the workspace allows duplicates).
- Merged contacts answer 410 ``contact_merged`` with ``Link: </contacts/<id>>; rel="canonical"``
  (GET /contacts/{id} in the API description): the surviving contact is used and cached.
- Archived contacts answer 404 to writes and events, yet a 409 names them. Per the sync, such a
  contact is unarchived (``POST /contacts/{id}/unarchive``) and written again, or the delivery
  is skipped saying it is archived. A cached id that 404s and is not archived is gone: the cache
  entry is forgotten and the contact resolved again.
- Custom attributes must exist before they are written (400 otherwise): they are created first,
  or dropped and reported, per the sync; a 400 about an attribute refreshes the names once.
- Leads have no external id (Intercom sets none on a lead; find_by_external_id is for users):
  a lead is known by the Intercom id remembered for its key, and its events need that ``id``.
- ``POST /contacts/merge`` takes only a lead into a user and removes the lead (it answers 404
  afterwards): a visitor's lead is merged once, after the visitor's earlier calls went out, and
  its key then names the user's contact, so later calls about the visitor reach the user.
- Tags are attached by id (``POST /contacts/{id}/tags``): ids are looked up by name
  (``GET /tags``, names ignore case) and cached, and a missing tag is created (``POST /tags``);
  companies are tagged by name (``POST /tags`` with ``companies``).

Over our usual ~400 lines: one class, one method per Intercom operation, each with the quirk
it handles (listed above); they share the resolved contact, so they stay together.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from integrations.intercom.client import (
    IntercomClient,
    PermanentError,
    Result,
    RetryableError,
    error_details,
    error_for,
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
    DestinationState,
    Dropped,
    EventCreate,
    ExchangeRecorder,
    Identity,
    Operation,
    Plan,
)

EVENT_NAME_LIMIT = 120
_CONFLICT_ID = re.compile(r"already exists with id=([A-Za-z0-9_-]+)")
_LINK_ID = re.compile(r"/contacts/([^/>?;]+)>")
Model = Literal["contact", "company"]
_NOT_READ = object()
# What an identify's fingerprint covers besides the contact (transforms._identify).
_COVERED_OPERATIONS = (
    CompanyUpsert,
    CompanyAttach,
    CompanyDetach,
    ContactTag,
    ContactTagList,
)


class _ContactArchived(Exception):
    """The plan's contact is archived in Intercom and the sync does not unarchive contacts."""


@dataclass(frozen=True)
class Outcome:
    """What a plan came to. ``reason`` lists anything not sent (shown on the delivery)."""

    status: Literal["succeeded", "skipped"]
    reason: str = ""
    contact_id: str | None = None
    dropped: tuple[Dropped, ...] = ()  # what the call carried that the mapping did not send


def plan_execute(
    *,
    plan: Plan,
    client: IntercomClient,
    state: DestinationState,
    recorder: ExchangeRecorder,
) -> Outcome:
    """Send one plan. Raises ``RetryableError``/``PermanentError`` (and subclasses) from the client."""
    if not plan.operations:
        return Outcome("skipped", plan.skip_reason or "nothing to send", dropped=plan.dropped)
    outcome = _Execution(plan=plan, client=client, state=state, recorder=recorder).run()
    return dataclasses.replace(outcome, dropped=plan.dropped)


def conflict_contact_id(result: Result) -> str | None:
    """The existing contact's id from a 409 ``conflict`` answer, if the message names one."""
    _, message = error_details(result)
    match = _CONFLICT_ID.search(message or result.excerpt)
    return match.group(1) if match else None


def merged_contact_id(result: Result) -> str | None:
    """The surviving contact's id from a 410 ``contact_merged`` answer's Link header."""
    link = result.headers.get("Link") or result.headers.get("link") or ""
    match = _LINK_ID.search(link)
    return match.group(1) if match else None


def _is_attribute_error(result: Result) -> bool:
    code, message = error_details(result)
    return result.status == 400 and "attribute" in message.lower() and code != "conflict"


class _Execution:
    """The state of one plan's execution (the resolved contact, companies, notes)."""

    def __init__(
        self,
        *,
        plan: Plan,
        client: IntercomClient,
        state: DestinationState,
        recorder: ExchangeRecorder,
    ) -> None:
        self.plan = plan
        self.client = client
        self.state = state
        self.recorder = recorder
        self.notes: list[str] = [f"{d.field}: {d.reason}" for d in plan.dropped]
        self.sent = 0  # operations that reached Intercom successfully
        self.contact_id: str | None = None
        self._cached: tuple[str, str] | None | object = _NOT_READ
        self.companies: dict[str, str] = {}  # our company_id -> Intercom id
        self.known_attributes: dict[str, set[str]] = {}
        self.dropped_attributes: set[tuple[str, str]] = set()
        self.attributes_refreshed: set[str] = set()
        self.fingerprint_after: str | None = None  # set when companies ride on the identify
        # Archived contacts are told apart by two answers: a 409 names them (they exist) and
        # writes or reads of them answer 404.
        self.conflict_ids: set[str] = set()
        self.refused_ids: set[str] = set()
        self.visitor_merged = False  # the plan is about a visitor whose lead was merged
        self.tags: dict[str, str] | None = None  # lower-cased tag name -> Intercom id

    # --- plumbing -------------------------------------------------------------------------

    @property
    def cached(self) -> tuple[str, str] | None:
        """The ContactLink (contact id, fingerprint) of the plan's user, read when first needed.

        A track of a user known by external id never needs it, which spares a query per track.
        """
        if self._cached is _NOT_READ:
            identity = self.plan.identity
            self._cached = self.state.contact_get(identity.user_key) if identity else None
        return self._cached  # type: ignore[return-value]

    @cached.setter
    def cached(self, value: tuple[str, str] | None) -> None:
        self._cached = value

    @property
    def identity(self) -> Identity:
        if self.plan.identity is None:
            raise PermanentError("this call has no identity to find the Intercom contact by")
        return self.plan.identity

    def send(
        self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None
    ) -> Result:
        handle = self.recorder.started(
            method=method, url=self.client.url_for(path, params), body=body
        )
        result = self.client.request(method, path, body=body, params=params)
        self.recorder.finished(handle, result)
        return result

    def run(self) -> Outcome:
        identity = self.plan.identity
        if identity is not None and identity.role == "lead" and identity.external_id is None:
            # A visitor whose lead was merged: its key now names the user's contact.
            self.visitor_merged = self.state.contact_role(identity.user_key) == "user"
        operations = [
            op
            for op in self.plan.operations
            # A merge is done once; the identifies that repeat it later cost nothing.
            if not (isinstance(op, ContactMerge) and self.merged_already(op.lead_key))
        ]
        if not operations:
            return Outcome("skipped", "the visitor was merged into the user already")
        upserts = [op for op in operations if isinstance(op, ContactUpsert)]
        unchanged = [
            op for op in upserts if self.cached is not None and self.cached[1] == op.fingerprint
        ]
        # An identify's fingerprint covers its companies and tags too (transforms._identify):
        # when it is unchanged, so are the operations that came with it.
        covered = [op for op in operations if isinstance(op, _COVERED_OPERATIONS)]
        if unchanged and len(unchanged) + len(covered) == len(operations):
            # The change detection that makes a warm identify cost zero calls.
            return Outcome("skipped", "unchanged", self.cached[0] if self.cached else None)
        operations = [op for op in operations if op not in unchanged]
        if upserts and covered:
            # The fingerprint is only remembered once the companies went too: a retry after a
            # failed attach must not find the identify "unchanged" and skip it.
            self.fingerprint_after = upserts[-1].fingerprint
        try:
            for operation in operations:
                self.perform(operation)
        except _ContactArchived as archived:
            # Nothing more can reach the contact; what went before (a company upsert) stands.
            self.notes.append(str(archived))
            self.fingerprint_after = None
        if self.fingerprint_after is not None and self.contact_id is not None:
            self.contact_remember(self.fingerprint_after)
        reason = "; ".join(self.notes)
        if self.sent == 0:
            return Outcome("skipped", reason or "nothing was sent", self.contact_id)
        return Outcome("succeeded", reason, self.contact_id)

    def perform(self, operation: Operation) -> None:
        if isinstance(operation, ContactUpsert):
            self.contact_upsert(operation)
        elif isinstance(operation, ContactTouch):
            self.contact_touch(operation)
        elif isinstance(operation, EventCreate):
            self.event_create(operation)
        elif isinstance(operation, CompanyUpsert):
            self.company_upsert(operation)
        elif isinstance(operation, CompanyAttach):
            self.company_attach(operation)
        elif isinstance(operation, CompanyDetach):
            self.company_detach(operation)
        elif isinstance(operation, ContactMerge):
            self.contact_merge(operation)
        elif isinstance(operation, ContactDelete):
            self.contact_delete(operation)
        elif isinstance(operation, ContactTag):
            self.contact_tag(operation)
        elif isinstance(operation, ContactTagList):
            self.contact_tag_list(operation)
        elif isinstance(operation, CompanyTag):
            self.company_tag(operation)
        elif isinstance(operation, CompanyTagList):
            self.company_tag_list(operation)
        else:  # pragma: no cover - the Operation union is closed
            raise TypeError(f"unknown operation {operation!r}")

    # --- custom attributes ----------------------------------------------------------------

    def attribute_names_load(self, model: Model, *, fresh: bool = False) -> set[str]:
        names = None if fresh else self.state.attribute_names(model)
        if names is None:
            result = self.send("GET", "/data_attributes", params={"model": model})
            if not result.ok:
                raise error_for(result)
            names = {
                item["name"]
                for item in (result.body or {}).get("data", [])
                if item.get("custom") and item.get("model", model) == model
            }
            self.state.attribute_names_set(model, set(names))
        self.known_attributes[model] = set(names)
        return self.known_attributes[model]

    def attributes_ensure(
        self, model: Model, values: dict[str, Any], *, fresh: bool = False
    ) -> dict:
        """The custom attributes that may be written, creating or dropping unknown ones."""
        if not values:
            return {}
        known = (
            self.known_attributes.get(model)
            if not fresh and model in self.known_attributes
            else self.attribute_names_load(model, fresh=fresh)
        )
        assert known is not None
        allowed: dict[str, Any] = {}
        created = False
        for name, value in values.items():
            if name in known:
                allowed[name] = value
                continue
            if value is None:
                # null clears an attribute; one Intercom does not have holds nothing to clear,
                # and creating it would spend one of the workspace's 250 for an empty value.
                self.notes.append(
                    f"{model} attribute {name!r} not sent: it is null and does not exist in "
                    "Intercom (nothing to clear)"
                )
                continue
            data_type = self.plan.attribute_types.get((model, name))
            if self.plan.unknown_attributes != "create" or data_type is None:
                if (model, name) not in self.dropped_attributes:
                    self.dropped_attributes.add((model, name))
                    why = "the sync drops unknown attributes"
                    if data_type is None:
                        why = "its type is unknown"
                    self.notes.append(
                        f"{model} attribute {name!r} not sent: it does not exist in Intercom "
                        f"and {why}"
                    )
                continue
            result = self.send(
                "POST",
                "/data_attributes",
                body={"name": name, "model": model, "data_type": data_type},
            )
            _, message = error_details(result)
            if not result.ok and not (result.status == 400 and "already have" in message):
                raise error_for(result, creating=True)
            known.add(name)
            created = True
            allowed[name] = value
        if created:
            self.state.attribute_names_set(model, set(known))
        return allowed

    def attribute_error_recover(self, model: Model, result: Result) -> bool:
        """A 400 about an attribute: refresh the names once per model. True to try again."""
        if not _is_attribute_error(result) or model in self.attributes_refreshed:
            return False
        self.attributes_refreshed.add(model)
        self.attribute_names_load(model, fresh=True)
        return True

    # --- contacts -------------------------------------------------------------------------

    def contact_find(self, identity: Identity, *, use_cache: bool = True) -> str | None:
        """The Intercom id of the identity's contact, without creating it."""
        if use_cache:
            cached = (
                self.cached
                if identity == self.plan.identity
                else self.state.contact_get(identity.user_key)
            )
            if cached is not None:
                return cached[0]
        if identity.role == "user" and identity.external_id:
            path = "/contacts/find_by_external_id/" + quote(identity.external_id, safe="")
            result = self.send("GET", path)
            if result.ok:
                return str(result.body["id"])
            if result.status == 404:
                return None
            if result.status == 410 and merged_contact_id(result):
                return merged_contact_id(result)
            raise error_for(result)
        # Search lags minutes behind creation; a miss here is settled by the 409 on create.
        if identity.external_id and identity.role == "user":
            field, value = "external_id", identity.external_id
        elif identity.email:
            field, value = "email", identity.email
        else:
            return None
        query = {
            "operator": "AND",
            "value": [
                {"field": field, "operator": "=", "value": value},
                {"field": "role", "operator": "=", "value": identity.role},
            ],
        }
        result = self.send("POST", "/contacts/search", body={"query": query})
        if not result.ok:
            raise error_for(result)
        data = (result.body or {}).get("data") or []
        return str(data[0]["id"]) if data else None

    def contact_write(self, *, fields: dict[str, Any], custom_attributes: dict[str, Any]) -> str:
        """PUT the plan's contact, or POST it when it cannot be found; returns its id."""
        identity = self.identity
        contact_id = self.contact_id or self.contact_find(identity)
        attributes = self.attributes_ensure("contact", custom_attributes)
        resolved_fresh = False
        attach: dict[str, Any] = {}  # our external id, for a contact a 409 named without it
        for _ in range(8):
            body = {**attach, **fields}
            if attributes:
                body["custom_attributes"] = attributes
            if contact_id is None:
                create_body = {"role": identity.role}
                if identity.external_id and identity.role == "user":
                    create_body["external_id"] = identity.external_id
                if identity.email:
                    create_body["email"] = identity.email
                result = self.send("POST", "/contacts", body={**create_body, **body})
                if result.ok:
                    contact_id = str(result.body["id"])
                    break
                if result.status == 409 and conflict_contact_id(result):
                    contact_id = conflict_contact_id(result)
                    attach = self.contact_conflict_settle(contact_id)
                    continue
                if self.attribute_error_recover("contact", result):
                    attributes = self.attributes_ensure("contact", custom_attributes)
                    continue
                raise error_for(result, creating=True)
            if not body:
                break  # nothing to write: the contact exists, which is all the caller needs
            result = self.send("PUT", f"/contacts/{contact_id}", body=body)
            if result.ok:
                break
            if result.status == 410 and merged_contact_id(result):
                contact_id = merged_contact_id(result)
                continue
            if result.status == 404:
                if self.contact_archived_settle(contact_id):
                    continue
                self.state.contact_forget(identity.user_key)
                self.cached = None
                if resolved_fresh:
                    contact_id = None
                else:
                    resolved_fresh = True
                    contact_id = self.contact_find(identity, use_cache=False)
                continue
            if self.attribute_error_recover("contact", result):
                attributes = self.attributes_ensure("contact", custom_attributes)
                continue
            raise error_for(result)
        else:
            raise RetryableError(f"could not settle the Intercom contact for {identity.user_key!r}")
        self.contact_id = contact_id
        return contact_id

    def contact_conflict_settle(self, contact_id: str) -> dict[str, Any]:
        """A 409 on create named ``contact_id``: whether it may become ours.

        Returns the fields to add to the update that follows ({external_id} for a contact that
        has none). Raises ``PermanentError`` when it is another user (a different external id).
        """
        identity = self.identity
        self.conflict_ids.add(contact_id)
        if contact_id in self.refused_ids:
            self.contact_archived_settle(contact_id)
            return {}
        if not identity.external_id:
            return {}  # matched by email: the contact with that email is the one we mean
        result = self.send("GET", f"/contacts/{contact_id}")
        if result.status == 404 and self.contact_archived_settle(contact_id):
            result = self.send("GET", f"/contacts/{contact_id}")  # unarchived: read it now
        if result.status in (404, 410):
            return {}  # gone meanwhile, or merged: the update that follows settles it
        if not result.ok:
            raise error_for(result)
        theirs = (result.body or {}).get("external_id")
        if theirs in (None, "", identity.external_id):
            return {"external_id": identity.external_id}
        shared = f"the email {identity.email!r}" if identity.email else "these details"
        raise PermanentError(
            f"{identity.role} {identity.external_id!r} not created: Intercom contact "
            f"{contact_id} (external_id {theirs!r}) already has {shared}. Intercom allows one "
            "user per email unless the workspace allows duplicate emails: give this user "
            "another email, or merge or delete the other contact in Intercom",
            status=409,
            code="conflict",
            excerpt=result.excerpt,
        )

    def contact_archived_settle(self, contact_id: str) -> bool:
        """``contact_id`` answered 404. True when it was archived and is now unarchived.

        With the sync's "unarchive contacts" off, a contact known to exist (a 409 named it)
        ends the plan as archived; otherwise False: it is gone, or not known to be archived yet.
        """
        if self.plan.unarchive_contacts:
            return self.contact_unarchive(contact_id)
        if contact_id in self.conflict_ids:
            raise _ContactArchived(
                f"Intercom contact {contact_id} ({self.identity.user_key!r}) is archived in "
                "Intercom and the sync does not unarchive contacts: nothing was sent to it"
            )
        self.refused_ids.add(contact_id)
        return False

    def contact_unarchive(self, contact_id: str) -> bool:
        """True when the contact existed archived and is now active again."""
        result = self.send("POST", f"/contacts/{contact_id}/unarchive")
        if result.ok:
            return True
        if result.status in (404, 410):
            return False
        raise error_for(result)

    def contact_remember(self, fingerprint: str | None = None) -> None:
        """Cache the contact id; keep the fingerprint unless a ContactUpsert just sent one."""
        identity = self.identity
        if self.contact_id is None:
            return
        if fingerprint is None:
            fingerprint = (
                self.cached[1] if self.cached and self.cached[0] == self.contact_id else ""
            )
        # A merged visitor's key keeps naming a user (see contact_merge).
        role = "user" if self.visitor_merged else identity.role
        self.state.contact_set(identity.user_key, self.contact_id, role, fingerprint)
        self.cached = (self.contact_id, fingerprint)

    def contact_ensure(self) -> str:
        """The contact's id, creating a minimal contact when it does not exist."""
        if self.contact_id is None:
            self.contact_write(fields={}, custom_attributes={})
            self.contact_remember()
        assert self.contact_id is not None
        return self.contact_id

    def contact_upsert(self, operation: ContactUpsert) -> None:
        fields = dict(operation.fields)
        if self.visitor_merged:
            fields.pop("role", None)  # the contact is the user the lead was merged into
        self.contact_write(fields=fields, custom_attributes=dict(operation.custom_attributes))
        # With companies to follow, the id is cached now and the fingerprint at the end (run).
        self.contact_remember("" if self.fingerprint_after is not None else operation.fingerprint)
        self.sent += 1

    def contact_touch(self, operation: ContactTouch) -> None:
        self.contact_write(fields={"last_seen_at": operation.last_seen_at}, custom_attributes={})
        self.contact_remember()
        self.sent += 1

    def merged_already(self, lead_key: str) -> bool:
        """Whether the visitor ``lead_key`` was merged (its key names a user's contact now)."""
        return self.state.contact_role(lead_key) == "user"

    def contact_merge(self, operation: ContactMerge) -> None:
        """Merge the lead known by ``lead_key`` into the plan's user, once.

        Afterwards the visitor's key names the user's contact, so that calls about the visitor
        still to come reach the user; a retry after a merge whose answer was lost finds the
        lead gone (404) and settles the same way.
        """
        lead_key = operation.lead_key
        if self.state.lead_calls_pending(lead_key):
            # Merged now, the lead would be gone for the visitor's calls still queued, and the
            # first of them would create a new lead that nothing merges any more.
            raise RetryableError(
                f"waiting for the calls about the visitor {lead_key!r} to be sent before "
                "merging its lead into the user",
                code="visitor_calls_pending",
            )
        cached_lead = self.state.contact_get(lead_key)
        lead_id = cached_lead[0] if cached_lead else None
        if lead_id is None and "@" in lead_key:
            lead_id = self.contact_find(
                Identity(user_key=lead_key, external_id=None, email=lead_key, role="lead"),
                use_cache=False,
            )
        # An alias may come before the user's identify (Segment's alias-then-identify at
        # signup): it says the user exists, so a minimal one is created to merge into.
        user_id = self.contact_ensure()
        if lead_id is None:
            self.notes.append(
                f"no lead to merge: no call about the visitor {lead_key!r} reached Intercom"
            )
        elif lead_id != user_id:
            result = self.send(
                "POST",
                "/contacts/merge",
                # The app says both are one person; Intercom otherwise only merges contacts
                # sharing an email or phone.
                body={"from": lead_id, "into": user_id, "skip_duplicate_validation": True},
            )
            if result.status == 404:
                # Merged by a try whose answer was lost, or deleted in Intercom meanwhile.
                self.notes.append(f"the lead of {lead_key!r} no longer exists in Intercom")
            elif not result.ok:
                raise error_for(result)
            else:
                self.sent += 1
        self.contact_id = user_id
        # The visitor's key now names the user: later calls about the visitor reach the user.
        self.state.contact_set(lead_key, user_id, "user", "")
        self.contact_remember()

    def contact_delete(self, operation: ContactDelete) -> None:
        identity = self.identity
        contact_id = self.contact_id or self.contact_find(identity)
        for _ in range(3):
            if contact_id is None:
                break
            result = self.send("DELETE", f"/contacts/{contact_id}")
            if result.ok:
                self.state.contact_forget(identity.user_key)
                self.contact_id = contact_id
                self.sent += 1
                return
            if result.status == 410 and merged_contact_id(result):
                contact_id = merged_contact_id(result)
                continue
            if result.status == 404:
                self.state.contact_forget(identity.user_key)
                contact_id = self.contact_find(identity, use_cache=False) if self.cached else None
                self.cached = None
                continue
            raise error_for(result)
        self.notes.append("no such contact")

    # --- events ---------------------------------------------------------------------------

    def event_create(self, operation: EventCreate) -> None:
        name = operation.event_name
        # A new name is reserved before it is sent (and stays counted, sent or not), so that
        # workers sending different new names at once cannot pass Intercom's limit together.
        if name not in self.state.event_names() and not self.state.event_name_reserve(
            name, EVENT_NAME_LIMIT
        ):
            raise PermanentError(
                f"event {name!r} not sent: the workspace already has {EVENT_NAME_LIMIT} event "
                "names (Intercom's limit); archive unused ones in Intercom or filter this event",
                code="event_name_limit",
            )
        identity = self.identity
        for attempt in range(3):
            body: dict[str, Any] = {"event_name": name, "created_at": operation.created_at}
            if identity.role == "lead" or self.visitor_merged:
                lead_id = self.contact_id or self.contact_find(identity)
                if lead_id is None:
                    result = None
                else:
                    body["id"] = lead_id
            elif identity.external_id:
                body["user_id"] = identity.external_id
            else:
                body["email"] = identity.email
            if operation.metadata:
                body["metadata"] = dict(operation.metadata)
            if "id" in body or not (identity.role == "lead" or self.visitor_merged):
                result = self.send("POST", "/events", body=body)
                if result.ok:
                    self.sent += 1
                    return
                if result.status != 404:
                    raise error_for(result)
            # The contact is missing (404, or a lead we cannot find).
            if operation.missing_contact == "skip":
                self.notes.append(
                    f"event {name!r} skipped: no Intercom contact for {identity.user_key!r}"
                )
                return
            if operation.missing_contact == "retry" or attempt == 2:
                raise RetryableError(
                    f"event {name!r}: no Intercom contact for {identity.user_key!r} yet",
                    status=result.status if result is not None else None,
                    code="contact_missing",
                    excerpt=result.excerpt if result is not None else "",
                )
            if attempt == 1 and self.contact_id is not None:
                # Created or found, yet events still 404: an archived contact (certainly so
                # when a 409 named it), or one Intercom's events do not see yet (retried).
                self.contact_archived_settle(self.contact_id)
                continue
            # The cached id may be the stale one that made the event 404: resolve afresh, from
            # what is remembered now (a visitor's lead may have been merged meanwhile).
            self.contact_id = None
            self.cached = None
            if identity.role == "lead" and identity.external_id is None:
                # A lead is found only through what is remembered; re-read it.
                self._cached = _NOT_READ
                self.visitor_merged = self.state.contact_role(identity.user_key) == "user"
            self.contact_ensure()

    # --- tags -----------------------------------------------------------------------------

    def tag_ids_load(self, *, fresh: bool = False) -> dict[str, str]:
        tags = None if fresh else (self.tags if self.tags is not None else self.state.tag_ids())
        if tags is None:
            result = self.send("GET", "/tags")
            if not result.ok:
                raise error_for(result)
            tags = {
                str(tag["name"]).casefold(): str(tag["id"])
                for tag in (result.body or {}).get("data") or []
                if tag.get("name") and tag.get("id") is not None
            }
            self.state.tag_ids_set(tags)
        self.tags = dict(tags)
        return self.tags

    def tag_id(self, name: str, *, fresh: bool = False) -> str:
        """The Intercom id of the tag ``name``, created when the workspace has none by that
        name (Intercom's tag names ignore case)."""
        tags = self.tag_ids_load(fresh=fresh)
        key = name.casefold()
        if key not in tags:
            result = self.send("POST", "/tags", body={"name": name})
            if not result.ok:
                raise error_for(result, creating=True)
            tags[key] = str(result.body["id"])
            self.state.tag_ids_set(tags)
        return tags[key]

    def contact_tag(self, operation: ContactTag) -> None:
        identity = self.identity
        if operation.tagged:
            contact_id = self.contact_ensure()
        else:
            contact_id = self.contact_id or self.contact_find(identity)
            if contact_id is None:
                self.notes.append(f"untag {operation.name!r} skipped: no Intercom contact")
                return
            self.contact_id = contact_id
        for attempt in range(2):
            tag_id = self.tag_id(operation.name, fresh=attempt > 0)
            if operation.tagged:
                result = self.send("POST", f"/contacts/{contact_id}/tags", body={"id": tag_id})
            else:
                result = self.send("DELETE", f"/contacts/{contact_id}/tags/{tag_id}")
            if result.ok:
                self.sent += 1
                return
            if result.status == 404 and attempt == 0:
                # A tag deleted in Intercom behind our cached id: look the name up again.
                continue
            if result.status == 404 and not operation.tagged:
                self.notes.append(f"untag {operation.name!r}: the contact did not have it")
                return
            raise error_for(result)

    def contact_tag_list(self, operation: ContactTagList) -> None:
        owner = self.identity.user_key
        self.tag_list_apply(
            owner,
            operation.list_name,
            operation.names,
            lambda name, tagged: self.contact_tag(ContactTag(name=name, tagged=tagged)),
        )

    def tag_list_apply(
        self,
        owner: str,
        list_name: str,
        names: tuple[str, ...],
        apply: Callable[[str, bool], None],
    ) -> None:
        """Tag each name of the list, untag the names sent last time that are gone, and
        remember the list (the list sent before is the only record of what to untag)."""
        before = self.state.tags_sent(owner, list_name) or set()
        wanted = {name.casefold(): name for name in names}
        gone = sorted((n for n in before if n.casefold() not in wanted), key=str.casefold)
        known = {n.casefold() for n in before}
        for name in names:
            if name.casefold() not in known:
                apply(name, True)
        for name in gone:
            apply(name, False)
        self.state.tags_sent_set(owner, list_name, set(names))

    def company_tag(self, operation: CompanyTag) -> None:
        company = self.company_find(operation.company_id)
        if company is None:
            self.notes.append(
                f"tag {operation.name!r} skipped: company {operation.company_id!r} does not "
                "exist in Intercom"
            )
            return
        item: dict[str, Any] = {"id": company}
        if not operation.tagged:
            item["untag"] = True
        result = self.send("POST", "/tags", body={"name": operation.name, "companies": [item]})
        if not result.ok:
            raise error_for(result)
        self.sent += 1

    def company_tag_list(self, operation: CompanyTagList) -> None:
        company_id = operation.company_id
        self.tag_list_apply(
            f"company:{company_id}",
            operation.list_name,
            operation.names,
            lambda name, tagged: self.company_tag(
                CompanyTag(company_id=company_id, name=name, tagged=tagged)
            ),
        )

    # --- companies ------------------------------------------------------------------------

    def company_upsert(self, operation: CompanyUpsert) -> None:
        custom = dict(operation.custom_attributes)
        attributes = self.attributes_ensure("company", custom)
        for _ in range(2):
            body: dict[str, Any] = {"company_id": operation.company_id, **operation.fields}
            if attributes:
                body["custom_attributes"] = attributes
            result = self.send("POST", "/companies", body=body)
            if result.ok:
                self.companies[operation.company_id] = str(result.body["id"])
                self.sent += 1
                return
            if self.attribute_error_recover("company", result):
                attributes = self.attributes_ensure("company", custom)
                continue
            break
        raise error_for(result)

    def company_find(self, company_id: str) -> str | None:
        if company_id in self.companies:
            return self.companies[company_id]
        result = self.send("GET", "/companies", params={"company_id": company_id})
        if result.status == 404:
            return None
        if not result.ok:
            raise error_for(result)
        body = result.body or {}
        # The API description answers a list; older versions answered the company itself.
        if body.get("type") == "list":
            matches = [c for c in body.get("data") or [] if c.get("company_id") == company_id]
            if not matches:
                return None
            body = matches[0]
        self.companies[company_id] = str(body["id"])
        return self.companies[company_id]

    def company_attach(self, operation: CompanyAttach) -> None:
        company = self.company_find(operation.company_id)
        if company is None:
            raise PermanentError(
                f"company {operation.company_id!r} does not exist in Intercom; it is created "
                "by a group call",
                status=404,
                code="not_found",
            )
        for attempt in range(2):
            contact_id = self.contact_ensure()
            result = self.send("POST", f"/contacts/{contact_id}/companies", body={"id": company})
            if result.ok:
                self.sent += 1
                return
            if attempt == 0 and result.status in (404, 410):
                # A stale cached id: resolve the contact again.
                self.state.contact_forget(self.identity.user_key)
                self.cached = None
                self.contact_id = merged_contact_id(result) if result.status == 410 else None
                continue
            raise error_for(result)

    def company_detach(self, operation: CompanyDetach) -> None:
        company = self.company_find(operation.company_id)
        contact_id = self.contact_id or self.contact_find(self.identity)
        if company is None or contact_id is None:
            missing = "company" if company is None else "contact"
            self.notes.append(
                f"detach from {operation.company_id!r} skipped: no such {missing} in Intercom"
            )
            return
        result = self.send("DELETE", f"/contacts/{contact_id}/companies/{company}")
        if result.status == 404:
            self.notes.append(f"detach from {operation.company_id!r}: not attached")
            return
        if not result.ok:
            raise error_for(result)
        self.contact_id = contact_id
        self.sent += 1
