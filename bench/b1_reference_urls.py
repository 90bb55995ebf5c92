"""B1's reference: the least a Django view can do to accept a call, beside the product's URLs.

``POST /bench/insert-one`` reads the same JSON body as ``POST /v1/track`` and writes one row with
one INSERT, through Django's own cursor, into ``bench_b1_event``: a copy of the events table with
its columns and every index (``CREATE TABLE .. (LIKE streaming_event INCLUDING ALL)``, made by
``bench/b1_ingest_single.py``), and answers ``{"success": true}``. It runs behind the full
middleware stack of ``config.settings`` (the ingest API's too), is exempt from CSRF like the
ingest views, and does nothing else: no authentication, no validation, no routing, no lane, no
delivery, no wake-up. It is what the ingest API would cost if Switchboard did only the one thing
that cannot be skipped, the durable write; B1 reports the ingest API's calls/s as a share of it.

Served only by B1's gunicorn (``bench.b1_reference_settings``), never by the product's URLs.
"""

from __future__ import annotations

import json
import uuid

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

REFERENCE_TABLE = "bench_b1_event"
INSERT = (
    f"INSERT INTO {REFERENCE_TABLE} (source_id, message_id, type, user_id, anonymous_id,"
    " event_name, payload, timestamp, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
REFERENCE_SOURCE_ID = 0  # the copy has no foreign keys (LIKE copies none): any id will do


@csrf_exempt
@require_POST
def event_insert(request: HttpRequest) -> JsonResponse:
    call = json.loads(request.body)
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            INSERT,
            [
                REFERENCE_SOURCE_ID,
                call.get("messageId") or uuid.uuid4().hex,
                "track",
                str(call.get("userId", "")),
                str(call.get("anonymousId", "")),
                str(call.get("event", "")),
                json.dumps(call),
                now,
                now,
            ],
        )
    return JsonResponse({"success": True})


urlpatterns = [
    path("bench/insert-one", event_insert),
    path("", include("config.urls")),
]
