"""``<base_url>aidc/workspace``: this workspace's tenant, GPUs, GPU-hours left and the hub's
warnings to its owner, from the quotas service (``api/me/workspace``).

The request to the service carries the workspace's own token (``$JUPYTERHUB_API_TOKEN``; the
hub gives it the scope ``access:services!service=quotas``), never the browser's: the page asks
this server, which only its owner (and those they share it with) may open, and the service
answers for the token's owner alone. ``$AIDC_QUOTAS_URL`` (set by the hub's
``Spawner.environment``) says where the service is; ``$JUPYTERHUB_SERVER_NAME`` which server
this is. Its own two messages are said in the language the person chose on the hub
(``$AIDC_LOCALE``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from .language import LOCALE_ENV

TIMEOUT = 10.0  # seconds; the extension asks again a minute later
# The workspace has none of the hub's catalogs (standard library and jupyter_server only): its own
# sentences are here in each language of the hub (i18n.LOCALES), said in the one the person chose.
ANSWERED = {
    "en": "The hub's quotas service answered {code}: {message}",  # i18n: said by say(), both languages here
    "ko": "허브의 할당량 서비스가 {code} 오류로 응답했습니다: {message}",
}
UNREACHABLE = {
    "en": "The hub's quotas service cannot be reached ({error}); try again later.",  # i18n: said by say()
    "ko": "허브의 할당량 서비스에 연결할 수 없습니다({error}). 잠시 후 다시 시도하십시오.",
}


def say(sentence: Mapping[str, str], environ: Mapping[str, str], **values: object) -> str:
    """``sentence`` (language -> text) in the language the hub says the person chose, else English."""
    return sentence.get(environ.get(LOCALE_ENV, ""), sentence["en"]).format(**values)


def quotas_request(environ: Mapping[str, str]) -> tuple[str, dict[str, str]] | None:
    """The URL and headers of this workspace's ``api/me/workspace``, or None outside a hub."""
    base, token = environ.get("AIDC_QUOTAS_URL", ""), environ.get("JUPYTERHUB_API_TOKEN", "")
    if not base or not token:
        return None
    query = urlencode({"server": environ.get("JUPYTERHUB_SERVER_NAME", "")})
    return f"{base.rstrip('/')}/api/me/workspace?{query}", {"Authorization": f"token {token}"}  # i18n: URL


class WorkspaceHandler(APIHandler):
    @web.authenticated
    async def get(self) -> None:
        """The quotas service's answer as it is; ``{"configured": false}`` outside a hub; a 502
        with a message for people when the service cannot be reached."""
        request = quotas_request(os.environ)
        if request is None:
            self.finish(json.dumps({"configured": False}))
            return
        url, headers = request
        try:
            response = await AsyncHTTPClient().fetch(url, headers=headers, request_timeout=TIMEOUT)
        except HTTPClientError as e:
            body: Any = {}
            if e.response is not None:
                try:
                    body = json.loads(e.response.body)
                except ValueError:
                    body = {}
            message = body.get("message") if isinstance(body, dict) else None
            self.set_status(502)
            self.finish(json.dumps({"message": say(ANSWERED, os.environ, code=e.code, message=message or e.message)}))
            return
        except OSError as e:
            self.set_status(502)
            self.finish(json.dumps({"message": say(UNREACHABLE, os.environ, error=e)}))
            return
        self.set_header("Content-Type", "application/json")
        self.finish(response.body)


def setup_handlers(web_app: Any) -> None:
    route = url_path_join(web_app.settings["base_url"], "aidc", "workspace")
    web_app.add_handlers(".*$", [(route, WorkspaceHandler)])
