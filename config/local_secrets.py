"""The development fallback for secrets: a generated, git-ignored file.

Production sets ``SECRET_KEY`` and ``SWITCHBOARD_ENCRYPTION_KEYS`` in the environment. A fresh
checkout has neither, so the first start writes ``.local/secrets.env`` with new random values and
every later start (web, worker, beat, tests) reads the same file; losing it only loses the
ability to decrypt tokens saved with it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet


def local_secrets_load(directory: Path) -> dict[str, str]:
    path = directory / "secrets.env"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        values = {
            "SECRET_KEY": secrets.token_urlsafe(50),
            "SWITCHBOARD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        }
        # O_EXCL: two processes starting at once must not write two different keys.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.writelines(f"{name}={value}\n" for name, value in values.items())
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)
