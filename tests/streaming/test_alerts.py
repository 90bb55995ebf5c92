"""Alerts: each rule's conditions raise an alert once and resolve it when they clear, sent by
email (Django's locmem outbox) and to a real webhook server on loopback; the webhook's secret
path never reaches a log, the alert log or the admin; the test button; beat's schedule."""

from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.conf import settings
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from integrations.models import Destination
from streaming.audit.alerts import alerts_evaluate, failure_counts, webhook_shown
from streaming.models import Alert, AlertRule, Delivery
from tests.factories import SourceFactory, SyncFactory
from tests.streaming.audit_rows import delivery_make, event_make

pytestmark = pytest.mark.django_db

SECRET_PATH = "/services/T000/B000/sEcReT-hook-path"


class Hook:
    """A Slack-like incoming webhook on loopback: keeps every JSON body posted to it."""

    def __init__(self, status: int = 200) -> None:
        bodies = self.bodies = []
        answer = status

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length", 0))
                bodies.append({"path": self.path, "json": json.loads(self.rfile.read(length))})
                self.send_response(answer)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}{SECRET_PATH}"

    def texts(self) -> list[str]:
        return [body["json"]["text"] for body in self.bodies]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    server = Hook()
    yield server
    server.close()


@pytest.fixture
def sync():
    return SyncFactory(name="orders", sources=[SourceFactory()])


def deliveries(sync, status, n, *, ago=timedelta(minutes=5)):
    made = []
    for _ in range(n):
        at = timezone.now() - ago
        event = event_make(source=sync.sources.get(), received_at=at)
        made.append(
            delivery_make(
                event=event,
                sync=sync,
                status=status,
                attempts=1,
                created_at=at,
                completed_at=None if status == "pending" else at + timedelta(seconds=1),
            )
        )
    return made


def rule_make(sync, hook=None, **conditions):
    return AlertRule.objects.create(
        sync=sync,
        email_to="ops@example.com, oncall@example.com",
        webhook_url=hook.url if hook else "",
        token_refused=conditions.pop("token_refused", False),
        **conditions,
    )


def test_a_failure_rate_over_the_threshold_is_raised_once_then_resolved(sync, hook):
    rule_make(sync, hook, failure_rate_percent=50, failure_window_minutes=15)
    failed = deliveries(sync, "failed", 8)
    deliveries(sync, "succeeded", 4)
    deliveries(sync, "failed", 20, ago=timedelta(minutes=40))  # before the window

    first = alerts_evaluate()
    assert [a.kind for a in first.raised] == ["failure_rate"]
    assert alerts_evaluate().raised == []  # still true: not raised again
    (alert,) = Alert.objects.all()
    assert alert.resolved_at is None and "67 % " in alert.message and "(8 of 12)" in alert.message
    assert len(hook.texts()) == 1 and "Failure rate: orders" in hook.texts()[0]
    assert [m.to for m in mail.outbox] == [["ops@example.com", "oncall@example.com"]]
    assert mail.outbox[0].subject == "[Switchboard] Failure rate: orders"

    Delivery.objects.filter(pk__in=[d.pk for d in failed[:6]]).update(status="succeeded")
    second = alerts_evaluate()
    assert [a.kind for a in second.resolved] == ["failure_rate"]
    alert.refresh_from_db()
    assert alert.resolved_at is not None
    assert "back under 50 %" in alert.resolved_message
    assert hook.texts()[-1].startswith("*[Switchboard] Resolved: Failure rate: orders*")
    assert len(mail.outbox) == 2
    assert "resolved: webhook http://127.0.0.1" in alert.sent


def test_a_few_failures_below_the_minimum_count_raise_nothing(sync):
    rule_make(sync, failure_rate_percent=10, failure_min_deliveries=5)
    deliveries(sync, "failed", 2)
    assert alerts_evaluate().raised == []


def test_the_failure_rate_counts_whole_hours_from_the_summary_rows(sync):
    deliveries(sync, "failed", 3, ago=timedelta(hours=3))
    deliveries(sync, "succeeded", 1, ago=timedelta(hours=3))
    deliveries(sync, "expired", 1, ago=timedelta(minutes=10))
    deliveries(sync, "skipped", 1, ago=timedelta(minutes=10))  # not a finished try
    deliveries(sync, "pending", 1, ago=timedelta(minutes=10))
    since = timezone.now() - timedelta(hours=4)
    assert failure_counts(sync_id=sync.pk, since=since) == (5, 4)
    assert failure_counts(sync_id=sync.pk, since=timezone.now() - timedelta(hours=1)) == (1, 1)


def test_a_backlog_older_than_set_is_raised_and_resolved_when_drained(sync, hook):
    rule_make(sync, hook, backlog_minutes=30)
    deliveries(sync, "pending", 1, ago=timedelta(minutes=10))
    assert alerts_evaluate().raised == []
    (old,) = deliveries(sync, "pending", 1, ago=timedelta(minutes=45))
    (alert,) = alerts_evaluate().raised
    assert alert.kind == "backlog" and "has waited 45 min" in alert.message
    Delivery.objects.filter(pk=old.pk).update(status="succeeded")
    (resolved,) = alerts_evaluate().resolved
    assert "no pending delivery is older than 30 min" in resolved.resolved_message
    assert [t.split("*")[1] for t in hook.texts()] == [
        "[Switchboard] Backlog too old: orders",
        "[Switchboard] Resolved: Backlog too old: orders",
    ]


