"""Tiers by folder: tests/unit -> unit, tests/hub -> hub, tests/browser -> browser, tests/k8s -> k8s."""

from pathlib import Path

import pytest

TIERS = ("unit", "hub", "browser", "k8s")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
