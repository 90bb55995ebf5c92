"""``manage.py switchboard``: configuration as code, key rotation and first-run setup.

switchboard export                         YAML of sources, destinations, syncs (no secrets)
switchboard apply FILE.yaml [--dry-run]    create/update by name, in one transaction
switchboard rotate-keys                    re-encrypt secrets with the newest key
switchboard bootstrap [--demo-sandbox-url URL]   superuser (+ demo source/destination/sync)
"""

from __future__ import annotations

import secrets
import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from integrations import config_as_code, first_run, services

ADMIN_USERNAME = "admin"
ADMIN_URL = "http://127.0.0.1:8000/admin/"


class Command(BaseCommand):
    help = "Switchboard configuration as code (export, apply), rotate-keys and bootstrap."

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

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "export":
            self.stdout.write(config_as_code.config_export(), ending="")
        elif action == "apply":
            self._apply(options["file"], dry_run=options["dry_run"])
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
