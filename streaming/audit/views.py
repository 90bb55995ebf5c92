"""The operator's pages beside the trail's admin lists: a user's timeline, sync health, send
test event, and the queue buttons of one delivery.

Plain views, each taking the ``DeliveryAdmin`` whose URLs serve them (for the admin's
permissions, context and messages); the reads are ``selectors``, the writes ``delivery.replay``.

    /admin/streaming/delivery/timeline/?q=<user id or email>
    /admin/streaming/delivery/health/[?sync=<id>]
    /admin/streaming/delivery/test-event/?sync=<id>
    /admin/streaming/delivery/timeline/delete/?user=<user id>   (GDPR/CCPA: "Delete this person")
    /admin/streaming/delivery/timeline/intercom-now/?delivery=<id>  (the contact in Intercom now)

Also the console's frame, which django-unfold asks for by name (``UNFOLD`` in config/settings.py):
the admin index's context (``admin_index``) and the sidebar (``admin_navigation``).

Over our usual ~400 lines: every operator page that is not a model's list or form, each a
short function; they share the admin's context helpers and the same permission checks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import AdminSite
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import ngettext
from unfold.widgets import (
    UnfoldAdminSelectWidget,
    UnfoldAdminTextareaWidget,
    UnfoldAdminTextInputWidget,
)

from integrations.models import Destination, PropertyMapping, Source, Sync
from streaming.audit.overview import CHART_OPTIONS, DEFAULT_SPAN, SPANS, overview_build
from streaming.audit.selectors import syncs_health
from streaming.audit.timeline import TimelineFilters, recent_users, user_timeline
from streaming.audit.tries import json_pretty
from streaming.delivery.deletion import (
    DeletionRefused,
    destinations_knowing,
    person_deletion_existing,
    person_deletion_request,
    person_footprint,
)
from streaming.delivery.intercom_now import intercom_now
from streaming.delivery.replay import (
    TEST_CALL_TYPES,
    deliveries_replay,
    sync_replayable_deliveries,
    sync_test_event_send,
    test_call_normalise,
)
from streaming.ingest.segment import InvalidCall
from streaming.models import CallType, ContactLink, Delivery, DeliveryAttempt, PersonDeletion


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
        # No "opts": unfold's header then shows the page's title rather than "Deliveries".
        "title": title,
        "may_operate": delivery_admin.may_operate(request),
        **extra,
    }


def timeline(request: HttpRequest, *, delivery_admin: DeliveryAdmin) -> HttpResponse:
    """Everything sent about one user (``?q=`` a user id or an email), one card per call, with
    Intercom's answers; ``sync``, ``type`` and ``outcome`` narrow it, ``before`` pages back.
    Without ``q``: a search box and the users of the latest calls."""
    if not delivery_admin.has_view_permission(request):
        raise PermissionDenied
    query = request.GET.get("q", "").strip()
    filters = TimelineFilters.from_query(request.GET.dict())
    before = request.GET.get("before", "")
    timeline = user_timeline(
        query=query, filters=filters, before=int(before) if before.isdigit() else None
    )
    title = f"Timeline of {query}" if query else "User timeline"
    # Each user id shown, with its deletion when the person was deleted on request.
    people = [(user_id, person_deletion_existing(user_id=user_id)) for user_id in timeline.user_ids]
    return TemplateResponse(
        request,
        "admin/streaming/timeline.html",
        _context(
            request,
            delivery_admin,
            title,
            timeline=timeline,
            query=query,
            people=people,
            may_delete=request.user.has_perm("streaming.delete_person"),
            recent=[] if query else recent_users(),
            syncs=Sync.objects.order_by("name").values_list("id", "name"),
            call_types=CallType.choices,
            outcomes=[*Delivery.Status.choices, ("kept_out", "Kept out")],
            filter_query=urlencode(
                {
                    key: value
                    for key, value in (
                        ("q", query),
                        ("sync", filters.sync_id or ""),
                        ("type", filters.call_type),
                        ("outcome", filters.outcome),
                    )
                    if value
                }
            ),
        ),
    )


def intercom_now_page(request: HttpRequest, *, delivery_admin: DeliveryAdmin) -> HttpResponse:
    """The timeline's "Intercom now" (``?delivery=`` a delivery id): what we last sent about the
    contact, and what Intercom holds now. The GET page asks; only its POST reads Intercom."""
    if not delivery_admin.has_view_permission(request):
        raise PermissionDenied
    delivery_id = request.POST.get("delivery") or request.GET.get("delivery") or ""
    if not delivery_id.isdigit():
        return HttpResponseRedirect(reverse("admin:streaming_timeline"))
    delivery = get_object_or_404(
        Delivery.objects.select_related("event", "sync__destination"), pk=int(delivery_id)
    )
    result = None
    if request.method == "POST":
        if not delivery_admin.may_operate(request):
            raise PermissionDenied
        result = intercom_now(delivery=delivery, sent_by=request.user.get_username())
    return TemplateResponse(
        request,
        "admin/streaming/intercom_now.html",
        _context(
            request,
            delivery_admin,
            f"Intercom now: {delivery.user_key}",
            delivery=delivery,
            result=result,
            timeline_url=reverse("admin:streaming_timeline") + f"?q={quote(delivery.user_key)}",
            contact_pretty=json_pretty(result.contact) if result and result.contact else "",
        ),
    )


def person_delete(request: HttpRequest, *, delivery_admin: DeliveryAdmin) -> HttpResponse:
    """The timeline's "Delete this person" (``?user=`` a user id): what will happen, in which
    workspaces (all that know the person, or some), then the deletion itself."""
    if not request.user.has_perm("streaming.delete_person"):
        raise PermissionDenied
    user_id = (request.POST.get("user") or request.GET.get("user") or "").strip()
    timeline_url = reverse("admin:streaming_timeline") + f"?q={quote(user_id)}"
    if not user_id:
        return HttpResponseRedirect(reverse("admin:streaming_timeline"))
    existing = person_deletion_existing(user_id=user_id)
    if existing is not None:
        delivery_admin.message_user(
            request,
            f"This person was deleted already: deletion #{existing.pk}.",
            messages.WARNING,
        )
        return HttpResponseRedirect(
            reverse("admin:streaming_persondeletion_change", args=[existing.pk])
        )
    footprint = person_footprint(user_id=user_id)
    choices = destinations_knowing(user_id=user_id, footprint=footprint)
    if request.method == "POST":
        picked = {int(i) for i in request.POST.getlist("destination") if i.isdigit()}
        every = {choice.destination.pk for choice in choices}
        try:
            requested = person_deletion_request(
                user_id=user_id,
                # Every workspace ticked: "all", which is also what a later sync would know.
                destination_ids=None if picked == every else sorted(picked & every),
                requested_by=request.user,
                via=PersonDeletion.Via.ADMIN,
            )
        except DeletionRefused as refusal:
            delivery_admin.message_user(request, str(refusal), messages.ERROR)
            return HttpResponseRedirect(timeline_url)
        deletion = requested.deletion
        # The history names the record, never the person.
        LogEntry.objects.log_actions(
            request.user.pk,
            [deletion],
            ADDITION,
            "Requested a person's deletion",
            single_object=True,
        )
        queued = deletion.targets.exclude(delivery=None).count()
        delivery_admin.message_user(
            request,
            f"Deletion #{deletion.pk} started: "
            + (
                ngettext(
                    "a delete call is queued in %(n)d workspace; ",
                    "delete calls are queued in %(n)d workspaces; ",
                    queued,
                )
                % {"n": queued}
                if queued
                else "no workspace to delete in; "
            )
            + "the person's data is purged once the deletes are done, and their calls are "
            "dropped from now on.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(
            reverse("admin:streaming_persondeletion_change", args=[deletion.pk])
        )
    pending = Delivery.objects.filter(event_id__in=footprint.event_ids, status="pending")
    figures = {
        "events": len(footprint.event_ids),
        "deliveries": Delivery.objects.filter(event_id__in=footprint.event_ids).count(),
        "attempts": DeliveryAttempt.objects.filter(event_id__in=footprint.event_ids).count(),
        "contact_links": ContactLink.objects.filter(
            destination_id__in=Destination.objects.values("id"), user_key__in=footprint.keys
        ).count(),
        "pending": pending.count(),
    }
    return TemplateResponse(
        request,
        "admin/streaming/person_delete.html",
        _context(
            request,
            delivery_admin,
            f"Delete {user_id}",
            user_id=user_id,
            choices=choices,
            figures=figures,
            timeline_url=timeline_url,
        ),
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
    if change.deliveries:
        text = ngettext(
            "%(sync)s: %(n)d failed/expired delivery replayed: it will be sent again, before "
            "the later calls of the same user.",
            "%(sync)s: %(n)d failed/expired deliveries replayed: they will be sent again, each "
            "before the later calls of the same user.",
            change.deliveries,
        ) % {"sync": sync.name, "n": change.deliveries}
    else:
        text = f"{sync.name}: no delivery failed or expired; there is nothing to replay."
    delivery_admin.message_user(
        request, text, messages.SUCCESS if change.deliveries else messages.WARNING
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
    not_sent: list[tuple[str, str]] = []
    if request.method == "POST":
        form = TestEventForm(request.POST, sent_by=request.user.get_username())
        if form.is_valid():
            data = form.cleaned_data
            result = sync_test_event_send(sync=data["sync"], call=data["call"])
            not_sent = [
                *properties_not_mapped(sync=data["sync"], call=result.call),
                *result.dropped,
            ]
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
            not_sent=not_sent,
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


NOT_MAPPED = (
    "not mapped: this sync sends only the properties its mappings select (add a property "
    "mapping, or turn on “send all properties”)"
)


def properties_not_mapped(*, sync: Sync, call: dict[str, Any]) -> list[tuple[str, str]]:
    """The properties of a track that no event-metadata mapping of the sync selects.

    The mapping leaves them out without a word (Amplitude's rule: nothing unselected is sent);
    the test page names them, beside what the mapping dropped for a bad value.
    """
    properties = call.get("properties")
    if call.get("type") != "track" or not isinstance(properties, dict) or sync.send_all_properties:
        return []
    mapped = {
        path.split(".")[1]
        for path in sync.mappings.filter(target=PropertyMapping.Target.EVENT_METADATA).values_list(
            "source_path", flat=True
        )
        if path.startswith("properties.")
    }
    if "revenue" in mapped:
        mapped.add("currency")  # it rides on revenue's monetary amount
    return [(f"properties.{key}", NOT_MAPPED) for key in properties if key not in mapped]


class TestEventForm(forms.Form):
    # Unfold's widgets: the page's fields look like every other form of the admin.
    sync = forms.ModelChoiceField(
        queryset=Sync.objects.select_related("destination"), widget=UnfoldAdminSelectWidget
    )
    call_type = forms.ChoiceField(
        choices=[(t, t) for t in TEST_CALL_TYPES], widget=UnfoldAdminSelectWidget
    )
    user_id = forms.CharField(max_length=255, widget=UnfoldAdminTextInputWidget)
    event_name = forms.CharField(
        max_length=255,
        required=False,
        widget=UnfoldAdminTextInputWidget,
        help_text="track: the event name; page/screen: the page name; group: the groupId.",
    )
    properties = forms.JSONField(
        required=False,
        initial=dict,
        widget=UnfoldAdminTextareaWidget(attrs={"rows": 4}),
        help_text='track/page: a JSON object, e.g. {"plan": "pro"}.',
    )
    traits = forms.JSONField(
        required=False,
        initial=dict,
        widget=UnfoldAdminTextareaWidget(attrs={"rows": 4}),
        help_text='identify/group: a JSON object, e.g. {"email": "ada@example.com"}.',
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


# --- the console's frame: the index and the sidebar (django-unfold calls these) ---------------


def admin_index(request: HttpRequest, context: dict[str, Any]) -> dict[str, Any]:
    """The admin's landing page: the overview of every workspace and sync (``?span=`` hour,
    day or month for the charts), the way to every operator page, and what is configured."""
    user = request.user
    may_view = user.has_perm("streaming.view_delivery")
    context["title"] = "Overview"
    context["overview"] = (
        overview_build(span_key=request.GET.get("span", DEFAULT_SPAN)) if may_view else None
    )
    context["spans"] = SPANS.values()
    context["chart_options"] = CHART_OPTIONS
    context["console"] = {
        "may_view": may_view,
        "may_operate": user.has_perm("streaming.change_delivery"),
        "may_configure": user.has_perm("integrations.view_sync"),
        # Three tiny tables: what is configured, so an empty install says where to start.
        "destinations": Destination.objects.count(),
        "sources": Source.objects.count(),
        "syncs": Sync.objects.count(),
    }
    return context


def _permission(codename: str) -> Callable[[HttpRequest], bool]:
    return lambda request: request.user.has_perm(codename)


def _model_item(title: str, icon: str, label: str) -> dict[str, Any] | None:
    """A sidebar link to a model's list, shown to those who may view it; None if not in admin."""
    app_label, model_name = label.split(".")
    registered = {model._meta.label_lower for model in admin.site._registry}
    if label not in registered:
        return None
    changelist = reverse(f"admin:{app_label}_{model_name}_changelist")
    return {
        "title": title,
        "icon": icon,
        "link": changelist,
        "permission": _permission(f"{app_label}.view_{model_name}"),
        # Unfold marks a link active when its path is a prefix of the page's; the operator
        # pages live under the delivery list's path, and are links of their own.
        "active": lambda request: (
            request.path == changelist
            or (
                request.path.startswith(changelist)
                and request.resolver_match is not None
                and request.resolver_match.url_name.endswith(("_change", "_history", "_delete"))
            )
        ),
    }


