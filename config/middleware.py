"""Input no request may carry: the NUL character, which PostgreSQL cannot store in text.

One rule at the door instead of a check at every query: a NUL in the path or in a query
parameter (``/api/v1/users/%00/deliveries``, ``?q=%00``) is answered 400 before any view runs,
in JSON for the APIs and as text for the admin. Bodies are checked where they are parsed:
ingest refuses ``\\u0000`` in calls (``streaming.ingest.segment.json_size``) and Django's form
fields refuse NUL (``ProhibitNullCharactersValidator``).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

NUL = "\x00"
MESSAGE = "The request's path or query may not contain the NUL character (%00)."
JSON_PREFIXES = ("/v1/", "/api/")


class NulCharactersRefused:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if NUL in request.path or any(
            NUL in key or any(NUL in value for value in values)
            for key, values in request.GET.lists()
        ):
            if request.path.startswith(JSON_PREFIXES):
                body = {"success": False, "code": "invalid_text", "message": MESSAGE}
                return JsonResponse(body, status=400)
            return HttpResponseBadRequest(MESSAGE, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
