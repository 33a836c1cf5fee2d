"""The `hub` tier, languages (issue 19): what the spawner tells a person, in their saved language.

A real hub (tests/bed/hub.py, the production config) whose machine has 1 H100: alice's saved choice
is Korean, bob has none (English). The same refusal reaches each in their own language, through
the REST API and on the spawn page; the spawn form is in Korean for alice; and her workspace is
told her choice as ``AIDC_LOCALE`` (bob's has none).
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from quotas import paths
from quotas.store import Store
from tests.bed.hub import PASSWORDS, TENANTS, Client, Hub, stop_all_servers

HANGUL = range(0xAC00, 0xD7A4)
PRINT_LOCALE = "import os\nprint('AIDC_LOCALE=' + os.environ.get('AIDC_LOCALE', '(unset)'))\n"


def has_hangul(text: str) -> bool:
    return any(ord(ch) in HANGUL for ch in text)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    h = Hub(tmp_path_factory.mktemp("spawn-i18n"), PASSWORDS, "H100:1", TENANTS, traits={"Spawner.poll_interval": 2})
    with h.running():
        yield h


@pytest.fixture(scope="module")
def clients(hub: Hub) -> dict[str, Client]:
    store = Store(paths.db_url(str(hub.data_dir)))
    try:
        store.set_locale("alice", "ko", datetime.now(UTC))
    finally:
        store.close()
    return {name: hub.login(name, PASSWORDS[name]) for name in ("alice", "bob")}


@pytest.fixture(autouse=True)
def no_servers_left(clients: dict[str, Client]) -> Iterator[None]:
    yield
    stop_all_servers(clients.values())


@pytest.mark.parametrize(
    ("options", "korean", "english"),
    [
        # the spawner's own check of the options (400)
        (
            {"tenant": "lab", "profile": "cpu", "gpus": "8"},
            "알 수 없는 서버 옵션입니다: gpus. 선택할 수 있는 옵션은 'tenant', 'profile', 'borrow'뿐입니다.",
            "Unknown server option: gpus. Only 'tenant', 'profile' and 'borrow' can be chosen;",
        ),
        # the machine's GPUs (503): lab's quota admits 2 H100, this machine has 1
        (
            {"tenant": "lab", "profile": "h100-x2"},
            "이 머신에는 H100 GPU가 1개 있고 그중 1개가 비어 있습니다. 요청하신 수는 2개입니다.",
            "This machine has 1 H100 GPU and 1 free; you asked for 2.",
        ),
    ],
)
def test_a_refusal_is_said_in_each_persons_language(
    clients: dict[str, Client], options: dict[str, str], korean: str, english: str
) -> None:
    said_to_alice = clients["alice"].spawn_failure(**options)
    said_to_bob = clients["bob"].spawn_failure(**options)
    assert korean in said_to_alice, said_to_alice
    assert english in said_to_bob and not has_hangul(said_to_bob), said_to_bob
    assert english not in said_to_alice


def test_the_spawn_form_and_its_refusal_in_korean(hub: Hub, clients: dict[str, Client]) -> None:
    alice, bob = clients["alice"], clients["bob"]
    form = alice.session.get(f"{hub.url}/hub/spawn/alice", timeout=60)
    form.encoding = "utf-8"
    assert "현재 테넌트 사용량: H100 GPU 4개 중" in form.text and " · 메모리 2 GiB · " in form.text, form.text
    assert "Tenant usage now" not in form.text and "memory" not in form.text
    english = bob.session.get(f"{hub.url}/hub/spawn/bob", timeout=60)
    english.encoding = "utf-8"
    assert "Tenant usage now: 0 of 4 H100 GPUs in use" in english.text and " · 2 GiB memory · " in english.text

    # a forged choice, refused on the page itself
    xsrf = [c.value for c in alice.session.cookies if c.name == "_xsrf"][-1]
    page = alice.session.post(f"{hub.url}/hub/spawn/alice", data={"choice": "startup/cpu", "_xsrf": xsrf}, timeout=60)
    page.encoding = "utf-8"
    assert "사용자(alice)는 테넌트 'startup'의 구성원이 아닙니다." in html.unescape(page.text), page.text
    assert "not a member of tenant" not in html.unescape(page.text)
    assert alice.api("GET", "/users/alice").json()["servers"] == {}


def test_the_workspace_is_told_the_saved_language(clients: dict[str, Client]) -> None:
    said = {}
    for name in ("alice", "bob"):
        client = clients[name]
        assert client.spawn(tenant="lab", profile="cpu").status_code in (201, 202)
        server = client.wait_ready()
        said[name] = client.run_in_kernel(server["url"], PRINT_LOCALE).strip()
    assert said == {"alice": "AIDC_LOCALE=ko", "bob": "AIDC_LOCALE=(unset)"}
