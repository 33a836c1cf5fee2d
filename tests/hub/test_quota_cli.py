"""`aidc quota` against a real hub: the command is run as people run it (a process, the token in
$AIDC_TOKEN or a file), and every answer is checked against what the quotas API then holds.

Tenants (tests/hub/tenants.yaml): `lab` (alice, bob, carol; admin kim; 4 H100; 2 servers per
person, 6 servers, 32 CPUs, 64Gi) and `startup` (dave; admin erin). `admin` is a platform admin.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from quotas import paths
from quotas.policy import Holding
from quotas.store import Store
from tests.bed.hub import PASSWORDS, REPO, Client, Hub, free_port, running_hub

QUOTAS_API = "/services/quotas/api"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("hub")) as h:
        yield h


@pytest.fixture(scope="module")
def tokens(hub: Hub) -> dict[str, str]:
    return {name: Client(hub, name, PASSWORDS[name]).token for name in ("admin", "kim", "alice")}


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
def aidc(hub: Hub, tokens: dict[str, str]) -> Any:
    """Run `aidc quota ...` as ``who`` (a token in $AIDC_TOKEN; None: no token at all)."""

    def run(*argv: str, who: str | None = "kim", env: dict[str, str] | None = None) -> Result:
        base = {k: v for k, v in os.environ.items() if k not in ("AIDC_TOKEN", "JUPYTERHUB_API_TOKEN")}
        base["AIDC_HUB_URL"] = hub.url
        if who is not None:
            base["AIDC_TOKEN"] = tokens[who]
        proc = subprocess.run(
            [sys.executable, "-m", "aidc.cli", "quota", *argv],
            env={**base, **(env or {})},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


def api(
    hub: Hub, token: str, method: str, path: str, headers_extra: dict[str, str] | None = None, **kwargs: Any
) -> requests.Response:
    headers = {"Authorization": f"token {token}", **(headers_extra or {})}
    return requests.request(method, f"{hub.url}{QUOTAS_API}/{path}", headers=headers, timeout=30, **kwargs)


@pytest.fixture
def limits(hub: Hub, tokens: dict[str, str]) -> Iterator[Any]:
    """Every limit of both tenants as the platform admin reads them; each test starts with alice
    holding H100=1, servers=1 in `lab` (so a wrong merge shows) and ends with no limit anywhere."""

    def read() -> dict[str, Any]:
        out = {}
        for tenant in ("lab", "startup"):
            r = api(hub, tokens["admin"], "GET", f"tenants/{tenant}/limits")
            assert r.status_code == 200, r.text
            out[tenant] = r.json()["limits"]
        return out

    r = api(hub, tokens["admin"], "PUT", "tenants/lab/limits/users/alice", json={"gpus": {"H100": 1}, "servers": 1})
    assert r.status_code == 200, r.text
    yield read
    for tenant, items in read().items():
        for limit in items:
            api(hub, tokens["admin"], "DELETE", f"tenants/{tenant}/limits/{limit['kind']}s/{limit['name']}")


SET_ALICE = ("set", "--tenant", "lab", "--user", "alice")


@pytest.mark.parametrize(
    ("argv", "who", "messages"),
    [
        ((*SET_ALICE, "--gpu-count", "2"), "kim", ["unrecognized arguments: --gpu-count 2"]),
        ((*SET_ALICE, "--token", "x", "--servers", "1"), "kim", ["unrecognized arguments: --token x"]),
        (("set", "--user", "alice", "--servers", "1"), "kim", ["the following arguments are required: --tenant"]),
        (
            (*SET_ALICE, "--gpus", "H100=-1"),
            "kim",
            ["--gpus 'H100=-1': the count of H100 GPUs must be a whole number, 0 or more"],
        ),
        ((*SET_ALICE, "--gpus", "H100=x"), "kim", ["--gpus 'H100=x': the count of H100 GPUs must be a whole number"]),
        (
            (*SET_ALICE, "--gpus", "H100=5"),
            "kim",
            ["The limit of user alice in tenant lab was not changed", "gpus.H100 5 exceeds tenant lab's ceiling of 4"],
        ),
        ((*SET_ALICE, "--gpus", "V100=1"), "kim", ["gpus.V100: tenant lab has no V100 GPUs (it has: H100 (4))"]),
        (
            (*SET_ALICE, "--gpus", "A100=1", "--servers", "3", "--cpu", "64"),
            "kim",
            [
                "gpus.A100: tenant lab has no A100 GPUs",
                "servers 3 exceeds tenant lab's ceiling of 2 servers per person",
                "cpu 64 CPUs exceeds tenant lab's ceiling of 32 CPUs",
            ],
        ),
        (
            (*SET_ALICE, "--cpu", "8Gb", "--memory", "8Gb"),
            "kim",
            [
                "--cpu '8Gb' is not an amount of CPU: write cores, such as 8, 0.5 or 500m",
                "--memory '8Gb' has unit 'Gb', which Kubernetes does not know; did you mean 'Gi'",
            ],
        ),
        ((*SET_ALICE, "--memory", "128Gi"), "kim", ["memory 128 GiB exceeds tenant lab's ceiling of 64 GiB"]),
        ((*SET_ALICE, "--servers", "1", "--remove"), "kim", ["--remove deletes the whole limit"]),
        ((*SET_ALICE, "--clear", "gpu"), "kim", ["--clear 'gpu' is not a field of a limit"]),
        (("show", "--user", "al ice"), "kim", ["'al ice' is not a valid user or group name"]),
        (
            ("usage", "--from", "2026-02-30", "--to", "1.3.2026"),
            "kim",
            [
                "--from '2026-02-30' is not a date; write YYYY-MM-DD",
                "--to '1.3.2026' is not a date; write YYYY-MM-DD",
            ],
        ),
        (
            ("usage", "--from", "2026-03-01", "--to", "2026-02-01"),
            "kim",
            ["from (2026-03-01) must be before to (2026-02-01); to is exclusive"],
        ),
        (
            ("usage", "--from", "2025-01-01", "--to", "2026-03-01"),
            "kim",
            ["from 2025-01-01 to 2026-03-01 is 424 days; a report covers at most 366 days"],
        ),
        (("usage", "--by", "person"), "kim", ["argument --by: invalid choice: 'person'"]),
        (("show",), "admin", ["You can see 2 tenants (lab, startup); say which with --tenant."]),
        (("usage", "--daily"), "admin", ["You can see 2 tenants (lab, startup); say which with --tenant."]),
    ],
)
def test_bad_input_exits_2_says_why_and_changes_nothing(
    aidc: Any, limits: Any, argv: tuple[str, ...], who: str, messages: list[str]
) -> None:
    before = limits()
    result = aidc(*argv, who=who)
    assert result.code == 2, result
    assert result.out == ""
    for message in messages:
        assert message in result.err
    assert limits() == before


@pytest.mark.parametrize(
    ("argv", "who", "message"),
    [
        (
            ("set", "--tenant", "startup", "--user", "dave", "--gpus", "H100=1"),
            "kim",
            "You (kim) are not a member or an admin of tenant 'startup', so you cannot see it.",
        ),
        (
            ("set", "--tenant", "startup", "--user", "dave", "--remove"),
            "kim",
            "You (kim) are not a member or an admin of tenant 'startup', so you cannot see it.",
        ),
        (("show", "--tenant", "startup"), "kim", "You (kim) are not a member or an admin of tenant 'startup'"),
        (("usage", "--tenant", "startup", "--csv"), "kim", "You (kim) are not a member or an admin of tenant"),
        (("show", "--tenant", "nowhere"), "kim", "You (kim) are not a member or an admin of tenant 'nowhere'"),
        (("show", "--tenant", "nowhere"), "admin", "There is no tenant 'nowhere' (tenants: lab, startup)."),
        (
            ("set", "--tenant", "lab", "--user", "alice", "--servers", "2"),
            "alice",
            "Only admins of tenant lab (kim) and platform admins can set limits; you (alice) are a member.",
        ),
        (
            ("show", "--user", "bob"),
            "alice",
            "You (alice) can see your own limit and your groups' limits in tenant lab",
        ),
        (("usage", "--user", "bob"), "alice", "You (alice) can see your own usage in tenant lab, not bob's."),
        (("show", "--user", "bob"), "kim", "No limit is set for user bob in tenant lab: only the tenant's ceiling"),
    ],
)
def test_refusals_exit_1_with_the_api_message_and_change_nothing(
    aidc: Any, limits: Any, argv: tuple[str, ...], who: str, message: str
) -> None:
    if argv[-1] == "--remove":  # something to remove, so that only the refusal stops it
        startup = ("set", "--tenant", "startup", "--user", "dave", "--servers", "1")
        assert aidc(*startup, who="admin").code == 0
    before = limits()
    result = aidc(*argv, who=who)
    assert result.code == 1, result
    assert result.out == ""
    assert result.err.startswith("aidc quota: ")
    assert message in result.err
    assert limits() == before


def test_no_token_or_no_hub_exits_3(aidc: Any, limits: Any, tmp_path: Path) -> None:
    before = limits()
    result = aidc("set", "--tenant", "lab", "--user", "alice", "--servers", "2", who=None)
    assert (result.code, result.out) == (3, "")
    assert "No API token: neither --token-file nor $AIDC_TOKEN nor $JUPYTERHUB_API_TOKEN is set." in result.err
    assert "/hub/token" in result.err

    missing = tmp_path / "no-such-token"
    result = aidc("show", "--token-file", str(missing), who=None)
    assert (result.code, result.out) == (3, "")
    assert f"Cannot read the token file {missing}: No such file or directory." in result.err

    down = f"http://127.0.0.1:{free_port()}"
    result = aidc("set", "--tenant", "lab", "--user", "alice", "--servers", "2", env={"AIDC_HUB_URL": down})
    assert (result.code, result.out) == (3, "")
    assert f"Cannot reach the hub at {down}: connection refused. Is the hub running there?" in result.err
    assert limits() == before


def test_a_token_the_hub_refuses_exits_3(hub: Hub, aidc: Any) -> None:
    result = aidc("show", env={"AIDC_TOKEN": "0123456789abcdef"})
    assert (result.code, result.out) == (3, "")
    assert f"The hub at {hub.url} does not accept the API token: it may have expired, been revoked" in result.err
    assert f"Create a new one at {hub.url}/hub/token" in result.err


def test_set_changes_only_the_given_fields_and_show_reads_them_back(
    hub: Hub, aidc: Any, limits: Any, tokens: dict[str, str], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(tokens["kim"] + "\n")
    token_file.chmod(0o600)
    by_file = ("--token-file", str(token_file))

    result = aidc(*SET_ALICE, "--gpus", "H100=2", "--cpu", "8", *by_file, who=None)
    assert result.code == 0, result
    assert result.out.splitlines() == [
        "KIND  NAME   GPUS    SERVERS  CPU  MEMORY  GPU-HOURS/MONTH",
        "user  alice  H100=2  1        8    -       -",
    ]
    result = aidc(*SET_ALICE, "--memory", "16Gi", "--gpu-hours", "12.5", "--clear", "servers", "--json")
    assert result.code == 0, result
    stored = {
        "tenant": "lab",
        "kind": "user",
        "name": "alice",
        "gpus": {"H100": 2},
        "servers": None,
        "cpu": "8",
        "memory": "16Gi",
        "gpu_hours": "12.5",
    }
    assert json.loads(result.out) == stored
    assert limits()["lab"] == [stored]

    result = aidc("set", "--tenant", "lab", "--group", "students", "--servers", "4")
    assert result.code == 0, result

    # kim administers one tenant: --tenant may be left out
    shown = aidc("show")
    assert shown.code == 0, shown
    assert shown.out.splitlines() == [
        "Tenant lab (University Lab)",
        "  ceiling: H100=4 GPUs, 6 servers, 2 per person, CPU 32, memory 64Gi, GPU-hours/month 1000",
        shown.out.splitlines()[2],
        "KIND   NAME      GPUS    SERVERS  CPU  MEMORY  GPU-HOURS/MONTH",
        "user   alice     H100=2  -        8    16Gi    12.5",
        "group  students  -       4        -    -       -",
    ]
    assert shown.out.splitlines()[2].startswith("  in use:  H100=0 GPUs, 0 servers")
    as_json = aidc("show", "--user", "alice", "--json")
    assert as_json.code == 0
    assert as_json.out.strip() == api(hub, tokens["kim"], "GET", "tenants/lab/limits/users/alice").text.strip()
    # alice sees her own limit
    assert aidc("show", "--user", "alice", "--json", who="alice").out == as_json.out

    result = aidc(*SET_ALICE, "--clear", "gpus", "cpu", "memory", "gpu_hours")
    assert (result.code, result.out) == (0, "")
    assert "only the tenant's ceiling applies now" in result.err
    assert [limit["name"] for limit in limits()["lab"]] == ["students"]

    result = aidc("set", "--tenant", "lab", "--group", "students", "--remove")
    assert (result.code, result.out) == (0, "")
    assert "Removed the limit of group students in tenant lab" in result.err
    assert limits()["lab"] == []
    again = aidc("set", "--tenant", "lab", "--group", "students", "--remove")
    assert again.code == 1
    assert "No limit is set for group students in tenant lab; nothing was removed." in again.err


def test_usage_as_table_csv_and_json(hub: Hub, aidc: Any) -> None:
    """A finished run of alice (2 H100 for 3 hours) written in the hub's ledger, then reported."""
    ended = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    started = ended - timedelta(hours=3)
    holding = Holding("lab", "alice", "", "h100-x2", {"H100": 2}, Decimal(2), Decimal(4 * 2**30))
    store = Store(paths.db_url(str(hub.data_dir)), migrate=False)  # the database the hub uses
    try:
        store.record_run(holding, started, ended)
    finally:
        store.close()
    days = ("--from", started.date().isoformat(), "--to", (ended.date() + timedelta(days=1)).isoformat())

    result = aidc("usage", *days, "--csv")
    assert result.code == 0, result
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert [(r["user"], Decimal(r["gpu_hours"]), Decimal(r["cpu_hours"]), r["runs"]) for r in rows] == [
        ("alice", Decimal(6), Decimal(6), "1")
    ]

    # --hub-url wins over $AIDC_HUB_URL; the address bar's /hub/ is fine
    table = aidc("usage", *days, "--hub-url", f"{hub.url}/hub/", env={"AIDC_HUB_URL": "http://127.0.0.1:9"})
    assert table.code == 0, table
    assert table.out.splitlines()[1:] == ["USER   GPU-HOURS  CPU-HOURS  RUNS", "alice  6          6          1"]
    as_json = aidc("usage", *days, "--by", "tenant", "--json")
    assert as_json.code == 0, as_json
    doc = json.loads(as_json.out)
    assert [(r["subject"], r["gpu_hours"]) for r in doc["rows"]] == [("lab", "6")]

    mine = aidc("usage", *days, "--daily", "--csv", who="alice")  # alice's only tenant
    assert mine.code == 0, mine
    assert sum(Decimal(r["gpu_hours"]) for r in csv.DictReader(io.StringIO(mine.out))) == Decimal(6)
    assert {r["user"] for r in csv.DictReader(io.StringIO(mine.out))} == {"alice"}


