"""The delivery room's signal receivers (connected in ``StreamingConfig.ready``).

Ingest announces lanes with new deliveries (``lanes_queued``): the workers are woken from the
publishing thread (``wakeups``).

A sync enabled again (after a pause) sends what it held: its pending deliveries get a fresh retry
window (the pause must not use it up) and its lanes are woken.

A destination whose token Intercom refused (401) holds its deliveries; saving it with a different
token is the operator's "I fixed it": the hold is lifted and its lanes are woken at once.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

from integrations.models import Destination, Sync
from streaming.delivery.replay import sync_held_release
from streaming.delivery.sweep import destination_lanes_wake
from streaming.delivery.wakeups import lanes_wake_soon
from streaming.signals import lanes_queued


@receiver(lanes_queued, dispatch_uid="switchboard.lanes_queued")
def lanes_queued_wake(sender: type, lane_ids: list[int], **kwargs: Any) -> None:
    lanes_wake_soon(lane_ids)


@receiver(pre_save, sender=Destination, dispatch_uid="switchboard.destination_token_changed")
def destination_token_changed(sender: type, instance: Destination, **kwargs: Any) -> None:
    if instance.pk is None:
        return
    stored = Destination.objects.filter(pk=instance.pk).values_list(
        "access_token", "auth_failed_at"
    )
    row = stored.first()
    if row is None or row[1] is None:
        return
    if row[0] != instance.access_token:
        instance._switchboard_auth_cleared = True


@receiver(post_save, sender=Destination, dispatch_uid="switchboard.destination_lanes_wake")
def destination_lanes_wake_after_token(sender: type, instance: Destination, **kwargs: Any) -> None:
    if getattr(instance, "_switchboard_auth_cleared", False):
        instance._switchboard_auth_cleared = False
        # An update rather than the instance's field: a save with update_fields would drop it.
        Destination.objects.filter(pk=instance.pk).update(auth_failed_at=None)
        instance.auth_failed_at = None

        transaction.on_commit(lambda: destination_lanes_wake(destination_id=instance.pk))


@receiver(pre_save, sender=Sync, dispatch_uid="switchboard.sync_resumed")
def sync_status_changing(sender: type, instance: Sync, **kwargs: Any) -> None:
    if instance.pk is None or not instance.is_enabled:
        return
    before = Sync.objects.filter(pk=instance.pk).values_list("status", flat=True).first()
    instance._switchboard_resumed = before is not None and before != Sync.Status.ENABLED


@receiver(post_save, sender=Sync, dispatch_uid="switchboard.sync_held_release")
def sync_resumed_release(sender: type, instance: Sync, **kwargs: Any) -> None:
    if getattr(instance, "_switchboard_resumed", False):
        instance._switchboard_resumed = False
        sync_held_release(sync=instance)
