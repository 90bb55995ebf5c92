"""Delete a person (GDPR, CCPA): their Intercom contacts, their data here, their id from now on.

1. ``person_deletion_request`` (the timeline's "Delete this person", ``POST
   /api/v1/users/{user_id}/deletion``) writes, in one transaction: the ``PersonDeletion`` record,
   the ``Suppression`` of the id's keyed hash (ingest drops the person's calls from the commit
   on, ``streaming.ingest.suppression``), and for each chosen workspace whose syncs know the
   person, a ``delete`` call in the person's lane of one of its syncs, behind what is already
   queued there. It is delivered like any call: in order, within the rate limit, retried, every
   HTTP exchange logged; Intercom's door finds the contact as any call does and deletes it
   (``DELETE /contacts/{id}``); a contact already absent counts as deleted. Asking again for
   the same person returns the first record.
2. When a delete ends, ``deletion_delivery_finished`` (called by ``states.delivery_finish`` in
   the transaction that writes the delivery's final state) keeps the workspace's answer on the
   record, and once every delete is done, purges in that same transaction (``person_purge``).
   A delete that failed or expired leaves the record ``failed`` and the data in place: the
   delete needs the identity to be sent again (replayed from the admin), or the operator gives
   up on that workspace (``person_deletion_purge_anyway``).
3. The purge leaves no personal data: the person's events are blanked (payload ``{}``, user
   and anonymous ids, a message id that names them), their attempts lose request and response
   bodies and any identifier in the URL, their ContactLinks are deleted, pending calls are
   skipped, and the lane keys of their deliveries, attempts and lanes become
   ``deleted:<hash>``: the rows stay, without content, because the trail (and the
   health page's counts) is what Switchboard promises, and the delete calls' own attempts are
   the proof that the deletion happened. Identifiers quoted in free text (a delivery's reason,
   a destination's last error, the admin's history) are cut out.

What remains is the deletion record: who asked, when, through what, each workspace's answer
(status, HTTP code, Intercom's error code) and the hash, never the id or the email.

Over our usual ~400 lines: the request, the delete calls in the lanes, the answers, the purge
of every table that can hold the person and the redaction of free text are one obligation,
read and audited together; split, a reviewer would have to assemble the erasure from files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from django.contrib.admin.models import LogEntry
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.utils import timezone

from integrations.intercom.identity import (
    MISSING,
    call_path_get,
    email_of,
    identity_resolve,
    path_parts,
    user_view,
)
from integrations.intercom.operations import SyncConfig
from integrations.models import Destination, Sync
from integrations.selectors import sync_config_build
from streaming import storage
from streaming.ingest.suppression import subject_hash, subject_hashes, suppressions_changed
from streaming.models import (
    CallType,
    ContactLink,
    Delivery,
    DeliveryAttempt,
    Event,
    KeptOut,
    Lane,
    PersonDeletion,
    PersonDeletionTarget,
    Suppression,
    TagListSent,
    VisitorLink,
)
from streaming.signals import lanes_queued

logger = logging.getLogger(__name__)

DELETE_MESSAGE_PREFIX = "switchboard-deletion-"
PURGED_REASON = "not sent: the person was deleted on request (deletion #{deletion_id})"
REDACTED = "[deleted]"
_ABSENT_NOTE = "no such contact"
_SYNC_PREFERENCE = {Sync.Status.ENABLED: 0, Sync.Status.PAUSED: 1, Sync.Status.DISABLED: 2}
T = PersonDeletionTarget.Status


class DeletionRefused(Exception):
    """The request cannot be carried out as asked (an unknown destination, an empty id)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


# --- what Switchboard holds about a person -----------------------------------------------------


@dataclass
class Footprint:
    """A person's rows, found from their user id through indexed columns.

    ``keys`` are every lane key that names them: the user id, the external id or email a sync
    chose, their anonymous ids. ``identifiers`` is what may appear in free text about them.
    """

    user_id: str
    keys: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)
    anonymous_ids: set[str] = field(default_factory=set)
    event_ids: set[int] = field(default_factory=set)
    lane_ids: set[int] = field(default_factory=set)

    @property
    def identifiers(self) -> set[str]:
        return {self.user_id, *self.keys, *self.emails, *self.anonymous_ids} - {""}


_TRAITS_EMAIL = KeyTextTransform("email", KeyTransform("traits", "payload"))
_CONTEXT_EMAIL = KeyTextTransform(
    "email", KeyTransform("traits", KeyTransform("context", "payload"))
)