def _alice_limit(hub: Hub, tokens: dict[str, str]) -> dict[str, Any]:
    r = api(hub, tokens["admin"], "GET", "tenants/lab/limits/users/alice")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_conditional_writes_refuse_a_stale_etag_and_change_nothing(
    hub: Hub, limits: Any, tokens: dict[str, str]
) -> None:
    r = api(hub, tokens["kim"], "GET", "tenants/lab/limits/users/alice")
    etag = r.headers["ETag"]
    assert r.status_code == 200 and etag.startswith('"') and etag != '"none"'
    # the platform admin changes it meanwhile
    r = api(hub, tokens["admin"], "PUT", "tenants/lab/limits/users/alice", json={"gpus": {"H100": 1}, "servers": 2})
    assert r.status_code == 200 and r.headers["ETag"] != etag
    newer = r.headers["ETag"]
    stale = api(
        hub, tokens["kim"], "PUT", "tenants/lab/limits/users/alice", json={"cpu": "4"}, headers_extra={"If-Match": etag}
    )
    assert stale.status_code == 412, stale.text
    assert stale.json()["message"] == (
        "The limit of user alice in tenant lab was not changed: someone changed it since you read it"
        " (it is now 1 H100, 2 servers). Read it again, then make your change."
    )
    assert _alice_limit(hub, tokens)["servers"] == 2 and _alice_limit(hub, tokens)["cpu"] is None
    # create-only on an existing limit, and malformed preconditions
    exists = api(
        hub, tokens["kim"], "PUT", "tenants/lab/limits/users/alice", json={}, headers_extra={"If-None-Match": "*"}
    )
    assert exists.status_code == 412
    for headers in ({"If-Match": "3f0c"}, {"If-Match": f"{newer}, {etag}"}, {"If-None-Match": newer}):
        bad = api(hub, tokens["kim"], "PUT", "tenants/lab/limits/users/alice", json={}, headers_extra=headers)
        assert bad.status_code == 400, (headers, bad.text)
    assert _alice_limit(hub, tokens)["gpus"] == {"H100": 1}
    # the right tag writes, and answers with the next one
    ok = api(
        hub,
        tokens["kim"],
        "PUT",
        "tenants/lab/limits/users/alice",
        json={"cpu": "4"},
        headers_extra={"If-Match": newer},
    )
    assert ok.status_code == 200 and ok.json()["cpu"] == "4" and ok.headers["ETag"] not in (etag, newer)
    created = api(
        hub,
        tokens["kim"],
        "PUT",
        "tenants/lab/limits/users/bob",
        json={"servers": 1},
        headers_extra={"If-None-Match": "*"},
    )
    assert created.status_code == 200, created.text


