"""The gateway's pure decisions: login names, what to do with a server, which forwards to allow,
the failed-login throttle, per-server keys, and who listens on a port (from a fake /proc)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import struct
from pathlib import Path

import asyncssh
import pytest

from sshgateway import workspace_keys
from sshgateway.audit import AuditLog, SessionRecord
from sshgateway.procnet import Listener, landing_sockets, loopback_address, with_workspaces
from sshgateway.ratelimit import AuthThrottle
from sshgateway.routing import Target, accounts_isolated, forward_refusal, plan_for, target_for_login

HUB = "https://hub.example.org"


@pytest.mark.parametrize(
    "login, owner, other_user_exists, expected",
    [
        ("alice", "alice", False, Target("alice", "")),
        ("alice.gpu", "alice", False, Target("alice", "gpu")),
        ("alice.gpu.big", "alice", False, Target("alice", "gpu.big")),
        ("john.smith", "john.smith", False, Target("john.smith", "")),
        ("john.smith.gpu", "john.smith", False, Target("john.smith", "gpu")),
        ("alice.gpu", "alice", True, None),  # a user named alice.gpu exists: the name is theirs
        ("bob", "alice", True, None),
        ("bob.gpu", "alice", False, None),
        ("alice.", "alice", False, None),
        ("alicegpu", "alice", False, None),
    ],
)
def test_target_for_login(login: str, owner: str, other_user_exists: bool, expected: Target | None) -> None:
    assert target_for_login(login, owner, other_user_exists) == expected


def test_plan_connects_to_a_ready_server_and_waits_for_a_starting_one() -> None:
    t = Target("alice", "")
    assert plan_for(t, {"ready": True, "pending": None}, HUB).action == "connect"
    assert plan_for(t, {"ready": False, "pending": "spawn"}, HUB).action == "wait"


def test_plan_starts_a_stopped_server_with_its_last_options() -> None:
    server = {"ready": False, "pending": None, "stopped": True, "user_options": {"tenant": "lab", "profile": "cpu"}}
    plan = plan_for(Target("alice", "gpu"), server, HUB)
    assert (plan.action, plan.options) == ("start", {"tenant": "lab", "profile": "cpu"})


def test_plan_refuses_a_never_started_server_and_says_where_to_start_it() -> None:
    plan = plan_for(Target("alice", ""), {"ready": False, "pending": None, "user_options": {}}, HUB)
    assert plan.action == "refuse"
    assert "never been started" in plan.message and f"{HUB}/hub/spawn/alice" in plan.message


def test_plan_refuses_a_named_server_that_does_not_exist() -> None:
    plan = plan_for(Target("alice", "other"), None, HUB)
    assert plan.action == "refuse"
    assert "alice has no server named 'other'" in plan.message and f"{HUB}/hub/home" in plan.message


def test_plan_refuses_while_the_server_stops() -> None:
    plan = plan_for(Target("alice", ""), {"ready": False, "pending": "stop"}, HUB)
    assert plan.action == "refuse" and "being stopped" in plan.message


T = Target("alice", "")
HUB_UID, ALICE_UID, BOB_UID = 0, 1001, 1002


def _on(address: str, uid: int, *workspaces: str | None) -> Listener:
    return Listener("5001", address, 8888, uid, frozenset(workspaces))


@pytest.mark.parametrize(
    "host, port, landing, allowed, phrase",
    [
        ("localhost", 8888, None, True, ""),  # own loopback (Kubernetes)
        ("10.0.0.5", 22, None, False, "only ports inside your workspace"),
        ("example.org", 80, [_on("127.0.0.1", ALICE_UID, "alice")], False, "only ports inside your workspace"),
        ("localhost", 0, None, False, "does not exist"),
        ("localhost", 9999, [], False, "Nothing listens on port 9999"),
        # all workspaces run as one account: the workspaces holding the socket a connection lands on
        ("127.0.0.1", 8888, [_on("127.0.0.1", HUB_UID, "alice")], True, ""),
        ("::1", 8888, [_on("::", HUB_UID, "alice", None)], True, ""),  # held by alice and a helper of hers
        ("localhost", 8888, [_on("127.0.0.1", HUB_UID, "bob")], False, "Port 8888 belongs to another workspace"),
        ("localhost", 8888, [_on("127.0.0.1", HUB_UID, "alice/gpu")], False, "belongs to another workspace"),
        ("localhost", 8888, [_on("127.0.0.1", HUB_UID, None)], False, "not part of alice's default server"),
        ("localhost", 8888, [_on("127.0.0.1", HUB_UID)], False, "not part of alice's default server"),  # holder unseen
        # SO_REUSEPORT: the kernel spreads connections over both, so both must be alice's
        ("localhost", 8888, [_on("127.0.0.1", HUB_UID, "alice"), _on("127.0.0.1", HUB_UID, "bob")], False, "another"),
    ],
)
def test_forward_refusal(host: str, port: int, landing: list[Listener] | None, allowed: bool, phrase: str) -> None:
    reason = forward_refusal(host, port, T, landing, HUB_UID, HUB_UID)
    assert (reason is None) == allowed
    if phrase:
        assert reason is not None and phrase in reason
    # the workspace's uid unknown (the gateway could not tell): the same, by workspace
    assert (forward_refusal(host, port, T, landing) is None) == allowed


@pytest.mark.parametrize(
    "workspace_uid, gateway_uid, isolated",
    [
        (1001, 0, True),  # a hub run by root, workspaces as jupyter-alice
        (1001, 1000, True),
        (1000, 1000, False),  # a developer's laptop: everything as one account
        (0, 0, False),  # a hub run by root without isolation (CI, containers)
        (0, 1000, False),
        (None, 0, False),  # unknown
    ],
)
def test_accounts_isolated(workspace_uid: int | None, gateway_uid: int, isolated: bool) -> None:
    assert accounts_isolated(workspace_uid, gateway_uid) == isolated


@pytest.mark.parametrize(
    "landing, allowed, phrase",
    [
        ([_on("127.0.0.1", ALICE_UID)], True, ""),
        ([_on("::", ALICE_UID)], True, ""),
        # the workspaces holding it do not count, only the account that opened it
        ([_on("127.0.0.1", BOB_UID, "alice")], False, "Port 8888 belongs to another workspace: localhost:8888"),
        ([_on("127.0.0.1", HUB_UID)], False, "not part of alice's default server"),  # the hub, postgres, ...
        ([_on("127.0.0.1", 999)], False, "not part of alice's default server"),  # the gateway's own account
        ([], False, "Nothing listens on port 8888"),
    ],
)
def test_forward_refusal_when_each_person_has_an_account(landing: list[Listener], allowed: bool, phrase: str) -> None:
    reason = forward_refusal("localhost", 8888, T, landing, ALICE_UID, 999)
    assert (reason is None) == allowed
    if phrase:
        assert reason is not None and phrase in reason


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_throttle_doubles_the_delay_per_failure_up_to_the_maximum() -> None:
    clock = Clock()
    th = AuthThrottle(base_delay=1, max_delay=5, max_failures=100, window=600, clock=clock)
    delays = []
    for _ in range(5):
        delays.append(th.delay("1.2.3.4", "alice"))
        th.failure("1.2.3.4", "alice")
    assert delays == [0, 1, 2, 4, 5]


def test_throttle_counts_per_user_across_sources_but_refuses_only_sources() -> None:
    clock = Clock()
    th = AuthThrottle(base_delay=1, max_delay=30, max_failures=3, window=600, clock=clock)
    for i in range(3):
        th.failure(f"10.0.0.{i}", "alice")
    assert th.delay("10.0.0.99", "alice") == 4  # alice was failed 3 times, from anywhere
    assert th.delay("10.0.0.99", "bob") == 0
    assert th.refusal("10.0.0.99") is None and th.refusal("10.0.0.0") is None
    for _ in range(3):
        th.failure("10.9.9.9", "bob")
    refusal = th.refusal("10.9.9.9")
    assert refusal is not None and "Too many failed logins from 10.9.9.9" in refusal and "600 seconds" in refusal


def test_throttle_forgets_after_the_window_and_resets_a_source_on_success() -> None:
    clock = Clock()
    th = AuthThrottle(base_delay=1, max_delay=30, max_failures=2, window=60, clock=clock)
    th.failure("s", "alice")
    th.failure("s", "alice")
    assert th.refusal("s") is not None
    clock.t += 61
    assert th.refusal("s") is None and th.delay("s", "alice") == 0
    th.failure("s", "alice")
    th.failure("t", "bob")
    th.success("s", "alice")
    assert th.delay("s", "carol") == 0 and th.delay("u", "alice") == 0
    assert th.delay("t", "carol") == 1 and th.delay("u", "bob") == 1  # others' counts stay


def test_throttles_on_one_file_share_failures_and_successes(tmp_path: Path) -> None:
    """Two gateway processes' throttles: failures counted by one slow down and refuse in the other."""
    clock, path = Clock(), str(tmp_path / "ssh-throttle.sqlite")
    one, two = (
        AuthThrottle(base_delay=1, max_delay=30, max_failures=3, window=600, clock=clock, path=path) for _ in "12"
    )
    one.failure("10.0.0.1", "alice")
    two.failure("10.0.0.1", "alice")
    assert one.delay("10.0.0.1", "bob") == two.delay("10.0.0.9", "alice") == 2
    assert one.refusal("10.0.0.1") is None
    one.failure("10.0.0.1", "alice")
    refusal = two.refusal("10.0.0.1")
    assert refusal is not None and "(3 in a row)" in refusal and "600 seconds" in refusal
    two.success("10.0.0.1", "alice")
    assert one.refusal("10.0.0.1") is None and one.delay("10.0.0.1", "alice") == 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_shared_throttle_forgets_after_the_window_and_deletes_old_rows(tmp_path: Path) -> None:
    clock, path = Clock(), str(tmp_path / "ssh-throttle.sqlite")
    one = AuthThrottle(base_delay=1, max_delay=30, max_failures=2, window=60, clock=clock, path=path)
    two = AuthThrottle(base_delay=1, max_delay=30, max_failures=2, window=60, clock=clock, path=path)
    one.failure("s", "alice")
    two.failure("s", "alice")
    clock.t += 59
    assert one.refusal("s") is not None and "Try again in 1 seconds" in (two.refusal("s") or "")
    clock.t += 1
    assert two.refusal("s") is None and two.delay("s", "alice") == 0
    two.failure("t", "bob")  # a write deletes what is past the window: only bob's and t's rows stay
    rows = sqlite3.connect(path).execute("SELECT kind, key, failures FROM failures ORDER BY kind").fetchall()
    assert rows == [("source", "t", 1), ("user", "bob", 1)]


