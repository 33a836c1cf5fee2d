"""``python -m sshgateway``: the SSH gateway, a JupyterHub service named ``sshgateway``.

People connect with a stock OpenSSH client (``ssh -p 2222 alice@hub``, ``alice.gpu@hub`` for the
named server ``gpu``). The gateway

1. authenticates them by a public key registered on the quotas service (``api/ssh-keys/lookup``),
   or, when ``allow_token_password`` is on, by a JupyterHub API token given as password; the key's
   or token's owner must be the user the login name names. Nothing positive is cached beyond one
   connection, so a revoked key or token is refused at the next connection. Failures are slowed
   down per source and per user (:mod:`sshgateway.ratelimit`);
2. finds the workspace through the hub's REST API, starts it if it is stopped (with the options it
   last started with, printing the hub's progress on the session's stderr; a refusal, such as the
   tenant's quota, is printed and the session exits with status 1);
3. connects over plain TCP to the workspace's sshd, at the address the hub's spawner keeps in the
   server's state (the pod's IP and sshd port on Kubernetes, a loopback port in the embedded mode),
   authenticated with the per-server key of :mod:`sshgateway.workspace_keys` and accepting only the
   per-server host key (:mod:`sshgateway.workspace`);
4. bridges every session (shell with PTY, exec, sftp/scp/rsync) and local forwards to ports of that
   workspace (:mod:`sshgateway.bridge`); agent, X11 and remote forwarding are refused;
5. writes one audit record per session (:mod:`sshgateway.audit`).

Everything it tells a person is said in their language, the one they chose on the hub (the quotas
service answers it with their key's owner), English when they never chose, and English followed
by Korean before it knows who they are (:mod:`sshgateway.speech`).
"""

from __future__ import annotations

import asyncio
import getpass
import itertools
import os
import pwd
import secrets
import socket
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncssh
from traitlets import Bool, Float, Integer, Unicode, default

from i18n import _, choose
from quotas import paths
from services.lifecycle import HUB_PID_VARIABLE, ServiceApp, hub_is_gone, hub_pid

from . import speech, workspace_keys
from .audit import AuditLog, SessionRecord
from .bridge import ForwardBridge, Refusal, SessionBridge
from .fastpath import skip_ignore_padding
from .hubapi import HubClient, HubRefused, Person
from .procnet import account_of, landing_sockets, loopback_address, with_workspaces
from .ratelimit import AuthThrottle
from .routing import (
    LOOPBACK_HOSTS,
    Target,
    accounts_isolated,
    forward_refusal,
    plan_for,
    sshd_address,
    target_for_login,
)
from .workers import Supervisor, bind, usable_cpus

SERVICE_NAME = "sshgateway"

# AES-GCM first and ChaCha20-Poly1305 not offered: OpenSSH clients prefer ChaCha20, which the gateway
# (asyncssh on OpenSSL) decrypts at about half the speed of AES-GCM (AES-NI); scp through the
# gateway is twice as fast this way. Every OpenSSH since 6.2 speaks AES-GCM.
CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)
# the default number of worker processes at most (SSHGateway.workers): set more where more people
# copy at once, with the CPUs to match
DEFAULT_MAX_WORKERS = 8
# Flow control both ways, towards people's OpenSSH clients and the workspaces' sshd: the channel
# window (OpenSSH's own is 2 MiB) and the largest packet accepted (OpenSSH sends up to 32 KiB of
# data). 8 MiB and 256 KiB measured no better within the noise (benchmarks/ssh.py, issue 17).
WINDOW = 2 * 1024 * 1024
MAX_PACKET = 32768

# What the gateway's token may do at the hub, and why (least privilege):
SERVICE_SCOPES = (
    "read:users:name",  # does a user named like the login exist ("alice.gpu")
    "read:servers",  # server models: ready, pending, url, user_options; spawn progress
    "servers",  # start a stopped server with its last options (the scope also allows stopping: never used)
    "admin:server_state",  # where the workspace's sshd listens; its pid: which loopback ports are its own
    "access:services!service=quotas",  # who registered a key: api/ssh-keys/lookup
)


