"""The SSH gateway in the person's language (issue 19): its messages in Korean and English, the
language carried from the key or token lookup to the session, both languages before the person is
known, and English where OpenSSH's client would escape Korean."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncssh
import pytest

from i18n import Text, translate
from sshgateway import speech
from sshgateway.audit import AuditLog, SessionRecord
from sshgateway.bridge import Refusal, SessionBridge
from sshgateway.hubapi import HubClient, HubRefused, Person
from sshgateway.procnet import Listener
from sshgateway.public_keys import KeyRejected, parse_public_key
from sshgateway.ratelimit import AuthThrottle
from sshgateway.routing import Target, forward_refusal, plan_for
from sshgateway.server import GatewayConnection

HUB = "https://hub.example.org"
OPENSSH = "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10"
OTHER_CLIENT = "SSH-2.0-AsyncSSH_2.24.1"
ALICE, ALICE_GPU = Target("alice", ""), Target("alice", "gpu")


def test_a_server_is_named_in_both_languages() -> None:
    assert ALICE.describe == "alice's default server"
    assert ALICE_GPU.describe == "alice's server 'gpu'"
    assert ALICE.describe.say("ko") == "alice의 기본 서버"
    assert ALICE_GPU.describe.say("ko") == "alice의 'gpu' 서버"


def test_plan_refusals_in_korean_and_english() -> None:
    missing = plan_for(Target("alice", "other"), None, HUB).message
    assert missing.startswith("alice has no server named 'other'. Create it once from the web")
    assert f"({HUB}/hub/home, choosing a profile), then `ssh alice.other@...`" in missing
    korean = translate(missing, "ko")
    assert korean.startswith("alice에게는 이름이 'other'인 서버가 없습니다.")
    assert f"({HUB}/hub/home)" in korean and "`ssh alice.other@...`" in korean
    never = plan_for(ALICE, {"ready": False, "pending": None, "user_options": {}}, HUB).message
    assert never.startswith("alice's default server has never been started")
    assert translate(never, "ko").startswith("alice의 기본 서버는 한 번도 시작된 적이 없어")
    assert f"{HUB}/hub/spawn/alice" in translate(never, "ko")
    stopping = plan_for(ALICE_GPU, {"ready": False, "pending": "stop"}, HUB).message
    assert stopping == "alice's server 'gpu' is being stopped (stop). Try again in a moment."
    assert translate(stopping, "ko") == "alice의 'gpu' 서버를 중지하는 중입니다(stop). 잠시 후 다시 시도하십시오."
    assert translate(stopping, "en") == stopping


@pytest.mark.parametrize(
    "host, port, landing, english, korean",
    [
        ("10.0.0.5", 22, None, "Forwarding to 10.0.0.5:22 is not allowed", "10.0.0.5:22(으)로는 포워딩할 수 없습니다"),
        ("localhost", 0, None, "Port 0 does not exist.", "0번 포트는 존재하지 않습니다."),
        (
            "localhost",
            9999,
            [],
            "Nothing listens on port 9999 (localhost) in alice's default server",
            "alice의 기본 서버의 9999번 포트",
        ),
        (
            "localhost",
            8888,
            [Listener("5001", "127.0.0.1", 8888, 1000, frozenset({"bob"}))],
            "Port 8888 belongs to another workspace: localhost:8888 reaches a program of another workspace",
            "8888번 포트는 다른 워크스페이스의 포트입니다. localhost:8888 주소는",
        ),
    ],
)
def test_forward_refusals_in_korean_and_english(
    host: str, port: int, landing: list[Listener] | None, english: str, korean: str
) -> None:
    reason = forward_refusal(host, port, ALICE, landing, 1000, 1000)
    assert isinstance(reason, Text)
    assert reason.startswith(english) and translate(reason, "en") == reason
    said = translate(reason, "ko")
    assert korean in said and english not in said


def test_throttle_refusal_in_korean_and_english() -> None:
    throttle = AuthThrottle(max_failures=1, clock=lambda: 1000.0)
    throttle.failure("10.9.9.9", "alice")
    refusal = throttle.refusal("10.9.9.9")
    assert refusal is not None
    assert refusal == (
        "Too many failed logins from 10.9.9.9 (1 in a row). Try again in 600 seconds, with a key registered"
        " on the hub's quotas page (SSH keys)."
    )
    assert translate(refusal, "ko") == (
        "10.9.9.9에서 로그인에 너무 많이 실패했습니다(연속 1회). 600초 후에 허브의 할당량 페이지(SSH 키)에 등록한"
        " 키로 다시 시도하십시오."
    )


@pytest.mark.parametrize(
    "text, english, korean",
    [
        ("", "The key is empty. Paste the one line of your .pub file", "키가 비어 있습니다. .pub 파일의 한 줄을"),
        (
            "ssh-dss AAAA",
            "DSA keys are not accepted (too weak). Use ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa of at least 3072 bits.",
            "3072비트 이상의 ssh-rsa 키를 사용하십시오.",
        ),
        ("a\nb", "Paste one key at a time: the text has 2 lines.", "입력한 텍스트가 2줄입니다."),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "This is a PRIVATE key", "이것은 개인 키(PRIVATE KEY)입니다."),
        (
            "ssh-ed25519 !!!",
            "The key data after ssh-ed25519 is not valid base64",
            "ssh-ed25519 뒤의 키 데이터가 올바른 base64가 아닙니다",
        ),
        (
            'from="x" ssh-ed25519 AAAA',
            "The key starts with options ('from=\"x\"')",
            "키가 옵션('from=\"x\"')으로 시작합니다.",
        ),
    ],
)
def test_key_rejections_in_korean_and_english(text: str, english: str, korean: str) -> None:
    with pytest.raises(KeyRejected) as caught:
        parse_public_key(text)
    assert str(caught.value).startswith(english)  # str(e): the English, as the API's problems had it
    assert isinstance(caught.value.message, Text) and caught.value.message == str(caught.value)
    said = translate(caught.value.message, "ko")
    assert korean in said and "Paste" not in said and "accepted" not in said


# ------------------------------------------------------------------ how it is said


def test_say_in_a_known_language_and_in_both_before_the_person_is_known() -> None:
    text = ALICE.describe
    assert speech.say(text, "ko") == "alice의 기본 서버"
    assert speech.say(text, "en") == "alice's default server"
    assert speech.say(text, None) == "alice's default server\nalice의 기본 서버"
    # the hub's own words (already in the person's language): once, as they are
    assert speech.say("서버를 시작할 수 없습니다.", None) == "서버를 시작할 수 없습니다."
    assert speech.say("서버를 시작할 수 없습니다.", "en") == "서버를 시작할 수 없습니다."


def test_reasons_are_english_for_openssh_which_escapes_korean_in_its_log() -> None:
    text = forward_refusal("10.0.0.5", 22, ALICE, None)
    assert speech.reason(text, "ko", OPENSSH) == (str(text), "en-US")
    assert speech.reason(text, "ko", OTHER_CLIENT) == (translate(text, "ko"), "ko-KR")
    assert speech.reason(text, "en", OTHER_CLIENT) == (str(text), "en-US")
    assert speech.reason(text, None, OTHER_CLIENT)[0] == f"{text}\n{translate(text, 'ko')}"
    assert speech.reason(text, None, OPENSSH)[0] == str(text)
    assert speech.escapes_non_ascii(OPENSSH) and not speech.escapes_non_ascii(OTHER_CLIENT)


# ------------------------------------------------------------------ the hub's answers


@pytest.mark.parametrize(
    "answer, person",
    [
        ({"user": "alice", "locale": "ko"}, Person("alice", "ko")),
        ({"user": "alice", "locale": None}, Person("alice", None)),
        ({"user": "alice"}, Person("alice", None)),  # a quotas service that does not say
        ({"user": "alice", "locale": "ko-KR"}, Person("alice", "ko")),
        ({"user": "alice", "locale": "fr"}, Person("alice", None)),  # a language the gateway does not speak
    ],
)
def test_key_owner_with_their_language(answer: dict[str, Any], person: Person) -> None:
    hub = HubClient("http://hub/hub/api", "http://proxy/services/quotas/", "secret")
    asked: list[str] = []

    async def fetch(url: str, **kwargs: Any) -> Any:
        asked.append(url)
        return answer

    hub._fetch = fetch  # type: ignore[method-assign,assignment]
    assert asyncio.run(hub.key_owner("SHA256:abc+/=")) == person
    assert asked == ["http://proxy/services/quotas/api/ssh-keys/lookup?fingerprint=SHA256%3Aabc%2B%2F%3D"]
    assert asyncio.run(hub.locale_of("john.smith")) == person.locale
    assert asked[1] == "http://proxy/services/quotas/api/ssh-keys/lookup?user=john.smith"


# ------------------------------------------------------------------ one person's connection


class FakeHub:
    def __init__(self, owners: dict[str, Person], tokens: dict[str, str], locales: dict[str, str | None]):
        self.owners, self.tokens, self.locales = owners, tokens, locales

    async def key_owner(self, fingerprint: str) -> Person | None:
        return self.owners.get(fingerprint)

    async def token_owner(self, token: str) -> str | None:
        return self.tokens.get(token)

    async def locale_of(self, name: str) -> str | None:
        if name not in self.locales:
            raise HubRefused(400, "fingerprint must be an OpenSSH SHA256 fingerprint")  # an older quotas service
        return self.locales[name]

    async def user(self, name: str) -> dict[str, Any] | None:
        return None


class FakeConn:
    def __init__(self, client_version: str):
        self.client_version = client_version
        self.banners: list[tuple[str, str]] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"client_version": self.client_version, "peername": ("10.1.1.1", 5000)}.get(name, default)

    def send_auth_banner(self, msg: str, lang: str) -> None:
        self.banners.append((msg, lang))


def connection(hub: FakeHub, client_version: str = OPENSSH, throttle: AuthThrottle | None = None) -> GatewayConnection:
    import logging

    gateway = SimpleNamespace(
        log=logging.getLogger("test"),
        new_connection_id=lambda: "c-1",
        hub=hub,
        throttle=throttle or AuthThrottle(base_delay=0),
        allow_token_password=True,
    )
    conn = GatewayConnection(gateway)  # type: ignore[arg-type]
    conn.connection_made(FakeConn(client_version))  # type: ignore[arg-type]
    return conn


KEY = asyncssh.generate_private_key("ssh-ed25519").convert_to_public()
FINGERPRINT = KEY.get_fingerprint("sha256")


@pytest.mark.parametrize("saved, locale", [("ko", "ko"), (None, "en"), ("en", "en")])
def test_a_key_login_carries_the_owners_language(saved: str | None, locale: str) -> None:
    conn = connection(FakeHub({FINGERPRINT: Person("alice", saved)}, {}, {}))
    assert conn.locale is None  # not known yet
    assert asyncio.run(conn.validate_public_key("alice.gpu", KEY))
    assert conn.target == ALICE_GPU and conn.locale == locale


def test_an_unknown_key_leaves_the_language_unknown() -> None:
    conn = connection(FakeHub({}, {}, {}))
    assert not asyncio.run(conn.validate_public_key("alice", KEY))
    assert conn.locale is None


@pytest.mark.parametrize("locales, locale", [({"alice": "ko"}, "ko"), ({"alice": None}, "en"), ({}, "en")])
def test_a_token_login_looks_up_the_persons_language(locales: dict[str, str | None], locale: str) -> None:
    conn = connection(FakeHub({}, {"tok": "alice"}, locales))
    assert asyncio.run(conn.validate_password("alice", "tok"))
    assert conn.locale == locale  # {}: the lookup failed, English rather than a refused login


@pytest.mark.parametrize("client, reason", [(OPENSSH, "en"), (OTHER_CLIENT, "both")])
def test_a_refused_source_is_told_in_both_languages(client: str, reason: str) -> None:
    throttle = AuthThrottle(max_failures=1, clock=lambda: 1000.0)
    throttle.failure("10.1.1.1", "x")
    conn = connection(FakeHub({}, {}, {}), client, throttle)
    with pytest.raises(asyncssh.DisconnectError) as caught:
        asyncio.run(conn.begin_auth("alice"))
    english = "Too many failed logins from 10.1.1.1 (1 in a row). Try again in 600 seconds"
    korean = "10.1.1.1에서 로그인에 너무 많이 실패했습니다(연속 1회). 600초 후에"
    banner, lang = conn.conn.banners[0]  # type: ignore[union-attr]
    assert banner.startswith(english) and f"\n{korean}" in banner and lang == "en-US"
    assert caught.value.reason.startswith(english)
    assert (korean in caught.value.reason) == (reason == "both")


class FakeChannel:
    def __init__(self) -> None:
        self.written: list[tuple[bytes, Any]] = []
        self.status: int | None = None

    def write(self, data: bytes, datatype: Any = None) -> None:
        self.written.append((data, datatype))

    def exit(self, status: int) -> None:
        self.status = status

    def get_environment(self) -> dict[str, str]:
        return {}

    def stderr(self) -> str:
        return b"".join(d for d, t in self.written if t == asyncssh.EXTENDED_DATA_STDERR).decode()


@pytest.mark.parametrize("locale", ["ko", "en"])
def test_a_session_is_told_the_progress_and_the_refusal_in_the_persons_language(locale: str, tmp_path: Path) -> None:
    refusal = plan_for(ALICE, {"ready": False, "pending": None, "user_options": {}}, HUB).message

    async def open_upstream(factory: Any, **kwargs: Any) -> Any:
        kwargs["progress"](ALICE_GPU.describe)
        kwargs["progress"]("[50%] 서버 준비 중")  # the hub's own words pass through
        raise Refusal(refusal)

    record = SessionRecord(session="c-1", user="alice", server="", tenant="", source="10.1.1.1")
    bridge = SessionBridge(open_upstream, AuditLog(str(tmp_path / "audit.jsonl")), record, locale)
    chan = FakeChannel()
    bridge.connection_made(chan)
    bridge.pty = ("xterm", (80, 24, 0, 0), {})
    asyncio.run(bridge._start())
    lines = chan.stderr().split("\r\n")
    assert lines[0] == translate(ALICE_GPU.describe, locale)
    assert lines[1] == "[50%] 서버 준비 중"
    assert lines[2] == translate(refusal, locale) and chan.status == 1
    assert (lines[2] == str(refusal)) == (locale == "en")
    assert record.error == str(refusal)  # the audit record keeps the English, for the operator
