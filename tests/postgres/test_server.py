"""The PostgreSQL bed itself: it serves SQLAlchemy, isolates databases, listens on 127.0.0.1
only, survives a crash with committed data intact, and never outlives its owner."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.bed.postgres import INSTALL_HINT, PostgresError, PostgresServer, find_bin_dir

REPO = Path(__file__).resolve().parents[2]
_SIOCGIFADDR = 0x8915


def _refused(host: str, port: int) -> bool:
    """True if nothing accepts TCP connections on host:port (refused, or the address is unusable)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        try:
            s.connect((host, port))
        except ConnectionRefusedError:
            return True
        except OSError as e:
            # ::1 on a host without IPv6, or an address no interface has
            if e.errno in (errno.EADDRNOTAVAIL, errno.ENETUNREACH, errno.EAFNOSUPPORT):
                return True
            raise
    return False


def _interface_ipv4_addresses() -> list[str]:
    addrs = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:  # no IPv4 address on this interface
                continue
            addrs.append(socket.inet_ntoa(packed[20:24]))
    return addrs


def _scalar(url: str, query: str) -> object:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(query)).scalar()
    finally:
        engine.dispose()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[PostgresServer]:
    """A server of the test's own, for tests that stop or crash it."""
    server = PostgresServer(tmp_path / "pg")
    try:
        yield server.start()
    finally:
        server.stop()


def test_accepts_sqlalchemy_connections(postgres_server: PostgresServer) -> None:
    assert postgres_server.url == f"postgresql+psycopg://aidc@127.0.0.1:{postgres_server.port}/aidc"
    engine = sa.create_engine(postgres_server.url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_user, current_database()")).one() == ("aidc", "aidc")
            assert conn.execute(sa.text("SHOW server_encoding")).scalar() == "UTF8"
            # crash-safety tests rely on the durability defaults
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                assert conn.execute(sa.text(f"SHOW {setting}")).scalar() == "on", setting
    finally:
        engine.dispose()


def test_databases_are_isolated(postgres_url: str, postgres_server: PostgresServer) -> None:
    other = postgres_server.create_database("isolation_other")
    try:
        engine = sa.create_engine(postgres_url)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE tenants (name text PRIMARY KEY)"))
            conn.execute(sa.text("INSERT INTO tenants VALUES ('lab')"))
        engine.dispose()
        assert _scalar(other, "SELECT to_regclass('tenants') IS NULL") is True
        assert _scalar(postgres_url, "SELECT count(*) FROM tenants") == 1
    finally:
        postgres_server.drop_database("isolation_other")


def test_each_test_gets_an_empty_database(postgres_url: str) -> None:
    assert _scalar(postgres_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0


def test_listens_on_127_0_0_1_only(postgres_server: PostgresServer) -> None:
    port = postgres_server.port
    assert not _refused("127.0.0.1", port)
    assert _scalar(postgres_server.url, "SHOW listen_addresses") == "127.0.0.1"
    others = ["127.0.0.2", "::1", *(a for a in _interface_ipv4_addresses() if a != "127.0.0.1")]
    assert [a for a in others if not _refused(a, port)] == []


def test_db_url_covers_both_backends(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (x integer)"))
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))
            assert conn.execute(sa.text("SELECT sum(x) FROM t")).scalar() == 1
    finally:
        engine.dispose()


def test_committed_data_survives_a_crash(own_server: PostgresServer) -> None:
    engine = sa.create_engine(own_server.url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE ledger (n integer)"))
        conn.execute(sa.text("INSERT INTO ledger VALUES (42)"))
    engine.dispose()
    port = own_server.port
    own_server.crash()
    assert _refused("127.0.0.1", port)
    own_server.start()
    assert own_server.port == port
    assert _scalar(own_server.url, "SELECT n FROM ledger") == 42
    assert "database system was interrupted" in own_server.log_path.read_text()


def test_stop_closes_the_port(tmp_path: Path) -> None:
    with PostgresServer(tmp_path / "pg") as server:
        port = server.port
        assert not _refused("127.0.0.1", port)
        pid = server._pid
    assert not server.running
    assert _refused("127.0.0.1", port)
    assert not Path(f"/proc/{pid}").exists()  # gone, not even a zombie
    server.stop()  # idempotent


# The owner starts a server and sleeps. It runs under a reaper that adopts what the owner
# leaves behind (the watchdog, and the postmaster once pg_ctl exits), reaps it, and exits
# when nothing is left: so its exit means the server is gone, and no zombie stays behind.
_OWNER = """
import sys, time
from pathlib import Path
from tests.bed.postgres import PostgresServer
s = PostgresServer(Path(sys.argv[1])).start()
print(s.port, s._pid, flush=True)
time.sleep(600)
"""
_REAPER = """
import ctypes, os, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
owner = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
print(owner.pid, flush=True)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
"""


def test_server_dies_with_its_owner(tmp_path: Path) -> None:
    """If the process that started the server is SIGKILLed, the watchdog stops the server."""
    reaper = subprocess.Popen(
        [sys.executable, "-c", _REAPER, _OWNER, str(tmp_path / "pg")], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert reaper.stdout is not None
        owner = int(reaper.stdout.readline())
        port, postmaster = (int(x) for x in reaper.stdout.readline().split())
        assert not _refused("127.0.0.1", port)
        os.kill(owner, signal.SIGKILL)
        try:
            reaper.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"postgres (pid {postmaster}, port {port}) outlived its SIGKILLed owner by 30 s")
        assert _refused("127.0.0.1", port)
        assert not Path(f"/proc/{postmaster}").exists()
    finally:
        if reaper.poll() is None:
            reaper.kill()
            reaper.wait()


def test_missing_binaries_say_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(PostgresError, match=INSTALL_HINT.replace(".", r"\.")):
        find_bin_dir(lib_root=tmp_path, path="")


def test_highest_installed_version_wins(tmp_path: Path) -> None:
    for version in ("9.6", "15", "13"):
        bin_dir = tmp_path / version / "bin"
        bin_dir.mkdir(parents=True)
        for name in ("initdb", "pg_ctl", "postgres"):
            (bin_dir / name).write_text("#!/bin/sh\n")
            (bin_dir / name).chmod(0o755)
    assert find_bin_dir(lib_root=tmp_path, path="") == tmp_path / "15" / "bin"
