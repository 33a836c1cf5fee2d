"""``aidc``: the platform operator's command.

    aidc init                 create the data directory and the first admin account
    aidc user add NAME        create a local account and print its generated password
    aidc user passwd NAME     set a new generated password
    aidc user remove NAME     delete a local account
    aidc user list            list local accounts
    aidc check-config [FILE]  validate tenants.yaml against the image catalog
    aidc gpus                 show this machine's GPU inventory
    aidc reconcile            create/update every tenant's Kubernetes namespace and quota
    aidc reload               apply an edited tenants.yaml (and image catalog) to the running hub
    aidc quota show           the limits tenant admins delegated (through the quotas API)
    aidc quota set            set or remove a user's or a group's limit (through the quotas API)
    aidc quota usage          GPU- and CPU-hours per user, group or tenant (through the quotas API)
    aidc quota servers        the running servers charged to a tenant (through the quotas API)
    aidc quota stop           stop a server charged to a tenant (through the quotas API)
    aidc quota queue [TENANT] the GPU requests waiting in a tenant's queue, their place and why
    aidc ssh-config           print a ~/.ssh/config block to reach one's workspaces through the SSH gateway

Exit codes: 0 done, 1 refused or not found (the message says why), 2 wrong usage or bad input,
3 (``aidc quota``, ``aidc reload``) the hub cannot be reached, or there is no API token.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import re
import signal
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from quotas import paths
from quotas.limits import SCALAR_FIELDS
from quotas.limits import SUBJECT as LIMIT_SUBJECT
from quotas.loader import USER_PATTERN, ConfigError, load_platform
from quotas.quantity import QuantityError, format_duration, format_number, parse_quantity
from quotas.snapshot import HUB_STATE, QUOTAS_STATE, ReloadOutcome, digest_of, platform_dir, read_state
from spawner.gpus import InventoryError, detect_inventory

# authenticators.local (accounts) loads JupyterHub, a second and more: only the account commands import
# it, so `aidc quota` and `aidc check-config` start at once.
if TYPE_CHECKING:
    from authenticators.local import AccountStore

ADMIN = "admin"


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or paths.data_dir()).resolve()


def _store(args: argparse.Namespace) -> AccountStore:
    from authenticators.local import AccountStore

    return AccountStore(_data_dir(args) / "accounts.json")


def _new_password(args: argparse.Namespace) -> tuple[str, bool]:
    from authenticators.local import AccountError, generate_password

    if getattr(args, "password_stdin", False):
        password = sys.stdin.readline().rstrip("\n")
        if len(password) < 8:
            raise AccountError("The password read from standard input is shorter than 8 characters.")
        return password, False
    return generate_password(), True


def cmd_init(args: argparse.Namespace) -> int:
    from authenticators.local import generate_password

    data = _data_dir(args)
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(data, 0o700)
    store = _store(args)
    saved = data / "admin-password"
    if ADMIN in store.read():
        where = f" (saved in {saved})" if saved.exists() else ""
        print(f"Log in at {args.url} as '{ADMIN}' with the password created on the first run{where}.")
        return 0
    password = generate_password()
    store.add(ADMIN, password, admin=True)
    fd = os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    print("Created the platform admin account (shown once; also saved, readable only by you, in")
    print(f"{saved}):\n")
    print(f"    URL:       {args.url}")
    print(f"    username:  {ADMIN}")
    print(f"    password:  {password}\n")
    print("Create accounts for people with:  .venv/bin/aidc user add alice")
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    password, generated = _new_password(args)
    _store(args).add(args.name, password, admin=args.admin)
    print(f"Created account {args.name!r}{' (platform admin)' if args.admin else ''}.")
    if generated:
        print(f"Password: {password}")
    _warn_if_in_no_tenant(args.name)
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    password, generated = _new_password(args)
    _store(args).set_password(args.name, password)
    print(f"New password for {args.name!r}" + (f": {password}" if generated else " set."))
    return 0


def cmd_user_remove(args: argparse.Namespace) -> int:
    _store(args).remove(args.name)
    print(f"Removed account {args.name!r}. Their running servers keep running until stopped from the admin page.")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    for name, account in sorted(_store(args).read().items()):
        print(f"{name}{'  (admin)' if account.get('admin') else ''}")
    return 0


def _warn_if_in_no_tenant(name: str) -> None:
    try:
        config = load_platform(_tenants_file(None), _catalog_file(None))
    except ConfigError:
        return
    tenants = [t.id for t in config.tenants_of(name)]
    if tenants:
        print(f"Member of: {', '.join(tenants)}.")
    else:
        print(
            f"Note: {name!r} is in no tenant of {config.source}; add them under a tenant's members to let them start servers."
        )


def _tenants_file(value: str | None) -> str:
    return value or paths.tenants_file()


def _catalog_file(value: str | None) -> str:
    return value or paths.catalog_file()


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_platform(_tenants_file(args.file), _catalog_file(args.catalog))
    print(
        f"{config.source}: OK ({len(config.tenants)} tenants, {len(config.profiles)} profiles,"
        f" {len(config.gpu_types)} GPU types)"
    )
    return 0


def cmd_gpus(args: argparse.Namespace) -> int:
    config = load_platform(_tenants_file(args.file), _catalog_file(None))
    gpus = detect_inventory(os.environ.get("AIDC_FAKE_GPUS", ""), config.gpu_types)
    if not gpus:
        print("No GPUs: nvidia-smi is not installed and AIDC_FAKE_GPUS is empty.")
    for g in gpus:
        print(f"{g.index}\t{g.type}\t{g.name}")
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    """Send the running hub SIGHUP and print what its reload did (exit 1: refused; 3: no hub).

    The hub of this data directory is the process its state file names (``platform/hub.json``,
    written by that hub at start and after each reload), if that process runs JupyterHub. The
    outcome printed is that of a reload which read the files as they are now (their digest), so
    another reload at the same time cannot be mistaken for this one.
    """
    folder = platform_dir(_data_dir(args))
    state_file = folder / HUB_STATE
    try:
        before = read_state(state_file)
    except ValueError as e:
        print(f"aidc reload: {e}.")
        return UNREACHABLE
    if before is None:
        print(f"aidc reload: no hub has started with the data directory {folder.parent} (no {state_file}).")
        return UNREACHABLE
    pid, tenants = int(before["pid"]), before["snapshot"]["tenants_file"]
    if not _runs_jupyterhub(pid):
        print(f"aidc reload: the hub of {folder.parent} (pid {pid}) is not running; it reads {tenants} when it starts.")
        return UNREACHABLE
    now = _files_digest(before["snapshot"]["tenants_file"], before["snapshot"]["catalog_file"])
    try:
        os.kill(pid, signal.SIGHUP)
    except PermissionError:
        print(f"aidc reload: not allowed to signal the hub (pid {pid}); run aidc reload as the hub's own user.")
        return UNREACHABLE

    def answered() -> dict[str, Any] | None:
        state = read_state(state_file)
        if state is None or state["pid"] != pid or state["reloads"] <= before["reloads"] or not state["last"]:
            return None
        return state if not now or state["last"]["read"] in (now, "") else None

    after = _wait_for(answered, args.timeout)
    if after is None:
        print(
            f"aidc reload: the hub (pid {pid}) has not reported a reload of {tenants} as it is now"
            f" within {args.timeout:g} s (a file changed again meanwhile, or the hub is busy); see its log."
        )
        return UNREACHABLE
    outcome = ReloadOutcome.from_json(after["last"])
    print("\n".join(outcome.lines()))
    if not outcome.applied:
        return REFUSED
    if after.get("quotas_pid") is None:
        print("The quotas service is not running now; it loads this config when the hub starts it.")
        return OK

    def service_applied() -> dict[str, Any] | None:
        state = read_state(folder / QUOTAS_STATE)
        return state if state is not None and state["snapshot"]["digest"] == outcome.digest else None

    service = _wait_for(service_applied, args.timeout)
    if service is None:
        print(
            f"The quotas service (pid {after['quotas_pid']}) has not loaded it within {args.timeout:g} s: until it"
            " does, its API, page and culler use the config before. See the hub's log; restarting the hub applies"
            " it everywhere."
        )
        return REFUSED
    print(f"The quotas service (pid {service['pid']}) uses it too.")
    return OK


def _runs_jupyterhub(pid: int) -> bool:
    """True if process ``pid`` exists and (where ``/proc`` tells) runs JupyterHub: a stale state
    file must not make us signal whatever process has that pid now."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user
    try:
        return b"jupyterhub" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no /proc (macOS): trust the state file
    except OSError:
        return True


