"""Login with an OpenID Connect provider (Keycloak, Dex, Azure AD, Google...): the provider's
groups make people members and tenant admins of tenants.

:class:`OIDCAuthenticator` is OAuthenticator's ``GenericOAuthenticator`` with what a
multi-tenant hub needs on top:

- the ID token is verified here (signature against the keys the provider publishes in its
  discovery document, issuer, audience, expiry), not merely decoded;
- the username comes from a stable claim, and a name stays bound to the identity (issuer and
  ``sub``) that first used it; an email address is accepted as a name only when verified;
- the groups claim maps to tenants (:func:`tenant_access`): each tenant's ``oidc:`` mapping in
  ``tenants.yaml``, or the convention, group ``<tenant>`` for members and ``<tenant>-admins``
  for tenant admins; people listed by name in ``tenants.yaml`` are members too (union);
- at every login (and every auth refresh, from the groups of the last login) the person's
  tenant groups and ``tenant-admin-<id>`` roles are set exactly (``manage_groups`` and
  ``manage_roles``), and their running servers of a tenant they left are stopped;
- a person in no tenant is refused with a page saying which groups admit them and whom to ask,
  and nothing is created for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import jwt
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthCallbackHandler, OAuthLoginHandler
from tornado import web
from tornado.httpclient import HTTPClientError
from traitlets import Integer, Set, Unicode, default, validate

from i18n import N_, Moment, Text, _
from quotas import paths
from quotas.model import PlatformConfig, Tenant
from quotas.rbac import tenant_admin_role, tenant_role_name
from quotas.snapshot import shared_holder

# asymmetric algorithms only: "none" and shared-secret (HS*) tokens are never accepted
SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
# JupyterHub's user_info: {"oidc": {"issuer", "sub", "groups"}}, groups being only those the
# platform maps (user_info is part of the user model every OAuth client of the hub may read)
USER_INFO_KEY = "oidc"
# who people ask to be added to a tenant, unless the operator names someone (OIDCAuthenticator.contact)
DEFAULT_CONTACT = N_("a platform admin")


# ---------------------------------------------------------------------------------------------
# The mapping from the provider's groups to tenants: pure functions of plain data.


def member_groups_of(tenant: Tenant) -> tuple[str, ...]:
    """The provider's groups whose members are members of ``tenant``: its ``oidc.groups``, or the
    convention, the group named like the tenant."""
    return tenant.oidc_groups if tenant.oidc_groups is not None else (tenant.id,)


def admin_groups_of(tenant: Tenant) -> tuple[str, ...]:
    """The provider's groups whose members are tenant admins: ``oidc.admin_groups``, or ``<id>-admins``."""
    return tenant.oidc_admin_groups if tenant.oidc_admin_groups is not None else (f"{tenant.id}-admins",)


def mapped_groups(config: PlatformConfig, platform_admin_groups: Iterable[str] = ()) -> frozenset[str]:
    """Every provider group the platform gives a meaning to: tenants' member and admin groups and
    the platform admins' groups. Other groups of a person are none of the hub's business."""
    out = set(platform_admin_groups)
    for tenant in config.tenants.values():
        out.update(member_groups_of(tenant), admin_groups_of(tenant))
    return frozenset(out)


@dataclass(frozen=True)
class TenantAccess:
    """What one person is at the hub, from their provider groups and ``tenants.yaml``."""

    user: str
    tenants: tuple[str, ...]  # member of (admins included), in config order
    admin_of: tuple[str, ...]  # tenant admin of
    platform_admin: bool
    # JupyterHub groups: the tenant groups, and provider groups some tenant lists under members.groups
    hub_groups: tuple[str, ...] = ()

    @property
    def admitted(self) -> bool:
        return bool(self.tenants) or self.platform_admin

    def roles(self) -> list[str]:
        """The roles the person holds, exactly (``manage_roles``): JupyterHub strips any other."""
        return ["user", *(["admin"] if self.platform_admin else []), *(tenant_role_name(t) for t in self.admin_of)]


