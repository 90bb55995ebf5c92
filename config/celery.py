"""The Celery app. Messages are only wake-ups: the database is the queue of record."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("switchboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
# The tasks live in the rooms (streaming/delivery/tasks.py, streaming/audit/tasks.py: alerts),
# not in an app's tasks.py.
app.autodiscover_tasks(["streaming.delivery", "streaming.audit"])
