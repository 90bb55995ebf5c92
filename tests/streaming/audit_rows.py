"""Crafted rows for the admin, timeline, health and audit API tests (events, deliveries,
attempts as a worker would leave them, made by the factories with the values these tests read),
and a reader of lane wake-ups."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from integrations.models import Source, Sync
from streaming.models import Delivery, DeliveryAttempt, Event
from tests.factories import DeliveryAttemptFactory, DeliveryFactory, EventFactory

SECRET_TOKEN = "tok_SECRET_do_not_show_6b2f9e"


def event_make(
    *,
    source: Source,
    user_id: str = "user-1",
    anonymous_id: str = "",
    type: str = "track",
    event_name: str = "Order Completed",
    received_at: datetime | None = None,
    traits: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    message_id: str | None = None,
) -> Event:
    """A call received at ``received_at`` (now); a track carries ``{"total": 42}``."""
    fields: dict[str, Any] = {"message_id": message_id} if message_id else {}
    return EventFactory(
        source=source,
        user_id=user_id,
        anonymous_id=anonymous_id,
        type=type,
        event_name=event_name if type == "track" else "",
        received_at=received_at or timezone.now(),
        properties={"total": 42} if type == "track" else None,
        traits=traits,
        context=context,
        **fields,
    )


def delivery_make(
    *,
    event: Event,
    sync: Sync,
    status: str = Delivery.Status.PENDING,
    attempts: int = 0,
    created_at: datetime | None = None,
    completed_at: datetime | None = None,
    next_attempt_at: datetime | None = None,
    reason: str = "",
    user_key: str | None = None,
) -> Delivery:
    """The event's delivery to ``sync``, in the lane of ``user_key`` (the event's userId)."""
    return DeliveryFactory(
        event=event,
        sync=sync,
        user_key=user_key or event.user_id,
        status=status,
        attempts=attempts,
        created_at=created_at or event.received_at,
        completed_at=completed_at,
        next_attempt_at=next_attempt_at,
        reason=reason,
    )


def attempt_make(
    *,
    delivery: Delivery,
    started_at: datetime | None = None,
    method: str = "POST",
    path: str = "/events",
    status_code: int | None = 202,
    category: str = DeliveryAttempt.Category.SUCCESS,
    response_excerpt: str = "",
    request_body: Any = None,
    error_code: str = "",
) -> DeliveryAttempt:
    """One exchange of ``delivery`` with its workspace, which took 87 ms."""
    return DeliveryAttemptFactory(
        delivery=delivery,
        method=method,
        path=path,
        request_body=request_body if request_body is not None else {"event_name": "x"},
        status_code=status_code,
        response_excerpt=response_excerpt,
        category=category,
        error_code=error_code,
        duration_ms=87,
        started_at=started_at or timezone.now(),
    )


def staff_make(*, username: str, perms: tuple[str, ...] = ()) -> User:
    user = User.objects.create_user(username=username, password="pw-for-tests", is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


# --- lane wake-ups, read from the real Redis broker -----------------------------------------


def _broker() -> redis.Redis:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def wakeups_clear() -> None:
    broker = _broker()
    for key in broker.scan_iter(settings.CELERY_TASK_DEFAULT_QUEUE + "*"):
        broker.delete(key)


def wakeup_messages() -> list[list[int]]:
    """The lane ids of each wake-up message waiting in the broker's queue, one list a message.

    Reads both shapes: ``lanes_drain`` (a list of lanes) and the older one-lane ``lane_drain``.
    """
    broker = _broker()
    messages: list[list[int]] = []
    for key in broker.scan_iter(settings.CELERY_TASK_DEFAULT_QUEUE + "*"):
        if broker.type(key) != b"list":
            continue
        for raw in broker.lrange(key, 0, -1):
            message = json.loads(raw)
            task = message["headers"].get("task")
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            if task == "switchboard.lanes_drain":
                messages.append(list(args[0]))
            elif task == "switchboard.lane_drain":
                messages.append([args[0]])
    return messages


def wakeups_read() -> list[int]:
    """The lane ids of the wake-up messages waiting in the broker's queue."""
    return sorted(lane_id for message in wakeup_messages() for lane_id in message)
