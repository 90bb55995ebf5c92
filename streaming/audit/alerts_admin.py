"""The alerts' admin: each sync's rules (configure, "Send test alert") and the log of alerts
raised and resolved (read-only). The evaluation and the channels: ``streaming.audit.alerts``."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join
from unfold.admin import ModelAdmin
from unfold.decorators import action, display
from unfold.widgets import UnfoldAdminTextareaWidget

from integrations.forms import SecretFieldsForm
from streaming.audit.admin import ReadOnlyAdmin, when
from streaming.audit.alerts import alert_test_send, email_addresses, webhook_shown
from streaming.models import Alert, AlertRule


class AlertRuleForm(SecretFieldsForm):
    secret_fields = ("webhook_url",)
    clear_webhook_url = forms.BooleanField(label="Remove the stored webhook", required=False)

    class Meta:
        model = AlertRule
        fields = "__all__"
        widgets = {"email_to": UnfoldAdminTextareaWidget(attrs={"rows": 2})}

    def clean_email_to(self) -> str:
        text = self.cleaned_data.get("email_to", "")
        wrong = []
        for address in email_addresses(text):
            try:
                validate_email(address)
            except ValidationError:
                wrong.append(address)
        if wrong:
            raise ValidationError(f"Not an email address: {', '.join(wrong)}.")
        return ", ".join(email_addresses(text))

    def clean_webhook_url(self) -> str:
        url = self.cleaned_data.get("webhook_url", "")
        if url:
            try:
                URLValidator(schemes=["http", "https"])(url)
            except ValidationError:
                # Not the value itself: it is a secret.
                raise ValidationError(
                    "Enter the webhook's http:// or https:// URL, e.g. "
                    "https://hooks.slack.com/services/…"
                ) from None
        return url

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not any(
            data.get(name) not in (None, False)
            for name in ("failure_rate_percent", "backlog_minutes", "token_refused")
        ):
            raise ValidationError(
                "Choose at least one condition: a failure rate, a backlog age or a refused token."
            )
        return data


@admin.register(AlertRule)
class AlertRuleAdmin(ModelAdmin):
    form = AlertRuleForm
    list_display = ("sync", "enabled", "conditions", "channels")
    list_filter = ("enabled", "sync")
    list_select_related = ("sync",)
    actions = ("send_test_alerts",)
    actions_submit_line = ("send_test_alert",)
    fieldsets = (
        (None, {"fields": ("sync", "enabled")}),
        (
            "When",
            {
                "fields": (
                    "failure_rate_percent",
                    "failure_window_minutes",
                    "failure_min_deliveries",
                    "backlog_minutes",
                    "token_refused",
                )
            },
        ),
        ("Where", {"fields": ("email_to", "webhook_url", "clear_webhook_url")}),
    )

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is not None and obj.webhook_url:
            return self.fieldsets
        # Nothing stored: nothing to remove.
        head, when_, (title, where) = self.fieldsets
        return (head, when_, (title, {"fields": ("email_to", "webhook_url")}))

    @display(description="conditions")
    def conditions(self, rule: AlertRule) -> str:
        parts = []
        if rule.failure_rate_percent is not None:
            parts.append(
                f"failures > {rule.failure_rate_percent} % in {rule.failure_window_minutes} min"
            )
        if rule.backlog_minutes is not None:
            parts.append(f"oldest pending > {rule.backlog_minutes} min")
        if rule.token_refused:
            parts.append("token refused")
        return "; ".join(parts) or "—"

    @display(description="sent to")
    def channels(self, rule: AlertRule) -> str:
        parts = [*email_addresses(rule.email_to)]
        if rule.webhook_url:
            parts.append(webhook_shown(rule.webhook_url))
        return ", ".join(parts) or "nowhere yet"

    def _test(self, request: HttpRequest, rule: AlertRule) -> None:
        alert, sent = alert_test_send(rule, sent_by=request.user.get_username())
        LogEntry.objects.log_actions(
            request.user.pk, [rule], CHANGE, "Sent a test alert", single_object=True
        )
        self.message_user(
            request,
            f"Test alert for {rule.sync}: " + "; ".join(sent.text.splitlines()) + ".",
            messages.SUCCESS if sent.ok else messages.WARNING,
        )

    @action(description="Save and send a test alert", permissions=["change"])
    def send_test_alert(self, request: HttpRequest, rule: AlertRule) -> None:
        self._test(request, rule)

    @admin.action(description="Send a test alert", permissions=["change"])
    def send_test_alerts(self, request: HttpRequest, queryset: QuerySet[AlertRule]) -> None:
        for rule in queryset.select_related("sync"):
            self._test(request, rule)


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ("raised", "kind", "sync", "message", "state")
    list_filter = ("kind", "sync", ("resolved_at", admin.EmptyFieldListFilter))
    list_select_related = ("sync",)
    ordering = ("-raised_at", "-id")
    fields = (
        "kind",
        "sync",
        "rule",
        "message",
        "raised_at",
        "resolved_at",
        "resolved_message",
        "sent_lines",
    )
    readonly_fields = fields

    @display(description="raised", ordering="raised_at")
    def raised(self, alert: Alert) -> str:
        return when(alert.raised_at)

    @display(description="state")
    def state(self, alert: Alert) -> str:
        if alert.kind == Alert.Kind.TEST:
            return "test"
        return f"resolved {when(alert.resolved_at)}" if alert.resolved_at else "open"

    @display(description="sent")
    def sent_lines(self, alert: Alert) -> str:
        return format_html_join("", "<div>{}</div>", ((line,) for line in alert.sent.splitlines()))
