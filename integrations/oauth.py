"""Connect to Intercom (OAuth): the authorise page's URL, a signed state, the token exchange.

Intercom's OAuth for public apps (developers.intercom.com, "Setting up OAuth"): the operator is
sent to the app host's ``/oauth?client_id=…&state=…&redirect_uri=…`` (US ``app.intercom.com``,
EU ``app.eu.intercom.com``, AU ``app.au.intercom.com``), authorises the app in their workspace,
and Intercom redirects back with ``code`` and ``state``; the code (valid about five minutes) is
exchanged for a token by ``POST <API host>/auth/eagle/token`` with ``code``, ``client_id`` and
``client_secret``. The token is then used like a pasted access token.

``state`` is signed (``django.core.signing``), names what is being connected, expires after
``STATE_MAX_AGE`` and carries a nonce kept in the operator's session and used once: a callback
replayed, forged, started in another browser or for another object is refused. Nothing here
logs a code, a token or the client secret.

Where the app comes from: the ``IntercomApp`` row saved in the admin, else the settings
``SWITCHBOARD_INTERCOM_CLIENT_ID`` / ``SWITCHBOARD_INTERCOM_CLIENT_SECRET``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

import requests
from django.conf import settings
from django.core import signing

from integrations.models import Destination, IntercomApp, Source

STATE_SALT = "switchboard.intercom-oauth"
STATE_MAX_AGE = 600  # seconds: time enough to log in to Intercom and authorise
SESSION_KEY = "switchboard:intercom-oauth-nonces"
NONCES_KEPT = 10  # connections started and not finished that a session remembers

AUTHORIZE_URLS = {
    Destination.Region.US: "https://app.intercom.com/oauth",
    Destination.Region.EU: "https://app.eu.intercom.com/oauth",
    Destination.Region.AU: "https://app.au.intercom.com/oauth",
}
TOKEN_PATH = "/auth/eagle/token"

TargetKind = Literal["destination", "source"]


class OAuthError(Exception):
    """Connecting failed; ``str()`` says why in the operator's words, and that nothing changed."""


@dataclass(frozen=True)
class OAuthApp:
    client_id: str
    client_secret: str = field(repr=False)


def oauth_app() -> OAuthApp | None:
    """The public Intercom app to authorise: the one saved in the admin, else the settings."""
    saved = IntercomApp.objects.first()
    if saved is not None and saved.client_id and saved.client_secret:
        return OAuthApp(client_id=saved.client_id, client_secret=saved.client_secret)
    client_id = settings.SWITCHBOARD_INTERCOM_CLIENT_ID
    client_secret = settings.SWITCHBOARD_INTERCOM_CLIENT_SECRET
    if client_id and client_secret:
        return OAuthApp(client_id=client_id, client_secret=client_secret)
    return None


@dataclass(frozen=True)
class OAuthTarget:
    """What is being connected, and the Intercom hosts of its region."""

    kind: TargetKind
    pk: int
    authorize_url: str
    token_url: str


def _override_urls() -> tuple[str, str] | None:
    base = settings.SWITCHBOARD_INTERCOM_OAUTH_AUTHORIZE_URL
    if not base:
        return None
    # One origin serving both steps (the sandbox, a proxy): its /oauth page and token exchange.
    origin = base.rstrip("/").removesuffix("/oauth")
    return origin + "/oauth", origin + TOKEN_PATH


def region_urls(*, region: str, base_url: str = "") -> tuple[str, str]:
    """(authorise page, token exchange) for a destination's region or custom base URL."""
    override = _override_urls()
    if override is not None:
        return override
    if region == Destination.Region.CUSTOM:
        origin = base_url.rstrip("/")
        return origin + "/oauth", origin + TOKEN_PATH
    return AUTHORIZE_URLS[region], Destination.REGION_BASE_URLS[region] + TOKEN_PATH


def destination_target(destination: Destination) -> OAuthTarget:
    authorize_url, token_url = region_urls(region=destination.region, base_url=destination.base_url)
    return OAuthTarget("destination", destination.pk, authorize_url, token_url)


def source_target(source: Source, *, region: str) -> OAuthTarget:
    """A webhook source has no region of its own: the operator says where the workspace is."""
    if region not in AUTHORIZE_URLS:
        raise OAuthError("Choose the workspace's region: US, EU or Australia.")
    authorize_url, token_url = region_urls(region=region)
    return OAuthTarget("source", source.pk, authorize_url, token_url)