def _files_digest(tenants_file: str, catalog_file: str) -> str:
    """The digest of both files as they are now ("" when this user cannot read them)."""
    try:
        return digest_of(Path(tenants_file).read_bytes(), Path(catalog_file).read_bytes())
    except OSError:
        return ""


def _wait_for(check: Callable[[], _T | None], timeout: float) -> _T | None:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def cmd_reconcile(args: argparse.Namespace) -> int:
    from kubernetes import client
    from kubernetes import config as kube_config

    from spawner.reconciler import TenantReconciler

    platform = load_platform(_tenants_file(args.file), _catalog_file(None))
    if args.kubeconfig:
        kube_config.load_kube_config(config_file=args.kubeconfig)
    else:
        try:
            kube_config.load_incluster_config()
        except kube_config.ConfigException:
            kube_config.load_kube_config()
    reconciler = TenantReconciler(
        client.ApiClient(),
        platform,
        namespace_template=args.namespace_template,
        hub_namespace=args.hub_namespace,
        hub_service_account=args.hub_service_account,
        kueue=args.kueue,
    )
    for line in reconciler.reconcile().lines():
        print(line)
    return 0


# -- aidc quota: a client of the quotas service's REST API --------------------------------------
# It never opens the database: the API applies the same rules (who may do what, ceilings) to
# the CLI, the web page and scripts, so the CLI only parses, merges, calls and formats.

DEFAULT_HUB_URL = "http://127.0.0.1:8000"
QUOTAS_API = "/services/quotas/api/"
TOKEN_VARIABLES = ("AIDC_TOKEN", "JUPYTERHUB_API_TOKEN")
OK, REFUSED, BAD_INPUT, UNREACHABLE = 0, 1, 2, 3
_PLAIN_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
_CPU = re.compile(r"^(?:\d+(?:\.\d+)?|\.\d+)m?$")
_TOKEN = re.compile(r"^[!-~]+$")  # printable ASCII without spaces: anything else cannot be a header value


class QuotaError(Exception):
    """Why an ``aidc quota`` command stopped: ``code`` is its exit status, ``problems`` every reason."""

    def __init__(self, code: int, message: str, problems: Sequence[str] = ()):
        super().__init__(message)
        self.code, self.message, self.problems = code, message, list(problems)
        self.status = 0  # the HTTP status of the API's answer, when there was one

    def lines(self) -> list[str]:
        """The message, then each problem it does not already spell out, one per line."""
        return [f"aidc quota: {self.message}", *(f"  - {p}" for p in self.problems if p not in self.message)]


def hub_url(value: str | None, env: Mapping[str, str]) -> str:
    """The hub's base URL from ``--hub-url``, ``$AIDC_HUB_URL`` or the default, without a trailing
    ``/`` or ``/hub`` (people copy it from the browser's address bar)."""
    url = (value or env.get("AIDC_HUB_URL") or DEFAULT_HUB_URL).strip().rstrip("/")
    url = url.removesuffix("/hub").rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise QuotaError(
            BAD_INPUT,
            f"The hub URL {url!r} (from {'--hub-url' if value else '$AIDC_HUB_URL'}) is not an http(s) URL;"
            f" write it like {DEFAULT_HUB_URL} or https://hub.example.org.",
        )
    return url


def read_token(token_file: str | None, env: Mapping[str, str], hub: str) -> str:
    """The API token from ``--token-file``, ``$AIDC_TOKEN`` or ``$JUPYTERHUB_API_TOKEN``, in that order.

    There is deliberately no option that takes the token itself: it would show in ``ps``.
    """
    how = (
        f"Create a token at {hub}/hub/token, save it in a file only you can read and pass"
        " --token-file FILE (or export AIDC_TOKEN)."
    )
    if token_file:
        try:
            lines = Path(token_file).read_text().splitlines()
        except OSError as e:
            raise QuotaError(UNREACHABLE, f"Cannot read the token file {token_file}: {e.strerror}. {how}") from None
        token = lines[0].strip() if lines else ""
        where = f"the token file {token_file}"
    else:
        name = next((n for n in TOKEN_VARIABLES if env.get(n, "").strip()), None)
        if name is None:
            raise QuotaError(
                UNREACHABLE, f"No API token: neither --token-file nor ${' nor $'.join(TOKEN_VARIABLES)} is set. {how}"
            )
        token, where = env[name].strip(), f"${name}"
    if not token:
        raise QuotaError(UNREACHABLE, f"No API token: {where} is empty. {how}")
    if not _TOKEN.match(token):
        raise QuotaError(
            UNREACHABLE, f"The API token in {where} has spaces or non-ASCII characters; it is not a hub token. {how}"
        )
    return token


