"""A slow, failing Kubernetes API server for the `k8s` tier: a proxy in front of the bed's.

``SlowApi(plane, workdir).start()`` listens on a free loopback port with TLS (a server
certificate for 127.0.0.1 signed by the plane's CA), forwards every request to the plane's
kube-apiserver with the plane's admin client certificate, and streams the answers back (watches
stay open, chunk by chunk). It writes ``workdir/slowapi.kubeconfig`` (server: the proxy, CA: the
plane's, no credentials of its own) for a hub to use as its ``KUBECONFIG``.

While it runs, a test makes the API server slow or failing with rules, first match wins::

    proxy.rule(method="POST", path_regex=r"/api/v1/namespaces/[^/]+/pods$", times=1, hold_response=60)

- ``delay_request=s``: wait ``s`` seconds, then forward (also when the client has given up meanwhile:
  the API server acts on it late, as a loaded one does);
- ``hold_response=s``: forward at once (the API server acts on it), then keep its answer back for
  ``s`` seconds, or until the client gives up (closes the connection), whichever comes first: a
  create that "timed out" on the client's side but succeeded;
- ``answer=(status, retry_after)``: answer ``status`` (429, 500, 503, ...) with a Kubernetes
  ``Status`` body and, unless ``retry_after`` is None, a ``Retry-After`` header, without forwarding.

It records every request (:class:`Recorded`: method, path, status, when it came, was answered and
ended, whether the client gave up first, the start of the answer's body) for assertions:
``proxy.requests(method="POST", path_regex=...)``, and :func:`max_in_flight` of such a list.

Run ``python -m tests.bed.slowapi`` for a self-check (a control plane, kubectl through the proxy,
a watch, each kind of rule).
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from pathlib import Path
from typing import Any, Self

import aiohttp
from aiohttp import web

from tests.bed.cluster import ControlPlane, make_cert

# hop-by-hop headers (RFC 9110 7.6.1) and those the proxy sets itself
_HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
        # answers come back uncompressed, so that recorded bodies can be read
        "Accept-Encoding",
    )
)
_BODY_KEPT = 256 * 1024  # bytes of each answer's body kept in its record
_POLL = 0.02  # seconds between two looks at whether a held-back client has gone


class SlowApiError(RuntimeError):
    pass


@dataclass
class Rule:
    """What the proxy does to the requests that match (see the module's docstring)."""

    method: str | None = None
    path_regex: str | None = None
    times: int | None = None  # None: every match, for as long as the rule is set
    delay_request: float = 0.0
    hold_response: float = 0.0
    answer: tuple[int, float | None] | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path_regex is None or re.search(self.path_regex, path) is not None


@dataclass
class Recorded:
    """One request through the proxy. Times are ``time.monotonic()`` of this process."""

    method: str
    path: str  # without the query
    query: str
    started: float  # the request reached the proxy
    rule: int | None = None  # index (in the order set) of the rule applied, if any
    forwarded: float | None = None  # sent on to the API server (None: answered by a rule, or not yet)
    answered: float | None = None  # the API server's (or the rule's) status line is in
    responded: float | None = None  # the answer began to go out to the client (None: it never did)
    ended: float | None = None  # the proxy was done with it (answer sent, or the client gone)
    status: int | None = None  # the status sent, or that the client would have had (see ``abandoned``)
    abandoned: bool = False  # the client closed the connection before the answer reached it
    error: str | None = None  # the API server could not be reached (answered 502)
    body: bytes = field(default=b"", repr=False)  # the answer's first 256 KiB

    def json(self) -> Any:
        return json.loads(self.body)

    def in_flight(self, now: float) -> tuple[float, float]:
        """(start, end) of this request as its client saw it: from its arrival until its answer began to
        go out (the client cannot send its next request before that) or, for one the client gave up
        on, until the proxy saw it go; ``now`` while it lasts."""
        end = self.responded if self.responded is not None else self.ended
        return self.started, end if end is not None else now


def max_in_flight(records: Iterable[Recorded]) -> int:
    """The most of ``records`` that were in flight (between reaching the proxy and its end) at once."""
    now = time.monotonic()
    edges = []
    for r in records:
        start, end = r.in_flight(now)
        edges += [(start, 1), (end, -1)]
    # an end and a start at one instant: the end first (one slot handed over, not two held)
    edges.sort(key=lambda e: (e[0], e[1]))
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


class SlowApi:
    """The proxy: ``start()`` it (or use it as a context manager), point a client at :attr:`kubeconfig`."""

    def __init__(self, plane: ControlPlane, workdir: Path, *, start_timeout: float = 10.0) -> None:
        if not plane.server:
            raise SlowApiError("the control plane is not started: SlowApi forwards to its kube-apiserver")
        self.plane = plane
        self.workdir = Path(workdir).resolve()
        self.kubeconfig = self.workdir / "slowapi.kubeconfig"
        self.start_timeout = start_timeout
        self.url = ""
        self._rules: list[Rule] = []
        self._records: list[Recorded] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False

    # ------------------------------------------------------------------ public

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        """Make the certificate, start the proxy's thread and listen; raises :class:`SlowApiError`
        (with the cause) when it does not listen within ``start_timeout`` seconds."""
        if self._thread is not None:
            raise SlowApiError("this SlowApi is already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        pki = self.plane.pki
        if not (pki / "slowapi.crt").exists():
            make_cert(
                pki, "slowapi", "/CN=aidc-slowapi", "serverAuth", "IP:127.0.0.1,DNS:localhost", error=SlowApiError
            )
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run_loop, name="slowapi", daemon=True)
        self._thread.start()
        try:
            port = asyncio.run_coroutine_threadsafe(self._serve(), loop).result(self.start_timeout)
        except BaseException as e:
            self.stop()
            raise SlowApiError(f"the API proxy did not start: {e!r}") from e
        self.url = f"https://127.0.0.1:{port}"
        self._write_kubeconfig()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Close every connection (open watches included) and end the thread. Safe to call twice;
        raises :class:`SlowApiError` when the thread does not end within ``timeout`` seconds."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._stopping = True
        problem: BaseException | None = None
        if thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
            except BaseException as e:  # still end the loop below, then report
                problem = e
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
        self._loop = self._thread = None
        if thread.is_alive():
            raise SlowApiError(f"the API proxy's thread did not end within {timeout:g}s")
        loop.close()
        if problem is not None:
            raise SlowApiError(f"the API proxy did not stop cleanly: {problem!r}") from problem

    def rule(
        self,
        *,
        method: str | None = None,
        path_regex: str | None = None,
        times: int | None = None,
        delay_request: float = 0.0,
        hold_response: float = 0.0,
        answer: tuple[int, float | None] | None = None,
    ) -> Rule:
        """Add a rule (after those set before); returned, so that a test can read its ``hits``."""
        if answer is not None and hold_response:
            raise ValueError("a rule that answers by itself forwards nothing: it has no answer to hold back")
        if answer is not None and not 400 <= answer[0] <= 599:
            raise ValueError(f"answer status {answer[0]} is not an error status")
        if path_regex is not None:
            re.compile(path_regex)
        r = Rule(method, path_regex, times, delay_request, hold_response, answer)
        with self._lock:
            self._rules.append(r)
        return r

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    def clear(self) -> None:
        """No rules, no records: as just started."""
        with self._lock:
            self._rules.clear()
            self._records.clear()

    def requests(self, method: str | None = None, path_regex: str | None = None) -> list[Recorded]:
        """Copies of the requests recorded so far (in the order they came) with ``method`` and a path
        ``path_regex`` searches successfully in; those in flight have no ``ended`` yet."""
        with self._lock:
            records = list(self._records)
        return [
            replace(r)
            for r in records
            if (method is None or r.method == method.upper())
            and (path_regex is None or re.search(path_regex, r.path) is not None)
        ]

    # --------------------------------------------------------------- internals

    def _write_kubeconfig(self) -> None:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "slowapi",
                    "cluster": {"server": self.url, "certificate-authority": str(self.plane.pki / "ca.crt")},
                }
            ],
            # the proxy presents the admin's certificate to the API server: no credentials here
            "users": [{"name": "through-slowapi", "user": {}}],
            "contexts": [
                {
                    "name": "slowapi",
                    "context": {"cluster": "slowapi", "user": "through-slowapi", "namespace": "default"},
                }
            ],
            "current-context": "slowapi",
        }
        self.kubeconfig.write_text(json.dumps(cfg, indent=2) + "\n")  # JSON is YAML
        self.kubeconfig.chmod(0o600)

    def _run_loop(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def _serve(self) -> int:
        pki = self.plane.pki
        upstream = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        upstream.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        # no pool limit (watches hold connections for minutes); connecting fails fast
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=upstream, limit=0, resolver=aiohttp.ThreadedResolver()),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            auto_decompress=False,
        )
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(str(pki / "slowapi.crt"), str(pki / "slowapi.key"))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=server)
        await site.start()
        for address in self._runner.addresses:
            return int(address[1])
        raise SlowApiError("the API proxy listens nowhere")

    async def _shutdown(self) -> None:
        # the upstream first: open watches then end, and the handlers with them
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _take_rule(self, method: str, path: str) -> tuple[int | None, Rule | None]:
        with self._lock:
            for i, r in enumerate(self._rules):
                if r.matches(method, path):
                    r.hits += 1
                    return i, replace(r)
        return None, None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method, path = request.method.upper(), request.rel_url.path
        record = Recorded(method, path, request.rel_url.query_string, time.monotonic())
        with self._lock:
            self._records.append(record)
        try:
            return await self._answer(request, record)
        finally:
            record.ended = time.monotonic()
            if _gone(request) and record.status is None:
                record.abandoned = True

    async def _answer(self, request: web.Request, record: Recorded) -> web.StreamResponse:
        index, rule = self._take_rule(record.method, record.path)
        record.rule = index
        body = await request.read()
        if rule is not None and rule.delay_request:
            await asyncio.sleep(rule.delay_request)
        if rule is not None and rule.answer is not None:
            return await self._refuse(request, record, *rule.answer)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Accept-Encoding"] = "identity"
        assert self._session is not None
        record.forwarded = time.monotonic()
        try:
            upstream = await self._session.request(
                record.method,
                self.plane.server + str(request.rel_url),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                # as the client sent them: the API server reads a body without Content-Type as JSON
                skip_auto_headers=("Content-Type", "User-Agent"),
            )
        except (aiohttp.ClientError, OSError) as e:
            record.answered = time.monotonic()
            record.error = repr(e)
            if self._stopping:
                raise
            return await self._send(
                request, record, 502, {}, f"the API proxy could not reach the API server: {e!r}".encode()
            )
        async with upstream:
            record.answered = time.monotonic()
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            if rule is not None and rule.hold_response:
                content = await upstream.read()
                record.status = upstream.status
                record.body = content[:_BODY_KEPT]
                if not await _held(request, rule.hold_response):
                    record.abandoned = True
                    return web.Response(status=upstream.status)  # nobody reads it
                return await self._send(request, record, upstream.status, out_headers, content)
            return await self._stream(request, record, upstream, out_headers)

    async def _stream(
        self, request: web.Request, record: Recorded, upstream: aiohttp.ClientResponse, headers: dict[str, str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        record.status = upstream.status
        reading: asyncio.Future[bytes] | None = None
        try:
            record.responded = time.monotonic()
            await response.prepare(request)
            while True:
                if reading is None:
                    reading = asyncio.ensure_future(upstream.content.readany())
                done, _ = await asyncio.wait({reading}, timeout=0.5)
                if not done:
                    if _gone(request):  # a watch its client left: end it, and its upstream request
                        record.abandoned = True
                        return response
                    continue
                chunk, reading = reading.result(), None
                if not chunk:
                    break
                if len(record.body) < _BODY_KEPT:
                    record.body += chunk[: _BODY_KEPT - len(record.body)]
                await response.write(chunk)
            await response.write_eof()
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            record.abandoned = True
        except (aiohttp.ClientError, asyncio.CancelledError):
            if not self._stopping:
                raise
        finally:
            if reading is not None:
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
        return response

    async def _refuse(
        self, request: web.Request, record: Recorded, status: int, retry_after: float | None
    ) -> web.StreamResponse:
        reason = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        details: dict[str, Any] = {}
        headers = {"Content-Type": "application/json"}
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
            details["retryAfterSeconds"] = int(retry_after)
        status_body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f"{phrase} (answered by the test's API proxy)",
            "reason": reason.get(status, "InternalError"),
            "details": details,
            "code": status,
        }
        record.answered = time.monotonic()
        return await self._send(request, record, status, headers, json.dumps(status_body).encode())

    async def _send(
        self, request: web.Request, record: Recorded, status: int, headers: dict[str, str], content: bytes
    ) -> web.StreamResponse:
        record.status = status
        record.body = content[:_BODY_KEPT]
        response = web.Response(status=status, headers=headers, body=content)
        try:
            record.responded = time.monotonic()
            await response.prepare(request)
            await response.write_eof()
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            record.abandoned = True
        return response


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _held(request: web.Request, seconds: float) -> bool:
    """Wait ``seconds`` unless the client goes first; whether it is still there."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if _gone(request):
            return False
        await asyncio.sleep(_POLL)
    return not _gone(request)


# ---------------------------------------------------------------- self-check


@contextmanager
def _kubectl_watch(plane: ControlPlane, kubeconfig: Path, *args: str) -> Iterator[Any]:
    import subprocess

    assert plane.bin_dir is not None
    proc = subprocess.Popen(
        [str(plane.bin_dir / "kubectl"), "--kubeconfig", str(kubeconfig), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


def _self_check(workdir: Path) -> None:
    import subprocess

    with ControlPlane(workdir / "plane") as plane, SlowApi(plane, workdir / "proxy") as proxy:
        bin_dir = plane.bin_dir
        assert bin_dir is not None

        def kubectl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
            cmd = [str(bin_dir / "kubectl"), "--kubeconfig", str(proxy.kubeconfig), *args]
            return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=60)

        print(kubectl("get", "nodes").stdout)
        with _kubectl_watch(plane, proxy.kubeconfig, "get", "configmaps", "--watch", "-o", "name") as watch:
            time.sleep(2)
            kubectl("create", "configmap", "seen-by-the-watch")
            assert watch.stdout is not None
            line = ""
            while "seen-by-the-watch" not in line:
                line = watch.stdout.readline()
                assert line, "the watch ended"
            print("watch:", line.strip())
        proxy.rule(method="POST", path_regex=r"/configmaps$", times=1, answer=(429, 1))
        t = time.monotonic()
        kubectl("create", "configmap", "after-a-429")
        posts = proxy.requests("POST", r"/configmaps$")
        print(f"429 then created in {time.monotonic() - t:.1f}s:", [p.status for p in posts])
        proxy.rule(method="POST", path_regex=r"/configmaps$", times=1, hold_response=30)
        t = time.monotonic()
        failed = kubectl("create", "configmap", "held", "--request-timeout=2s", check=False)
        print(f"held: kubectl gave up after {time.monotonic() - t:.1f}s: {failed.stderr.strip()}")
        held = proxy.requests("POST", r"/configmaps$")[-1]
        assert held.abandoned and held.status == 201, held
        assert kubectl("get", "configmap", "held", "-o", "name").stdout.strip() == "configmap/held"
        print("max POSTs in flight:", max_in_flight(proxy.requests("POST")))
    print("self-check passed")


if __name__ == "__main__":
    from tests.bed.procs import self_check_main

    self_check_main(_self_check, "aidc-slowapi-")
