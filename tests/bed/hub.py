"""A real AIDC Hub for the `hub` and `browser` tiers.

Starts ``jupyterhub -f hub_config/jupyterhub_config.py`` (the production config)
with configurable-http-proxy from ``node_modules``, in a private data directory
on free loopback ports (the environment variables of `make up`), with any other
setting as traits on the command line (``traits={"Spawner.poll_interval": 2}``),
and drives it as people do: the login form, then the REST API with a token that
the logged-in user creates.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from authenticators.local import AccountStore
from spawner.accounts import MARK, account_name

REPO = Path(__file__).resolve().parents[2]
CHP = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
# The tiers' tenants: `lab` (alice, bob, carol; admin kim; 4 H100) and `startup` (dave; admin erin).
TENANTS = REPO / "tests" / "hub" / "tenants.yaml"
# Workspaces run as each person's Unix account (jupyter-alice): their homes must be reachable
HOMES_ROOT = Path(tempfile.gettempdir()) / "aidc-test-homes"
PASSWORDS = {name: f"{name}-password-1" for name in ("admin", "alice", "bob", "carol", "dave", "erin", "kim", "zed")}


@contextmanager
def running_hub(workdir: Path, **kwargs: Any) -> Iterator[Hub]:
    """A started hub with the tiers' tenants, accounts and H100:4, A100:2; stopped afterwards."""
    with Hub(workdir, accounts=PASSWORDS, fake_gpus="H100:4,A100:2", tenants=TENANTS, **kwargs).running() as hub:
        yield hub


def stop_all_servers(clients: Iterable[Client]) -> None:
    for client in clients:
        for server in list(client.api("GET", f"/users/{client.name}").json()["servers"]):
            client.stop_server(server)


def progress_until(client: Client, server: str, words: str, timeout: float = 60) -> str:
    """Follow the spawn's progress events until one has ``words``; its message."""
    path = f"/users/{client.name}/servers/{server}/progress" if server else f"/users/{client.name}/server/progress"
    deadline = time.monotonic() + timeout
    seen = []
    with client.api("GET", path, stream=True) as events:
        for line in events.iter_lines():
            if line.startswith(b"data:"):
                message = str(json.loads(line[5:]).get("message", ""))
                seen.append(message)
                if words in message:
                    return message
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"no progress event with {words!r}: {seen}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trait_args(traits: dict[str, Any]) -> list[str]:
    """``{"Spawner.poll_interval": 2, "A.groups": {"x"}}`` as JupyterHub's command line:
    ``["--Spawner.poll_interval=2", "--A.groups=x"]`` (a list or set: one argument per item)."""
    args = []
    for name, value in traits.items():
        items = sorted(value) if isinstance(value, set) else value if isinstance(value, list) else [value]
        args += [f"--{name}={item}" for item in items]
    return args