def oauth_start(*, session: Any, target: OAuthTarget, redirect_uri: str) -> str:
    """The URL of Intercom's authorise page for ``target``; remembers the state's nonce."""
    app = oauth_app()
    if app is None:
        raise OAuthError(
            "No Intercom app is set up for Connect to Intercom: save its client id and secret "
            "under Intercom app (OAuth), or set SWITCHBOARD_INTERCOM_CLIENT_ID and "
            "SWITCHBOARD_INTERCOM_CLIENT_SECRET. Pasting an access token still works."
        )
    nonce = secrets.token_urlsafe(16)
    state = signing.dumps(
        {
            "kind": target.kind,
            "pk": target.pk,
            "nonce": nonce,
            "authorize_url": target.authorize_url,
            "token_url": target.token_url,
        },
        salt=STATE_SALT,
    )
    nonces = [*session.get(SESSION_KEY, []), nonce][-NONCES_KEPT:]
    session[SESSION_KEY] = nonces
    query = urlencode({"client_id": app.client_id, "state": state, "redirect_uri": redirect_uri})
    return f"{target.authorize_url}?{query}"


STATE_REFUSED = (
    "This answer from Intercom cannot be used: the Connect link expired, was used already, or "
    "was started in another browser session. Nothing changed; click Connect to Intercom again."
)


def oauth_state_read(*, session: Any, state: str) -> OAuthTarget:
    """The target a callback's ``state`` names, if it is ours, fresh and unused (then used up)."""
    try:
        payload = signing.loads(state, salt=STATE_SALT, max_age=STATE_MAX_AGE)
    except signing.BadSignature:  # SignatureExpired is one
        raise OAuthError(STATE_REFUSED) from None
    nonces = list(session.get(SESSION_KEY, []))
    if not isinstance(payload, dict) or payload.get("nonce") not in nonces:
        raise OAuthError(STATE_REFUSED)
    nonces.remove(payload["nonce"])
    session[SESSION_KEY] = nonces
    return OAuthTarget(
        kind=payload["kind"],
        pk=int(payload["pk"]),
        authorize_url=payload["authorize_url"],
        token_url=payload["token_url"],
    )


def oauth_denied_message(*, error: str, description: str) -> str:
    if error == "access_denied":
        return (
            "Intercom says the app was not authorised (you, or Intercom, declined). Nothing "
            "changed: the stored token, if any, is kept."
        )
    detail = f" ({description})" if description else ""
    return f"Intercom did not authorise the app: {error}{detail}. Nothing changed."


def oauth_code_exchange(*, target: OAuthTarget, code: str, redirect_uri: str) -> str:
    """Trade the authorisation code for an access token (Intercom's token endpoint)."""
    app = oauth_app()
    if app is None:
        raise OAuthError(
            "The Intercom app's client id and secret were removed while connecting. Nothing "
            "changed."
        )
    if not code:
        raise OAuthError("Intercom's answer carries no authorisation code. Nothing changed.")
    try:
        response = requests.post(
            target.token_url,
            data={
                "code": code,
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "redirect_uri": redirect_uri,
            },
            headers={"Accept": "application/json"},
            timeout=(
                settings.SWITCHBOARD_INTERCOM_CONNECT_TIMEOUT,
                settings.SWITCHBOARD_INTERCOM_READ_TIMEOUT,
            ),
        )
    except requests.RequestException as error:
        # The exception's text names the host and the kind of failure, never the form sent.
        raise OAuthError(
            f"Intercom could not be reached to finish connecting ({type(error).__name__}). "
            "Nothing changed; try Connect to Intercom again."
        ) from None
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    token = body.get("access_token") or body.get("token")
    if response.status_code != 200 or not isinstance(token, str) or not token:
        reason = _error_text(body) or response.reason or "no details"
        raise OAuthError(
            f"Intercom refused to exchange the authorisation code (HTTP "
            f"{response.status_code}: {reason}). Nothing changed; try Connect to Intercom "
            "again, and check the app's client id and secret."
        )
    return token


def _error_text(body: dict[str, Any]) -> str:
    """Intercom's ``error.list`` or OAuth's ``error`` / ``error_description``, in short."""
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        return ": ".join(str(first[k]) for k in ("code", "message") if first.get(k))[:300]
    parts = [str(body[k]) for k in ("error", "error_description") if body.get(k)]
    return ": ".join(parts)[:300]
