"""``aidc quota``: option checks, merging a limit, formatting and exit codes, without a network.

The commands themselves run against a real hub in tests/hub/test_quota_cli.py.
"""

from __future__ import annotations

import copy
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from aidc.cli import (
    BAD_INPUT,
    REFUSED,
    UNREACHABLE,
    QuotaError,
    QuotasAPI,
    api_error,
    build_parser,
    format_ceiling,
    format_limits,
    format_usage,
    hub_url,
    is_empty_limit,
    limit_changes,
    main,
    merge_limit,
    pick_tenant,
    read_token,
    usage_query,
)

HUB = "http://hub.example:8000"
STORED = {
    "tenant": "lab",
    "kind": "user",
    "name": "alice",
    "gpus": {"H100": 2, "A100": 1},
    "servers": 2,
    "cpu": "16",
    "memory": "64Gi",
    "gpu_hours": "100",
}


@pytest.fixture(autouse=True)
def no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """No token and a hub address nothing listens on: a command that got past its option checks
    would exit 3 ("no token"), so exit 2 proves the options were refused before any request."""
    for name in ("AIDC_TOKEN", "JUPYTERHUB_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIDC_HUB_URL", "http://127.0.0.1:9")


def set_args(*argv: str) -> Any:
    return build_parser().parse_args(["quota", "set", "--tenant", "lab", "--user", "alice", *argv])


# -- aidc quota set: what to change -------------------------------------------------------------


def test_set_options_become_gpus_fields_and_cleared_fields() -> None:
    args = set_args(
        "--gpus", "H100=2", "A100=0", "--servers", "3", "--cpu", "500m", "--memory", "64Gi", "--clear", "gpu-hours"
    )
    assert limit_changes(args) == (
        {"H100": 2, "A100": 0},
        {"servers": 3, "cpu": "500m", "memory": "64Gi"},
        ["gpu_hours"],
    )
    assert limit_changes(set_args("--gpu-hours", "12.5", "--clear", "gpus.H100", "cpu")) == (
        {},
        {"gpu_hours": "12.5"},
        ["gpus.H100", "cpu"],
    )
    assert limit_changes(set_args("--gpus", "H100=1", "--gpus", "A100=2")) == ({"H100": 1, "A100": 2}, {}, [])
    assert limit_changes(set_args("--remove")) == ({}, {}, [])


