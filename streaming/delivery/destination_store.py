"""What the Intercom executor remembers about one workspace (``DestinationState`` of
``integrations/intercom/operations.py``).

``DestinationStore`` is what the executor remembers about one Intercom workspace: contact ids and
the fingerprint last sent (``ContactLink``), the event names we introduced (``KnownEventName``,
for Intercom's 120-name limit, reserved one at a time under a lock) and the workspace's custom attribute names (the Django cache: they
are cheap to fetch again and change behind our back when someone edits them in Intercom).
"""

from __future__ import annotations

import threading
import time
from typing import Literal

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from integrations.models import Destination
from streaming.models import ContactLink, Delivery, KnownEventName, TagListSent

ATTRIBUTE_NAMES_TTL = 3600


class DestinationStore:
    """``DestinationState`` over ContactLink, KnownEventName and the cache, for one destination."""

    def __init__(self, *, destination: Destination) -> None:
        self.destination_id = destination.pk
        # Ids can be reused (a test database, a restored backup): the creation time makes the
        # per-process caches' key unique to this destination.
        self._cache_key = (destination.pk, destination.created_at)

    def contact_get(self, user_key: str) -> tuple[str, str] | None:
        row = (
            ContactLink.objects.filter(destination_id=self.destination_id, user_key=user_key)
            .values_list("contact_id", "fingerprint")
            .first()
        )
        return (row[0], row[1]) if row else None

    def contact_set(self, user_key: str, contact_id: str, role: str, fingerprint: str) -> None:
        values = {"contact_id": contact_id, "role": role, "fingerprint": fingerprint}
        links = ContactLink.objects.filter(destination_id=self.destination_id, user_key=user_key)
        if links.update(updated_at=timezone.now(), **values):
            return
        try:
            with transaction.atomic():
                ContactLink.objects.create(
                    destination_id=self.destination_id, user_key=user_key, **values
                )
        except IntegrityError:
            # Another sync into the same workspace linked this user in between: ours is newer.
            links.update(updated_at=timezone.now(), **values)

    def contact_forget(self, user_key: str) -> None:
        ContactLink.objects.filter(destination_id=self.destination_id, user_key=user_key).delete()

    def contact_role(self, user_key: str) -> str | None:
        return (
            ContactLink.objects.filter(destination_id=self.destination_id, user_key=user_key)
            .values_list("role", flat=True)
            .first()
        )

    def lead_calls_pending(self, lead_key: str) -> bool:
        return Delivery.objects.filter(
            lane__sync__destination_id=self.destination_id,
            lane__sync__anonymous="lead",
            lane__user_key=lead_key,
            status=Delivery.Status.PENDING,
        ).exists()

    def tag_ids(self) -> dict[str, str] | None:
        return cache.get(f"sb:tags:{self.destination_id}")

    def tag_ids_set(self, tags: dict[str, str]) -> None:
        cache.set(f"sb:tags:{self.destination_id}", dict(tags), ATTRIBUTE_NAMES_TTL)

    def tags_sent(self, owner_key: str, list_name: str) -> set[str] | None:
        names = (
            TagListSent.objects.filter(
                destination_id=self.destination_id, owner_key=owner_key, list_name=list_name
            )
            .values_list("names", flat=True)
            .first()
        )
        return set(names) if names is not None else None

    def tags_sent_set(self, owner_key: str, list_name: str, names: set[str]) -> None:
        TagListSent.objects.update_or_create(
            destination_id=self.destination_id,
            owner_key=owner_key,
            list_name=list_name,
            defaults={"names": sorted(names, key=str.casefold)},
        )

    def _attributes_key(self, model: str) -> str:
        return f"sb:attributes:{self.destination_id}:{model}"

    def attribute_names(self, model: Literal["contact", "company"]) -> set[str] | None:
        names = cache.get(self._attributes_key(model))
        return set(names) if names is not None else None

    def attribute_names_set(self, model: Literal["contact", "company"], names: set[str]) -> None:
        cache.set(self._attributes_key(model), sorted(names), ATTRIBUTE_NAMES_TTL)

    def event_names(self) -> set[str]:
        # Read for every track: a per-process copy spares the query. Near Intercom's limit, or
        # once stale, it is read again, so that workers elsewhere cannot push us past it.
        with _event_names_lock:
            cached = _event_names.get(self._cache_key)
            if (
                cached is not None
                and time.monotonic() < cached[0]
                and len(cached[1]) < EVENT_NAMES_FRESH_BELOW
            ):
                return set(cached[1])
        names = set(
            KnownEventName.objects.filter(destination_id=self.destination_id).values_list(
                "name", flat=True
            )
        )
        with _event_names_lock:
            _event_names[self._cache_key] = (time.monotonic() + EVENT_NAMES_TTL, names)
        return set(names)

    def event_name_reserve(self, name: str, limit: int) -> bool:
        # Count and insert under the destination's row lock: two workers each seeing 119 names
        # would otherwise both add theirs (126 distinct names once reached Intercom 4 too many).
        # On SQLite the IMMEDIATE transaction (config/settings.py) serialises the same way.
        with transaction.atomic():
            list(
                Destination.objects.select_for_update()
                .filter(pk=self.destination_id)
                .values_list("pk")
            )
            names = KnownEventName.objects.filter(destination_id=self.destination_id)
            if not names.filter(name=name).exists():
                if names.count() >= limit:
                    return False
                KnownEventName.objects.create(destination_id=self.destination_id, name=name)
        with _event_names_lock:
            cached = _event_names.get(self._cache_key)
            if cached is not None:
                cached[1].add(name)
        return True


_event_names: dict[tuple[int, object], tuple[float, set[str]]] = {}
_event_names_lock = threading.Lock()
EVENT_NAMES_TTL = 30.0
# Intercom keeps 120 active event names; below 100 known, a copy 30 s old cannot matter.
EVENT_NAMES_FRESH_BELOW = 100