class _Interleaved:
    """``QuotasAPI.exchange`` of the CLI with another admin's write between the CLI's read of the
    limit and its write, ``times`` times: the race ``If-Match`` closes, made to happen for sure."""

    def __init__(self, hub: Hub, tokens: dict[str, str], writes: list[dict[str, Any]]):
        from aidc.cli import QuotasAPI

        self.original, self.writes, self.hub, self.tokens = QuotasAPI.exchange, list(writes), hub, tokens
        self.reads = 0

    def __call__(self, api_self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        answer = self.original(api_self, method, url, *args, **kwargs)
        if method == "GET" and url.endswith("/limits/users/alice"):
            self.reads += 1
            if self.writes:
                body = self.writes.pop(0)
                r = api(self.hub, self.tokens["admin"], "PUT", "tenants/lab/limits/users/alice", json=body)
                assert r.status_code == 200, r.text
        return answer

    def method(self) -> Any:
        return lambda api_self, *args, **kwargs: self(api_self, *args, **kwargs)


def _run_cli(hub: Hub, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    from aidc.cli import main

    monkeypatch.setenv("AIDC_HUB_URL", hub.url)
    monkeypatch.setenv("AIDC_TOKEN", tokens["kim"])
    return main(["quota", *argv])


def test_set_merges_into_a_limit_changed_meanwhile_instead_of_overwriting_it(
    hub: Hub, limits: Any, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from aidc.cli import QuotasAPI

    race = _Interleaved(hub, tokens, [{"gpus": {"H100": 1}, "servers": 1, "gpu_hours": "40"}])
    monkeypatch.setattr(QuotasAPI, "exchange", race.method())
    assert _run_cli(hub, tokens, monkeypatch, *SET_ALICE, "--cpu", "8") == 0, capsys.readouterr().err
    assert race.reads == 2  # read, refused (412), read again, written
    stored = _alice_limit(hub, tokens)
    assert (stored["gpu_hours"], stored["cpu"], stored["servers"]) == ("40", "8", 1), stored


def test_set_gives_up_when_the_limit_keeps_changing_and_writes_nothing(
    hub: Hub, limits: Any, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from aidc.cli import QuotasAPI

    writes = [{"gpus": {"H100": 1}, "servers": 1, "gpu_hours": str(n)} for n in (10, 20, 30)]
    monkeypatch.setattr(QuotasAPI, "exchange", _Interleaved(hub, tokens, writes).method())
    assert _run_cli(hub, tokens, monkeypatch, *SET_ALICE, "--cpu", "8") == 1
    err = capsys.readouterr().err
    assert "kept changing while this command ran (3 tries): nothing was changed" in err
    stored = _alice_limit(hub, tokens)
    assert (stored["gpu_hours"], stored["cpu"]) == ("30", None), stored
