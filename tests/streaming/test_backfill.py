"""Backfill: ``manage.py switchboard backfill`` identifies every existing host user through the
normal pipeline, batch by batch, and a run killed in the middle resumes without sending anyone
twice."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection

from streaming.delivery.backfill import (
    BackfillRefused,
    backfill_batch,
    backfill_plan,
    backfill_run,
    backfill_start,
)
from streaming.delivery.ratelimit import rate_limiter_get
from streaming.models import BackfillJob, Delivery, Event
from tests.factories import SyncFactory
from tests.fixtures.worker import database_url
from tests.streaming.delivery_setup import sync_into, wait_settled

pytestmark = pytest.mark.usefixtures("fresh_cache")
ROOT = Path(__file__).resolve().parents[2]


def users_create(count: int, *, prefix: str = "person") -> list[User]:
    User.objects.bulk_create(
        User(username=f"{prefix}-{n}", email=f"{prefix}-{n}@example.com") for n in range(count)
    )
    return list(User.objects.filter(username__startswith=f"{prefix}-").order_by("pk"))


def backfill_events(job: BackfillJob) -> list[Event]:
    return list(Event.objects.filter(message_id__startswith=f"sb-backfill-{job.pk}-"))


@pytest.mark.django_db
def test_a_backfill_identifies_every_user_with_the_automatic_identify_traits(sync, settings):
    # given three host users and the automatic identify's traits
    settings.SWITCHBOARD_IDENTIFY_TRAITS = ["email", "get_full_name"]
    users = users_create(3)
    User.objects.filter(pk=users[0].pk).update(first_name="Ada", last_name="Lovelace")
    # when they are backfilled into the sync in batches of two
    plan = backfill_plan(model="auth.User", sync=sync.name, batch_size=2)
    job = backfill_start(plan=plan)
    assert backfill_run(job=job) is True
    # then each has one identify, with the same traits a save would send, and one delivery
    events = {e.user_id: e for e in backfill_events(job)}
    assert sorted(events) == sorted(str(u.pk) for u in users)
    assert events[str(users[0].pk)].payload["traits"] == {
        "email": "person-0@example.com",
        "get_full_name": "Ada Lovelace",
    }
    assert events[str(users[1].pk)].type == "identify"
    assert Delivery.objects.filter(sync=sync, event__in=events.values()).count() == 3
    job.refresh_from_db()
    assert (job.status, job.done, job.total, job.cursor) == ("done", 3, 3, str(users[-1].pk))


@pytest.mark.django_db
def test_a_batch_stored_again_is_acknowledged_not_sent_twice(sync):
    # given a backfill whose first batch is stored
    users_create(4)
    job = backfill_start(plan=backfill_plan(model="auth.User", sync=sync, batch_size=2))
    assert backfill_batch(job=job) == 2
    # when its cursor is lost (as if the batch were stored but the cursor not), and it runs on
    BackfillJob.objects.filter(pk=job.pk).update(cursor="", done=0)
    job.refresh_from_db()
    backfill_run(job=job)
    # then the repeated batch's messageIds were acknowledged: one event and delivery per user
    assert len(backfill_events(job)) == 4
    per_user = Counter(
        Delivery.objects.filter(sync=sync, event__in=backfill_events(job)).values_list(
            "user_key", flat=True
        )
    )
    assert set(per_user.values()) == {1}


@pytest.mark.django_db
def test_a_backfill_into_one_sync_leaves_the_other_syncs_of_the_source_alone(sync, source):
    other = SyncFactory(sources=[source], destination=sync.destination)
    users_create(2)
    job = backfill_start(plan=backfill_plan(model="auth.User", sync=sync, source=source))
    backfill_run(job=job)
    assert Delivery.objects.filter(sync=sync).count() == 2
    assert not Delivery.objects.filter(sync=other).exists()


@pytest.mark.django_db
def test_the_dry_run_counts_and_changes_nothing(sync):
    users_create(5)
    out = io.StringIO()
    call_command(
        "switchboard", "backfill", "--model", "auth.User", "--sync", sync.name, "--dry-run",
        stdout=out,
    )  # fmt: skip
    assert "5 auth.User would be identified" in out.getvalue()
    assert "nothing was sent" in out.getvalue()
    assert not BackfillJob.objects.exists()
    assert not Event.objects.exists()


@pytest.mark.django_db
def test_since_keeps_only_the_users_created_from_that_day(sync):
    users = users_create(3)
    User.objects.filter(pk=users[0].pk).update(date_joined="2020-01-01T00:00:00Z")
    call_command(
        "switchboard", "backfill", "--model", "auth.User", "--sync", sync.name,
        "--since", "2021-06-01", "--no-progress", stdout=io.StringIO(),
    )  # fmt: skip
    job = BackfillJob.objects.get()
    assert sorted(e.user_id for e in backfill_events(job)) == sorted(str(u.pk) for u in users[1:])


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", "auth.Nobody"], "is not an installed model"),
        (["--model", "auth.User", "--sync", "no-such-sync"], "No sync named"),
        (["--model", "auth.User", "--batch-size", "0"], "batch size must be between"),
        (["--model", "auth.User", "--since", "yesterday-ish"], "give a date"),
        (["--model", "auth.Group", "--since", "2024-01-01"], "has none of date_joined"),
    ],
)
def test_bad_options_get_a_clear_error_and_change_nothing(sync, arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("switchboard", "backfill", "--sync", sync.name, *arguments)
    assert not BackfillJob.objects.exists()


@pytest.mark.django_db
def test_a_sync_that_does_not_take_the_source_is_refused(sync):
    stranger = SyncFactory(destination=sync.destination)
    with pytest.raises(BackfillRefused, match="does not take calls from the source"):
        backfill_plan(model="auth.User", sync=stranger, source=sync.sources.get())


def _command(sync_name: str, worker_env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                sys.executable, "manage.py", "switchboard", "backfill", "--model", "auth.User",
                "--sync", sync_name, "--batch-size", "5",
            ],
            cwd=ROOT,
            env=worker_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


@pytest.mark.worker
def test_a_backfill_killed_mid_run_resumes_and_identifies_nobody_twice(
    celery_worker_process, intercom_sandbox, tmp_path
):
    # given 400 host users, a sync into the sandbox, and the backfill command running
    users = users_create(400)
    sync = sync_into(intercom_sandbox)
    env = celery_worker_process.environment(DATABASE_URL=database_url())
    log = tmp_path / "backfill.log"
    first = _command(sync.name, env, log)
    # when it is killed (SIGKILL: no clean-up at all) in the middle of the run
    deadline = time.monotonic() + 60
    while True:
        done = BackfillJob.objects.values_list("done", flat=True).first() or 0
        if done >= 60 or first.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    job = BackfillJob.objects.get()
    assert 0 < job.done < 400, log.read_text()
    connection.close()  # the killed run's transaction, if any, is gone: read afresh
    # then the same command again resumes the job from its cursor
    second = _command(sync.name, env, log)
    assert second.wait(timeout=120) == 0, log.read_text()
    assert f"backfill #{job.pk} is unfinished: resuming after auth.User pk" in log.read_text()
    job.refresh_from_db()
    assert (job.status, job.done) == ("done", 400)
    # and every user has exactly one identify and one delivery
    events = Counter(e.user_id for e in backfill_events(job))
    assert sorted(events) == sorted(str(u.pk) for u in users)
    assert set(events.values()) == {1}
    # and once the workers sent them, the sandbox created each contact once, upserted once
    rate_limiter_get(destination_id=sync.destination_id).reset()
    # (the wake-ups of the killed run's last batch died with it: the sweeper's job, in beat)
    celery_worker_process.start(2, beat=True, SWITCHBOARD_SWEEP_SECONDS=1)
    wait_settled(sync, celery_worker_process, timeout=180)
    assert set(Delivery.objects.filter(sync=sync).values_list("status", flat=True)) == {"succeeded"}
    upserts = Counter(
        (r["body"] or {}).get("external_id")
        for r in intercom_sandbox.requests
        if r["method"] in ("POST", "PUT") and r["path"].startswith("/contacts")
    )
    assert len(upserts) == 400
    assert set(upserts.values()) == {1}
    assert len(intercom_sandbox.state()["contacts"]) == 400
