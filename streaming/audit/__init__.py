"""Audit: what happened, for operators and support.

Owns the reads (``selectors``: a user's timeline, each sync's health), the operator pages
(``views``: timeline, health, send test event, the queue actions), the Django admin of the trail
(``admin``) and the audit API (``api``: ``GET /api/v1/users/{id}/deliveries``).

May import: everything below it, ``streaming.delivery`` (replay, test events), ``streaming.ingest``
and ``integrations``. Nothing imports audit but URL configuration and the admin's discovery.
"""
