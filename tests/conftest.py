"""Shared fixtures live one per module in tests/fixtures/ (broker, microphone, models, ...).

Every module there is loaded as a pytest plugin, so a test file just names the fixture.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

# Fixture modules import each other (live_daemon uses microphone): mark the package for assert
# rewriting before any is imported, or the first import beats its plugin registration.
pytest.register_assert_rewrite("tests.fixtures", "tests.daemon_runs")

pytest_plugins = sorted(
    f"tests.fixtures.{path.stem}"
    for path in (Path(__file__).parent / "fixtures").glob("*.py")
    if path.stem != "__init__"
)


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """Each test starts from structlog's defaults: a CLI called in-process (corona-train main)
    configures logging globally, at level error, which would hide later tests' captured logs."""
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
