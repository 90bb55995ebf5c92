"""``manage.py switchboard``: configuration as code, key rotation, first-run setup, backfill.

switchboard export                         YAML of sources, destinations, syncs (no secrets)
switchboard apply FILE.yaml [--dry-run]    create/update by name, in one transaction
switchboard rotate-keys                    re-encrypt secrets with the newest key
switchboard bootstrap [--demo-sandbox-url URL]   superuser (+ demo source/destination/sync)
switchboard backfill --model auth.User [--sync S] [--source S] [--batch-size N]
                     [--since DATE [--since-field F]] [--dry-run] [--resume JOB | --new]
                                           identify every existing host user (resumable)

It lives in the data plane's app because ``backfill`` ingests calls; the other subcommands are
the control plane's (``integrations``), which this app may import.
"""

from __future__ import annotations

import secrets
import sys
from argparse import ArgumentParser
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from tqdm import tqdm

from integrations import config_as_code, first_run, services
from streaming.delivery import backfill
from streaming.models import BackfillJob

ADMIN_USERNAME = "admin"
ADMIN_URL = "http://127.0.0.1:8000/admin/"


class Command(BaseCommand):
    help = (
        "Switchboard configuration as code (export, apply), rotate-keys, bootstrap, and "
        "backfill (identify every existing host user)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        actions.add_parser("export", help="Print the configuration as YAML (no secrets).")
        apply = actions.add_parser("apply", help="Create or update what FILE describes.")
        apply.add_argument("file", help="A YAML file as `export` writes it; - for stdin.")
        apply.add_argument("--dry-run", action="store_true", help="Show, change nothing.")
        actions.add_parser("rotate-keys", help="Re-encrypt secrets with the first key.")
        bootstrap = actions.add_parser("bootstrap", help="First-run setup (idempotent).")
        bootstrap.add_argument(
            "--demo-sandbox-url",
            help="Also create a demo source, a destination at this URL and a sync.",
        )
        bootstrap.add_argument("--admin-url", default=ADMIN_URL, help="Printed with the login.")
        bootstrap.add_argument(
            "--local-dir",
            default=str(Path(settings.BASE_DIR) / ".local"),
            help="Where the admin password and demo write key are kept (default: .local/).",
        )
        fill = actions.add_parser(
            "backfill",
            help="Identify every existing host user through the normal pipeline (resumable).",
        )
        fill.add_argument(
            "--model",
            default=settings.SWITCHBOARD_IDENTIFY_MODEL or None,
            help="app_label.Model (default: SWITCHBOARD_IDENTIFY_MODEL).",
        )
        fill.add_argument(
            "--source", help="The source the calls come from (default: SWITCHBOARD_PYTHON_SOURCE)."
        )
        fill.add_argument("--sync", help="Only this sync (name or id); default: every sync.")
        fill.add_argument(
            "--batch-size",
            type=int,
            default=backfill.DEFAULT_BATCH_SIZE,
            help=f"Users per batch, each committed with the cursor (default "
            f"{backfill.DEFAULT_BATCH_SIZE}).",
        )
        fill.add_argument("--since", help="Only users created on or after this date or time.")
        fill.add_argument(
            "--since-field", default="", help="The date field --since reads (default: date_joined)."
        )
        fill.add_argument(
            "--dry-run", action="store_true", help="Say how many users and where; send nothing."
        )
        resume = fill.add_mutually_exclusive_group()
        resume.add_argument("--resume", type=int, metavar="JOB", help="Continue this job.")
        resume.add_argument(
            "--new",
            action="store_true",
            help="Start a new job even if one with the same model, source and sync is unfinished.",
        )
        fill.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "export":
            self.stdout.write(config_as_code.config_export(), ending="")
        elif action == "apply":
            self._apply(options["file"], dry_run=options["dry_run"])
        elif action == "backfill":
            self._backfill(options)
        elif action == "rotate-keys":
            count = services.secrets_rotate()
            self.stdout.write(f"re-encrypted {count} secret(s) with the first key")
        else:
            self._bootstrap(
                options["demo_sandbox_url"], Path(options["local_dir"]), options["admin_url"]
            )

    def _apply(self, file: str, *, dry_run: bool) -> None:
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text()
        except OSError as error:
            raise CommandError(f"{file}: {error.strerror}") from None
        try:
            report = config_as_code.config_apply(text=text, dry_run=dry_run)
        except config_as_code.ConfigError as error:
            raise CommandError(
                f"{file} is invalid, nothing was changed:\n" + "\n".join(error.problems)
            ) from None
        self.stdout.write(str(report))
        if dry_run:
            self.stdout.write("(dry run: nothing was changed)")

    def _backfill(self, options: dict[str, Any]) -> None:
        if options["resume"] is not None:
            job = BackfillJob.objects.filter(pk=options["resume"]).first()
            if job is None:
                raise CommandError(f"No backfill job #{options['resume']}.")
            if job.status != BackfillJob.Status.RUNNING:
                raise CommandError(f"Backfill #{job.pk} is {job.get_status_display().lower()}.")
        else:
            if not options["model"]:
                raise CommandError("Which model? --model app_label.Model (e.g. auth.User).")
            try:
                plan = backfill.backfill_plan(
                    model=options["model"],
                    source=options["source"],
                    sync=options["sync"],
                    since=_moment(options["since"]),
                    since_field=options["since_field"],
                    batch_size=options["batch_size"],
                )
            except backfill.BackfillRefused as refusal:
                raise CommandError(str(refusal)) from None
            where = plan.sync.name if plan.sync else "every sync of the source"
            if options["dry_run"]:
                self.stdout.write(
                    f"{plan.users().count()} {plan.label} would be identified from source "
                    f"{plan.source.name!r} into {where}, {plan.batch_size} a batch"
                    " (dry run: nothing was sent)"
                )
                return
            job = None if options["new"] else backfill.backfill_unfinished(plan=plan)
            if job is None:
                job = backfill.backfill_start(plan=plan)
                self.stdout.write(
                    f"backfill #{job.pk}: {job.total} {plan.label} from source "
                    f"{plan.source.name!r} into {where}"
                )
            else:
                self.stdout.write(
                    f"backfill #{job.pk} is unfinished: resuming after {job.model} "
                    f"pk {job.cursor or '(none yet)'} ({job.done} of {job.total} done; "
                    "--new starts over)"
                )
        with tqdm(
            total=job.total,
            initial=job.done,
            unit="user",
            disable=options["no_progress"],
            # The stream itself: the command's wrapper would end every redraw with a newline.
            file=self.stderr._out,
            dynamic_ncols=True,
        ) as bar:

            def advanced(done: int) -> None:
                if job.total > bar.total:
                    bar.total = job.total
                bar.update(done)

            backfill.backfill_run(job=job, on_batch=advanced)
        self.stdout.write(
            f"backfill #{job.pk} {job.get_status_display().lower()}: {job.done} identified; "
            "the workers send them inside the rate limit (Operate → Overview shows the backlog)"
        )

    def _bootstrap(self, sandbox_url: str | None, local: Path, admin_url: str) -> None:
        local.mkdir(parents=True, exist_ok=True)
        password_file = local / "admin-password"
        if password_file.exists():
            password = password_file.read_text().strip()
        else:
            password = secrets.token_urlsafe(12)
            _write_private(password_file, password)
        created = first_run.superuser_ensure(username=ADMIN_USERNAME, password=password)
        self.stdout.write(
            f"superuser {ADMIN_USERNAME!r} {'created' if created else 'already exists'}"
        )
        if sandbox_url:
            key_file = local / "demo-write-key"
            kept = key_file.read_text().strip() if key_file.exists() else None
            issued = first_run.demo_ensure(sandbox_url=sandbox_url, write_key=kept)
            if issued:
                _write_private(key_file, issued)
            self.stdout.write(
                f"demo: source {first_run.DEMO_SOURCE!r} -> sync {first_run.DEMO_SYNC!r} -> "
                f"destination {first_run.DEMO_DESTINATION!r} ({sandbox_url})"
            )
            self.stdout.write(f"demo write key: {issued or kept}  (kept in {key_file})")
        self.stdout.write(f"admin: {admin_url}  login: {ADMIN_USERNAME} / {password}")
        self.stdout.write(f"(password kept in {password_file}; changing it in the admin wins)")


def _write_private(path: Path, value: str) -> None:
    path.write_text(value + "\n")
    path.chmod(0o600)


def _moment(text: str | None) -> Any:
    """A date (midnight, in the current timezone) or a date and time; None for none."""
    if not text:
        return None
    moment = parse_datetime(text)
    if moment is None:
        day = parse_date(text)
        if day is None:
            raise CommandError(f"--since {text!r}: give a date (2025-01-31) or a date and time.")
        moment = datetime(day.year, day.month, day.day)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment
