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

Receivers run in the sender's process; keep them quick and never let them raise (a receiver that
needs to do real work should queue it).
"""

from __future__ import annotations

from django.dispatch import Signal

event_ingested = Signal()
delivery_succeeded = Signal()
delivery_failed = Signal()
