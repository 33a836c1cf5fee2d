"""The SSH gateway end to end: Debian's OpenSSH client (ssh, scp, sftp, rsync) -> the gateway (the
hub's ``sshgateway`` service) -> plain TCP to the sshd inside a real workspace, at the address the
spawner keeps in the server's state.

One hub for the module (token passwords on, a quick throttle from a gateway config file); alice
and bob register keys through the quotas API, as people do on the page. Failed-login tests bind
the client to their own loopback addresses (127.0.0.2, ...) so that their failures do not slow
the other tests, which come from 127.0.0.1.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from sshgateway.routing import sshd_address
from tests.bed.hub import PASSWORDS, Client, Hub, free_port, running_hub
from tests.bed.ssh import SSH, gateway_pids, keygen, outbound, register

DELAY = 0.5  # SSHGateway.auth_failure_delay in this hub
MAX_FAILURES = 4  # SSHGateway.auth_max_failures in this hub
WORKERS = 2  # SSHGateway.workers in this hub: every test runs against two gateway processes


@dataclass
class Person:
    client: Client
    key: Path
    key_id: int


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    work = tmp_path_factory.mktemp("ssh-hub")
    config = work / "sshgateway_config.py"
    config.write_text(
        f"c.SSHGateway.auth_failure_delay = {DELAY}\n"
        f"c.SSHGateway.auth_max_failures = {MAX_FAILURES}\n"
        "c.SSHGateway.auth_failure_window = 600\n"
        "c.SSHGateway.allow_token_password = True\n"
        f"c.SSHGateway.workers = {WORKERS}\n"
    )
    t0 = time.monotonic()
    with running_hub(work, env={"AIDC_SSH_CONFIG": str(config)}, traits={"Spawner.poll_interval": 5}) as h:
        print(f"\nhub with the SSH gateway started in {time.monotonic() - t0:.1f}s")
        yield h


@pytest.fixture(scope="module")
def people(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Person]:
    keys = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("alice", "bob"):
        client = hub.login(name, PASSWORDS[name])
        key = keygen(keys / f"{name}_ed25519")
        out[name] = Person(client, key, register(client, key))
    return out


@pytest.fixture(scope="module")
def running(hub: Hub, people: dict[str, Person]) -> dict[str, Any]:
    """alice's default server on one H100 and bob's on CPU, both ready."""
    alice, bob = people["alice"].client, people["bob"].client
    assert alice.spawn(tenant="lab", profile="h100-x1").status_code in (201, 202)
    assert bob.spawn(tenant="lab", profile="cpu").status_code in (201, 202)
    return {"alice": alice.wait_ready(), "bob": bob.wait_ready()}


@pytest.fixture(scope="module")
def ssh(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> SSH:
    return SSH(hub, tmp_path_factory.mktemp("ssh-client"))


def server_state(hub: Hub, user: str, server: str = "") -> dict[str, Any]:
    admin = hub.login("admin", PASSWORDS["admin"])
    return admin.api("GET", f"/users/{user}").json()["servers"][server]["state"]  # type: ignore[no-any-return]


def audit_records(hub: Hub) -> list[dict[str, Any]]:
    path = hub.data_dir / "ssh-audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def audit_record(hub: Hub, kind: str, command: str, timeout: float = 10) -> dict[str, Any]:
    """The last audit record of that kind and command; written when the gateway sees the channel
    close, which may be a moment after the client exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in audit_records(hub) if r["kind"] == kind and r["command"] == command]
        if found:
            return found[-1]
        time.sleep(0.2)
    raise AssertionError(f"no audit record of {kind} {command!r} in {audit_records(hub)}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_exec_gets_the_workspace_environment_output_and_exit_status(
    hub: Hub, ssh: SSH, people: dict[str, Person], running: dict[str, Any]
) -> None:
    gpus = ",".join(server_state(hub, "alice")["aidc"]["gpus"])
    assert gpus, "alice's server should hold one H100"
    command = "echo gpus=$CUDA_VISIBLE_DEVICES; echo to-stderr >&2; exit 3"
    t0 = time.monotonic()
    r = ssh.ssh("alice", command, people["alice"].key)
    elapsed = time.monotonic() - t0
    print(f"\nfirst exec through the gateway: {elapsed:.2f}s")
    assert r.returncode == 3, r.stderr
    assert r.stdout.strip() == f"gpus={gpus}"
    assert "to-stderr" in r.stderr
    # the audit record of that session: who, where from, what, how much
    record = audit_record(hub, "exec", command)
    assert record["user"] == "alice" and record["server"] == "" and record["tenant"] == "lab"
    assert record["source"] == "127.0.0.1" and record["kind"] == "exec" and record["exit_status"] == 3
    assert record["bytes_out"] == len(f"gpus={gpus}\nto-stderr\n")
    assert record["start"] <= record["end"] and record["session"]
    # a second connection is quicker (the workspace's sshd already runs)
    t0 = time.monotonic()
    r = ssh.ssh("alice", "cat", people["alice"].key, timeout=60)
    print(f"second exec: {time.monotonic() - t0:.2f}s")
    assert r.returncode == 0


