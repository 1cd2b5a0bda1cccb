"""Test-suite wide configuration.

Everything under tests/e2e/ needs the dev cluster (`kubetune dev up`: real API server, controllers,
node agent, Prometheus) and is marked `e2e` here, so `pytest -m "not e2e"` runs the unit tests
alone. The cluster fixtures live in tests/e2e/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

E2E_DIR = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.e2e)
