"""The browser tests: the admin as an operator clicks through it (tests/fixtures/browser.py).

They are marked ``browser`` and run with the rest of the suite; ``-m "not browser"`` leaves them
out of a quick run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.browser import admin_browser, browser_context, chromium  # noqa: F401


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives the admin in headless Chromium")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[Any]:
    # The outcome of each phase, kept on the test for ``admin_browser`` (a screenshot on failure).
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
