"""The production command serves a styled admin by itself: WhiteNoise in gunicorn, no proxy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from django.conf import settings


@pytest.fixture
def collected_static(tmp_path: Path) -> Path:
    """`manage.py collectstatic` into the var dir the gunicorn of ``live_gunicorn`` uses."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["SWITCHBOARD_VAR_DIR"] = str(tmp_path)
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--no-input", "-v", "0"],
        cwd=settings.BASE_DIR,
        env=env,
        check=True,
        timeout=120,
    )
    return tmp_path / "static"


def test_gunicorn_serves_the_admins_styles_and_scripts(collected_static, live_gunicorn):
    # the admin's login page, as a first visit sees it, names the theme's stylesheet
    login = requests.get(live_gunicorn + "/admin/login/", timeout=10)
    assert login.status_code == 200
    assert "/static/unfold/css/styles.css" in login.text
    assert "/static/switchboard/admin.css" in login.text

    # and every file it names is there, the stylesheets compressed for a browser that accepts it
    for path, kind in [
        ("/static/unfold/css/styles.css", "text/css"),
        ("/static/switchboard/admin.css", "text/css"),
        ("/static/switchboard/admin.js", "text/javascript"),
    ]:
        response = requests.get(
            live_gunicorn + path, headers={"Accept-Encoding": "gzip"}, timeout=10
        )
        assert response.status_code == 200, path
        assert response.headers["Content-Type"].startswith(kind), path
        assert response.headers.get("Content-Encoding") == "gzip", path
        assert "max-age" in response.headers["Cache-Control"], path
    assert requests.get(live_gunicorn + "/static/nothing.css", timeout=10).status_code == 404
