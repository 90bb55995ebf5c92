"""The data plane's side of the executor contract (``integrations/intercom/operations.py``).

``DestinationStore`` is what the executor remembers about one Intercom workspace: contact ids and
the fingerprint last sent (``ContactLink``), the event names we introduced (``KnownEventName``,
for Intercom's 120-name limit) and the workspace's custom attribute names (the Django cache: they
are cheap to fetch again and change behind our back when someone edits them in Intercom).

``AttemptRecorder`` writes the attempt log (invariant 6): one ``DeliveryAttempt`` per HTTP
exchange, created before the request leaves, so that a worker killed mid-request still leaves a
trace, and completed with Intercom's answer after it. A worker may hold the completion of a
delivery's last exchange back and write it in the same statement that moves the delivery to its
next state (``rows_update_together``): one round trip to the database instead of two per call,
which is most of what a delivery costs besides the HTTP exchange itself. Both statements skip
the ORM's per-call compiling (``streaming/statements.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from integrations.intercom.client import Result, classify
from integrations.models import Destination
from streaming.models import ContactLink, Delivery, DeliveryAttempt, KnownEventName
from streaming.statements import RowsUpdate, row_insert

ATTRIBUTE_NAMES_TTL = 3600
RESPONSE_EXCERPT_BYTES = 4096


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

    def event_name_add(self, name: str) -> None:
        KnownEventName.objects.bulk_create(
            [KnownEventName(destination_id=self.destination_id, name=name)],
            ignore_conflicts=True,
        )
        with _event_names_lock:
            cached = _event_names.get(self._cache_key)
            if cached is not None:
                cached[1].add(name)


_event_names: dict[tuple[int, object], tuple[float, set[str]]] = {}
_event_names_lock = threading.Lock()
EVENT_NAMES_TTL = 30.0
# Intercom keeps 120 active event names; below 100 known, a copy 30 s old cannot matter.
EVENT_NAMES_FRESH_BELOW = 100


_CATEGORIES = {
    "success": DeliveryAttempt.Category.SUCCESS,
    "retryable": DeliveryAttempt.Category.RETRYABLE,
    "rate_limited": DeliveryAttempt.Category.RATE_LIMITED,
    "permanent": DeliveryAttempt.Category.PERMANENT,
    "auth": DeliveryAttempt.Category.PERMANENT,
}


def excerpt_cut(text: str, *, limit: int = RESPONSE_EXCERPT_BYTES) -> str:
    """At most ``limit`` bytes of UTF-8, never splitting a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")


class AttemptRecorder:
    """``ExchangeRecorder`` writing one DeliveryAttempt per exchange of one delivery.

    With ``completion_deferred`` the answer to the last exchange is kept until the caller takes
    it (``completion_take``) to write it with the delivery's new state, or ``flush``es it. The
    row itself is always created before the request: a crash in between leaves an attempt
    without an answer, exactly as a crash during the request does.
    """

    def __init__(
        self,
        *,
        delivery: Delivery,
        heartbeat: Callable[[], object] | None = None,
        completion_deferred: bool = False,
    ) -> None:
        self.delivery = delivery
        self.heartbeat = heartbeat
        self.exchanges = 0
        self.completion_deferred = completion_deferred
        self._completion: RowsUpdate | None = None

    def started(self, *, method: str, url: str, body: Any) -> object:
        if self.heartbeat is not None:
            self.heartbeat()
        # An earlier exchange of the same delivery is completed before the next one leaves.
        self.flush()
        self.exchanges += 1
        return row_insert(
            DeliveryAttempt,
            delivery_id=self.delivery.pk,
            event_id=self.delivery.event_id,
            user_key=self.delivery.user_key,
            method=method[:7],
            url=url[:2000],
            request_body=body,
            started_at=timezone.now(),
        )

    def finished(self, handle: object, result: Result) -> None:
        verdict = classify(result, creating=result.method == "POST")
        if result.status is None:
            category = DeliveryAttempt.Category.NETWORK
            error_code = result.network_error[:100]
        else:
            category = _CATEGORIES[verdict.kind]
            error_code = verdict.code[:100]
        self._completion = RowsUpdate(
            DeliveryAttempt,
            {"pk": handle},
            {
                "status_code": result.status,
                "response_excerpt": excerpt_cut(result.excerpt or result.network_error),
                "category": category,
                "error_code": error_code,
                "duration_ms": max(int(result.duration_ms), 0),
            },
        )
        if not self.completion_deferred:
            self.flush()

    def completion_take(self) -> RowsUpdate | None:
        """The last exchange's completion, not written yet; the caller now writes it."""
        completion, self._completion = self._completion, None
        return completion

    def flush(self) -> None:
        """Write a held-back completion now."""
        completion = self.completion_take()
        if completion is not None:
            completion.run()
