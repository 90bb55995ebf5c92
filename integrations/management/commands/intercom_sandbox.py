"""``manage.py intercom_sandbox``: run the stateful fake Intercom in the foreground.

Point a destination's custom base URL at it (``http://127.0.0.1:8765``) with the same token.
Tests and benchmarks in other processes tune it through ``POST /_sandbox/config``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from integrations.intercom.sandbox import Sandbox


class Command(BaseCommand):
    help = "Run the Intercom sandbox (a stateful fake Intercom over HTTP) until interrupted."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
        parser.add_argument("--token", default="sandbox-token", help="the accepted access token")
        parser.add_argument("--latency-ms", type=float, default=0.0)
        parser.add_argument("--error-rate", type=float, default=0.0, help="share answered 5xx")
        parser.add_argument(
            "--hang-rate", type=float, default=0.0, help="share that never answer in time"
        )
        parser.add_argument("--hang-seconds", type=float, default=60.0)
        parser.add_argument(
            "--rate-limit", type=int, default=0, help="requests per 10 s window (0: the default)"
        )
        parser.add_argument(
            "--default-rate-limit",
            type=int,
            default=1_000_000,
            help="window announced without --rate-limit (0: no rate-limit headers)",
        )
        parser.add_argument("--search-lag-seconds", type=float, default=0.0)
        parser.add_argument("--event-name-limit", type=int, default=120)
        parser.add_argument(
            "--force-status", type=int, default=0, help="answer this status to the first requests"
        )
        parser.add_argument("--force-count", type=int, default=0, help="how many (--force-status)")
        parser.add_argument("--force-path", default="", help="only paths starting with this")

    def handle(self, *args: Any, **options: Any) -> None:
        sandbox = Sandbox(
            host=options["host"],
            port=options["port"],
            token=options["token"],
            latency_ms=options["latency_ms"],
            error_rate=options["error_rate"],
            hang_rate=options["hang_rate"],
            hang_seconds=options["hang_seconds"],
            rate_limit=options["rate_limit"],
            default_rate_limit=options["default_rate_limit"],
            search_lag_seconds=options["search_lag_seconds"],
            event_name_limit=options["event_name_limit"],
            force_status=options["force_status"],
            force_count=options["force_count"],
            force_path=options["force_path"],
        )
        sandbox.on_ready = lambda url: self.stdout.write(
            f"Intercom sandbox on {url} (token: the one given by --token)", ending="\n"
        )
        try:
            sandbox.serve_forever()
        except KeyboardInterrupt:
            self.stdout.write("stopped")
