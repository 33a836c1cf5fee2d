"""``api/tenants/{tenant}/limits``: what tenant admins delegate to users and groups.

Tenant admins (of that tenant) and platform admins read and write every limit of the tenant;
members read their own limit and their groups' limits. A limit is checked by
:func:`quotas.limits.parse_limit` against the tenant's ceiling before anything is written, and
the tenant is always the one of the URL: a body that names another is refused.

Writes may be conditional, as HTTP has it: ``GET`` and ``PUT`` answer with the limit's ``ETag``;
a ``PUT`` with ``If-Match: <etag>`` (or ``If-None-Match: *`` for "no limit is set yet") is refused
with 412 and nothing written when someone changed the limit in between (``aidc quota set`` does this).
"""

from __future__ import annotations

from typing import Any

from i18n import _, ngettext

from ..limits import (
    NO_LIMIT_ETAG,
    LimitChanged,
    LimitError,
    limit_etag,
    limit_summary,
    limit_to_json,
    parse_limit,
)
from ..model import Tenant
from ..policy import Limit
from .api_tenants import TENANT
from .base import ApiError, BaseHandler
from .said import kind_word

KIND_SEGMENTS = {"users": "user", "groups": "group"}


def kind_of(segment: str) -> str:
    """``users`` -> ``user``, ``groups`` -> ``group``; 400 for anything else."""
    kind = KIND_SEGMENTS.get(segment)
    if kind is None:
        raise ApiError(
            400,
            _(
                "Limits are set for 'users' or 'groups', not {segment}:"
                " use .../limits/users/<name> or .../limits/groups/<name>.",
                segment=repr(segment),
            ),
        )
    return kind


def identity_problems(body: dict[str, Any], tenant: str, kind: str, name: str) -> list[str]:
    """Problems with the ``tenant``/``kind``/``name`` a body may repeat (as ``GET`` returns them);
    removes them from ``body``. The URL says which limit this is; the body may not say otherwise."""
    problems: list[str] = []
    for field, expected in (("tenant", tenant), ("kind", kind), ("name", name)):
        if field not in body:
            continue
        given = body.pop(field)
        if given != expected:
            problems.append(
                _(
                    "the body says {field} {given} but the URL sets the limit of {kind} {name} in tenant"
                    " {tenant}; a limit is written where its URL points (leave {quoted_field} out of the body)",
                    field=field,
                    given=repr(given),
                    kind=kind_word(kind),
                    name=repr(name),
                    tenant=repr(tenant),
                    quoted_field=repr(field),
                )
            )
    return problems


def empty_limit_json(tenant: str, kind: str, name: str) -> dict[str, Any]:
    return limit_to_json(Limit(tenant, kind, name))


class LimitsHandler(BaseHandler):
    async def get(self, tenant: str) -> None:
        """Every limit of the tenant (admins), or those that apply to the caller (members)."""
        found = self.tenant_to_read(tenant)
        caller = self.caller
        limits = await self.blocking(self.store.limits, found.id)
        shown = [lim for lim in limits if caller.sees_subject(found.id, lim.kind, lim.subject)]
        self.write_json({"tenant": found.id, "limits": [limit_to_json(lim) for lim in shown]})


