"""The sandbox's OAuth: Intercom's authorise page and token exchange, for Connect to Intercom.

- ``GET /oauth?client_id&state&redirect_uri``: a small HTML page naming the app, with
  *Authorise* and *Deny* buttons (forms posting to ``/oauth/decide``);
- ``POST /oauth/decide``: redirects (302) to ``redirect_uri`` with ``code`` and ``state``, or with
  ``error=access_denied`` and ``state``;
- ``POST /auth/eagle/token`` (form: ``code``, ``client_id``, ``client_secret``): answers
  ``{"token_type": "Bearer", "token": …, "access_token": …}`` with the sandbox's API token, so the
  connected destination's ``GET /me`` works; a code is good once, for five minutes, for the app
  it was issued to.

These are not API requests (no Bearer token, no rate limit, not in the request log that the
tests check against Intercom's API description): they are kept in their own log,
``GET /_sandbox/oauth``, without the client secret.
"""

from __future__ import annotations

import html
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

CODE_LIFETIME = 300  # seconds, as Intercom documents ("about 5 minutes")
Reply = tuple[int, str, bytes, dict[str, str]]  # status, content type, body, headers

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Authorise {app} - Intercom sandbox</title>
<style>body{{font-family:sans-serif;max-width:32rem;margin:4rem auto}}
button{{font-size:1rem;padding:.5rem 1.5rem;margin-right:1rem}}</style></head>
<body><h1>Authorise {app}?</h1>
<p>{app} asks to read and write your sandbox workspace's contacts, companies and events.</p>
<form method="post" action="/oauth/decide">{fields}
<button type="submit" name="decision" value="authorise">Authorise</button>
<button type="submit" name="decision" value="deny">Deny</button></form></body></html>
"""


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    issued_at: float


@dataclass
class SandboxOAuth:
    """Codes issued and the log of what happened; reset with the sandbox."""

    client_id: str = "sandbox-client-id"
    client_secret: str = "sandbox-client-secret"
    codes: dict[str, _Code] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handles(self, path: str) -> bool:
        # The browser showing the authorise page also asks for a favicon: not an API request.
        return path in ("/oauth", "/oauth/decide", "/auth/eagle/token", "/favicon.ico")

    def handle(
        self, method: str, path: str, query: dict[str, str], raw: bytes, token: str
    ) -> Reply:
        form = {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        if path == "/favicon.ico":
            return _text(404, "No favicon.")
        if method == "GET" and path == "/oauth":
            return self._page(query)
        if method == "POST" and path == "/oauth/decide":
            return self._decide(form)
        if method == "POST" and path == "/auth/eagle/token":
            return self._exchange(form, token)
        return _text(405, f"{method} is not allowed on {path}")

    def _page(self, query: dict[str, str]) -> Reply:
        if query.get("client_id") != self.client_id:
            return _text(400, "Unknown app: no Intercom app has this client_id.")
        if not query.get("redirect_uri", "").startswith(("http://", "https://")):
            return _text(400, "redirect_uri must be an http(s) URL.")
        hidden = "".join(
            f'<input type="hidden" name="{name}" value="{html.escape(query.get(name, ""))}">'
            for name in ("client_id", "state", "redirect_uri")
        )
        body = _PAGE.format(app="Switchboard", fields=hidden)
        with self.lock:
            self.log.append({"step": "authorise_page", "query": dict(query), "time": time.time()})
        return 200, "text/html; charset=utf-8", body.encode(), {}

    def _decide(self, form: dict[str, str]) -> Reply:
        redirect_uri = form.get("redirect_uri", "")
        if form.get("client_id") != self.client_id or not redirect_uri.startswith(
            ("http://", "https://")
        ):
            return _text(400, "Unknown app or redirect_uri.")
        params = {"state": form.get("state", "")}
        with self.lock:
            if form.get("decision") == "authorise":
                code = secrets.token_urlsafe(16)
                self.codes[code] = _Code(self.client_id, redirect_uri, time.time())
                params["code"] = code
            else:
                params.update(error="access_denied", error_description="The user denied access")
            self.log.append(
                {"step": "decision", "decision": form.get("decision"), "time": time.time()}
            )
        separator = "&" if urlsplit(redirect_uri).query else "?"
        return 302, "text/plain", b"", {"Location": redirect_uri + separator + urlencode(params)}

    def _exchange(self, form: dict[str, str], token: str) -> Reply:
        with self.lock:
            code = self.codes.pop(form.get("code", ""), None)
            entry = {
                "step": "token_exchange",
                "client_id": form.get("client_id"),
                "client_secret_ok": form.get("client_secret") == self.client_secret,
                "redirect_uri": form.get("redirect_uri"),
                "time": time.time(),
            }
            self.log.append(entry)
        if (
            form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return _error(401, "unauthorized", "The client id or secret is not the app's.")
        if code is None or code.client_id != form.get("client_id"):
            return _error(400, "invalid_grant", "The code is unknown or was used already.")
        if time.time() - code.issued_at > CODE_LIFETIME:
            return _error(400, "invalid_grant", "The code expired.")
        body = {"token_type": "Bearer", "token": token, "access_token": token}
        return 200, "application/json; charset=utf-8", json.dumps(body).encode(), {}

    def reset(self) -> None:
        with self.lock:
            self.codes.clear()
            self.log.clear()

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(entry) for entry in self.log]


def _text(status: int, message: str) -> Reply:
    return status, "text/plain; charset=utf-8", message.encode(), {}


def _error(status: int, code: str, message: str) -> Reply:
    body = {"type": "error.list", "errors": [{"code": code, "message": message}]}
    return status, "application/json; charset=utf-8", json.dumps(body).encode(), {}
