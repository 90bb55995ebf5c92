"""Intercom, behind one door: the data plane calls ``deliver`` and catches a handful of errors.

``deliver`` turns one stored call into Intercom's operations under a sync's configuration
(``transforms.plan_build``, pure) and performs them with the client (``executor.plan_execute``),
reporting every HTTP exchange to the caller's ``ExchangeRecorder``. ``contact_read`` reads one
contact as Intercom holds it now (an operator's "Intercom now"), reported the same way. What the data plane must tell
apart comes back as one ``Outcome`` or one of four errors:

- ``RateLimitedError``: 429, wait until ``reset_at``; not a failed try;
- ``AuthenticationError``: 401, the token is refused: hold the destination;
- ``PermanentError``: sending the same again cannot succeed: the delivery fails;
- ``RetryableError``: try again later (network, 5xx, 408, a contact not there yet).

Everything else about Intercom (contacts, attributes, event names, merges, companies, the
classification of answers) stays inside this package. Inside: ``identity`` (who a call is
about), ``transforms`` (call -> operations, pure), ``executor`` (operations -> HTTP, stateful),
``client`` (HTTP only), ``webhooks`` (Intercom's notifications, pure), ``sandbox`` (a fake
Intercom for demos, tests and benchmarks).
"""

from __future__ import annotations

from integrations.intercom.client import (
    AuthenticationError,
    IntercomClient,
    IntercomError,
    PermanentError,
    RateLimitedError,
    RateLimiter,
    RetryableError,
)
from integrations.intercom.executor import Outcome, plan_execute
from integrations.intercom.lookup import contact_read
from integrations.intercom.operations import (
    DestinationState,
    ExchangeRecorder,
    SyncConfig,
)
from integrations.intercom.transforms import plan_build

__all__ = [
    "AuthenticationError",
    "IntercomClient",
    "IntercomError",
    "Outcome",
    "PermanentError",
    "RateLimitedError",
    "RetryableError",
    "client_for",
    "contact_read",
    "deliver",
]


def client_for(destination: object, *, limiter: RateLimiter | None = None) -> IntercomClient:
    """The pooled client of a Destination (one per destination, token, URL and timeouts)."""
    return IntercomClient.from_destination(destination, limiter=limiter)


def deliver(
    *,
    call: dict,
    config: SyncConfig,
    client: IntercomClient,
    state: DestinationState,
    recorder: ExchangeRecorder,
) -> Outcome:
    """Send one stored call to Intercom under one sync's configuration.

    A call that maps to nothing (filtered, no identity, an ignored page) comes back as a
    "skipped" ``Outcome`` with its reason, without a request. Raises the errors above.
    """
    plan = plan_build(call=call, config=config)
    return plan_execute(plan=plan, client=client, state=state, recorder=recorder)
