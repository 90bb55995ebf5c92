"""One user's timeline, as support reads it: one card per call, newest first, its deliveries
under it (each delivery's attempts grouped by try, ``tries``), and the syncs that kept it out,
with why. Also the start page's recent users.

Who "the user" is: the id typed (a userId, or a lane's key: an external id, an email for syncs
matching by email, an anonymousId), the user ids whose events carry an email typed, and the
anonymousIds the user was known by before signing in (an ``alias`` call's ``previousId``, or
the ``anonymousId`` their identified calls carry), so that a visit before and after sign-in
reads on one page.

It costs the same at millions of rows as at thousands (bench/b9_audit_scale.py): every query
starts from an indexed column (``Event.user_id``, the events' email expressions,
``Delivery.user_key``, ``KeptOut.user_key``, then primary and foreign keys), and at most
``TIMELINE_CARDS`` calls are read, keyset-paged by ``before``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Exists, OuterRef, Q, QuerySet

from integrations.models import Sync
from streaming.audit.selectors import events_by_email
from streaming.audit.tries import Try, attempts_by_try, json_pretty
from streaming.delivery.replay import TEST_MESSAGE_PREFIX
from streaming.models import CallType, Delivery, DeliveryAttempt, Event, KeptOut

TIMELINE_CARDS = 50
# How far back the aliases of a user are looked for (their latest events).
ALIAS_SCAN = 1_000
RECENT_USERS = 12
OUTCOMES = (*Delivery.Status.values, "kept_out")


@dataclass(frozen=True)
class TimelineFilters:
    sync_id: int | None = None
    call_type: str = ""
    outcome: str = ""  # a Delivery.Status, or "kept_out"

    @classmethod
    def from_query(cls, params: dict[str, str]) -> TimelineFilters:
        """The page's ``sync``, ``type`` and ``outcome`` parameters; what is not valid is ignored."""
        sync = params.get("sync", "")
        call_type = params.get("type", "")
        outcome = params.get("outcome", "")
        return cls(
            sync_id=int(sync) if sync.isdigit() else None,
            call_type=call_type if call_type in CallType.values else "",
            outcome=outcome if outcome in OUTCOMES else "",
        )

    @property
    def active(self) -> bool:
        return bool(self.sync_id or self.call_type or self.outcome)


@dataclass
class DeliveryCard:
    delivery: Delivery
    tries: list[Try]


@dataclass
class CallCard:
    """One call: what arrived, where it went, what Intercom said, and who kept it out."""

    event: Event
    deliveries: list[DeliveryCard] = field(default_factory=list)
    kept_out: list[KeptOut] = field(default_factory=list)

    @property
    def is_test(self) -> bool:
        return self.event.message_id.startswith(TEST_MESSAGE_PREFIX)

    @property
    def payload_pretty(self) -> str:
        return json_pretty(self.event.payload)

    @property
    def who(self) -> str:
        return self.event.user_id or self.event.anonymous_id

    @property
    def summary(self) -> str:
        """The card's headline outcome: the worst of its deliveries, else kept out."""
        statuses = {card.delivery.status for card in self.deliveries}
        for status in ("failed", "expired", "pending", "succeeded", "skipped"):
            if status in statuses:
                return status
        return "kept_out" if self.kept_out else "received"


@dataclass
class Timeline:
    query: str
    filters: TimelineFilters = field(default_factory=TimelineFilters)
    cards: list[CallCard] = field(default_factory=list)
    user_ids: list[str] = field(default_factory=list)  # the ids typed or found by an email
    aliases: list[str] = field(default_factory=list)  # anonymousIds followed to the user
    events: int = 0
    older: int | None = None  # the ``before`` of the next page, when there is one


def user_timeline(
    *,
    query: str,
    filters: TimelineFilters | None = None,
    before: int | None = None,
    limit: int = TIMELINE_CARDS,
) -> Timeline:
    """The calls about one user, newest first (see the module doc), ``limit`` at a time; with
    ``before`` (an event id), the calls received before that one."""
    query = query.strip()
    filters = filters or TimelineFilters()
    timeline = Timeline(query=query, filters=filters)
    if not query:
        return timeline
    user_ids = {query}
    direct_event_ids: set[int] = set()
    if "@" in query:
        for event_id, user_id in events_by_email(email=query).values_list("id", "user_id")[
            : limit * 5
        ]:
            direct_event_ids.add(event_id)
            if user_id:
                user_ids.add(user_id)
    timeline.user_ids = sorted(user_ids)
    timeline.aliases = sorted(aliases_of(user_ids=user_ids) - user_ids)
    keys = user_ids | set(timeline.aliases)

    newest_first = ("-received_at", "-id")
    candidates: dict[int, datetime] = {}
    for events in _candidate_events(
        keys=keys, direct_event_ids=direct_event_ids, filters=filters, before=before
    ):
        for event_id, received_at in events.order_by(*newest_first).values_list(
            "id", "received_at"
        )[: limit + 1]:
            candidates[event_id] = received_at
    chosen = sorted(candidates, key=lambda i: (candidates[i], i), reverse=True)
    if len(chosen) > limit:
        timeline.older = chosen[limit - 1]
    chosen = chosen[:limit]
    timeline.events = len(chosen)
    if not chosen:
        return timeline

    events = Event.objects.filter(id__in=chosen).select_related("source").in_bulk()
    deliveries = Delivery.objects.filter(event_id__in=chosen).select_related("sync__destination")
    kept_out = KeptOut.objects.filter(event_id__in=chosen).order_by("sync_id")
    if filters.sync_id:
        deliveries = deliveries.filter(sync_id=filters.sync_id)
        kept_out = kept_out.filter(sync_id=filters.sync_id)
    attempts: dict[int, list[DeliveryAttempt]] = {}
    for attempt in DeliveryAttempt.objects.filter(event_id__in=chosen).order_by("id"):
        attempts.setdefault(attempt.delivery_id, []).append(attempt)
    cards = {event_id: CallCard(event=events[event_id]) for event_id in chosen}
    for delivery in deliveries.order_by("sync_id", "id"):
        cards[delivery.event_id].deliveries.append(
            DeliveryCard(
                delivery=delivery,
                tries=attempts_by_try(delivery, attempts.get(delivery.pk, [])),
            )
        )
    syncs = Sync.objects.in_bulk({row.sync_id for row in kept_out})
    for row in kept_out:
        row.sync = syncs[row.sync_id]
        cards[row.event_id].kept_out.append(row)
    timeline.cards = [cards[event_id] for event_id in chosen]
    return timeline