def test_stdin_goes_through_and_eof_ends_it(ssh: SSH, people: dict[str, Person], running: dict[str, Any]) -> None:
    data = os.urandom(300_000).hex()
    args = ["ssh", *ssh.options(people["alice"].key), "-p", str(ssh.port), "alice@127.0.0.1", "sha256sum"]
    r = subprocess.run(args, input=data, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == hashlib.sha256(data.encode()).hexdigest()


def _read_until(fd: int, pattern: str, timeout: float = 30) -> str:
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if re.search(pattern, out.decode(errors="replace")):
                return out.decode(errors="replace")
    raise AssertionError(f"{pattern!r} not seen in {out!r}")


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def test_interactive_pty_with_terminal_type_size_and_resize(
    ssh: SSH, people: dict[str, Person], running: dict[str, Any]
) -> None:
    master, slave = pty.openpty()
    _set_size(slave, 33, 101)
    command = "echo TERM=$TERM; tty >/dev/null && echo has-tty; stty size; read line; stty size; exit 7"
    args = ["ssh", *ssh.options(people["alice"].key), "-tt", "-p", str(ssh.port), "alice@127.0.0.1", command]
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env={**os.environ, "TERM": "xterm-256color"})
    os.close(slave)
    try:
        first = _read_until(master, r"33 101")
        assert "TERM=xterm-256color" in first and "has-tty" in first
        _set_size(master, 40, 120)
        proc.send_signal(signal.SIGWINCH)
        time.sleep(0.5)
        os.write(master, b"go\r")
        _read_until(master, r"40 120")
        assert proc.wait(30) == 7
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_interactive_login_shell(hub: Hub, ssh: SSH, people: dict[str, Person], running: dict[str, Any]) -> None:
    master, slave = pty.openpty()
    _set_size(slave, 24, 80)
    args = ["ssh", *ssh.options(people["alice"].key), "-tt", "-p", str(ssh.port), "alice@127.0.0.1"]
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env={**os.environ, "TERM": "xterm"})
    os.close(slave)
    try:
        time.sleep(1)
        os.write(master, b"echo answer=$((6*7)) in=$PWD\r")
        out = _read_until(master, r"answer=42 in=\S+")
        assert f"in={hub.homes}/alice" in out  # the workspace's home, as in a JupyterLab terminal
        os.write(master, b"exit 5\r")
        assert proc.wait(30) == 5
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert audit_record(hub, "shell", "")["user"] == "alice"


