"""django-axes' lockout for logins that arrive over HTTP.

Axes' backend refuses any login without a request; a login without one (a management command,
a script, Django's test client) has no address to lock out and nothing to brake, so it is left
to the next backend. Every login through the admin's form comes with its request.
"""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from django.http import HttpRequest


class LoginLockoutBackend(AxesStandaloneBackend):
    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> Any:
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)
