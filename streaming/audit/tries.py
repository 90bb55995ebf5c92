"""A delivery's HTTP attempts grouped by try, each try's recovery path named in words.

A try is one run of Intercom's door for the delivery (``integrations.intercom.deliver``): one or
more exchanges, e.g. ``POST /events`` 404, ``POST /contacts`` 200, ``POST /events`` 202 — the
normal "contact did not exist -> created -> event resent" path, which must read as one
succeeded try, not as two red errors. The attempt log has no try number, so tries are told
apart by what ends one:

- a retryable answer, a network error, a 429 or an exchange left without an answer: the door
  raises, and the next exchange belongs to a later try (after a backoff, or the reset);
- a replay after a permanent failure: the next exchange starts after the delivery's retry
  window restarted (``window_started_at``, set by the replay), or more than ``REPLAY_GAP`` after
  the refusal (an older replay), since the door follows a refusal it recovers from at once.

Within a try, an error the next exchange recovers from (a 404 on an event followed by a create)
is "handled", and shown as such rather than as a failure.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from streaming.models import Delivery, DeliveryAttempt

REPLAY_GAP = timedelta(seconds=30)
_ENDS_A_TRY = {
    DeliveryAttempt.Category.RETRYABLE,
    DeliveryAttempt.Category.NETWORK,
    DeliveryAttempt.Category.RATE_LIMITED,
    DeliveryAttempt.Category.IN_FLIGHT,
}


@dataclass
class Exchange:
    """One attempt as a try shows it: the step in words, and the bodies pretty-printed."""

    attempt: DeliveryAttempt
    step: str
    handled: bool = False  # an error the rest of the try recovered from

    @property
    def tone(self) -> str:
        return "handled" if self.handled else str(self.attempt.category)

    @property
    def request_pretty(self) -> str:
        return json_pretty(self.attempt.request_body)

    @property
    def response_pretty(self) -> str:
        return json_pretty(self.attempt.response_excerpt)


@dataclass
class Try:
    """One run of the door: its exchanges, the path they took, and how it ended."""

    number: int
    exchanges: list[Exchange] = field(default_factory=list)
    replayed: bool = False  # the first try after a replay

    @property
    def started_at(self) -> datetime:
        return self.exchanges[0].attempt.started_at

    @property
    def path(self) -> str:
        return " → ".join(exchange.step for exchange in self.exchanges)

    @property
    def outcome(self) -> str:
        """``succeeded``, ``retry``, ``rate_limited``, ``failed`` or ``in_flight``."""
        last = self.exchanges[-1].attempt.category
        return {
            DeliveryAttempt.Category.SUCCESS: "succeeded",
            DeliveryAttempt.Category.PERMANENT: "failed",
            DeliveryAttempt.Category.RATE_LIMITED: "rate_limited",
            DeliveryAttempt.Category.IN_FLIGHT: "in_flight",
        }.get(last, "retry")

    @property
    def outcome_text(self) -> str:
        return {
            "succeeded": "succeeded",
            "failed": "refused by Intercom",
            "rate_limited": "Intercom's rate limit: waited for the reset (not a failed try)",
            "in_flight": "no answer recorded (the worker stopped during the request)",
            "retry": "failed, to be tried again",
        }[self.outcome]


def json_pretty(value: Any) -> str:
    """A JSON value, or a text holding JSON, indented; other text as it is; None as ''."""
    if value in (None, ""):
        return ""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def attempts_by_try(delivery: Delivery, attempts: list[DeliveryAttempt]) -> list[Try]:
    """``attempts`` (the delivery's, in id order) grouped by try; see the module doc."""
    tries: list[Try] = []
    previous: DeliveryAttempt | None = None
    for attempt in attempts:
        replayed = previous is not None and _replayed_between(delivery, previous, attempt)
        if previous is None or previous.category in _ENDS_A_TRY or replayed:
            tries.append(Try(number=len(tries) + 1, replayed=replayed))
        current = tries[-1]
        # Still the same try after a refusal: the door recovered from it.
        if current.exchanges and previous is not None and previous.category == "permanent":
            current.exchanges[-1].handled = True
        earlier = [e.attempt for e in current.exchanges]
        current.exchanges.append(Exchange(attempt=attempt, step=step_name(attempt, earlier)))
        previous = attempt
    return tries


def _replayed_between(delivery: Delivery, before: DeliveryAttempt, after: DeliveryAttempt) -> bool:
    if before.category != DeliveryAttempt.Category.PERMANENT:
        return False  # only a refusal ends a delivery that a replay sends again
    restarted = delivery.window_started_at
    if restarted is not None and before.started_at < restarted <= after.started_at:
        return True
    ended = before.started_at + timedelta(milliseconds=before.duration_ms or 0)
    return after.started_at - ended > REPLAY_GAP


_CONTACT_ID = r"/contacts/[^/]+"


def step_name(attempt: DeliveryAttempt, earlier: list[DeliveryAttempt]) -> str:
    """One exchange in the operator's words, e.g. "contact did not exist" for a 404 on /events."""
    path = re.sub(r"^[a-z]+://[^/]+", "", attempt.url).split("?")[0]
    method, status = attempt.method, attempt.status_code
    ok = attempt.category == DeliveryAttempt.Category.SUCCESS
    if attempt.category == DeliveryAttempt.Category.RATE_LIMITED:
        return "rate limited (429)"
    if status is None:
        if attempt.category == DeliveryAttempt.Category.IN_FLIGHT:
            return "no answer recorded"
        return "no answer (network error or timeout)"
    if not ok and status >= 500:
        return f"Intercom error {status}"
    if path == "/events":
        if status == 404:
            return "contact did not exist"
        again = any(a.url.split("?")[0].endswith("/events") for a in earlier)
        if ok:
            return "event resent" if again else "event sent"
        return f"event refused ({status})"
    if path == "/contacts" and method == "POST":
        if ok:
            return "contact created"
        if status == 409:
            return "contact already existed (409)"
        return f"contact refused ({status})"
    if path == "/contacts/search":
        return "contact searched" if ok else f"search refused ({status})"
    if path.startswith("/contacts/find_by_external_id/"):
        if status == 404:
            return "not found by external id"
        return "contact found" if ok else f"lookup refused ({status})"
    if path == "/contacts/merge":
        return "lead merged into the user" if ok else f"merge refused ({status})"
    if re.fullmatch(_CONTACT_ID + "/unarchive", path):
        return "contact unarchived" if ok else f"unarchive refused ({status})"
    if re.fullmatch(_CONTACT_ID + "/companies(/[^/]+)?", path):
        if method == "DELETE":
            return "detached from the company" if ok else f"detach refused ({status})"
        return "attached to the company" if ok else f"attach refused ({status})"
    if re.fullmatch(_CONTACT_ID, path):
        if status == 404:
            return "contact not found (404)"
        if status == 410:
            return "contact was merged (410)"
        verb = {"PUT": "contact updated", "GET": "contact read", "DELETE": "contact deleted"}
        return verb.get(method, f"{method} contact") if ok else f"contact refused ({status})"
    if path == "/data_attributes":
        if method == "GET":
            return "attributes listed" if ok else f"attributes not listed ({status})"
        return "attribute created" if ok else f"attribute refused ({status})"
    if path.startswith("/companies"):
        return "company saved" if ok else f"company refused ({status})"
    if path == "/tags":
        return "tagged" if ok else f"tag refused ({status})"
    return f"{method} {path} {status}"