def tenant_access(
    config: PlatformConfig,
    user: str,
    groups: Iterable[str],
    platform_admin_groups: Iterable[str] = (),
    admin_users: Iterable[str] = (),
) -> TenantAccess:
    """Map a person's provider ``groups`` to their tenants, tenant-admin roles and JupyterHub groups.

    Membership is :meth:`Tenant.has_member` with the tenant's own provider groups
    (:func:`member_groups_of`); admins, :meth:`Tenant.has_admin` with its admin groups
    (:func:`admin_groups_of`).
    """
    mine = set(groups)
    tenants: list[str] = []
    admin_of: list[str] = []
    listed_groups: set[str] = set()
    for t in config.tenants.values():
        listed_groups |= t.member_groups
        admin = t.has_admin(user, mine, admin_groups_of(t))
        if t.has_member(user, mine, own_groups=member_groups_of(t), admin=admin):
            tenants.append(t.id)
        if admin:
            admin_of.append(t.id)
    # a provider group named like a tenant must not make a member through the back door
    passed = sorted((mine & listed_groups) - set(config.tenants))
    return TenantAccess(
        user=user,
        tenants=tuple(tenants),
        admin_of=tuple(admin_of),
        platform_admin=user in set(admin_users) or bool(mine & set(platform_admin_groups)),
        hub_groups=(*tenants, *passed),
    )


def admitting_groups(config: PlatformConfig) -> list[tuple[str, str, str]]:
    """``(group, tenant display name, "member" or "tenant admin")`` for every provider group
    that admits someone, for the refusal page (the role a :class:`i18n.Text`)."""
    out: list[tuple[str, str, str]] = []
    member, admin = _("member"), _("tenant admin")
    for t in config.tenants.values():
        label = f"{t.display_name} ({t.id})"
        out += [(g, label, member) for g in (*member_groups_of(t), *sorted(t.member_groups))]
        out += [(g, label, admin) for g in admin_groups_of(t)]
    return out


def managed_tenant_roles(config: PlatformConfig) -> list[dict[str, Any]]:
    """``load_managed_roles``: a ``tenant-admin-<id>`` role per tenant, without assignments (the
    authenticator assigns them at each login)."""
    return [tenant_admin_role(t) for t in config.tenants.values()]


def lost_servers(servers: Mapping[str, str], access: TenantAccess) -> dict[str, str]:
    """Of ``{server name: tenant}`` (running servers and the tenant our records say they run
    for), those of tenants the person no longer belongs to."""
    return {name: tenant for name, tenant in servers.items() if tenant not in access.tenants}


# ---------------------------------------------------------------------------------------------
# ID token verification


class TokenRefused(Exception):
    """An ID token this hub does not accept; ``args[0]`` says why, for people (a :class:`i18n.Text`)."""


class UnknownSigningKey(TokenRefused):
    """The token names a key the provider's JWKS does not have (yet: keys rotate)."""