def _candidate_events(
    *,
    keys: set[str],
    direct_event_ids: set[int],
    filters: TimelineFilters,
    before: int | None,
) -> list[QuerySet[Event]]:
    """The user's events, from each index that finds them, with the filters applied."""
    by_delivery = Delivery.objects.filter(user_key__in=keys)
    by_kept_out = KeptOut.objects.filter(user_key__in=keys)
    if filters.sync_id:
        by_delivery = by_delivery.filter(sync_id=filters.sync_id)
        by_kept_out = by_kept_out.filter(sync_id=filters.sync_id)
    if filters.outcome and filters.outcome != "kept_out":
        by_delivery = by_delivery.filter(status=filters.outcome)
    sources = [
        Event.objects.filter(user_id__in=keys),
        Event.objects.filter(id__in=by_delivery.values("event_id")),
    ]
    if filters.outcome in ("", "kept_out"):
        sources.append(Event.objects.filter(id__in=by_kept_out.values("event_id")))
    if direct_event_ids:
        sources.append(Event.objects.filter(id__in=direct_event_ids))

    narrowed: list[QuerySet[Event]] = []
    for events in sources:
        if filters.call_type:
            events = events.filter(type=filters.call_type)
        if filters.sync_id or filters.outcome:
            # An event qualifies through one of its deliveries (or rows kept out) that matches.
            delivery = Delivery.objects.filter(event_id=OuterRef("pk"))
            kept = KeptOut.objects.filter(event_id=OuterRef("pk"))
            if filters.sync_id:
                delivery = delivery.filter(sync_id=filters.sync_id)
                kept = kept.filter(sync_id=filters.sync_id)
            if filters.outcome == "kept_out":
                events = events.filter(Exists(kept))
            elif filters.outcome:
                events = events.filter(Exists(delivery.filter(status=filters.outcome)))
            else:
                events = events.filter(Exists(delivery) | Exists(kept))
        if before is not None:
            pivot = Event.objects.filter(pk=before).values_list("received_at", flat=True).first()
            if pivot is not None:
                events = events.filter(
                    Q(received_at__lt=pivot) | Q(received_at=pivot, id__lt=before)
                )
        narrowed.append(events)
    return narrowed


def aliases_of(*, user_ids: set[str]) -> set[str]:
    """The anonymousIds these users were known by: an ``alias`` call's ``previousId``, or the
    ``anonymousId`` their identified calls carry (among their latest ``ALIAS_SCAN`` events)."""
    found: set[str] = set()
    for call_type, anonymous_id, payload in (
        Event.objects.filter(user_id__in=user_ids)
        .order_by("-id")
        .values_list("type", "anonymous_id", "payload")[:ALIAS_SCAN]
    ):
        if anonymous_id:
            found.add(anonymous_id)
        if call_type == CallType.ALIAS and isinstance(payload, dict):
            previous = payload.get("previousId")
            if isinstance(previous, str) and previous:
                found.add(previous)
    return found


@dataclass(frozen=True)
class RecentUser:
    user_id: str
    last_seen: datetime
    call: str


def recent_users(*, limit: int = RECENT_USERS, scan: int = 500) -> list[RecentUser]:
    """The users of the latest calls (by the primary key: one index read, whatever the size)."""
    seen: dict[str, RecentUser] = {}
    for user_id, received_at, call_type, name in (
        Event.objects.exclude(user_id="")
        .exclude(type=CallType.LOOKUP)
        .order_by("-id")
        .values_list("user_id", "received_at", "type", "event_name")[:scan]
    ):
        if user_id not in seen:
            call = f"{call_type} “{name}”" if name else call_type
            seen[user_id] = RecentUser(user_id=user_id, last_seen=received_at, call=call)
            if len(seen) >= limit:
                break
    return list(seen.values())