def api_error(status: int, body: bytes, url: str, hub: str) -> QuotaError:
    """The error (with its exit code) for an HTTP answer ``status`` of the quotas API.

    400/422 are bad input (2, with every problem the API listed), 403/404 refusals (1, with the
    API's message), 401 or a redirect to the login page a token the hub refuses (3), 502-504 a quotas
    service the hub cannot reach (3); anything else is a failure of the API (1).
    """
    message, problems = _api_message(body)
    if status in (400, 422):
        return QuotaError(BAD_INPUT, message or f"The quotas API refused the request as invalid ({status}).", problems)
    if status == 401 or 300 <= status < 400:
        return QuotaError(
            UNREACHABLE,
            f"The hub at {hub} does not accept the API token: it may have expired, been revoked or be mistyped."
            f" Create a new one at {hub}/hub/token and pass it with --token-file FILE (or $AIDC_TOKEN).",
        )
    if status in (403, 404):
        if message:
            return QuotaError(REFUSED, message, problems)
        what = "refused" if status == 403 else "has no"
        return QuotaError(
            REFUSED, f"The hub at {hub} {what} {url} ({status}); is the quotas service configured on this hub?"
        )
    if status in (502, 503, 504):
        return QuotaError(
            UNREACHABLE,
            f"The hub at {hub} answered, but the quotas service behind it did not ({status})."
            " Try again in a minute; if it persists, ask a platform admin to check the hub's log.",
        )
    return QuotaError(REFUSED, message or f"The quotas API failed ({status}) for {url}.", problems)


