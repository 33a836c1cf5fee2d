"""Dex, a real OpenID Connect provider, for the OIDC tests (`hub` and `browser` tiers).

:func:`dex_binary` builds Dex from the Go module proxy once (``tests/bed/dex/build.sh``, cached
under ``~/.cache/aidc/dex/``); :class:`Dex` runs it on loopback with memory storage, a static
client for the hub and static users with groups (Dex's ``staticPasswords`` carry ``groups``), and
rewrites its config and restarts it to change someone's groups. :class:`TamperingFront` is an
attacker in the middle between the hub and Dex: it forwards every request and may replace the
ID token of the token endpoint's answer. Anything that cannot be built or started raises.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import bcrypt
import requests
import yaml

from tests.bed.hub import TENANTS, Client, Hub, LoginFailed, free_port

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "tests" / "bed" / "dex" / "build.sh"
CLIENT_ID = "aidc-hub"
CLIENT_SECRET = "aidc-hub-test-secret"


def dex_binary() -> Path:
    """Path of the ``dex`` binary, built on first use (a few minutes) and cached; raises if it cannot be."""
    proc = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"Building Dex with {BUILD} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    binary = Path(proc.stdout.strip().splitlines()[-1]) / "dex"
    if not binary.is_file():
        raise RuntimeError(f"{BUILD} reported {binary}, which does not exist")
    return binary


@dataclass
class DexUser:
    """A static user: logs in with ``email`` and ``password``; ``username`` is ``preferred_username``."""

    username: str
    groups: list[str] = field(default_factory=list)
    email_verified: bool = True
    email: str = ""
    user_id: str = ""

    def __post_init__(self) -> None:
        self.email = self.email or f"{self.username}@example.org"
        self.user_id = self.user_id or f"id-{self.username}"

    @property
    def password(self) -> str:
        return f"{self.username}-dex-password"


_HASHES: dict[str, str] = {}


def _hash(password: str) -> str:
    # Dex accepts bcrypt of cost 10 or more; hashed once per password and process (~60 ms each)
    if password not in _HASHES:
        _HASHES[password] = bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()
    return _HASHES[password]


class Dex:
    """One Dex process on 127.0.0.1 with memory storage (restartable; signing keys change at each start)."""

    def __init__(self, workdir: Path, users: list[DexUser], redirect_uris: list[str], issuer_port: int | None = None):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binary = dex_binary()
        self.port = free_port()
        # with a front (TamperingFront) the issuer is the front's address, which forwards to self.port
        self.issuer = f"http://127.0.0.1:{issuer_port or self.port}/dex"
        self.local_url = f"http://127.0.0.1:{self.port}/dex"
        self.users = list(users)
        self.redirect_uris = list(redirect_uris)
        self.config_path = workdir / "dex.yaml"
        self.log_path = workdir / "dex.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "storage": {"type": "memory"},
            "web": {"http": f"127.0.0.1:{self.port}"},
            "logger": {"level": "info"},
            "oauth2": {"skipApprovalScreen": True, "passwordConnector": "local"},
            "enablePasswordDB": True,
            "staticClients": [
                {"id": CLIENT_ID, "secret": CLIENT_SECRET, "name": "AIDC Hub", "redirectURIs": self.redirect_uris}
            ],
            "staticPasswords": [
                {
                    "email": u.email,
                    "hash": _hash(u.password),
                    "username": u.username,
                    "preferredUsername": u.username,
                    "userID": u.user_id,
                    "groups": u.groups,
                    "emailVerified": u.email_verified,
                }
                for u in self.users
            ],
        }

    def start(self, timeout: float = 30) -> Dex:
        # JSON is YAML: Dex reads it as its config file
        self.config_path.write_text(json.dumps(self.config(), indent=1))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), "serve", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Dex exited with {self.proc.returncode}; log:\n{self.log_tail()}")
            try:
                r = requests.get(f"{self.local_url}/.well-known/openid-configuration", timeout=2)
                if r.status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"Dex did not answer within {timeout}s; log:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def restart(self, users: list[DexUser] | None = None) -> None:
        """Rewrite the config (e.g. someone's groups changed at the provider) and restart Dex."""
        if users is not None:
            self.users = list(users)
        self.stop()
        self.start()

    def user(self, username: str) -> DexUser:
        return next(u for u in self.users if u.username == username)

    def password_grant(self, username: str, scope: str = "openid profile email groups") -> dict[str, Any]:
        """Tokens for a user straight from the token endpoint (Dex's resource-owner password grant)."""
        u = self.user(username)
        r = requests.post(
            f"{self.local_url}/token",
            data={"grant_type": "password", "username": u.email, "password": u.password, "scope": scope},
            auth=(CLIENT_ID, CLIENT_SECRET),
            timeout=10,
        )
        r.raise_for_status()
        token: dict[str, Any] = r.json()
        return token

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def running_dex(workdir: Path, users: list[DexUser], redirect_uris: list[str], **kwargs: Any) -> Iterator[Dex]:
    dex = Dex(workdir, users, redirect_uris, **kwargs)
    dex.start()
    try:
        yield dex
    finally:
        dex.stop()


class TamperingFront:
    """An HTTP forwarder on 127.0.0.1 in front of Dex (the issuer's address), playing an attacker
    on the path between the hub and its provider: ``tamper_token``, when set, rewrites the JSON
    answer of the token endpoint (e.g. swaps the ID token for a forged one)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.target_port: int | None = None
        self.tamper_token: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._forward()

            def do_POST(self) -> None:
                self._forward()

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                assert front.target_port is not None, "TamperingFront.target_port is not set"
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                conn = http.client.HTTPConnection("127.0.0.1", front.target_port, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    out_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in ("content-length",)]
                    status = resp.status
                finally:
                    conn.close()
                tamper = front.tamper_token
                if tamper and self.command == "POST" and urlsplit(self.path).path.endswith("/token") and status == 200:
                    data = json.dumps(tamper(json.loads(data))).encode()
                self.send_response(status)
                for k, v in out_headers:
                    if k.lower() not in ("transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self, target_port: int) -> TamperingFront:
        self.target_port = target_port
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------------------
# Logging in to a hub through Dex without a browser (the `hub` tier), as a browser would.


def provider_callback(session: requests.Session, hub_url: str, user: DexUser) -> str:
    """Start the hub's login, submit ``user``'s password on Dex's login form, and return the
    hub callback URL (with ``code`` and ``state``) that Dex sends the browser back to."""
    r = session.get(f"{hub_url}/hub/oauth_login", timeout=30)
    r.raise_for_status()
    if 'name="login"' not in r.text:
        raise AssertionError(f"expected Dex's login form at {r.url}, got {r.status_code}:\n{r.text[:2000]}")
    r = session.post(r.url, data={"login": user.email, "password": user.password}, allow_redirects=False, timeout=30)
    for _ in range(5):
        if r.status_code not in (302, 303):
            raise AssertionError(f"Dex answered {r.status_code} to {user.username}'s login:\n{r.text[:2000]}")
        location = requests.compat.urljoin(r.url, r.headers["Location"])
        if location.startswith(f"{hub_url}/hub/oauth_callback"):
            return location
        r = session.get(location, allow_redirects=False, timeout=30)
    raise AssertionError(f"Dex never sent {user.username} back to the hub (last: {r.status_code} {r.url})")


def oidc_login(hub_url: str, user: DexUser) -> tuple[requests.Session, requests.Response]:
    """The whole login of ``user``; returns the session and the hub callback's answer (not followed)."""
    session = requests.Session()
    callback = provider_callback(session, hub_url, user)
    return session, session.get(callback, allow_redirects=False, timeout=60)


class OIDCClient(Client):
    """A person logged in through Dex, with an API token they created (as :class:`Client`)."""

    def __init__(self, hub: Hub, user: DexUser, name: str | None = None):
        self.hub, self.name = hub, name or user.username
        self.session, r = oidc_login(hub.url, user)
        if r.status_code != 302:
            raise LoginFailed(r.status_code, r.text)
        self.session.get(f"{hub.url}/hub/home", timeout=30)
        r = self.session.post(
            f"{hub.url}/hub/api/users/{self.name}/tokens",
            headers={"X-XSRFToken": self._xsrf()},
            json={"note": "tests", "expires_in": 3600},
            timeout=30,
        )
        r.raise_for_status()
        self.token = r.json()["token"]


def oidc_tenants(workdir: Path) -> Path:
    """The tiers' tenants (tests/hub/tenants.yaml: `lab`, `startup`) for OIDC: `lab` by the
    convention (groups lab, lab-admins), `startup` with an explicit mapping (group startup-staff;
    admins by the convention, startup-admins)."""
    data = yaml.safe_load(TENANTS.read_text())
    for tenant in data["tenants"]:
        if tenant["id"] == "startup":
            tenant["oidc"] = {"groups": ["startup-staff"]}
    path = workdir / "oidc-tenants.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def oidc_env() -> dict[str, str]:
    """The hub's environment for OIDC login through the test Dex: the login method and the secret."""
    return {"AIDC_AUTH": "oidc", "AIDC_OIDC_CLIENT_SECRET": CLIENT_SECRET}


def oidc_traits(dex_issuer: str, **extra: Any) -> dict[str, Any]:
    """The hub's OIDCAuthenticator settings for the test Dex (``Hub(traits=...)``); ``extra``:
    more OIDCAuthenticator traits by name, e.g. ``username_claim="email"``."""
    return {
        "OIDCAuthenticator.issuer": dex_issuer,
        "OIDCAuthenticator.client_id": CLIENT_ID,
        "OIDCAuthenticator.platform_admin_groups": {"aidc-operators"},
        "OIDCAuthenticator.contact": "the AIDC support desk (support@aidc.example.org)",
        **{f"OIDCAuthenticator.{name}": value for name, value in extra.items()},
    }
