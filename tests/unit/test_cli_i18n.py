"""``aidc`` speaks the language of its environment (``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``,
``LANG``): its messages for people in Korean or English, its machine-readable output and exit
codes the same in both, and the quotas API's own messages passed on as the API said them."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from aidc.cli import BAD_INPUT, REFUSED, format_ceiling, format_limits, format_queue, main, ssh_config_block

AIDC = Path(sys.executable).with_name("aidc")
LOCALE_VARIABLES = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")


def run_aidc(*argv: str, **language: str) -> subprocess.CompletedProcess[str]:
    """``aidc argv`` as a person runs it, with only the locale variables given (none: unset)."""
    env = {k: v for k, v in os.environ.items() if k not in LOCALE_VARIABLES and not k.startswith("AIDC_")}
    env.update(language)
    return subprocess.run([str(AIDC), *argv], env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def language(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set the environment's locale variables for an in-process ``main``."""

    def set_language(**variables: str) -> None:
        for name in LOCALE_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        for name, value in variables.items():
            monkeypatch.setenv(name, value)

    yield set_language


# -- a bad argument value, through the installed command ---------------------------------------

BAD_PORT = ("ssh-config", "--user", "alice", "--host", "hub.example.org", "--port", "99999")


def test_bad_port_in_korean_with_a_korean_lang() -> None:
    done = run_aidc(*BAD_PORT, LANG="ko_KR.UTF-8")
    assert done.returncode == BAD_INPUT
    assert done.stdout == ""
    assert done.stderr == "aidc ssh-config: SSH 포트 '99999'은(는) 포트 번호(1-65535)가 아닙니다. 예: --port 2222.\n"


@pytest.mark.parametrize("lang", [{"LANG": "C"}, {"LANG": "en_US.UTF-8"}, {}], ids=["C", "en_US", "unset"])
def test_bad_port_in_english_otherwise(lang: dict[str, str]) -> None:
    done = run_aidc(*BAD_PORT, **lang)
    assert done.returncode == BAD_INPUT
    assert done.stderr == "aidc ssh-config: The SSH port '99999' is not a port number (1-65535); e.g. --port 2222.\n"


def test_a_bad_username_is_refused_by_argparse_in_korean() -> None:
    done = run_aidc("user", "add", "Alice!", LANG="ko_KR.UTF-8")
    assert done.returncode == 2
    # argparse's own framing is Python's (English); the reason is ours, in Korean
    assert "'Alice!'은(는) 올바른 사용자 이름이 아닙니다. 영문 소문자, 숫자와 . _ @ + -를 쓰십시오" in done.stderr
    english = run_aidc("user", "add", "Alice!", LANG="C")
    assert "'Alice!' is not a valid username: use lower-case letters" in english.stderr
    assert "올바른" not in english.stderr


@pytest.mark.parametrize(
    ("variables", "korean"),
    [
        ({"LC_ALL": "ko_KR.UTF-8", "LANG": "en_US.UTF-8"}, True),
        ({"LC_MESSAGES": "ko_KR.UTF-8"}, True),
        ({"LANGUAGE": "ko:en", "LANG": "en_US.UTF-8"}, True),
        ({"LC_ALL": "C", "LANG": "ko_KR.UTF-8"}, False),
        ({"LANG": "fr_FR.UTF-8"}, False),  # a language AIDC Hub does not speak: English
    ],
)
def test_the_language_follows_gettexts_variables(language: Any, variables: dict[str, str], korean: bool) -> None:
    language(**variables)
    problems = run_main_errors(["quota", "set", "--tenant", "lab", "--user", "alice", "--servers", "two"])
    assert ("--servers 'two'은(는) 0 이상의 정수가 아닙니다" in problems) is korean
    assert ("--servers 'two' is not a whole number, 0 or more" in problems) is not korean


def run_main_errors(argv: list[str]) -> str:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(argv) == BAD_INPUT
    return err.getvalue()


# -- a refusal that needs no hub: every problem of `aidc quota set`, in-process -----------------


def test_quota_set_problems_in_korean(language: Any, capsys: pytest.CaptureFixture[str]) -> None:
    language(LANG="ko_KR.UTF-8")
    argv = ["quota", "set", "--tenant", "lab", "--user", "alice", "--cpu", "lots", "--memory=-1Gi", "--remove"]
    assert main(argv) == BAD_INPUT
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.splitlines() == [
        "aidc quota: 아무것도 바꾸지 않았습니다: `aidc quota set`의 옵션이 올바르지 않습니다.",
        "  - --cpu 'lots'은(는) CPU 양이 아닙니다. 8, 0.5, 500m처럼 코어 수로 쓰십시오",
        "  - --memory '-1Gi'은(는) 음수입니다. 64Gi와 같은 양으로 쓰십시오",
        "  - --remove는 한도 전체를 삭제합니다. --gpus, --servers, --cpu, --memory, --gpu-hours, --clear와 함께"
        " 쓸 수 없습니다",
    ]


