"""The SSH gateway speaks the person's language (issue 19): Debian's OpenSSH client through the real
gateway of a real hub. alice chose Korean with the hub's language switcher, as people do; bob never
chose. Nothing here starts a server: the refusals of servers that were never started, or do not
exist, are enough.

What OpenSSH shows as it is: a session's stderr and authentication banners (UTF-8). What it shows
through its log, escaping every byte outside ASCII: disconnect and forward refusal reasons, which
the gateway therefore says in English to OpenSSH and in the person's language to other clients
(here asyncssh's).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from quotas import paths
from quotas.store import Store
from tests.bed.hub import PASSWORDS, Client, Hub, running_hub
from tests.bed.ssh import SSH, keygen, register

MAX_FAILURES = 2  # SSHGateway.auth_max_failures in this hub
HANGUL = re.compile("[\uac00-\ud7a3]")
ESCAPED = re.compile(r"\\[0-7]{3}")  # what OpenSSH's log makes of a byte outside ASCII

ALICE_MISSING_KO = "alice에게는 이름이 'nothere'인 서버가 없습니다."
ALICE_NEVER_KO = "alice의 기본 서버는 한 번도 시작된 적이 없어 게이트웨이가 어떤 프로필로 시작해야 할지 알 수 없습니다."
ALICE_NEVER_EN = "alice's default server has never been started"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    work = tmp_path_factory.mktemp("ssh-i18n-hub")
    config = work / "sshgateway_config.py"
    config.write_text(
        "c.SSHGateway.auth_failure_delay = 0.1\n"
        f"c.SSHGateway.auth_max_failures = {MAX_FAILURES}\n"
        "c.SSHGateway.allow_token_password = True\n"
        "c.SSHGateway.workers = 1\n"
    )
    with running_hub(work, env={"AIDC_SSH_CONFIG": str(config)}) as h:
        yield h


@pytest.fixture(scope="module")
def people(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Client, Path]]:
    keys = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("alice", "bob"):
        client = hub.login(name, PASSWORDS[name])
        key = keygen(keys / f"{name}_ed25519")
        register(client, key)
        out[name] = (client, key)
    # alice switches the hub to Korean on a page, which saves her choice for the gateway too
    alice = out["alice"][0]
    r = alice.session.get(f"{hub.url}/hub/language", params={"lang": "ko", "next": "/hub/home"}, timeout=30)
    assert r.status_code == 200, r.text
    store = Store(paths.db_url(str(hub.data_dir)), migrate=False)
    try:
        assert store.locale_of("alice") == "ko" and store.locale_of("bob") is None
    finally:
        store.close()
    return out


@pytest.fixture(scope="module")
def ssh(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> SSH:
    return SSH(hub, tmp_path_factory.mktemp("ssh-client"))


def openssh(
    ssh: SSH, login: str, key: Path | None, *extra: str, log: str = "ERROR", source: str = "127.0.0.1"
) -> subprocess.CompletedProcess[str]:
    """OpenSSH's client in a UTF-8 terminal's locale (as a Korean person's), ``true`` as the command
    unless ``extra`` says otherwise."""
    args = ["ssh", *ssh.options(key, log=log, source=source), "-p", str(ssh.port), *extra, f"{login}@127.0.0.1"]
    if "-W" not in extra:
        args.append("true")
    env = {**os.environ, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    return subprocess.run(
        args, capture_output=True, encoding="utf-8", errors="replace", timeout=120, stdin=subprocess.DEVNULL, env=env
    )


def test_a_person_who_chose_korean_is_refused_in_korean_and_one_who_did_not_in_english(
    hub: Hub, ssh: SSH, people: dict[str, tuple[Client, Path]]
) -> None:
    alice_key, bob_key = people["alice"][1], people["bob"][1]
    # a named server she does not have
    r = openssh(ssh, "alice.nothere", alice_key)
    print(f"\nwhat alice sees:\n{r.stderr}")
    assert r.returncode == 1, r.stderr
    assert ALICE_MISSING_KO in r.stderr and f"({hub.url}/hub/home)" in r.stderr
    assert "`ssh alice.nothere@...` 명령으로 접속할 때 서버가 시작됩니다" in r.stderr
    assert "has no server named" not in r.stderr
    # her default server, never started
    r = openssh(ssh, "alice", alice_key)
    assert r.returncode == 1 and ALICE_NEVER_KO in r.stderr and f"{hub.url}/hub/spawn/alice" in r.stderr, r.stderr
    assert ALICE_NEVER_EN not in r.stderr
    # bob never chose: English, as before
    r = openssh(ssh, "bob.nothere", bob_key)
    print(f"what bob sees:\n{r.stderr}")
    assert r.returncode == 1 and "bob has no server named 'nothere'" in r.stderr, r.stderr
    assert not HANGUL.search(r.stderr)


def test_a_token_login_is_told_in_the_persons_language_too(ssh: SSH, people: dict[str, tuple[Client, Path]]) -> None:
    alice, bob = people["alice"][0], people["bob"][0]
    r = ssh.with_password("alice.nothere", "true", alice.token)
    assert r.returncode == 1 and ALICE_MISSING_KO in r.stderr, r.stderr
    r = ssh.with_password("bob.nothere", "true", bob.token)
    assert r.returncode == 1 and "bob has no server named 'nothere'" in r.stderr and not HANGUL.search(r.stderr)


def test_a_refused_forward_is_readable_english_to_openssh_and_korean_to_other_clients(
    ssh: SSH, people: dict[str, tuple[Client, Path]]
) -> None:
    alice_key = people["alice"][1]
    # OpenSSH prints the reason through its log, which would escape Korean: English it can show
    r = openssh(ssh, "alice", alice_key, "-W", "localhost:8888", log="INFO")
    assert r.returncode != 0 and "open failed: administratively prohibited" in r.stderr, r.stderr
    assert ALICE_NEVER_EN in r.stderr and not ESCAPED.search(r.stderr), r.stderr

    async def through_asyncssh(login: str, key: Path) -> tuple[str, str, str]:
        async with asyncssh.connect(
            "127.0.0.1",
            ssh.port,
            username=login,
            client_keys=[str(key)],
            known_hosts=None,
            agent_path=None,
            config=None,
        ) as conn:
            with pytest.raises(asyncssh.ChannelOpenError) as refused:
                await conn.create_connection(asyncssh.SSHTCPSession, "localhost", 8888)
            session = await conn.run("true", check=False)
            assert session.exit_status == 1
            return refused.value.reason, refused.value.lang, str(session.stderr)

    reason, lang, stderr = asyncio.run(through_asyncssh("alice", alice_key))
    assert reason.startswith(ALICE_NEVER_KO) and lang == "ko-KR", reason
    assert stderr.startswith(ALICE_NEVER_KO), stderr
    reason, lang, stderr = asyncio.run(through_asyncssh("bob", people["bob"][1]))
    assert reason.startswith("bob's default server has never been started") and lang == "en-US", reason
    assert not HANGUL.search(reason + stderr)


def test_a_refused_source_is_told_in_english_then_korean(ssh: SSH) -> None:
    """Too many failures from one address: nobody is known yet, so both languages, in a banner."""
    source = "127.0.0.3"
    for _attempt in range(MAX_FAILURES):  # each counted before the client hears "Permission denied"
        r = ssh.with_password("carol", "true", "not-a-token", source=source)
        assert r.returncode == 255 and "Permission denied" in r.stderr, r.stderr
    r = openssh(ssh, "carol", None, log="INFO", source=source)
    print(f"\nwhat a stranger sees:\n{r.stderr}")
    english = f"Too many failed logins from {source} ({MAX_FAILURES} in a row). Try again in"
    korean = f"{source}에서 로그인에 너무 많이 실패했습니다(연속 {MAX_FAILURES}회)."
    assert r.returncode == 255, r.stderr
    lines = r.stderr.splitlines()
    # the banner: the English line, then the Korean one
    banner = next(i for i, line in enumerate(lines) if line.startswith(english))
    assert lines[banner + 1].startswith(korean), r.stderr
    # the disconnect's reason, which OpenSSH's log shows: the English, unescaped
    assert any("Received disconnect" in line and english in line for line in lines), r.stderr
    assert not ESCAPED.search(r.stderr), r.stderr