class LimitHandler(BaseHandler):
    def _readable(self, tenant: str, segment: str, name: str) -> tuple[Tenant, str]:
        found = self.tenant_to_read(tenant)
        kind = kind_of(segment)
        caller = self.caller
        if not caller.sees_subject(found.id, kind, name):
            raise ApiError(
                403,
                _(
                    "You ({caller}) can see your own limit and your groups' limits in tenant {tenant},"
                    " not those of {kind} {name}. Ask a tenant admin ({admins}).",
                    caller=caller.name,
                    tenant=found.id,
                    kind=kind_word(kind),
                    name=repr(name),
                    admins=found.admin_contact(),
                ),
            )
        return found, kind

    async def get(self, tenant: str, kind: str, name: str) -> None:
        """One limit; 404 when none is set (only the tenant's ceiling applies)."""
        found, subject_kind = self._readable(tenant, kind, name)
        limit = await self.blocking(self.store.limit, found.id, subject_kind, name)
        if limit is None:
            raise ApiError(
                404,
                _(
                    "No limit is set for {kind} {name} in tenant {tenant}: only the tenant's ceiling applies.",
                    kind=kind_word(subject_kind),
                    name=name,
                    tenant=found.id,
                ),
            )
        self.set_header("ETag", limit_etag(limit))
        self.write_json(limit_to_json(limit))

    async def put(self, tenant: str, kind: str, name: str) -> None:
        """Replace the limit with the body (fields gpus, servers, cpu, memory, gpu_hours; missing or
        null: no limit beyond the ceiling). 200 with the stored limit; nothing is written on error."""
        found = self.tenant_to_admin(tenant, _("set limits"))
        subject_kind = kind_of(kind)
        body = self.json_body()
        problems: list[str] = []
        if isinstance(body, dict):
            body = dict(body)
            problems = identity_problems(body, found.id, subject_kind, name)
        try:
            limit = parse_limit(found, subject_kind, name, body)
        except LimitError as e:
            problems += e.problems
        if problems:
            count = ngettext("{count} problem", "{count} problems", len(problems))
            raise ApiError(
                422,
                _(
                    "The limit of {kind} {name} in tenant {tenant} was not changed: {count}.",
                    kind=kind_word(subject_kind),
                    name=name,
                    tenant=found.id,
                    count=count,
                ),
                problems,
            )
        expect = self._precondition()
        try:
            await self.blocking(self.store.set_limit, limit, self.caller.name, self.now(), expect)
        except LimitChanged as e:
            now = _("no limit is set") if e.current is None else _("it is now {limit}", limit=limit_summary(e.current))
            raise ApiError(
                412,
                _(
                    "The limit of {kind} {name} in tenant {tenant} was not changed: someone changed it"
                    " since you read it ({now}). Read it again, then make your change.",
                    kind=kind_word(subject_kind),
                    name=name,
                    tenant=found.id,
                    now=now,
                ),
            ) from None
        self.log.info(
            "%s set the limit of %s %s in tenant %s: %s", self.caller.name, subject_kind, name, found.id, body
        )
        stored = await self.blocking(self.store.limit, found.id, subject_kind, name)
        self.set_header("ETag", limit_etag(stored))
        self.write_json(limit_to_json(stored) if stored else empty_limit_json(found.id, subject_kind, name))

    def _precondition(self) -> str | None:
        """The entity tag the writer expects (``If-Match``), ``"none"`` for ``If-None-Match: *``, or
        None for an unconditional write; anything else is a 400."""
        match, none_match = self.request.headers.get("If-Match"), self.request.headers.get("If-None-Match")
        if match is not None and none_match is not None:
            raise ApiError(400, _("Send If-Match or If-None-Match, not both."))
        if none_match is not None:
            if none_match.strip() != "*":
                raise ApiError(
                    400,
                    _(
                        "If-None-Match may only be * (create the limit only if none is set), not {value}.",
                        value=repr(none_match),
                    ),
                )
            return NO_LIMIT_ETAG
        if match is None:
            return None
        tag = match.strip()
        if tag.startswith("W/") or "," in tag or not (len(tag) >= 2 and tag[0] == tag[-1] == '"'):
            raise ApiError(
                400,
                _('If-Match must be one ETag as this API sent it (e.g. "3f0c..."), not {value}.', value=repr(match)),
            )
        return tag

    async def delete(self, tenant: str, kind: str, name: str) -> None:
        """Remove the limit (only the tenant's ceiling applies again); 204, or 404 if there was none."""
        found = self.tenant_to_admin(tenant, _("remove limits"))
        subject_kind = kind_of(kind)
        if not await self.blocking(self.store.delete_limit, found.id, subject_kind, name):
            raise ApiError(
                404,
                _(
                    "No limit is set for {kind} {name} in tenant {tenant}; nothing was removed.",
                    kind=kind_word(subject_kind),
                    name=name,
                    tenant=found.id,
                ),
            )
        self.log.info("%s removed the limit of %s %s in tenant %s", self.caller.name, subject_kind, name, found.id)
        self.set_status(204)
        self.finish()


default_handlers = [
    (rf"api/tenants/{TENANT}/limits", LimitsHandler),  # i18n: a route
    (rf"api/tenants/{TENANT}/limits/(?P<kind>[^/]+)/(?P<name>[^/]+)", LimitHandler),  # i18n: a route
]
