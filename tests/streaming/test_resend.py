"""Re-send: a user's current profile to a sync (timeline button, API), and a sync's calls in a
time range as new deliveries marked as re-sends, behind live traffic in each user's lane."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token

from integrations.models import Sync
from streaming.delivery import tasks
from streaming.delivery.deletion import person_deletion_request
from streaming.delivery.resend import (
    INTERCOM_DEFAULT_PER_WINDOW,
    ResendRefused,
    profile_resend,
    resend_job_batch,
    resend_job_run,
    resend_job_start,
    resend_preview,
)
from streaming.models import Delivery, PersonDeletion, ResendJob
from tests.streaming.audit_rows import staff_make
from tests.streaming.delivery_setup import (
    drain_all,
    identify,
    ingest,
    sync_into,
    track,
    wait_settled,
)

pytestmark = pytest.mark.usefixtures("fresh_cache")


def contact_writes(sandbox: Any) -> list[dict[str, Any]]:
    return [
        r["body"]
        for r in sandbox.requests
        if r["method"] in ("POST", "PUT") and r["path"].startswith("/contacts")
    ]


def an_hour() -> tuple[Any, Any]:
    now = timezone.now()
    return now - timedelta(hours=1), now + timedelta(minutes=1)


# --- a user's current profile ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_profile_resend_sends_the_latest_traits_even_when_nothing_changed(intercom_sandbox):
    # given two identifies of ada, delivered: the plan changed from free to pro
    sync = sync_into(intercom_sandbox, send_all_properties=True)
    ingest(sync, [identify("ada", plan="free", name="Ada"), identify("ada", plan="pro")])
    drain_all(sync)
    sent_before = len(contact_writes(intercom_sandbox))
    # when her profile is re-sent (nothing changed since: the fingerprint alone would skip it)
    delivery = profile_resend(sync=sync, user_id="ada", requested_by="ops")
    # then one identify with every trait's latest value is queued, marked as a re-send
    assert delivery.status == "pending"
    assert delivery.event.message_id.startswith("sb-resend-")
    assert delivery.event.payload["traits"] == {
        "email": "ada@example.com",
        "plan": "pro",
        "name": "Ada",
    }
    assert delivery.event.payload["context"]["switchboard"] == {
        "resend": "profile",
        "sent_by": "ops",
    }
    drain_all(sync)
    # and it reaches Intercom
    delivery.refresh_from_db()
    assert delivery.status == "succeeded"
    writes = contact_writes(intercom_sandbox)[sent_before:]
    assert len(writes) == 1
    assert writes[0]["name"] == "Ada"
    assert writes[0]["custom_attributes"]["plan"] == "pro"


@pytest.mark.django_db
def test_a_profile_resend_of_someone_the_sync_never_identified_is_refused(intercom_sandbox):
    sync = sync_into(intercom_sandbox)
    ingest(sync, [track("bob", "Signed Up")])
    with pytest.raises(ResendRefused, match="never received an identify"):
        profile_resend(sync=sync, user_id="bob")
    assert Delivery.objects.filter(sync=sync).count() == 1


@pytest.mark.django_db
def test_a_disabled_sync_is_refused_with_the_way_out(intercom_sandbox):
    sync = sync_into(intercom_sandbox)
    ingest(sync, [identify("ada")])
    Sync.objects.filter(pk=sync.pk).update(status=Sync.Status.DISABLED)
    sync.refresh_from_db()
    with pytest.raises(ResendRefused, match="disabled: it sends nothing. Enable it"):
        profile_resend(sync=sync, user_id="ada")


def api_resend(client: Any, token: str, user_id: str, **body: Any) -> Any:
    return client.post(
        f"/api/v1/users/{user_id}/resend",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Token {token}",
    )


@pytest.mark.django_db
def test_the_api_queues_a_profile_resend_with_the_resend_permission(client, intercom_sandbox):
    sync = sync_into(intercom_sandbox, send_all_properties=True)
    ingest(sync, [identify("ada", plan="free"), identify("ada", plan="pro")])
    token = Token.objects.create(user=staff_make(username="crm", perms=("streaming.resend",))).key

    answer = api_resend(client, token, "ada", sync=sync.pk)

    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert body["traits"] == {"email": "ada@example.com", "plan": "pro"}
    assert body["status"] == "pending"
    assert Delivery.objects.get(pk=body["delivery"]).event.type == "identify"


@pytest.mark.django_db
def test_the_api_refuses_without_permission_and_explains_bad_input(client, intercom_sandbox):
    sync = sync_into(intercom_sandbox)
    ingest(sync, [identify("ada")])
    reader = Token.objects.create(user=staff_make(username="reader")).key
    writer = Token.objects.create(user=staff_make(username="ops", perms=("streaming.resend",))).key
    before = Delivery.objects.count()

    assert client.post("/api/v1/users/ada/resend").status_code == 401
    assert api_resend(client, reader, "ada", sync=sync.pk).status_code == 403
    unknown_sync = api_resend(client, writer, "ada", sync=999999)
    assert unknown_sync.status_code == 400
    assert "sync" in unknown_sync.json()
    stranger = api_resend(client, writer, "nobody", sync=sync.pk)
    assert stranger.status_code == 400
    assert "never received an identify" in stranger.json()["user_id"][0]
    assert Delivery.objects.count() == before


@pytest.mark.django_db(transaction=True)
def test_a_person_deleted_on_request_cannot_be_re_sent(intercom_sandbox):
    sync = sync_into(intercom_sandbox)
    ingest(sync, [identify("ada")])
    drain_all(sync)
    person_deletion_request(user_id="ada", via=PersonDeletion.Via.API)
    with pytest.raises(ResendRefused):
        profile_resend(sync=sync, user_id="ada")


# --- a sync's calls in a time range ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_preview_counts_ended_calls_and_the_time_the_default_limit_needs(intercom_sandbox):
    sync = sync_into(intercom_sandbox)
    ingest(sync, [identify("ada"), track("ada", "Paid"), track("bob", "Paid")])
    drain_all(sync)
    # a failed one counts too; a pending one is on its way already and does not
    Delivery.objects.filter(pk=Delivery.objects.filter(sync=sync).order_by("-id")[0].pk).update(
        status="failed"
    )
    sync.status = Sync.Status.PAUSED
    sync.save()
    ingest(sync, [track("carol", "Paid")])
    since, until = an_hour()

    preview = resend_preview(sync=sync, since=since, until=until)

    assert preview.calls == 3
    # the sandbox told the limiter its (far larger) window: the headers win over the default
    assert preview.limit_known
    assert preview.seconds == 1
    with pytest.raises(ResendRefused, match="start before it ends"):
        resend_preview(sync=sync, since=until, until=since)


def test_the_preview_time_at_intercom_s_default_limit():
    from streaming.delivery.resend import ResendPreview

    preview = ResendPreview(
        calls=100_000, per_window=INTERCOM_DEFAULT_PER_WINDOW, limit_known=False
    )
    assert preview.seconds == 600  # 10,000 a minute


@pytest.mark.django_db(transaction=True)
def test_a_range_is_re_sent_as_new_deliveries_behind_live_traffic_and_resumes(intercom_sandbox):
    # given three delivered calls of ada and bob, then a live call of ada still pending
    sync = sync_into(intercom_sandbox)
    originals = ingest(sync, [identify("ada"), track("ada", "Paid"), track("bob", "Paid")])
    drain_all(sync)
    since, until = an_hour()
    live = ingest(sync, [track("ada", "Live")])[0]
    # when the range is re-sent in batches of two, the first batch alone (a worker that died)
    job = resend_job_start(sync=sync, since=since, until=until, requested_by_name="ops")
    assert job.total == 3
    assert resend_job_batch(job=job, batch_size=2) == 2
    job.refresh_from_db()
    assert (job.status, job.queued) == ("running", 2)
    # ... and run again: it resumes after its cursor
    assert resend_job_run(job=job) is True
    job.refresh_from_db()
    assert (job.status, job.queued, job.total) == ("done", 3, 3)
    # then each original has exactly one re-send: a new delivery of the same event
    resends = Delivery.objects.filter(sync=sync, resend_of__isnull=False).order_by("id")
    assert sorted(d.resend_of for d in resends) == sorted(d.pk for d in originals)
    assert all(d.event_id == Delivery.objects.get(pk=d.resend_of).event_id for d in resends)
    # and in ada's lane they come after the live call queued before them
    ada_lane = Delivery.objects.filter(lane=live.lane, status="pending").order_by("id")
    assert list(ada_lane.values_list("id", flat=True))[0] == live.pk
    drain_all(sync)
    events = [r["body"]["event_name"] for r in intercom_sandbox.requests if r["path"] == "/events"]
    assert events[-3:] in (["Live", "Paid", "Paid"], ["Paid", "Live", "Paid"])
    assert events.index("Live") < len(events) - 1
    assert set(Delivery.objects.filter(sync=sync).values_list("status", flat=True)) == {"succeeded"}
    # and a second re-send of the range re-sends the originals, not the re-sends
    assert resend_job_start(sync=sync, since=since, until=until).total == 4  # + the live one


@pytest.mark.worker
def test_a_range_resend_runs_on_a_real_worker_inside_the_lane_order(
    celery_worker_process, intercom_sandbox
):
    # given ada's identify and two tracks, delivered by a real worker
    sync = sync_into(intercom_sandbox)
    celery_worker_process.start(1)
    ingest(sync, [identify("ada"), track("ada", "Signed Up"), track("ada", "Paid")])
    wait_settled(sync, celery_worker_process)
    since, until = an_hour()
    # when the operator re-sends the range, the job queued on the worker
    job = resend_job_start(sync=sync, since=since, until=until)
    tasks.resend_job_run.delay(job.pk)
    # then the job finishes and the worker sends the three again, identify first
    deadline = timezone.now() + timedelta(seconds=60)
    while ResendJob.objects.get(pk=job.pk).status != "done":
        assert timezone.now() < deadline, celery_worker_process.logs()
    wait_settled(sync, celery_worker_process)
    resent = Delivery.objects.filter(sync=sync, resend_of__isnull=False)
    assert sorted(resent.values_list("status", flat=True)) == ["succeeded"] * 3
    assert len(contact_writes(intercom_sandbox)) == 2  # the identify reached Intercom again
    events = [r["body"]["event_name"] for r in intercom_sandbox.requests if r["path"] == "/events"]
    assert events == ["Signed Up", "Paid", "Signed Up", "Paid"]