def admin_navigation(request: HttpRequest) -> list[dict[str, Any]]:
    """The sidebar: operating first (what happened, what to do), then configuration."""
    view = _permission("streaming.view_delivery")

    def page(title: str, icon: str, name: str, permission: Callable[[HttpRequest], bool]) -> dict:
        link = reverse(f"admin:{name}")
        return {
            "title": title,
            "icon": icon,
            "link": link,
            "permission": permission,
            "active": lambda request: request.path == link,
        }

    groups = [
        (
            "Operate",
            [
                page("Overview", "dashboard", "index", lambda request: True),
                page("Sync health", "monitor_heart", "streaming_sync_health", view),
                page("User timeline", "person_search", "streaming_timeline", view),
                page(
                    "Send test event",
                    "send",
                    "streaming_test_event",
                    _permission("streaming.change_delivery"),
                ),
                _model_item("Deliveries", "outbox", "streaming.delivery"),
                _model_item("Events", "bolt", "streaming.event"),
                _model_item("HTTP attempts", "swap_horiz", "streaming.deliveryattempt"),
                _model_item("Person deletions", "person_remove", "streaming.persondeletion"),
                _model_item("Suppressed ids", "block", "streaming.suppression"),
                _model_item("Alerts", "notifications", "streaming.alert"),
            ],
        ),
        (
            "Configure",
            [
                _model_item("Destinations", "cloud_upload", "integrations.destination"),
                _model_item("Sources", "input", "integrations.source"),
                _model_item("Write keys", "key", "integrations.writekey"),
                _model_item("Syncs", "sync_alt", "integrations.sync"),
                _model_item("Event filters", "filter_alt", "integrations.eventfilter"),
                _model_item("Property mappings", "account_tree", "integrations.propertymapping"),
                _model_item("Alert rules", "notification_add", "streaming.alertrule"),
                _model_item("Intercom app (OAuth)", "apps", "integrations.intercomapp"),
            ],
        ),
        (
            "Look up",
            [
                _model_item("Contact links", "link", "streaming.contactlink"),
                _model_item("Known event names", "label", "streaming.knowneventname"),
            ],
        ),
        (
            "Administer",
            [
                _model_item("Users", "person", "auth.user"),
                _model_item("Groups", "group", "auth.group"),
                _model_item("API tokens", "token", "authtoken.tokenproxy"),
                _model_item("Login lockouts", "lock", "axes.accessattempt"),
            ],
        ),
    ]
    return [
        {"title": title, "separator": True, "items": [item for item in items if item]}
        for title, items in groups
    ]
