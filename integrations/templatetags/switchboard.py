"""``{% load switchboard %}`` for the host's templates: ``{% intercom_messenger %}``.

Renders Intercom's Messenger for the signed-in user (``request.user``), verified with the
destination's identity verification secret (integrations/messenger.py). The settings go into
the page as JSON inside a ``<script type="application/json">`` (Django's ``json_script``, which
escapes ``<``, ``>`` and ``&``), so no value can close the script or inject markup; the loader
reads them from there.
"""

from __future__ import annotations

from typing import Any

from django import template

from integrations.messenger import messenger_settings

register = template.Library()


@register.inclusion_tag("switchboard/intercom_messenger.html", takes_context=True)
def intercom_messenger(context: template.Context, destination: str = "") -> dict[str, Any]:
    """The Messenger snippet; ``destination`` names the workspace when there are several."""
    request = context.get("request")
    user = getattr(request, "user", None) or context.get("user")
    return {"intercom_settings": messenger_settings(user, destination=destination)}