def verify_id_token(
    token: str, jwks: Mapping[str, Any], *, issuer: str, client_id: str, leeway: int = 30
) -> dict[str, Any]:
    """The claims of ``token`` once verified, or :class:`TokenRefused`.

    Checks, in this order: it is a JWT signed with an asymmetric algorithm; its ``iss`` is
    ``issuer`` exactly; its signature matches a key of ``jwks`` (the provider's published keys);
    ``aud`` holds ``client_id`` (and ``azp`` is ``client_id`` when present); it has not expired
    and was not issued in the future (``leeway`` seconds of clock skew allowed).
    """
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as e:
        raise TokenRefused(
            _("The identity provider's answer holds no readable ID token ({error}).", error=str(e))
        ) from None
    alg = header.get("alg")
    if alg not in SIGNING_ALGORITHMS:
        raise TokenRefused(
            _(
                "The ID token is signed with {alg}; this hub accepts only public-key signatures ({accepted}).",
                alg=repr(alg),
                accepted=", ".join(SIGNING_ALGORITHMS),
            )
        )
    if unverified.get("iss") != issuer:
        raise TokenRefused(
            _(
                "The ID token was issued by {issued_by}, but this hub accepts tokens of {issuer} only.",
                issued_by=repr(unverified.get("iss")),
                issuer=repr(issuer),
            )
        )
    kid = header.get("kid")
    candidates = [k for k in jwks.get("keys", []) if isinstance(k, dict) and (kid is None or k.get("kid") == kid)]
    candidates = [k for k in candidates if k.get("use", "sig") == "sig"]
    if not candidates:
        raise UnknownSigningKey(
            _(
                "The ID token is signed with key {kid}, which {issuer} does not publish: it was not issued"
                " by this identity provider.",
                kid=repr(kid),
                issuer=issuer,
            )
        )
    bad_signature = False
    for key in candidates:
        try:
            public = jwt.PyJWK(key, algorithm=alg)
        except jwt.PyJWTError:
            continue  # a key of another type (e.g. an EC key for an RS256 token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=public,
                algorithms=[alg],
                audience=client_id,
                issuer=issuer,
                leeway=leeway,
                options={"require": ["iss", "sub", "aud", "exp", "iat"]},
            )
        except jwt.InvalidSignatureError:
            bad_signature = True
            continue
        except jwt.ExpiredSignatureError:
            expired = datetime.fromtimestamp(float(unverified.get("exp", 0)), UTC)
            raise TokenRefused(
                _(
                    "The ID token expired at {moment}; log in again (if it keeps happening, the clocks of the hub"
                    " and the provider differ).",
                    moment=Moment(expired),
                )
            ) from None
        except jwt.ImmatureSignatureError:
            raise TokenRefused(
                _("The ID token was issued in the future; the clocks of the hub and the identity provider differ.")
            ) from None
        except jwt.InvalidAudienceError:
            raise TokenRefused(
                _(
                    "The ID token is meant for {audience}, not for this hub (client id {client_id}).",
                    audience=repr(unverified.get("aud")),
                    client_id=repr(client_id),
                )
            ) from None
        except jwt.MissingRequiredClaimError as e:
            raise TokenRefused(
                _("The ID token has no {claim} claim, which every OpenID Connect ID token has.", claim=repr(e.claim))
            ) from None
        except jwt.PyJWTError as e:
            raise TokenRefused(_("The ID token is not valid: {error}.", error=str(e))) from None
        azp = claims.get("azp")
        if azp is not None and azp != client_id:
            raise TokenRefused(
                _(
                    "The ID token was issued to {azp}, not to this hub (client id {client_id}).",
                    azp=repr(azp),
                    client_id=repr(client_id),
                )
            )
        return claims
    if bad_signature:
        raise TokenRefused(
            _(
                "The ID token's signature does not match the key {kid} that {issuer} publishes: it was forged or"
                " altered on the way.",
                kid=repr(kid),
                issuer=issuer,
            )
        )
    raise TokenRefused(
        _("None of the keys {issuer} publishes can check a token signed with {alg}.", issuer=issuer, alg=alg)
    )


# ---------------------------------------------------------------------------------------------
# The authenticator


class NotInTenant(web.HTTPError):
    """A person the provider knows but who is in no tenant (and no platform admin)."""

    def __init__(self, user: str, groups: list[str], admitting: list[tuple[str, str, str]], contact: str):
        message = _(
            "{user} is not a member of any tenant of this hub (groups: {groups}). Ask {contact} to be added.",
            user=user,
            groups=", ".join(groups) if groups else _("none"),
            contact=contact,
        )
        super().__init__(403, "%s", message)
        self.jupyterhub_message = message
        self.user, self.groups, self.admitting, self.contact = user, groups, admitting, contact


def _http_error(status: int, message: Text) -> web.HTTPError:
    """An error page that says ``message`` in the person's language: JupyterHub's error page shows
    an exception's ``jupyterhub_message``, and its template says a :class:`i18n.Text` with ``_()``."""
    # "%s": JupyterHub's error page formats log_message with args (the log: English)
    error = web.HTTPError(status, "%s", message)
    error.jupyterhub_message = message  # type: ignore[attr-defined]
    return error


def _refused(message: Text) -> web.HTTPError:
    return _http_error(403, message)


class OIDCLoginHandler(OAuthLoginHandler):
    """``/hub/oauth_login``: reads the provider's discovery document first (once), so the
    authorization URL comes from the provider itself."""

    async def get(self) -> None:  # type: ignore[override]
        await self.authenticator.discover()
        super().get()


