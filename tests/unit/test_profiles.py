"""spawner.profiles: the spawn form, and re-resolving untrusted user_options against the config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from quotas.loader import parse_platform
from quotas.model import Image, PlatformConfig
from spawner.profiles import (
    OptionsRefused,
    check_spawn_body,
    choices_for,
    options_from_form,
    render_form,
    resolve_options,
)


@pytest.mark.parametrize(
    ("user", "groups", "options", "tenant", "profile"),
    [
        pytest.param("bob", (), {}, "snu-ai", "cpu-small", id="single-tenant-default"),
        pytest.param("bob", (), None, "snu-ai", "cpu-small", id="none-is-default"),
        pytest.param("carol", (), {"profile": "h100-x2-jax"}, "nova-labs", "h100-x2-jax", id="profile-only"),
        pytest.param("alice", (), {"tenant": "nova-labs"}, "nova-labs", "cpu-small", id="tenant-only"),
        pytest.param(
            "alice", (), {"tenant": "snu-ai", "profile": "h100-x4"}, "snu-ai", "h100-x4", id="multi-tenant-explicit"
        ),
        pytest.param("kim", (), {"profile": "h100-x1"}, "snu-ai", "h100-x1", id="tenant-admin"),
    ],
)
def test_resolve_options_allowed(
    config: PlatformConfig, user: str, groups: tuple[str, ...], options: Any, tenant: str, profile: str
) -> None:
    choice = resolve_options(config, user, groups, options)
    assert (choice.tenant.id, choice.profile.id) == (tenant, profile)
    assert choice.profile is config.profiles[profile]
    assert choice.value == f"{tenant}/{profile}"


@pytest.mark.parametrize(
    ("user", "options", "status", "texts"),
    [
        pytest.param(
            "alice",
            {},
            400,
            ["You belong to several tenants (snu-ai, nova-labs)", "'tenant' option"],
            id="two-tenants-must-choose",
        ),
        pytest.param(
            "bob",
            {"gpus": 64},
            400,
            ["Unknown server option: gpus.", "GPUs, CPU, memory and image come from the profile"],
            id="unknown-key",
        ),
        pytest.param(
            "bob",
            {"profile": "h100-x1", "image": "evil:latest", "cpu": "999"},
            400,
            ["Unknown server options: cpu, image."],
            id="unknown-keys",
        ),
        pytest.param("bob", ["snu-ai"], 400, ["Server options must be an object"], id="not-a-mapping"),
        pytest.param(
            "bob", {"profile": 3}, 400, ["Server option 'profile' must be a string, not int."], id="profile-not-string"
        ),
        pytest.param(
            "bob", {"tenant": ["snu-ai"]}, 400, ["Server option 'tenant' must be a string, not list."], id="tenant-list"
        ),
        pytest.param(
            "bob",
            {"tenant": "nova-labs"},
            403,
            ["You (bob) are not a member of tenant 'nova-labs'. Your tenants: snu-ai."],
            id="tenant-not-member",
        ),
        pytest.param(
            "bob",
            {"profile": "h100-x2-jax"},
            403,
            ["Profile 'h100-x2-jax' is not available to tenant snu-ai", "cpu-small, a100-x1, h100-x1, h100-x4"],
            id="profile-not-allowed",
        ),
        pytest.param(
            "bob",
            {"profile": "h100-x64"},
            400,
            ["Profile 'h100-x64' does not exist for tenant snu-ai"],
            id="profile-unknown",
        ),
        pytest.param(
            "mallory",
            {},
            403,
            ["You (mallory) are not a member of any tenant", "Ask your organisation's tenant admin"],
            id="in-no-tenant",
        ),
    ],
)
def test_resolve_options_refused(
    config: PlatformConfig, user: str, options: Any, status: int, texts: list[str]
) -> None:
    with pytest.raises(OptionsRefused) as info:
        resolve_options(config, user, (), options)
    assert info.value.status == status
    for text in texts:
        assert text in info.value.message
    assert str(info.value) == info.value.message


def with_groups(example_data: dict[str, Any], images: Mapping[str, Image]) -> PlatformConfig:
    example_data["tenants"][1]["members"]["groups"] = ["nova-interns"]
    return parse_platform(example_data, images)


def test_resolve_options_member_through_group(example_data: dict[str, Any], images: Mapping[str, Image]) -> None:
    config = with_groups(example_data, images)
    choice = resolve_options(config, "zoe", ["nova-interns"], {"profile": "h100-x1"})
    assert (choice.tenant.id, choice.profile.id) == ("nova-labs", "h100-x1")
    with pytest.raises(OptionsRefused) as info:
        resolve_options(config, "zoe", ["other"], {})
    assert info.value.status == 403


@pytest.mark.parametrize(
    ("form", "options"),
    [
        ({"choice": ["snu-ai/h100-x1"]}, {"tenant": "snu-ai", "profile": "h100-x1"}),
        ({"choice": ["snu-ai/h100-x1"], "_xsrf": ["token"]}, {"tenant": "snu-ai", "profile": "h100-x1"}),
        ({"choice": ["snu-ai/h100-x1"], "gpus": ["64"]}, {"tenant": "snu-ai", "profile": "h100-x1", "gpus": "64"}),
        ({"choice": ["a/b", "c/d"]}, {"choice": ["a/b", "c/d"]}),
        ({"choice": ["snu-ai"]}, {"tenant": "snu-ai", "profile": ""}),
        ({}, {}),
    ],
)
def test_options_from_form(form: dict[str, list[str]], options: dict[str, Any]) -> None:
    assert options_from_form(form) == options


def test_form_extras_are_refused_by_name(config: PlatformConfig) -> None:
    options = options_from_form({"choice": ["snu-ai/h100-x1"], "gpus": ["64"]})
    with pytest.raises(OptionsRefused, match="Unknown server option: gpus"):
        resolve_options(config, "bob", (), options)


def test_choices_for_respects_membership(
    config: PlatformConfig, example_data: dict[str, Any], images: Mapping[str, Image]
) -> None:
    assert [c.value for c in choices_for(config, "bob", ())] == [
        "snu-ai/cpu-small",
        "snu-ai/a100-x1",
        "snu-ai/h100-x1",
        "snu-ai/h100-x4",
    ]
    assert [c.value for c in choices_for(config, "alice", ())] == [
        "snu-ai/cpu-small",
        "snu-ai/a100-x1",
        "snu-ai/h100-x1",
        "snu-ai/h100-x4",
        "nova-labs/cpu-small",
        "nova-labs/h100-x1",
        "nova-labs/h100-x2-jax",
    ]
    assert choices_for(config, "mallory", ()) == []
    grouped = with_groups(example_data, images)
    assert {c.tenant.id for c in choices_for(grouped, "zoe", ["nova-interns"])} == {"nova-labs"}
    assert choices_for(grouped, "zoe", ["other"]) == []


def test_render_form_preselects_the_first_choice(config: PlatformConfig) -> None:
    html = render_form(config, choices_for(config, "alice", ()), {"snu-ai": "H100: 2 of 4 in use"})
    assert html.count(" checked") == 1
    assert 'value="snu-ai/cpu-small" checked>' in html
    assert html.count('type="radio" name="choice"') == 7
    assert html.count("<fieldset") == 2
    assert "pays for the server" in html  # several tenants: say who pays
    assert '<p class="text-muted small aidc-usage">H100: 2 of 4 in use</p>' in html
    assert "4 × H100 GPU · 32 CPUs · 256 GiB memory · PyTorch 2.9" in html


def test_render_form_single_tenant_does_not_ask_who_pays(config: PlatformConfig) -> None:
    html = render_form(config, choices_for(config, "bob", ()))
    assert "pays for the server" not in html
    assert "aidc-usage" not in html


def test_render_form_escapes_html(example_data: dict[str, Any], images: Mapping[str, Image]) -> None:
    example_data["profiles"][0]["display_name"] = "<script>alert(1)</script>"
    example_data["profiles"][0]["description"] = 'say "hi" & <b>bye</b>'
    example_data["tenants"][0]["display_name"] = "SNU <img src=x onerror=alert(2)>"
    config = parse_platform(example_data, images)
    html = render_form(config, choices_for(config, "bob", ()), {"snu-ai": "<i>note</i>"})
    assert "<script>" not in html
    assert "<img" not in html
    assert "<b>" not in html and "<i>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "SNU &lt;img src=x onerror=alert(2)&gt;" in html
    assert "say &quot;hi&quot; &amp; &lt;b&gt;bye&lt;/b&gt;" in html
    assert "&lt;i&gt;note&lt;/i&gt;" in html


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        (None, None),
        ({}, None),
        ({"tenant": "lab", "profile": "cpu"}, None),  # the whole body is the options: resolve_options checks it
        ({"gpus": 64}, None),  # idem (refused there as an unknown server option)
        ({"user_options": {"tenant": "lab"}}, None),
        ({"user_options": None, "display_name": "x"}, None),
        ({"user_options": {"tenant": "lab"}, "gpus": 64}, "Unknown key in the request body: gpus."),
        ({"display_name": "x", "image": "evil", "cpu": 64}, "Unknown keys in the request body: cpu, image."),
        (["user_options"], None),  # not an object: JupyterHub refuses it itself
    ],
)
def test_spawn_body_may_hold_only_the_documented_keys(body: Any, refused: str | None) -> None:
    if refused is None:
        check_spawn_body(body)
        return
    with pytest.raises(OptionsRefused) as info:
        check_spawn_body(body)
    assert info.value.status == 400
    assert refused in info.value.message
    assert "'user_options'" in info.value.message and "'display_name'" in info.value.message
