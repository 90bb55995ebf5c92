"""The admin's re-send and backfill pages (they need ``streaming.resend``):

    /admin/streaming/delivery/resend/?sync=<id>           a sync's calls in a time range
    /admin/streaming/delivery/backfill/?sync=<id>         every existing host user, identified
    /admin/streaming/delivery/timeline/resend/ (POST)     one user's current profile

Each shows first what it would do (how many calls, how long the destination's rate limit needs
for them), then starts a job that the workers run batch by batch (``tasks.resend_job_run``,
``tasks.backfill_run``); running jobs show their progress on these pages and on the overview
(``templates/admin/switchboard/overview_jobs.html``). The writes are
``streaming.delivery.resend`` and ``streaming.delivery.backfill``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.admin.models import ADDITION, LogEntry
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from unfold.widgets import UnfoldAdminIntegerFieldWidget, UnfoldAdminTextInputWidget

from integrations.models import Sync
from streaming.audit.views import DeliveryAdmin, _context
from streaming.delivery import tasks
from streaming.delivery.backfill import (
    DEFAULT_BATCH_SIZE,
    MAX_BATCH_SIZE,
    BackfillRefused,
    backfill_cancel,
    backfill_plan,
    backfill_start,
)
from streaming.delivery.resend import (
    ResendRefused,
    calls_preview,
    profile_resend,
    resend_job_cancel,
    resend_job_start,
    resend_preview,
)
from streaming.models import BackfillJob, ResendJob

PERMISSION = "streaming.resend"


def _require(request: HttpRequest) -> None:
    if not request.user.has_perm(PERMISSION):
        raise PermissionDenied


def _sync_of(request: HttpRequest) -> Sync:
    sync_id = request.POST.get("sync") or request.GET.get("sync") or ""
    if not sync_id.isdigit():
        raise PermissionDenied  # no page without a sync: they are reached from one
    return get_object_or_404(Sync.objects.select_related("destination"), pk=int(sync_id))


def duration_text(seconds: int) -> str:
    """``seconds`` as an operator reads it: 45 s, 12 min, 2 h 5 min."""
    if seconds < 60:
        return f"{seconds} s"
    minutes = -(-seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


class RangeForm(forms.Form):
    since = forms.DateTimeField(
        label="From",
        widget=UnfoldAdminTextInputWidget(attrs={"type": "datetime-local", "step": "1"}),
        input_formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S"],
    )
    until = forms.DateTimeField(
        label="Until",
        widget=UnfoldAdminTextInputWidget(attrs={"type": "datetime-local", "step": "1"}),
        input_formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S"],
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since >= until:
            self.add_error("until", "The range must end after it starts.")
        return data


def _local(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%dT%H:%M:%S")


def sync_resend(request: HttpRequest, *, delivery_admin: DeliveryAdmin) -> HttpResponse:
    """A sync's calls in a time range: the preview (GET with a range), then the job (POST)."""
    _require(request)
    sync = _sync_of(request)
    here = reverse("admin:streaming_sync_resend") + f"?sync={sync.pk}"
    if request.method == "POST" and "cancel" in request.POST:
        job = get_object_or_404(ResendJob, pk=request.POST["cancel"], sync=sync)
        if resend_job_cancel(job=job):
            delivery_admin.message_user(
                request,
                f"Re-send #{job.pk} cancelled: what it queued is still sent.",
                messages.INFO,
            )
        return HttpResponseRedirect(here)
    now = timezone.now()
    data = request.POST if request.method == "POST" else request.GET
    form = RangeForm(data if "since" in data else None, initial={
        "since": _local(now - timedelta(days=1)),
        "until": _local(now),
    })  # fmt: skip
    preview = None
    if form.is_bound and form.is_valid():
        since, until = form.cleaned_data["since"], form.cleaned_data["until"]
        if request.method == "POST":
            try:
                with transaction.atomic():
                    job = resend_job_start(
                        sync=sync,
                        since=since,
                        until=until,
                        requested_by_name=request.user.get_username(),
                    )
                    LogEntry.objects.log_actions(
                        request.user.pk, [job], ADDITION, "Started a re-send", single_object=True
                    )
                    if job.status == ResendJob.Status.RUNNING:
                        transaction.on_commit(lambda: tasks.resend_job_run.delay(job.pk))
            except ResendRefused as refusal:
                delivery_admin.message_user(request, str(refusal), messages.ERROR)
                return HttpResponseRedirect(here)
            delivery_admin.message_user(
                request,
                f"Re-send #{job.pk} started: {job.total} call{'s' if job.total != 1 else ''} "
                "will be queued as new deliveries, each after what its user already has queued.",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(here)
        preview = resend_preview(sync=sync, since=since, until=until)
    jobs = list(ResendJob.objects.filter(sync=sync).order_by("-requested_at")[:10])
    return TemplateResponse(
        request,
        "admin/streaming/sync_resend.html",
        _context(
            request,
            delivery_admin,
            f"Re-send calls of {sync.name}",
            sync=sync,
            form=form,
            preview=preview,
            preview_duration=duration_text(preview.seconds) if preview else "",
            jobs=jobs,
            disabled=sync.status == Sync.Status.DISABLED,
            time_zone=timezone.get_current_timezone_name(),
        ),
    )


class BackfillForm(forms.Form):
    model = forms.CharField(
        label="Host user model",
        initial=lambda: settings.SWITCHBOARD_IDENTIFY_MODEL or "auth.User",
        help_text="app_label.Model; each row is identified with userId = its primary key.",
        widget=UnfoldAdminTextInputWidget,
    )
    since = forms.DateTimeField(
        label="Only users created since",
        required=False,
        help_text="Empty: every user. Read from date_joined (or created_at, created).",
        widget=UnfoldAdminTextInputWidget(attrs={"type": "datetime-local", "step": "1"}),
        input_formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"],
    )
    batch_size = forms.IntegerField(
        label="Batch size",
        initial=DEFAULT_BATCH_SIZE,
        min_value=1,
        max_value=MAX_BATCH_SIZE,
        widget=UnfoldAdminIntegerFieldWidget,
    )


def sync_backfill(request: HttpRequest, *, delivery_admin: DeliveryAdmin) -> HttpResponse:
    """Identify every existing host user into a sync: the count (GET), then the job (POST)."""
    _require(request)
    sync = _sync_of(request)
    here = reverse("admin:streaming_sync_backfill") + f"?sync={sync.pk}"
    if request.method == "POST" and "cancel" in request.POST:
        job = get_object_or_404(BackfillJob, pk=request.POST["cancel"], sync=sync)
        if backfill_cancel(job=job):
            delivery_admin.message_user(
                request,
                f"Backfill #{job.pk} cancelled after {job.done} users: they are still sent.",
                messages.INFO,
            )
        return HttpResponseRedirect(here)
    data = request.POST if request.method == "POST" else request.GET
    form = BackfillForm(data if "model" in data else None)
    plan, refusal = None, ""
    if form.is_bound and form.is_valid():
        try:
            plan = backfill_plan(
                model=form.cleaned_data["model"],
                sync=sync,
                since=form.cleaned_data["since"],
                batch_size=form.cleaned_data["batch_size"],
            )
        except BackfillRefused as error:
            refusal = str(error)
            form.add_error(None, refusal)
    if plan is not None and request.method == "POST":
        with transaction.atomic():
            job = backfill_start(
                plan=plan, requested_by_name=request.user.get_username(), via="admin"
            )
            LogEntry.objects.log_actions(
                request.user.pk, [job], ADDITION, "Started a backfill", single_object=True
            )
            transaction.on_commit(lambda: tasks.backfill_run.delay(job.pk))
        delivery_admin.message_user(
            request,
            f"Backfill #{job.pk} started: {job.total} {plan.label} will be identified into "
            f"{sync.name}, {plan.batch_size} a batch; the overview shows its progress.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(here)
    count = plan.users().count() if plan is not None else None
    # A new contact costs two Intercom calls: the lookup by external id, then the create.
    preview = calls_preview(sync=sync, calls=2 * count) if count is not None else None
    jobs = list(BackfillJob.objects.filter(sync=sync).order_by("-requested_at")[:10])
    return TemplateResponse(
        request,
        "admin/streaming/sync_backfill.html",
        _context(
            request,
            delivery_admin,
            f"Backfill host users into {sync.name}",
            sync=sync,
            form=form,
            plan=plan,
            count=count,
            preview=preview,
            preview_duration=duration_text(preview.seconds) if preview else "",
            jobs=jobs,
            identify_traits=settings.SWITCHBOARD_IDENTIFY_TRAITS,
        ),
    )


def profile_resend_view(request: HttpRequest, *, delivery_admin: DeliveryAdmin) -> HttpResponse:
    """The timeline's "Re-send profile" (POST user, sync)."""
    _require(request)
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    sync = _sync_of(request)
    user_id = request.POST.get("user", "").strip()
    back = reverse("admin:streaming_timeline") + f"?q={quote(user_id)}"
    try:
        delivery = profile_resend(
            sync=sync, user_id=user_id, requested_by=request.user.get_username()
        )
    except ResendRefused as refusal:
        delivery_admin.message_user(request, str(refusal), messages.ERROR)
        return HttpResponseRedirect(back)
    delivery_admin.message_user(
        request,
        f"{user_id}'s current profile is queued to {sync.name} as delivery #{delivery.pk}, "
        "after what is already queued for them.",
        messages.SUCCESS,
    )
    return HttpResponseRedirect(back)
