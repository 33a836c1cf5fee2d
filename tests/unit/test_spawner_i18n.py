"""The spawners in the person's language (issue 19): the spawn form, refusals, start failures and
progress said in Korean for a person whose saved choice is Korean, in English otherwise, and the
workspace told that choice as ``AIDC_LOCALE`` (JupyterLab opens in it)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any

import pytest

from i18n import Text, translate
from quotas.model import PlatformConfig, Sharing
from quotas.policy import Holding
from quotas.store import Store
from spawner.gpus import Gpu, GpuAllocator, NoFreeGpus
from spawner.profiles import OptionsRefused, choices_for, describe_profile, render_form, resolve_options
from spawner.start_failures import StartFailure, judge
from spawner.tenancy import (
    TenantSpawnerMixin,
    options_form_html,
    reason_of,
    refusal,
    usage_note,
    workspace_env,
)

NOW = datetime(2026, 12, 3, 5, 0, tzinfo=UTC)


# ---------------------------------------------------------------- the form (pure builder)


def test_the_form_in_korean(config: PlatformConfig) -> None:
    html = render_form(config, choices_for(config, "alice", ()), locale="ko")
    assert "서버 비용 부담" in html and "pays for the server" not in html  # alice has two tenants
    assert "H100 GPU 4개 · CPU 32개 · 메모리 256 GiB · PyTorch 2.9" in html  # CPUs: quotas.quantity.format_cpu
    assert "memory" not in html and "(snu-ai, 대학)" in html
    # the structure is the same in every language
    english = render_form(config, choices_for(config, "alice", ()))
    assert html.count('type="radio" name="choice"') == english.count('type="radio" name="choice"') == 7
    assert 'value="snu-ai/cpu-small" checked>' in html


def test_the_form_in_english_is_as_it_was(config: PlatformConfig) -> None:
    html = render_form(config, choices_for(config, "alice", ()), {"snu-ai": "H100: 2 of 4 in use"}, locale="en")
    assert "pays for the server" in html and "(snu-ai, university)" in html
    assert "4 × H100 GPU · 32 CPUs · 256 GiB memory · PyTorch 2.9" in html
    assert '<p class="text-muted small aidc-usage">H100: 2 of 4 in use</p>' in html
    assert not any("\uac00" <= ch <= "\ud7a3" for ch in html)  # no Hangul


def test_the_borrow_choice_in_korean(config: PlatformConfig) -> None:
    tenant = config.tenants["snu-ai"]
    gpu_type = next(t for c in choices_for(config, "bob", ()) for t in c.profile.gpus)
    lending = [
        type(c)(tenant=_sharing(c.tenant, {gpu_type: 2}), profile=c.profile)
        for c in choices_for(config, "bob", ())
        if c.tenant.id == tenant.id
    ]
    html = render_form(config, lending, locale="ko", may_borrow=False)
    assert "테넌트의 GPU가 모두 사용 중일 때" in html
    assert "다른 테넌트의 <strong>빌린 GPU</strong>에서 시작합니다." in html
    assert "대기열에서 내 테넌트의 GPU를 기다립니다." in html
    assert 'id="borrow-no" value="no" checked' in html
    english = render_form(config, lending, locale="en")
    assert "Start on <strong>borrowed GPUs</strong> of another tenant." in english
    assert "If your tenant's GPUs are all in use" in english


def _sharing(tenant: Any, borrow: dict[str, int]) -> Any:
    import dataclasses

    return dataclasses.replace(tenant, sharing=Sharing(borrow=MappingProxyType(borrow)))


def test_describe_profile_is_one_sentence_said_in_either_language(config: PlatformConfig) -> None:
    cpu = next(p for p in config.profiles.values() if not p.gpu_type)
    said = describe_profile(cpu, "Python")
    assert str(said).startswith("no GPU · ") and str(said).endswith(" memory · Python")
    assert said.say("ko").startswith("GPU 없음 · ") and "메모리" in said.say("ko")


def test_usage_note_in_korean_and_english(config: PlatformConfig) -> None:
    tenant = config.tenants["snu-ai"]
    gpu_type, ceiling = next(iter(tenant.quota.gpus.items()))
    held = [Holding("snu-ai", "bob", "", "p", {gpu_type: 1}, Decimal(1), Decimal(1))]
    english = usage_note(tenant, held, "en")
    assert english.startswith(f"Tenant usage now: 1 of {ceiling} {gpu_type} GPUs in use")
    korean = usage_note(tenant, held, "ko")
    assert korean.startswith(f"현재 테넌트 사용량: {gpu_type} GPU {ceiling}개 중 1개 사용 중")


# ---------------------------------------------------------------- refusals and failures


def test_a_refusal_is_said_in_the_persons_language_and_logged_in_english(config: PlatformConfig) -> None:
    with pytest.raises(OptionsRefused) as info:
        resolve_options(config, "nobody", (), {})
    reason = info.value.message
    assert isinstance(reason, Text)
    korean = refusal(reason, reason="options", status=403, locale="ko")
    assert korean.jupyterhub_message.startswith("사용자(nobody)는 어느 테넌트의 구성원도 아니므로")  # type: ignore[attr-defined]
    assert korean.log_message == str(reason) and str(reason).startswith("You (nobody) are not a member")
    assert korean.message is reason  # the sentence itself, for code that says it again (the queue)
    english = refusal(reason, reason="options", status=403, locale="en")
    assert english.jupyterhub_message == str(reason)  # type: ignore[attr-defined]
    # a plain str (a reason not converted yet) passes through unchanged
    assert refusal("plain words", reason="x", status=403, locale="ko").jupyterhub_message == "plain words"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("options", "korean"),
    [
        ({"tenant": "snu-ai", "gpus": 8}, "알 수 없는 서버 옵션입니다: gpus."),
        ({"tenant": "snu-ai", "profile": "nope"}, "테넌트 snu-ai에는 프로필 'nope'이(가) 없습니다."),
        ({"tenant": "snu-ai", "borrow": "maybe"}, "서버 옵션 'borrow'는 'maybe'이(가) 아니라 'yes'"),
        ("x", '서버 옵션은 {"tenant": "...", "profile": "..."}와 같은 객체여야 합니다.'),
    ],
)
def test_option_refusals_in_korean(config: PlatformConfig, options: Any, korean: str) -> None:
    with pytest.raises(OptionsRefused) as info:
        resolve_options(config, "bob", (), options)
    assert korean in translate(info.value.message, "ko")
    assert not any("\uac00" <= ch <= "\ud7a3" for ch in str(info.value.message))


def test_no_free_gpus_keeps_its_sentence_through_the_exception() -> None:
    allocator = GpuAllocator([Gpu("0", "H100"), Gpu("1", "H100")])
    allocator.allocate(("alice", ""), "H100", 2)
    with pytest.raises(NoFreeGpus) as info:
        allocator.allocate(("bob", ""), "H100", 1)
    reason = reason_of(info.value)
    assert (
        str(reason)
        == "This machine has 2 H100 GPUs and 0 free (alice: 2 in use); you asked for 1. Wait for one to be freed or pick a smaller profile."
    )
    assert translate(reason, "ko").startswith(
        "이 머신에는 H100 GPU가 2개 있고 그중 0개가 비어 있습니다(alice: 2 사용 중)."
    )


def test_start_failures_in_korean() -> None:
    own = judge(StartFailure("exited", server="gpu", exit_code=3, own_settings=(".jupyter/jupyter_server_config.py",)))
    said = own.message.say("ko")
    assert said.startswith("'gpu' 서버가 시작되었지만 응답하기 전에 종료되었습니다(종료 코드 3).")
    assert "~/.jupyter/jupyter_server_config.py" in said
    home = judge(StartFailure("home"))
    assert home.message.say("ko").startswith(
        "서버를 시작할 수 없습니다. 홈 폴더를 사용할 수 없습니다(디렉터리가 아님)."
    )
    assert str(home.message).startswith("Your server cannot start: your home folder cannot be used (not a directory).")


# ---------------------------------------------------------------- AIDC_LOCALE


def test_workspace_env_names_the_saved_choice_only_when_there_is_one() -> None:
    held = Holding("lab", "alice", "", "h100-x1", {"H100": 1}, Decimal(8), Decimal(2**30))
    profile = SimpleNamespace(image="pytorch")
    assert workspace_env(held, profile, "ko") == {  # type: ignore[arg-type]
        "AIDC_TENANT": "lab",
        "AIDC_PROFILE": "h100-x1",
        "AIDC_IMAGE": "pytorch",
        "AIDC_LOCALE": "ko",
    }
    assert "AIDC_LOCALE" not in workspace_env(held, profile, None)  # type: ignore[arg-type]
    assert workspace_env(None, None, "en") == {"AIDC_LOCALE": "en"}


# ---------------------------------------------------------------- the mixin reads the saved choice


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'quotas.sqlite'}")
    yield s
    s.close()


def spawner_of(name: str, config: PlatformConfig, store: Store) -> TenantSpawnerMixin:
    spawner = TenantSpawnerMixin()
    spawner._platform = SimpleNamespace(config=config, store=store)  # type: ignore[assignment]
    spawner.user = SimpleNamespace(name=name, groups=[])  # type: ignore[attr-defined]
    spawner.user_options = {}  # type: ignore[attr-defined]
    return spawner


def test_the_spawner_speaks_the_saved_choice_else_english(config: PlatformConfig, store: Store) -> None:
    store.set_locale("bob", "ko", NOW)
    bob, alice = spawner_of("bob", config, store), spawner_of("alice", config, store)
    assert (bob.locale(), bob.saved_locale()) == ("ko", "ko")
    assert (alice.locale(), alice.saved_locale()) == ("en", None)
    assert bob.tenant_env() == {"AIDC_LOCALE": "ko"}
    assert alice.tenant_env() == {}
    store.set_locale("alice", "en", NOW)
    assert alice.tenant_env() == {"AIDC_LOCALE": "en"}


def test_the_spawn_form_in_the_saved_language(config: PlatformConfig, store: Store) -> None:
    store.set_locale("bob", "ko", NOW)
    korean = options_form_html(spawner_of("bob", config, store))
    assert "현재 테넌트 사용량:" in korean and "메모리" in korean
    english = options_form_html(spawner_of("carol-not-in-any", config, store))
    assert "You are not a member of any tenant, so there is nothing to start." in english
    store.set_locale("carol-not-in-any", "ko", NOW)
    nothing = options_form_html(spawner_of("carol-not-in-any", config, store))
    assert "어느 테넌트의 구성원도 아니므로 시작할 수 있는 서버가 없습니다." in nothing