@pytest.mark.parametrize(
    ("argv", "problems"),
    [
        (["--gpus", "H100=-1"], ["--gpus 'H100=-1': the count of H100 GPUs must be a whole number, 0 or more"]),
        (["--gpus", "H100=x"], ["--gpus 'H100=x': the count of H100 GPUs must be a whole number, 0 or more"]),
        (["--gpus", "H100"], ["--gpus 'H100' is not TYPE=COUNT, such as H100=2"]),
        (["--gpus", "=2"], ["--gpus '=2' is not TYPE=COUNT, such as H100=2"]),
        (["--gpus", "H100=1", "H100=2"], ["--gpus gives H100 twice (1 and 2); give it once"]),
        (["--servers", "-1"], ["--servers '-1' is not a whole number, 0 or more"]),
        (["--servers", "two"], ["--servers 'two' is not a whole number, 0 or more"]),
        (["--cpu", "8Gb"], ["--cpu '8Gb' is not an amount of CPU: write cores, such as 8, 0.5 or 500m"]),
        (["--cpu", "-2"], ["--cpu '-2' is not an amount of CPU: write cores, such as 8, 0.5 or 500m"]),
        (["--memory", "8Gb"], ["--memory '8Gb' has unit 'Gb', which Kubernetes does not know; did you mean 'Gi'"]),
        (["--memory=-8Gi"], ["--memory '-8Gi' is negative; write an amount such as 64Gi"]),
        (["--gpu-hours", "1e3"], ["--gpu-hours '1e3' is not a number of GPU-hours, 0 or more, such as 100 or 12.5"]),
        (["--clear", "gpu"], ["--clear 'gpu' is not a field of a limit; use gpus, gpus.TYPE"]),
        (["--servers", "2", "--clear", "servers"], ["servers is both set and cleared (--clear servers); choose one"]),
        (["--gpus", "H100=1", "--clear", "gpus"], ["gpus is both set and cleared (--clear gpus); choose one"]),
        (["--gpus", "H100=1", "--clear", "gpus.H100"], ["gpus.H100 is both set and cleared (--clear gpus.H100)"]),
        (["--remove", "--servers", "1"], ["--remove deletes the whole limit; it cannot be combined with --gpus"]),
        ([], ["nothing to change: give --gpus TYPE=N, --servers N"]),
        (
            ["--gpus", "H100=x", "--cpu", "8Gb", "--memory", "8Gb", "--servers", "-1"],
            ["--gpus 'H100=x'", "--servers '-1'", "--cpu '8Gb'", "--memory '8Gb'"],
        ),
    ],
)
def test_bad_set_options_exit_2_with_every_problem_before_any_request(
    capsys: pytest.CaptureFixture[str], argv: list[str], problems: list[str]
) -> None:
    with pytest.raises(QuotaError) as info:
        limit_changes(set_args(*argv))
    assert info.value.code == BAD_INPUT
    assert len(info.value.problems) == len(problems)
    for got, expected in zip(info.value.problems, problems, strict=True):
        assert got.startswith(expected)

    assert main(["quota", "set", "--tenant", "lab", "--user", "alice", *argv]) == BAD_INPUT
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("aidc quota: Nothing was changed: the options of `aidc quota set` are not valid.\n")
    for expected in problems:
        assert f"\n  - {expected}" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["quota", "set", "--tenant", "lab", "--user", "alice", "--gpu", "H100=1"], "unrecognized arguments: --gpu"),
        (["quota", "set", "--user", "alice", "--servers", "1"], "the following arguments are required: --tenant"),
        (["quota", "set", "--tenant", "lab", "--servers", "1"], "one of the arguments --user --group is required"),
        (["quota", "set", "--tenant", "lab", "--user", "a", "--group", "g"], "not allowed with argument --user"),
        (["quota", "show", "--user", "al ice"], "'al ice' is not a valid user or group name"),
        (["quota", "usage", "--by", "person"], "argument --by: invalid choice: 'person'"),
        (["quota", "usage", "--csv", "--json"], "argument --json: not allowed with argument --csv"),
        (["quota", "show", "--token", "secret"], "unrecognized arguments: --token secret"),
        (["quota"], "the following arguments are required: action"),
    ],
)
def test_wrong_usage_exits_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == BAD_INPUT
    assert message in capsys.readouterr().err


# -- merging a limit ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "gpus", "values", "clear", "expected"),
    [
        (
            None,
            {"H100": 1},
            {},
            [],
            {"gpus": {"H100": 1}, "servers": None, "cpu": None, "memory": None, "gpu_hours": None},
        ),
        (
            STORED,
            {},
            {"servers": 1},
            [],
            {"gpus": {"H100": 2, "A100": 1}, "servers": 1, "cpu": "16", "memory": "64Gi", "gpu_hours": "100"},
        ),
        (
            STORED,
            {"H100": 0},
            {"memory": "32Gi"},
            ["gpus.A100", "cpu"],
            {"gpus": {"H100": 0}, "servers": 2, "cpu": None, "memory": "32Gi", "gpu_hours": "100"},
        ),
        (
            STORED,
            {},
            {},
            ["gpus", "servers", "cpu", "memory", "gpu_hours"],
            {"gpus": {}, "servers": None, "cpu": None, "memory": None, "gpu_hours": None},
        ),
        (
            STORED,
            {},
            {},
            ["gpus.V100"],
            {"gpus": {"H100": 2, "A100": 1}, "servers": 2, "cpu": "16", "memory": "64Gi", "gpu_hours": "100"},
        ),
    ],
)
def test_merge_keeps_the_fields_not_named(
    current: dict[str, Any] | None,
    gpus: dict[str, int],
    values: dict[str, Any],
    clear: list[str],
    expected: dict[str, Any],
) -> None:
    before = copy.deepcopy(current)
    merged = merge_limit(current, gpus, values, clear)
    assert merged == expected
    assert current == before  # the API's answer is not modified
    assert "tenant" not in merged and "name" not in merged  # the URL says whose limit it is


