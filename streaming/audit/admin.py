"""The operator's window on the data plane: the audit trail, the queue, and its health.

Events and attempts are read-only (they are the audit trail); a delivery changes only through
the "retry now" and "replay" actions (``streaming.delivery.replay``). The operator pages (user
timeline, sync health, send test event) are views of their own (``views``), served under the
Delivery admin's URLs.

Changelists stay fast on tables of millions of rows: related rows are joined
(``list_select_related``), searches are exact matches on indexed columns rather than
``icontains``, counts stop at an estimate beyond ten thousand rows and a deep page is read
through its ids from the nearer end (``LargeTablePaginator``), and there is no
``date_hierarchy`` (its drill-down runs ``SELECT DISTINCT date_trunc(...)`` over the whole
table on every page view); the date filters below cost nothing.

Over our usual ~400 lines: one ModelAdmin per model of the trail (events, deliveries,
attempts, contact links, event names), the list filters they share, and the source page's
traffic (the data plane's part of the control plane's page); each is short, and splitting them
would only send a reader between files to see one changelist. All derive from django-unfold's
classes, the admin's theme; times read to the second with their timezone (``when``).
"""

from __future__ import annotations

import functools
import json
from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.paginator import Page, Paginator
from django.db import connection
from django.db.models import Max, Min, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.translation import ngettext
from unfold.admin import ModelAdmin
from unfold.contrib.filters.admin import TextFilter

from integrations.admin import SourceAdmin
from integrations.models import Source, Sync
from streaming.audit import resend_admin, views
from streaming.audit.selectors import events_by_email
from streaming.audit.tries import attempts_by_try
from streaming.delivery.replay import (
    TEST_MESSAGE_PREFIX,
    deliveries_replay,
    deliveries_retry_now,
)
from streaming.models import ContactLink, Delivery, DeliveryAttempt, Event, KnownEventName

# --- shared pieces ----------------------------------------------------------------------------


class LargeTablePaginator(Paginator):
    """Counts and pages that cost about the same on a table of millions of rows as on a small one.

    - The count: PostgreSQL's row estimate for an unfiltered list of a large table; otherwise
      exact up to ``COUNT_EXACTLY_UP_TO`` rows, and beyond that the planner's estimate of the
      filtered query. An estimate reads "about" under the list (``estimated``).
    - A page: the ids of its rows first, read from an index alone, then those rows (joined to
      their event and sync). A page in the back half of the list is read from its end in the
      reverse order, so that the last page costs what the first one does. A whole table whose
      count is an estimate is paged by id values (``_page_ids_by_value``): any page is an index
      range; otherwise the offset skips index entries only. With an estimated count, the last
      page is the oldest rows.
    """

    ESTIMATE_ABOVE = 100_000
    COUNT_EXACTLY_UP_TO = 10_000
    template_name = "admin/streaming/pagination.html"

    estimated = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet) or connection.vendor != "postgresql":
            return super().count
        if not queryset.query.where:
            estimate = self._table_estimate(queryset)
            if estimate > self.ESTIMATE_ABOVE:
                self.estimated = True
                return estimate
        # Unordered, so that the filter's own index answers (ordered by id, PostgreSQL would
        # walk the primary key in search of the first rows that match).
        unordered = queryset.order_by()
        counted = unordered.values("pk")[: self.COUNT_EXACTLY_UP_TO + 1].count()
        if counted <= self.COUNT_EXACTLY_UP_TO:
            return counted
        self.estimated = True
        return max(self._query_estimate(unordered), counted)

    def page(self, number: int | str) -> Page:
        number = self.validate_number(number)
        queryset = self.object_list
        if number == 1 or not isinstance(queryset, QuerySet) or not queryset.ordered:
            return super().page(number)
        bottom = (number - 1) * self.per_page
        top = min(bottom + self.per_page, self.count)
        if top + self.orphans >= self.count:
            top = self.count
        ids = self._page_ids(queryset, bottom, top)
        rows = {row.pk: row for row in queryset.filter(pk__in=ids)}
        return self._get_page([rows[pk] for pk in ids if pk in rows], number, self)

    def _page_ids(self, queryset: QuerySet, bottom: int, top: int) -> list[Any]:
        """The ids of the rows at positions bottom..top of the list, from its nearer end."""
        if self.estimated and not queryset.query.where and self._newest_first(queryset):
            return self._page_ids_by_value(queryset, bottom, top)
        if bottom <= self.count - top:
            return list(queryset.values_list("pk", flat=True)[bottom:top])
        from_end = self.count - top
        backwards = queryset.reverse().values_list("pk", flat=True)
        return list(backwards[from_end : from_end + top - bottom])[::-1]

    def _page_ids_by_value(self, queryset: QuerySet, bottom: int, top: int) -> list[Any]:
        """A whole table newest first, its count an estimate: ids are given in the order rows
        are written and seldom skipped, so the row ``n`` places from the newest has about the
        newest id minus ``n``. Each page is then an index range, however deep (keyset)."""
        if bottom <= self.count - top:
            newest = queryset.order_by().aggregate(id=Max("pk"))["id"]
            newer = queryset.filter(pk__lte=newest - bottom)
            return list(newer.values_list("pk", flat=True)[: top - bottom])
        oldest = queryset.order_by().aggregate(id=Min("pk"))["id"]
        older = queryset.filter(pk__gte=oldest + self.count - top).order_by("pk")
        return list(older.values_list("pk", flat=True)[: top - bottom])[::-1]

    @staticmethod
    def _newest_first(queryset: QuerySet) -> bool:
        # The changelist may repeat its key: ("-id", "-id").
        pk = queryset.model._meta.pk
        order = set(queryset.query.order_by)
        return bool(order) and order <= {"-pk", f"-{pk.name}", f"-{pk.attname}"}

    @staticmethod
    def _table_estimate(queryset: QuerySet) -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                [queryset.model._meta.db_table],
            )
            row = cursor.fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _query_estimate(queryset: QuerySet) -> int:
        plan = json.loads(queryset.values("pk").explain(format="json"))
        return int(plan[0]["Plan"]["Plan Rows"])


