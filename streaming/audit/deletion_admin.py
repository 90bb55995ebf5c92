"""The admin of people deleted on request: the deletion records and the suppression list.

A deletion record (``PersonDeletion``) is read-only: it is what remains of a person once their
data is purged (who asked, when, each workspace's answer), without personal data. Its one action
gives up on the workspaces that did not delete and purges anyway. The suppression list shows the
hashes ingest drops calls for; an operator holding ``streaming.lift_suppression`` lifts one (the
person's calls are accepted again). Neither list can be searched by hash alone: typing a user id
finds that person's rows by hashing it the same way.

Deletions start from a user's timeline ("Delete this person", ``views.person_delete``) or the
API (``deletion_api``).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import ngettext
from unfold.admin import ModelAdmin, TabularInline

from streaming.delivery.deletion import person_deletion_purge_anyway, suppression_lift
from streaming.ingest.suppression import subject_hashes
from streaming.models import PersonDeletion, PersonDeletionTarget, Suppression


def _hashes_of(search_term: str) -> list[str]:
    term = search_term.strip()
    return subject_hashes(term) if term else []


class PersonDeletionTargetInline(TabularInline):
    model = PersonDeletionTarget
    extra = 0
    can_delete = False
    fields = (
        "destination",
        "sync",
        "status",
        "status_code",
        "error_code",
        "delete_call",
        "completed_at",
    )
    readonly_fields = fields
    verbose_name = "workspace"
    verbose_name_plural = "each workspace's answer"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="delete call")
    def delete_call(self, target: PersonDeletionTarget) -> str:
        if target.delivery_id is None:
            return "—"
        url = reverse("admin:streaming_delivery_change", args=[target.delivery_id])
        return format_html('<a href="{}">delivery #{}</a>', url, target.delivery_id)


@admin.register(PersonDeletion)
class PersonDeletionAdmin(ModelAdmin):
    list_display = (
        "id",
        "status",
        "requested_at",
        "requested_by_name",
        "requested_via",
        "workspaces",
        "purged_at",
    )
    list_filter = ("status", "requested_via", ("requested_at", admin.DateFieldListFilter))
    search_fields = ("=subject_hash",)
    search_help_text = "A user id (it is hashed the same way: the record never holds the id)."
    ordering = ("-requested_at",)
    inlines = (PersonDeletionTargetInline,)
    actions = ("purge_anyway_action",)
    fields = (
        "id",
        "status",
        "requested_at",
        "requested_by_name",
        "requested_via",
        "completed_at",
        "purged_at",
        "purged",
        "subject_hash",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[PersonDeletion]:
        return super().get_queryset(request).prefetch_related("targets__destination")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        if not search_term.strip():
            return queryset, False
        return queryset.filter(subject_hash__in=_hashes_of(search_term)), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The record is the proof of the deletion.
        return False

    def has_delete_person_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("streaming.delete_person")

    @admin.display(description="workspaces")
    def workspaces(self, deletion: PersonDeletion) -> str:
        return (
            ", ".join(
                f"{target.destination.name}: {target.get_status_display()}"
                for target in deletion.targets.all()
            )
            or "none"
        )

    @admin.action(
        description="Purge now, giving up on the workspaces that did not delete",
        permissions=["delete_person"],
    )
    def purge_anyway_action(self, request: HttpRequest, queryset: QuerySet[PersonDeletion]) -> None:
        purged, impossible = 0, 0
        for deletion in queryset.filter(purged_at__isnull=True):
            if person_deletion_purge_anyway(deletion=deletion):
                purged += 1
                LogEntry.objects.log_actions(
                    request.user.pk, [deletion], CHANGE, "Purged anyway", single_object=True
                )
            else:
                impossible += 1
        if purged:
            self.message_user(
                request,
                ngettext("%(n)d deletion purged.", "%(n)d deletions purged.", purged)
                % {"n": purged},
                messages.SUCCESS,
            )
        if impossible:
            self.message_user(
                request,
                f"{impossible} deletion(s) have no delete call left to read the person from: "
                "ask for the same person's deletion again to purge.",
                messages.WARNING,
            )
        if not purged and not impossible:
            self.message_user(request, "Nothing to purge: these deletions are done.", messages.INFO)


@admin.register(Suppression)
class SuppressionAdmin(ModelAdmin):
    list_display = ("hash_short", "deletion_link", "created_at", "lifted_at", "lifted_by_name")
    list_filter = (
        ("lifted_at", admin.EmptyFieldListFilter),
        ("created_at", admin.DateFieldListFilter),
    )
    search_fields = ("=subject_hash",)
    search_help_text = "A user id (it is hashed the same way: the list never holds the id)."
    ordering = ("-created_at",)
    actions = ("lift_action",)
    fields = ("subject_hash", "deletion_link", "created_at", "lifted_at", "lifted_by_name")
    readonly_fields = fields

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        if not search_term.strip():
            return queryset, False
        return queryset.filter(subject_hash__in=_hashes_of(search_term)), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_lift_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("streaming.lift_suppression")

    @admin.display(description="hash of the user id")
    def hash_short(self, suppression: Suppression) -> str:
        return f"{suppression.subject_hash[:16]}…"

    @admin.display(description="deletion")
    def deletion_link(self, suppression: Suppression) -> str:
        if suppression.deletion_id is None:
            return "—"
        url = reverse("admin:streaming_persondeletion_change", args=[suppression.deletion_id])
        return format_html('<a href="{}">deletion #{}</a>', url, suppression.deletion_id)

    @admin.action(
        description="Lift: accept this person's calls again",
        permissions=["lift"],
    )
    def lift_action(self, request: HttpRequest, queryset: QuerySet[Suppression]) -> None:
        lifted = [s for s in queryset if suppression_lift(suppression=s, lifted_by=request.user)]
        if lifted:
            LogEntry.objects.log_actions(request.user.pk, lifted, CHANGE, "Lifted")
        self.message_user(
            request,
            ngettext(
                "%(n)d suppression lifted: calls with that user id are accepted again.",
                "%(n)d suppressions lifted: calls with those user ids are accepted again.",
                len(lifted),
            )
            % {"n": len(lifted)},
            messages.SUCCESS if lifted else messages.INFO,
        )