def test_a_throttle_keeps_at_most_max_rows_the_most_recent(tmp_path: Path) -> None:
    """Sprayed source addresses cannot grow the file: beyond max_rows the oldest counts go."""
    clock, path = Clock(), str(tmp_path / "ssh-throttle.sqlite")
    th = AuthThrottle(base_delay=1, max_delay=30, max_failures=100, window=600, clock=clock, path=path, max_rows=4)
    for i in range(1, 5):
        clock.t += 1
        th.failure(f"10.0.0.{i}", "mallory")
    rows = sqlite3.connect(path).execute("SELECT key FROM failures ORDER BY seq").fetchall()
    assert rows == [("10.0.0.2",), ("10.0.0.3",), ("10.0.0.4",), ("mallory",)]  # 10.0.0.1 was the oldest
    assert th.delay("10.0.0.1", "nobody") == 0 and th.delay("10.0.0.2", "nobody") == 1
    assert th.delay("10.9.9.9", "mallory") == 8  # 4 failures
    clock.t += 1
    th.failure("10.0.0.2", "mallory")  # the newest again: it stays, 10.0.0.3 goes next
    th.failure("10.0.0.5", "mallory")
    rows = sqlite3.connect(path).execute("SELECT key FROM failures ORDER BY seq").fetchall()
    assert rows == [("10.0.0.4",), ("10.0.0.2",), ("10.0.0.5",), ("mallory",)]
    assert th.delay("10.0.0.2", "nobody") == 2