def test_empty_limits() -> None:
    assert is_empty_limit({"gpus": {}, "servers": None, "cpu": None, "memory": None, "gpu_hours": None})
    assert not is_empty_limit({"gpus": {"H100": 0}, "servers": None})
    assert not is_empty_limit({"gpus": {}, "servers": 0})


# -- aidc quota usage ---------------------------------------------------------------------------


def usage_args(*argv: str) -> Any:
    return build_parser().parse_args(["quota", "usage", *argv])


def test_usage_query() -> None:
    assert usage_query(usage_args()) == {"by": "user"}
    assert usage_query(usage_args("--from", "2026-01-01", "--to", "2026-02-01", "--daily", "--user", "alice")) == {
        "by": "user",
        "from": "2026-01-01",
        "to": "2026-02-01",
        "user": "alice",
        "daily": "1",
    }
    assert usage_query(usage_args("--by", "group")) == {"by": "group"}


def test_bad_usage_options_exit_2_with_every_problem(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--from", "2026-13-01", "--to", "26-1-1", "--by", "group", "--user", "alice"]
    with pytest.raises(QuotaError) as info:
        usage_query(usage_args(*argv))
    assert info.value.code == BAD_INPUT
    assert info.value.problems == [
        "--from '2026-13-01' is not a date; write YYYY-MM-DD, such as 2026-01-31",
        "--to '26-1-1' is not a date; write YYYY-MM-DD, such as 2026-01-31",
        "--user picks rows per user; it cannot be combined with --by group",
    ]
    assert main(["quota", "usage", *argv]) == BAD_INPUT
    assert capsys.readouterr().err.startswith("aidc quota: The options of `aidc quota usage` are not valid.\n  - ")


# -- where the hub is, and the token ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        (None, {}, "http://127.0.0.1:8000"),
        (None, {"AIDC_HUB_URL": "https://hub.example.org/"}, "https://hub.example.org"),
        ("http://10.0.0.1:8000/hub/", {"AIDC_HUB_URL": "https://other"}, "http://10.0.0.1:8000"),
        ("https://example.org/jupyter/hub", {}, "https://example.org/jupyter"),
    ],
)
def test_hub_url(value: str | None, env: dict[str, str], expected: str) -> None:
    assert hub_url(value, env) == expected


def test_a_hub_url_that_is_not_http_exits_2() -> None:
    with pytest.raises(QuotaError) as info:
        hub_url("hub.example:8000", {})
    assert info.value.code == BAD_INPUT
    assert "'hub.example:8000' (from --hub-url) is not an http(s) URL" in info.value.message


def test_token_from_file_then_variables(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  abc123  \n")
    both = {"AIDC_TOKEN": "from-aidc", "JUPYTERHUB_API_TOKEN": "from-jupyterhub"}
    assert read_token(str(token_file), both, HUB) == "abc123"
    assert read_token(None, both, HUB) == "from-aidc"
    assert read_token(None, {"AIDC_TOKEN": " ", "JUPYTERHUB_API_TOKEN": "from-jupyterhub"}, HUB) == "from-jupyterhub"


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        (None, {}, "No API token: neither --token-file nor $AIDC_TOKEN nor $JUPYTERHUB_API_TOKEN is set."),
        ("", {"AIDC_TOKEN": "ignored"}, "No API token: the token file {file} is empty."),
        ("missing", {}, "Cannot read the token file {file}: No such file or directory."),
        ("two words\n", {}, "The API token in the token file {file} has spaces or non-ASCII characters"),
        (None, {"AIDC_TOKEN": "tökén"}, "The API token in $AIDC_TOKEN has spaces or non-ASCII characters"),
    ],
)
def test_no_usable_token_exits_3_and_says_how_to_get_one(
    tmp_path: Path, content: str | None, env: dict[str, str], message: str
) -> None:
    token_file = tmp_path / "token"
    if content not in (None, "missing"):
        token_file.write_text(content)
    with pytest.raises(QuotaError) as info:
        read_token(None if content is None else str(token_file), env, HUB)
    assert info.value.code == UNREACHABLE
    assert info.value.message.startswith(message.format(file=token_file))
    assert f"Create a token at {HUB}/hub/token" in info.value.message


