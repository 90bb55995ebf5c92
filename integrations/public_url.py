"""Absolute URLs of this Switchboard, as operators and Intercom reach it.

``SWITCHBOARD_PUBLIC_URL`` (e.g. ``https://switchboard.example``) wins: behind a proxy the admin's
own request may name an internal host, and a worker building a link has no request at all.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest


def public_url(path: str, *, request: HttpRequest | None = None) -> str:
    """``path`` under the public base URL, else under the request's host."""
    base = settings.SWITCHBOARD_PUBLIC_URL
    if base:
        return base.rstrip("/") + path
    if request is not None:
        return request.build_absolute_uri(path)
    raise ImproperlyConfigured(
        "SWITCHBOARD_PUBLIC_URL is not set: links built outside a web request (the timeline "
        "link set on Intercom contacts) need it, e.g. https://switchboard.example."
    )
