"""authenticators.local: password hashing and the local account store of the embedded mode."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from authenticators.local import AccountError, AccountStore, generate_password, hash_password, verify_password


def test_hash_and_verify_roundtrip() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$16384$8$1$")
    assert "correct horse" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsf", stored)
    assert not verify_password("", stored)


def test_hashes_are_salted() -> None:
    assert hash_password("same") != hash_password("same")


@pytest.mark.parametrize(
    "stored",
    ["", "plain-text", "bcrypt$1$2$3$c2FsdA==$ZGlnZXN0", "scrypt$x$8$1$c2FsdA==$ZGlnZXN0", "scrypt$16384$8$1$!!$??"],
)
def test_verify_rejects_malformed_hashes(stored: str) -> None:
    assert verify_password("anything", stored) is False


def test_generate_password_format() -> None:
    passwords = {generate_password() for _ in range(20)}
    assert len(passwords) == 20
    for password in passwords:
        assert re.fullmatch(r"[a-hjkmnp-z2-9]{5}(-[a-hjkmnp-z2-9]{5}){3}", password), password


def test_account_store_lifecycle(tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "state" / "accounts.json")
    assert store.read() == {}
    assert not store.check("alice", "pw-alice-1")

    store.add("admin", "pw-admin-1", admin=True)
    store.add("alice", "pw-alice-1")
    assert store.path.stat().st_mode & 0o777 == 0o600
    assert set(store.read()) == {"admin", "alice"}
    assert store.admins() == {"admin"}
    assert store.check("alice", "pw-alice-1")
    assert not store.check("alice", "pw-admin-1")

    store.set_password("alice", "pw-alice-2")
    assert not store.check("alice", "pw-alice-1")
    assert store.check("alice", "pw-alice-2")
    assert store.path.stat().st_mode & 0o777 == 0o600

    store.remove("alice")
    assert set(store.read()) == {"admin"}
    assert not store.check("alice", "pw-alice-2")


def test_adding_an_existing_account_says_how_to_reset(tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "accounts.json")
    store.add("alice", "pw-alice-1")
    before = store.path.read_text()
    with pytest.raises(AccountError) as info:
        store.add("alice", "other-password")
    assert str(info.value) == "Account 'alice' exists already; use 'aidc user passwd alice' to reset its password."
    assert store.path.read_text() == before


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (
            lambda s: s.set_password("bob", "pw-bob-123"),
            "There is no account 'bob'; create it with 'aidc user add bob'.",
        ),
        (lambda s: s.remove("bob"), "There is no account 'bob'."),
    ],
)
def test_changing_a_missing_account(tmp_path: Path, action: Callable[[AccountStore], None], message: str) -> None:
    store = AccountStore(tmp_path / "accounts.json")
    with pytest.raises(AccountError) as info:
        action(store)
    assert str(info.value) == message
