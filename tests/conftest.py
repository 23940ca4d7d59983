"""Shared fixtures live one per module in tests/fixtures/ (broker, microphone, models, ...).

Every module there is loaded as a pytest plugin, so a test file just names the fixture.
"""

from pathlib import Path

pytest_plugins = sorted(
    f"tests.fixtures.{path.stem}"
    for path in (Path(__file__).parent / "fixtures").glob("*.py")
    if path.stem != "__init__"
)
