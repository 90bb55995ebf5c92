"""Alerts: each sync's rules (``AlertRule``), evaluated by Celery beat every
``SWITCHBOARD_ALERTS_SECONDS``, raise an ``Alert`` when a condition becomes true and resolve it
when it clears, each time sent by email (Django's mail) and to a Slack-compatible webhook.

The conditions, all cheap whatever the trail's size:

- failure rate: of the deliveries created in the last N minutes that finished (skipped ones
  left out), the share failed or expired, once at least ``failure_min_deliveries`` finished;
  whole settled hours from the hourly summary rows (``delivery_hours.hours_outcomes``), the rest
  from the deliveries through the index that leads with status;
- backlog: the oldest pending delivery older than T minutes (the same index, one row);
- token refused: the destination is held after Intercom's 401 (a column of the destination).

One open alert per rule and condition (a partial unique constraint), so two evaluations at once
raise it once. A webhook URL carries its secret in its path: only its scheme and host are ever
logged, stored in ``Alert.sent`` or shown; a failed post is described by the exception's class,
since requests' messages quote the URL.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Count, Min, Q
from django.urls import reverse
from django.utils import timezone

from streaming.audit.delivery_hours import hours_outcomes
from streaming.audit.overview import duration_text, when
from streaming.models import Alert, AlertRule, Delivery

logger = logging.getLogger(__name__)

S = Delivery.Status
K = Alert.Kind
WEBHOOK_TIMEOUT = 5.0  # seconds: beat's next run must not wait on a slow chat service
HOUR = timedelta(hours=1)


@dataclass
class Evaluation:
    """What one evaluation did: the alerts raised and resolved."""

    raised: list[Alert] = field(default_factory=list)
    resolved: list[Alert] = field(default_factory=list)


def webhook_shown(url: str) -> str:
    """A webhook as it may be shown or logged: its scheme and host, never its secret path."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}/…"


def email_addresses(text: str) -> list[str]:
    return [address for address in re.split(r"[\s,;]+", text) if address]


def _site(path: str) -> str:
    """An admin path, absolute when ``SWITCHBOARD_SITE_URL`` says where the admin is."""
    return settings.SWITCHBOARD_SITE_URL.rstrip("/") + path


def _deliveries_path(rule: AlertRule, **filters: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"sync__id__exact": rule.sync_id, **filters}.items())
    return _site(reverse("admin:streaming_delivery_changelist") + "?" + query)


# --- the conditions ---------------------------------------------------------------------------


def failure_counts(*, sync_id: int, since: datetime) -> tuple[int, int]:
    """(finished, failed or expired) of a sync's deliveries created from ``since``: whole hours
    from the summary rows, the first partial hour from the deliveries."""
    first_hour = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if first_hour < since:
        first_hour += HOUR
    finished = failed = 0
    if first_hour <= timezone.now():
        for hour in hours_outcomes(sync_ids=[sync_id], since=first_hour):
            finished += hour.delivered + hour.failed
            failed += hour.failed
    partial = Delivery.objects.filter(
        status__in=[S.SUCCEEDED, S.FAILED, S.EXPIRED],
        sync_id=sync_id,
        created_at__gte=since,
        created_at__lt=first_hour,
    ).aggregate(
        finished=Count("id"), failed=Count("id", filter=Q(status__in=[S.FAILED, S.EXPIRED]))
    )
    return finished + partial["finished"], failed + partial["failed"]


def rule_findings(rule: AlertRule, *, now: datetime) -> dict[str, str | None]:
    """Per condition the rule watches: the alert's text when it holds, None when it does not."""
    sync = rule.sync
    findings: dict[str, str | None] = {}
    if rule.failure_rate_percent is not None:
        minutes = rule.failure_window_minutes
        finished, failed = failure_counts(sync_id=sync.pk, since=now - timedelta(minutes=minutes))
        rate = 100.0 * failed / finished if finished else 0.0
        holds = finished >= max(rule.failure_min_deliveries, 1) and rate > rule.failure_rate_percent
        findings[K.FAILURE_RATE] = (
            f"{sync.name}: {rate:.0f} % of the deliveries of the last {minutes} min failed or "
            f"expired ({failed} of {finished}), over the {rule.failure_rate_percent} % set. "
            f"Failed deliveries: {_deliveries_path(rule, status__in='failed,expired')}"
            if holds
            else None
        )
    if rule.backlog_minutes is not None:
        pending = Delivery.objects.filter(status=S.PENDING, sync_id=sync.pk).aggregate(
            oldest=Min("created_at")
        )["oldest"]
        waited = (now - pending).total_seconds() if pending else 0.0
        findings[K.BACKLOG] = (
            f"{sync.name}: the oldest pending delivery has waited {duration_text(waited)} "
            f"(since {when(pending)}), longer than the {rule.backlog_minutes} min set. "
            f"Pending deliveries: {_deliveries_path(rule, status__exact='pending', o='1')}"
            if pending is not None and waited > rule.backlog_minutes * 60
            else None
        )
    if rule.token_refused:
        destination = sync.destination
        findings[K.TOKEN_REFUSED] = (
            f"{sync.name}: Intercom refused the token of {destination.name} (401) at "
            f"{when(destination.auth_failed_at)}; its deliveries are held until a token that "
            "works is saved. "
            + _site(reverse("admin:integrations_destination_change", args=[destination.pk]))
            if destination.auth_failed_at
            else None
        )
    return findings


