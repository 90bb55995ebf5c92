"""A stateful fake Intercom over real HTTP, for demos, tests and benchmarks.

``Sandbox(latency_ms=80).start()`` returns its base URL (a free loopback port unless one is
given); ``.stop()`` ends it. ``manage.py intercom_sandbox`` runs one in the foreground. Other
processes drive it through the control endpoint described in docs/intercom-http.md.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from integrations.intercom.sandbox.server import SandboxConfig, SandboxCore, SandboxHTTPServer
from integrations.intercom.sandbox.workspace import Workspace

__all__ = ["Sandbox", "SandboxConfig", "Workspace"]


class Sandbox:
    """One sandbox server running in a background thread of this process."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, **settings: Any) -> None:
        config = SandboxConfig()
        config.update(settings)
        self.core = SandboxCore(config)
        self.host = host
        self.port = port
        self._server: SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Called with the URL once bound (the command prints it; port 0 picks a free port).
        self.on_ready: Callable[[str], None] | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the sandbox is not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> str:
        """Bind, serve in a daemon thread, and return the base URL."""
        self._server = SandboxHTTPServer((self.host, self.port), self.core)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="intercom-sandbox",
            daemon=True,
        )
        self._thread.start()
        return self.url

    def serve_forever(self) -> None:
        """Serve in the calling thread (the management command)."""
        self._server = SandboxHTTPServer((self.host, self.port), self.core)
        if self.on_ready is not None:
            self.on_ready(self.url)
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._server.server_close()

    def stop(self) -> None:
        if self._server is None:
            return
        self.core.release.set()
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    # In-process shortcuts to what the control endpoint offers over HTTP.
    def configure(self, **settings: Any) -> dict[str, Any]:
        return self.core.configure(settings)

    def reset(self) -> None:
        self.core.reset()

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        return self.core.requests_since(since)

    def state(self) -> dict[str, Any]:
        return self.core.state()

    def oauth_log(self) -> list[dict[str, Any]]:
        """Authorise pages shown, decisions and token exchanges (sandbox/oauth.py)."""
        return self.core.oauth.snapshot()

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
