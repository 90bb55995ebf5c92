"""Ingest: calls in, Events and Deliveries stored, nothing else.

Owns the Segment-compatible API views (``api``), Segment normalisation (``segment``), the store
of record (``events.events_ingest``, the one door every source goes through), what syncs kept
out (``filtered``), the Python API (``analytics``), the automatic identify of the host's users
(``host_identify``), the Intercom webhook intake (``intercom_webhook``) and the per-write-key
limit (``ratelimit``).

May import: ``integrations``, ``streaming.models``, ``streaming.storage``, ``streaming.signals``.
Never ``streaming.delivery`` or ``streaming.audit``: after commit it announces the lanes it
filled with the ``lanes_queued`` signal, and the delivery room wakes the workers.
"""