def person_footprint(*, user_id: str, thorough: bool = False) -> Footprint:
    """Everything stored about ``user_id``.

    Indexed lookups only (events by user id, deliveries and attempts by lane key, lanes and
    contact links by (sync or destination, key)), unless ``thorough``: then one pass over the
    events also finds the anonymous calls the person made before being identified (by their
    anonymous ids and emails) that no sync delivered, at the cost of reading the events table.
    """
    found = Footprint(user_id=user_id, keys={user_id})
    own = Event.objects.filter(user_id=user_id)
    found.event_ids.update(own.values_list("id", flat=True))
    for anonymous_id, traits_email, context_email in (
        own.annotate(traits_email=_TRAITS_EMAIL, context_email=_CONTEXT_EMAIL)
        .values_list("anonymous_id", "traits_email", "context_email")
        .distinct()
    ):
        if anonymous_id:
            found.anonymous_ids.add(anonymous_id)
        for email in (traits_email, context_email):
            if isinstance(email, str) and email.strip():
                found.emails.update({email.strip(), email.strip().lower()})
    # The lanes their calls went to name them by whatever key each sync chose.
    for lane_id, user_key in (
        Delivery.objects.filter(event_id__in=found.event_ids)
        .values_list("lane_id", "user_key")
        .distinct()
    ):
        found.lane_ids.add(lane_id)
        found.keys.add(user_key)
    found.keys |= found.emails | found.anonymous_ids
    if thorough and (found.anonymous_ids or found.emails):
        anonymous = Event.objects.filter(user_id="").annotate(
            traits_email=_TRAITS_EMAIL, context_email=_CONTEXT_EMAIL
        )
        emails = sorted(found.emails)
        found.event_ids.update(
            anonymous.filter(
                Q(anonymous_id__in=sorted(found.anonymous_ids))
                | Q(traits_email__in=emails)
                | Q(context_email__in=emails)
            ).values_list("id", flat=True)
        )
    keys = sorted(found.keys)
    for lane_id, event_id in Delivery.objects.filter(user_key__in=keys).values_list(
        "lane_id", "event_id"
    ):
        found.lane_ids.add(lane_id)
        found.event_ids.add(event_id)
    # (sync, user_key) is the lanes' unique index: naming the syncs lets it serve the lookup.
    sync_ids = list(Sync.objects.values_list("id", flat=True))
    found.lane_ids.update(
        Lane.objects.filter(sync_id__in=sync_ids, user_key__in=keys).values_list("id", flat=True)
    )
    return found


# --- which workspace, which lane ---------------------------------------------------------------


@dataclass(frozen=True)
class DestinationChoice:
    """A workspace that knows the person, and the lane its delete call would go to."""

    destination: Destination
    lane: Lane | None  # None: no sync of this workspace knows the person
    note: str = ""  # what the operator should know (a paused sync holds the delete)


def destinations_knowing(
    *, user_id: str, footprint: Footprint | None = None
) -> list[DestinationChoice]:
    """Each workspace whose syncs have a lane of the person, with the lane for its delete.

    The preferred lane is in an enabled sync (a paused or disabled one holds its calls), keyed
    by the user id itself (the contact's external id) rather than an email or an anonymous id,
    and the most recently used.
    """
    footprint = footprint or person_footprint(user_id=user_id)
    lanes = (
        Lane.objects.filter(pk__in=footprint.lane_ids)
        .select_related("sync__destination")
        .annotate(last_delivery=Max("deliveries__id"))
    )
    best: dict[int, Lane] = {}

    def rank(lane: Lane) -> tuple[int, int, int]:
        return (
            _SYNC_PREFERENCE.get(lane.sync.status, 3),
            0 if lane.user_key == user_id else 1,
            -(lane.last_delivery or 0),
        )

    for lane in lanes:
        destination_id = lane.sync.destination_id
        if destination_id not in best or rank(lane) < rank(best[destination_id]):
            best[destination_id] = lane
    choices = []
    for lane in sorted(best.values(), key=lambda lane: lane.sync.destination.name):
        note = ""
        if lane.sync.status == Sync.Status.PAUSED:
            note = f"the sync {lane.sync.name} is paused: the delete waits until it is enabled"
        elif lane.sync.status == Sync.Status.DISABLED:
            note = f"the sync {lane.sync.name} is disabled: the delete waits until it is enabled"
        choices.append(DestinationChoice(destination=lane.sync.destination, lane=lane, note=note))
    return choices