def test_no_token_exits_3_before_any_request(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quota", "show", "--tenant", "lab"]) == UNREACHABLE
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("aidc quota: No API token: neither --token-file nor $AIDC_TOKEN")
    assert "http://127.0.0.1:9/hub/token" in err


# -- answers of the API -------------------------------------------------------------------------


def body(message: str, problems: list[str] | None = None, status: int = 0) -> bytes:
    return json.dumps({"status": status, "message": message, "problems": problems or []}).encode()


@pytest.mark.parametrize(
    ("status", "raw", "code", "message", "problems"),
    [
        (422, body("The limit was not changed: 2 problems.", ["a", "b"]), BAD_INPUT, "The limit was not", ["a", "b"]),
        (400, body("The body is not valid JSON."), BAD_INPUT, "The body is not valid JSON.", []),
        (400, b"<html>", BAD_INPUT, "The quotas API refused the request as invalid (400).", []),
        (403, body("You (kim) are not a member or an admin of tenant 'startup'"), REFUSED, "You (kim) are not", []),
        (404, body("No limit is set for user bob in tenant lab"), REFUSED, "No limit is set for user bob", []),
        (404, b"<html>Not found</html>", REFUSED, f"The hub at {HUB} has no {HUB}/x (404); is the quotas", []),
        (401, b"", UNREACHABLE, f"The hub at {HUB} does not accept the API token: it may have expired", []),
        (302, b"", UNREACHABLE, f"The hub at {HUB} does not accept the API token: it may have expired", []),
        (503, b"<html>", UNREACHABLE, f"The hub at {HUB} answered, but the quotas service behind it did not", []),
        (500, body("The quotas service failed; the error is in its log."), REFUSED, "The quotas service failed", []),
        (500, b"", REFUSED, f"The quotas API failed (500) for {HUB}/x.", []),
    ],
)
def test_api_answers_map_to_exit_codes(status: int, raw: bytes, code: int, message: str, problems: list[str]) -> None:
    error = api_error(status, raw, f"{HUB}/x", HUB)
    assert (error.code, error.problems) == (code, problems)
    assert error.message.startswith(message)


def test_error_lines_name_every_problem() -> None:
    error = QuotaError(BAD_INPUT, "The limit was not changed: 2 problems.", ["gpus.V100: no V100", "servers -1"])
    assert error.lines() == [
        "aidc quota: The limit was not changed: 2 problems.",
        "  - gpus.V100: no V100",
        "  - servers -1",
    ]
    said = QuotaError(
        BAD_INPUT,
        "This usage report cannot be made: by must be one of user, group, tenant.",
        ["by must be one of user, group, tenant"],
    )
    assert said.lines() == ["aidc quota: This usage report cannot be made: by must be one of user, group, tenant."]


def test_unreachable_says_why() -> None:
    api = QuotasAPI(HUB, "t", timeout=5)
    assert api._unreachable(ConnectionRefusedError(111, "Connection refused")).message == (
        f"Cannot reach the hub at {HUB}: connection refused. Is the hub running there?"
        " Pass its address with --hub-url URL or $AIDC_HUB_URL."
    )
    assert "it did not answer within 5 s" in api._unreachable(TimeoutError()).message
    assert "unknown host name" in api._unreachable(socket.gaierror(-2, "Name or service not known")).message
    assert api._unreachable(OSError(113, "No route to host")).code == UNREACHABLE


def test_urls_quote_names() -> None:
    api = QuotasAPI(HUB, "t")
    assert api.url("tenants", "lab", "limits", "users", "a/b c") == (
        f"{HUB}/services/quotas/api/tenants/lab/limits/users/a%2Fb%20c"
    )
    assert api.url("tenants", "lab", "usage", query={"by": "user", "from": "2026-01-01"}) == (
        f"{HUB}/services/quotas/api/tenants/lab/usage?by=user&from=2026-01-01"
    )


@pytest.mark.parametrize(
    ("visible", "tenant", "code", "message"),
    [
        (["lab"], "lab", None, ""),
        (["lab", "startup"], None, BAD_INPUT, "You can see 2 tenants (lab, startup); say which with --tenant."),
        ([], None, REFUSED, "You are in no tenant"),
    ],
)
def test_pick_tenant(visible: list[str], tenant: str | None, code: int | None, message: str) -> None:
    assert pick_tenant("given", visible) == "given"
    if code is None:
        assert pick_tenant(None, visible) == tenant
        return
    with pytest.raises(QuotaError) as info:
        pick_tenant(None, visible)
    assert info.value.code == code
    assert info.value.message.startswith(message)


# -- tables -------------------------------------------------------------------------------------


def test_limits_table() -> None:
    group = {"tenant": "lab", "kind": "group", "name": "students", "gpus": {}, "servers": 4}
    assert format_limits([STORED, group]).splitlines() == [
        "KIND   NAME      GPUS           SERVERS  CPU  MEMORY  GPU-HOURS/MONTH",
        "user   alice     A100=1 H100=2  2        16   64Gi    100",
        "group  students  -              4        -    -       -",
    ]


def test_usage_table_with_total_per_user_only() -> None:
    rows = [
        {"subject": "alice", "day": None, "gpu_hours": "10.5", "cpu_hours": "21", "runs": 2},
        {"subject": "bob", "day": None, "gpu_hours": "0.1234", "cpu_hours": "1", "runs": 1},
    ]
    total = {"gpu_hours": "10.6234", "cpu_hours": "22", "runs": 3}
    assert format_usage(rows, "user", False, total).splitlines() == [
        "USER   GPU-HOURS  CPU-HOURS  RUNS",
        "alice  10.5       21         2",
        "bob    0.12       1          1",
        "total  10.62      22         3",
    ]
    assert format_usage(rows, "group", False, total).splitlines()[-1] == "bob    0.12       1          1"
    daily = [{**rows[0], "day": "2026-01-02"}]
    assert format_usage(daily, "user", True, total).splitlines() == [
        "DAY         USER   GPU-HOURS  CPU-HOURS  RUNS",
        "2026-01-02  alice  10.5       21         2",
    ]


def test_ceiling_lines() -> None:
    tenant = {
        "id": "lab",
        "display_name": "University Lab",
        "ceiling": {
            "gpus": {"H100": 4},
            "servers": 6,
            "servers_per_user": 2,
            "cpu": "32",
            "memory": "64Gi",
            "storage": None,
            "gpu_hours_per_month": "1000",
        },
        "in_use": {
            "gpus": {"H100": 1},
            "servers": 1,
            "cpu": "2",
            "memory": "4Gi",
            "gpu_hours": "0.5",
            "period": "2026-01",
        },
    }
    assert format_ceiling(tenant).splitlines() == [
        "Tenant lab (University Lab)",
        "  ceiling: H100=4 GPUs, 6 servers, 2 per person, CPU 32, memory 64Gi, GPU-hours/month 1000",
        "  in use:  H100=1 GPUs, 1 servers, CPU 2, memory 4Gi, 0.5 GPU-hours in 2026-01",
    ]