def test_the_default_throttle_is_its_own() -> None:
    one, two = AuthThrottle(), AuthThrottle()
    one.failure("s", "alice")
    assert one.delay("s", "x") == 1 and two.delay("s", "x") == 0
    one.clear()
    assert one.delay("s", "x") == 0


def test_server_keys_are_deterministic_distinct_and_match_their_public_lines() -> None:
    secret = b"s" * 32
    k1 = workspace_keys.server_key(secret, "alice", "")
    again = workspace_keys.server_key(secret, "alice", "")
    assert again.export_public_key() == k1.export_public_key()
    assert k1.convert_to_public().verify(b"data", again.sign(b"data", b"ssh-ed25519"))
    others = [
        workspace_keys.server_key(secret, "alice", "gpu"),
        workspace_keys.server_key(secret, "bob", ""),
        workspace_keys.server_key(b"t" * 32, "alice", ""),
    ]
    assert len({k.get_fingerprint() for k in [k1, *others]}) == 4
    line = workspace_keys.server_public_key(secret, "alice", "gpu")
    assert line.startswith("ssh-ed25519 ") and line.endswith(" aidc-gateway:alice/gpu")
    public = asyncssh.import_public_key(line)
    assert public.get_fingerprint() == workspace_keys.server_key(secret, "alice", "gpu").get_fingerprint()
    # a name with a NUL-free separator cannot collide: ("a", "b/c") differs from ("a/b", "c")
    assert (
        workspace_keys.server_key(secret, "a", "bc").get_fingerprint()
        != workspace_keys.server_key(secret, "ab", "c").get_fingerprint()
    )


