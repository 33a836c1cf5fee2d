"""The gateway's calls to the hub's REST API and to the quotas service, with the gateway's own
JupyterHub service token. Errors come back as :class:`HubRefused` holding the hub's message, which
the hub said in the person's language already."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from i18n import _, normalize

from .routing import Target


class HubRefused(Exception):
    """The hub said no (``status``) with ``message`` meant for the person."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Person:
    """Someone the quotas service knows: their hub ``name`` and the language they chose
    (``"ko"``), or ``None`` when they never chose (the gateway speaks English to them)."""

    name: str
    locale: str | None = None


def _message(e: HTTPClientError) -> str:
    body = e.response.body if e.response is not None else b""
    try:
        return str(json.loads(body)["message"])
    except (ValueError, KeyError, TypeError):
        return _("The hub answered {code} {reason}.", code=e.code, reason=e.message)


def _person(answer: Any) -> Person:
    """The quotas service's lookup answer, ``{"user": "alice", "locale": "ko"}`` (``locale`` null or
    missing: never chose; a language the gateway does not speak counts as none)."""
    return Person(str(answer["user"]), normalize(answer.get("locale")))


class HubClient:
    """Async client of ``api_url`` (``http://127.0.0.1:8081/hub/api``) and the quotas service's
    ``quotas_url`` (``http://127.0.0.1:8000/services/quotas/``)."""

    def __init__(self, api_url: str, quotas_url: str, token: str, timeout: float = 30.0):
        self.api_url = api_url.rstrip("/")
        self.quotas_url = quotas_url.rstrip("/") + "/"
        self.token, self.timeout = token, timeout
        self.http = AsyncHTTPClient()

    async def _fetch(self, url: str, method: str = "GET", body: Any = None, token: str | None = None) -> Any:
        request = HTTPRequest(
            url,
            method=method,
            headers={"Authorization": f"token {token or self.token}", "Content-Type": "application/json"},
            body=None if body is None else json.dumps(body),
            request_timeout=self.timeout,
            connect_timeout=self.timeout,
        )
        try:
            response = await self.http.fetch(request)
        except HTTPClientError as e:
            raise HubRefused(e.code, _message(e)) from None
        return json.loads(response.body) if response.body else None

    @staticmethod
    def _server_path(target: Target) -> str:
        user = quote(target.user, safe="")
        return f"/users/{user}/servers/{quote(target.server, safe='')}" if target.server else f"/users/{user}/server"

    async def key_owner(self, fingerprint: str) -> Person | None:
        """Who registered the public key with this SHA256 fingerprint, and their language; or None."""
        url = f"{self.quotas_url}api/ssh-keys/lookup?fingerprint={quote(fingerprint, safe='')}"  # i18n: URL
        try:
            return _person(await self._fetch(url))
        except HubRefused as e:
            if e.status == 404:
                return None
            raise

    async def locale_of(self, name: str) -> str | None:
        """The language the user ``name`` chose (``"ko"``), or None when they never chose: for a
        person known by a token, whose language no key lookup answered."""
        url = f"{self.quotas_url}api/ssh-keys/lookup?user={quote(name, safe='')}"  # i18n: URL
        return _person(await self._fetch(url)).locale

    async def token_owner(self, token: str) -> str | None:
        """The user a JupyterHub API token belongs to, or None (invalid, expired, a service's)."""
        try:
            model = await self._fetch(f"{self.api_url}/user", token=token)
        except HubRefused as e:
            if e.status in (401, 403):
                return None
            raise
        return str(model["name"]) if model.get("kind") == "user" else None

    async def user(self, name: str) -> dict[str, Any] | None:
        """The user model with stopped servers too, or None when there is no such user."""
        try:
            url = f"{self.api_url}/users/{quote(name, safe='')}?include_stopped_servers=1"  # i18n: URL
            return await self._fetch(url)  # type: ignore[no-any-return]
        except HubRefused as e:
            if e.status == 404:
                return None
            raise

    async def server(self, target: Target) -> dict[str, Any] | None:
        model = await self.user(target.user)
        if model is None:
            return None
        return (model.get("servers") or {}).get(target.server)  # type: ignore[no-any-return]

    async def start(self, target: Target, options: dict[str, Any]) -> None:
        """Ask the hub to start the server with ``options``; HubRefused (400/403/...) with its reason."""
        await self._fetch(f"{self.api_url}{self._server_path(target)}", method="POST", body=options)

    async def progress(self, target: Target) -> AsyncIterator[dict[str, Any]]:
        """The hub's spawn progress events, until the server is ready or failed."""
        path = self._server_path(target) + "/progress"
        buffer = b""
        events: list[dict[str, Any]] = []

        def on_chunk(chunk: bytes) -> None:
            nonlocal buffer
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                for line in block.splitlines():
                    if line.startswith(b"data:"):
                        try:
                            events.append(json.loads(line[5:]))
                        except ValueError:
                            pass

        request = HTTPRequest(
            f"{self.api_url}{path}",
            headers={"Authorization": f"token {self.token}", "Accept": "text/event-stream"},
            streaming_callback=on_chunk,
            request_timeout=600,
            connect_timeout=self.timeout,
        )
        fetch = asyncio.ensure_future(self.http.fetch(request, raise_error=False))
        try:
            while True:
                while events:
                    event = events.pop(0)
                    yield event
                    if event.get("ready") or event.get("failed"):
                        return
                if fetch.done():
                    return
                await asyncio.wait([fetch], timeout=0.2)
        finally:
            if not fetch.done():
                fetch.cancel()
