"""The operator's pages beside the trail's admin lists: a user's timeline, sync health, send
test event, and the queue buttons of one delivery.

Plain views, each taking the ``DeliveryAdmin`` whose URLs serve them (for the admin's
permissions, context and messages); the reads are ``selectors``, the writes ``delivery.replay``.

    /admin/streaming/delivery/timeline/?q=<user id or email>
    /admin/streaming/delivery/health/[?sync=<id>]
    /admin/streaming/delivery/test-event/?sync=<id>
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from django import forms
from django.contrib import messages
from django.contrib.admin import AdminSite
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse

from integrations.models import Sync
from streaming.audit.selectors import syncs_health, user_timeline
from streaming.delivery.replay import (
    TEST_CALL_TYPES,
    deliveries_replay,
    sync_replayable_deliveries,
    sync_test_event_send,
    test_call_normalise,
)
from streaming.ingest.segment import InvalidCall
from streaming.models import Delivery


class DeliveryAdmin(Protocol):
    """What the pages use of the admin that serves them (``admin.DeliveryAdmin``)."""

    admin_site: AdminSite

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool: ...

    def may_operate(self, request: HttpRequest) -> bool: ...

    def message_user(self, request: HttpRequest, message: str, level: int = ...) -> None: ...

    def replay_action(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None: ...

    def retry_now_action(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None: ...


def _context(
    request: HttpRequest, delivery_admin: DeliveryAdmin, title: str, **extra: Any
) -> dict[str, Any]:
    return {
        **delivery_admin.admin_site.each_context(request),
        "opts": Delivery._meta,
        "title": title,
        "may_operate": delivery_admin.may_operate(request),
        **extra,
    }


def timeline(request: HttpRequest, *, delivery_admin: DeliveryAdmin) -> HttpResponse:
    """Everything sent about one user (``?q=`` a user id or an email), with Intercom's answers."""
    if not delivery_admin.has_view_permission(request):
        raise PermissionDenied
    query = request.GET.get("q", "").strip()
    timeline = user_timeline(query=query)
    title = f"Timeline of {query}" if query else "User timeline"
    return TemplateResponse(
        request,
        "admin/streaming/timeline.html",
        _context(request, delivery_admin, title, timeline=timeline, query=query),
    )


def sync_health(request: HttpRequest, *, delivery_admin: DeliveryAdmin) -> HttpResponse:
    """Each sync's deliveries over the last 24 hours (``?sync=`` one sync)."""
    if not delivery_admin.has_view_permission(request):
        raise PermissionDenied
    syncs = Sync.objects.order_by("name")
    sync_id = request.GET.get("sync", "")
    if sync_id.isdigit():
        syncs = syncs.filter(pk=int(sync_id))
    return TemplateResponse(
        request,
        "admin/streaming/sync_health.html",
        _context(
            request, delivery_admin, "Sync health (last 24 hours)", rows=syncs_health(syncs=syncs)
        ),
    )


def sync_replay(
    request: HttpRequest, sync_id: int, *, delivery_admin: DeliveryAdmin
) -> HttpResponse:
    """The health page's button: replay every failed or expired delivery of a sync."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if not delivery_admin.may_operate(request):
        raise PermissionDenied
    sync = get_object_or_404(Sync, pk=sync_id)
    change = deliveries_replay(deliveries=sync_replayable_deliveries(sync=sync))
    LogEntry.objects.log_actions(
        request.user.pk,
        [sync],
        CHANGE,
        f"Replayed {change.deliveries} failed/expired deliveries",
        single_object=True,
    )
    delivery_admin.message_user(
        request,
        f"{sync.name}: {change.deliveries} failed/expired deliveries replayed; "
        f"{change.lanes} lanes woken.",
        messages.SUCCESS if change.deliveries else messages.WARNING,
    )
    return HttpResponseRedirect(reverse("admin:streaming_sync_health") + f"?sync={sync.pk}")


def delivery_operate(
    request: HttpRequest, delivery_id: int, *, delivery_admin: DeliveryAdmin
) -> HttpResponse:
    """The retry-now / replay buttons of one delivery's page."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if not delivery_admin.may_operate(request):
        raise PermissionDenied
    delivery = get_object_or_404(Delivery, pk=delivery_id)
    one = Delivery.objects.filter(pk=delivery.pk)
    if request.POST.get("operation") == "replay":
        delivery_admin.replay_action(request, one)
    else:
        delivery_admin.retry_now_action(request, one)
    return HttpResponseRedirect(reverse("admin:streaming_delivery_change", args=[delivery.pk]))


def test_event(request: HttpRequest, *, delivery_admin: DeliveryAdmin) -> HttpResponse:
    """Send one call through a sync now, bypassing the queue, and show Intercom's answer."""
    if not delivery_admin.may_operate(request):
        raise PermissionDenied
    result = None
    if request.method == "POST":
        form = TestEventForm(request.POST, sent_by=request.user.get_username())
        if form.is_valid():
            data = form.cleaned_data
            result = sync_test_event_send(sync=data["sync"], call=data["call"])
            LogEntry.objects.log_actions(
                request.user.pk,
                [data["sync"]],
                CHANGE,
                f"Sent test event {data['call'].message_id}",
                single_object=True,
            )
    else:
        initial = {"call_type": "track"}
        if request.GET.get("sync", "").isdigit():
            initial["sync"] = request.GET["sync"]
        form = TestEventForm(initial=initial)
    return TemplateResponse(
        request,
        "admin/streaming/test_event.html",
        _context(
            request,
            delivery_admin,
            "Send test event",
            form=form,
            result=result,
            call_json=json.dumps(result.call, indent=2) if result else "",
            exchanges=[
                (
                    a,
                    ""
                    if a.request_body is None
                    else json.dumps(a.request_body, indent=2, ensure_ascii=False),
                )
                for a in (result.attempts if result else [])
            ],
        ),
    )


class TestEventForm(forms.Form):
    sync = forms.ModelChoiceField(queryset=Sync.objects.select_related("destination"))
    call_type = forms.ChoiceField(choices=[(t, t) for t in TEST_CALL_TYPES])
    user_id = forms.CharField(max_length=255)
    event_name = forms.CharField(
        max_length=255,
        required=False,
        help_text="track: the event name; page/screen: the page name; group: the groupId.",
    )
    properties = forms.JSONField(
        required=False, initial=dict, help_text="track/page: a JSON object."
    )
    traits = forms.JSONField(
        required=False, initial=dict, help_text="identify/group: a JSON object."
    )

    def __init__(self, *args: Any, sent_by: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent_by = sent_by

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for name in ("properties", "traits"):
            if data.get(name) in (None, ""):
                data[name] = {}
            elif not isinstance(data[name], dict):
                self.add_error(name, 'Give a JSON object, e.g. {"plan": "pro"}.')
        if self.errors:
            return data
        if data["call_type"] in ("track", "group") and not data.get("event_name"):
            self.add_error("event_name", "A track needs an event name; a group, a groupId.")
            return data
        try:
            data["call"] = test_call_normalise(
                call_type=data["call_type"],
                user_id=data["user_id"],
                event_name=data.get("event_name", ""),
                properties=data["properties"],
                traits=data["traits"],
                sent_by=self.sent_by,
            )
        except InvalidCall as error:
            for field_name, problems in error.errors.items():
                self.add_error(None, f"{field_name}: {' '.join(problems)}")
        if not data["sync"].sources.exists():
            self.add_error("sync", "This sync has no source: an event needs one.")
        return data