def test_secret_and_host_key_are_created_once_private_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(workspace_keys.SECRET_ENV, raising=False)
    secret = workspace_keys.load_secret(str(tmp_path))
    assert len(secret) == 64 and workspace_keys.load_secret(str(tmp_path)) == secret
    assert stat.S_IMODE(os.stat(tmp_path / "ssh_secret").st_mode) == 0o600
    host = workspace_keys.load_host_key(str(tmp_path))
    assert workspace_keys.load_host_key(str(tmp_path)).get_fingerprint() == host.get_fingerprint()
    assert stat.S_IMODE(os.stat(tmp_path / "ssh_host_ed25519_key").st_mode) == 0o600
    monkeypatch.setenv(workspace_keys.SECRET_ENV, "from-the-environment")
    assert workspace_keys.load_secret(str(tmp_path)) == b"from-the-environment"


def test_empty_secret_is_refused_with_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(workspace_keys.SECRET_ENV, raising=False)
    (tmp_path / "ssh_secret").write_text("")
    with pytest.raises(ValueError, match="is empty: delete it"):
        workspace_keys.load_secret(str(tmp_path))


def _hex(address: str) -> str:
    """An address as /proc/net/tcp{,6} prints it: 32-bit words in little-endian byte order."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    raw = socket.inet_pton(family, address)
    return "".join(f"{word:08X}" for word in struct.unpack(f"<{len(raw) // 4}I", raw))


def _fake_proc(
    root: Path,
    procs: dict[int, tuple[int, list[str], dict[str, str]]],
    listening: dict[str, int | tuple[str, int, int]],
) -> Path:
    """procs: pid -> (parent pid, socket inodes, environment); listening: inode -> port on 127.0.0.1,
    or (address, port, owner's uid)."""
    (root / "net").mkdir(parents=True)
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    rows: dict[str, list[str]] = {"tcp": [], "tcp6": []}
    for inode, where in listening.items():
        address, port, uid = ("127.0.0.1", where, 0) if isinstance(where, int) else where
        table = rows["tcp6" if ":" in address else "tcp"]
        remote = "0" * len(_hex(address))
        table.append(
            f"   {len(table)}: {_hex(address)}:{port:04X} {remote}:0000 0A 00000000:00000000 00:00000000 00000000"
            f"  {uid:>5}        0 {inode} 1"
        )
    # established (not listening) sockets on a listening port must not count
    rows["tcp"].append(
        "   9: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 998 1"
    )
    rows["tcp6"].append(
        "   9: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:C350 01 00000000:00000000"
        " 00:00000000 00000000     0        0 999 1"
    )
    for name, table in rows.items():
        (root / "net" / name).write_text(header + "\n".join(table) + "\n")
    for pid, (ppid, inodes, env) in procs.items():
        d = root / str(pid)
        (d / "fd").mkdir(parents=True)
        (d / "stat").write_text(f"{pid} (python3 (x) y) S {ppid} {pid} {pid} 0 -1\n")
        (d / "environ").write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items()))
        for n, inode in enumerate(inodes):
            os.symlink(f"socket:[{inode}]", d / "fd" / str(n + 3))
        os.symlink("/dev/null", d / "fd" / "0")
    return root


