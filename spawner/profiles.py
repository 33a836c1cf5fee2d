"""Pure builders for the spawn form and for re-resolving what a user asked for.

The hub never trusts ``user_options``: :func:`resolve_options` takes whatever a
form or an API body sent and returns the (tenant, profile) the platform config
allows for that user, or raises :class:`OptionsRefused` with a status and a
message for people (an :class:`i18n.Text`, said in the person's language where it leaves the
spawner). :func:`render_form` writes the form in the person's language.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from i18n import DEFAULT_LOCALE, N_, Text, _, ngettext, translate
from quotas.model import PlatformConfig, Profile, Tenant
from quotas.quantity import format_bytes, format_cpu

ALLOWED_OPTIONS = ("tenant", "profile", "borrow")
BORROW_VALUES = {"yes": True, "no": False}  # the ``borrow`` option: may the server run on borrowed GPUs


class OptionsRefused(Exception):
    """A spawn request whose options are not allowed; ``status`` is 400 or 403."""

    def __init__(self, status: int, message: Text):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Choice:
    tenant: Tenant
    profile: Profile
    # the person accepts GPUs borrowed from another tenant of the cohort, which may be reclaimed
    # (the server stopped after a warning); else a request waits for its tenant's own GPUs
    may_borrow: bool = True

    @property
    def value(self) -> str:
        return f"{self.tenant.id}/{self.profile.id}"  # i18n: the form's field value


def choices_for(config: PlatformConfig, user: str, groups: Iterable[str]) -> list[Choice]:
    """Every (tenant, profile) ``user`` may pick, tenants in config order."""
    return [Choice(t, config.profiles[p]) for t in config.tenants_of(user, groups) for p in t.profiles]


SPAWN_BODY_KEYS = ("user_options", "display_name")
EDIT_BODY_KEYS = ("name", "display_name", "user_options")
# the documented keys of a body, as a refusal names them
DOCUMENTED_KEYS = {
    SPAWN_BODY_KEYS: N_("'user_options' and 'display_name'"),
    EDIT_BODY_KEYS: N_("'name' and 'display_name' and 'user_options'"),
}


def check_spawn_body(body: Any, keys: tuple[str, ...] = SPAWN_BODY_KEYS) -> None:
    """Refuse a REST server body with top-level keys beyond the documented ``keys``.

    JupyterHub reads a body that names ``user_options`` or ``display_name`` as
    ``{"user_options": {...}, "display_name": "..."}`` and silently drops any other key
    (``{"user_options": {...}, "gpus": 64}`` would start a server as if ``gpus`` meant
    something). A spawn body with neither key is the options themselves, which
    :func:`resolve_options` checks. Raises :class:`OptionsRefused` (400) naming the
    unknown keys and the documented ones. ``keys``: those of a spawn or create (``PUT``) body,
    or :data:`EDIT_BODY_KEYS` for an edit (``PATCH``), whose body is always an object of them.
    """
    if not isinstance(body, dict) or (keys == SPAWN_BODY_KEYS and not any(key in body for key in keys)):
        return
    unknown = sorted(str(k) for k in body if k not in keys)
    if unknown:
        documented = _(DOCUMENTED_KEYS[keys]) if keys in DOCUMENTED_KEYS else ", ".join(f"'{k}'" for k in keys)
        raise OptionsRefused(
            400,
            ngettext(
                "Unknown key in the request body: {keys}. A server request's body may hold only {documented}"
                ' (\'user_options\' being the server options, such as {{"tenant": "...", "profile": "..."}});'
                " GPUs, CPU, memory and image come from the profile.",
                "Unknown keys in the request body: {keys}. A server request's body may hold only {documented}"
                ' (\'user_options\' being the server options, such as {{"tenant": "...", "profile": "..."}});'
                " GPUs, CPU, memory and image come from the profile.",
                len(unknown),
                keys=", ".join(unknown),
                documented=documented,
            ),
        )


def check_option_shape(options: Any) -> None:
    """Refuse options that are not an object of the documented string options (400), whoever the
    person is; :func:`resolve_options` then checks them against what the config allows."""
    if options is None:
        return
    if not isinstance(options, dict):
        raise OptionsRefused(400, _('Server options must be an object such as {{"tenant": "...", "profile": "..."}}.'))
    unknown = sorted(str(k) for k in options if k not in ALLOWED_OPTIONS)
    if unknown:
        raise OptionsRefused(
            400,
            ngettext(
                "Unknown server option: {options}. Only 'tenant', 'profile' and 'borrow' can be chosen; GPUs, CPU,"
                " memory and image come from the profile.",
                "Unknown server options: {options}. Only 'tenant', 'profile' and 'borrow' can be chosen; GPUs, CPU,"
                " memory and image come from the profile.",
                len(unknown),
                options=", ".join(unknown),
            ),
        )
    for key in ALLOWED_OPTIONS:
        if key in options and not isinstance(options[key], str):
            raise OptionsRefused(
                400,
                _(
                    "Server option {option} must be a string, not {kind}.",
                    option=repr(key),
                    kind=type(options[key]).__name__,
                ),
            )
    if "borrow" in options and options["borrow"] not in BORROW_VALUES:
        raise OptionsRefused(
            400,
            _(
                "Server option 'borrow' must be 'yes' (the server may start on GPUs borrowed from another tenant,"
                " and be stopped when they need them back) or 'no' (wait for your tenant's own GPUs), not {value}.",
                value=repr(str(options["borrow"])[:40]),
            ),
        )


def resolve_options(config: PlatformConfig, user: str, groups: Iterable[str], options: Any) -> Choice:
    """Re-resolve submitted options against what the config allows ``user``.

    ``options`` is untrusted: ``{"tenant": "snu-ai", "profile": "h100-x1"}``,
    ``{}`` (the default: the user's only tenant, its first profile) or anything a
    client sent. Raises :class:`OptionsRefused` (400 malformed, 403 not allowed).
    """
    groups = tuple(groups)
    check_option_shape(options)
    if options is None:
        options = {}

    mine = config.tenants_of(user, groups)
    if not mine:
        raise OptionsRefused(
            403,
            _(
                "You ({user}) are not a member of any tenant, so you cannot start a server."
                " Ask your organisation's tenant admin or a platform admin to add you.",
                user=user,
            ),
        )
    tenant_id = options.get("tenant")
    if tenant_id is None:
        if len(mine) > 1:
            raise OptionsRefused(
                400,
                _(
                    "You belong to several tenants ({tenants}); choose which one pays with the 'tenant' option.",
                    tenants=", ".join(t.id for t in mine),
                ),
            )
        tenant = mine[0]
    else:
        found = [t for t in mine if t.id == tenant_id]
        if not found:
            raise OptionsRefused(
                403,
                _(
                    "You ({user}) are not a member of tenant {tenant}. Your tenants: {tenants}.",
                    user=user,
                    tenant=repr(tenant_id),
                    tenants=", ".join(t.id for t in mine),
                ),
            )
        tenant = found[0]

    profile_id = options.get("profile")
    if profile_id is None:
        if not tenant.profiles:
            raise OptionsRefused(
                403, _("Tenant {tenant} has no profiles. Ask a platform admin to allow some.", tenant=tenant.id)
            )
        profile_id = tenant.profiles[0]
    if profile_id not in tenant.profiles:
        status = 403 if profile_id in config.profiles else 400
        values = {"profile": repr(profile_id), "tenant": tenant.id}
        if tenant.profiles:
            values["profiles"] = ", ".join(tenant.profiles)
            message = (
                _("Profile {profile} is not available to tenant {tenant}. Its profiles: {profiles}.", **values)
                if status == 403
                else _("Profile {profile} does not exist for tenant {tenant}. Its profiles: {profiles}.", **values)
            )
        else:
            message = (
                _("Profile {profile} is not available to tenant {tenant}. Its profiles: none.", **values)
                if status == 403
                else _("Profile {profile} does not exist for tenant {tenant}. Its profiles: none.", **values)
            )
        raise OptionsRefused(status, message)
    return Choice(tenant, config.profiles[profile_id], BORROW_VALUES[options.get("borrow", "yes")])


def options_from_form(formdata: Mapping[str, list[str]]) -> dict[str, str]:
    """Turn the form's ``choice=tenant/profile`` field into ``{"tenant", "profile"}``.

    Anything else in the form is passed through unchanged so that
    :func:`resolve_options` refuses it by name instead of silently dropping it.
    """
    options: dict[str, Any] = {}
    for key, values in formdata.items():
        if key == "_xsrf":
            continue
        value = values[0] if isinstance(values, list) and len(values) == 1 else values
        if key == "choice" and isinstance(value, str):
            tenant, _, profile = value.partition("/")
            options["tenant"], options["profile"] = tenant, profile
        else:
            options[key] = value
    return options


# what each tenant kind of tenants.yaml is called on the form
TENANT_KINDS = {"startup": N_("startup"), "university": N_("university"), "company": N_("company")}


def describe_profile(profile: Profile, image_name: str) -> Text:
    """What a profile gives, for people: ``1 × H100 GPU · 8 CPUs · 64 GiB memory · PyTorch``."""
    gpu = _("{count} × {gpu} GPU", count=profile.gpu_count, gpu=profile.gpu_type) if profile.gpu_type else _("no GPU")
    return _(
        "{gpu} · {cpu} · {memory} memory · {image}",
        gpu=gpu,
        cpu=format_cpu(profile.cpu),
        memory=format_bytes(profile.memory),
        image=image_name,
    )


def render_form(
    config: PlatformConfig,
    choices: list[Choice],
    usage_notes: Mapping[str, str] | None = None,
    selected: str | None = None,
    may_borrow: bool = True,
    locale: str = DEFAULT_LOCALE,
) -> str:
    """HTML for JupyterHub's spawn page: one group of radio buttons per tenant, in ``locale``.

    ``usage_notes`` maps tenant id to a line such as "H100: 4 of 8 in use" (an :class:`i18n.Text`
    is said in ``locale``). ``selected`` (``"tenant/profile"``) is preselected if it is a choice,
    else the first choice is. Everything user-visible is escaped.
    """
    usage_notes = usage_notes or {}
    esc = html.escape

    def say(text: object) -> str:  # a sentence in ``locale``, as text between tags
        return html.escape(translate(text, locale), quote=False)

    if selected not in {c.value for c in choices}:
        selected = choices[0].value if choices else None
    parts = ['<div class="aidc-spawn-form">']  # i18n: markup
    by_tenant: dict[str, list[Choice]] = {}
    for c in choices:
        by_tenant.setdefault(c.tenant.id, []).append(c)
    several = len(by_tenant) > 1
    for tenant_id, tenant_choices in by_tenant.items():
        tenant = tenant_choices[0].tenant
        kind = _(TENANT_KINDS[tenant.kind]) if tenant.kind in TENANT_KINDS else tenant.kind
        parts.append(f'<fieldset class="mb-3" data-tenant="{esc(tenant_id)}">')  # i18n: markup
        legend = f'{esc(tenant.display_name)} <small class="text-muted">({esc(tenant_id)}, {say(kind)})</small>'  # i18n: markup
        if several:
            pays = say(_("pays for the server"))
            legend += f' <small class="text-muted">{pays}</small>'  # i18n: markup
        parts.append(f'<legend class="h5">{legend}</legend>')  # i18n: markup
        if tenant_id in usage_notes:
            parts.append(f'<p class="text-muted small aidc-usage">{say(usage_notes[tenant_id])}</p>')  # i18n: markup
        for c in tenant_choices:
            image = config.images[c.profile.image]
            ident = f"choice-{c.tenant.id}-{c.profile.id}"
            checked = " checked" if c.value == selected else ""
            description = ""
            if c.profile.description:  # the operator's words for it, from tenants.yaml
                description = f"<br><small>{esc(c.profile.description)}</small>"  # i18n: markup
            parts.append(
                '<div class="form-check">'  # i18n: markup
                f'<input class="form-check-input" type="radio" name="choice" id="{esc(ident)}" value="{esc(c.value)}"{checked}>'  # i18n: markup
                f'<label class="form-check-label" for="{esc(ident)}"><strong>{esc(c.profile.display_name)}</strong>'
                f' <span class="text-muted">{say(describe_profile(c.profile, image.display_name))}</span>'
                f"{description}</label></div>"
            )
        parts.append("</fieldset>")
    lenders = sorted({c.tenant.id for c in choices if any(c.tenant.sharing.borrow.get(t) for t in c.profile.gpus)})
    if lenders:
        parts.append(_borrow_choice(lenders, may_borrow, locale))
    parts.append("</div>")
    return "\n".join(parts)


def _borrow_choice(tenants: list[str], may_borrow: bool, locale: str) -> str:
    """The notice and choice about borrowed GPUs, for tenants that may borrow from their cohort."""
    esc = functools.partial(html.escape, quote=False)  # text between tags
    yes, no = (" checked", "") if may_borrow else ("", " checked")
    heading = translate(_("If your tenant's GPUs are all in use"), locale)
    who = translate(_("{tenants} may borrow idle GPUs of other tenants", tenants=", ".join(tenants)), locale)
    # markup of the catalogs' own (no value of anyone's in it): not escaped
    start_borrowed = translate(
        _(
            "Start on <strong>borrowed GPUs</strong> of another tenant. Their owner may need them back: the server"
            " is then stopped, after a warning in the workspace and on the hub's home page. Save your work often."
        ),
        locale,
    )
    wait = translate(_("Wait in the queue for my tenant's own GPUs, which are never taken back."), locale)
    return (
        '<fieldset class="mb-3 aidc-borrow" id="aidc-borrow">'  # i18n: markup
        f'<legend class="h6">{esc(heading)} <small class="text-muted">({esc(who)})</small></legend>'
        '<div class="form-check"><input class="form-check-input" type="radio" name="borrow" id="borrow-yes"'  # i18n: markup
        f' value="yes"{yes}><label class="form-check-label" for="borrow-yes">{start_borrowed}</label></div>'
        '<div class="form-check"><input class="form-check-input" type="radio" name="borrow" id="borrow-no"'  # i18n: markup
        f' value="no"{no}><label class="form-check-label" for="borrow-no">{esc(wait)}</label></div></fieldset>'
    )
