"""``api/ssh-keys``: people's SSH public keys, by which the SSH gateway knows who connects.

Everyone logged in lists, adds and removes their **own** keys; nobody sees or removes another
person's (another person's key id answers 404, as a key that does not exist). The gateway, and
only the gateway (the JupyterHub service ``sshgateway``, identified by the hub, never by anything
the client sends), asks who owns the key a client offers: ``api/ssh-keys/lookup``. Removing a key
takes effect at the next connection: the gateway asks at every one.
"""

from __future__ import annotations

from typing import Any

from i18n import _
from sshgateway.public_keys import KeyRejected

from ..store import SshKey
from .base import ApiError, BaseHandler

GATEWAY_SERVICE = "sshgateway"  # the JupyterHub service name of the SSH gateway
BODY_FIELDS = ("public_key", "title")


def ssh_key_json(key: SshKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "title": key.title,
        "type": key.public_key.split(" ", 1)[0],
        "public_key": key.public_key,
        "fingerprint": key.fingerprint,
        "created": key.created,
        "last_used": key.last_used,
    }


class OwnKeysMixin(BaseHandler):
    def owner(self) -> str:
        """The person whose keys these are: the caller; 403 for service tokens (services have no keys)."""
        model = self.current_user or {}
        caller = self.caller
        if model.get("kind", "user") != "user":
            raise ApiError(
                403,
                _(
                    "SSH keys belong to people; the service {service} has none."
                    " Use a person's token (created at /hub/token) to manage their keys.",
                    service=repr(caller.name),
                ),
            )
        return caller.name


class SshKeysHandler(OwnKeysMixin):
    async def get(self) -> None:
        """The caller's keys, oldest first."""
        keys = await self.blocking(self.store.ssh_keys, self.owner())
        self.write_json({"ssh_keys": [ssh_key_json(k) for k in keys]})

    async def post(self) -> None:
        """Add a key from ``{"public_key": "<one OpenSSH line>", "title": "laptop"}``: 201 with the key;
        400 for a body that is not a JSON object, 422 with the reasons for a key that cannot be added
        (nothing is written then)."""
        user = self.owner()
        body = self.json_body()
        if not isinstance(body, dict):
            raise ApiError(
                400,
                _(
                    "The body must be a JSON object: {example}.",
                    example='{"public_key": "ssh-ed25519 AAAA... me@laptop", "title": "laptop"}',  # i18n: JSON, as the person types it
                ),
            )
        problems = [
            _(
                "unknown field {field} (the fields are {fields})",
                field=repr(field),
                fields=", ".join(BODY_FIELDS),
            )
            for field in body
            if field not in BODY_FIELDS
        ]
        text, title = body.get("public_key"), body.get("title")
        if not isinstance(text, str) or not text.strip():
            problems.append(
                _("public_key is missing: paste the one line of your .pub file (e.g. ~/.ssh/id_ed25519.pub)")
            )
        if title is not None and not isinstance(title, str):
            problems.append(_('title must be text, e.g. "laptop"'))
        if problems:
            raise ApiError(422, _("The SSH key was not added: {why}", why=problems[0]), problems)
        try:
            key = await self.blocking(self.store.add_ssh_key, user, text, title, self.now())
        except KeyRejected as e:
            why = e.message  # an i18n.Text: said in the caller's language with the answer
            raise ApiError(422, _("The SSH key was not added: {why}", why=why), [why]) from None
        self.log.info("%s added SSH key %s (%s)", user, key.fingerprint, key.title)
        self.write_json(ssh_key_json(key), status=201)


class SshKeyHandler(OwnKeysMixin):
    async def delete(self, key_id: str) -> None:
        """Remove one of the caller's keys: 204; 404 when the caller has no key with this id."""
        user = self.owner()
        removed = (
            key_id.isdigit() and len(key_id) < 10 and await self.blocking(self.store.delete_ssh_key, user, int(key_id))
        )
        if not removed:
            raise ApiError(
                404,
                _("You ({name}) have no SSH key with id {id}; nothing was removed.", name=user, id=repr(key_id)),
            )
        self.log.info("%s removed SSH key %s", user, key_id)
        self.set_status(204)
        self.finish()


class LookupHandler(BaseHandler):
    async def get(self) -> None:
        """Who owns the key with ``fingerprint`` (``SHA256:...``): ``{"user": name, "locale": "ko"}``
        (their saved language, null if they never chose), or 404; ``?user=name`` instead answers only
        that person's language. Only for the SSH gateway service; everyone else, platform admins
        included, gets 403."""
        model = self.current_user or {}
        caller = self.caller
        if model.get("kind") != "service" or caller.name != GATEWAY_SERVICE:
            raise ApiError(
                403,
                _(
                    "Only the SSH gateway (the JupyterHub service {gateway}) looks up who owns a key;"
                    " you ({name}) can list your own keys at api/ssh-keys.",
                    gateway=repr(GATEWAY_SERVICE),
                    name=caller.name,
                ),
            )
        person = self.get_query_argument("user", "").strip()
        if person and not self.get_query_argument("fingerprint", ""):
            # a person the gateway knows already (a token login): only their language
            if len(person) > 255:
                raise ApiError(400, _("user must be a JupyterHub user name of at most 255 characters."))
            self.write_json({"user": person, "locale": await self.blocking(self.store.locale_of, person)})
            return
        fingerprint = self.get_query_argument("fingerprint", "").strip()
        if not fingerprint.startswith("SHA256:") or len(fingerprint) > 64:
            raise ApiError(
                400,
                _(
                    "fingerprint must be an OpenSSH SHA256 fingerprint ('SHA256:<base64>'), not {given}.",
                    given=repr(fingerprint),
                ),
            )
        owner = await self.blocking(self.store.ssh_key_owner, fingerprint, self.now())
        if owner is None:
            raise ApiError(404, _("No one registered the SSH key {fingerprint}.", fingerprint=fingerprint))
        # the language the gateway speaks to them in: their saved choice (None: never chose; English)
        self.write_json({"user": owner, "locale": await self.blocking(self.store.locale_of, owner)})


default_handlers = [
    (r"api/ssh-keys", SshKeysHandler),
    (r"api/ssh-keys/lookup", LookupHandler),
    (r"api/ssh-keys/(?P<key_id>[^/]+)", SshKeyHandler),
]
