"""Tiers by folder: tests/unit -> unit, tests/hub -> hub, tests/browser -> browser, tests/k8s -> k8s,
tests/postgres -> postgres, tests/ssh -> ssh, tests/chart -> chart, tests/images -> images. A test anywhere that uses the PostgreSQL server is marked `postgres` too.

PostgreSQL fixtures (tests/bed/postgres.py): ``postgres_server`` (one server per session,
started only when a test needs it), ``postgres_url`` (a fresh empty database per test) and
``db_url`` (each test twice: on SQLite and on PostgreSQL). A test that needs PostgreSQL and
cannot start it errors; it is never skipped.
"""

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bed.postgres import PostgresServer

TIERS = ("unit", "hub", "browser", "k8s", "postgres", "ssh", "chart", "images")
_POSTGRES_FIXTURES = {"postgres_server", "postgres_url"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
        if _POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())) and "postgres" not in parts:
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    try:
        yield server.start()
    finally:
        server.stop()


_database_count = 0


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """SQLAlchemy URL of a new empty database, owned by the `aidc` role; dropped after the test."""
    global _database_count
    _database_count += 1
    # Named after the test, so a leftover is recognisable in the server log; 63 bytes at most.
    name = f"t{_database_count}_{re.sub(r'[^a-z0-9]+', '_', request.node.name.lower())}"[:63]
    url = postgres_server.create_database(name)
    yield url
    if postgres_server.running:
        postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for tests that must pass on both SQLite and PostgreSQL (an empty database each time)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/quotas.sqlite"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def root() -> None:
    """For tests of what only root can do (Unix accounts, cgroups, isolated workspaces): `make test`
    runs as root; anywhere else they fail, saying why, rather than being skipped."""
    if os.geteuid() != 0:
        pytest.fail("this test makes Unix accounts and cgroups: run it as root (as `make test` does in CI)")
