"""The attempt log (invariant 6): one ``DeliveryAttempt`` per HTTP exchange with Intercom.

``AttemptRecorder`` is the data plane's ``ExchangeRecorder`` (``integrations/intercom/operations.py``).
The row is created before the request leaves (``storage.attempt_create``), so that a worker
killed mid-request still leaves a trace, and completed with Intercom's answer after it
(``storage.attempt_answer``). A worker may hold the completion of a delivery's last exchange
back and write it in the same statement that moves the delivery to its next state: one round
trip to the database instead of two per call, which is most of what a delivery costs besides
the HTTP exchange itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.utils import timezone

from streaming.models import Delivery, DeliveryAttempt
from streaming.storage import RowsUpdate, attempt_answer, attempt_create

RESPONSE_EXCERPT_BYTES = 4096

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
        return attempt_create(
            delivery_id=self.delivery.pk,
            event_id=self.delivery.event_id,
            user_key=self.delivery.user_key,
            method=method[:7],
            url=url[:2000],
            request_body=body,
            started_at=timezone.now(),
        )

    def finished(self, handle: object, result: Any) -> None:
        verdict = result.verdict
        if result.status is None:
            category = DeliveryAttempt.Category.NETWORK
            error_code = result.network_error[:100]
        else:
            category = _CATEGORIES[verdict.kind]
            error_code = verdict.code[:100]
        self._completion = attempt_answer(
            handle,
            status_code=result.status,
            response_excerpt=excerpt_cut(result.excerpt or result.network_error),
            category=category,
            error_code=error_code,
            duration_ms=max(int(result.duration_ms), 0),
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
