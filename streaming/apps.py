"""The data plane's app config: connects its signal receivers and the Celery tasks."""

from __future__ import annotations

from django.apps import AppConfig


class StreamingConfig(AppConfig):
    name = "streaming"
    verbose_name = "Delivery"

    def ready(self) -> None:
        # Imported for what they connect: ingest's wake-ups and a destination's new token
        # (receivers), the tasks that wake-ups name (tasks, also in a web process that runs
        # them eagerly), and the optional automatic identify of the host's users.
        from streaming.delivery import receivers, tasks  # noqa: F401
        from streaming.ingest.host_identify import host_identify_connect

        host_identify_connect()
