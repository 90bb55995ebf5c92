"""factory-boy factories for the models (shared by every test module).

Each factory makes a row as the application would leave it: an Event's payload is a call
normalised by ingest's own ``call_normalise``; a Delivery sits in the lane of its sync and user
key; an attempt belongs to its delivery's event and lane key.
"""

from __future__ import annotations

import secrets
from typing import Any

import factory
from django.utils import timezone

from integrations.models import (
    Destination,
    EventFilter,
    PropertyMapping,
    Source,
    Sync,
    WriteKey,
    write_key_hash,
)
from streaming.ingest.segment import call_normalise
from streaming.models import (
    CallType,
    ContactLink,
    Delivery,
    DeliveryAttempt,
    Event,
    KnownEventName,
    Lane,
)

# --- the control plane ----------------------------------------------------------------------


class SourceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Source

    name = factory.Sequence(lambda n: f"source-{n}")
    kind = Source.Kind.HTTP


class WriteKeyFactory(factory.django.DjangoModelFactory):
    """A write key of an HTTP source; the key a client sends is ``.plaintext`` (never stored)."""

    class Meta:
        model = WriteKey

    source = factory.SubFactory(SourceFactory)
    label = ""
    plaintext = factory.LazyFunction(lambda: "sb_" + secrets.token_urlsafe(32))
    prefix = factory.LazyAttribute(lambda key: key.plaintext[:10])
    key_hash = factory.LazyAttribute(lambda key: write_key_hash(key.plaintext))

    @classmethod
    def _build(cls, model_class: type[WriteKey], *args: Any, **kwargs: Any) -> WriteKey:
        plaintext = kwargs.pop("plaintext")
        key = super()._build(model_class, *args, **kwargs)
        key.plaintext = plaintext
        return key

    @classmethod
    def _create(cls, model_class: type[WriteKey], *args: Any, **kwargs: Any) -> WriteKey:
        plaintext = kwargs.pop("plaintext")
        key = super()._create(model_class, *args, **kwargs)
        key.plaintext = plaintext
        return key


class DestinationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Destination

    name = factory.Sequence(lambda n: f"workspace-{n}")
    region = Destination.Region.CUSTOM
    base_url = "http://127.0.0.1:8765"
    access_token = factory.Sequence(lambda n: f"dG9rOnRlc3Q{n}token")


class SyncFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Sync
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"sync-{n}")
    destination = factory.SubFactory(DestinationFactory)

    @factory.post_generation
    def sources(self, create: bool, extracted: list[Source] | None, **kwargs: object) -> None:
        if create:
            self.sources.set(extracted if extracted is not None else [SourceFactory()])


class EventFilterFactory(factory.django.DjangoModelFactory):
    """An include filter on an event name pattern (a sync also has its own exclude filter)."""

    class Meta:
        model = EventFilter

    sync = factory.SubFactory(SyncFactory)
    action = EventFilter.Action.INCLUDE
    event_name = "Order *"


class PropertyMappingFactory(factory.django.DjangoModelFactory):
    """A property selected as event metadata."""

    class Meta:
        model = PropertyMapping

    sync = factory.SubFactory(SyncFactory)
    target = PropertyMapping.Target.EVENT_METADATA
    source_path = factory.Sequence(lambda n: f"properties.field_{n}")
    intercom_name = factory.Sequence(lambda n: f"field_{n}")


# --- the queue of record and the audit trail ------------------------------------------------


def _call_raw(event: Any) -> dict[str, Any]:
    """The call a client would have sent for the factory's fields (before normalisation)."""
    raw: dict[str, Any] = {"type": str(event.type), "messageId": event.message_id}
    if event.user_id:
        raw["userId"] = event.user_id
    if event.anonymous_id:
        raw["anonymousId"] = event.anonymous_id
    if event.type == CallType.TRACK:
        raw["event"] = event.event_name
    elif event.type in (CallType.PAGE, CallType.SCREEN) and event.event_name:
        raw["name"] = event.event_name
    elif event.type == CallType.GROUP:
        raw["groupId"] = event.group_id
    elif event.type == CallType.ALIAS:
        raw["previousId"] = event.previous_id
    for field, value in (
        ("properties", event.properties),
        ("traits", event.traits),
        ("context", event.context),
    ):
        if value is not None:
            raw[field] = value
    return raw


