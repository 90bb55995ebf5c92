"""The Intercom webhook source: ``POST /webhooks/intercom/<source id>`` (docs/webhooks.md).

One skeleton, like every webhook receiver: find the source -> verify ``X-Hub-Signature`` with its
client secret -> parse and map the notification (``integrations.intercom.webhooks``, pure) ->
normalise the calls as any call (``streaming.ingest.segment``) -> ``events_ingest`` (stored and routed to
the source's syncs in one transaction) -> ``intercom_activity`` after commit -> 200.

Answers, chosen for how Intercom treats them (it waits 5 s, retries a failed notification once
after a minute, pauses a subscription after 1,000 consecutive errors in 15 minutes and suspends
it after seven days of errors):

- 200: accepted, or a duplicate of an accepted notification (Intercom's retry), or ``ping``, or
  dropped because it names no one the source's matching accepts (``webhook_match_by``: counted
  on the source and on its syncs' health with the reason; a retry could not do better);
- 401: missing or wrong signature; nothing is read beyond the signature, nothing stored;
- 400: signed but not a notification we can read; nothing stored;
- 403: the source is disabled (the operator's choice; Intercom's retry may still land once it is
  enabled again); 404: no Intercom webhook source with this id;
- 413: over Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE``; 503: the database is unavailable (transient,
  Intercom's retry may succeed).

Never 410: Intercom disables the subscription on a 410 and only a person in the Developer Hub can
turn it back on, while everything this endpoint can detect is either transient or fixable here
(an unknown id, a disabled source, a rotated secret). ``HEAD`` answers 200 for a known source:
Intercom checks the endpoint URL with a HEAD request when it is saved in the Developer Hub.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, transaction
from django.db.models import F
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from integrations.intercom.webhooks import (
    SIGNATURE_HEADER,
    Notification,
    NotificationDropped,
    NotificationInvalid,
    notification_calls,
    notification_parse,
    signature_verify,
)
from integrations.models import Source
from streaming.ingest.events import IngestResult, events_ingest
from streaming.ingest.filtered import filtered_count
from streaming.ingest.segment import InvalidCall, call_normalise
from streaming.signals import intercom_activity

log = logging.getLogger(__name__)


def intercom_notification_ingest(
    *, source: Source, notification: Notification, received_at: datetime
) -> IngestResult:
    """Store the calls a verified notification maps to; announce it after commit.

    Raises ``InvalidCall`` (nothing stored) when a mapped call breaks the ingest rules, e.g. an
    id longer than 255 characters.
    """
    calls = [
        call_normalise(raw, call_type=None, received_at=received_at)
        for raw in notification_calls(notification, match_by=source.webhook_match_by)
    ]
    if not calls:
        return IngestResult()
    result = events_ingest(source=source, calls=calls, received_at=received_at)
    if result.event_ids:
        event_ids = result.event_ids
        # robust: a receiver's error is logged, never turned into an error answer that would
        # make Intercom resend what is already stored.
        transaction.on_commit(
            lambda: intercom_activity.send(
                sender=Source, source_id=source.pk, notification=notification, event_ids=event_ids
            ),
            robust=True,
        )
    return result


def notification_dropped_count(*, source: Source, reason: str, at: datetime) -> None:
    """Count a dropped notification on the source (its page) and its syncs (their health)."""
    Source.objects.filter(pk=source.pk).update(
        dropped_notifications=F("dropped_notifications") + 1,
        last_dropped_at=at,
        last_dropped_reason=reason[:300],
    )
    sync_ids = source.syncs.values_list("id", flat=True)
    health_reason = f"Intercom notification dropped: {reason}"
    try:
        filtered_count(counts={(sync_id, health_reason): 1 for sync_id in sync_ids}, at=at)
    except Exception:  # the cache (Redis) is down: the source's own count above still holds
        log.warning("intercom webhook: health counts unavailable (source %s)", source.pk)


def _error(status: int, code: str, message: str, errors: Any = None) -> JsonResponse:
    body: dict[str, Any] = {"success": False, "code": code, "message": message}
    if errors is not None:
        body["errors"] = errors
    return JsonResponse(body, status=status)


def _webhook_source(source_id: int) -> Source | None:
    return Source.objects.filter(pk=source_id, kind=Source.Kind.INTERCOM_WEBHOOK).first()


_NO_SOURCE = ("unknown_source", "No Intercom webhook source has this id.")


@method_decorator(csrf_exempt, name="dispatch")
class IntercomWebhookView(View):
    """Receives one Intercom notification (module doc)."""

    http_method_names = ["post", "head"]

    def head(self, request: HttpRequest, source_id: int) -> HttpResponse:
        try:
            source = _webhook_source(source_id)
        except DatabaseError:
            return HttpResponse(status=503)
        return HttpResponse(status=200 if source is not None else 404)

    def post(self, request: HttpRequest, source_id: int) -> HttpResponse:
        received_at = timezone.now()
        try:
            source = _webhook_source(source_id)
        except DatabaseError:
            log.exception("intercom webhook: database unavailable (source %s)", source_id)
            return _error(503, "unavailable", "Storage is unavailable; retry later.")
        if source is None:
            return _error(404, *_NO_SOURCE)
        try:
            body = request.body
        except RequestDataTooBig:
            return _error(413, "payload_too_large", "The notification is too large to accept.")

        if not signature_verify(
            body=body, header=request.headers.get(SIGNATURE_HEADER), secret=source.webhook_secret
        ):
            # Neither the secret nor the header is logged: the header is a valid MAC of the body.
            log.warning(
                "intercom webhook: missing or invalid %s for source %s",
                SIGNATURE_HEADER,
                source.pk,
            )
            return _error(
                401,
                "invalid_signature",
                f"Missing or invalid {SIGNATURE_HEADER}: sign the raw body with HMAC-SHA1 and "
                "the app's client secret.",
            )
        if not source.enabled:
            return _error(403, "source_disabled", "This source is disabled in Switchboard.")

        try:
            notification = notification_parse(body)
        except NotificationInvalid as exc:
            return _error(400, "invalid_notification", str(exc), exc.errors)
        if notification.is_ping:
            return JsonResponse({"success": True, "ping": True})
        try:
            result = intercom_notification_ingest(
                source=source, notification=notification, received_at=received_at
            )
        except NotificationDropped as dropped:
            reason = dropped.reason
            try:
                notification_dropped_count(source=source, reason=reason, at=received_at)
            except DatabaseError:
                log.exception("intercom webhook: database unavailable (source %s)", source.pk)
                return _error(503, "unavailable", "Storage is unavailable; retry later.")
            # Ids only: the notification's contact data stays out of the log.
            log.info(
                "intercom webhook: %s %s for source %s dropped: %s",
                notification.topic,
                notification.id,
                source.pk,
                dropped.reason,
            )
            return JsonResponse({"success": True, "dropped": reason})
        except InvalidCall as exc:
            return _error(400, "invalid_notification", str(exc), exc.errors)
        except DatabaseError:
            log.exception("intercom webhook: database unavailable (source %s)", source.pk)
            return _error(503, "unavailable", "Storage is unavailable; retry later.")
        duplicate = not result.event_ids
        log.info(
            "intercom webhook: %s %s for source %s (%s)",
            notification.topic,
            notification.id,
            source.pk,
            "duplicate" if duplicate else f"{len(result.event_ids)} event(s)",
        )
        return JsonResponse({"success": True, "duplicate": duplicate})
