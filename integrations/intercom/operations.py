"""The contract between the pure mapping and the HTTP side.

``transforms.py`` turns one Segment call plus a sync's configuration into a ``Plan``: the ordered
Intercom operations to perform and the reasons for anything dropped. ``executor.py`` performs a
plan with the ``client``: it resolves contacts (ContactLink cache -> find -> create, 409 -> PUT),
creates missing data attributes, enforces the 120 event names, and reports every HTTP exchange to
an ``ExchangeRecorder`` so the data plane can log it. Neither side imports the data plane: the
state the executor needs (contact cache, known attributes and event names) arrives through the
``DestinationState`` protocol, which ``streaming`` implements.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["user", "lead"]
CallType = Literal["identify", "track", "group", "page", "screen", "alias", "delete", "audience"]


@dataclass(frozen=True)
class Identity:
    """How to find the contact a call is about, per the sync's identity mapping."""

    user_key: str  # the lane key and ContactLink key: the chosen external id, or the email
    external_id: str | None
    email: str | None
    role: Role = "user"


@dataclass(frozen=True)
class Dropped:
    """Something the call carried that will not reach Intercom, and why (shown in the admin)."""

    field: str
    reason: str


@dataclass(frozen=True)
class ContactUpsert:
    """Create or update the contact. ``fields`` are Intercom contact fields (name, phone, ...)."""

    fields: dict[str, Any]
    custom_attributes: dict[str, str | int | float | bool | None]
    # Hash of fields + custom attributes: equal to ContactLink.fingerprint -> nothing is sent.
    fingerprint: str


@dataclass(frozen=True)
class ContactTouch:
    """Update only last_seen_at (page/screen with "update last seen")."""

    last_seen_at: int


@dataclass(frozen=True)
class CompanyUpsert:
    company_id: str
    fields: dict[str, Any]
    custom_attributes: dict[str, str | int | float | bool | None]


@dataclass(frozen=True)
class CompanyAttach:
    company_id: str  # our company_id; the executor resolves Intercom's id


@dataclass(frozen=True)
class CompanyDetach:
    company_id: str


@dataclass(frozen=True)
class EventCreate:
    event_name: str
    created_at: int
    metadata: dict[str, Any]
    # When the contact does not exist: "create" a minimal one then send again, "retry", "skip".
    missing_contact: Literal["create", "retry", "skip"] = "create"


@dataclass(frozen=True)
class ContactMerge:
    """alias: merge the lead known by ``lead_key`` (previousId) into the plan's user."""

    lead_key: str


@dataclass(frozen=True)
class ContactDelete:
    pass


@dataclass(frozen=True)
class ContactTag:
    """Tag the contact with ``name`` (``tagged``) or remove that tag; the tag is created in
    Intercom when missing."""

    name: str
    tagged: bool = True


@dataclass(frozen=True)
class ContactTagList:
    """The contact's tags from a list of names (``traits.audiences``): each is tagged, and the
    names of the list sent last time (remembered under ``list_name``) that are gone untag."""

    list_name: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class CompanyTag:
    """Tag (or untag) the company ``company_id`` (ours) with ``name`` (``POST /tags``)."""

    company_id: str
    name: str
    tagged: bool = True


@dataclass(frozen=True)
class CompanyTagList:
    """A company's tags from a list of names, as ``ContactTagList`` does for contacts."""

    company_id: str
    list_name: str
    names: tuple[str, ...]


Operation = (
    ContactUpsert
    | ContactTouch
    | CompanyUpsert
    | CompanyAttach
    | CompanyDetach
    | EventCreate
    | ContactMerge
    | ContactDelete
    | ContactTag
    | ContactTagList
    | CompanyTag
    | CompanyTagList
)


@dataclass(frozen=True)
class Plan:
    """What one call becomes. An empty ``operations`` means skipped, with ``skip_reason``."""

    identity: Identity | None
    operations: tuple[Operation, ...] = ()
    dropped: tuple[Dropped, ...] = ()
    skip_reason: str = ""
    # Custom attributes the plan writes, with the Intercom data_type inferred from the value,
    # so the executor can create the unknown ones first: {("contact"|"company", name): type}.
    attribute_types: dict[tuple[str, str], str] = field(default_factory=dict)
    unknown_attributes: Literal["create", "drop"] = "create"
    # An archived contact (Intercom answers 404 to writes and events for it): unarchive it, or
    # skip the delivery saying so (the sync's setting; archiving is an operator's decision).
    unarchive_contacts: bool = False


