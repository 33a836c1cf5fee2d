"""People's SSH keys in the quotas store, on SQLite and on PostgreSQL: what is accepted, what is
refused (and then nothing is written), one key per person, revocation, and the upgrade from 0001."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import asyncssh
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, Table, inspect

from quotas.store import MIGRATIONS, Store, make_engine
from tests.unit.builders import H100_X1, SNU

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.close()


def public_line(key: asyncssh.SSHKey, comment: str = "") -> str:
    text = key.export_public_key("openssh").decode().strip()
    return f"{text} {comment}".strip()


def wire(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


ED25519 = asyncssh.generate_private_key("ssh-ed25519")
OTHER_ED25519 = asyncssh.generate_private_key("ssh-ed25519")
RSA_2048 = asyncssh.generate_private_key("ssh-rsa", key_size=2048)
ED_BLOB_B64 = public_line(ED25519).split()[1]


@pytest.mark.parametrize(
    "key_type,size,bits",
    [
        ("ssh-ed25519", None, 256),
        ("ecdsa-sha2-nistp256", None, 256),
        ("ecdsa-sha2-nistp384", None, 384),
        ("ecdsa-sha2-nistp521", None, 521),
        ("ssh-rsa", 3072, 3072),
    ],
)
def test_accepted_key_types_are_stored_with_openssh_fingerprints(
    store: Store, key_type: str, size: int | None, bits: int
) -> None:
    key = asyncssh.generate_private_key(key_type, key_size=size) if size else asyncssh.generate_private_key(key_type)
    added = store.add_ssh_key("alice", "  " + public_line(key, "alice@laptop") + "\n", None, NOW)
    assert added.user == "alice" and added.title == "alice@laptop"  # no title given: the comment
    assert added.fingerprint == key.get_fingerprint("sha256")  # what the gateway computes
    assert added.public_key == public_line(key)  # canonical: comment dropped, whitespace trimmed
    assert added.created == NOW and added.last_used is None
    assert store.ssh_keys("alice") == [added]


BAD_KEYS = [
    ("", "The key is empty"),
    ("hello world", "This is not an OpenSSH public key (it starts with 'hello')"),
    (ED25519.export_private_key("openssh").decode(), "This is a PRIVATE key"),
    (ED25519.export_private_key("pkcs8-pem").decode(), "This is a PRIVATE key"),
    (f'command="/bin/ls" ssh-ed25519 {ED_BLOB_B64} x', "starts with options"),
    (f'no-pty,from="10.0.0.1" ssh-ed25519 {ED_BLOB_B64}', "starts with options"),
    (public_line(RSA_2048), "This RSA key has 2048 bits; the gateway accepts RSA keys of at least 3072 bits"),
    ("ssh-dss " + base64.b64encode(wire(b"ssh-dss", b"\x01" * 128)).decode(), "DSA keys are not accepted"),
    ("ssh-ed25519", "no key data after it"),
    ("ssh-ed25519 not*base64", "not valid base64"),
    ("ssh-ed25519 " + ED_BLOB_B64[:40], "damaged"),  # cut short
    ("ssh-rsa " + ED_BLOB_B64, "damaged"),  # the header says RSA, the data is Ed25519
    (public_line(ED25519) + "\n" + public_line(OTHER_ED25519), "Paste one key at a time: the text has 2 lines"),
    ("---- BEGIN SSH2 PUBLIC KEY ----\nAAAA\n---- END SSH2 PUBLIC KEY ----", "ssh-keygen -i -f key.pub"),
    ("sk-ssh-ed25519@openssh.com AAAA x", "sk-ssh-ed25519@openssh.com keys are not accepted"),
]


@pytest.mark.parametrize("text,reason", BAD_KEYS, ids=[f"bad{i}" for i in range(len(BAD_KEYS))])
def test_refused_keys_say_why_and_write_nothing(store: Store, text: str, reason: str) -> None:
    with pytest.raises(ValueError) as refused:
        store.add_ssh_key("alice", text, "laptop", NOW)
    assert reason in str(refused.value)
    assert store.ssh_keys("alice") == []


def test_a_title_too_long_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="keep it under 200"):
        store.add_ssh_key("alice", public_line(ED25519), "x" * 201, NOW)
    assert store.ssh_keys("alice") == []


def test_a_key_belongs_to_one_person(store: Store) -> None:
    mine = store.add_ssh_key("alice", public_line(ED25519, "a"), "laptop", NOW)
    with pytest.raises(ValueError) as theirs:
        store.add_ssh_key("bob", public_line(ED25519, "b"), "laptop", NOW)
    assert "registered already by another account" in str(theirs.value)
    assert "alice" not in str(theirs.value)  # who owns it is not told
    with pytest.raises(ValueError, match="You registered this key"):
        store.add_ssh_key("alice", public_line(ED25519), "again", NOW)
    assert store.ssh_keys("bob") == [] and store.ssh_keys("alice") == [mine]
    assert store.ssh_key_owner(mine.fingerprint) == "alice"


def test_keys_are_listed_per_person_oldest_first(store: Store) -> None:
    first = store.add_ssh_key("alice", public_line(ED25519), "laptop", NOW)
    second = store.add_ssh_key("alice", public_line(OTHER_ED25519), "  desk   top ", NOW + timedelta(hours=1))
    assert second.title == "desk top"
    assert [k.id for k in store.ssh_keys("alice")] == [first.id, second.id]
    assert store.ssh_keys("bob") == []


def test_revocation_and_last_use(store: Store) -> None:
    key = store.add_ssh_key("alice", public_line(ED25519), "laptop", NOW)
    assert store.ssh_key_owner(key.fingerprint) == "alice"
    assert store.ssh_keys("alice")[0].last_used is None  # a lookup without a time records nothing
    assert store.ssh_key_owner(key.fingerprint, NOW + timedelta(minutes=5)) == "alice"
    assert store.ssh_keys("alice")[0].last_used == NOW + timedelta(minutes=5)

    assert store.delete_ssh_key("bob", key.id) is False  # not bob's: nothing happens
    assert store.ssh_key_owner(key.fingerprint) == "alice"
    assert store.delete_ssh_key("alice", key.id) is True
    assert store.ssh_key_owner(key.fingerprint) is None  # the next connection is refused
    assert store.delete_ssh_key("alice", key.id) is False
    assert store.ssh_key_owner("SHA256:" + "A" * 43) is None

    # once removed, the key may be registered again, by anyone
    assert store.add_ssh_key("bob", public_line(ED25519), "laptop", NOW).user == "bob"
    assert store.ssh_key_owner(key.fingerprint) == "bob"


def test_upgrade_from_0001_keeps_the_ledger_and_adds_keys(db_url: str) -> None:
    engine = make_engine(db_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    assert "ssh_keys" not in inspect(engine).get_table_names()
    # a run as 0001 wrote it (today's Store writes columns that 0001 does not have)
    runs = Table("runs", MetaData(), autoload_with=engine)
    naive = NOW.replace(tzinfo=None)
    run = "0" * 32
    with engine.begin() as conn:
        conn.execute(
            runs.insert().values(
                id=run,
                tenant=SNU.id,
                user="alice",
                server="",
                profile=H100_X1.id,
                groups=[],
                gpus={"H100": 1},
                gpu_count=1,
                cpu_milli=8000,
                memory_bytes=2**30,
                started=naive - timedelta(hours=2),
                ended=naive,
                end_reason="stopped",
            )
        )
    engine.dispose()

    store = Store(db_url)  # upgrades to the newest migration
    try:
        (kept,) = store.runs_between(SNU.id, NOW - timedelta(days=1), NOW)
        assert (kept.id, kept.holding.gpus, kept.holding.borrowed, kept.ended) == (run, {"H100": 1}, {}, NOW)
        assert store.add_ssh_key("alice", public_line(ED25519), "laptop", NOW).user == "alice"
    finally:
        store.close()
