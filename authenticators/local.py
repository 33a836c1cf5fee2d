"""Login for the embedded mode, and tenant-group sync for any authenticator.

:class:`AccountStore` keeps local accounts (scrypt password hashes) in a 0600
JSON file that the ``aidc user`` commands edit; the hub reads it at each login,
so a new or removed account takes effect at once. :class:`LocalAccountAuthenticator`
logs people in against it. :class:`TenantGroupsMixin` keeps each user's tenant
groups exactly in line with ``tenants.yaml`` (``load_groups`` only ever adds).
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import hmac
import inspect
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jupyterhub import orm
from jupyterhub.auth import Authenticator
from jupyterhub.handlers import BaseHandler
from sqlalchemy.orm import object_session
from tornado import web
from traitlets import Integer, Unicode, default

from i18n import Text, _
from quotas import paths
from quotas.rbac import tenant_role_name, wanted_tenant_groups
from quotas.snapshot import shared_holder

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), dklen=len(expected), n=int(n), r=int(r), p=int(p)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def generate_password() -> str:
    """A password people can type: 4 groups of 5 letters and digits (~100 bits)."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(5)) for _ in range(4))


class AccountError(ValueError):
    pass


class AccountStore:
    """Local accounts in a JSON file: ``{"users": {name: {"hash": ..., "admin": bool}}}``.

    Writes take an exclusive lock, go to a temporary file and are renamed into
    place, so a reader never sees half a file and two writers never lose an update.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return dict(data.get("users", {}))

    @contextmanager
    def _editing(self) -> Iterator[dict[str, dict[str, Any]]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        with open(lock, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            users = self.read()
            yield users
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"users": users}, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)

    def add(self, name: str, password: str, admin: bool = False) -> None:
        with self._editing() as users:
            if name in users:
                raise AccountError(
                    _(
                        "Account {account} exists already; use 'aidc user passwd {name}' to reset its password.",
                        account=repr(name),
                        name=name,
                    )
                )
            users[name] = {"hash": hash_password(password), "admin": admin}

    def set_password(self, name: str, password: str) -> None:
        with self._editing() as users:
            if name not in users:
                raise AccountError(
                    _(
                        "There is no account {account}; create it with 'aidc user add {name}'.",
                        account=repr(name),
                        name=name,
                    )
                )
            users[name]["hash"] = hash_password(password)

    def remove(self, name: str) -> None:
        with self._editing() as users:
            if name not in users:
                raise AccountError(_("There is no account {account}.", account=repr(name)))
            del users[name]

    def check(self, name: str, password: str) -> bool:
        account = self.read().get(name)
        if account is None:
            # spend the same time as for a real account, so timing does not reveal which names exist
            verify_password(password, _DUMMY_HASH)
            return False
        return verify_password(password, account["hash"])

    def admins(self) -> set[str]:
        return {name for name, a in self.read().items() if a.get("admin")}


_DUMMY_HASH = hash_password(secrets.token_hex(8))


class TenantGroupsMixin(Authenticator, paths.PlatformFiles):
    """Keep every user's tenant groups and ``tenant-admin-<id>`` roles equal to what
    ``tenants.yaml`` says (the snapshot in force, :func:`quotas.snapshot.shared_holder`).

    Runs when the hub starts (``add_user`` is called for every known user), when a
    user is created, on each auth refresh, and for everyone at a reload of the
    platform config (:mod:`aidc.reload`), so someone removed from a tenant
    loses the group (and with it the tenant admin's view of them) without waiting
    for a login.
    """

    def sync_tenant_groups(self, user: Any, *, commit: bool = True) -> None:
        """``commit=False``: the caller commits (the hub's start commits once after every user, instead
        of once per user: a thousand commits are seconds of a hub start)."""
        config = shared_holder(self.tenants_file, self.catalog_file).config
        # JupyterHub passes the User wrapper, or the orm.User while loading groups at startup
        orm_user = getattr(user, "orm_user", user)
        db = object_session(orm_user)
        assert db is not None, "the user must belong to the hub's database session"  # i18n: a programming error
        current = {g.name: g for g in orm_user.groups}
        wanted = wanted_tenant_groups(config, user.name, list(current))
        changed = False
        for name, group in current.items():
            if name in config.tenants and name not in wanted:
                orm_user.groups.remove(group)
                self.log.info(
                    "Removed %s from tenant group %s (no longer a member in %s)", user.name, name, config.source
                )
                changed = True
        for name in wanted - set(current):
            group = orm.Group.find(db, name) or orm.Group(name=name)
            orm_user.groups.append(group)
            self.log.info("Added %s to tenant group %s", user.name, name)
            changed = True
        # tenant-admin roles, exactly: the hub's load_roles assigns them at start only
        held = {r.name: r for r in orm_user.roles if r.name.startswith(tenant_role_name(""))}
        admin_of = {tenant_role_name(t.id) for t in config.tenants_administered_by(user.name)}
        for name, role in held.items():
            if name not in admin_of:
                orm_user.roles.remove(role)
                self.log.info(
                    "Removed role %s from %s (no longer a tenant admin in %s)", name, user.name, config.source
                )
                changed = True
        for name in admin_of - set(held):
            role = orm.Role.find(db, name)
            if role is not None:
                orm_user.roles.append(role)
                self.log.info("Granted role %s to %s", name, user.name)
                changed = True
        if changed and commit:
            db.commit()

    async def add_user(self, user: Any) -> None:
        result = super().add_user(user)
        if inspect.isawaitable(result):
            await result
        # JupyterHub passes the orm.User only while it loads users and groups at start, and commits
        # after them all; at run time (a new user) it passes the User wrapper
        self.sync_tenant_groups(user, commit=hasattr(user, "orm_user"))

    async def refresh_user(self, user: Any, handler: Any = None) -> Any:
        self.sync_tenant_groups(user)
        return True


class LocalAccountAuthenticator(TenantGroupsMixin, Authenticator):
    """Log in with a local account of the embedded mode (see ``aidc user --help``).

    Only accounts in the store can log in, so the store is the allow list;
    accounts flagged admin there are JupyterHub admins.
    """

    accounts_file = Unicode(help="JSON file of local accounts. Defaults to ``$AIDC_DATA_DIR/accounts.json``.").tag(
        config=True
    )

    @default("accounts_file")
    def _default_accounts_file(self) -> str:
        return str(Path(paths.data_dir()) / "accounts.json")

    min_password_length = Integer(
        10, help="Shortest password a person may choose on the change-password page, e.g. 12."
    ).tag(config=True)

    @default("allow_all")
    def _default_allow_all(self) -> bool:
        # authenticate() succeeds only for accounts in the store, which is the allow list
        return True

    @property
    def store(self) -> AccountStore:
        return AccountStore(self.accounts_file)

    async def authenticate(self, handler: Any, data: dict[str, str]) -> dict[str, Any] | None:
        """Return ``{"name": ..., "admin": ...}`` for a right password, None otherwise."""
        name = self.normalize_username(data.get("username", ""))
        password = data.get("password", "")
        if not name or not password:
            return None
        store = self.store
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, store.check, name, password)
        if not ok:
            self.log.warning("Failed login for %r from %s", name, handler.request.remote_ip if handler else "?")
            return None
        return {"name": name, "admin": name in store.admins()}

    def get_handlers(self, app: Any) -> list[tuple[str, type]]:
        return [*super().get_handlers(app), ("/change-password", ChangePasswordHandler)]


class ChangePasswordHandler(BaseHandler):
    """``/hub/change-password``: a logged-in person changes their own local password."""

    def _render(self, message: Text | str = "", ok: bool = False) -> Any:
        """The page, with ``message`` said in the person's language (``|say`` in the template)."""
        return self.render_template(
            "aidc-change-password.html",
            message=message,
            ok=ok,
            min_length=self.authenticator.min_password_length,
        )

    @web.authenticated
    async def get(self) -> None:
        self.finish(await self._render())

    @web.authenticated
    async def post(self) -> None:
        user = self.current_user
        authenticator: LocalAccountAuthenticator = self.authenticator
        current = self.get_body_argument("current_password", "")
        new = self.get_body_argument("new_password", "")
        again = self.get_body_argument("new_password_again", "")
        store = authenticator.store
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, store.check, user.name, current):
            self.set_status(403)
            message = _("Your current password is not right; nothing was changed.")
        elif new != again:
            self.set_status(400)
            message = _("The two new passwords differ; nothing was changed. Type the same one twice.")
        elif len(new) < authenticator.min_password_length:
            self.set_status(400)
            message = _(
                "The new password has {length} characters; it needs at least {minimum}. Nothing was changed.",
                length=len(new),
                minimum=authenticator.min_password_length,
            )
        else:
            await loop.run_in_executor(None, store.set_password, user.name, new)
            self.log.info("%s changed their password", user.name)
            self.finish(await self._render(_("Your password was changed. Use it at your next login."), ok=True))
            return
        self.finish(await self._render(message))
