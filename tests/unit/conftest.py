"""Shared fixtures of the unit tier: the example platform config, as files and as plain data."""

from __future__ import annotations

import configparser
import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from quotas.loader import load_catalog, load_platform
from quotas.model import Image, PlatformConfig

REPO = Path(__file__).resolve().parents[2]


def top_level_packages() -> list[str]:
    """The project's top-level packages, as setup.cfg lists them (quotas, spawner, ...)."""
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    names = (name.strip() for name in parser["options"]["packages"].split(","))
    return sorted({name.split(".")[0] for name in names if name})


EXAMPLE_TENANTS = REPO / "hub_config" / "tenants.yaml"
EXAMPLE_CATALOG = REPO / "images" / "catalog.yaml"

_EXAMPLE_DATA: dict[str, Any] = yaml.safe_load(EXAMPLE_TENANTS.read_text())


@pytest.fixture
def example_data() -> dict[str, Any]:
    """The example tenants.yaml as plain data, a fresh copy each test may mutate."""
    return copy.deepcopy(_EXAMPLE_DATA)


@pytest.fixture(scope="session")
def images() -> Mapping[str, Image]:
    return load_catalog(EXAMPLE_CATALOG)


@pytest.fixture(scope="session")
def config() -> PlatformConfig:
    return load_platform(EXAMPLE_TENANTS, EXAMPLE_CATALOG)
