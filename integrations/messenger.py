"""The Intercom Messenger for a signed-in user, with identity verification (Python API).

``messenger_settings(user)`` returns the ``window.intercomSettings`` of the Messenger for a host
user (a Django user or anything with ``pk`` / ``email``): the workspace's ``app_id`` (learned
from GET /me when the destination's connection is checked), the regional ``api_base``, and who
the user is, proven with the destination's stored identity verification secret in one of
Intercom's two ways (``Destination.messenger_security``):

- ``user_hash``: hex HMAC-SHA256 of the user id (Intercom's identity verification);
- ``jwt``: ``intercom_user_jwt``, an HS256 JWT (PyJWT) with the claims ``user_id``, ``email``
  when known, and ``exp`` (``SWITCHBOARD_MESSENGER_JWT_SECONDS`` ahead): Intercom's Messenger
  security, whose claims replace the plain identifiers.

The user id is the same as automatic identify's (``str(user.pk)``), so the Messenger and the
contacts Switchboard sends are one person. The secret itself is never part of the answer. A
signed-out visitor gets the workspace's settings only (the Messenger for visitors).
``{% intercom_messenger %}`` (integrations/templatetags/switchboard.py) renders the same for
Django templates.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any

import jwt
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from integrations.models import Destination

log = logging.getLogger(__name__)

# The Messenger's API host per region (Intercom's installation guide for the web).
MESSENGER_API_BASES = {
    Destination.Region.US: "https://api-iam.intercom.io",
    Destination.Region.EU: "https://api-iam.eu.intercom.io",
    Destination.Region.AU: "https://api-iam.au.intercom.io",
}


def messenger_destination(name: str = "") -> Destination:
    """The workspace whose Messenger is shown: by name, by setting, or the only one there is."""
    name = name or settings.SWITCHBOARD_MESSENGER_DESTINATION
    if name:
        destination = Destination.objects.filter(name=name).first()
        if destination is None:
            raise ImproperlyConfigured(f"No destination is named {name!r} (the Messenger's).")
    else:
        destinations = list(Destination.objects.all()[:2])
        if len(destinations) != 1:
            raise ImproperlyConfigured(
                "Name the Messenger's destination: {% intercom_messenger 'name' %}, "
                "messenger_settings(user, destination='name') or SWITCHBOARD_MESSENGER_DESTINATION."
            )
        destination = destinations[0]
    if not destination.app_id:
        raise ImproperlyConfigured(
            f"The app id of {destination.name!r} is not known yet: use Check connection (or "
            "Connect to Intercom) on the destination, which asks Intercom for it."
        )
    return destination


def user_hash(*, user_id: str, secret: str) -> str:
    """Intercom's identity verification: hex HMAC-SHA256 of the user id."""
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def user_jwt(*, user_id: str, email: str, secret: str, now: float | None = None) -> str:
    """Intercom's Messenger security: an HS256 JWT of user_id, email (when known) and exp."""
    claims: dict[str, Any] = {"user_id": user_id}
    if email:
        claims["email"] = email
    claims["exp"] = int(now if now is not None else time.time()) + (
        settings.SWITCHBOARD_MESSENGER_JWT_SECONDS
    )
    return jwt.encode(claims, secret, algorithm="HS256")


def messenger_settings(user: Any = None, *, destination: Destination | str = "") -> dict[str, Any]:
    """``window.intercomSettings`` for ``user`` (None or signed out: a visitor)."""
    if not isinstance(destination, Destination):
        destination = messenger_destination(destination)
    values: dict[str, Any] = {"app_id": destination.app_id}
    if destination.region in MESSENGER_API_BASES:
        values["api_base"] = MESSENGER_API_BASES[destination.region]
    if user is None or not getattr(user, "is_authenticated", True) or user.pk is None:
        return values
    user_id = str(user.pk)
    email = str(getattr(user, "email", "") or "")
    name = user.get_full_name() if hasattr(user, "get_full_name") else ""
    secret = destination.identity_verification_secret
    if secret and destination.messenger_security == Destination.MessengerSecurity.JWT:
        # The signed claims carry who the user is; plain user_id / email would not be trusted.
        values["intercom_user_jwt"] = user_jwt(user_id=user_id, email=email, secret=secret)
    else:
        values["user_id"] = user_id
        if email:
            values["email"] = email
        if secret:
            values["user_hash"] = user_hash(user_id=user_id, secret=secret)
        else:
            log.warning(
                "Messenger of %s: no identity verification secret; the user is not verified",
                destination.name,
            )
    if name:
        values["name"] = name
    return values