def _path_set(call: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set ``value`` at the dotted ``path`` of ``call`` (made of dicts); returns ``call``."""
    node = call
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return call


def delete_call_build(
    *, lane: Lane, config: SyncConfig, base: dict[str, Any] | None, message_id: str, at: str
) -> dict[str, Any] | None:
    """A ``delete`` call that the lane's sync addresses to the lane's user, or None.

    It carries only what identifies the contact under the sync's identity mapping (user id,
    anonymous id, the external id's path, the email), taken from the person's latest call in
    the lane, or from the lane's key when that call's payload is gone (retention).
    """
    candidates: list[dict[str, Any]] = []
    if base:
        call: dict[str, Any] = {}
        for name in ("userId", "anonymousId"):
            if base.get(name) not in (None, ""):
                call[name] = base[name]
        value = call_path_get(user_view(base), path_parts(config.external_id_path))
        if config.external_id_path not in ("userId", "anonymousId") and value is not MISSING:
            _path_set(call, config.external_id_path, value)
        email = email_of(base)
        if email:
            _path_set(call, "traits.email", email)
        candidates.append(call)
    key = lane.user_key
    if config.match_by == "email":
        candidates.append({"traits": {"email": key}})
    else:
        candidates.append(_path_set({}, config.external_id_path, key))
        if config.anonymous != "drop":
            candidates.append({"anonymousId": key})  # a visitor's lane
    for candidate in candidates:
        call = {"type": "delete", "messageId": message_id, "timestamp": at, **candidate}
        identity = identity_resolve(call=call, config=config)
        if not isinstance(identity, str) and identity.user_key == key:
            return call
    return None


# --- the request --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeletionRequested:
    deletion: PersonDeletion
    created: bool  # False: the person's deletion was already asked for (this is that record)


def person_deletion_existing(*, user_id: str) -> PersonDeletion | None:
    """The deletion behind the person's active suppression, if they were deleted."""
    suppression = (
        Suppression.objects.filter(subject_hash__in=subject_hashes(user_id), lifted_at__isnull=True)
        .select_related("deletion")
        .first()
    )
    return suppression.deletion if suppression is not None else None


def person_deletion_request(
    *,
    user_id: str,
    destination_ids: Sequence[int] | None = None,
    requested_by: AbstractBaseUser | None = None,
    via: str = PersonDeletion.Via.API,
) -> DeletionRequested:
    """Delete the person in the chosen workspaces (all that know them when None); see the
    module doc. Idempotent: a person already deleted (suppression active) gets that record."""
    user_id = user_id.strip()
    if not user_id:
        raise DeletionRefused("A user id is required.", field="user_id")
    existing = person_deletion_existing(user_id=user_id)
    if existing is not None:
        _settle_if_stuck(existing, user_id=user_id)
        return DeletionRequested(existing, created=False)
    chosen: set[int] | None = None
    if destination_ids is not None:
        chosen = set(destination_ids)
        unknown = chosen - set(
            Destination.objects.filter(pk__in=chosen).values_list("pk", flat=True)
        )
        if unknown:
            raise DeletionRefused(
                f"No such destination: {', '.join(map(str, sorted(unknown)))}.",
                field="destinations",
            )
    footprint = person_footprint(user_id=user_id)
    choices = [
        choice
        for choice in destinations_knowing(user_id=user_id, footprint=footprint)
        if chosen is None or choice.destination.pk in chosen
    ]
    known = {choice.destination.pk for choice in choices}
    unknown_destinations = list(Destination.objects.filter(pk__in=(chosen or set()) - known))
    now = timezone.now()
    try:
        with transaction.atomic():
            deletion = PersonDeletion.objects.create(
                subject_hash=subject_hash(user_id),
                requested_by=requested_by if requested_by is not None and requested_by.pk else None,
                requested_by_name=requested_by.get_username() if requested_by else "",
                requested_via=via,
                requested_at=now,
            )
            Suppression.objects.create(
                subject_hash=deletion.subject_hash, deletion=deletion, created_at=now
            )
            lane_ids = _deletes_queue(deletion=deletion, user_id=user_id, choices=choices)
            PersonDeletionTarget.objects.bulk_create(
                PersonDeletionTarget(
                    deletion=deletion, destination=destination, status=T.NOT_KNOWN, completed_at=now
                )
                for destination in unknown_destinations
            )
            transaction.on_commit(suppressions_changed)
            if lane_ids:
                transaction.on_commit(
                    lambda: lanes_queued.send(sender=Lane, lane_ids=lane_ids), robust=True
                )
            else:
                # Nothing to delete in Intercom: the purge can follow the suppression at once.
                transaction.on_commit(
                    lambda: person_deletion_settle(deletion=deletion, user_id=user_id),
                    robust=True,
                )
    except IntegrityError:
        # A concurrent request for the same person won the suppression's unique index.
        existing = person_deletion_existing(user_id=user_id)
        if existing is None:
            raise
        return DeletionRequested(existing, created=False)
    return DeletionRequested(deletion, created=True)


def _deletes_queue(
    *, deletion: PersonDeletion, user_id: str, choices: Iterable[DestinationChoice]
) -> list[int]:
    """Queue a delete call in each choice's lane (``storage.calls_store``, as ingest does);
    the targets are written with their delivery. Returns the lanes to wake."""
    now = timezone.now()
    events: list[dict[str, Any]] = []
    routes: list[tuple[str, int, str]] = []
    targets: dict[str, PersonDeletionTarget] = {}
    failed: list[PersonDeletionTarget] = []
    for choice in choices:
        lane = choice.lane
        assert lane is not None
        message_id = f"{DELETE_MESSAGE_PREFIX}{deletion.pk}-{choice.destination.pk}"
        latest = (
            Event.objects.filter(deliveries__lane=lane)
            .order_by("-id")
            .values("source_id", "payload")
        ).first()
        source_id = latest["source_id"] if latest else None
        if source_id is None:
            source_id = lane.sync.sources.order_by("id").values_list("id", flat=True).first()
        call = delete_call_build(
            lane=lane,
            config=sync_config_build(sync=lane.sync),
            base=latest["payload"] if latest else None,
            message_id=message_id,
            at=now.isoformat(),
        )
        target = PersonDeletionTarget(
            deletion=deletion, destination=choice.destination, sync=lane.sync
        )
        if call is None or source_id is None:
            target.status, target.error_code, target.completed_at = T.FAILED, "no_identity", now
            failed.append(target)
            continue
        events.append(
            {
                "source_id": source_id,
                "message_id": message_id,
                "type": CallType.DELETE,
                "user_id": user_id,
                "anonymous_id": call.get("anonymousId", "") or "",
                "event_name": "",
                "payload": call,
                "timestamp": now,
            }
        )
        routes.append((message_id, lane.sync_id, lane.user_key))
        targets[message_id] = target
    PersonDeletionTarget.objects.bulk_create(failed)
    if not events:
        return []
    stored = storage.calls_store(events=events, routes=routes, received_at=now, now=now)
    deliveries = dict(
        Delivery.objects.filter(event_id__in=stored.event_ids.values()).values_list(
            "event_id", "id"
        )
    )
    for message_id, target in targets.items():
        target.delivery_id = deliveries[stored.event_ids[message_id]]
    PersonDeletionTarget.objects.bulk_create(targets.values())
    return sorted(set(stored.lane_ids))


# --- the answers, and the purge ----------------------------------------------------------------


def is_delete(delivery: Delivery) -> bool:
    """Whether ``delivery`` sends a deletion's delete call (its event is at hand in a lane)."""
    return delivery.event.type == CallType.DELETE


def deletion_delivery_finished(*, delivery: Delivery) -> None:
    """A delete delivery reached its final state: keep the workspace's answer, and purge once
    every delete is done. Runs inside the transaction that wrote that state."""
    target = (
        PersonDeletionTarget.objects.select_related("deletion")
        .filter(delivery_id=delivery.pk)
        .first()
    )
    if target is None:
        return
    _target_answer(target, delivery)
    try:
        with transaction.atomic():
            person_deletion_settle(deletion=target.deletion, user_id=delivery.event.user_id)
    except Exception:
        # The answer is kept and the delivery ends; the record stays "deleting" until the
        # purge is run again (the admin's "purge now", or the same request again).
        logger.exception("deletion %s: purge failed", target.deletion_id)


def _target_answer(target: PersonDeletionTarget, delivery: Delivery) -> None:
    last = (
        DeliveryAttempt.objects.filter(delivery_id=delivery.pk)
        .order_by("-id")
        .values("status_code", "error_code")
        .first()
    ) or {"status_code": None, "error_code": ""}
    if delivery.status == Delivery.Status.SUCCEEDED:
        status = T.DELETED
    elif delivery.status == Delivery.Status.SKIPPED and _ABSENT_NOTE in delivery.reason:
        status = T.ABSENT
    elif delivery.status == Delivery.Status.PENDING:
        status = T.PENDING
    else:
        status = T.FAILED
    target.status = status
    target.status_code = last["status_code"]
    target.error_code = last["error_code"] or ("" if status != T.FAILED else str(delivery.status))
    target.completed_at = delivery.completed_at or timezone.now()
    target.save(update_fields=["status", "status_code", "error_code", "completed_at"])


def person_deletion_settle(*, deletion: PersonDeletion, user_id: str, force: bool = False) -> None:
    """Purge once every delete is done (deleted, or absent); ``force``: also when some failed."""
    with transaction.atomic():
        deletion = PersonDeletion.objects.select_for_update().get(pk=deletion.pk)
        if deletion.purged_at is not None:
            return
        statuses = set(deletion.targets.values_list("status", flat=True))
        if T.PENDING in statuses:
            return
        # A refused delete can be replayed, which needs the person's data; a delete that could
        # not even be addressed (no identity the sync resolves) cannot, and does not hold the
        # purge back (the record keeps its answer).
        replayable = deletion.targets.filter(status=T.FAILED).exclude(delivery=None).exists()
        if replayable and not force:
            if deletion.status != PersonDeletion.Status.FAILED:
                deletion.status = PersonDeletion.Status.FAILED
                deletion.save(update_fields=["status"])
            return
        if subject_hash(
            user_id
        ) != deletion.subject_hash and deletion.subject_hash not in subject_hashes(user_id):
            raise ValueError(f"deletion {deletion.pk} is not about this user id")
        deletion.purged = person_purge(user_id=user_id, deletion=deletion)
        now = timezone.now()
        deletion.purged_at = deletion.completed_at = now
        deletion.status = PersonDeletion.Status.DONE
        deletion.save(update_fields=["purged", "purged_at", "completed_at", "status"])
        logger.info("deletion %s: purged %s", deletion.pk, deletion.purged)


def _deletion_user_id(deletion: PersonDeletion) -> str | None:
    """The user id, from the deletion's delete calls (they keep it until the purge)."""
    return (
        Event.objects.filter(
            deliveries__in=deletion.targets.exclude(delivery=None).values("delivery")
        )
        .exclude(user_id="")
        .values_list("user_id", flat=True)
        .first()
    )


def person_deletion_purge_anyway(*, deletion: PersonDeletion, user_id: str | None = None) -> bool:
    """Give up on the workspaces that did not delete, and purge. False when there is nothing
    left to purge with (no user id known: it was purged already)."""
    user_id = user_id or _deletion_user_id(deletion)
    if not user_id:
        return False
    PersonDeletionTarget.objects.filter(deletion=deletion, status=T.PENDING).exclude(
        delivery__status=Delivery.Status.PENDING
    ).update(status=T.FAILED)
    person_deletion_settle(deletion=deletion, user_id=user_id, force=True)
    return True


def _settle_if_stuck(deletion: PersonDeletion, *, user_id: str) -> None:
    # A deletion whose purge was interrupted (the process ended right after the commit) is
    # finished by the next request for the same person.
    if deletion.purged_at is None and deletion.status == PersonDeletion.Status.DELETING:
        person_deletion_settle(deletion=deletion, user_id=user_id)


def _redact(text: str, identifiers: Iterable[str]) -> str:
    """``text`` with every identifier cut out: anywhere when it is distinctive (6 characters or
    an email), else only where quoted or in a URL path (a user id "42" must not eat "HTTP 429")."""
    for identifier in sorted(identifiers, key=len, reverse=True):
        if len(identifier) >= 6 or "@" in identifier:
            forms = {identifier, quote(identifier, safe=""), quote(identifier)}
        else:
            forms = {f"'{identifier}'", f'"{identifier}"', f"/{quote(identifier, safe='')}"}
        for form in forms:
            if form in text:
                text = text.replace(form, REDACTED if not form.startswith("/") else f"/{REDACTED}")
    return text


def _contains_any(column: str, identifiers: Iterable[str]) -> Q:
    condition = Q(pk__in=[])
    for identifier in identifiers:
        condition |= Q(**{f"{column}__contains": identifier})
    return condition


def person_purge(*, user_id: str, deletion: PersonDeletion) -> dict[str, int]:
    """Remove the person's data (see the module doc); returns how many rows of each kind."""
    footprint = person_footprint(user_id=user_id, thorough=True)
    identifiers = footprint.identifiers
    pseudonym = f"deleted:{deletion.subject_hash}"
    event_ids = sorted(footprint.event_ids)
    keys = sorted(footprint.keys)
    counts: dict[str, int] = {}

    deliveries = Delivery.objects.filter(Q(event_id__in=event_ids) | Q(user_key__in=keys))
    counts["pending_skipped"] = deliveries.filter(status=Delivery.Status.PENDING).update(
        status=Delivery.Status.SKIPPED,
        reason=PURGED_REASON.format(deletion_id=deletion.pk),
        next_attempt_at=None,
        completed_at=timezone.now(),
    )
    for delivery in deliveries.exclude(reason="").only("id", "reason"):
        redacted = _redact(delivery.reason, identifiers)
        if redacted != delivery.reason:
            Delivery.objects.filter(pk=delivery.pk).update(reason=redacted)
    counts["deliveries"] = deliveries.update(user_key=pseudonym)

    attempts = DeliveryAttempt.objects.filter(Q(event_id__in=event_ids) | Q(user_key__in=keys))
    for attempt in attempts.only("id", "url"):
        redacted = _redact(attempt.url, identifiers)
        if redacted != attempt.url:
            DeliveryAttempt.objects.filter(pk=attempt.pk).update(url=redacted)
    counts["attempts"] = attempts.update(user_key=pseudonym, request_body=None, response_excerpt="")

    # Why the person's calls were kept out of a sync: their own rows, deleted outright.
    counts["kept_out"] = KeptOut.objects.filter(
        Q(event_id__in=event_ids) | Q(user_key__in=sorted(set(keys) | identifiers))
    ).delete()[0]

    events = Event.objects.filter(pk__in=event_ids)
    for event in events.only("id", "message_id"):
        if _redact(event.message_id, identifiers) != event.message_id:
            Event.objects.filter(pk=event.pk).update(message_id=f"deleted-{event.pk}")
    counts["events"] = events.update(payload={}, user_id="", anonymous_id="")

    # A lane's key is unique within its sync, and one person may have several lanes in one
    # (a user id, an anonymous id): the lane's id keeps them apart.
    lanes = list(Lane.objects.filter(pk__in=footprint.lane_ids).values_list("id", flat=True))
    for lane_id in lanes:
        Lane.objects.filter(pk=lane_id).update(user_key=f"{pseudonym}:{lane_id}")
    counts["lanes"] = len(lanes)

    destination_ids = list(Destination.objects.values_list("id", flat=True))
    counts["contact_links"] = ContactLink.objects.filter(
        destination_id__in=destination_ids, user_key__in=keys
    ).delete()[0]
    counts["tag_lists"] = TagListSent.objects.filter(owner_key__in=keys).delete()[0]
    counts["visitor_links"] = VisitorLink.objects.filter(
        Q(user_id__in=keys) | Q(anonymous_id__in=keys)
    ).delete()[0]

    # Free text elsewhere that may quote them: another user's refusal naming their email, a
    # destination's last error, the admin's history of changes.
    distinctive = {i for i in identifiers if len(i) >= 6 or "@" in i} | {
        f"'{i}'" for i in identifiers
    }
    for delivery in Delivery.objects.filter(_contains_any("reason", distinctive)).only(
        "id", "reason"
    ):
        Delivery.objects.filter(pk=delivery.pk).update(reason=_redact(delivery.reason, identifiers))
    for destination in Destination.objects.filter(_contains_any("last_error", distinctive)):
        Destination.objects.filter(pk=destination.pk).update(
            last_error=_redact(destination.last_error, identifiers)
        )
    for entry in LogEntry.objects.filter(
        _contains_any("object_repr", distinctive) | _contains_any("change_message", distinctive)
    ):
        LogEntry.objects.filter(pk=entry.pk).update(
            object_repr=_redact(entry.object_repr, identifiers),
            change_message=_redact(entry.change_message, identifiers),
        )
    return counts


# --- lifting a suppression ---------------------------------------------------------------------


def suppression_lift(
    *, suppression: Suppression, lifted_by: AbstractBaseUser | None = None
) -> bool:
    """Let the person's calls in again (an operator's decision). False if already lifted."""
    lifted = Suppression.objects.filter(pk=suppression.pk, lifted_at__isnull=True).update(
        lifted_at=timezone.now(),
        lifted_by_name=lifted_by.get_username() if lifted_by is not None else "",
    )
    if lifted:
        transaction.on_commit(suppressions_changed)
    return bool(lifted)