def test_scp_both_ways_sftp_and_legacy_protocol(
    ssh: SSH, people: dict[str, Person], running: dict[str, Any], tmp_path: Path
) -> None:
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    base = ["scp", *ssh.options(people["alice"].key), "-P", str(ssh.port)]
    for flag, name in (([], "via-sftp.bin"), (["-O"], "via-scp.bin")):
        r = subprocess.run(
            [*base, *flag, str(src), f"alice@127.0.0.1:{name}"], capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, r.stderr
        back = tmp_path / f"back-{name}"
        r = subprocess.run(
            [*base, *flag, f"alice@127.0.0.1:{name}", str(back)], capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, r.stderr
        assert sha256(back) == sha256(src)
    r = ssh.ssh("alice", "sha256sum via-scp.bin via-sftp.bin", people["alice"].key)
    assert r.stdout.split()[::2] == [sha256(src), sha256(src)]


def test_sftp_batch(ssh: SSH, people: dict[str, Person], running: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello over sftp\n")
    batch = tmp_path / "batch"
    batch.write_text(
        f"-rm sftp-dir/notes.txt\n-rmdir sftp-dir\nmkdir sftp-dir\ncd sftp-dir\nput {tmp_path / 'notes.txt'}\n"
        f"ls -l\nget notes.txt {tmp_path / 'fetched.txt'}\n"
    )
    r = subprocess.run(
        ["sftp", *ssh.options(people["alice"].key), "-P", str(ssh.port), "-b", str(batch), "alice@127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "notes.txt" in r.stdout
    assert (tmp_path / "fetched.txt").read_text() == "hello over sftp\n"


def test_rsync_up_and_back(ssh: SSH, people: dict[str, Person], running: dict[str, Any], tmp_path: Path) -> None:
    src = tmp_path / "project"
    (src / "data").mkdir(parents=True)
    for i in range(20):
        (src / "data" / f"part{i}.bin").write_bytes(os.urandom(10_000 + i))
    (src / "train.py").write_text("print('train')\n")
    rsh = " ".join(["ssh", *ssh.options(people["alice"].key), "-p", str(ssh.port)])
    r = subprocess.run(
        ["rsync", "-a", "--delete", "-e", rsh, f"{src}/", "alice@127.0.0.1:project/"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    back = tmp_path / "back"
    r = subprocess.run(
        ["rsync", "-a", "-e", rsh, "alice@127.0.0.1:project/", f"{back}/"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (back / "data").iterdir()) == sorted(p.name for p in (src / "data").iterdir())
    assert all(sha256(p) == sha256(back / "data" / p.name) for p in (src / "data").iterdir())


def _serve_http(
    ssh: SSH, person: Person, login: str, port: int, text: str, bind: str = "127.0.0.1"
) -> subprocess.Popen[bytes]:
    """A tiny HTTP server inside the workspace, started over ssh (stopped by the test through its pid file)."""
    command = (
        f"d=$(mktemp -d) && cd $d && echo {text} > index.html && echo $$ > ~/http-{port}.pid"
        f" && exec timeout 300 python3 -m http.server {port} --bind {bind}"
    )
    args = ["ssh", *ssh.options(person.key), "-p", str(ssh.port), f"{login}@127.0.0.1", command]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


def _get_through(local: int, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return requests.get(f"http://127.0.0.1:{local}/", timeout=5).text
        except requests.RequestException as e:
            last = e
            time.sleep(0.3)
    raise AssertionError(f"nothing through the forward: {last}")


def test_local_forward_reaches_a_port_of_the_same_workspace_only(
    ssh: SSH, people: dict[str, Person], running: dict[str, Any]
) -> None:
    alice, bob = people["alice"], people["bob"]
    alice_port, bob_port = free_port(), free_port()
    servers = [
        _serve_http(ssh, alice, "alice", alice_port, "hello-from-alice"),
        _serve_http(ssh, bob, "bob", bob_port, "bobs-secret"),
    ]
    local = free_port()
    forward = subprocess.Popen(
        ["ssh", *ssh.options(alice.key), "-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{local}:localhost:{alice_port}",
         "-p", str(ssh.port), "alice@127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert "hello-from-alice" in _get_through(local)
        # wait until bob's server listens (bob reaches it himself), then alice may not
        bob_check = ssh.ssh(
            "bob",
            f"for i in $(seq 50); do curl -s localhost:{bob_port} && exit 0; python3 -c 'import time; time.sleep(0.2)'; done; exit 1",
            bob.key,
        )
        assert "bobs-secret" in bob_check.stdout, bob_check.stderr
        refused = ssh.ssh("alice", None, alice.key, "-W", f"localhost:{bob_port}", log="INFO")
        assert refused.returncode != 0
        assert f"Port {bob_port} belongs to another workspace" in refused.stderr
        outside = ssh.ssh("alice", None, alice.key, "-W", "10.1.2.3:22", log="INFO")
        assert outside.returncode != 0 and "only ports inside your workspace" in outside.stderr
        hub_port = int(ssh.hub.env["AIDC_HUB_PORT"])
        hub_itself = ssh.ssh("alice", None, alice.key, "-W", f"127.0.0.1:{hub_port}", log="INFO")
        assert hub_itself.returncode != 0 and "not part of alice's default server" in hub_itself.stderr
    finally:
        forward.terminate()
        forward.wait(10)
        for person, login, port, server in (
            (alice, "alice", alice_port, servers[0]),
            (bob, "bob", bob_port, servers[1]),
        ):
            ssh.ssh(login, f"kill $(cat ~/http-{port}.pid)", person.key)
            server.wait(30)
    assert audit_record(ssh.hub, "forward", f"localhost:{alice_port}")["bytes_out"] > 0


def test_a_port_of_another_workspace_stays_closed_when_the_other_loopback_has_my_listener(
    ssh: SSH, people: dict[str, Person], running: dict[str, Any]
) -> None:
    """Issue 13: bob serves on 127.0.0.1:P; alice listens on [::1]:P in her workspace and asks for
    127.0.0.1:P (or localhost:P). A connection to 127.0.0.1:P reaches bob's server, not hers, so
    the gateway refuses; her own [::1]:P stays reachable by that address."""
    alice, bob = people["alice"], people["bob"]
    port = free_port()
    bobs = _serve_http(ssh, bob, "bob", port, "bobs-secret")
    alices = _serve_http(ssh, alice, "alice", port, "alices-own-page", bind="::1")
    local = free_port()
    forward: subprocess.Popen[bytes] | None = None
    try:
        for person, login, url, text in (
            (bob, "bob", f"http://127.0.0.1:{port}/", "bobs-secret"),
            (alice, "alice", f"http://[::1]:{port}/", "alices-own-page"),
        ):
            # wait until both listen (each reaches their own)
            check = ssh.ssh(
                login,
                f"for i in $(seq 50); do curl -sg {url} && exit 0; python3 -c 'import time; time.sleep(0.2)'; done; exit 1",
                person.key,
            )
            assert text in check.stdout, check.stderr
        for asked in (f"127.0.0.1:{port}", f"localhost:{port}"):
            refused = subprocess.run(
                ["ssh", *ssh.options(alice.key, log="INFO"), "-p", str(ssh.port), "-W", asked, "alice@127.0.0.1"],
                input=b"GET / HTTP/1.0\r\n\r\n", capture_output=True, timeout=120,
            )  # fmt: skip
            assert refused.returncode != 0, asked
            assert f"Port {port} belongs to another workspace" in refused.stderr.decode(), refused.stderr
            assert b"bobs-secret" not in refused.stdout
        forward = subprocess.Popen(
            ["ssh", *ssh.options(alice.key), "-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{local}:[::1]:{port}",
             "-p", str(ssh.port), "alice@127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert "alices-own-page" in _get_through(local)
    finally:
        if forward is not None:
            forward.terminate()
            forward.wait(10)
        for person, login, server in ((alice, "alice", alices), (bob, "bob", bobs)):
            ssh.ssh(login, f"kill $(cat ~/http-{port}.pid)", person.key)
            server.wait(30)
    assert audit_record(ssh.hub, "forward", f"::1:{port}")["bytes_out"] > 0


VSCODE_SCRIPT = """
uname -rsv
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cd "$(mktemp -d)" && echo vscode-server-answers > index.html
nohup timeout 120 python3 -m http.server "$port" --bind 127.0.0.1 > /dev/null 2>&1 &
echo $! > ~/vscode-server.pid
echo "c0ffee: start listeningOn==$port== c0ffee: end"
"""


def test_vs_code_remote_ssh_flow_with_a_socks_forward(
    ssh: SSH, people: dict[str, Person], running: dict[str, Any]
) -> None:
    """What VS Code Remote-SSH does in its default local-server mode (the editor itself cannot be
    downloaded here): ``ssh -T -D <port> host bash`` with its install-and-start script on stdin,
    which starts the server on a free loopback port and prints the port between markers; the
    editor then talks to that port through the dynamic (SOCKS) forward, while the session stays open."""
    alice = people["alice"]
    socks = free_port()
    session = subprocess.Popen(
        ["ssh", *ssh.options(alice.key), "-T", "-D", f"127.0.0.1:{socks}", "-p", str(ssh.port), "alice@127.0.0.1",
         "bash"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert session.stdin is not None and session.stdout is not None
    try:
        session.stdin.write(VSCODE_SCRIPT)
        session.stdin.flush()
        uname = session.stdout.readline()
        assert uname.startswith("Linux "), uname
        marker = session.stdout.readline()
        found = re.search(r"listeningOn==(\d+)==", marker)
        assert found, marker
        port = int(found.group(1))
        deadline, answer = time.monotonic() + 30, ""
        while time.monotonic() < deadline and "vscode-server-answers" not in answer:
            r = subprocess.run(
                ["curl", "-s", "--max-time", "5", "--socks5-hostname", f"127.0.0.1:{socks}", f"http://127.0.0.1:{port}/"],
                capture_output=True, text=True,
            )  # fmt: skip
            answer = r.stdout
            if "vscode-server-answers" not in answer:
                time.sleep(0.3)
        assert "vscode-server-answers" in answer
        # the same SOCKS forward cannot be aimed outside the workspace
        outside = subprocess.run(
            ["curl", "-s", "--max-time", "5", "--socks5-hostname", f"127.0.0.1:{socks}", "http://10.1.2.3:22/"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert outside.returncode != 0
    finally:
        ssh.ssh("alice", "kill $(cat ~/vscode-server.pid)", alice.key)
        session.stdin.close()
        session.terminate()
        session.wait(30)
    assert audit_record(ssh.hub, "forward", f"127.0.0.1:{port}")["bytes_out"] > 0


def test_the_gateway_dials_only_the_hub_and_the_sshd_the_hub_names(
    hub: Hub, ssh: SSH, people: dict[str, Person], running: dict[str, Any]
) -> None:
    """Whatever the client asks (forwards, login names, environment naming other addresses), the
    gateway's own connections go to the hub, the proxy (for the quotas service) and the workspace
    sshd at the address that the spawner put in the server's state. A trap listening where the
    client points hears from nobody; bob's sshd is reached by nobody on alice's behalf."""
    alice = people["alice"]
    alice_sshd = sshd_address(server_state(hub, "alice"))
    bob_sshd = sshd_address(server_state(hub, "bob"))
    assert alice_sshd is not None and bob_sshd is not None
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen()
    trap.setblocking(False)
    trap_at = f"127.0.0.1:{trap.getsockname()[1]}"
    seen: set[tuple[str, int]] = set()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen.update(outbound(gateway_pids(hub), ssh.port))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        assert gateway_pids(hub)
        at_trap = ssh.ssh("alice", None, alice.key, "-W", trap_at, log="INFO")
        assert at_trap.returncode != 0 and "not part of alice's default server" in at_trap.stderr
        elsewhere = ssh.ssh("alice", None, alice.key, "-W", "127.0.0.9:2222", log="INFO")
        assert elsewhere.returncode != 0 and "only ports inside your workspace" in elsewhere.stderr
        at_bob = ssh.ssh("alice", None, alice.key, "-W", "{}:{}".format(*bob_sshd), log="INFO")
        assert at_bob.returncode != 0 and f"Port {bob_sshd[1]} belongs to another workspace" in at_bob.stderr
        named = ssh.ssh("alice.127.0.0.9", "true", alice.key)
        assert named.returncode != 0 and "alice has no server named '127.0.0.9'" in named.stderr
        env = ssh.ssh(
            "alice",
            "sleep 0.5; echo fine",
            alice.key,
            "-o",
            f"SetEnv=SSHD_HOST=127.0.0.1 SSHD_PORT={trap_at.split(':')[1]} SSH_CONNECTION={trap_at}",
        )
        assert env.returncode == 0 and env.stdout.strip() == "fine", env.stderr
    finally:
        stop.set()
        sampler.join()
    with pytest.raises(BlockingIOError):
        trap.accept()
    trap.close()
    assert alice_sshd in seen, seen  # the sampling sees the gateway's connections
    hub_api, proxy = ("127.0.0.1", hub.hub_port), ("127.0.0.1", hub.port)
    assert seen <= {alice_sshd, hub_api, proxy}, f"the gateway connected to {seen - {alice_sshd, hub_api, proxy}}"


def test_agent_x11_and_remote_forwarding_are_refused(
    ssh: SSH, people: dict[str, Person], running: dict[str, Any]
) -> None:
    r = ssh.ssh(
        "alice", None, people["alice"].key, "-N", "-o", "ExitOnForwardFailure=yes", "-R", f"{free_port()}:localhost:22"
    )
    assert r.returncode != 0 and "remote port forwarding failed" in r.stderr
    r = ssh.ssh("alice", "echo agent=${SSH_AUTH_SOCK:-none}", people["alice"].key, "-A", "-X")
    assert r.returncode == 0 and r.stdout.strip() == "agent=none"


def test_refusals_by_key_name_and_server(
    hub: Hub, ssh: SSH, people: dict[str, Person], running: dict[str, Any], tmp_path: Path
) -> None:
    alice = people["alice"]
    stranger = keygen(tmp_path / "stranger_ed25519")
    r = ssh.ssh("alice", "true", stranger, source="127.0.0.3")
    assert r.returncode == 255 and "Permission denied (publickey" in r.stderr
    r = ssh.ssh("bob", "true", alice.key, source="127.0.0.3")  # bob's name, alice's key
    assert r.returncode == 255 and "Permission denied" in r.stderr
    r = ssh.ssh("bob.gpu", "true", alice.key, source="127.0.0.3")  # a named server of bob's, alice's key
    assert r.returncode == 255 and "Permission denied" in r.stderr
    r = ssh.ssh("alice.other", "true", alice.key)  # a server alice does not have
    assert r.returncode == 1
    assert "alice has no server named 'other'" in r.stderr and "/hub/home" in r.stderr


def test_a_revoked_key_is_refused_at_the_next_connection(
    ssh: SSH, people: dict[str, Person], running: dict[str, Any], tmp_path: Path
) -> None:
    alice = people["alice"].client
    second = keygen(tmp_path / "desktop_ed25519")
    key_id = register(alice, second, "desktop")
    assert ssh.ssh("alice", "echo in", second).stdout.strip() == "in"
    r = requests.delete(
        f"{alice.hub.url}/services/quotas/api/ssh-keys/{key_id}",
        headers={"Authorization": f"token {alice.token}"},
        timeout=30,
    )
    assert r.status_code == 204
    r = ssh.ssh("alice", "echo in", second, source="127.0.0.4")
    assert r.returncode == 255 and "Permission denied" in r.stderr


def test_token_as_password(ssh: SSH, people: dict[str, Person], running: dict[str, Any]) -> None:
    alice, bob = people["alice"].client, people["bob"].client
    ok = ssh.with_password("alice", "echo token-ok", alice.token)
    assert ok.returncode == 0 and ok.stdout.strip() == "token-ok", ok.stderr
    wrong = ssh.with_password("alice", "echo in", "0" * 32, source="127.0.0.5")
    assert wrong.returncode == 255 and "Permission denied" in wrong.stderr
    others = ssh.with_password("alice", "echo in", bob.token, source="127.0.0.5")  # bob's valid token, alice's name
    assert others.returncode == 255 and "Permission denied" in others.stderr


def test_brute_force_is_slowed_then_refused(ssh: SSH, people: dict[str, Person], running: dict[str, Any]) -> None:
    carol_token = people["alice"].client.hub.login("carol", PASSWORDS["carol"]).token
    t0 = time.monotonic()
    for i in range(MAX_FAILURES):
        r = ssh.with_password("carol", "true", f"wrong-{i}", source="127.0.0.2")
        assert r.returncode == 255 and "Permission denied" in r.stderr
    elapsed = time.monotonic() - t0
    expected = sum(DELAY * 2**k for k in range(MAX_FAILURES - 1))  # 0 + 0.5 + 1 + 2
    print(f"\n{MAX_FAILURES} wrong passwords took {elapsed:.2f}s (at least {expected:.2f}s of delays)")
    assert elapsed >= expected
    # now even the right token is refused from that address, with the reason
    r = ssh.with_password("carol", "true", carol_token, source="127.0.0.2")
    assert r.returncode == 255 and "Too many failed logins from 127.0.0.2" in r.stderr
    # other addresses are not refused (carol is only delayed there)
    # from elsewhere carol gets in (after her own delay); she never started a server, which she is told
    r = ssh.with_password("carol", "echo fine", carol_token, source="127.0.0.6")
    assert "Too many failed logins" not in r.stderr
    assert r.returncode == 1 and "carol's default server has never been started" in r.stderr
    assert "/hub/spawn/carol" in r.stderr


def test_a_stopped_named_server_is_started_by_ssh(
    hub: Hub, ssh: SSH, people: dict[str, Person], running: dict[str, Any]
) -> None:
    alice = people["alice"].client
    assert alice.spawn("work", tenant="lab", profile="cpu").status_code in (201, 202)
    alice.wait_ready("work")
    alice.stop_server("work")
    t0 = time.monotonic()
    r = ssh.ssh(
        "alice.work", "echo server=$JUPYTERHUB_SERVER_NAME profile=$AIDC_PROFILE", people["alice"].key, timeout=180
    )
    print(f"\nssh started a stopped server and ran a command in {time.monotonic() - t0:.1f}s")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "server=work profile=cpu"
    assert "Starting alice's server 'work' (profile cpu)" in r.stderr
    model = alice.api("GET", "/users/alice").json()["servers"]["work"]
    assert model["ready"]
    alice.stop_server("work")


def test_a_start_refused_by_the_quota_prints_the_reason(
    hub: Hub, ssh: SSH, people: dict[str, Person], running: dict[str, Any]
) -> None:
    alice = people["alice"].client
    kim = hub.login("kim", PASSWORDS["kim"])  # lab's tenant admin
    assert alice.spawn("big", tenant="lab", profile="h100-x2").status_code in (201, 202)
    alice.wait_ready("big")
    alice.stop_server("big")
    limit = f"{hub.url}/services/quotas/api/tenants/lab/limits/users/alice"
    r = requests.put(limit, headers={"Authorization": f"token {kim.token}"}, json={"gpus": {"H100": 1}}, timeout=30)
    assert r.status_code == 200, r.text
    try:
        r = ssh.ssh("alice.big", "echo started", people["alice"].key, timeout=120)
        print(f"\nwhat the person sees:\n{r.stderr}")
        assert r.returncode == 1 and "started" not in r.stdout
        assert "Starting alice's server 'big' (profile h100-x2)" in r.stderr
        assert "The hub did not start alice's server 'big'" in r.stderr and "H100" in r.stderr
        assert not alice.api("GET", "/users/alice").json()["servers"].get("big", {}).get("ready")
    finally:
        requests.delete(limit, headers={"Authorization": f"token {kim.token}"}, timeout=30)


def test_host_key_is_kept_across_a_restart(hub: Hub, ssh: SSH, people: dict[str, Person]) -> None:
    def scan() -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["ssh-keyscan", "-t", "ed25519", "-p", str(ssh.port), "127.0.0.1"], capture_output=True, text=True
            ).stdout
            if out.strip():
                return out.split(None, 1)[1]
            time.sleep(0.5)
        raise AssertionError("the gateway does not answer")

    before = scan()
    hub.stop()
    _wait_port_closed(ssh.port)
    hub.start()
    assert scan() == before
    assert oct((hub.data_dir / "ssh_host_ed25519_key").stat().st_mode & 0o777) == "0o600"


def _wait_port_closed(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"port {port} still open after the hub stopped")


# --- several gateway processes (SSHGateway.workers) -----------------------------------------------


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _alive(pid: int) -> bool:
    """Running: not gone, not a zombie waiting for its parent."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _children(pid: int) -> set[int]:
    return {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(int(p.name)) == pid}


def _gateway_tree(hub: Hub) -> tuple[int, set[int]]:
    """The hub's gateway process and its workers."""
    pids = set(gateway_pids(hub))
    top = [pid for pid in pids if _ppid(pid) not in pids]
    assert len(top) == 1, f"gateway processes: {pids}"
    return top[0], {pid for pid in pids if _ppid(pid) == top[0]}


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _serves(port: int) -> bool:
    scan = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(port), "127.0.0.1"], capture_output=True, text=True
    )
    return bool(scan.stdout.strip())


@pytest.fixture(scope="module")
def carol_key(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """carol's registered key. She never started a server: each session of hers is refused at once,
    which the gateway audits (the workspace plays no part)."""
    key = keygen(tmp_path_factory.mktemp("carol") / "carol_ed25519")
    register(hub.login("carol", PASSWORDS["carol"]), key)
    return key


def _carol_runs(ssh: SSH, key: Path, command: str) -> None:
    r = ssh.ssh("carol", command, key)
    assert r.returncode == 1 and "carol's default server has never been started" in r.stderr, r.stderr


def test_connections_are_served_by_every_worker(hub: Hub, ssh: SSH, carol_key: Path) -> None:
    parent, workers = _gateway_tree(hub)
    assert len(workers) == WORKERS
    _carol_runs(ssh, carol_key, "echo first")
    served: set[int] = set()
    for batch in range(10):  # connections at once: an idle worker takes the next one
        commands = [f"echo spread-{batch}-{i}" for i in range(4)]
        with ThreadPoolExecutor(len(commands)) as pool:
            list(pool.map(lambda command: _carol_runs(ssh, carol_key, command), commands))
        served |= {audit_record(hub, "exec", command)["gateway"] for command in commands}
        if served == workers:
            break
    print(f"\n{4 * (batch + 1)} connections, served by the workers {sorted(served)} of gateway {parent}")
    assert served == workers


def test_failures_counted_by_one_worker_slow_down_and_refuse_in_the_other(hub: Hub, ssh: SSH) -> None:
    """One worker is stopped (SIGSTOP) while the other takes the first failures, then the other way
    round: the second worker waits as long as the shared counts say, and refuses at the limit."""
    first, second = sorted(_gateway_tree(hub)[1])
    source, token = "127.0.0.7", hub.login("dave", PASSWORDS["dave"]).token

    def wrong(i: int) -> None:
        r = ssh.with_password("dave", "true", f"wrong-{i}", source=source)
        assert r.returncode == 255 and "Permission denied" in r.stderr, r.stderr

    os.kill(second, signal.SIGSTOP)
    try:
        wrong(0)
        wrong(1)
    finally:
        os.kill(second, signal.SIGCONT)
    os.kill(first, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        for i in range(2, MAX_FAILURES):
            wrong(i)
        elapsed = time.monotonic() - t0
        expected = sum(DELAY * 2 ** (k - 1) for k in range(2, MAX_FAILURES))  # 1 + 2; on its own counts 0 + 0.5
        print(f"\nthe second worker's {MAX_FAILURES - 2} failures took {elapsed:.2f}s (at least {expected:.2f}s)")
        assert elapsed >= expected
        r = ssh.with_password("dave", "true", token, source=source)
        assert r.returncode == 255 and f"Too many failed logins from {source}" in r.stderr, r.stderr
    finally:
        os.kill(first, signal.SIGCONT)


def test_a_killed_worker_is_started_again_and_the_port_keeps_serving(hub: Hub, ssh: SSH, carol_key: Path) -> None:
    parent, workers = _gateway_tree(hub)
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    for i in range(3):  # at once, and while the parent starts another worker
        _carol_runs(ssh, carol_key, f"echo after-kill-{i}")

    def replaced() -> bool:
        now = _gateway_tree(hub)
        return now[0] == parent and len(now[1]) == WORKERS and victim not in now[1]

    _wait_for(replaced, f"the gateway did not start a worker in place of {victim}")
    assert f"(pid {victim}) was killed by SIGKILL" in hub.log_tail(300)
    _carol_runs(ssh, carol_key, "echo after-restart")


def test_sigterm_stops_the_gateway_and_all_its_workers(hub: Hub, ssh: SSH) -> None:
    parent, workers = _gateway_tree(hub)
    os.kill(parent, signal.SIGTERM)
    _wait_for(lambda: not any(_alive(pid) for pid in (parent, *workers)), "the gateway or a worker is still running")
    assert "Stopping the SSH gateway's workers (SIGTERM)" in hub.log_tail(300)
    # the hub starts its service again (JupyterHub restarts a managed service that exits)
    _wait_for(lambda: _serves(ssh.port), "the hub did not start its gateway again", timeout=90)
    assert len(_gateway_tree(hub)[1]) == WORKERS


def test_workers_stop_when_their_gateway_is_killed(tmp_path: Path) -> None:
    """A gateway killed at once (SIGKILL: it cannot stop them) leaves no worker behind."""
    port = free_port()
    env = {**os.environ, "JUPYTERHUB_API_TOKEN": "unused", "AIDC_DATA_DIR": str(tmp_path)}
    env.pop("AIDC_HUB_PID", None)
    args = [sys.executable, "-m", "sshgateway", f"--port={port}", f"--SSHGateway.workers={WORKERS}"]
    with open(tmp_path / "gateway.log", "wb") as log:
        proc = subprocess.Popen(args, cwd=Path(__file__).resolve().parents[2], env=env, stdout=log, stderr=log)
    try:
        _wait_for(lambda: len(_children(proc.pid)) == WORKERS and _serves(port), "the gateway did not start")
        workers = _children(proc.pid)
        proc.kill()
        proc.wait(10)
        _wait_for(lambda: not any(_alive(pid) for pid in workers), f"workers {workers} outlived their gateway", 10)
        assert not _serves(port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert f"with {WORKERS} workers" in (tmp_path / "gateway.log").read_text()
