"""aidc.reload.apply_to_hub: after a reload, the hub's records that mirror tenants.yaml
(tenant groups, tenant-admin roles) are what a restart would make, on JupyterHub's own ORM
(in-memory SQLite), for local accounts and for an authenticator that manages roles (OIDC)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jupyterhub import orm, roles

from aidc.reload import apply_to_hub
from authenticators.local import LocalAccountAuthenticator
from authenticators.oidc import OIDCAuthenticator
from quotas.snapshot import shared_holder

from .conftest import EXAMPLE_CATALOG, REPO

PEOPLE = ("alice", "bob", "carol", "dave", "erin", "kim", "zed")


@pytest.fixture
def tenants(tmp_path: Path) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text((REPO / "tests" / "hub" / "tenants.yaml").read_text())
    return path


@pytest.fixture
def db() -> Iterator[Any]:
    session = orm.new_session_factory("sqlite://")()
    for role in roles.get_default_roles():
        roles.create_role(session, role)
    for name in PEOPLE:
        session.add(orm.User(name=name))
    session.commit()
    yield session
    session.close()


def edit(path: Path, *changes: tuple[str, str]) -> None:
    text = path.read_text()
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)


def groups_of(db: Any, name: str) -> set[str]:
    return {g.name for g in orm.User.find(db, name).groups}


def roles_of(db: Any, name: str) -> set[str]:
    return {r.name for r in orm.User.find(db, name).roles if r.name.startswith("tenant-admin-")}


def test_local_accounts_get_their_groups_and_roles_at_the_reload(db: Any, tenants: Path) -> None:
    holder = shared_holder(tenants, EXAMPLE_CATALOG)
    auth = LocalAccountAuthenticator(tenants_file=str(tenants), catalog_file=str(EXAMPLE_CATALOG))
    app = SimpleNamespace(db=db, authenticator=auth, log=logging.getLogger("test"), users={})
    start = holder.config
    asyncio.run(apply_to_hub(app, start, start))  # as the hub's start leaves them
    assert groups_of(db, "carol") == {"lab"} and groups_of(db, "zed") == set()
    assert roles_of(db, "kim") == {"tenant-admin-lab"} and roles_of(db, "erin") == {"tenant-admin-startup"}

    edit(
        tenants,
        ("members: {users: [alice, bob, carol]}", "members: {users: [alice, bob]}"),
        ("members: {users: [dave]}", "members: {users: [dave, zed]}"),
        ("admins: [erin]", "admins: [erin, dave]"),
        ("admins: [kim]", "admins: []"),
    )
    assert holder.reload().changed
    asyncio.run(apply_to_hub(app, start, holder.config))

    assert groups_of(db, "carol") == set() and groups_of(db, "zed") == {"startup"}
    assert roles_of(db, "dave") == {"tenant-admin-startup"}
    assert roles_of(db, "kim") == set() and orm.Role.find(db, "tenant-admin-lab") is None  # lab has no admins
    assert orm.Group.find(db, "lab").properties["aidc.tenant"] == "lab"

    before = holder.config
    text = tenants.read_text()
    edit(tenants, (text[text.index("  - id: startup") :], ""))  # startup is removed
    assert holder.reload().changed
    asyncio.run(apply_to_hub(app, before, holder.config))
    assert orm.Group.find(db, "startup") is None and groups_of(db, "zed") == set()
    assert orm.Role.find(db, "tenant-admin-startup") is None and roles_of(db, "dave") == set()


def test_an_authenticator_that_manages_roles_gets_the_definitions_and_a_refresh(db: Any, tenants: Path) -> None:
    holder = shared_holder(tenants, EXAMPLE_CATALOG)
    auth = OIDCAuthenticator(
        tenants_file=str(tenants), catalog_file=str(EXAMPLE_CATALOG), issuer="https://login.example.org"
    )
    alice = SimpleNamespace(_auth_refreshed=123.0)
    app = SimpleNamespace(db=db, authenticator=auth, log=logging.getLogger("test"), users={1: alice})
    start = holder.config
    asyncio.run(apply_to_hub(app, start, start))
    assert orm.Role.find(db, "tenant-admin-startup") is not None
    text = tenants.read_text()
    edit(tenants, (text[text.index("  - id: startup") :], ""))

    assert holder.reload().changed
    asyncio.run(apply_to_hub(app, start, holder.config))

    # every tenant's role exists (assigned at login), those of removed tenants are gone
    lab = orm.Role.find(db, "tenant-admin-lab")
    assert lab is not None and lab.managed_by_auth and "admin-ui" in lab.scopes
    assert orm.Role.find(db, "tenant-admin-startup") is None
    assert alice._auth_refreshed is None  # her next request re-applies the config to her groups