def test_a_refused_token_is_raised_and_resolved_when_a_working_token_is_saved(sync, hook):
    rule_make(sync, hook, token_refused=True)
    assert alerts_evaluate().raised == []
    Destination.objects.filter(pk=sync.destination_id).update(auth_failed_at=timezone.now())
    (alert,) = alerts_evaluate().raised
    assert "Intercom refused the token" in alert.message
    Destination.objects.filter(pk=sync.destination_id).update(auth_failed_at=None)
    (resolved,) = alerts_evaluate().resolved
    assert "accepts the destination's token again" in resolved.resolved_message


def test_disabling_a_rule_resolves_its_open_alerts(sync, hook):
    rule = rule_make(sync, hook, token_refused=True)
    Destination.objects.filter(pk=sync.destination_id).update(auth_failed_at=timezone.now())
    alerts_evaluate()
    AlertRule.objects.filter(pk=rule.pk).update(enabled=False)
    (resolved,) = alerts_evaluate().resolved
    assert "no longer watches" in resolved.resolved_message


def test_two_evaluations_at_once_raise_an_alert_once(sync):
    rule = rule_make(sync, token_refused=True)
    Destination.objects.filter(pk=sync.destination_id).update(auth_failed_at=timezone.now())
    Alert.objects.create(
        rule=rule, sync=sync, kind="token_refused", message="x", raised_at=timezone.now()
    )
    # the other evaluation's view: it had not seen the open alert
    from streaming.audit import alerts

    assert alerts._raise(rule, "token_refused", "again", timezone.now()) is None
    assert Alert.objects.count() == 1


def test_the_webhooks_secret_path_never_reaches_a_log_or_the_alert(sync, caplog):
    rule = rule_make(sync, token_refused=True)
    rule.webhook_url = f"http://127.0.0.1:9{SECRET_PATH}"  # nothing listens on port 9
    rule.save()
    Destination.objects.filter(pk=sync.destination_id).update(auth_failed_at=timezone.now())
    with caplog.at_level(logging.DEBUG):
        (alert,) = alerts_evaluate().raised
    assert "webhook http://127.0.0.1:9/…: failed (ConnectionError)" in alert.sent
    assert SECRET_PATH not in caplog.text and "sEcReT" not in alert.sent
    assert webhook_shown("https://hooks.slack.com/services/T/B/x") == "https://hooks.slack.com/…"


def test_a_webhook_that_refuses_is_logged_as_such(sync):
    refusing = Hook(status=404)
    try:
        rule_make(sync, refusing, token_refused=True)
        Destination.objects.filter(pk=sync.destination_id).update(auth_failed_at=timezone.now())
        (alert,) = alerts_evaluate().raised
        assert "webhook http://127.0.0.1" in alert.sent and "HTTP 404" in alert.sent
    finally:
        refusing.close()


# --- the admin --------------------------------------------------------------------------------


def test_the_admin_configures_a_rule_and_keeps_the_webhook_write_only(admin_client, sync, hook):
    add = reverse("admin:streaming_alertrule_add")
    answer = admin_client.post(
        add,
        {
            "sync": sync.pk,
            "enabled": "on",
            "failure_rate_percent": "20",
            "failure_window_minutes": "15",
            "failure_min_deliveries": "10",
            "backlog_minutes": "",
            "token_refused": "on",
            "email_to": "ops@example.com\noncall@example.com",
            "webhook_url": hook.url,
        },
    )
    assert answer.status_code == 302, answer.content.decode()[-2000:]
    rule = AlertRule.objects.get()
    assert rule.webhook_url == hook.url and rule.email_to == "ops@example.com, oncall@example.com"
    change = admin_client.get(reverse("admin:streaming_alertrule_change", args=[rule.pk]))
    listing = admin_client.get(reverse("admin:streaming_alertrule_changelist"))
    for page in (change, listing):
        assert SECRET_PATH not in page.content.decode()
    assert "http://127.0.0.1:" in listing.content.decode()


def test_the_admin_refuses_bad_addresses_and_urls_with_a_clear_reason(admin_client, sync):
    answer = admin_client.post(
        reverse("admin:streaming_alertrule_add"),
        {
            "sync": sync.pk,
            "failure_window_minutes": "15",
            "failure_min_deliveries": "10",
            "email_to": "ops@example.com, not-an-address",
            "webhook_url": "ftp://example.com/secret-path",
        },
    )
    text = answer.content.decode()
    assert answer.status_code == 200
    assert "Not an email address: not-an-address." in text
    assert "Enter the webhook&#x27;s http:// or https:// URL" in text
    assert "secret-path" not in text
    assert "Choose at least one condition" in text
    assert not AlertRule.objects.exists()


def test_send_test_alert_reaches_every_channel_and_is_logged(admin_client, sync, hook):
    rule = rule_make(sync, hook, token_refused=True)
    answer = admin_client.post(
        reverse("admin:streaming_alertrule_changelist"),
        {"action": "send_test_alerts", "_selected_action": [rule.pk]},
        follow=True,
    )
    text = answer.content.decode()
    assert "Test alert for orders" in text and "HTTP 200" in text
    assert "Test alert for orders, sent by admin" in hook.texts()[0]
    assert mail.outbox[0].subject == "[Switchboard] Test alert: orders"
    (alert,) = Alert.objects.all()
    assert alert.kind == "test" and alert.resolved_at is not None
    listing = admin_client.get(reverse("admin:streaming_alert_changelist")).content.decode()
    assert "Test alert" in listing


def test_beat_evaluates_the_rules_periodically():
    from config.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["alerts-evaluate"]
    assert entry["task"] == "switchboard.alerts_evaluate"
    assert entry["schedule"] == settings.SWITCHBOARD_ALERTS_SECONDS
    app.loader.import_default_modules()
    assert "switchboard.alerts_evaluate" in app.tasks
    assert app.tasks["switchboard.alerts_evaluate"].apply().get() == {"raised": 0, "resolved": 0}
