"""Django signals the host application can receive.

``event_ingested``
    Sent once per ingest, after the transaction that stored the events has committed.
    Arguments: ``source_id`` (int) and ``event_ids`` (list of Event ids newly stored; duplicates
    of an already stored messageId are not included). ``sender`` is the ``Source`` model class.

``delivery_succeeded``
    Sent by the delivery worker when Intercom accepted a delivery. Arguments: ``delivery`` (the
    ``Delivery``, its status already ``succeeded``). ``sender`` is the ``Delivery`` model class.

``delivery_failed``
    Sent by the delivery worker when a delivery ends without success (``failed`` or ``expired``).
    Arguments: ``delivery`` (the ``Delivery``, with its ``status`` and ``reason``). ``sender`` is
    the ``Delivery`` model class.

``intercom_activity``
    Sent once per accepted Intercom webhook notification, after the transaction that stored its
    calls has committed (never for ``ping``, never again for Intercom's retry of a notification
    already stored). Arguments: ``source_id`` (int), ``notification`` (an
    ``integrations.intercom.webhooks.Notification``: ``id``, ``topic`` as Intercom names it, e.g.
    ``conversation.admin.closed``, ``created_at``, ``app_id`` and ``item``, Intercom's object as
    sent, which is not stored) and ``event_ids`` (the Events stored for it). ``sender`` is the
    ``Source`` model class. docs/webhooks.md has an example.

``lanes_queued`` (internal)
    Sent by ingest after commit with ``lane_ids``: the lanes that have new deliveries. The
    delivery room receives it and wakes the workers (``streaming.delivery.wakeups``); it is how
    ingest hands work on without importing the delivery side.

Receivers run in the sender's process; keep them quick and never let them raise (a receiver that
needs to do real work should queue it).
"""

from __future__ import annotations

from django.dispatch import Signal

event_ingested = Signal()
delivery_succeeded = Signal()
delivery_failed = Signal()
intercom_activity = Signal()
lanes_queued = Signal()
