"""One Unix account per person for the embedded mode (The Littlest JupyterHub's model).

A hub user ``alice`` works as the Unix account ``jupyter-alice``, created the first time she starts
a server. A hub name that is not a valid Unix name (capitals, ``@``, dots, more than 32
characters) keeps its valid part and gets a hash of the whole name (``jupyter-kim-park-3f9a1c2``):
two hub users never share an account. Each account AIDC Hub makes carries a mark in its comment
field (a hash of the hub name it belongs to); an account of that name that lacks the mark, or
carries another person's, is never used: its files are someone else's.
"""

from __future__ import annotations

import fcntl
import grp
import hashlib
import os
import pwd
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from i18n import _

MAX_NAME = 32  # useradd's limit on Linux
_VALID = re.compile(r"[a-z_][a-z0-9_-]*\Z")
_INVALID_CHARS = re.compile(r"[^a-z0-9_-]+")
MARK = "AIDC Hub account "  # i18n: the mark in /etc/passwd, read back by the hub
# held while an account is made, by every hub process on this machine: useradd run twice at once
# for one name makes two accounts of that name with two uids (Debian's shadow 4.13, measured)
MAKING_LOCK = Path("/run/lock/aidc-accounts.lock")


class AccountError(RuntimeError):
    """The person's account cannot be made or used; the message (an :class:`i18n.Text`, ``args[0]``)
    says why and what to do."""


def account_name(hub_name: str, template: str = "jupyter-{username}") -> str:
    """The Unix account of hub user ``hub_name`` under ``template``: the name itself where it is a
    valid Unix name, else its valid characters plus the first 7 hex digits of its SHA-256."""
    wanted = template.format(username=hub_name)
    if _VALID.match(wanted) and len(wanted) <= MAX_NAME:
        return wanted
    digest = hashlib.sha256(hub_name.encode()).hexdigest()[:7]
    cleaned = _INVALID_CHARS.sub("-", wanted.lower()).strip("-") or "u"
    if not re.match(r"[a-z_]", cleaned):
        cleaned = "u" + cleaned
    return f"{cleaned[: MAX_NAME - 8].rstrip('-')}-{digest}"


def owner_mark(hub_name: str) -> str:
    """The comment (GECOS) field of the account made for ``hub_name``."""
    return MARK + hashlib.sha256(hub_name.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Account:
    """``home``: the account's home in /etc/passwd; ``home_moved`` False when it could not be set
    to the wanted one (the account runs something: it is set at a later start)."""

    name: str
    uid: int
    gid: int
    home: str
    home_moved: bool = True


def _lookup(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _checked(entry: pwd.struct_passwd, hub_name: str) -> Account:
    if entry.pw_gecos != owner_mark(hub_name):
        raise AccountError(
            _(
                "The Unix account {account} exists but was not made by AIDC Hub for {name}, so it is not used (its"
                " files may be someone else's). A platform admin can rename or remove it, or set"
                " TenantLocalSpawner.account_template to another pattern.",
                account=entry.pw_name,
                name=hub_name,
            )
        )
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise AccountError(
            _("The Unix account {account} has uid or gid 0; workspaces never run as root.", account=entry.pw_name)
        )
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def ensure_account(hub_name: str, home: str, template: str = "jupyter-{username}", attempts: int = 20) -> Account:
    """The account of ``hub_name``, made now (``useradd``, no password: logins go through the hub)
    if it does not exist yet. Blocking: call it in a thread."""
    name = account_name(hub_name, template)
    entry = _lookup(name)
    if entry is None:
        with _making_accounts():
            entry = _lookup(name)  # made meanwhile by another start of this person's
            if entry is None:
                command = ["useradd", "--no-create-home", "--home-dir", home, "--shell", "/bin/bash"]
                command += ["--comment", owner_mark(hub_name), "--user-group", name]
                entry = _change(command, name, lambda e: e is not None, attempts)
    account = _checked(entry, hub_name)
    if account.home != home:
        # sshd, login shells and ~ read the home from /etc/passwd: it is the workspaces' home (a
        # changed home_dir_template); usermod refuses while the account runs anything (exit 8)
        try:
            entry = _change(
                ["usermod", "--home", home, name], name, lambda e: e is not None and e.pw_dir == home, attempts
            )
        except AccountError as e:
            if "currently used by process" not in str(e):  # i18n: usermod's words
                raise
            return replace(account, home_moved=False)
        account = _checked(entry, hub_name)
    return account


@contextmanager
def _making_accounts() -> Iterator[None]:
    """One maker of accounts at a time on this machine (threads and hub processes alike: each
    ``open`` is its own ``flock``), so that two servers of one person starting together share
    one account (:data:`MAKING_LOCK`)."""
    MAKING_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with MAKING_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _change(
    command: list[str], name: str, done: Callable[[pwd.struct_passwd | None], bool], attempts: int
) -> pwd.struct_passwd:
    """Run ``useradd``/``usermod`` until ``done`` says the account is as wanted; another hub or tool
    holding /etc/passwd's lock (exit 1 or 10), or making the same account (exit 9), is waited for."""
    for _attempt in range(attempts):
        run = subprocess.run(command, capture_output=True, text=True, timeout=60)
        entry = _lookup(name)
        if done(entry):
            assert entry is not None
            return entry
        if run.returncode not in (1, 9, 10):  # 8: in use, said in stderr
            detail = run.stderr.strip() or run.returncode
            raise AccountError(_("Cannot set up the Unix account {account}: {detail}", account=name, detail=detail))
        time.sleep(0.2)
    raise AccountError(_("Cannot set up the Unix account {account}: /etc/passwd stayed locked", account=name))


def ensure_home(account: Account, home: str) -> Path:
    """Make ``home`` for ``account`` (mode 0700, owned by it) if missing, its parent traversable
    but not listable by others (0711) when the platform makes it. A home that exists is left as it is
    (a file, or someone else's folder, is the caller's to judge)."""
    path = Path(home)
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o711, parents=True)
        os.chmod(parent, 0o711)
    if not path.exists() and not path.is_symlink():
        path.mkdir(mode=0o700)
        os.chown(path, account.uid, account.gid)
        os.chmod(path, 0o700)
    check_reachable(account, parent)
    return path


def check_reachable(account: Account, folder: Path) -> None:
    """Raise if ``account`` cannot walk into ``folder`` (an ancestor is closed to others)."""
    groups = {account.gid} | {g.gr_gid for g in grp.getgrall() if account.name in g.gr_mem}
    for part in [folder, *folder.parents]:
        try:
            st = part.stat()
        except FileNotFoundError:  # what is missing is reported by whoever needs it
            continue
        if st.st_uid == account.uid:
            ok = st.st_mode & 0o100
        elif st.st_gid in groups:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            raise AccountError(
                _(
                    "The folder {part} is closed to other accounts (mode {mode}), so {account} cannot reach {folder}:"
                    " allow traversal (chmod o+x {part}), or move what is there (the homes:"
                    " TenantLocalSpawner.home_dir_template; the interpreter: a Python all accounts may run)",
                    part=str(part),
                    mode=f"{st.st_mode & 0o777:o}",
                    account=account.name,
                    folder=str(folder),
                )
            )
