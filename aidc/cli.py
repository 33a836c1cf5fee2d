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

Messages for people are said in the language of the environment (``LANGUAGE``, ``LC_ALL``,
``LC_MESSAGES``, ``LANG``: Korean or English; docs/i18n.md); the quotas API is asked in it too and
its messages are passed on as it says them. What scripts read is the same in every language: the
API's JSON and CSV (``--json``, ``--csv``), ``aidc gpus``, ``aidc user list``, the ``~/.ssh/config``
entries and the exit codes. Option help stays English, and so does ``aidc reload``'s report on
``tenants.yaml`` (the operator's file).
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
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from i18n import DEFAULT_LOCALE, Duration, Moment, Text, _, from_environ, translate
from quotas import paths
from quotas.limits import SCALAR_FIELDS
from quotas.limits import SUBJECT as LIMIT_SUBJECT
from quotas.loader import USER_PATTERN, ConfigError, load_platform
from quotas.quantity import QuantityError, format_number, parse_quantity
from quotas.snapshot import HUB_STATE, QUOTAS_STATE, ReloadOutcome, digest_of, platform_dir, read_state
from spawner.gpus import InventoryError, detect_inventory

# authenticators.local (accounts) loads JupyterHub, a second and more: only the account commands import
# it, so `aidc quota` and `aidc check-config` start at once.
if TYPE_CHECKING:
    from authenticators.local import AccountStore

ADMIN = "admin"


def say(value: object) -> str:
    """``value`` (a :class:`~i18n.Text`, or a list of them) in the language of the command's
    environment (``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``, ``LANG``); anything else as it is."""
    return translate(value, from_environ())


def tell(text: object, file: IO[str] | None = None) -> None:
    """Print a message for people (``text``, a :class:`~i18n.Text`) in the environment's language."""
    print(say(text), file=file)


def reason_of(error: BaseException) -> str:
    """What an error says: the :class:`~i18n.Text` it was raised with (said later in the reader's
    language), else its ``str`` (English from code that does not translate, such as ``tenants.yaml``'s
    loader, or the operating system's)."""
    said = error.args[0] if len(error.args) == 1 else None
    return said if isinstance(said, Text) else str(error)


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
            raise AccountError(_("The password read from standard input is shorter than 8 characters."))
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
        if saved.exists():
            tell(
                _(
                    "Log in at {url} as '{user}' with the password created on the first run (saved in {file}).",
                    url=args.url,
                    user=ADMIN,
                    file=saved,
                )
            )
        else:
            tell(_("Log in at {url} as '{user}' with the password created on the first run.", url=args.url, user=ADMIN))
        return 0
    password = generate_password()
    store.add(ADMIN, password, admin=True)
    fd = os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    tell(
        _("Created the platform admin account (shown once; also saved, readable only by you, in\n{file}):", file=saved)
    )
    print()
    # the credentials' labels stay as they are: people copy the values, scripts find them by label
    print(f"    URL:       {args.url}")
    print(f"    username:  {ADMIN}")
    print(f"    password:  {password}\n")
    command = ".venv/bin/aidc user add alice"  # i18n: a command
    tell(_("Create accounts for people with:  {command}", command=command))
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    password, generated = _new_password(args)
    _store(args).add(args.name, password, admin=args.admin)
    if args.admin:
        tell(_("Created account {name} (platform admin).", name=repr(args.name)))
    else:
        tell(_("Created account {name}.", name=repr(args.name)))
    if generated:
        tell(_("Password: {password}", password=password))
    _warn_if_in_no_tenant(args.name)
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    password, generated = _new_password(args)
    _store(args).set_password(args.name, password)
    if generated:
        tell(_("New password for {name}: {password}", name=repr(args.name), password=password))
    else:
        tell(_("New password for {name} set.", name=repr(args.name)))
    return 0


def cmd_user_remove(args: argparse.Namespace) -> int:
    _store(args).remove(args.name)
    tell(
        _(
            "Removed account {name}. Their running servers keep running until stopped from the admin page.",
            name=repr(args.name),
        )
    )
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
        tell(_("Member of: {tenants}.", tenants=tenants))
    else:
        tell(
            _(
                "Note: {name} is in no tenant of {file}; add them under a tenant's members to let them start servers.",
                name=repr(name),
                file=config.source,
            )
        )


def _tenants_file(value: str | None) -> str:
    return value or paths.tenants_file()


def _catalog_file(value: str | None) -> str:
    return value or paths.catalog_file()


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_platform(_tenants_file(args.file), _catalog_file(args.catalog))
    tell(
        _(
            "{file}: OK ({tenants} tenants, {profiles} profiles, {gpu_types} GPU types)",
            file=config.source,
            tenants=len(config.tenants),
            profiles=len(config.profiles),
            gpu_types=len(config.gpu_types),
        )
    )
    return 0


def cmd_gpus(args: argparse.Namespace) -> int:
    config = load_platform(_tenants_file(args.file), _catalog_file(None))
    gpus = detect_inventory(os.environ.get("AIDC_FAKE_GPUS", ""), config.gpu_types)
    if not gpus:
        tell(_("No GPUs: nvidia-smi is not installed and AIDC_FAKE_GPUS is empty."))
    for g in gpus:
        print(f"{g.index}\t{g.type}\t{g.name}")  # i18n: tab-separated inventory, for scripts
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
        tell(_("aidc reload: {problem}.", problem=reason_of(e)))
        return UNREACHABLE
    if before is None:
        tell(
            _(
                "aidc reload: no hub has started with the data directory {folder} (no {file}).",
                folder=folder.parent,
                file=state_file,
            )
        )
        return UNREACHABLE
    pid, tenants = int(before["pid"]), before["snapshot"]["tenants_file"]
    if not _runs_jupyterhub(pid):
        tell(
            _(
                "aidc reload: the hub of {folder} (pid {pid}) is not running; it reads {file} when it starts.",
                folder=folder.parent,
                pid=pid,
                file=tenants,
            )
        )
        return UNREACHABLE
    now = _files_digest(before["snapshot"]["tenants_file"], before["snapshot"]["catalog_file"])
    try:
        os.kill(pid, signal.SIGHUP)
    except PermissionError:
        tell(
            _("aidc reload: not allowed to signal the hub (pid {pid}); run aidc reload as the hub's own user.", pid=pid)
        )
        return UNREACHABLE

    def answered() -> dict[str, Any] | None:
        state = read_state(state_file)
        if state is None or state["pid"] != pid or state["reloads"] <= before["reloads"] or not state["last"]:
            return None
        return state if not now or state["last"]["read"] in (now, "") else None

    after = _wait_for(answered, args.timeout)
    if after is None:
        tell(
            _(
                "aidc reload: the hub (pid {pid}) has not reported a reload of {file} as it is now within {seconds} s"
                " (a file changed again meanwhile, or the hub is busy); see its log.",
                pid=pid,
                file=tenants,
                seconds=f"{args.timeout:g}",
            )
        )
        return UNREACHABLE
    outcome = ReloadOutcome.from_json(after["last"])
    print("\n".join(outcome.lines()))  # the hub's report on tenants.yaml: the operator's file, in English
    if not outcome.applied:
        return REFUSED
    if after.get("quotas_pid") is None:
        tell(_("The quotas service is not running now; it loads this config when the hub starts it."))
        return OK

    def service_applied() -> dict[str, Any] | None:
        state = read_state(folder / QUOTAS_STATE)
        return state if state is not None and state["snapshot"]["digest"] == outcome.digest else None

    service = _wait_for(service_applied, args.timeout)
    if service is None:
        tell(
            _(
                "The quotas service (pid {pid}) has not loaded it within {seconds} s: until it does, its API, page"
                " and culler use the config before. See the hub's log; restarting the hub applies it everywhere.",
                pid=after["quotas_pid"],
                seconds=f"{args.timeout:g}",
            )
        )
        return REFUSED
    tell(_("The quotas service (pid {pid}) uses it too.", pid=service["pid"]))
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
        print(say(line))
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
    """Why an ``aidc quota`` command stopped: ``code`` is its exit status, ``problems`` every reason.

    The message and problems are this command's :class:`~i18n.Text` (said in the environment's
    language) or the API's own ``str`` (passed on as the API said it)."""

    def __init__(self, code: int, message: str, problems: Sequence[str] = ()):
        super().__init__(message)
        self.code, self.message, self.problems = code, message, list(problems)
        self.status = 0  # the HTTP status of the API's answer, when there was one

    def lines(self, locale: str = DEFAULT_LOCALE) -> list[str]:
        """The message, then each problem it does not already spell out, one per line, in ``locale``."""
        problems = [p for p in self.problems if p not in self.message]  # compared in English
        return [
            "aidc quota: " + translate(self.message, locale),  # i18n: the command's name, then its message
            *("  - " + translate(p, locale) for p in problems),
        ]


def hub_url(value: str | None, env: Mapping[str, str]) -> str:
    """The hub's base URL from ``--hub-url``, ``$AIDC_HUB_URL`` or the default, without a trailing
    ``/`` or ``/hub`` (people copy it from the browser's address bar)."""
    url = (value or env.get("AIDC_HUB_URL") or DEFAULT_HUB_URL).strip().rstrip("/")
    url = url.removesuffix("/hub").rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise QuotaError(
            BAD_INPUT,
            _(
                "The hub URL {url} (from {source}) is not an http(s) URL; write it like {example} or {other}.",
                url=repr(url),
                source="--hub-url" if value else "$AIDC_HUB_URL",
                example=DEFAULT_HUB_URL,
                other="https://hub.example.org",
            ),
        )
    return url


def read_token(token_file: str | None, env: Mapping[str, str], hub: str) -> str:
    """The API token from ``--token-file``, ``$AIDC_TOKEN`` or ``$JUPYTERHUB_API_TOKEN``, in that order.

    There is deliberately no option that takes the token itself: it would show in ``ps``.
    """
    how = _(
        "Create a token at {url}, save it in a file only you can read and pass --token-file FILE (or export AIDC_TOKEN).",
        url=f"{hub}/hub/token",
    )
    where: object
    if token_file:
        try:
            lines = Path(token_file).read_text().splitlines()
        except OSError as e:
            raise QuotaError(
                UNREACHABLE,
                _("Cannot read the token file {file}: {problem}. {how}", file=token_file, problem=e.strerror, how=how),
            ) from None
        token = lines[0].strip() if lines else ""
        where = _("the token file {file}", file=token_file)
    else:
        name = next((n for n in TOKEN_VARIABLES if env.get(n, "").strip()), None)
        if name is None:
            raise QuotaError(
                UNREACHABLE,
                _(
                    "No API token: neither --token-file nor $AIDC_TOKEN nor $JUPYTERHUB_API_TOKEN is set. {how}",
                    how=how,
                ),
            )
        token, where = env[name].strip(), f"${name}"
    if not token:
        raise QuotaError(UNREACHABLE, _("No API token: {where} is empty. {how}", where=where, how=how))
    if not _TOKEN.match(token):
        raise QuotaError(
            UNREACHABLE,
            _(
                "The API token in {where} has spaces or non-ASCII characters; it is not a hub token. {how}",
                where=where,
                how=how,
            ),
        )
    return token


def api_error(status: int, body: bytes, url: str, hub: str) -> QuotaError:
    """The error (with its exit code) for an HTTP answer ``status`` of the quotas API.

    400/422 are bad input (2, with every problem the API listed), 403/404 refusals (1, with the
    API's message), 401 or a redirect to the login page a token the hub refuses (3), 502-504 a quotas
    service the hub cannot reach (3); anything else is a failure of the API (1).
    """
    message, problems = _api_message(body)  # the API's own sentences, passed on as it said them
    if status in (400, 422):
        return QuotaError(
            BAD_INPUT,
            message or _("The quotas API refused the request as invalid ({status}).", status=status),
            problems,
        )
    if status == 401 or 300 <= status < 400:
        return QuotaError(
            UNREACHABLE,
            _(
                "The hub at {hub} does not accept the API token: it may have expired, been revoked or be mistyped."
                " Create a new one at {url} and pass it with --token-file FILE (or $AIDC_TOKEN).",
                hub=hub,
                url=f"{hub}/hub/token",
            ),
        )
    if status in (403, 404):
        if message:
            return QuotaError(REFUSED, message, problems)
        if status == 403:
            why = _(
                "The hub at {hub} refused {url} ({status}); is the quotas service configured on this hub?",
                hub=hub,
                url=url,
                status=status,
            )
        else:
            why = _(
                "The hub at {hub} has no {url} ({status}); is the quotas service configured on this hub?",
                hub=hub,
                url=url,
                status=status,
            )
        return QuotaError(REFUSED, why)
    if status in (502, 503, 504):
        return QuotaError(
            UNREACHABLE,
            _(
                "The hub at {hub} answered, but the quotas service behind it did not ({status})."
                " Try again in a minute; if it persists, ask a platform admin to check the hub's log.",
                hub=hub,
                status=status,
            ),
        )
    return QuotaError(
        REFUSED, message or _("The quotas API failed ({status}) for {url}.", status=status, url=url), problems
    )


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
        raw, content_type, _answer_headers = self.exchange(method, url, body, accept, headers)
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
        # the API's own messages in the language of this command's environment (a language the
        # person saved on the hub comes first)
        headers = {
            "Authorization": f"token {self.token}",
            "Accept": accept,
            "Accept-Language": from_environ(),
            **(extra or {}),
        }
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
        request = urllib.request.Request(
            f"{self.hub}/hub/api/user",  # i18n: a URL
            headers={"Authorization": f"token {self.token}"},
        )
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
        raw, _content_type = self.call(method, url, body, headers=headers)
        return raw, self.decode(raw, url)

    def decode(self, raw: bytes, url: str) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            raise QuotaError(
                UNREACHABLE,
                _(
                    "{url} answered, but not with the quotas API's JSON: is {hub} (--hub-url or $AIDC_HUB_URL)"
                    " the hub's address?",
                    url=url,
                    hub=self.hub,
                ),
            ) from None

    def _unreachable(self, reason: object) -> QuotaError:
        why: object
        if isinstance(reason, TimeoutError | socket.timeout):
            why = _("it did not answer within {seconds} s", seconds=f"{self.timeout:g}")
        elif isinstance(reason, ConnectionRefusedError):
            why = _("connection refused")
        elif isinstance(reason, socket.gaierror):
            why = _("unknown host name")
        elif isinstance(reason, OSError) and reason.strerror:
            why = reason.strerror.lower()  # the operating system's words
        else:
            why = str(reason) or type(reason).__name__
        return QuotaError(
            UNREACHABLE,
            _(
                "Cannot reach the hub at {hub}: {why}. Is the hub running there?"
                " Pass its address with --hub-url URL or $AIDC_HUB_URL.",
                hub=self.hub,
                why=why,
            ),
        )


# Checks of option values, before any request. Names are an argparse type (a bad one is a usage
# error); the others raise ValueError, collected by _checked so that every problem is reported.


def _subject(value: str) -> str:
    if not LIMIT_SUBJECT.match(value):
        raise argparse.ArgumentTypeError(
            say(_("{value} is not a valid user or group name (letters, digits and . _ @ + -)", value=repr(value)))
        )
    return value


def _gpu_count(value: str) -> tuple[str, int]:
    gpu_type, sep, count = (part.strip() for part in value.partition("="))
    if not sep or not gpu_type:
        raise ValueError(_("--gpus {value} is not TYPE=COUNT, such as H100=2", value=repr(value)))
    if not (count.isascii() and count.isdigit()):
        raise ValueError(
            _(
                "--gpus {value}: the count of {gpu} GPUs must be a whole number, 0 or more",
                value=repr(value),
                gpu=gpu_type,
            )
        )
    return gpu_type, int(count)


def _count(value: str) -> int:
    text = value.strip()
    if not (text.isascii() and text.isdigit()):
        raise ValueError(_("--servers {value} is not a whole number, 0 or more", value=repr(value)))
    return int(text)


def _cpu(value: str) -> str:
    text = value.strip()
    if not _CPU.match(text):
        raise ValueError(
            _("--cpu {value} is not an amount of CPU: write cores, such as 8, 0.5 or 500m", value=repr(value))
        )
    return text


def _memory(value: str) -> str:
    text = value.strip()
    try:
        amount = parse_quantity(text)
    except QuantityError as e:
        raise ValueError(_("--memory {problem}", problem=reason_of(e))) from None
    if amount < 0:
        raise ValueError(_("--memory {value} is negative; write an amount such as 64Gi", value=repr(value)))
    return text


def _hours(value: str) -> str:
    text = value.strip()
    if not _PLAIN_NUMBER.match(text):
        raise ValueError(
            _("--gpu-hours {value} is not a number of GPU-hours, 0 or more, such as 100 or 12.5", value=repr(value))
        )
    return text


def _clear_field(value: str) -> str:
    field = value.strip().replace("-", "_")
    if field in ("gpus", *SCALAR_FIELDS) or (field.startswith("gpus.") and len(field) > 5):
        return field
    raise ValueError(
        _(
            "--clear {value} is not a field of a limit; use gpus, gpus.TYPE (such as gpus.H100), {fields}",
            value=repr(value),
            fields=list(SCALAR_FIELDS),
        )
    )


def _day(value: str, flag: str) -> str:
    try:
        if len(value) == 10:
            return date.fromisoformat(value).isoformat()
    except ValueError:
        pass
    raise ValueError(
        _("{flag} {value} is not a date; write YYYY-MM-DD, such as 2026-01-31", flag=flag, value=repr(value))
    )


_T = TypeVar("_T")


def _checked(problems: list[str], check: Callable[[str], _T], value: str) -> _T | None:
    """``check(value)``, or None with its reason added to ``problems`` (so every problem is reported at once)."""
    try:
        return check(value)
    except ValueError as e:
        problems.append(reason_of(e))
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
            problems.append(
                _(
                    "--gpus gives {gpu} twice ({first} and {second}); give it once",
                    gpu=gpu_type,
                    first=gpus[gpu_type],
                    second=count,
                )
            )
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
            problems.append(_("{field} is both set and cleared (--clear {field}); choose one", field=field))
    given = bool(args.gpus or args.clear or any(getattr(args, f) is not None for f in SCALAR_FIELDS))
    if args.remove and given:
        problems.append(
            _(
                "--remove deletes the whole limit; it cannot be combined with --gpus, --servers, --cpu, --memory,"
                " --gpu-hours or --clear"
            )
        )
    if not args.remove and not given:
        problems.append(
            _(
                "nothing to change: give --gpus TYPE=N, --servers N, --cpu Q, --memory Q, --gpu-hours N,"
                " --clear FIELD or --remove"
            )
        )
    if problems:
        raise QuotaError(BAD_INPUT, _("Nothing was changed: the options of `aidc quota set` are not valid."), problems)
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
            problems.append(_("--user picks rows per user; it cannot be combined with --by {by}", by=args.by))
        query["user"] = args.user
    if args.daily:
        query["daily"] = "1"
    if problems:
        raise QuotaError(BAD_INPUT, _("The options of `aidc quota usage` are not valid."), problems)
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
        raw, _content_type, headers = api.exchange("GET", url)
    except QuotaError as e:
        if e.status == 404:
            return None, {"If-None-Match": "*"}
        raise
    limit = api.decode(raw, url)
    etag = headers.get("ETag")
    if not isinstance(limit, dict) or not etag:
        raise QuotaError(
            REFUSED, _("{url} answered without the limit's ETag: is the quotas service older than this aidc?", url=url)
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
            REFUSED, _("You are in no tenant, so there are no limits or usage to show; ask a platform admin.")
        )
    raise QuotaError(
        BAD_INPUT,
        _(
            "You can see {count} tenants ({tenants}); say which with --tenant.",
            count=len(visible),
            tenants=list(visible),
        ),
    )


def _columns(text: str) -> int:
    """The columns ``text`` takes in a terminal: wide characters (Hangul, CJK) take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table, columns left-aligned and padded to their widest cell."""
    widths = [max(_columns(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    return "\n".join(
        "  ".join(str(cell) + " " * (w - _columns(str(cell))) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *rows)
    )


def _headers(locale: str, *names: Text) -> list[str]:
    return [translate(name, locale) for name in names]


def format_limits(limits: Sequence[Mapping[str, Any]], locale: str = DEFAULT_LOCALE) -> str:
    """Limits (the API's JSON) as a table, its headers in ``locale``; ``-`` is "no limit beyond the
    tenant's ceiling"."""
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
    headers = _headers(
        locale, _("KIND"), _("NAME"), _("GPUS"), _("SERVERS"), _("CPU"), _("MEMORY"), _("GPU-HOURS/MONTH")
    )
    return format_table(headers, rows)


USAGE_SUBJECTS = {"user": _("USER"), "group": _("GROUP"), "tenant": _("TENANT")}  # the headers of --by


def format_usage(
    rows: Sequence[Mapping[str, Any]],
    by: str,
    daily: bool,
    total: Mapping[str, Any] | None = None,
    locale: str = DEFAULT_LOCALE,
) -> str:
    """Usage rows (the API's JSON) as a table, its headers in ``locale``; ``total`` (the API's) is a
    last line when rows are per user."""
    subject = translate(USAGE_SUBJECTS.get(by, by.upper()), locale)
    headers = [
        *_headers(locale, *([_("DAY")] if daily else [])),
        subject,
        *_headers(locale, _("GPU-HOURS"), _("CPU-HOURS"), _("RUNS")),
    ]
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
                translate(_("total"), locale),
                _hours_cell(total.get("gpu_hours")),
                _hours_cell(total.get("cpu_hours")),
                str(total.get("runs", 0)),
            ]
        )
    return format_table(headers, table)


def format_ceiling(tenant: Mapping[str, Any], locale: str = DEFAULT_LOCALE) -> str:
    """One tenant of ``GET api/tenants/T`` in ``locale``: a heading, then two lines: what the platform
    grants and what is used now."""
    ceiling, used = tenant.get("ceiling") or {}, tenant.get("in_use") or {}
    granted = [_("{gpu}={count} GPUs", gpu=t, count=n) for t, n in sorted((ceiling.get("gpus") or {}).items())]
    granted = granted or [_("no GPUs")]
    if ceiling.get("servers") is not None:
        granted.append(_("{count} servers", count=ceiling["servers"]))
    if ceiling.get("servers_per_user") is not None:
        granted.append(_("{count} per person", count=ceiling["servers_per_user"]))
    if ceiling.get("cpu") is not None:
        granted.append(_("CPU {amount}", amount=ceiling["cpu"]))
    if ceiling.get("memory") is not None:
        granted.append(_("memory {amount}", amount=ceiling["memory"]))
    if ceiling.get("gpu_hours_per_month") is not None:
        granted.append(_("GPU-hours/month {amount}", amount=ceiling["gpu_hours_per_month"]))
    in_use = [_("{gpu}={count} GPUs", gpu=t, count=n) for t, n in sorted((used.get("gpus") or {}).items())]
    in_use += [
        _("{count} servers", count=used.get("servers", 0)),
        _("CPU {amount}", amount=used.get("cpu", 0)),
        _("memory {amount}", amount=used.get("memory", 0)),
        _(
            "{hours} GPU-hours in {period}",
            hours=used.get("gpu_hours", 0),
            period=used.get("period") or _("this period"),
        ),
    ]
    summary = _(
        "Tenant {tenant} ({name})\n  ceiling: {granted}\n  in use:  {in_use}",
        tenant=tenant.get("id", ""),
        name=tenant.get("display_name") or tenant.get("id", ""),
        granted=granted,
        in_use=in_use,
    )
    return translate(summary, locale)


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


# "user"/"group" (and --by) as a sentence says them
SUBJECT_KINDS = {"user": _("user"), "group": _("group")}
USAGE_BY = {"user": _("user"), "group": _("group"), "tenant": _("tenant")}


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
        segment, _kind, name = _subject_of(args)
        raw, doc = api.json("GET", api.url("tenants", tenant, "limits", segment, name))
        limits = [doc]
    else:
        raw, doc = api.json("GET", api.url("tenants", tenant, "limits"))
        limits = _items(doc, "limits")
    if args.json:
        _write(raw)
        return OK
    _raw, summary = api.json("GET", api.url("tenants", tenant))
    locale = from_environ()
    print(format_ceiling(summary, locale))
    if limits:
        print(format_limits(limits, locale))
    else:
        tell(
            _(
                "No limits are set in tenant {tenant} (that you may see): only the tenant's ceiling applies.",
                tenant=tenant,
            ),
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
        tell(
            _(
                "Removed the limit of {kind} {name} in tenant {tenant}: only the tenant's ceiling applies now.",
                kind=SUBJECT_KINDS[kind],
                name=name,
                tenant=args.tenant,
            ),
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
                    _(
                        "The limit of {kind} {name} in tenant {tenant} kept changing while this command ran"
                        " ({tries} tries): nothing was changed. Check who else edits it, then run the command again.",
                        kind=SUBJECT_KINDS[kind],
                        name=name,
                        tenant=args.tenant,
                        tries=SET_ATTEMPTS,
                    ),
                ) from None
    if args.json:
        _write(raw)
    elif is_empty_limit(stored):
        tell(
            _(
                "No field is left in the limit of {kind} {name} in tenant {tenant}: only the tenant's ceiling applies now.",
                kind=SUBJECT_KINDS[kind],
                name=name,
                tenant=args.tenant,
            ),
            file=sys.stderr,
        )
    else:
        print(format_limits([stored], from_environ()))
    return OK


def cmd_quota_usage(args: argparse.Namespace) -> int:
    query = usage_query(args)
    api = _quotas_api(args)
    tenant = _resolve_tenant(api, args)
    if args.csv:
        url = api.url("tenants", tenant, "usage", query={**query, "format": "csv"})
        raw, _content_type = api.call("GET", url, accept="text/csv")
        _write(raw)
        return OK
    raw, doc = api.json("GET", api.url("tenants", tenant, "usage", query=query))
    if args.json:
        _write(raw)
        return OK
    tell(
        _(
            "Usage of tenant {tenant} from {start} to {end} (exclusive, UTC), by {by}:",
            tenant=tenant,
            start=doc.get("from"),
            end=doc.get("to"),
            by=USAGE_BY.get(args.by, args.by),
        )
    )
    rows = _items(doc, "rows")
    if rows:
        print(format_usage(rows, args.by, args.daily, doc.get("total"), from_environ()))
    else:
        tell(_("No usage in this period."), file=sys.stderr)
    return OK


_SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_HOST = re.compile(r"^[A-Za-z0-9.:\[\]-]+\Z")
DEFAULT_SSH_PORT = 2222


def format_servers(servers: Sequence[Mapping[str, Any]], locale: str = DEFAULT_LOCALE) -> str:
    """Servers (the API's JSON, ``GET api/tenants/T/servers``) as a table, its headers in ``locale``."""
    default = translate(_("(default)"), locale)
    rows = [
        [
            str(s.get("user", "")),
            str(s.get("server") or default),
            str(s.get("profile", "")),
            " ".join(f"{t}={n}" for t, n in sorted((s.get("gpus") or {}).items())) or "-",
            _cell(s.get("cpu")),
            _cell(s.get("memory")),
            _cell(s.get("started")),
            _hours_cell(s.get("gpu_hours")),
        ]
        for s in servers
    ]
    headers = _headers(
        locale,
        *(_("USER"), _("SERVER"), _("PROFILE"), _("GPUS"), _("CPU"), _("MEMORY"), _("STARTED"), _("GPU-HOURS")),
    )
    return format_table(headers, rows)


def _show_list(
    args: argparse.Namespace,
    what: str,
    table: Callable[[list[dict[str, Any]], str], str],
    none: Callable[[str], Text],
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
        print(table(items, from_environ()))
    else:
        tell(none(tenant), file=sys.stderr)
    return OK


def cmd_quota_servers(args: argparse.Namespace) -> int:
    return _show_list(
        args,
        "servers",
        format_servers,
        lambda tenant: _("No server charged to tenant {tenant} that you may see is running.", tenant=tenant),
    )


def cmd_quota_stop(args: argparse.Namespace) -> int:
    user, _slash, server = args.server.partition("/")
    api = _quotas_api(args)
    api.call("DELETE", api.url("tenants", args.tenant, "servers", user, *((server,) if server else ())))
    if server:
        stopped = _(
            "Stopped server {user}/{server}, charged to tenant {tenant}.", user=user, server=server, tenant=args.tenant
        )
    else:
        stopped = _("Stopped {user}'s default server, charged to tenant {tenant}.", user=user, tenant=args.tenant)
    tell(stopped, file=sys.stderr)
    return OK


def format_queue(queue: Sequence[Mapping[str, Any]], now: datetime, locale: str = DEFAULT_LOCALE) -> str:
    """Waiting GPU requests (the API's JSON, ``GET api/tenants/T/queue``) as a table, first in line
    first, in ``locale`` (the API's reasons as it said them)."""
    default = translate(_("(default)"), locale)
    just_joined = translate(_("just joined: its place is decided within a second"), locale)
    rows = [
        [
            f"{q['position']}/{q['length']}" if q.get("position") and q.get("length") else "-",
            str(q.get("user", "")),
            str(q.get("server") or default),
            f"{q.get('gpu_type', '?')}={q.get('gpu_count', '?')}",
            _since(q.get("enqueued"), now, locale),
            str(q.get("reason") or just_joined),
        ]
        for q in queue
    ]
    headers = _headers(locale, _("PLACE"), _("USER"), _("SERVER"), _("GPUS"), _("WAITING SINCE"), _("WHY"))
    return format_table(headers, rows)


def _since(value: Any, now: datetime, locale: str = DEFAULT_LOCALE) -> str:
    """``"2026-11-20 14:05 UTC (3m 20s)"`` of the API's ISO time in ``locale``; the text as it is if it is not one."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return _cell(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    since = _(
        "{day} {clock} UTC ({waited})",
        day=Moment(moment, "date"),
        clock=f"{moment:%H:%M}",
        waited=Duration(now - moment),
    )
    return translate(since, locale)


def cmd_quota_queue(args: argparse.Namespace) -> int:
    return _show_list(
        args,
        "queue",
        lambda queue, locale: format_queue(queue, datetime.now(UTC), locale),
        lambda tenant: _(
            "No one waits in tenant {tenant}'s GPU queue (that you may see: tenant admins see everyone,"
            " members their own requests).",
            tenant=tenant,
        ),
    )


def _server_ref(value: str) -> str:
    """``USER`` (their default server) or ``USER/SERVER``."""
    user, sep, server = value.partition("/")
    if not LIMIT_SUBJECT.match(user) or (sep and not _SERVER_NAME.match(server)):
        raise argparse.ArgumentTypeError(
            say(
                _("{value} is not USER or USER/SERVER (named servers use letters, digits and . _ -)", value=repr(value))
            )
        )
    return value


def ssh_config_block(
    user: str,
    host: str,
    port: int,
    servers: Sequence[str] = (),
    alias: str = "aidc",
    locale: str = DEFAULT_LOCALE,
) -> str:
    """The ``~/.ssh/config`` block for ``user``'s workspaces behind the gateway at ``host``:``port``:
    ``Host <alias>`` for the default server (SSH user ``user``) and ``Host <alias>-<server>`` for
    each named server (SSH user ``user.server``), after two comment lines in ``locale``."""
    about = _(
        "AIDC Hub: {user}'s workspaces through the SSH gateway at {host} port {port}.", user=user, host=host, port=port
    )
    register = _(
        "Register your public key first (the quotas page, SSH keys). A stopped server starts when you connect."
    )
    lines = ["# " + translate(about, locale), "# " + translate(register, locale)]
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
        raise ValueError(_("{host} is not a host name or address; pass the gateway's with --host.", host=repr(given)))
    return given


def _ssh_port(value: str | None, env: Mapping[str, str]) -> int:
    text = (value or env.get("AIDC_SSH_PORT") or str(DEFAULT_SSH_PORT)).strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(_("The SSH port {port} is not a port number (1-65535); e.g. --port 2222.", port=repr(text)))
    return int(text)


def cmd_ssh_config(args: argparse.Namespace) -> int:
    try:
        user = args.user or os.environ.get("JUPYTERHUB_USER") or ""
        if not user:
            raise ValueError(_("Whose workspaces? Pass --user NAME (your hub login name)."))
        if not USER_PATTERN.match(user):
            raise ValueError(
                _("{user} (from $JUPYTERHUB_USER) is not a hub username; pass --user NAME.", user=repr(user))
            )
        bad = [s for s in args.server or () if not _SERVER_NAME.match(s)]
        if bad:
            raise ValueError(
                _(
                    "Not a server name: {names}; named servers use letters, digits and . _ -.",
                    names=[repr(name) for name in bad],
                )
            )
        host, port = _ssh_host(args.host, os.environ), _ssh_port(args.port, os.environ)
    except ValueError as e:
        print("aidc ssh-config: " + say(reason_of(e)), file=sys.stderr)  # i18n: the command's name, then why
        return BAD_INPUT
    servers = list(dict.fromkeys(args.server or ()))
    sys.stdout.write(ssh_config_block(user, host, port, servers, args.alias, from_environ()))
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
        ("add", cmd_user_add, "create an account and print its generated password"),  # i18n: help, English
        ("passwd", cmd_user_passwd, "set a new password"),  # i18n: help, English
        ("remove", cmd_user_remove, "delete an account"),  # i18n: help, English
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
            say(
                _(
                    "{value} is not a valid username: use lower-case letters, digits and . _ @ + -"
                    " (starting with a letter or digit)",
                    value=repr(value),
                )
            )
        )
    return value


def _alias(value: str) -> str:
    if not _SERVER_NAME.match(value):
        raise argparse.ArgumentTypeError(
            say(_("{value} is not a Host alias: use letters, digits and . _ -", value=repr(value)))
        )
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except QuotaError as e:
        print("\n".join(e.lines(from_environ())), file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if not isinstance(e, _refusals()):
            raise
        print("aidc: " + say(reason_of(e)), file=sys.stderr)  # i18n: the command's name, then why
        return 1


def _refusals() -> tuple[type[Exception], ...]:
    """Errors whose message says why a command was refused (exit 1). AccountError only once the
    account store was loaded: it cannot be raised before."""
    auth = sys.modules.get("authenticators.local")
    return (ConfigError, InventoryError, *((auth.AccountError,) if auth else ()))


if __name__ == "__main__":
    sys.exit(main())