def _api_message(body: bytes) -> tuple[str, list[str]]:
    try:
        doc = json.loads(body)
    except ValueError:
        return "", []
    if not isinstance(doc, dict):
        return "", []
    message = doc.get("message")
    problems = doc.get("problems")
    return (
        message if isinstance(message, str) else "",
        [str(p) for p in problems] if isinstance(problems, list) else [],
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect means the token was not accepted (the service sends people to log in)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class QuotasAPI:
    """The quotas service's REST API at ``<hub>/services/quotas/api/``, called with ``token``."""

    def __init__(self, hub: str, token: str, timeout: float = 30):
        self.hub, self.token, self.timeout = hub, token, timeout
        self._opener = urllib.request.build_opener(_NoRedirect)

    def url(self, *segments: str, query: Mapping[str, str] | None = None) -> str:
        path = "/".join(urllib.parse.quote(s, safe="") for s in segments)
        return self.hub + QUOTAS_API + path + (f"?{urllib.parse.urlencode(query)}" if query else "")

    def call(
        self,
        method: str,
        url: str,
        body: Any = None,
        accept: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> tuple[bytes, str]:
        """Send one request; returns (body, content type) of a 2xx answer, else raises :class:`QuotaError`
        (with the HTTP ``status``)."""
        raw, content_type, _ = self.exchange(method, url, body, accept, headers)
        return raw, content_type

    def exchange(
        self,
        method: str,
        url: str,
        body: Any = None,
        accept: str = "application/json",
        extra: Mapping[str, str] | None = None,
    ) -> tuple[bytes, str, Mapping[str, str]]:
        """:meth:`call`, also returning the answer's headers."""
        headers = {"Authorization": f"token {self.token}", "Accept": accept, **(extra or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.read(), response.headers.get("Content-Type", ""), response.headers
        except urllib.error.HTTPError as e:
            status, error = e.code, api_error(e.code, e.read(), url, self.hub)
            error.status = status
        except urllib.error.URLError as e:
            raise self._unreachable(e.reason) from None
        except (OSError, http.client.HTTPException) as e:
            raise self._unreachable(e) from None
        if status == 403 and not self.token_is_valid():
            # The service answers 403 to anybody it cannot identify; a token the hub itself
            # refuses is a credentials problem (3), not a refusal of this request (1).
            raise api_error(401, b"", url, self.hub)
        raise error

    def token_is_valid(self) -> bool:
        """Whether the hub accepts the token at all (``GET /hub/api/user``: any valid token may)."""
        request = urllib.request.Request(f"{self.hub}/hub/api/user", headers={"Authorization": f"token {self.token}"})
        try:
            with self._opener.open(request, timeout=self.timeout):
                return True
        except urllib.error.HTTPError as e:
            return e.code not in (401, 403)
        except (OSError, http.client.HTTPException):
            return True  # cannot tell: keep the service's own answer

    def json(
        self, method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> tuple[bytes, Any]:
        """(raw body, decoded JSON) of a 2xx answer; a body that is not JSON means the URL is not the API."""
        raw, _ = self.call(method, url, body, headers=headers)
        return raw, self.decode(raw, url)

    def decode(self, raw: bytes, url: str) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            raise QuotaError(
                UNREACHABLE,
                f"{url} answered, but not with the quotas API's JSON: is {self.hub} (--hub-url or $AIDC_HUB_URL)"
                " the hub's address?",
            ) from None

    def _unreachable(self, reason: object) -> QuotaError:
        if isinstance(reason, TimeoutError | socket.timeout):
            why = f"it did not answer within {self.timeout:g} s"
        elif isinstance(reason, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(reason, socket.gaierror):
            why = "unknown host name"
        elif isinstance(reason, OSError) and reason.strerror:
            why = reason.strerror.lower()
        else:
            why = str(reason) or type(reason).__name__
        return QuotaError(
            UNREACHABLE,
            f"Cannot reach the hub at {self.hub}: {why}. Is the hub running there?"
            " Pass its address with --hub-url URL or $AIDC_HUB_URL.",
        )


# Checks of option values, before any request. Names are an argparse type (a bad one is a usage
# error); the others raise ValueError, collected by _checked so that every problem is reported.


def _subject(value: str) -> str:
    if not LIMIT_SUBJECT.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid user or group name (letters, digits and . _ @ + -)")
    return value


def _gpu_count(value: str) -> tuple[str, int]:
    gpu_type, sep, count = (part.strip() for part in value.partition("="))
    if not sep or not gpu_type:
        raise ValueError(f"--gpus {value!r} is not TYPE=COUNT, such as H100=2")
    if not (count.isascii() and count.isdigit()):
        raise ValueError(f"--gpus {value!r}: the count of {gpu_type} GPUs must be a whole number, 0 or more")
    return gpu_type, int(count)


def _count(value: str) -> int:
    text = value.strip()
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"--servers {value!r} is not a whole number, 0 or more")
    return int(text)


def _cpu(value: str) -> str:
    text = value.strip()
    if not _CPU.match(text):
        raise ValueError(f"--cpu {value!r} is not an amount of CPU: write cores, such as 8, 0.5 or 500m")
    return text


def _memory(value: str) -> str:
    text = value.strip()
    try:
        amount = parse_quantity(text)
    except QuantityError as e:
        raise ValueError(f"--memory {e}") from None
    if amount < 0:
        raise ValueError(f"--memory {value!r} is negative; write an amount such as 64Gi")
    return text


def _hours(value: str) -> str:
    text = value.strip()
    if not _PLAIN_NUMBER.match(text):
        raise ValueError(f"--gpu-hours {value!r} is not a number of GPU-hours, 0 or more, such as 100 or 12.5")
    return text


def _clear_field(value: str) -> str:
    field = value.strip().replace("-", "_")
    if field in ("gpus", *SCALAR_FIELDS) or (field.startswith("gpus.") and len(field) > 5):
        return field
    raise ValueError(
        f"--clear {value!r} is not a field of a limit; use gpus, gpus.TYPE (such as gpus.H100),"
        f" {', '.join(SCALAR_FIELDS)}"
    )


def _day(value: str, flag: str) -> str:
    try:
        if len(value) == 10:
            return date.fromisoformat(value).isoformat()
    except ValueError:
        pass
    raise ValueError(f"{flag} {value!r} is not a date; write YYYY-MM-DD, such as 2026-01-31")


_T = TypeVar("_T")


def _checked(problems: list[str], check: Callable[[str], _T], value: str) -> _T | None:
    """``check(value)``, or None with its reason added to ``problems`` (so every problem is reported at once)."""
    try:
        return check(value)
    except ValueError as e:
        problems.append(str(e))
        return None


def limit_changes(args: argparse.Namespace) -> tuple[dict[str, int], dict[str, Any], list[str]]:
    """The (gpus, other fields, cleared fields) that ``aidc quota set`` was asked to change.

    Raises :class:`QuotaError` (2) listing every problem: a value that is not a count, a CPU
    amount, a memory quantity or a number of hours; a field both set and cleared; a GPU type given
    twice; ``--remove`` with changes; nothing to do. Ceilings and GPU types are the API's to check.
    """
    problems: list[str] = []
    gpus: dict[str, int] = {}
    for text in args.gpus or ():
        parsed = _checked(problems, _gpu_count, text)
        if parsed is None:
            continue
        gpu_type, count = parsed
        if gpus.get(gpu_type, count) != count:
            problems.append(f"--gpus gives {gpu_type} twice ({gpus[gpu_type]} and {count}); give it once")
        gpus[gpu_type] = count
    values: dict[str, Any] = {}
    for field, check in (("servers", _count), ("cpu", _cpu), ("memory", _memory), ("gpu_hours", _hours)):
        text = getattr(args, field)
        if text is not None:
            value = _checked(problems, check, text)
            if value is not None:
                values[field] = value
    clear = [f for f in dict.fromkeys(_checked(problems, _clear_field, t) for t in args.clear or ()) if f]
    for field in clear:
        if field in values or (field == "gpus" and gpus) or (field.startswith("gpus.") and field[5:] in gpus):
            problems.append(f"{field} is both set and cleared (--clear {field}); choose one")
    given = bool(args.gpus or args.clear or any(getattr(args, f) is not None for f in SCALAR_FIELDS))
    if args.remove and given:
        problems.append(
            "--remove deletes the whole limit; it cannot be combined with --gpus, --servers, --cpu, --memory,"
            " --gpu-hours or --clear"
        )
    if not args.remove and not given:
        problems.append(
            "nothing to change: give --gpus TYPE=N, --servers N, --cpu Q, --memory Q, --gpu-hours N,"
            " --clear FIELD or --remove"
        )
    if problems:
        raise QuotaError(BAD_INPUT, "Nothing was changed: the options of `aidc quota set` are not valid.", problems)
    return gpus, values, clear


def usage_query(args: argparse.Namespace) -> dict[str, str]:
    """The query of ``GET api/tenants/T/usage`` for ``aidc quota usage``; :class:`QuotaError` (2) lists
    every bad option (the API checks the range itself: from before to, at most 366 days)."""
    problems: list[str] = []
    query = {"by": args.by}
    for key, flag, value in (("from", "--from", args.start), ("to", "--to", args.end)):
        if value is not None:
            day = _checked(problems, functools.partial(_day, flag=flag), value)
            if day:
                query[key] = day
    if args.user:
        if args.by != "user":
            problems.append(f"--user picks rows per user; it cannot be combined with --by {args.by}")
        query["user"] = args.user
    if args.daily:
        query["daily"] = "1"
    if problems:
        raise QuotaError(BAD_INPUT, "The options of `aidc quota usage` are not valid.", problems)
    return query


def merge_limit(
    current: Mapping[str, Any] | None, gpus: Mapping[str, int], values: Mapping[str, Any], clear: Sequence[str]
) -> dict[str, Any]:
    """The limit to PUT: ``current`` (the API's JSON of the stored limit, or None) with the fields in
    ``clear`` removed, then ``gpus`` and ``values`` set. Fields not named keep their stored value."""
    current = current or {}
    merged: dict[str, Any] = {"gpus": {str(t): int(n) for t, n in (current.get("gpus") or {}).items()}}
    for field in SCALAR_FIELDS:
        merged[field] = current.get(field)
    for field in clear:
        if field == "gpus":
            merged["gpus"] = {}
        elif field.startswith("gpus."):
            merged["gpus"].pop(field[5:], None)
        else:
            merged[field] = None
    merged["gpus"].update(gpus)
    merged.update(values)
    return merged


SET_ATTEMPTS = 3


def _read_limit(api: QuotasAPI, url: str) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The stored limit at ``url`` (None when none is set) and the precondition that writes over it alone."""
    try:
        raw, _, headers = api.exchange("GET", url)
    except QuotaError as e:
        if e.status == 404:
            return None, {"If-None-Match": "*"}
        raise
    limit = api.decode(raw, url)
    etag = headers.get("ETag")
    if not isinstance(limit, dict) or not etag:
        raise QuotaError(
            REFUSED, f"{url} answered without the limit's ETag: is the quotas service older than this aidc?"
        )
    return limit, {"If-Match": etag}


def is_empty_limit(limit: Mapping[str, Any]) -> bool:
    """True when no field limits anything (storing it removes the limit)."""
    return not limit.get("gpus") and all(limit.get(f) is None for f in SCALAR_FIELDS)


def pick_tenant(given: str | None, visible: Sequence[str]) -> str:
    """``--tenant`` if given, else the caller's only tenant; several or none is an error for a person."""
    if given:
        return given
    if len(visible) == 1:
        return visible[0]
    if not visible:
        raise QuotaError(
            REFUSED, "You are in no tenant, so there are no limits or usage to show; ask a platform admin."
        )
    raise QuotaError(BAD_INPUT, f"You can see {len(visible)} tenants ({', '.join(visible)}); say which with --tenant.")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table, columns left-aligned and padded to their widest cell."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *rows)
    )


def format_limits(limits: Sequence[Mapping[str, Any]]) -> str:
    """Limits (the API's JSON) as a table; ``-`` is "no limit beyond the tenant's ceiling"."""
    rows = [
        [
            str(limit.get("kind", "")),
            str(limit.get("name", "")),
            " ".join(f"{t}={n}" for t, n in sorted((limit.get("gpus") or {}).items())) or "-",
            _cell(limit.get("servers")),
            _cell(limit.get("cpu")),
            _cell(limit.get("memory")),
            _cell(limit.get("gpu_hours")),
        ]
        for limit in limits
    ]
    return format_table(["KIND", "NAME", "GPUS", "SERVERS", "CPU", "MEMORY", "GPU-HOURS/MONTH"], rows)


def format_usage(
    rows: Sequence[Mapping[str, Any]], by: str, daily: bool, total: Mapping[str, Any] | None = None
) -> str:
    """Usage rows (the API's JSON) as a table; ``total`` (the API's) is a last line when rows are per user."""
    headers = [*(["DAY"] if daily else []), by.upper(), "GPU-HOURS", "CPU-HOURS", "RUNS"]
    table = [
        [
            *([str(r.get("day") or "")] if daily else []),
            str(r.get("subject", "")),
            _hours_cell(r.get("gpu_hours")),
            _hours_cell(r.get("cpu_hours")),
            str(r.get("runs", 0)),
        ]
        for r in rows
    ]
    # Group rows overlap (a person in two groups counts in both), so only per-user rows add up.
    if total and by == "user" and len(rows) > 1:
        table.append(
            [
                *([""] if daily else []),
                "total",
                _hours_cell(total.get("gpu_hours")),
                _hours_cell(total.get("cpu_hours")),
                str(total.get("runs", 0)),
            ]
        )
    return format_table(headers, table)


def format_ceiling(tenant: Mapping[str, Any]) -> str:
    """One tenant of ``GET api/tenants/T`` as two lines: what the platform grants and what is used now."""
    ceiling, used = tenant.get("ceiling") or {}, tenant.get("in_use") or {}
    granted = [f"{t}={n} GPUs" for t, n in sorted((ceiling.get("gpus") or {}).items())] or ["no GPUs"]
    if ceiling.get("servers") is not None:
        granted.append(f"{ceiling['servers']} servers")
    if ceiling.get("servers_per_user") is not None:
        granted.append(f"{ceiling['servers_per_user']} per person")
    for key, label in (("cpu", "CPU"), ("memory", "memory"), ("gpu_hours_per_month", "GPU-hours/month")):
        if ceiling.get(key) is not None:
            granted.append(f"{label} {ceiling[key]}")
    in_use = [f"{t}={n} GPUs" for t, n in sorted((used.get("gpus") or {}).items())]
    in_use += [f"{used.get('servers', 0)} servers", f"CPU {used.get('cpu', 0)}", f"memory {used.get('memory', 0)}"]
    in_use.append(f"{used.get('gpu_hours', 0)} GPU-hours in {used.get('period') or 'this period'}")
    name = tenant.get("display_name") or tenant.get("id", "")
    return f"Tenant {tenant.get('id', '')} ({name})\n  ceiling: {', '.join(granted)}\n  in use:  {', '.join(in_use)}"


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _hours_cell(value: Any) -> str:
    """Hours (the API's exact string) in a table, to 1/100 as the quotas page shows them."""
    return format_number(Decimal(str(value or 0)), 2)


def tenant_ids(doc: Any) -> list[str]:
    """The tenant ids in the API's answer to ``GET api/tenants`` (``{"tenants": [{"id": ...}, ...]}``)."""
    return [str(t["id"]) for t in _items(doc, "tenants") if "id" in t]


def _items(doc: Any, key: str) -> list[dict[str, Any]]:
    items = doc.get(key) if isinstance(doc, dict) else None
    return [item for item in items or () if isinstance(item, dict)]


def _quotas_api(args: argparse.Namespace) -> QuotasAPI:
    hub = hub_url(args.hub_url, os.environ)
    return QuotasAPI(hub, read_token(args.token_file, os.environ, hub))


def _resolve_tenant(api: QuotasAPI, args: argparse.Namespace) -> str:
    if args.tenant:
        return str(args.tenant)
    return pick_tenant(None, tenant_ids(api.json("GET", api.url("tenants"))[1]))


def _subject_of(args: argparse.Namespace) -> tuple[str, str, str]:
    """(URL segment "users"|"groups", kind "user"|"group", name) of ``--user``/``--group``."""
    if args.user:
        return "users", "user", args.user
    return "groups", "group", args.group


def _write(raw: bytes) -> None:
    sys.stdout.buffer.write(raw if raw.endswith(b"\n") else raw + b"\n")
    sys.stdout.flush()


def cmd_quota_show(args: argparse.Namespace) -> int:
    api = _quotas_api(args)
    tenant = _resolve_tenant(api, args)
    if args.user or args.group:
        segment, _, name = _subject_of(args)
        raw, doc = api.json("GET", api.url("tenants", tenant, "limits", segment, name))
        limits = [doc]
    else:
        raw, doc = api.json("GET", api.url("tenants", tenant, "limits"))
        limits = _items(doc, "limits")
    if args.json:
        _write(raw)
        return OK
    _, summary = api.json("GET", api.url("tenants", tenant))
    print(format_ceiling(summary))
    if limits:
        print(format_limits(limits))
    else:
        print(
            f"No limits are set in tenant {tenant} (that you may see): only the tenant's ceiling applies.",
            file=sys.stderr,
        )
    return OK


def cmd_quota_set(args: argparse.Namespace) -> int:
    gpus, values, clear = limit_changes(args)
    api = _quotas_api(args)
    segment, kind, name = _subject_of(args)
    url = api.url("tenants", args.tenant, "limits", segment, name)
    if args.remove:
        api.call("DELETE", url)
        print(
            f"Removed the limit of {kind} {name} in tenant {args.tenant}: only the tenant's ceiling applies now.",
            file=sys.stderr,
        )
        return OK
    # PUT replaces the whole limit: start from the stored one, and write only over what was read
    # (If-Match); if another admin changed it in between, merge these options into theirs and try again
    for attempt in range(1, SET_ATTEMPTS + 1):
        current, precondition = _read_limit(api, url)
        merged = merge_limit(current, gpus, values, clear)
        try:
            raw, stored = api.json("PUT", url, merged, headers=precondition)
            break
        except QuotaError as e:
            if e.status != 412:
                raise
            if attempt == SET_ATTEMPTS:
                raise QuotaError(
                    REFUSED,
                    f"The limit of {kind} {name} in tenant {args.tenant} kept changing while this command ran"
                    f" ({SET_ATTEMPTS} tries): nothing was changed. Check who else edits it, then run the command again.",
                ) from None
    if args.json:
        _write(raw)
    elif is_empty_limit(stored):
        print(
            f"No field is left in the limit of {kind} {name} in tenant {args.tenant}:"
            " only the tenant's ceiling applies now.",
            file=sys.stderr,
        )
    else:
        print(format_limits([stored]))
    return OK


def cmd_quota_usage(args: argparse.Namespace) -> int:
    query = usage_query(args)
    api = _quotas_api(args)
    tenant = _resolve_tenant(api, args)
    if args.csv:
        url = api.url("tenants", tenant, "usage", query={**query, "format": "csv"})
        raw, _ = api.call("GET", url, accept="text/csv")
        _write(raw)
        return OK
    raw, doc = api.json("GET", api.url("tenants", tenant, "usage", query=query))
    if args.json:
        _write(raw)
        return OK
    print(f"Usage of tenant {tenant} from {doc.get('from')} to {doc.get('to')} (exclusive, UTC), by {args.by}:")
    rows = _items(doc, "rows")
    if rows:
        print(format_usage(rows, args.by, args.daily, doc.get("total")))
    else:
        print("No usage in this period.", file=sys.stderr)
    return OK


_SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_HOST = re.compile(r"^[A-Za-z0-9.:\[\]-]+\Z")
DEFAULT_SSH_PORT = 2222


def format_servers(servers: Sequence[Mapping[str, Any]]) -> str:
    """Servers (the API's JSON, ``GET api/tenants/T/servers``) as a table."""
    rows = [
        [
            str(s.get("user", "")),
            str(s.get("server") or "(default)"),
            str(s.get("profile", "")),
            " ".join(f"{t}={n}" for t, n in sorted((s.get("gpus") or {}).items())) or "-",
            _cell(s.get("cpu")),
            _cell(s.get("memory")),
            _cell(s.get("started")),
            _hours_cell(s.get("gpu_hours")),
        ]
        for s in servers
    ]
    return format_table(["USER", "SERVER", "PROFILE", "GPUS", "CPU", "MEMORY", "STARTED", "GPU-HOURS"], rows)


def _show_list(
    args: argparse.Namespace,
    what: str,
    table: Callable[[list[dict[str, Any]]], str],
    none: Callable[[str], str],
) -> int:
    """``GET api/tenants/T/<what>`` printed as the API's JSON (``--json``), as ``table`` of its
    ``<what>`` items, or, when there are none, ``none(tenant)`` on standard error."""
    api = _quotas_api(args)
    tenant = _resolve_tenant(api, args)
    raw, doc = api.json("GET", api.url("tenants", tenant, what))
    if args.json:
        _write(raw)
        return OK
    items = _items(doc, what)
    if items:
        print(table(items))
    else:
        print(none(tenant), file=sys.stderr)
    return OK


def cmd_quota_servers(args: argparse.Namespace) -> int:
    return _show_list(
        args,
        "servers",
        format_servers,
        lambda tenant: f"No server charged to tenant {tenant} that you may see is running.",
    )


def cmd_quota_stop(args: argparse.Namespace) -> int:
    user, _, server = args.server.partition("/")
    api = _quotas_api(args)
    api.call("DELETE", api.url("tenants", args.tenant, "servers", user, *((server,) if server else ())))
    label = f"server {user}/{server}" if server else f"{user}'s default server"
    print(f"Stopped {label}, charged to tenant {args.tenant}.", file=sys.stderr)
    return OK


def format_queue(queue: Sequence[Mapping[str, Any]], now: datetime) -> str:
    """Waiting GPU requests (the API's JSON, ``GET api/tenants/T/queue``) as a table, first in line first."""
    rows = [
        [
            f"{q['position']}/{q['length']}" if q.get("position") and q.get("length") else "-",
            str(q.get("user", "")),
            str(q.get("server") or "(default)"),
            f"{q.get('gpu_type', '?')}={q.get('gpu_count', '?')}",
            _since(q.get("enqueued"), now),
            str(q.get("reason") or "just joined: its place is decided within a second"),
        ]
        for q in queue
    ]
    return format_table(["PLACE", "USER", "SERVER", "GPUS", "WAITING SINCE", "WHY"], rows)


def _since(value: Any, now: datetime) -> str:
    """``"2026-11-20 14:05 UTC (3m 20s)"`` of the API's ISO time; the text as it is if it is not one."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return _cell(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC ({format_duration(now - moment)})"


def cmd_quota_queue(args: argparse.Namespace) -> int:
    return _show_list(
        args,
        "queue",
        lambda queue: format_queue(queue, datetime.now(UTC)),
        lambda tenant: (
            f"No one waits in tenant {tenant}'s GPU queue (that you may see: tenant admins see everyone,"
            " members their own requests)."
        ),
    )


def _server_ref(value: str) -> str:
    """``USER`` (their default server) or ``USER/SERVER``."""
    user, sep, server = value.partition("/")
    if not LIMIT_SUBJECT.match(user) or (sep and not _SERVER_NAME.match(server)):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not USER or USER/SERVER (named servers use letters, digits and . _ -)"
        )
    return value


def ssh_config_block(user: str, host: str, port: int, servers: Sequence[str] = (), alias: str = "aidc") -> str:
    """The ``~/.ssh/config`` block for ``user``'s workspaces behind the gateway at ``host``:``port``:
    ``Host <alias>`` for the default server (SSH user ``user``) and ``Host <alias>-<server>`` for
    each named server (SSH user ``user.server``)."""
    lines = [
        f"# AIDC Hub: {user}'s workspaces through the SSH gateway at {host} port {port}.",
        "# Register your public key first (the quotas page, SSH keys). A stopped server starts when you connect.",
    ]
    for name, ssh_user in [(alias, user), *((f"{alias}-{s}", f"{user}.{s}") for s in servers)]:
        lines += [f"Host {name}", f"    HostName {host}", f"    Port {port}", f"    User {ssh_user}"]
    return "\n".join(lines) + "\n"


def _ssh_host(value: str | None, env: Mapping[str, str]) -> str:
    """The gateway's host: ``--host``, ``$AIDC_SSH_HOST``, else the host of the hub's URL."""
    given = (value or env.get("AIDC_SSH_HOST") or "").strip()
    if not given:
        try:
            given = urllib.parse.urlsplit(hub_url(None, env)).hostname or ""
        except QuotaError as e:
            raise ValueError(e.message) from None
    if not _HOST.match(given):
        raise ValueError(f"{given!r} is not a host name or address; pass the gateway's with --host.")
    return given


def _ssh_port(value: str | None, env: Mapping[str, str]) -> int:
    text = (value or env.get("AIDC_SSH_PORT") or str(DEFAULT_SSH_PORT)).strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"The SSH port {text!r} is not a port number (1-65535); e.g. --port 2222.")
    return int(text)


def cmd_ssh_config(args: argparse.Namespace) -> int:
    try:
        user = args.user or os.environ.get("JUPYTERHUB_USER") or ""
        if not user:
            raise ValueError("Whose workspaces? Pass --user NAME (your hub login name).")
        if not USER_PATTERN.match(user):
            raise ValueError(f"{user!r} (from $JUPYTERHUB_USER) is not a hub username; pass --user NAME.")
        bad = [s for s in args.server or () if not _SERVER_NAME.match(s)]
        if bad:
            raise ValueError(
                f"Not a server name: {', '.join(map(repr, bad))}; named servers use letters, digits and . _ -."
            )
        host, port = _ssh_host(args.host, os.environ), _ssh_port(args.port, os.environ)
    except ValueError as e:
        print(f"aidc ssh-config: {e}", file=sys.stderr)
        return BAD_INPUT
    sys.stdout.write(ssh_config_block(user, host, port, list(dict.fromkeys(args.server or ())), args.alias))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aidc", description="AIDC Hub operator command")
    parser.add_argument("--data-dir", help="state directory (default: $AIDC_DATA_DIR or .aidc)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="create the data directory and the first admin account")
    p.add_argument("--url", default=os.environ.get("AIDC_BIND_URL", "http://127.0.0.1:8000"))
    p.set_defaults(func=cmd_init)

    user = sub.add_parser("user", help="manage local accounts").add_subparsers(dest="action", required=True)
    for action, func, text in (
        ("add", cmd_user_add, "create an account and print its generated password"),
        ("passwd", cmd_user_passwd, "set a new password"),
        ("remove", cmd_user_remove, "delete an account"),
    ):
        p = user.add_parser(action, help=text)
        p.add_argument("name", type=_username)
        if action != "remove":
            p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
        if action == "add":
            p.add_argument("--admin", action="store_true", help="make the account a platform admin")
        p.set_defaults(func=func)
    user.add_parser("list", help="list accounts").set_defaults(func=cmd_user_list)

    p = sub.add_parser("check-config", help="validate tenants.yaml")
    p.add_argument("file", nargs="?", help="tenants.yaml (default: $AIDC_TENANTS or the example)")
    p.add_argument("--catalog", help="image catalog (default: images/catalog.yaml)")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("gpus", help="show this machine's GPU inventory")
    p.add_argument("--file", help="tenants.yaml that declares the GPU types")
    p.set_defaults(func=cmd_gpus)

    p = sub.add_parser("reconcile", help="create/update every tenant's namespace, quota, policies and hub access")
    p.add_argument("--file", help="tenants.yaml (default: $AIDC_TENANTS or the example)")
    p.add_argument("--kubeconfig", help="kubeconfig (default: in-cluster, then ~/.kube/config)")
    p.add_argument("--namespace-template", default="aidc-{tenant}")
    p.add_argument("--hub-namespace", default="aidc", help="namespace the hub runs in")
    p.add_argument("--hub-service-account", default="hub", help="the hub's service account")
    p.add_argument(
        "--kueue",
        action="store_true",
        help="also Kueue's GPU queues: ResourceFlavors, each tenant's ClusterQueue and LocalQueue (Kueue v0.17 installed)",
    )
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser(
        "reload",
        help="apply the edited tenants.yaml and image catalog to the running hub (checked first; refused if invalid)",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the hub's answer (default 30)")
    p.set_defaults(func=cmd_reload)

    _add_quota_parser(sub)

    p = sub.add_parser(
        "ssh-config",
        allow_abbrev=False,
        help="print a ~/.ssh/config block to reach your workspaces through the SSH gateway",
        description="Prints Host blocks for the gateway: '<alias>' is your default server, '<alias>-<server>' each"
        " named server. Append them to ~/.ssh/config, then: ssh aidc.",
    )
    p.add_argument("--user", type=_username, help="your hub login name (default: $JUPYTERHUB_USER)")
    p.add_argument("--host", help="the gateway's host (default: $AIDC_SSH_HOST, else the host of $AIDC_HUB_URL)")
    p.add_argument("--port", help=f"the gateway's port (default: $AIDC_SSH_PORT or {DEFAULT_SSH_PORT})")
    p.add_argument(
        "--server", action="append", metavar="NAME", help="a named server to add a block for (repeat for more)"
    )
    p.add_argument("--alias", default="aidc", type=_alias, help="the Host name of the default server (default: aidc)")
    p.set_defaults(func=cmd_ssh_config)
    return parser


def _add_quota_parser(sub: Any) -> None:
    # No abbreviations: `--token x` must not silently become `--token-file x`.
    quota = sub.add_parser(
        "quota",
        allow_abbrev=False,
        help="show and set tenant limits, report usage (through the hub's quotas API)",
        description=(
            "Talks to the quotas service of a running hub (never to its database), as the owner of the API token."
            " Hub: --hub-url, $AIDC_HUB_URL or http://127.0.0.1:8000. Token: --token-file, $AIDC_TOKEN or"
            " $JUPYTERHUB_API_TOKEN (create one at <hub>/hub/token). Exit codes: 0 done, 1 refused or not found,"
            " 2 bad usage or input, 3 the hub cannot be reached or no token."
        ),
    )
    actions = quota.add_subparsers(dest="action", required=True)
    connection = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    connection.add_argument("--hub-url", help="the hub's address (default: $AIDC_HUB_URL or http://127.0.0.1:8000)")
    connection.add_argument(
        "--token-file", help="a file holding your hub API token (default: $AIDC_TOKEN, then $JUPYTERHUB_API_TOKEN)"
    )

    p = actions.add_parser(
        "show", parents=[connection], allow_abbrev=False, help="show the limits of a tenant, or of one user or group"
    )
    p.add_argument("--tenant", help="tenant id (default: your only tenant)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--user", type=_subject, help="only this user's limit")
    who.add_argument("--group", type=_subject, help="only this group's limit")
    p.add_argument("--json", action="store_true", help="print the API's JSON as it is")
    p.set_defaults(func=cmd_quota_show)

    p = actions.add_parser(
        "set",
        parents=[connection],
        allow_abbrev=False,
        help="change fields of a user's or group's limit (the others are kept), or remove it",
        description="Reads the current limit, changes only the fields given and stores the result.",
    )
    p.add_argument("--tenant", required=True, help="tenant id")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", type=_subject, help="limit this person's own servers in the tenant")
    who.add_argument("--group", type=_subject, help="limit what this JupyterHub group's members hold together")
    p.add_argument("--gpus", nargs="+", action="extend", metavar="TYPE=N", help="GPUs held at once, e.g. H100=2")
    p.add_argument("--servers", metavar="N", help="servers running at once")
    p.add_argument("--cpu", metavar="Q", help="CPU cores held at once, e.g. 16 or 500m")
    p.add_argument("--memory", metavar="Q", help="memory held at once, e.g. 64Gi")
    p.add_argument("--gpu-hours", metavar="N", help="GPU-hours per calendar month (UTC), e.g. 100")
    p.add_argument(
        "--clear",
        nargs="+",
        action="extend",
        metavar="FIELD",
        help="remove these fields from the limit (gpus, gpus.TYPE, servers, cpu, memory, gpu_hours)",
    )
    p.add_argument("--remove", action="store_true", help="delete the whole limit: only the tenant's ceiling applies")
    p.add_argument("--json", action="store_true", help="print the stored limit as the API's JSON")
    p.set_defaults(func=cmd_quota_set)

    p = actions.add_parser(
        "usage", parents=[connection], allow_abbrev=False, help="GPU- and CPU-hours from the usage ledger"
    )
    p.add_argument("--tenant", help="tenant id (default: your only tenant)")
    p.add_argument("--user", type=_subject, help="only this user's rows (with --by user)")
    p.add_argument("--from", dest="start", metavar="YYYY-MM-DD", help="first day (default: this month's first)")
    p.add_argument("--to", dest="end", metavar="YYYY-MM-DD", help="day after the last (default: next month's first)")
    p.add_argument(
        "--by", choices=("user", "group", "tenant"), default="user", help="rows per user (default), group or tenant"
    )
    p.add_argument("--daily", action="store_true", help="one row per day and subject")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="print the API's CSV as it is")
    fmt.add_argument("--json", action="store_true", help="print the API's JSON as it is")
    p.set_defaults(func=cmd_quota_usage)

    p = actions.add_parser(
        "servers",
        parents=[connection],
        allow_abbrev=False,
        help="the running servers charged to a tenant (tenant admins: all of them; members: their own)",
    )
    p.add_argument("--tenant", help="tenant id (default: your only tenant)")
    p.add_argument("--json", action="store_true", help="print the API's JSON as it is")
    p.set_defaults(func=cmd_quota_servers)

    p = actions.add_parser(
        "stop",
        parents=[connection],
        allow_abbrev=False,
        help="stop a server charged to a tenant (tenant admins: anyone's; members: their own)",
        description="Stops the server through the quotas service, which checks that the hub charges it to --tenant.",
    )
    p.add_argument("--tenant", required=True, help="the tenant the server is charged to")
    p.add_argument(
        "server", type=_server_ref, metavar="USER[/SERVER]", help="whose server (without /SERVER: the default)"
    )
    p.set_defaults(func=cmd_quota_stop)

    p = actions.add_parser(
        "queue",
        parents=[connection],
        allow_abbrev=False,
        help="the GPU requests waiting in a tenant's queue: place in line, whose, GPUs, since when, why"
        " (tenant admins: everyone's; members: their own)",
    )
    p.add_argument("tenant", nargs="?", metavar="TENANT", help="tenant id (default: your only tenant)")
    p.add_argument("--json", action="store_true", help="print the API's JSON as it is")
    p.set_defaults(func=cmd_quota_queue)


def _username(value: str) -> str:
    if not USER_PATTERN.match(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a valid username: use lower-case letters, digits and . _ @ + - (starting with a letter or digit)"
        )
    return value


def _alias(value: str) -> str:
    if not _SERVER_NAME.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a Host alias: use letters, digits and . _ -")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except QuotaError as e:
        print("\n".join(e.lines()), file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if not isinstance(e, _refusals()):
            raise
        print(f"aidc: {e}", file=sys.stderr)
        return 1


def _refusals() -> tuple[type[Exception], ...]:
    """Errors whose message says why a command was refused (exit 1). AccountError only once the
    account store was loaded: it cannot be raised before."""
    auth = sys.modules.get("authenticators.local")
    return (ConfigError, InventoryError, *((auth.AccountError,) if auth else ()))


if __name__ == "__main__":
    sys.exit(main())
