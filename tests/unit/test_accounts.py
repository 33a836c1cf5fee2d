"""spawner.accounts: one Unix account per person, never shared, never someone else's."""

from __future__ import annotations

import pwd
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from spawner.accounts import (
    MAX_NAME,
    AccountError,
    account_name,
    check_reachable,
    ensure_account,
    ensure_home,
    owner_mark,
)

root_only = pytest.mark.usefixtures("root")


@pytest.mark.parametrize(
    ("hub_name", "account"),
    [("alice", "jupyter-alice"), ("bob_2", "jupyter-bob_2"), ("x" * 24, "jupyter-" + "x" * 24)],
)
def test_valid_names_are_kept(hub_name: str, account: str) -> None:
    assert account_name(hub_name) == account


@pytest.mark.parametrize("hub_name", ["Alice", "kim.park@uni.ac.kr", "x" * 25, "김민수", "a b", "../root", "-n"])
def test_other_names_get_a_hash_and_stay_valid_unix_names(hub_name: str) -> None:
    name = account_name(hub_name)
    assert len(name) <= MAX_NAME
    assert name[0].isalpha() and all(c.isalnum() or c in "-_" for c in name) and name == name.lower()
    assert name != account_name(hub_name.upper() + "x")


def test_names_that_clean_up_alike_never_share_an_account() -> None:
    names = ["Alice", "alice.", "ALICE", "a.lice", "al ice", "jupyter-alice"]
    accounts = {account_name(n) for n in names} | {account_name("alice")}
    assert len(accounts) == len(names) + 1
    assert account_name("x", "aidc-{username}") == "aidc-x"


@pytest.fixture
def hub_name() -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    subprocess.run(["userdel", account_name(name, "aidctest-{username}")], capture_output=True)


@root_only
def test_an_account_is_made_once_and_reused(hub_name: str, tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    first = ensure_account(hub_name, home, "aidctest-{username}")
    again = ensure_account(hub_name, home, "aidctest-{username}")
    assert first == again and first.uid != 0 and first.gid != 0
    entry = pwd.getpwnam(first.name)
    assert entry.pw_gecos == owner_mark(hub_name) and entry.pw_dir == home
    assert not Path(home).exists()  # made by ensure_home, where the spawner wants it
    moved = ensure_account(hub_name, str(tmp_path / "elsewhere"), "aidctest-{username}")
    assert (moved.uid, moved.home) == (first.uid, str(tmp_path / "elsewhere"))  # sshd and shells read it
    assert pwd.getpwnam(first.name).pw_dir == moved.home


@root_only
def test_starts_at_once_of_one_person_share_one_account(hub_name: str, tmp_path: Path) -> None:
    """Two servers of one person starting together (a burst of spawns): one account, one uid for
    all (useradd run at once for one name made an account per call, each with its own uid)."""
    home = str(tmp_path / "home")
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda _: ensure_account(hub_name, home, "aidctest-{username}"), range(4)))
    name = account_name(hub_name, "aidctest-{username}")
    assert {a.uid for a in made} == {pwd.getpwnam(name).pw_uid}
    assert [e.pw_name for e in pwd.getpwall()].count(name) == 1


@root_only
def test_an_account_not_made_for_that_person_is_never_used(hub_name: str, tmp_path: Path) -> None:
    name = account_name(hub_name, "aidctest-{username}")
    subprocess.run(["useradd", "--comment", "someone else", "--user-group", name], check=True)
    with pytest.raises(AccountError) as info:
        ensure_account(hub_name, str(tmp_path), "aidctest-{username}")
    assert f"The Unix account {name} exists but was not made by AIDC Hub for {hub_name}" in str(info.value)


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A folder other accounts can reach (pytest's own are 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="aidc-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


@root_only
def test_a_home_is_private_and_its_parent_not_listable(hub_name: str, open_tmp: Path) -> None:
    tmp_path = open_tmp
    account = ensure_account(hub_name, str(tmp_path / "homes" / "x"), "aidctest-{username}")
    home = ensure_home(account, str(tmp_path / "homes" / "x"))
    st = home.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (account.uid, account.gid, 0o700)
    assert stat.S_IMODE(home.parent.stat().st_mode) == 0o711
    (home / "notes").write_text("mine")
    ensure_home(account, str(home))  # an existing home is left as it is
    assert (home / "notes").read_text() == "mine"


@root_only
def test_a_closed_folder_on_the_way_is_named(hub_name: str, open_tmp: Path) -> None:
    tmp_path = open_tmp
    account = ensure_account(hub_name, "/nonexistent", "aidctest-{username}")
    closed = tmp_path / "closed"
    (closed / "homes").mkdir(parents=True)
    closed.chmod(0o700)
    with pytest.raises(AccountError) as info:
        check_reachable(account, closed / "homes")
    assert f"The folder {closed} is closed to other accounts (mode 700)" in str(info.value)
    assert f"chmod o+x {closed}" in str(info.value)
