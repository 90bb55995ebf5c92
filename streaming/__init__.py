"""The data plane: calls in, deliveries out, and the trail of what happened, in three rooms.

- ``ingest``: the API views, Segment normalisation, the Python API, host signals and the
  Intercom webhook intake; stores Events and their Deliveries (``ingest.events``).
- ``delivery``: lanes, wake-ups, the rate limiter, retries, replay, the sweeper; Celery tasks
  as thin glue. Sends through Intercom's one door (``integrations.intercom.deliver``).
- ``audit``: the operator's pages (timeline, health, test event), the Django admin of the
  trail, and the audit API.

Beside them, shared by all three: ``models`` (the queue of record and the trail), ``storage``
(the hand-written SQL of the hot paths), ``signals``. Imports run one way, ``audit -> delivery
-> ingest`` and everything ``-> integrations``; ingest reaches delivery only through the
``lanes_queued`` signal (tests/test_layout.py keeps it so).
"""
