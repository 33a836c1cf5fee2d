"""Where an SSH login goes: pure decisions from the login name, the key's owner and the hub's
server model. The gateway gathers the data (hub API, /proc) and acts; see :mod:`sshgateway.server`.

Login names: ``alice`` is alice's default server, ``alice.gpu`` her named server ``gpu``. When a
hub user is literally named ``alice.gpu``, the name means that user (whose key it must be), so
alice then reaches her server ``gpu`` through the web only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from i18n import Text, _

from .procnet import Listener

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class Target:
    """One workspace: ``user``'s server ``server`` ("" is the default server)."""

    user: str
    server: str

    @property
    def label(self) -> str:
        return f"{self.user}/{self.server}" if self.server else self.user

    @property
    def describe(self) -> Text:
        """The workspace as a sentence names it: "alice's server 'gpu'", "alice's default server"."""
        # in Korean both end in 서버 ("alice의 'gpu' 서버"), so the sentences that name a server put
        # the particle for a vowel (는, 를, 가) after it
        if self.server:
            return _("{user}'s server '{server}'", user=self.user, server=self.server)
        return _("{user}'s default server", user=self.user)


def target_for_login(login: str, owner: str, login_is_another_user: bool) -> Target | None:
    """The workspace that ``login`` names for a key or token of ``owner``, or None (refuse).

    ``login_is_another_user``: the hub has a user named exactly ``login`` (and it is not ``owner``).
    """
    if login == owner:
        return Target(owner, "")
    if login_is_another_user:
        return None
    prefix = owner + "."
    if login.startswith(prefix) and len(login) > len(prefix):
        return Target(owner, login[len(prefix) :])
    return None


@dataclass(frozen=True)
class Plan:
    """What to do with a workspace: ``connect``, ``wait`` (it is starting), ``start`` (with
    ``options``) or ``refuse`` (``message`` says why and what to do, a :class:`i18n.Text`)."""

    action: str
    options: dict[str, Any] | None = None
    message: str = ""


def plan_for(target: Target, server: dict[str, Any] | None, hub_url: str) -> Plan:
    """Decide from the hub's server model (``None``: the hub has no such server)."""
    spawn_url = f"{hub_url.rstrip('/')}/hub/spawn/{target.user}" + (f"/{target.server}" if target.server else "")
    if server is None:
        if target.server:
            return Plan(
                "refuse",
                message=_(
                    "{user} has no server named '{server}'. Create it once from the web ({home}, choosing a"
                    " profile), then `ssh {login}@...` starts it when it is stopped. Log in as your plain name"
                    " for your default server.",
                    user=target.user,
                    server=target.server,
                    home=f"{hub_url.rstrip('/')}/hub/home",
                    login=f"{target.user}.{target.server}",
                ),
            )
        return Plan("refuse", message=_never_started(target, spawn_url))
    if server.get("ready"):
        return Plan("connect")
    pending = server.get("pending")
    if pending == "spawn":
        return Plan("wait")
    if pending:
        return Plan(
            "refuse",
            message=_(
                "{server} is being stopped ({pending}). Try again in a moment.", server=target.describe, pending=pending
            ),
        )
    options = server.get("user_options") or {}
    if not options:
        return Plan("refuse", message=_never_started(target, spawn_url))
    return Plan("start", options=dict(options))


def sshd_address(state: dict[str, Any]) -> tuple[str, int] | None:
    """Where the workspace's sshd listens, from the server's state as its spawner wrote it
    (``{"sshd": {"host": "10.1.2.3", "port": 2222}}``): an IP address and a port, or None when the
    state has none (a server started before the gateway reached sshd directly) or a malformed one.
    Nothing the client sends takes part."""
    saved = state.get("sshd")
    if not isinstance(saved, dict):
        return None
    host, port = saved.get("host"), saved.get("port")
    if not isinstance(host, str) or not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        return None
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        return None


def _never_started(target: Target, spawn_url: str) -> Text:
    return _(
        "{server} has never been started, so the gateway does not know which profile it should have. Start"
        " it once from the web ({spawn_url}); after that, ssh starts it again with the same profile whenever"
        " it is stopped.",
        server=target.describe,
        spawn_url=spawn_url,
    )


def accounts_isolated(workspace_uid: int | None, gateway_uid: int | None) -> bool:
    """Whether each person's workspaces run as their own Unix account (embedded mode): the
    workspace's process (``workspace_uid``) runs neither as root nor as the gateway's account.
    Otherwise all workspaces run as one account (a developer's machine)."""
    return workspace_uid is not None and workspace_uid not in (0, gateway_uid)


def forward_refusal(
    host: str,
    port: int,
    target: Target,
    landing: list[Listener] | None,
    workspace_uid: int | None = None,
    gateway_uid: int | None = None,
) -> Text | None:
    """Why a local forward (``ssh -L``, ``-W``, ``-D``) to ``host:port`` of ``target`` is refused,
    or None to allow it.

    ``landing``: in the embedded mode, the listening sockets that a connection to that port
    reaches (:func:`sshgateway.procnet.landing_sockets`, for the concrete address that will be
    connected to); None when each workspace has its own loopback (Kubernetes), where any loopback
    port is the workspace's own.

    Whose the port is depends on how workspaces run (:func:`accounts_isolated`, from the uids of
    the workspace's process and of the gateway). When each person has an account, a port is theirs
    when their account opened it. Otherwise a port is the workspace's when a process of its tree
    (or carrying its ``JUPYTERHUB_USER``) holds it: ``Listener.workspaces``.
    """
    if host not in LOOPBACK_HOSTS:
        return _(
            "Forwarding to {host}:{port} is not allowed: only ports inside your workspace are (use localhost:{port}).",
            host=host,
            port=port,
        )
    if not 0 < port < 65536:
        return _("Port {port} does not exist.", port=port)
    if landing is None:
        return None
    if not landing:
        return _(
            "Nothing listens on port {port} ({host}) in {server}. Start the program first (listening on"
            " 127.0.0.1 or ::1), then connect.",
            port=port,
            host=host,
            server=target.describe,
        )
    asked = f"{host}:{port}"
    if accounts_isolated(workspace_uid, gateway_uid):
        uids = {s.uid for s in landing}
        if uids == {workspace_uid}:
            return None
        if uids & {0, gateway_uid}:
            return _(
                "Port {port} on this machine is not part of {server}: {asked} reaches a service of the hub's"
                " machine, and only the workspace's own ports can be forwarded.",
                port=port,
                server=target.describe,
                asked=asked,
            )
        return _(
            "Port {port} belongs to another workspace: {asked} reaches a program of another account, and only"
            " ports that {user}'s own programs opened can be forwarded. Start your program in {server} on a"
            " free port, then forward that one.",
            port=port,
            asked=asked,
            user=target.user,
            server=target.describe,
        )
    if all(target.label in s.workspaces for s in landing):
        return None
    if any(s.workspaces - {None, target.label} for s in landing):
        return _(
            "Port {port} belongs to another workspace: {asked} reaches a program of another workspace, and"
            " only ports of {server} can be forwarded. Start your program in {server} on a free port, then"
            " forward that one.",
            port=port,
            asked=asked,
            server=target.describe,
        )
    return _(
        "Port {port} on this machine is not part of {server}: {asked} reaches a program outside the"
        " workspace, and only the workspace's own ports can be forwarded.",
        port=port,
        server=target.describe,
        asked=asked,
    )
