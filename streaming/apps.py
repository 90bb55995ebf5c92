"""The data plane's app config: wires the optional automatic identify of the host's users."""

from __future__ import annotations

from django.apps import AppConfig


class StreamingConfig(AppConfig):
    name = "streaming"
    verbose_name = "Delivery"

    def ready(self) -> None:
        from streaming.host_identify import host_identify_connect

        host_identify_connect()
        # Lifts a destination's 401 hold when it is saved with a new token.
        from streaming import receivers  # noqa: F401
