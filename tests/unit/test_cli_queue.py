"""``aidc quota queue``: its options and its table, without a network.

The command itself runs against a real hub in tests/hub/test_queue_api.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aidc.cli import UNREACHABLE, build_parser, cmd_quota_queue, format_queue, main

NOW = datetime(2026, 11, 20, 14, 10, 30, tzinfo=UTC)
QUEUE = [
    {
        "user": "carol",
        "server": "",
        "profile": "h100-x2",
        "gpu_type": "H100",
        "gpu_count": 2,
        "may_borrow": True,
        "enqueued": "2026-11-20T14:05:00.250000Z",
        "position": 1,
        "length": 2,
        "reason": "waiting for 2 × H100: tenant lab uses 4 of 4; you are 1st of 2",
    },
    {
        "user": "alice",
        "server": "second",
        "profile": "h100-x1",
        "gpu_type": "H100",
        "gpu_count": 1,
        "may_borrow": False,
        "enqueued": "2026-11-20T14:10:29Z",
        "position": None,
        "length": None,
        "reason": None,
    },
]


def test_queue_table_in_line_order_with_place_since_and_why() -> None:
    assert format_queue(QUEUE, NOW).splitlines() == [
        "PLACE  USER   SERVER     GPUS    WAITING SINCE                  WHY",
        "1/2    carol  (default)  H100=2  2026-11-20 14:05 UTC (5m 29s)  waiting for 2 × H100: tenant lab uses 4 of"
        " 4; you are 1st of 2",
        "-      alice  second     H100=1  2026-11-20 14:10 UTC (1s)      just joined: its place is decided within a"
        " second",
    ]


def test_queue_takes_the_tenant_as_an_argument_or_none() -> None:
    args = build_parser().parse_args(["quota", "queue", "lab", "--json"])
    assert (args.func, args.tenant, args.json) == (cmd_quota_queue, "lab", True)
    assert build_parser().parse_args(["quota", "queue"]).tenant is None


def test_queue_without_a_token_exits_3_before_any_request(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AIDC_TOKEN", "JUPYTERHUB_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert main(["quota", "queue", "lab", "--hub-url", "http://127.0.0.1:9"]) == UNREACHABLE
    assert "No API token" in capsys.readouterr().err