def hub_service(
    environment: dict[str, str], args: list[str] | None = None, api_token: str | None = None
) -> dict[str, Any]:
    """The ``c.JupyterHub.services`` entry that runs the gateway (no URL: it speaks SSH, not HTTP).

    ``args``: its command line, e.g. ``["--SSHGateway.port=2222", "--config=gateway_config.py"]``.
    ``api_token``: a fixed token for the service (a gateway run outside the hub, e.g. its own pod);
    by default the hub makes one and hands it to the process it starts.
    """
    service: dict[str, Any] = {
        "name": SERVICE_NAME,
        "display": False,
        "command": [sys.executable, "-m", "sshgateway", *(args or [])],
        "cwd": str(paths.REPO),
        "environment": dict(environment),
    }
    if api_token:
        service["api_token"] = api_token
    return service


def hub_roles() -> list[dict[str, Any]]:
    """``load_roles`` entry with the gateway's scopes."""
    return [
        {
            "name": "aidc-ssh-gateway",
            "description": "The SSH gateway: reads servers, starts stopped ones, reaches workspaces' sshd",  # i18n: hub admin
            "scopes": list(SERVICE_SCOPES),
            "services": [SERVICE_NAME],
        }
    ]


class SSHGateway(ServiceApp):
    """The SSH gateway (a JupyterHub service: the hub starts it from its config)."""

    name = "aidc-sshgateway"
    service_title = "SSH gateway"
    port_variable = "AIDC_SSH_PORT"
    quiet_loggers = ("asyncssh",)  # its own lines per connection, only when they matter
    description = "The AIDC Hub SSH gateway: ssh into workspaces with keys registered on the hub."  # i18n: --help
    aliases = {
        "config": "SSHGateway.config_file",
        "port": "SSHGateway.port",
        "ip": "SSHGateway.ip",
        "log-level": "Application.log_level",
    }

    config_file = Unicode(
        "",
        help="""A traitlets config file for the gateway (``--config FILE``), e.g.
        ``/etc/aidc/sshgateway_config.py`` with ``c.SSHGateway.allow_token_password = True``. Empty
        (the default): none. The hub's own config passes ``$AIDC_SSH_CONFIG`` here.
        """,
    ).tag(config=True)

    ip = Unicode(
        "127.0.0.1",
        help="""Address the SSH server listens on: ``127.0.0.1`` (the default, embedded mode behind a
        port forward) or ``0.0.0.0`` for every interface (its own pod on Kubernetes).
        """,
    ).tag(config=True)

    port = Integer(
        2222,
        help="""TCP port of the SSH server, e.g. 2222 (the default). The hub's own config passes
        ``$AIDC_SSH_PORT`` here.""",
    ).tag(config=True)

    data_dir = Unicode(
        help="""The platform's state directory: the gateway's host key ``ssh_host_ed25519_key`` (created
        once, kept across restarts), the per-server key secret ``ssh_secret`` and the audit file.
        Defaults to ``$AIDC_DATA_DIR`` or ``.aidc`` in the repository.
        """,
    ).tag(config=True)

    audit_file = Unicode(
        help="""JSON-lines file that gets one record per SSH session (user, tenant, source, session id,
        server, start, end, command, bytes each way). Defaults to ``<data_dir>/ssh-audit.jsonl``.
        """,
    ).tag(config=True)

    hub_api_url = Unicode(
        help="""The hub's REST API, e.g. ``http://127.0.0.1:8081/hub/api``. Defaults to
        ``$JUPYTERHUB_API_URL``, which the hub sets for its services.
        """,
    ).tag(config=True)

    api_token = Unicode(
        help="""The gateway's JupyterHub API token. Defaults to ``$JUPYTERHUB_API_TOKEN`` (set by the hub).""",
    ).tag(config=True)

    proxy_url = Unicode(
        "http://127.0.0.1:8000",
        help="""Where the gateway reaches the hub's proxy, for the quotas service (who registered a
        key): ``http://127.0.0.1:8000`` (the default) in the embedded mode, where the hub's own config
        passes ``$AIDC_BIND_URL``; ``http://proxy-public`` on Kubernetes.
        """,
    ).tag(config=True)

    public_url = Unicode(
        help="""The hub's URL as people know it, used in messages ("start it once from
        https://hub.example.org/hub/spawn/alice"), e.g. ``https://hub.example.org``. Defaults to
        ``proxy_url``.
        """,
    ).tag(config=True)

    quotas_url = Unicode(
        help="""The quotas service, which knows whose key is whose. Defaults to
        ``<proxy_url>/services/quotas/``.
        """,
    ).tag(config=True)

    workspace_user = Unicode(
        "",
        help="""Unix account the workspace's sshd runs as, which the gateway logs in as: ``{username}``
        is replaced by the hub user's name. Empty (the default) means the
        gateway's own account, right for the embedded mode where workspaces run as the hub's account;
        ``{username}`` when each workspace runs as the Unix user of the same name; ``jovyan`` for the
        usual images on Kubernetes.
        """,
    ).tag(config=True)

    allow_token_password = Bool(
        False,
        help="""Accept a JupyterHub API token of the user as SSH password, for scripts without keys,
        e.g. ``c.SSHGateway.allow_token_password = True``. Off by default: keys are the way in, and
        no other password is ever accepted.
        """,
    ).tag(config=True)

    auth_failure_delay = Float(
        1.0,
        help="""Seconds the gateway waits before answering the attempt after a failed login from the same
        source or for the same user; doubled at each further failure (1, 2, 4, ...), e.g. 0.5.""",
    ).tag(config=True)

    auth_max_delay = Float(30.0, help="""Longest wait between attempts, in seconds, e.g. 60.""").tag(config=True)

    auth_max_failures = Integer(
        10,
        help="""Failed logins from one source address after which that address is refused outright,
        until ``auth_failure_window`` seconds pass without a failure.""",
    ).tag(config=True)

    auth_failure_window = Float(
        600.0,
        help="""Seconds after the last failure when the gateway forgets a source's or user's failures,
        e.g. 3600.""",
    ).tag(config=True)

    login_timeout = Float(
        120.0,
        help="""Seconds a client has to authenticate before the gateway hangs up, e.g. 30.""",
    ).tag(config=True)

    start_timeout = Float(
        300.0,
        help="""Seconds the gateway waits for a stopped server to start before telling the person it failed,
        e.g. 900 where GPU nodes take minutes to come up.""",
    ).tag(config=True)

    workers = Integer(
        min=1,
        help="""Processes that serve the port, e.g. 4: SSH encryption is CPU-bound and one process keeps
        one CPU busy, so many people copying at once need several. They share the host key, the
        login throttle (``throttle_file``) and the audit file; a process that dies is started again.
        Defaults to the CPUs the gateway may use: its CPU affinity, limited by its cgroup's CPU
        quota (a container's CPU limit), and at most 8 (a pod without a CPU limit on a 96-CPU node
        would otherwise fork 96 idle processes). 1: one process, nothing forked.
        """,
    ).tag(config=True)

    throttle_file = Unicode(
        help="""SQLite file in which the gateway's processes count failed logins together (``workers``), so
        that guessing is slowed down and refused whichever process answers; emptied at each start.
        Defaults to ``<data_dir>/ssh-throttle.sqlite``; e.g. ``/run/aidc/ssh-throttle.sqlite`` where the
        data directory is read-only.
        """,
    ).tag(config=True)

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return paths.data_dir()

    @default("audit_file")
    def _default_audit_file(self) -> str:
        return str(Path(self.data_dir) / "ssh-audit.jsonl")

    @default("throttle_file")
    def _default_throttle_file(self) -> str:
        return str(Path(self.data_dir) / "ssh-throttle.sqlite")

    @default("workers")
    def _default_workers(self) -> int:
        return min(usable_cpus(), DEFAULT_MAX_WORKERS)

    @default("hub_api_url")
    def _default_hub_api_url(self) -> str:
        return os.environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api")

    @default("api_token")
    def _default_api_token(self) -> str:
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")

    @default("public_url")
    def _default_public_url(self) -> str:
        return self.proxy_url

    @default("quotas_url")
    def _default_quotas_url(self) -> str:
        return self.proxy_url.rstrip("/") + "/services/quotas/"

    def initialize(self, argv: list[str] | None = None) -> None:
        super().initialize(argv)
        if self.config_file:
            self.load_config_file(self.config_file)
        if not self.api_token:
            raise SystemExit(
                "The SSH gateway has no hub API token: run it as the hub's `sshgateway` service"  # i18n: operator
                " (hub_config/jupyterhub_config.py), which sets JUPYTERHUB_API_TOKEN."
            )
        unchanged = skip_ignore_padding(CIPHERS)
        if unchanged:
            self.log.warning(
                "asyncssh sends an empty packet ahead of each packet (%s): copies cost more CPU", unchanged
            )
        # created here, once, before any worker is forked: workers never race to create them
        self.secret = workspace_keys.load_secret(self.data_dir)
        self.host_key = workspace_keys.load_host_key(self.data_dir)
        self.audit = AuditLog(self.audit_file)
        self.throttle = AuthThrottle(
            self.auth_failure_delay,
            self.auth_max_delay,
            self.auth_max_failures,
            self.auth_failure_window,
            path=self.throttle_file,
        )
        try:
            self.throttle.clear()  # a restart forgets the counts, as it always did
        except (OSError, sqlite3.Error) as e:
            self.exit_with(
                f"The SSH gateway cannot write its login throttle file {self.throttle_file}: {e}. Set"  # i18n: operator
                " SSHGateway.throttle_file to a file in a writable folder."
            )
        self.throttle.close()  # each process opens its own connection: SQLite's cannot cross a fork
        self.hub = HubClient(self.hub_api_url, self.quotas_url, self.api_token)
        self._ids = itertools.count(1)
        if self.workers > 1:
            # which process said it: the pid, as in the audit records' `gateway`
            self.log_format = f"[%(levelname)1.1s %(asctime)s {self.name} %(process)d] %(message)s"  # i18n: log

    def unix_user(self, hub_user: str, pid: int | None = None) -> str:
        """The account to log in as upstream: ``workspace_user``, else (the embedded mode) the
        owner of the workspace's process ``pid`` (each person's own account when the hub isolates
        people), else the gateway's own account."""
        if self.workspace_user:
            return self.workspace_user.format(username=hub_user)
        if pid is not None:
            try:
                return pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
            except (OSError, KeyError):
                pass
        return getpass.getuser()

    def new_connection_id(self) -> str:
        """A connection's id, unique across the workers too: each process counts from 1 (the counter
        is copied at the fork), and the random part comes from the kernel (``os.urandom``), not from
        a generator state that a fork would copy."""
        return f"{secrets.token_hex(4)}-{next(self._ids)}"

    async def _create_server(self, sock: socket.socket | None = None) -> asyncssh.SSHAcceptor:
        """The SSH server on ``ip``:``port``, or on ``sock``, a listening socket of the parent (a worker)."""
        where: dict[str, Any] = {"sock": sock} if sock is not None else {"host": self.ip, "port": self.port}
        return await asyncssh.create_server(
            lambda: GatewayConnection(self),
            **where,
            server_host_keys=[self.host_key],
            line_editor=False,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_pty=True,
            login_timeout=self.login_timeout,
            keepalive_interval=60,
            reuse_address=True,
            encryption_algs=list(CIPHERS),
            window=WINDOW,
            max_pktsize=MAX_PACKET,
        )

    def _log_listening(self, how: str) -> None:
        self.log.info(
            "SSH gateway listening on %s:%s%s, host key %s, token passwords %s",
            self.ip,
            self.port,
            how,
            self.host_key.get_fingerprint("sha256"),
            "on" if self.allow_token_password else "off",
        )

    async def serve(self, sockets: Sequence[socket.socket] = ()) -> None:
        """Serve until SIGTERM or SIGINT, or until the hub is gone: on ``ip``:``port``, or (a worker)
        on the parent's listening ``sockets``."""
        if sockets:
            servers = [await self._create_server(sock) for sock in sockets]
        else:
            servers = [await self.listen(self._create_server, f"{self.ip}:{self.port}")]
            self._log_listening("")
        await self.wait_for_stop()
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()

    def start(self) -> None:
        """Serve until stopped; return then (exit status 0). ``workers`` 1: in this process; more:
        in that many forked workers, which this process binds the port for, restarts and stops."""
        if self.workers == 1:
            asyncio.run(self.serve())
            return

        # The parent binds the port and the workers accept on its one socket, rather than each
        # binding its own with SO_REUSEPORT: connections waiting in the accept queue belong to the
        # socket, which the parent keeps open, so a worker that dies loses none of them (with
        # SO_REUSEPORT its queue is reset); a connection goes to whichever worker takes it first, an
        # idle one rather than one busy encrypting (SO_REUSEPORT hashes addresses, busy or not); and
        # no other program of this account can bind the port alongside and take a share.
        async def bind_port() -> list[socket.socket]:
            return bind(self.ip, self.port)

        sockets = asyncio.run(self.listen(bind_port, f"{self.ip}:{self.port}"))
        self._log_listening(f" with {self.workers} workers")
        gateway, hub = os.getpid(), hub_pid()

        def work(index: int) -> None:
            # A worker follows the gateway that forked it as the gateway follows the hub: it stops
            # when that process is gone (PR_SET_PDEATHSIG, and a check of its parent), even one that
            # died before this line.
            os.environ[HUB_PID_VARIABLE] = str(gateway)
            self.watch_hub()
            asyncio.run(self.serve(sockets))

        try:
            Supervisor(self.workers, work, self.log, lambda: hub_is_gone(hub)).run()
        finally:
            for sock in sockets:
                sock.close()
        self.log.info("Stopped the %s", self.service_title)


