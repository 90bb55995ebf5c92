"""Shared fixtures, one plugin module per concern (each documents its fixtures)."""

pytest_plugins = [
    "tests.fixtures.sandbox",  # intercom_sandbox: a live Intercom sandbox on loopback
    "tests.fixtures.worker",  # celery_worker_process: a real Celery worker subprocess
    "tests.fixtures.server",  # live_switchboard: a live Switchboard HTTP server
]