def test_hex_addresses_as_the_kernel_prints_them() -> None:
    assert _hex("127.0.0.1") == "0100007F"
    assert _hex("::1") == "00000000000000000000000001000000"
    assert _hex("::ffff:127.0.0.1") == "0000000000000000FFFF00000100007F"


@pytest.mark.parametrize(
    "listening, address, expected",
    [
        ({"1": ("127.0.0.1", 8000, 0)}, "127.0.0.1", "1"),
        ({"1": ("0.0.0.0", 8000, 0)}, "127.0.0.1", "1"),
        ({"1": ("0.0.0.0", 8000, 0), "2": ("127.0.0.1", 8000, 0)}, "127.0.0.1", "2"),  # exact beats wildcard
        ({"1": ("::", 8000, 0), "2": ("::1", 8000, 0)}, "::1", "2"),
        ({"1": ("::", 8000, 0)}, "::1", "1"),
        ({"1": ("::", 8000, 0)}, "127.0.0.1", "1"),  # dual-stack takes IPv4
        ({"1": ("::ffff:127.0.0.1", 8000, 0)}, "127.0.0.1", "1"),  # IPv4-mapped
        ({"1": ("::", 8000, 0), "2": ("0.0.0.0", 8000, 0)}, "127.0.0.1", "2"),  # IPv4's own wildcard first
        ({"1": ("::", 8000, 0), "2": ("127.0.0.1", 8000, 0)}, "127.0.0.1", "2"),
        ({"1": ("::1", 8000, 0)}, "127.0.0.1", None),  # ::1 and 127.0.0.1 never mix
        ({"1": ("127.0.0.1", 8000, 0)}, "::1", None),
        ({"1": ("0.0.0.0", 8000, 0)}, "::1", None),
        ({"1": ("127.0.0.2", 8000, 0)}, "127.0.0.1", None),  # another loopback address
        ({"1": ("127.0.0.1", 8001, 0)}, "127.0.0.1", None),  # another port
        ({}, "127.0.0.1", None),
    ],
)
def test_landing_socket_is_the_one_linux_picks(
    tmp_path: Path, listening: dict[str, int | tuple[str, int, int]], address: str, expected: str | None
) -> None:
    proc = _fake_proc(tmp_path / "proc", {}, listening)
    landing = landing_sockets(address, 8000, proc)
    assert [s.inode for s in landing] == ([expected] if expected else [])


