"""Tiers by folder: tests/unit -> unit, tests/hub -> hub, tests/browser -> browser."""

from pathlib import Path

import pytest

TIERS = ("unit", "hub", "browser")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