RESOLVED = {
    K.FAILURE_RATE: "the failure rate is back under {percent} %",
    K.BACKLOG: "no pending delivery is older than {minutes} min any more",
    K.TOKEN_REFUSED: "Intercom accepts the destination's token again",
}


# --- evaluation -------------------------------------------------------------------------------


def alerts_evaluate(*, now: datetime | None = None) -> Evaluation:
    """Evaluate every rule: raise what became true, resolve what cleared (or is no longer
    watched: a rule disabled or a condition turned off)."""
    now = now or timezone.now()
    evaluation = Evaluation()
    rules = AlertRule.objects.select_related("sync__destination")
    open_alerts = {
        (alert.rule_id, alert.kind): alert
        for alert in Alert.objects.filter(resolved_at__isnull=True).exclude(kind=K.TEST)
    }
    for rule in rules:
        findings = rule_findings(rule, now=now) if rule.enabled else {}
        for kind in (K.FAILURE_RATE, K.BACKLOG, K.TOKEN_REFUSED):
            text = findings.get(kind)
            alert = open_alerts.get((rule.pk, kind))
            if text and alert is None:
                raised = _raise(rule, kind, text, now)
                if raised is not None:
                    evaluation.raised.append(raised)
            elif (
                not text
                and alert is not None
                and _resolve(rule, alert, watched=kind in findings, now=now)
            ):
                evaluation.resolved.append(alert)
    return evaluation


def _raise(rule: AlertRule, kind: str, text: str, now: datetime) -> Alert | None:
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                rule=rule, sync=rule.sync, kind=kind, message=text, raised_at=now
            )
    except IntegrityError:
        return None  # another evaluation raised it a moment ago, and sent it
    subject = f"[Switchboard] {alert.get_kind_display()}: {rule.sync}"
    alert.sent = notify(rule, subject=subject, text=text).text
    Alert.objects.filter(pk=alert.pk).update(sent=alert.sent)
    return alert


def _resolve(rule: AlertRule, alert: Alert, *, watched: bool, now: datetime) -> bool:
    reason = (
        RESOLVED[alert.kind].format(percent=rule.failure_rate_percent, minutes=rule.backlog_minutes)
        if watched
        else "the rule no longer watches this"
    )
    text = f"Resolved: {rule.sync.name}: {reason} (raised {when(alert.raised_at)})."
    taken = Alert.objects.filter(pk=alert.pk, resolved_at__isnull=True).update(
        resolved_at=now, resolved_message=text
    )
    if not taken:
        return False  # another evaluation resolved it
    subject = f"[Switchboard] Resolved: {alert.get_kind_display()}: {rule.sync}"
    sent = notify(rule, subject=subject, text=text)
    alert.resolved_at, alert.resolved_message = now, text
    resolved_lines = "\n".join(f"resolved: {line}" for line in sent.text.splitlines())
    alert.sent = f"{alert.sent}\n{resolved_lines}".strip()
    Alert.objects.filter(pk=alert.pk).update(sent=alert.sent)
    return True


def alert_test_send(rule: AlertRule, *, sent_by: str) -> tuple[Alert, Sent]:
    """The admin's "Send test alert": one message on every channel of the rule, logged."""
    now = timezone.now()
    text = (
        f"Test alert for {rule.sync.name}, sent by {sent_by} from the admin: alerts of this "
        "sync reach this channel."
    )
    alert = Alert.objects.create(
        rule=rule,
        sync=rule.sync,
        kind=K.TEST,
        message=text,
        raised_at=now,
        resolved_at=now,
        resolved_message="A test: nothing to resolve.",
    )
    sent = notify(rule, subject=f"[Switchboard] Test alert: {rule.sync}", text=text)
    alert.sent = sent.text
    Alert.objects.filter(pk=alert.pk).update(sent=alert.sent)
    return alert, sent


# --- the channels -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """What each channel answered, one line each (kept in ``Alert.sent``); ok: all took it."""

    text: str
    ok: bool


def notify(rule: AlertRule, *, subject: str, text: str) -> Sent:
    """Send on every channel of the rule."""
    lines = []
    ok = True
    recipients = email_addresses(rule.email_to)
    if recipients:
        try:
            send_mail(subject, text, None, recipients)
            lines.append(f"email to {', '.join(recipients)}: sent")
        except Exception as error:  # a mail server down must not stop the other channel
            logger.warning("alert email to %s failed: %s", recipients, type(error).__name__)
            lines.append(f"email to {', '.join(recipients)}: failed ({type(error).__name__})")
            ok = False
    if rule.webhook_url:
        shown = webhook_shown(rule.webhook_url)
        try:
            answer = requests.post(
                rule.webhook_url, json={"text": f"*{subject}*\n{text}"}, timeout=WEBHOOK_TIMEOUT
            )
            lines.append(f"webhook {shown}: HTTP {answer.status_code}")
            if answer.status_code >= 300:
                logger.warning("alert webhook %s answered HTTP %s", shown, answer.status_code)
                ok = False
        except requests.RequestException as error:
            # Not str(error): requests' messages quote the URL, secret path included.
            logger.warning("alert webhook %s failed: %s", shown, type(error).__name__)
            lines.append(f"webhook {shown}: failed ({type(error).__name__})")
            ok = False
    if not lines:
        return Sent("no channel: add an email address or a webhook to the rule", ok=False)
    return Sent("\n".join(lines), ok=ok)