def test_landing_socket_address_uid_and_shared_ports(tmp_path: Path) -> None:
    proc = _fake_proc(
        tmp_path / "proc",
        {},
        {"1": ("::ffff:127.0.0.1", 8000, 1001), "2": ("::1", 8000, 1002), "3": ("::1", 8000, 1002)},
    )
    assert landing_sockets("127.0.0.1", 8000, proc) == [Listener("1", "::ffff:127.0.0.1", 8000, 1001)]
    # two sockets of one account sharing the address (SO_REUSEPORT): both
    assert landing_sockets("::1", 8000, proc) == [Listener("2", "::1", 8000, 1002), Listener("3", "::1", 8000, 1002)]


def test_landing_socket_on_this_machine() -> None:
    """The real /proc: this process's own listening sockets, with its uid."""
    with socket.socket() as v4, socket.socket(socket.AF_INET6) as v6:
        v4.bind(("127.0.0.1", 0))
        v4.listen()
        port = v4.getsockname()[1]
        v6.bind(("::1", port))
        v6.listen()
        [four] = landing_sockets("127.0.0.1", port)
        [six] = landing_sockets("::1", port)
    assert (four.address, four.port, four.uid) == ("127.0.0.1", port, os.getuid())
    assert (six.address, six.port, six.uid) == ("::1", port, os.getuid())
    assert four.inode != six.inode


def test_localhost_is_one_concrete_address(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path / "proc", {}, {"1": ("::1", 8000, 0), "2": ("127.0.0.1", 8001, 0), "3": ("::", 8002, 0)})
    assert loopback_address("localhost", 8000, proc) == "::1"
    assert loopback_address("localhost", 8001, proc) == "127.0.0.1"
    assert loopback_address("localhost", 8002, proc) == "127.0.0.1"  # dual-stack: IPv4 first
    assert loopback_address("localhost", 8003, proc) == "127.0.0.1"  # nothing: refused later
    assert loopback_address("::1", 8001, proc) == "::1"  # a concrete address stays as asked


def test_workspaces_holding_a_socket_by_process_tree_and_environment(tmp_path: Path) -> None:
    proc = _fake_proc(
        tmp_path / "proc",
        {
            100: (1, [], {"JUPYTERHUB_USER": "alice"}),  # alice's workspace
            101: (100, [], {}),  # its sshd (environment reset)
            102: (101, ["5001"], {}),  # a server started over ssh: in alice's tree
            200: (1, ["5002"], {"JUPYTERHUB_USER": "bob"}),  # bob's workspace
            300: (1, ["5003"], {"JUPYTERHUB_USER": "alice"}),  # detached from alice's tree (nohup)
            301: (1, ["5004"], {"JUPYTERHUB_USER": "alice", "JUPYTERHUB_SERVER_NAME": "gpu"}),
            400: (1, ["5005"], {"PATH": "/usr/bin"}),  # the hub, postgres, ...
            401: (400, ["5005"], {"PATH": "/usr/bin"}),  # a worker sharing its parent's socket
        },
        {"5001": 8000, "5002": 8001, "5003": 8002, "5004": 8003, "5005": 8004},
    )

    def held(port: int) -> list[frozenset[str | None]]:
        return [s.workspaces for s in with_workspaces(landing_sockets("127.0.0.1", port, proc), {100: "alice"}, proc)]

    assert held(8000) == [{"alice"}]
    assert held(8001) == [{"bob"}]
    assert held(8002) == [{"alice"}]
    assert held(8003) == [{"alice/gpu"}]
    assert held(8004) == [{None}]
    assert held(8005) == []