class EventFactory(factory.django.DjangoModelFactory):
    """A stored call: by default a track of "Order Completed", received now.

    The payload is what ingest stores: the call built from these fields (and ``properties``,
    ``traits``, ``context``, ``group_id``, ``previous_id``), normalised by ``call_normalise``
    (so it carries its messageId, timestamp and receivedAt); ``timestamp`` is the normalised one.
    """

    class Meta:
        model = Event

    class Params:
        properties = None
        traits = None
        context = None
        group_id = "company-1"
        previous_id = "anonymous-1"
        call = factory.LazyAttribute(
            lambda event: call_normalise(
                _call_raw(event), call_type=str(event.type), received_at=event.received_at
            )
        )

    source = factory.SubFactory(SourceFactory)
    type = CallType.TRACK
    message_id = factory.Sequence(lambda n: f"msg-{n}")
    user_id = factory.Sequence(lambda n: f"user-{n}")
    anonymous_id = ""
    event_name = factory.LazyAttribute(
        lambda event: "Order Completed" if event.type == CallType.TRACK else ""
    )
    received_at = factory.LazyFunction(timezone.now)
    payload = factory.SelfAttribute("call.payload")
    timestamp = factory.SelfAttribute("call.timestamp")


class LaneFactory(factory.django.DjangoModelFactory):
    """One (sync, user key) lane; asking again for the same pair gives the same lane."""

    class Meta:
        model = Lane
        django_get_or_create = ("sync", "user_key")

    sync = factory.SubFactory(SyncFactory)
    user_key = factory.Sequence(lambda n: f"user-{n}")


class DeliveryFactory(factory.django.DjangoModelFactory):
    """One event to one sync (of the event's source), pending, in the lane of its user key.

    The user key defaults to the event's userId (else its anonymousId); the lane is the sync's
    lane for that key, created on first use and left as it is (its schedule is not touched).
    """

    class Meta:
        model = Delivery
        skip_postgeneration_save = True

    event = factory.SubFactory(EventFactory)
    sync = factory.SubFactory(SyncFactory, sources=[])  # the event's source: see below
    user_key = factory.LazyAttribute(
        lambda delivery: delivery.event.user_id or delivery.event.anonymous_id
    )
    lane = factory.SubFactory(
        LaneFactory,
        sync=factory.SelfAttribute("..sync"),
        user_key=factory.SelfAttribute("..user_key"),
    )
    status = Delivery.Status.PENDING
    attempts = 0
    created_at = factory.SelfAttribute("event.received_at")

    @factory.post_generation
    def sync_sources(self, create: bool, extracted: None, **kwargs: object) -> None:
        # A sync's sources can only be set once it is saved, out of reach of the SubFactory.
        if create and not self.sync.sources.exists():
            self.sync.sources.add(self.event.source)


class DeliveryAttemptFactory(factory.django.DjangoModelFactory):
    """One exchange with Intercom for a delivery: by default POST /events, answered 202."""

    class Meta:
        model = DeliveryAttempt

    class Params:
        path = "/events"

    delivery = factory.SubFactory(DeliveryFactory)
    event = factory.SelfAttribute("delivery.event")
    user_key = factory.SelfAttribute("delivery.user_key")
    method = "POST"
    url = factory.LazyAttribute(
        lambda attempt: attempt.delivery.sync.destination.api_base_url + attempt.path
    )
    request_body = factory.LazyAttribute(
        lambda attempt: {
            "event_name": attempt.event.event_name,
            "created_at": int(attempt.event.timestamp.timestamp()),
            "user_id": attempt.user_key,
        }
    )
    status_code = 202
    category = DeliveryAttempt.Category.SUCCESS
    duration_ms = 87
    started_at = factory.LazyFunction(timezone.now)


class ContactLinkFactory(factory.django.DjangoModelFactory):
    """What we know of a user's Intercom contact in a workspace."""

    class Meta:
        model = ContactLink

    destination = factory.SubFactory(DestinationFactory)
    user_key = factory.Sequence(lambda n: f"user-{n}")
    contact_id = factory.Sequence(lambda n: f"65c0{n:08x}")
    role = "user"


class KnownEventNameFactory(factory.django.DjangoModelFactory):
    """An event name a workspace received through us."""

    class Meta:
        model = KnownEventName

    destination = factory.SubFactory(DestinationFactory)
    name = factory.Sequence(lambda n: f"Event {n}")