class GatewayConnection(asyncssh.SSHServer):
    """One person's SSH connection: who they are, which workspace, the connection to it."""

    def __init__(self, gateway: SSHGateway):
        self.gw = gateway
        self.log = gateway.log
        self.id = gateway.new_connection_id()
        self.conn: asyncssh.SSHServerConnection | None = None
        self.source = "?"
        self.login = ""
        self.target: Target | None = None
        self.authenticated = False
        self.failed = False
        self.owners: dict[str, Person | None] = {}  # fingerprint -> owner, this connection only
        # the language the person reads, once known; None: not known yet (English, then Korean)
        self.locale: str | None = None
        self.tenant = ""
        self.pid: int | None = None
        self._upstream: asyncio.Future[asyncssh.SSHClientConnection] | None = None
        self._channels = itertools.count(1)

    # -- connection and authentication --------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        self.source = str(peer[0]) if peer else "?"

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.authenticated and self.failed:
            self.gw.throttle.failure(self.source, self.login)
        if self._upstream is not None:
            if self._upstream.done() and not self._upstream.cancelled() and self._upstream.exception() is None:
                self._upstream.result().close()
            elif not self._upstream.done():
                self._upstream.cancel()

    @property
    def client_version(self) -> str:
        return str(self.conn.get_extra_info("client_version", "")) if self.conn is not None else ""

    def _reason(self, text: object) -> tuple[str, str]:
        """A disconnect's or refused channel's reason and language tag, as the person's client shows them."""
        return speech.reason(text, self.locale, self.client_version)

    async def begin_auth(self, username: str) -> bool:
        self.login = username
        refusal = self.gw.throttle.refusal(self.source)
        if refusal:
            self.log.warning("refused %s from %s: %s", username, self.source, refusal)
            # nobody is known yet: both languages, in a banner, which every client shows as UTF-8
            assert self.conn is not None
            self.conn.send_auth_banner(speech.say(refusal, None) + "\n", speech.language_tag(None))
            raise asyncssh.DisconnectError(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, *self._reason(refusal))
        # the wait after failures is in validate_password: keys cannot be guessed, tokens could
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return self.gw.allow_token_password

    async def _accept(self, login: str, owner: str) -> bool:
        try:
            other = login != owner and (await self.gw.hub.user(login)) is not None
        except HubRefused as e:
            self.log.error("cannot check whether user %s exists (%s): %s", login, e.status, e.message)
            return False
        target = target_for_login(login, owner, other)
        if target is None:
            self.log.info("refused %s from %s: the key or token belongs to %s", login, self.source, owner)
            return False
        self.target = target
        return True

    async def _locale_of(self, name: str) -> str | None:
        """The language ``name`` chose, for a person known by a token; None (English) when the quotas
        service cannot say: the language is no reason to refuse a login."""
        try:
            return await self.gw.hub.locale_of(name)
        except HubRefused as e:
            self.log.warning("cannot look up the language of %s (%s): %s", name, e.status, e.message)
            return None

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        fingerprint = key.get_fingerprint("sha256")
        if fingerprint not in self.owners:
            try:
                self.owners[fingerprint] = await self.gw.hub.key_owner(fingerprint)
            except HubRefused as e:
                self.log.error("key lookup failed (%s): %s", e.status, e.message)
                self.owners[fingerprint] = None
        owner = self.owners[fingerprint]
        if owner is None or not await self._accept(username, owner.name):
            self.failed = True
            return False
        self.locale = choose(owner.locale)
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        if not self.gw.allow_token_password:
            return False
        delay = self.gw.throttle.delay(self.source, username)
        if delay:
            await asyncio.sleep(delay)
        try:
            owner = await self.gw.hub.token_owner(password)
        except HubRefused as e:
            self.log.error("token check failed (%s): %s", e.status, e.message)
            owner = None
        if owner is None or not await self._accept(username, owner):
            self.log.info("wrong token for %s from %s", username, self.source)
            self.gw.throttle.failure(self.source, username)
            return False
        self.locale = choose(await self._locale_of(owner))
        return True

    def auth_completed(self) -> None:
        assert self.target is not None
        self.authenticated = True
        self.gw.throttle.success(self.source, self.login)
        self.log.info(
            "%s logged in from %s for %s (connection %s)", self.login, self.source, self.target.label, self.id
        )

    # -- the workspace -------------------------------------------------------------------------

    def _record(self, kind: str = "", command: str = "") -> SessionRecord:
        assert self.target is not None
        return SessionRecord(
            session=f"{self.id}-{next(self._channels)}",
            user=self.target.user,
            server=self.target.server,
            tenant=self.tenant,
            source=self.source,
            kind=kind,
            command=command,
        )

    def upstream(self, progress: Any = None) -> asyncio.Future[asyncssh.SSHClientConnection]:
        """The SSH connection to the workspace's sshd, opened once per person's connection (the
        first session that needs it sees the start progress)."""
        if self._upstream is None:
            self._upstream = asyncio.ensure_future(self._connect_workspace(progress or (lambda line: None)))
        return self._upstream

    async def _connect_workspace(self, progress: Any) -> asyncssh.SSHClientConnection:
        target, hub = self.target, self.gw.hub
        assert target is not None
        server = await hub.server(target)
        plan = plan_for(target, server, self.gw.public_url)
        if plan.action == "refuse":
            raise Refusal(plan.message)
        home = f"{self.gw.public_url.rstrip('/')}/hub/home"
        if plan.action == "start":
            profile = (plan.options or {}).get("profile", "")
            if profile:
                progress(_("Starting {server} (profile {profile})...", server=target.describe, profile=profile))
            else:
                progress(_("Starting {server}...", server=target.describe))
            try:
                await hub.start(target, plan.options or {})
            except HubRefused as e:
                # someone else started it meanwhile: follow that start instead
                if e.status != 400 or not ("pending" in e.message or "already" in e.message):
                    raise Refusal(
                        _("The hub did not start {server}: {why}", server=target.describe, why=e.message)
                    ) from None
        if plan.action in ("start", "wait"):
            if plan.action == "wait":
                progress(_("{server} is starting; waiting...", server=target.describe))
            await self._follow_progress(target, progress)
            server = await hub.server(target)
            if not server or not server.get("ready"):
                raise Refusal(
                    _("{server} did not become ready. See {home} for why.", server=target.describe, home=home)
                )
        assert server is not None
        state = server.get("state") or {}
        self.tenant = str(
            (state.get("aidc") or {}).get("tenant") or (server.get("user_options") or {}).get("tenant") or ""
        )
        self.pid = state.get("pid") if isinstance(state.get("pid"), int) else None
        # where to dial comes from the spawner's state alone, never from what the client sent
        address = sshd_address(state)
        if address is None:
            raise Refusal(
                _(
                    "The hub does not say where the SSH daemon of {server} listens: it was started by an older"
                    " version of the hub. Stop it and start it again ({home}), then connect.",
                    server=target.describe,
                    home=home,
                )
            )
        host, port = address
        key = workspace_keys.server_key(self.gw.secret, target.user, target.server)
        host_key = workspace_keys.server_host_key(self.gw.secret, target.user, target.server).convert_to_public()
        last: Exception | None = None
        for _attempt in range(10):  # an sshd that restarts (it crashed) comes back within seconds
            try:
                return await asyncssh.connect(
                    host,
                    port,
                    username=self.gw.unix_user(target.user, self.pid),
                    client_keys=[key],
                    # this server's own host key and no other: an address that another program took
                    # over (the server stopped, the pod IP or port was reused) cannot pass for it
                    known_hosts=([host_key], [], []),
                    server_host_key_algs=["ssh-ed25519"],
                    agent_path=None,
                    config=None,
                    preferred_auth="publickey",
                    encryption_algs=list(CIPHERS),
                    window=WINDOW,
                    max_pktsize=MAX_PACKET,
                    connect_timeout=10,
                    login_timeout=60,
                )
            except asyncssh.HostKeyNotVerifiable:
                self.log.warning("%s:%s is not the sshd of %s: wrong host key", host, port, target.label)
                raise Refusal(
                    _(
                        "What answers at the address of {server} is not its SSH daemon (it proved another"
                        " identity), so the gateway did not log in. Stop the server and start it again; if this"
                        " persists, tell the platform's admins.",
                        server=target.describe,
                    )
                ) from None
            except (OSError, asyncssh.ConnectionLost) as e:
                last = e
                await asyncio.sleep(0.5)
        raise Refusal(
            _(
                "Cannot reach the SSH daemon of {server} ({error}). Its log is in the server's log; stopping and"
                " starting the server starts it again.",
                server=target.describe,
                error=str(last),
            )
        )

    async def _follow_progress(self, target: Target, progress: Any) -> None:
        async def follow() -> None:
            async for event in self.gw.hub.progress(target):
                message = event.get("message")
                if message:
                    # the hub's own words, in the person's language already
                    progress(f"[{event.get('progress', '')}%] {message}" if "progress" in event else message)
                if event.get("failed"):
                    raise Refusal(_("{server} failed to start: {why}", server=target.describe, why=message))

        try:
            await asyncio.wait_for(follow(), self.gw.start_timeout)
        except TimeoutError:
            raise Refusal(
                _(
                    "{server} did not start within {seconds} seconds.",
                    server=target.describe,
                    seconds=int(self.gw.start_timeout),
                )
            ) from None

    async def _open_session(
        self,
        factory: Any,
        command: str | None,
        subsystem: str | None,
        pty: tuple[str, tuple[int, int, int, int], dict[int, int]] | None,
        env: dict[str, str],
        progress: Any,
        record: SessionRecord,
    ) -> tuple[Any, Any]:
        try:
            conn = await asyncio.shield(self.upstream(progress))
        except (Refusal, asyncio.CancelledError):
            raise
        except HubRefused as e:
            raise Refusal(_("The hub refused: {why}", why=e.message)) from None
        record.tenant = self.tenant  # known once the server model was read
        kwargs: dict[str, Any] = {"env": env, "encoding": None}
        if pty is not None:
            kwargs.update(term_type=pty[0], term_size=pty[1], term_modes=pty[2], request_pty="force")
        else:
            kwargs["request_pty"] = False
        if subsystem is not None:
            kwargs["subsystem"] = subsystem
        return await conn.create_session(factory, command, **kwargs)  # type: ignore[no-any-return]

    def session_requested(self) -> Any:
        assert self.conn is not None
        record = self._record()
        chan = self.conn.create_server_channel(encoding=None)
        return chan, SessionBridge(self._open_session, self.gw.audit, record, self.locale)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> Any:
        return self._forward(dest_host, dest_port)

    def _refuse_channel(self, code: int, reason: object) -> asyncssh.ChannelOpenError:
        """A forward refused with ``reason``, said as the person's client can show it."""
        return asyncssh.ChannelOpenError(code, *self._reason(reason))

    async def _forward(self, host: str, port: int) -> ForwardBridge:
        assert self.target is not None
        try:
            conn = await asyncio.shield(self.upstream())
        except Refusal as e:
            raise self._refuse_channel(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, e.message) from None
        except HubRefused as e:
            raise self._refuse_channel(asyncssh.OPEN_CONNECT_FAILED, e.message) from None  # the hub's own words
        except Exception as e:
            self.log.exception("cannot reach %s for a forward", self.target.label)
            raise self._refuse_channel(
                asyncssh.OPEN_CONNECT_FAILED, _("The gateway could not reach the workspace: {error}", error=str(e))
            ) from None
        landing, address = None, host
        uids: tuple[int | None, int] = (None, os.getuid())
        if self.pid is not None and host in LOOPBACK_HOSTS:
            # the embedded mode: all workspaces share this machine's loopback
            uids = (account_of(self.pid), os.getuid())
            if uids[0] is None:
                raise self._refuse_channel(
                    asyncssh.OPEN_CONNECT_FAILED,
                    _(
                        "{server} has stopped. Connect again to start it, then forward {host}:{port}.",
                        server=self.target.describe,
                        host=host,
                        port=port,
                    ),
                )
            address = await asyncio.to_thread(loopback_address, host, port)
            landing = await asyncio.to_thread(landing_sockets, address, port)
            if not accounts_isolated(*uids):
                # one account for all: whose it is shows in the processes holding it (readable only then)
                landing = await asyncio.to_thread(with_workspaces, landing, {self.pid: self.target.label})
        reason = forward_refusal(host, port, self.target, landing, *uids)
        if reason:
            self.log.warning("refused forward of %s to %s:%s: %s", self.target.label, host, port, reason)
            raise self._refuse_channel(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, reason)
        bridge = ForwardBridge(self.gw.audit, self._record("forward", f"{host}:{port}"))  # as the person asked
        try:
            # the concrete address checked above, not "localhost": the workspace's sshd would try
            # each address of localhost in turn and could land on one that was not checked
            chan, _session = await conn.create_connection(lambda: bridge.upstream, address, port)
        except asyncssh.ChannelOpenError as e:
            # the workspace sshd's reason ("Connection refused"), as it said it
            raise self._refuse_channel(
                e.code, _("{host}:{port} in the workspace: {why}", host=host, port=port, why=e.reason)
            ) from None
        if landing is not None:
            # A listener may have been closed and another opened on that port between the check
            # and the workspace's connect: the connection would then be another program's. The
            # upstream channel does not read until the person's side opens, so nothing was passed yet.
            now = await asyncio.to_thread(landing_sockets, address, port)
            if {s.inode for s in now} != {s.inode for s in landing}:
                chan.close()
                self.log.warning("refused forward of %s to %s:%s: the listener changed", self.target.label, host, port)
                raise self._refuse_channel(
                    asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                    _(
                        "The program listening on {host}:{port} changed while the forward opened, so it was closed"
                        " before anything passed. Try again once the program has started.",
                        host=host,
                        port=port,
                    ),
                )
        return bridge

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        self.log.info("refused remote forward of %s to %s:%s", self.login, listen_host, listen_port)
        return False


def main(argv: list[str] | None = None) -> None:
    SSHGateway.launch_instance(argv)