class OIDCCallbackHandler(OAuthCallbackHandler):
    """``/hub/oauth_callback``: a person in no tenant gets the refusal page (403), not an error."""

    async def get(self) -> None:
        try:
            await super().get()
        except NotInTenant as e:
            self.set_status(403)
            # the switcher on this page: back to the login (this callback's code is used up)
            self.aidc_language_next = self.settings["login_url"]
            page = await self.render_template(
                "aidc-oidc-refused.html",
                refused_user=e.user,
                refused_groups=e.groups,
                admitting=e.admitting,
                contact=e.contact,
            )
            self.finish(page)


class OIDCAuthenticator(GenericOAuthenticator, paths.PlatformFiles):
    """Log in with an OpenID Connect provider; its groups make tenants and tenant-admin roles.

    ``authenticate`` returns ``{"name", "admin", "groups", "roles", "user_info", "auth_state"}``
    for a verified ID token of a person in at least one tenant (or a platform admin); anything
    else raises ``HTTPError(403)`` with a message for people (``NotInTenant`` for someone in no
    tenant) and creates nothing. ``refresh_user`` never calls the provider: it re-applies
    ``tenants.yaml`` to the groups of the last login and returns the same fields.
    """

    login_handler = OIDCLoginHandler
    callback_handler = OIDCCallbackHandler

    issuer = Unicode(
        help="""The provider's issuer URL, exactly as its ID tokens carry it in ``iss``, for example
        ``https://login.example.org/realms/aidc`` (Keycloak) or ``http://127.0.0.1:5556/dex``.
        The discovery document is read from ``<issuer>/.well-known/openid-configuration``; tokens of
        any other issuer are refused.""",
    ).tag(config=True)

    groups_claim = Unicode(
        "groups",
        help="""The ID token claim that lists the person's groups, e.g. ``groups`` (Dex, Keycloak with
        a group mapper) or ``roles``. Its values are matched against each tenant's ``oidc`` groups.""",
    ).tag(config=True)

    platform_admin_groups = Set(
        Unicode(),
        help="""Provider groups whose members are platform admins (JupyterHub admins), e.g.
        ``{"aidc-operators"}``. Platform admins may log in without being in a tenant.""",
    ).tag(config=True)

    contact = Unicode(
        DEFAULT_CONTACT,
        help="""Who people should ask to be added to a tenant, shown on the refusal page, e.g.
        ``"the AIDC support desk (support@aidc.example.org)"``.""",
    ).tag(config=True)

    id_token_leeway = Integer(
        30, help="Seconds of clock difference allowed when checking an ID token's expiry and issue time, e.g. 60."
    ).tag(config=True)

    @default("scope")
    def _default_scope(self) -> list[str]:
        # openid: an ID token at all; groups: Dex (and others) send the groups claim only when asked
        return ["openid", "profile", "email", "groups"]

    @default("username_claim")
    def _default_username_claim(self) -> str:
        # readable and stable here: a name stays bound to the (issuer, sub) that first used it
        return "preferred_username"

    @default("login_service")
    def _default_login_service(self) -> str:
        # the login page says it in the person's language (its _(login_service))
        return N_("your organisation's account")

    @default("manage_groups")
    def _default_manage_groups(self) -> bool:
        return True

    @default("manage_roles")
    def _default_manage_roles(self) -> bool:
        return True

    @default("refresh_pre_spawn")
    def _default_refresh_pre_spawn(self) -> bool:
        # cheap (no call to the provider): re-applies tenants.yaml before each spawn
        return True

    @validate("issuer")
    def _validate_issuer(self, proposal: Any) -> str:
        value = str(proposal["value"])
        url = urlparse(value)
        if url.scheme not in ("https", "http") or not url.netloc or url.query or url.fragment:
            raise ValueError(
                f"OIDCAuthenticator.issuer {value!r} is not an issuer URL such as https://login.example.org/realms/aidc"  # i18n: the operator's config, at start
            )
        return value

    _discovery: dict[str, Any] | None = None
    _jwks: dict[str, Any] | None = None

    # -- the provider ---------------------------------------------------------------------------

    async def discover(self) -> dict[str, Any]:
        """The provider's discovery document (read once), after checking it names our issuer."""
        if self._discovery is not None:
            return self._discovery
        if not self.issuer:
            raise _http_error(500, _("OIDCAuthenticator.issuer is not set; nobody can log in."))
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            doc = await self.httpfetch(
                url,
                "Reading the OpenID Connect discovery document",  # i18n: OAuthenticator's log label
                method="GET",
            )
        except (HTTPClientError, OSError) as e:
            raise _http_error(
                503,
                _(
                    "The identity provider {issuer} cannot be reached ({error}); try again in a minute.",
                    issuer=self.issuer,
                    error=str(e),
                ),
            ) from None
        if not isinstance(doc, dict) or doc.get("issuer") != self.issuer:
            raise _http_error(
                500,
                _(
                    "{url} names the issuer {named}, not {issuer}: set OIDCAuthenticator.issuer to the provider's"
                    " issuer exactly.",
                    url=url,
                    named=repr(doc.get("issuer") if isinstance(doc, dict) else None),
                    issuer=repr(self.issuer),
                ),
            )
        missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not doc.get(k)]
        if missing:
            raise _http_error(
                500,
                _("{url} lacks {missing}; it is not an OpenID Connect provider.", url=url, missing=", ".join(missing)),
            )
        if not self.authorize_url:
            self.set_trait("authorize_url", doc["authorization_endpoint"])
        if not self.token_url:
            self.set_trait("token_url", doc["token_endpoint"])
        self._discovery = doc
        return doc

    async def signing_keys(self, refresh: bool = False) -> dict[str, Any]:
        """The provider's published keys (JWKS), fetched again when ``refresh`` (keys rotate)."""
        if self._jwks is None or refresh:
            doc = await self.discover()
            try:
                self._jwks = await self.httpfetch(
                    doc["jwks_uri"],
                    "Reading the provider's signing keys",  # i18n: OAuthenticator's log label
                    method="GET",
                )
            except (HTTPClientError, OSError) as e:
                raise _http_error(
                    503,
                    _(
                        "The identity provider's keys ({url}) cannot be read ({error}); try again.",
                        url=doc["jwks_uri"],
                        error=str(e),
                    ),
                ) from None
        return self._jwks or {}

    async def verified_claims(self, id_token: str) -> dict[str, Any]:
        """The claims of an ID token from the token endpoint, or ``HTTPError(403)`` saying why not."""
        try:
            try:
                return verify_id_token(
                    id_token,
                    await self.signing_keys(),
                    issuer=self.issuer,
                    client_id=self.client_id,
                    leeway=self.id_token_leeway,
                )
            except UnknownSigningKey:
                # the provider may have rotated its keys since we read them
                return verify_id_token(
                    id_token,
                    await self.signing_keys(refresh=True),
                    issuer=self.issuer,
                    client_id=self.client_id,
                    leeway=self.id_token_leeway,
                )
        except TokenRefused as e:
            self.log.warning("Refused an ID token: %s", e)
            raise _refused(
                _(
                    "Login refused: {reason} Nothing was changed. If this persists, tell {contact}.",
                    reason=e.args[0] if e.args else str(e),
                    contact=self.contact_said(),
                )
            ) from None

    # -- OAuthenticator's steps -----------------------------------------------------------------

    async def get_token_info(self, handler: Any, params: dict[str, Any]) -> dict[str, Any]:
        await self.discover()
        info: dict[str, Any] = await super().get_token_info(handler, params)
        return info

    async def token_to_user(self, token_info: dict[str, Any]) -> dict[str, Any]:
        """The verified claims of the token response's ID token (never an unverified decode)."""
        id_token = token_info.get("id_token")
        if not id_token:
            raise _refused(
                _(
                    "Login refused: the identity provider sent no ID token. The hub must ask for the 'openid' scope"
                    " (OIDCAuthenticator.scope); tell {contact}.",
                    contact=self.contact_said(),
                )
            )
        return await self.verified_claims(id_token)

    def user_info_to_username(self, user_info: dict[str, Any]) -> str:
        """The name from ``username_claim``; an email only if the provider says it is verified."""
        claim = self.username_claim if isinstance(self.username_claim, str) else None
        name = super().user_info_to_username(user_info) if claim in user_info else None
        if not isinstance(name, str) or not name.strip():
            raise _refused(
                _(
                    "Login refused: the identity provider sent no {claim} claim to name you at this hub."
                    " Tell {contact} (the hub's OIDCAuthenticator.username_claim may need another claim).",
                    claim=repr(claim) if claim else _("the username claim"),
                    contact=self.contact_said(),
                )
            )
        if claim == "email" and user_info.get("email_verified") is not True:
            raise _refused(
                _(
                    "Login refused: your email address {address} is not verified at the identity provider, so it"
                    " cannot be your name at this hub. Verify it there (or ask your organisation's IT), then log in"
                    " again.",
                    address=name,
                )
            )
        if claim == "sub" and name != name.lower():
            raise _refused(
                _(
                    "Login refused: the 'sub' claim {sub} has upper-case letters, and JupyterHub names are lower case,"
                    " so two people could get the same name. Tell {contact}: the hub should use another claim.",
                    sub=repr(name),
                    contact=self.contact_said(),
                )
            )
        return name

    async def update_auth_model(self, auth_model: dict[str, Any]) -> dict[str, Any]:
        """Add the person's tenants, groups, roles and admin flag from their groups claim."""
        claims = auth_model["auth_state"][self.user_auth_state_key]
        groups = claims.get(self.groups_claim, [])
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise _refused(
                _("Login refused: the {claim} claim is not a list of group names.", claim=repr(self.groups_claim))
            )
        access = self.access_for(auth_model["name"], groups)
        auth_model["admin"] = access.platform_admin
        auth_model["roles"] = self.role_models(access)
        auth_model["auth_state"]["aidc"] = {"groups": sorted(groups), "hub_groups": list(access.hub_groups)}
        known = mapped_groups(self.platform(), self.platform_admin_groups)
        auth_model["user_info"] = {
            USER_INFO_KEY: {"issuer": claims["iss"], "sub": claims["sub"], "groups": sorted(set(groups) & known)}
        }
        return auth_model

    async def get_user_groups(self, auth_state: dict[str, Any]) -> set[str]:
        """JupyterHub groups (``manage_groups``): the tenant groups computed in :meth:`update_auth_model`."""
        return set(auth_state["aidc"]["hub_groups"])

    async def check_allowed(self, username: str, auth_model: dict[str, Any] | None) -> bool:
        """True for a person in a tenant or a platform admin; :class:`NotInTenant` (403) otherwise."""
        if auth_model is None:
            return True
        groups = auth_model["auth_state"]["aidc"]["groups"]
        access = self.access_for(username, groups)
        if not access.admitted:
            self.log.warning("Refused %s: in no tenant (groups: %s)", username, ", ".join(groups) or "none")
            raise NotInTenant(username, groups, admitting_groups(self.platform()), self.contact_said())
        return True

    async def authenticate(self, handler: Any, data: Any = None, **kwargs: Any) -> dict[str, Any]:
        """OAuthenticator's login, then: the name must still belong to the same identity."""
        auth_model: dict[str, Any] = await super().authenticate(handler, data, **kwargs)
        bound = handler.find_user(self.normalize_username(auth_model["name"]))
        recorded = ((bound.user_info if bound is not None else None) or {}).get(USER_INFO_KEY)
        new = auth_model["user_info"][USER_INFO_KEY]
        if recorded and (recorded.get("issuer"), recorded.get("sub")) != (new["issuer"], new["sub"]):
            self.log.warning(
                "Refused %s: the name belongs to sub %s of %s, this login is sub %s of %s",
                auth_model["name"],
                recorded.get("sub"),
                recorded.get("issuer"),
                new["sub"],
                new["issuer"],
            )
            raise _refused(
                _(
                    "Login refused: the name {name} at this hub belongs to another account of the identity provider"
                    " (a different 'sub'). Ask {contact} to sort it out.",
                    name=repr(auth_model["name"]),
                    contact=self.contact_said(),
                )
            )
        return auth_model

    async def run_post_auth_hook(self, handler: Any, auth_model: dict[str, Any]) -> dict[str, Any]:
        """After a login is allowed: stop the person's servers of tenants they left."""
        auth_model = await super().run_post_auth_hook(handler, auth_model)
        user = handler.find_user(auth_model["name"])
        if user is not None:
            access = self.access_for(user.name, auth_model["auth_state"]["aidc"]["groups"])
            await self.stop_lost_servers(handler, user, access)
        return auth_model

    async def refresh_user(self, user: Any, handler: Any = None, **kwargs: Any) -> Any:
        """Re-apply ``tenants.yaml`` to the groups of the last login (no call to the provider).

        Returns True for users who never logged in with OIDC, else the auth model with the
        exact groups, roles and admin flag; stops servers of tenants the person left.
        """
        recorded = (user.user_info or {}).get(USER_INFO_KEY)
        if not recorded:
            return True
        access = self.access_for(user.name, recorded.get("groups", []))
        if handler is not None:
            await self.stop_lost_servers(handler, user, access)
        return {
            "name": user.name,
            "admin": access.platform_admin,
            "groups": list(access.hub_groups),
            "roles": self.role_models(access),
        }

    async def load_managed_roles(self) -> list[dict[str, Any]]:
        """The ``tenant-admin-<id>`` roles of every tenant (assigned at login)."""
        return managed_tenant_roles(self.platform())

    def check_allow_config(self) -> None:
        """At the hub's start: refuse to start (``SystemExit`` saying what to set) without the provider
        and the hub's client, rather than run a hub where nobody can log in; else log who may."""
        missing = [
            f"OIDCAuthenticator.{name}" for name in ("issuer", "client_id", "client_secret") if not getattr(self, name)
        ]
        if missing:
            raise SystemExit(
                f"OIDC login needs {', '.join(missing)} (the secret from $AIDC_OIDC_CLIENT_SECRET;"  # i18n: the operator's start-up error
                " see docs/oidc.md); the hub was not started."
            )
        config = self.platform()
        self.log.info(
            "OIDC login from %s: people in a tenant (%d tenants; groups claim %r) and platform admins may log in",
            self.issuer,
            len(config.tenants),
            self.groups_claim,
        )

    # -- helpers --------------------------------------------------------------------------------

    def contact_said(self) -> str:
        """Whom people ask (``contact``): the default said in their language, the operator's own as written."""
        return _(DEFAULT_CONTACT) if self.contact == DEFAULT_CONTACT else self.contact

    def platform(self) -> PlatformConfig:
        """The platform config in force: the hub's one snapshot (:func:`quotas.snapshot.shared_holder`)."""
        return shared_holder(self.tenants_file, self.catalog_file).config

    def access_for(self, user: str, groups: Iterable[str]) -> TenantAccess:
        return tenant_access(
            self.platform(),
            user,
            groups,
            platform_admin_groups=self.platform_admin_groups,
            admin_users=self.admin_users,
        )

    def role_models(self, access: TenantAccess) -> list[dict[str, Any]]:
        """Role models for ``manage_roles``: names only for JupyterHub's own roles; the tenant
        roles with their scopes (no ``users`` key: JupyterHub would replace the whole list)."""
        managed = {r["name"]: r for r in managed_tenant_roles(self.platform())}
        return [dict(managed.get(name, {"name": name})) for name in access.roles()]

    async def stop_lost_servers(self, handler: Any, user: Any, access: TenantAccess) -> None:
        """Stop the person's running servers whose tenant (as admitted: the spawner's record, never
        ``user_options``) they no longer belong to."""
        running = {}
        for name, spawner in list(user.spawners.items()):
            held = getattr(spawner, "held", None)
            if held is None or not spawner.active:
                continue
            if spawner.pending:
                if held.tenant not in access.tenants:
                    self.log.warning(
                        "%s left tenant %s while server %r is %s; it is not stopped now",
                        user.name,
                        held.tenant,
                        name,
                        spawner.pending,
                    )
                continue
            running[name] = held.tenant
        for name, tenant in lost_servers(running, access).items():
            self.log.info(
                "Stopping server %s/%s: %s is no longer a member of tenant %s", user.name, name, user.name, tenant
            )
            await handler.stop_single_user(user, name)