def test_quota_set_problems_in_english(language: Any, capsys: pytest.CaptureFixture[str]) -> None:
    language(LANG="C")
    argv = ["quota", "set", "--tenant", "lab", "--user", "alice", "--cpu", "lots"]
    assert main(argv) == BAD_INPUT
    assert capsys.readouterr().err.splitlines() == [
        "aidc quota: Nothing was changed: the options of `aidc quota set` are not valid.",
        "  - --cpu 'lots' is not an amount of CPU: write cores, such as 8, 0.5 or 500m",
    ]


def test_no_token_in_korean_with_the_exit_code_unchanged(
    language: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    language(LANG="ko_KR.UTF-8")
    for name in ("AIDC_TOKEN", "JUPYTERHUB_API_TOKEN", "AIDC_HUB_URL"):
        monkeypatch.delenv(name, raising=False)
    assert main(["quota", "servers", "--tenant", "lab"]) == 3
    assert capsys.readouterr().err == (
        "aidc quota: API 토큰이 없습니다: --token-file, $AIDC_TOKEN, $JUPYTERHUB_API_TOKEN 중 어느 것도 설정되지"
        " 않았습니다. http://127.0.0.1:8000/hub/token에서 토큰을 만들어 본인만 읽을 수 있는 파일에 저장한 뒤"
        " --token-file FILE로 전달하십시오(또는 AIDC_TOKEN을 export하십시오).\n"
    )


# -- the quotas API's messages pass through; the API is asked in the environment's language -----


class FakeQuotas(BaseHTTPRequestHandler):
    """Refuses every quotas API call with its own message; accepts the token at /hub/api/user."""

    seen: list[str | None] = []
    MESSAGE = "Tenant lab: 'stranger' is not a member; ask a tenant admin (kim)."

    def do_GET(self) -> None:
        if self.path == "/hub/api/user":
            self._answer(200, {"name": "stranger"})
            return
        FakeQuotas.seen.append(self.headers.get("Accept-Language"))
        self._answer(403, {"status": 403, "message": self.MESSAGE})

    def _answer(self, status: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_hub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeQuotas)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeQuotas.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("lang", "asked"), [("ko_KR.UTF-8", "ko"), ("C", "en")])
def test_api_messages_pass_through(
    language: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake_hub: str,
    lang: str,
    asked: str,
) -> None:
    language(LANG=lang)
    monkeypatch.setenv("AIDC_TOKEN", "secret-token")
    assert main(["quota", "servers", "--tenant", "lab", "--hub-url", fake_hub]) == REFUSED
    assert capsys.readouterr().err == f"aidc quota: {FakeQuotas.MESSAGE}\n"
    assert FakeQuotas.seen == [asked]


# -- output: what scripts read stays; what people read is translated ---------------------------


def test_ssh_config_translates_only_its_comments() -> None:
    english = ssh_config_block("alice", "hub.example.org", 2222, ["gpu"])
    korean = ssh_config_block("alice", "hub.example.org", 2222, ["gpu"], locale="ko")
    assert korean.splitlines()[2:] == english.splitlines()[2:]
    assert korean.splitlines()[:2] == [
        "# AIDC Hub: hub.example.org 포트 2222의 SSH 게이트웨이를 거쳐 접속하는 alice의 워크스페이스입니다.",
        "# 먼저 공개 키를 등록하십시오(할당량 페이지의 SSH 키). 중지된 서버는 접속하면 시작됩니다.",
    ]


def test_korean_tables_keep_their_columns_aligned() -> None:
    limit = {"kind": "user", "name": "alice", "gpus": {"H100": 2}, "servers": 2, "cpu": "16", "memory": "64Gi"}
    assert format_limits([limit], "ko").splitlines() == [
        # 종류 and 이름 are four columns wide in a terminal, like "user" and "alice" padded
        "종류  이름   GPU     서버  CPU  메모리  월 GPU 시간",
        "user  alice  H100=2  2     16   64Gi    -",
    ]


def test_korean_ceiling_and_queue() -> None:
    tenant = {
        "id": "lab",
        "display_name": "University Lab",
        "ceiling": {"gpus": {"H100": 4}, "servers": 6},
        "in_use": {"gpus": {}, "servers": 1, "cpu": "2", "memory": "4Gi", "gpu_hours": "0.5", "period": "2026-01"},
    }
    assert format_ceiling(tenant, "ko").splitlines() == [
        "테넌트 lab (University Lab)",
        "  상한:    H100=4개, 서버 6개",
        "  사용 중: 서버 1개, CPU 2, 메모리 4Gi, 2026-01 GPU 시간 0.5",
    ]
    queue = [{"user": "alice", "server": "", "gpu_type": "H100", "gpu_count": 1, "enqueued": "2026-11-20T14:05:00Z"}]
    assert format_queue(queue, datetime(2026, 11, 20, 14, 8, 20, tzinfo=UTC), "ko").splitlines() == [
        "대기 순서  사용자  서버    GPU     대기 시작                                    이유",
        "-          alice   (기본)  H100=1  2026년 11월 20일 14:05 (UTC, 3분 20초 대기)  방금 들어왔습니다. 1초 안에"
        " 대기 순서가 정해집니다",
    ]