class Hub:
    """One hub process (restartable) with its data directory."""

    config_file = REPO / "hub_config" / "jupyterhub_config.py"

    def __init__(
        self,
        workdir: Path,
        accounts: dict[str, str],
        fake_gpus: str = "H100:4,A100:2",
        tenants: Path | None = None,
        env: dict[str, str] | None = None,
        traits: dict[str, Any] | None = None,
    ):
        if not CHP.exists():
            raise RuntimeError(f"{CHP} is missing: run `make setup` (npm ci) first")
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port, self.hub_port, self.api_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "AIDC_DATA_DIR": str(self.data_dir),
            "AIDC_FAKE_GPUS": fake_gpus,
            "AIDC_BIND_URL": self.url,
            "AIDC_HUB_PORT": str(self.hub_port),
            "AIDC_PROXY_API_PORT": str(self.api_port),
            "AIDC_QUOTAS_PORT": str(free_port()),
            "AIDC_SSH_PORT": str(free_port()),
            **(env or {}),
        }
        if tenants is not None:
            self.env["AIDC_TENANTS"] = str(tenants)
        # settings of the hub beyond those: traits, given on its command line
        self.traits = dict(traits or {})
        # the homes, outside pytest's folders (0700: the people's accounts could not reach them)
        HOMES_ROOT.mkdir(mode=0o711, exist_ok=True)
        self.homes = Path(tempfile.mkdtemp(prefix="hub-", dir=HOMES_ROOT))
        self.homes.chmod(0o711)
        self.traits.setdefault("TenantLocalSpawner.home_dir_template", f"{self.homes}/{{username}}")
        # accounts of this hub's own (their /etc/passwd home is this hub's): t<6 hex>-alice
        self.account_template = self.traits.setdefault(
            "TenantLocalSpawner.account_template", f"t{uuid.uuid4().hex[:6]}-{{username}}"
        )
        store = AccountStore(self.data_dir / "accounts.json")
        for name, password in accounts.items():
            store.add(name, password, admin=name == "admin")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "hub.log"
        self.starts = 0

    @contextmanager
    def running(self) -> Iterator[Hub]:
        """Started for the ``with`` block, stopped (gracefully) after it."""
        self.start()
        try:
            yield self
        finally:
            self.stop()
            self.remove_accounts()
            shutil.rmtree(self.homes, ignore_errors=True)

    def start(self, timeout: float = 60) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== hub start {self.starts} =====\n".encode())
            log.flush()
            self.proc = self._popen(log)
        try:
            self._wait_up(timeout)
        except BaseException:
            self._kill_everything()  # a hub that failed to start may have started its proxy already
            raise

    def _kill_everything(self) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self._stop_proxy()

    def _popen(self, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(self.config_file), *trait_args(self.traits)],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _wait_up(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the hub exited with {self.proc.returncode}; log:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/hub/api", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the hub did not answer within {timeout}s; log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the hub process alone: proxy and workspaces keep running, as in a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """Graceful stop: the hub stops its workspaces and its proxy."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._stop_proxy()

    def account(self, name: str) -> str:
        """The Unix account this hub runs ``name``'s workspaces as."""
        return account_name(name, self.account_template)

    def remove_accounts(self) -> None:
        """Remove the Unix accounts this hub made (best effort: one that still runs something stays)."""
        prefix = self.account_template.split("{", 1)[0]
        for entry in pwd.getpwall():
            if prefix and entry.pw_name.startswith(prefix) and entry.pw_gecos.startswith(MARK):
                subprocess.run(["userdel", entry.pw_name], capture_output=True, timeout=60)

    def _stop_proxy(self) -> None:
        pid_file = self.data_dir / "proxy.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass

    def login(self, name: str, password: str) -> Client:
        return Client(self, name, password)


class Client:
    """A person logged in through the login form, with an API token they created."""

    def __init__(self, hub: Hub, name: str, password: str):
        self.hub, self.name = hub, name
        self.session = requests.Session()
        self.session.get(f"{hub.url}/hub/login")
        r = self.session.post(
            f"{hub.url}/hub/login",
            data={"username": name, "password": password, "_xsrf": self._xsrf()},
            allow_redirects=False,
        )
        if r.status_code != 302:
            raise LoginFailed(r.status_code, r.text)
        self.session.get(f"{hub.url}/hub/home")
        r = self.session.post(
            f"{hub.url}/hub/api/users/{name}/tokens",
            headers={"X-XSRFToken": self._xsrf()},
            json={"note": "tests", "expires_in": 3600},
        )
        r.raise_for_status()
        self.token = r.json()["token"]

    def _xsrf(self) -> str:
        return next(str(c.value) for c in reversed(list(self.session.cookies)) if c.name == "_xsrf")

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"token {self.token}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.hub.url}/hub/api{path}", headers=headers, timeout=120, **kwargs)

    def spawn(self, server: str = "", **options: str) -> requests.Response:
        path = f"/users/{self.name}/servers/{server}" if server else f"/users/{self.name}/server"
        return self.api("POST", path, json=options)

    def wait_ready(self, server: str = "", timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.api("GET", f"/users/{self.name}").json()
            srv = model["servers"].get(server)
            if srv and srv["ready"]:
                return srv
            if srv is None and time.monotonic() > deadline - timeout + 5:
                raise AssertionError(f"{self.name}/{server} is not starting; hub log:\n{self.hub.log_tail()}")
            time.sleep(0.5)
        raise AssertionError(f"{self.name}/{server} was not ready in {timeout}s; hub log:\n{self.hub.log_tail()}")

    def spawn_failure(self, server: str = "", **options: str) -> str:
        """Spawn, expecting a failure; its message, from the answer or (202) from the progress events."""
        r = self.spawn(server, **options)
        # JupyterHub may answer 201 to a spawn that is still pending after slow_spawn_timeout
        if r.status_code in (201, 202):
            path = f"/users/{self.name}/servers/{server}/progress" if server else f"/users/{self.name}/server/progress"
            with self.api("GET", path, stream=True) as events:
                for line in events.iter_lines():
                    if line.startswith(b"data:"):
                        event = json.loads(line[5:])
                        assert not event.get("ready"), "the server started"
                        if event.get("failed"):
                            return str(event["message"])
            raise AssertionError("no failure event")
        assert r.status_code >= 400, f"{r.status_code}: {r.text}"
        return str(r.json()["message"])

    def wait_settled(self, timeout: float = 90) -> None:
        """Until no server is starting or stopping (this client needs the admin's view of all users)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            users = self.api("GET", "/users?state=active").json()
            if not any(s["pending"] for u in users for s in u["servers"].values()):
                return
            time.sleep(0.3)
        raise AssertionError("servers still pending after the restart")

    def stop_server(self, server: str = "") -> None:
        path = f"/users/{self.name}/servers/{server}" if server else f"/users/{self.name}/server"
        r = self.api("DELETE", path)
        assert r.status_code in (202, 204), r.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if server not in self.api("GET", f"/users/{self.name}").json()["servers"]:
                return
            time.sleep(0.5)
        raise AssertionError(f"{self.name}/{server} did not stop")

    def run_in_kernel(self, server_url: str, code: str) -> str:
        """Start a kernel in the workspace (through the proxy), run ``code``, return its stdout."""
        return asyncio.run(_run_in_kernel(self.hub.url, server_url, self.token, code))


class LoginFailed(AssertionError):
    def __init__(self, status: int, body: str):
        super().__init__(f"login failed with {status}")
        self.status, self.body = status, body


async def _run_in_kernel(base: str, server_url: str, token: str, code: str) -> str:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    headers = {"Authorization": f"token {token}"}
    api = f"{base}{server_url}api"
    r = requests.post(f"{api}/kernels", headers=headers, json={"name": "python3"}, timeout=60)
    r.raise_for_status()
    kernel = r.json()["id"]
    try:
        ws_url = f"{api}/kernels/{kernel}/channels".replace("http://", "ws://")
        conn = await websocket_connect(HTTPRequest(ws_url, headers=headers, connect_timeout=30))
        msg_id = uuid.uuid4().hex
        conn.write_message(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "username": "",
                        "session": uuid.uuid4().hex,
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                    },
                    "channel": "shell",
                }
            )
        )
        out: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            raw = await asyncio.wait_for(conn.read_message(), timeout=60)
            if raw is None:
                break
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                out.append(msg["content"]["text"])
            elif kind == "error":
                raise AssertionError("kernel error: " + "\n".join(msg["content"]["traceback"]))
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                break
        conn.close()
        return "".join(out)
    finally:
        requests.delete(f"{api}/kernels/{kernel}", headers=headers, timeout=30)
