"""Data plane: ingest, the delivery queue of record, Celery tasks, the audit trail and metrics."""