def pretty_json(value: Any) -> str:
    """A JSON value (or a text that may be JSON) indented in a <pre>, escaped."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return format_html('<pre class="sb-json">{}</pre>', value)
    if value is None:
        return "—"
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return format_html('<pre class="sb-json">{}</pre>', text)


def when(value: Any) -> str:
    """A time as every admin page shows it: to the second, with the timezone."""
    return date_format(timezone.localtime(value), "DATETIME_FORMAT") if value else "—"


def duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class TextInputFilter(TextFilter):
    """A free-text list filter (event names are too many to list). ``*`` at the end: prefix."""

    lookup_field = ""

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet | None:
        value = (self.value() or "").strip()
        if not value:
            return None
        if value.endswith("*"):
            return queryset.filter(**{f"{self.lookup_field}__startswith": value[:-1]})
        return queryset.filter(**{self.lookup_field: value})


class EventNameFilter(TextInputFilter):
    title = "event name (exact, or a prefix and *)"
    parameter_name = "event_name"
    lookup_field = "event__event_name"


class OwnEventNameFilter(EventNameFilter):
    lookup_field = "event_name"


class StatusCodeFilter(admin.SimpleListFilter):
    title = "HTTP status"
    parameter_name = "status_class"
    # Fixed buckets: listing the distinct status codes would scan the whole attempt log.
    RANGES = {
        "2xx": Q(status_code__gte=200, status_code__lt=300),
        "4xx": Q(status_code__gte=400, status_code__lt=500) & ~Q(status_code=429),
        "429": Q(status_code=429),
        "5xx": Q(status_code__gte=500),
        "none": Q(status_code__isnull=True),
    }

    def lookups(self, request: HttpRequest, model_admin: ModelAdmin) -> list:
        return [
            ("2xx", "2xx"),
            ("4xx", "4xx (not 429)"),
            ("429", "429"),
            ("5xx", "5xx"),
            ("none", "no response"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet | None:
        condition = self.RANGES.get(self.value() or "")
        return queryset.filter(condition) if condition is not None else None


class TestEventFilter(admin.SimpleListFilter):
    title = "origin"
    parameter_name = "origin"
    event_path = "event__"

    def lookups(self, request: HttpRequest, model_admin: ModelAdmin) -> list:
        return [("test", "Test events (sent from the admin)"), ("live", "Live calls")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet | None:
        test = Q(**{f"{self.event_path}message_id__startswith": TEST_MESSAGE_PREFIX})
        if self.value() == "test":
            return queryset.filter(test)
        if self.value() == "live":
            return queryset.exclude(test)
        return None


class OwnTestEventFilter(TestEventFilter):
    event_path = ""


def timeline_url(user_key: str) -> str:
    return reverse("admin:streaming_timeline") + "?" + urlencode({"q": user_key})


def event_ids_matching(term: str, *, limit: int = 10_000) -> list[int]:
    """Ids of the events a search term designates: a user id, a message id, or an email in the
    traits.

    Exact matches only, each served by an index, united (an OR of them in one WHERE, one arm
    a subquery, would be a scan of every event): ``user_id``; ``(source, message_id)`` through
    ``source IN (all sources)``, since the unique index leads with the source; and the email
    expressions of ``events_by_email`` for an address.
    """
    lookups = [
        Event.objects.filter(user_id=term),
        Event.objects.filter(
            source_id__in=list(Source.objects.values_list("id", flat=True)), message_id=term
        ),
    ]
    if "@" in term:
        lookups.append(events_by_email(email=term))
    first, *others = [lookup.values_list("id", flat=True) for lookup in lookups]
    return list(first.union(*others)[:limit])


class UserSearchMixin:
    """Search rows that carry ``user_key`` and ``event``: by user, message id or email."""

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        # Event ids first (a few indexed lookups), then an OR of two indexed columns of this
        # table: a join with an OR across both tables could use neither index.
        event_ids = event_ids_matching(term)
        return queryset.filter(Q(user_key=term) | Q(event_id__in=event_ids)), False


class ReadOnlyAdmin(ModelAdmin):
    """The audit trail: visible to those who may view it, never added, edited or deleted here."""

    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # "Show counts" counts the whole table per filter choice
    paginator = LargeTablePaginator

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- Event ------------------------------------------------------------------------------------


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_filter_submit = True  # the event-name filter is typed
    list_display = ("id", "type", "event_name", "user_id", "message_id", "source", "received_at")
    list_filter = (
        "type",
        OwnEventNameFilter,
        "source",
        ("received_at", admin.DateFieldListFilter),
        OwnTestEventFilter,
    )
    list_select_related = ("source",)
    search_fields = ("user_id",)
    search_help_text = "Exact user id, message id or email (traits.email / context.traits.email)."
    ordering = ("-id",)
    fields = (
        "id",
        "type",
        "event_name",
        "user_id",
        "anonymous_id",
        "message_id",
        "source",
        "timestamp",
        "received_at",
        "payload_pretty",
        "deliveries_summary",
        "timeline_link",
    )
    readonly_fields = fields

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(id__in=event_ids_matching(term)), False

    @admin.display(description="payload")
    def payload_pretty(self, obj: Event) -> str:
        return pretty_json(obj.payload)

    @admin.display(description="deliveries")
    def deliveries_summary(self, obj: Event) -> str:
        rows = obj.deliveries.select_related("sync").order_by("id")
        if not rows:
            return "—"
        items = format_html_join(
            "",
            '<li><a href="{}">#{}</a> {} — {}</li>',
            (
                (
                    reverse("admin:streaming_delivery_change", args=[d.pk]),
                    d.pk,
                    d.sync.name,
                    d.get_status_display(),
                )
                for d in rows
            ),
        )
        return format_html("<ul>{}</ul>", items)

    @admin.display(description="user timeline")
    def timeline_link(self, obj: Event) -> str:
        key = obj.user_id or obj.anonymous_id
        if not key:
            return "—"
        return format_html('<a href="{}">Timeline of {}</a>', timeline_url(key), key)


# --- Delivery ---------------------------------------------------------------------------------


@admin.register(Delivery)
class DeliveryAdmin(UserSearchMixin, ModelAdmin):
    # Seven columns, the reason among them: a failed row reads whole on a 1,280 px screen.
    list_display = (
        "id",
        "status_colored",
        "call",
        "user_key",
        "route",
        "reason_short",
        "created",
    )
    list_display_links = ("id",)
    list_filter = (
        "status",
        "sync",
        ("sync__destination", admin.RelatedFieldListFilter),
        ("event__type", admin.ChoicesFieldListFilter),
        EventNameFilter,
        ("created_at", admin.DateFieldListFilter),
        TestEventFilter,
    )
    list_filter_submit = True  # the event-name filter is typed
    list_select_related = ("event", "sync__destination")
    search_fields = ("user_key",)
    search_help_text = "Exact user id, message id or email (traits.email / context.traits.email)."
    ordering = ("-id",)
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # "Show counts" counts the whole table per filter choice
    paginator = LargeTablePaginator
    actions = ("retry_now_action", "replay_action")
    fields = (
        "id",
        "status_colored",
        "event_link",
        "resend_of_link",
        "sync",
        "user_key",
        "attempts",
        "next_attempt_at",
        "reason",
        "created_at",
        "completed_at",
        "payload_pretty",
        "timeline_link",
        "tries",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        return super().get_queryset(request).select_related("event", "sync__destination")

    @admin.display(description="re-send")
    def resend_of_link(self, obj: Delivery) -> str:
        # A re-send (streaming/delivery/resend.py) names the delivery it repeats, which retention
        # may have purged since: the number stays.
        if obj.resend_of is None:
            return "—"
        url = reverse("admin:streaming_delivery_change", args=[obj.resend_of])
        return format_html('re-send of <a href="{}">#{}</a>', url, obj.resend_of)

    class Media:
        css = {"all": ("switchboard/timeline.css",)}  # the tries, styled as on the timeline

    @admin.display(description="HTTP attempts, by try")
    def tries(self, obj: Delivery) -> str:
        # Grouped by try with the path named (streaming/audit/tries.py): the normal "contact did
        # not exist -> created -> event resent" reads as one succeeded try, not two red errors.
        attempts = list(obj.attempt_log.order_by("id"))
        return render_to_string(
            "admin/streaming/tries.html",
            {"tries": attempts_by_try(obj, attempts), "delivery": obj},
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Change permission gates the actions; a delivery's own page is never a form, because
        # saving it would overwrite the state a worker may be writing at the same moment.
        if obj is not None:
            return False
        return super().has_change_permission(request)

    def may_operate(self, request: HttpRequest) -> bool:
        return super().has_change_permission(request)

    @admin.display(description="status", ordering="status")
    def status_colored(self, obj: Delivery) -> str:
        label = format_html(
            '<span class="sb-status sb-status-{}">{}</span>', obj.status, obj.get_status_display()
        )
        tries = ngettext("%(n)d try", "%(n)d tries", obj.attempts) % {"n": obj.attempts}
        if obj.status == Delivery.Status.PENDING and obj.next_attempt_at:
            tries += f", next {when(obj.next_attempt_at)}"
        return format_html('{}<div class="sb-muted">{}</div>', label, tries)

    @admin.display(description="sync → destination")
    def route(self, obj: Delivery) -> str:
        return format_html(
            '{}<div class="sb-muted">→ {}</div>', obj.sync.name, obj.sync.destination.name
        )

    @admin.display(description="call")
    def call(self, obj: Delivery) -> str:
        label = f"{obj.event.type} {obj.event.event_name}".strip()
        if obj.event.message_id.startswith(TEST_MESSAGE_PREFIX):
            label += " (test)"
        return label

    @admin.display(description="reason")
    def reason_short(self, obj: Delivery) -> str:
        return obj.reason[:120] + ("…" if len(obj.reason) > 120 else "")

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Delivery) -> str:
        # The day, then the time: two lines rather than a column wide enough for one.
        day, _, time = when(obj.created_at).partition(" ")
        done = (
            format_html(
                '<div class="sb-muted">done after {}</div>',
                duration(obj.completed_at - obj.created_at),
            )
            if obj.completed_at
            else ""
        )
        return format_html(
            '<span class="sb-nowrap">{}</span> <span class="sb-nowrap">{}</span>{}', day, time, done
        )

    @admin.display(description="event")
    def event_link(self, obj: Delivery) -> str:
        return format_html(
            '<a href="{}">{} (message {})</a>',
            reverse("admin:streaming_event_change", args=[obj.event_id]),
            obj.event,
            obj.event.message_id,
        )

    @admin.display(description="payload")
    def payload_pretty(self, obj: Delivery) -> str:
        return pretty_json(obj.event.payload)

    @admin.display(description="user timeline")
    def timeline_link(self, obj: Delivery) -> str:
        return format_html(
            '<a href="{}">Timeline of {}</a>', timeline_url(obj.user_key), obj.user_key
        )

    # -- actions

    @admin.action(
        description="Retry now (pending: try at once, keeping each user's order)",
        permissions=["change"],
    )
    def retry_now_action(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        self._held_warn(request, queryset.filter(status=Delivery.Status.PENDING))
        change = deliveries_retry_now(deliveries=queryset)
        self._log(request, queryset.filter(status=Delivery.Status.PENDING), "Retry now")
        if not change.deliveries:
            self.message_user(
                request,
                "None of the selected deliveries is pending: there is nothing to retry.",
                messages.WARNING,
            )
            return
        text = ngettext(
            "%(n)d pending delivery is due now: it is tried at once, after any earlier "
            "delivery of the same user.",
            "%(n)d pending deliveries are due now: they are tried at once, each after any "
            "earlier delivery of the same user.",
            change.deliveries,
        )
        self.message_user(request, text % {"n": change.deliveries}, messages.SUCCESS)

    @admin.action(
        description="Replay (failed/expired: send again, before later deliveries of the same user)",
        permissions=["change"],
    )
    def replay_action(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        # Log before: the replay changes the statuses the queryset filters on.
        logged = list(queryset.filter(status__in=["failed", "expired"])[:1000])
        self._held_warn(request, queryset.filter(status__in=["failed", "expired"]))
        change = deliveries_replay(deliveries=queryset)
        self._log(request, logged, "Replayed")
        if not change.deliveries:
            self.message_user(
                request,
                "None of the selected deliveries failed or expired: there is nothing to replay.",
                messages.WARNING,
            )
            return
        text = ngettext(
            "%(n)d delivery replayed: it will be sent again, before the later calls of the "
            "same user.",
            "%(n)d deliveries replayed: they will be sent again, each before the later calls "
            "of the same user.",
            change.deliveries,
        )
        self.message_user(request, text % {"n": change.deliveries}, messages.SUCCESS)

    def _held_warn(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        """Say so when a worker will not pick these up yet: the action alone cannot send them."""
        held = queryset.filter(
            Q(sync__status=Sync.Status.PAUSED) | Q(sync__destination__auth_failed_at__isnull=False)
        ).count()
        if held:
            text = ngettext(
                "%(n)d of these deliveries belongs to a paused sync or to a destination whose "
                "token Intercom refused: it waits until the sync is enabled or the token "
                "replaced.",
                "%(n)d of these deliveries belong to a paused sync or to a destination whose "
                "token Intercom refused: they wait until the sync is enabled or the token "
                "replaced.",
                held,
            )
            self.message_user(request, text % {"n": held}, messages.WARNING)

    def _log(self, request: HttpRequest, objects: Any, message: str) -> None:
        objects = list(objects[:1000]) if isinstance(objects, QuerySet) else objects
        if objects:
            LogEntry.objects.log_actions(request.user.pk, objects, CHANGE, message)

    # -- the operator pages (streaming/audit/views.py), under this admin's URLs

    def get_urls(self) -> list:
        def page(view: Any) -> Any:
            return self.admin_site.admin_view(functools.partial(view, delivery_admin=self))

        return [
            path("timeline/", page(views.timeline), name="streaming_timeline"),
            path("timeline/delete/", page(views.person_delete), name="streaming_person_delete"),
            path(
                "timeline/resend/",
                page(resend_admin.profile_resend_view),
                name="streaming_profile_resend",
            ),
            path("resend/", page(resend_admin.sync_resend), name="streaming_sync_resend"),
            path("backfill/", page(resend_admin.sync_backfill), name="streaming_sync_backfill"),
            path(
                "timeline/intercom-now/",
                page(views.intercom_now_page),
                name="streaming_intercom_now",
            ),
            path("health/", page(views.sync_health), name="streaming_sync_health"),
            path(
                "health/<int:sync_id>/replay/",
                page(views.sync_replay),
                name="streaming_sync_replay",
            ),
            path("test-event/", page(views.test_event), name="streaming_test_event"),
            path(
                "<int:delivery_id>/operate/",
                page(views.delivery_operate),
                name="streaming_delivery_operate",
            ),
            *super().get_urls(),
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra = {**(extra_context or {}), "may_operate": self.may_operate(request)}
        return super().changelist_view(request, extra)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra = {**(extra_context or {}), "may_operate": self.may_operate(request)}
        return super().change_view(request, object_id, form_url, extra)


# --- DeliveryAttempt --------------------------------------------------------------------------


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(UserSearchMixin, ReadOnlyAdmin):
    list_display = (
        "id",
        "started_at",
        "method",
        "url",
        "status_code",
        "category",
        "duration_ms",
        "user_key",
        "delivery_link",
    )
    list_filter = (
        "category",
        StatusCodeFilter,
        ("delivery__sync", admin.RelatedFieldListFilter),
        ("started_at", admin.DateFieldListFilter),
    )
    search_fields = ("user_key",)
    search_help_text = "Exact user id, message id or email."
    ordering = ("-id",)
    fields = (
        "id",
        "delivery_link",
        "event_link",
        "user_key",
        "started_at",
        "method",
        "url",
        "status_code",
        "category",
        "error_code",
        "duration_ms",
        "request_pretty",
        "response_pretty",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeliveryAttempt]:
        # The request bodies are only read on an attempt's own page.
        queryset = super().get_queryset(request)
        if request.resolver_match and request.resolver_match.url_name.endswith("changelist"):
            queryset = queryset.defer("request_body", "response_excerpt")
        return queryset

    @admin.display(description="delivery")
    def delivery_link(self, obj: DeliveryAttempt) -> str:
        return format_html(
            '<a href="{}">#{}</a>',
            reverse("admin:streaming_delivery_change", args=[obj.delivery_id]),
            obj.delivery_id,
        )

    @admin.display(description="event")
    def event_link(self, obj: DeliveryAttempt) -> str:
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:streaming_event_change", args=[obj.event_id]),
            obj.event,
        )

    @admin.display(description="request body")
    def request_pretty(self, obj: DeliveryAttempt) -> str:
        return pretty_json(obj.request_body)

    @admin.display(description="response")
    def response_pretty(self, obj: DeliveryAttempt) -> str:
        return pretty_json(obj.response_excerpt) if obj.response_excerpt else "—"


# --- ContactLink ------------------------------------------------------------------------------


@admin.register(ContactLink)
class ContactLinkAdmin(ModelAdmin):
    """A cache of Intercom contact ids. Deleting a link is safe: the next call looks it up again."""

    list_display = ("user_key", "destination", "contact_id", "role", "fingerprint", "updated_at")
    list_filter = ("destination", "role", ("updated_at", admin.DateFieldListFilter))
    list_select_related = ("destination",)
    search_fields = ("=user_key", "=contact_id")
    search_help_text = "Exact user key or Intercom contact id."
    ordering = ("-updated_at",)
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # "Show counts" counts the whole table per filter choice
    paginator = LargeTablePaginator
    readonly_fields = ("destination", "user_key", "contact_id", "role", "fingerprint", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- KnownEventName ---------------------------------------------------------------------------


@admin.register(KnownEventName)
class KnownEventNameAdmin(ModelAdmin):
    """The event names each workspace received through us, against Intercom's 120-name limit.

    Deleting one (after archiving it in Intercom) frees a slot in our count; nothing else is
    editable.
    """

    list_display = ("name", "destination", "created_at")
    list_filter = ("destination",)
    list_select_related = ("destination",)
    search_fields = ("name",)
    ordering = ("destination", "name")
    readonly_fields = ("destination", "name", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- Source, with its traffic -----------------------------------------------------------------


admin.site.unregister(Source)


@admin.register(Source)
class SourceWithTrafficAdmin(SourceAdmin):
    """The control plane's source page plus what only the data plane knows: the calls received.

    (The control plane never imports the data plane; the data plane extends its admin instead.)
    """

    TRAFFIC_WINDOW = timedelta(hours=24)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = super().get_fields(request, obj)
        return [*fields, "traffic"] if obj is not None else fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*super().get_readonly_fields(request, obj), "traffic"]

    @admin.display(description="Last 24 hours")
    def traffic(self, source: Source) -> str:
        since = timezone.now() - self.TRAFFIC_WINDOW
        # One indexed range (events by received_at) for the day, then the source's rows of it.
        calls = Event.objects.filter(source=source, received_at__gte=since).count()
        events_url = (
            reverse("admin:streaming_event_changelist")
            + "?"
            + urlencode(
                {"source__id__exact": source.pk, "received_at__gte": since.date().isoformat()}
            )
        )
        text = ngettext("%(n)d call received", "%(n)d calls received", calls) % {"n": calls}
        return format_html(
            '<a href="{}">{}</a> <span class="sb-muted">since {}</span>',
            events_url,
            text,
            when(since),
        )
