"""Settings come from the environment; with none, Switchboard runs embedded (no servers)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, os
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
from django.conf import settings as s
print(json.dumps({
    "database": s.DATABASES["default"],
    "broker": s.CELERY_BROKER_URL,
    "broker_options": getattr(s, "CELERY_BROKER_TRANSPORT_OPTIONS", None),
    "cache": s.CACHES["default"],
    "keys": s.SWITCHBOARD_ENCRYPTION_KEYS,
    "secret_key": s.SECRET_KEY,
    "debug": s.DEBUG,
    "allowed_hosts": s.ALLOWED_HOSTS,
    "retention_days": s.SWITCHBOARD_RETENTION.days,
    "sweep_seconds": s.SWITCHBOARD_SWEEP_SECONDS,
}, default=str))
"""


def settings_with(env: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    """The settings a fresh process sees with exactly this environment."""
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "SWITCHBOARD_VAR_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def test_with_no_environment_it_runs_embedded(tmp_path: Path):
    settings = settings_with({}, tmp_path)

    assert settings["database"]["ENGINE"] == "django.db.backends.sqlite3"
    assert settings["database"]["NAME"] == str(tmp_path / "switchboard.sqlite3")
    assert settings["broker"] == "filesystem://"
    assert Path(settings["broker_options"]["data_folder_in"]).is_dir()
    assert settings["cache"]["BACKEND"].endswith("LocMemCache")
    # secrets come from the generated, git-ignored .local/secrets.env
    assert settings["secret_key"] and settings["keys"]
    Fernet(settings["keys"][0].encode())


def test_production_servers_come_from_the_environment(tmp_path: Path):
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()

    settings = settings_with(
        {
            "DATABASE_URL": "postgres://sb:pw@db.example:6543/switchboard",
            "DATABASE_CONN_MAX_AGE": "0",
            "CELERY_BROKER_URL": "amqp://guest:guest@mq.example:5672//",
            "REDIS_URL": "redis://cache.example:6379/2",
            "SECRET_KEY": "from-the-environment",
            "SWITCHBOARD_ENCRYPTION_KEYS": f"{new},{old}",
            "DEBUG": "true",
            "ALLOWED_HOSTS": "switchboard.example,127.0.0.1",
            "SWITCHBOARD_RETENTION_DAYS": "7",
            "SWITCHBOARD_SWEEP_SECONDS": "2.5",
        },
        tmp_path,
    )

    database = settings["database"]
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["HOST"], database["PORT"], database["NAME"]) == (
        "db.example",
        6543,
        "switchboard",
    )
    assert (database["USER"], database["CONN_MAX_AGE"]) == ("sb", 0)
    assert settings["broker"] == "amqp://guest:guest@mq.example:5672//"
    assert "data_folder_in" not in (settings["broker_options"] or {})  # no broker folder
    assert settings["cache"] == {
        "BACKEND": "config.cache.ReusedClientRedisCache",  # Django's RedisCache, clients reused
        "LOCATION": "redis://cache.example:6379/2",
    }
    assert settings["keys"] == [new, old]  # newest first: it encrypts, both decrypt
    assert settings["secret_key"] == "from-the-environment"
    assert settings["debug"] is True
    assert settings["allowed_hosts"] == ["switchboard.example", "127.0.0.1"]
    assert (settings["retention_days"], settings["sweep_seconds"]) == (7, 2.5)


def test_every_environment_variable_is_documented_for_operators():
    read = set(
        re.findall(
            r"""(?:env|Env\(\))\.\w+\(\s*["']([A-Z0-9_]+)["']""",
            (ROOT / "config/settings.py").read_text(),
        )
    )
    readme = (ROOT / "docs/production.md").read_text()
    # the rows of docs/production.md's settings table: "| `NAME` | default | meaning |"
    section = re.search(r"^## Settings$(.*?)^## ", readme, re.MULTILINE | re.DOTALL)
    assert section, "docs/production.md has no '## Settings' section"
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", section[1], re.MULTILINE))

    missing = sorted(read - documented)

    assert read and not missing, f"add to the settings table of docs/production.md: {missing}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def session_processes(session_id: int) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "sid=,pid=,args="], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if line.split()[0] == str(session_id)]


@pytest.mark.slow
def test_bin_run_starts_everything_embedded_and_ctrl_c_stops_it_all(tmp_path: Path):
    # given a machine with no server configured (no DATABASE_URL, no broker, no Redis)
    port, sandbox_port = free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL")
    }
    env |= {
        "SWITCHBOARD_VAR_DIR": str(tmp_path / "var"),
        "SWITCHBOARD_LOCAL_DIR": str(tmp_path / "local"),
        "SWITCHBOARD_PORT": str(port),
        "SWITCHBOARD_SANDBOX_PORT": str(sandbox_port),
    }
    log = (tmp_path / "run.log").open("w")
    run = subprocess.Popen(
        [str(ROOT / "bin/run")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # when it is up, the admin login page answers
        status = None
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/") as answer:
                    status = answer.status
                break
            except OSError:
                assert run.poll() is None, (tmp_path / "run.log").read_text()
                time.sleep(0.5)
        assert status == 200
        password = (tmp_path / "local/admin-password").read_text().strip()
        assert f"login: admin / {password}" in (tmp_path / "run.log").read_text()
        assert (tmp_path / "var/switchboard.sqlite3").exists()
        assert len(session_processes(run.pid)) >= 5  # bin/run, sandbox, web, worker, beat
    finally:
        # then Ctrl-C stops every process it started
        os.kill(run.pid, signal.SIGINT)
        run.wait(timeout=60)
        log.close()
    for _ in range(50):
        if not session_processes(run.pid):
            break
        time.sleep(0.1)
    assert session_processes(run.pid) == []
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=2)