def test_reproduction_another_workspace_listening_on_the_other_loopback(tmp_path: Path) -> None:
    """Issue 13: bob serves on 127.0.0.1:P; alice listens on [::1]:P and asks for 127.0.0.1:P (or
    localhost:P). The connection would reach bob's server, so it is refused, however workspaces run."""
    proc = _fake_proc(
        tmp_path / "proc",
        {100: (1, ["5002"], {"JUPYTERHUB_USER": "alice"}), 200: (1, ["5001"], {"JUPYTERHUB_USER": "bob"})},
        {"5001": ("127.0.0.1", 8000, BOB_UID), "5002": ("::1", 8000, ALICE_UID)},
    )
    workspaces = {100: "alice", 200: "bob"}
    for host in ("127.0.0.1", "localhost"):
        landing = with_workspaces(landing_sockets(loopback_address(host, 8000, proc), 8000, proc), workspaces, proc)
        assert [s.inode for s in landing] == ["5001"]
        for uids in ((ALICE_UID, HUB_UID), (HUB_UID, HUB_UID)):  # each person an account; all one account
            reason = forward_refusal(host, 8000, T, landing, *uids)
            assert reason is not None and "Port 8000 belongs to another workspace" in reason
    # her own [::1]:P is hers when asked for by that address
    landing = with_workspaces(landing_sockets("::1", 8000, proc), workspaces, proc)
    assert forward_refusal("::1", 8000, T, landing, ALICE_UID, HUB_UID) is None
    assert forward_refusal("::1", 8000, T, landing, HUB_UID, HUB_UID) is None


def test_audit_appends_one_private_json_line_per_session(tmp_path: Path) -> None:
    log = AuditLog(str(tmp_path / "ssh-audit.jsonl"))
    log.write(SessionRecord("c1-1", "alice", "", "lab", "127.0.0.1", "exec", "echo hi", bytes_in=3, bytes_out=4))
    log.write(SessionRecord("c1-2", "alice", "gpu", "lab", "127.0.0.1", "shell"))
    lines = [json.loads(line) for line in (tmp_path / "ssh-audit.jsonl").read_text().splitlines()]
    assert [r["session"] for r in lines] == ["c1-1", "c1-2"]
    assert lines[0]["command"] == "echo hi" and lines[0]["bytes_in"] == 3 and lines[0]["bytes_out"] == 4
    assert lines[0]["start"] <= lines[0]["end"]
    assert stat.S_IMODE(os.stat(tmp_path / "ssh-audit.jsonl").st_mode) == 0o600


def test_audit_records_of_several_processes_stay_whole_lines(tmp_path: Path) -> None:
    """Workers append to one file: each record is one write, never interleaved with another's."""
    path = tmp_path / "ssh-audit.jsonl"
    children = []
    for n in range(4):
        pid = os.fork()
        if pid == 0:
            try:
                log = AuditLog(str(path))
                for i in range(200):
                    log.write(SessionRecord(f"c{n}-{i}", "alice", "", "lab", "127.0.0.1", "exec", "x" * 3000))
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        assert os.waitpid(pid, 0)[1] == 0
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 800 and {r["gateway"] for r in records} == set(children)
    assert all(r["session"].startswith(f"c{children.index(r['gateway'])}-") for r in records)


def test_hub_service_and_role() -> None:
    from sshgateway.server import SERVICE_NAME, hub_roles, hub_service

    service = hub_service({"AIDC_DATA_DIR": "/srv/aidc"}, ["--SSHGateway.port=2299"])
    assert service["name"] == SERVICE_NAME == "sshgateway"
    assert service["command"][-3:] == ["-m", "sshgateway", "--SSHGateway.port=2299"]
    assert service["environment"] == {"AIDC_DATA_DIR": "/srv/aidc"}
    assert "api_token" not in service and "url" not in service  # it speaks SSH, the proxy has no route to it
    assert hub_service({}, api_token="t" * 32)["api_token"] == "t" * 32
    (role,) = hub_roles()
    assert role["services"] == ["sshgateway"]
    # it starts and reaches servers, and administers nothing (users, tokens, named-server deletion)
    assert {"servers", "admin:server_state", "access:services!service=quotas"} <= set(role["scopes"])
    assert "access:servers" not in role["scopes"]  # it reaches workspaces over TCP, not through the proxy
    assert not {"admin:users", "delete:servers", "admin:servers", "tokens"} & set(role["scopes"])