@dataclass(frozen=True)
class SyncConfig:
    """The parts of a Sync the mapping reads, as plain data (so transforms never touch the DB)."""

    send_users: bool = True
    send_events: bool = True
    send_companies: bool = True
    match_by: Literal["external_id", "email"] = "external_id"
    external_id_path: str = "userId"
    contact_role: Role = "user"
    missing_contact: Literal["create", "retry", "skip"] = "create"
    anonymous: Literal["drop", "anonymous_id", "lead"] = "drop"
    page_handling: Literal["ignore", "last_seen", "event"] = "ignore"
    update_last_seen: bool = False
    unknown_attributes: Literal["create", "drop"] = "create"
    unarchive_contacts: bool = False
    send_all_properties: bool = False
    # (source_path, intercom_name) per target
    event_metadata: tuple[tuple[str, str], ...] = ()
    contact_attributes: tuple[tuple[str, str], ...] = ()
    company_attributes: tuple[tuple[str, str], ...] = ()
    contact_tags: tuple[tuple[str, str], ...] = ()  # (source_path, tag name or list label)
    company_tags: tuple[tuple[str, str], ...] = ()
    # The link back from Intercom: this contact attribute gets timeline_url + the user's id.
    timeline_link_attribute: str = ""
    timeline_url: str = ""


class DestinationState(Protocol):
    """What the executor remembers about one Intercom workspace (implemented by ``streaming``)."""

    def contact_get(self, user_key: str) -> tuple[str, str] | None:
        """(Intercom contact id, fingerprint last sent) or None."""

    def contact_set(self, user_key: str, contact_id: str, role: str, fingerprint: str) -> None: ...

    def contact_forget(self, user_key: str) -> None: ...

    def attribute_names(self, model: Literal["contact", "company"]) -> set[str] | None:
        """Known custom attribute names, or None when not loaded yet (executor fetches them)."""

    def attribute_names_set(
        self, model: Literal["contact", "company"], names: set[str]
    ) -> None: ...

    def contact_role(self, user_key: str) -> str | None:
        """The role remembered with the user's contact: "user" for a visitor's key once its
        lead was merged into a user (the key then names the user's contact)."""

    def lead_calls_pending(self, lead_key: str) -> bool:
        """Whether calls about the visitor ``lead_key`` are still waiting to be sent (in a sync
        of this workspace that sends visitors as leads): their lead is merged only after them,
        so that none of them creates a lead again once it is merged away."""

    def tag_ids(self) -> dict[str, str] | None:
        """The workspace's tags, lower-cased name -> Intercom id, or None when not loaded."""

    def tag_ids_set(self, tags: dict[str, str]) -> None: ...

    def tags_sent(self, owner_key: str, list_name: str) -> set[str] | None:
        """The names of the tag list ``list_name`` last sent for a contact (its user key) or a
        company ("company:<company_id>"); None when nothing was remembered."""

    def tags_sent_set(self, owner_key: str, list_name: str, names: set[str]) -> None: ...

    def event_names(self) -> set[str]:
        """Event names this workspace has received through us (for the 120-name limit); may be
        a little stale: it only spares ``event_name_reserve`` for names already known."""

    def event_name_reserve(self, name: str, limit: int) -> bool:
        """Count ``name`` among the workspace's event names, if it is one already or fewer than
        ``limit`` are known; False when it would be one too many. Atomic across processes, so
        that concurrent workers cannot together send more than ``limit`` names."""


class ExchangeRecorder(Protocol):
    """Told about every HTTP exchange, before it starts and after it ends (the attempt log)."""

    def started(self, *, method: str, url: str, body: Any) -> object:
        """Returns a handle passed back to ``finished``."""

    def finished(self, handle: object, result: Any) -> None:
        """``result`` is the client's ``Result``."""
