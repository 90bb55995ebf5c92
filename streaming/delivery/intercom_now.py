""" "Intercom now": the contact as Intercom holds it now, beside what Switchboard last sent.

The answer to "why doesn't Intercom show what we sent?". From a delivery of the timeline: the
contact is read with one GET (by the id its ``ContactLink`` remembers, else by the external id
the sync's identity mapping gives), through the destination's shared rate limiter and Intercom's
door, and logged like any call: an ``Event`` of type ``lookup`` (message id ``sb-lookup-…``,
payload ``context.switchboard = {"lookup": true, "sent_by": …}``), one ``Delivery``, ``skipped``
since nothing was sent, and its ``DeliveryAttempt``. A 401 holds the destination, as a worker
would.

What Switchboard last sent is the body of the latest successful ``POST /contacts`` or
``PUT /contacts/{id}`` to that workspace about the user (the attempt log keeps it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from django.db import transaction
from django.utils import timezone

from integrations.intercom import (
    AuthenticationError,
    IntercomError,
    client_for,
    contact_read,
)
from integrations.intercom.identity import identity_resolve
from integrations.models import Sync
from integrations.selectors import sync_config_build
from streaming.delivery.attempts import AttemptRecorder
from streaming.delivery.ratelimit import rate_limiter_get
from streaming.delivery.states import destination_auth_hold, destination_health_record
from streaming.models import CallType, ContactLink, Delivery, DeliveryAttempt, Event, Lane

LOOKUP_MESSAGE_PREFIX = "sb-lookup-"
_CONTACT_WRITE = re.compile(r"/contacts(/[^/?]+)?$")


@dataclass(frozen=True)
class Difference:
    """One field we sent: its value then, and Intercom's now."""

    name: str
    sent: Any
    now: Any
    differs: bool


@dataclass
class IntercomNow:
    delivery: Delivery  # the delivery the operator started from
    lookup: Delivery | None = None  # the logged read (None when nothing could be asked)
    attempt: DeliveryAttempt | None = None
    contact: dict[str, Any] | None = None  # Intercom's answer; None: no such contact
    last_sent: DeliveryAttempt | None = None
    differences: list[Difference] = field(default_factory=list)
    problem: str = ""  # why there is no answer to compare, in the operator's words


def last_contact_write(*, sync: Sync, user_key: str) -> DeliveryAttempt | None:
    """The latest contact create or update that Intercom accepted for this user, in the sync's
    workspace (the attempt log's ``user_key`` index, then the newest first)."""
    candidates = (
        DeliveryAttempt.objects.filter(
            user_key=user_key,
            category=DeliveryAttempt.Category.SUCCESS,
            method__in=("POST", "PUT"),
            delivery__sync__destination_id=sync.destination_id,
        )
        .exclude(request_body=None)
        .order_by("-id")
    )
    for attempt in candidates[:200]:
        if _CONTACT_WRITE.search(attempt.url.split("?")[0]):
            return attempt
    return None


def contact_compare(sent: dict[str, Any], now: dict[str, Any] | None) -> list[Difference]:
    """Each field of the body we sent (custom attributes one by one) beside Intercom's value."""
    now = now or {}
    rows: list[Difference] = []
    for name, value in sorted(sent.items()):
        if name == "custom_attributes" and isinstance(value, dict):
            held = now.get("custom_attributes") or {}
            for key, attribute in sorted(value.items()):
                rows.append(
                    Difference(
                        name=f"custom_attributes.{key}",
                        sent=attribute,
                        now=held.get(key),
                        differs=held.get(key) != attribute,
                    )
                )
            continue
        rows.append(
            Difference(name=name, sent=value, now=now.get(name), differs=now.get(name) != value)
        )
    return rows


def intercom_now(*, delivery: Delivery, sent_by: str) -> IntercomNow:
    """Read the delivery's contact from Intercom now and compare it (see the module doc)."""
    sync = delivery.sync
    destination = sync.destination
    result = IntercomNow(delivery=delivery)
    result.last_sent = last_contact_write(sync=sync, user_key=delivery.user_key)
    link = ContactLink.objects.filter(
        destination_id=destination.pk, user_key=delivery.user_key
    ).first()
    identity = identity_resolve(call=delivery.event.payload, config=sync_config_build(sync=sync))
    external_id = "" if isinstance(identity, str) else (identity.external_id or "")
    if link is None and not external_id:
        result.problem = (
            "Switchboard does not know this contact's Intercom id, and the call has no external "
            "id to find it by (a contact matched by email): nothing was asked."
        )
        return result

    now = timezone.now()
    with transaction.atomic():
        event = Event.objects.create(
            source_id=delivery.event.source_id,
            message_id=LOOKUP_MESSAGE_PREFIX + uuid4().hex,
            type=CallType.LOOKUP,
            user_id=delivery.event.user_id,
            anonymous_id=delivery.event.anonymous_id,
            payload={
                "type": "lookup",
                "userId": delivery.event.user_id,
                "context": {
                    "switchboard": {
                        "lookup": True,
                        "sent_by": sent_by,
                        "delivery": delivery.pk,
                    }
                },
            },
            timestamp=now,
            received_at=now,
        )
        lane, _ = Lane.objects.get_or_create(sync=sync, user_key=delivery.user_key)
        # Never pending (no worker reads it), and "skipped": nothing was sent to Intercom.
        lookup = Delivery.objects.create(
            event=event,
            sync=sync,
            lane=lane,
            user_key=delivery.user_key,
            status=Delivery.Status.SKIPPED,
            reason="Intercom now: the contact was read, nothing was sent.",
            created_at=now,
        )
    recorder = AttemptRecorder(delivery=lookup)
    try:
        result.contact = contact_read(
            client=client_for(destination, limiter=rate_limiter_get(destination_id=destination.pk)),
            recorder=recorder,
            contact_id=link.contact_id if link else "",
            external_id="" if link else external_id,
        )
    except AuthenticationError as error:
        destination_auth_hold(destination=destination, error=str(error))
        result.problem = f"Intercom refused the token: {error}"
    except IntercomError as error:
        destination_health_record(destination=destination, error=str(error))
        result.problem = f"Intercom did not answer with the contact: {error}"
    else:
        if result.contact is None:
            result.problem = "Intercom has no such contact now (404): it was deleted or merged."
    recorder.flush()
    Delivery.objects.filter(pk=lookup.pk).update(completed_at=timezone.now())
    result.lookup = lookup
    result.attempt = lookup.attempt_log.order_by("-id").first()
    if result.last_sent is not None and isinstance(result.last_sent.request_body, dict):
        result.differences = contact_compare(result.last_sent.request_body, result.contact)
    return result
