"""Delivery: pending deliveries out to Intercom, in order per user, every attempt logged.

Owns lanes and their leases (``lanes``), a delivery's next state (``states``), the attempt log
(``attempts``), what the executor remembers per workspace (``destination_store``), the shared
rate limiter (``ratelimit``), wake-ups (``wakeups``), the sweeper and retention (``sweep``),
operator actions on the queue (``replay``), and Celery tasks as thin glue (``tasks``).

May import: ``integrations`` (Intercom only through its door, ``integrations.intercom``),
``streaming.models``, ``streaming.storage``, ``streaming.signals`` and ``streaming.ingest``
(replay's test event normalises a call as ingest does). Never ``streaming.audit``.
"""
