"""Borrowing and preemption's pieces (issue 14): the borrowed part of an admission, the ``borrow``
option, the notices on the hub's pages and the warning on a workspace's terminals."""

from __future__ import annotations

import dataclasses
import os
import pty
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

import pytest

from quotas.model import PlatformConfig, Sharing
from quotas.notices import server_notices
from quotas.policy import Holding, Request, admit
from quotas.store import Run
from spawner.profiles import OptionsRefused, choices_for, render_form, resolve_options
from spawner.workspaces import MARKER, tell_terminals
from tests.unit.builders import H100_X1, H100_X4, hold, usage, with_quota

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def test_admission_says_which_gpus_are_borrowed() -> None:
    tenant = with_quota(gpus={"H100": 4})
    three = usage(hold("alice", H100_X1), hold("alice", H100_X1, "b"), hold("bob", H100_X1))
    own = admit(tenant, Request("carol", "", H100_X1), three)
    assert own.allowed and own.holding is not None and own.holding.borrowed == {}
    refused = admit(tenant, Request("carol", "", H100_X4), three)
    assert not refused.allowed and refused.code == "gpus"
    beyond = admit(tenant, Request("carol", "", H100_X4), three, borrowed={"H100": 3})
    assert beyond.allowed and beyond.holding is not None and beyond.holding.borrowed == {"H100": 3}


def test_the_borrow_option_is_yes_or_no(config: PlatformConfig) -> None:
    tenant = next(iter(config.tenants.values()))
    user = sorted(tenant.member_users)[0]
    base = {"tenant": tenant.id, "profile": tenant.profiles[0]}
    assert resolve_options(config, user, (), base).may_borrow
    assert resolve_options(config, user, (), {**base, "borrow": "yes"}).may_borrow
    assert not resolve_options(config, user, (), {**base, "borrow": "no"}).may_borrow
    for bad in ("maybe", "\x1b[2J" * 100):
        with pytest.raises(OptionsRefused) as refused:
            resolve_options(config, user, (), {**base, "borrow": bad})
        assert refused.value.status == 400 and "must be 'yes'" in refused.value.message
        assert len(refused.value.message) < 400


def test_the_form_offers_the_choice_only_to_tenants_that_may_borrow(config: PlatformConfig) -> None:
    tenant = next(t for t in config.tenants.values() if any(config.profiles[p].gpu_type for p in t.profiles))
    user = sorted(tenant.member_users)[0]
    choices = [c for c in choices_for(config, user, ()) if c.tenant.id == tenant.id]
    assert 'id="aidc-borrow"' not in render_form(config, choices)
    gpu_type = next(config.profiles[p].gpu_type for p in tenant.profiles if config.profiles[p].gpu_type)
    sharing = Sharing(borrow=MappingProxyType({gpu_type: 2}))
    lending = [dataclasses.replace(c, tenant=dataclasses.replace(c.tenant, sharing=sharing)) for c in choices]
    form = render_form(config, lending)
    assert 'id="aidc-borrow"' in form and 'id="borrow-yes" value="yes" checked' in form
    assert 'id="borrow-no" value="no" checked' in render_form(config, lending, may_borrow=False)


def run(server: str, started: datetime, **kw: object) -> Run:
    holding: Holding = dataclasses.replace(hold("alice", H100_X1, server), borrowed=kw.pop("borrowed", {}))
    return Run(uuid.uuid4().hex, holding, started, **kw)  # type: ignore[arg-type]


def test_notices_warn_before_a_preemption_and_say_why_servers_stopped() -> None:
    runs = [
        run("a", NOW, end_reason="preempted", stop_at=NOW + timedelta(minutes=5), stop_note="tenant x needs them"),
        run("b", NOW, borrowed={"H100": 1}),
        run("c", NOW - timedelta(hours=3), ended=NOW - timedelta(hours=1), end_reason="culled-idle"),
        run("d", NOW - timedelta(hours=3), ended=NOW - timedelta(hours=2), end_reason="stopped"),  # by its person
        run("e", NOW - timedelta(days=3), ended=NOW - timedelta(days=2), end_reason="preempted"),  # long ago
        run("", NOW - timedelta(hours=2), ended=NOW - timedelta(minutes=1), end_reason="preempted", stop_note="why"),
    ]
    texts = [(n.level, n.text) for n in server_notices(runs, NOW)]
    assert texts == [
        (
            "warning",
            "Your server 'a' will be stopped at 09:05:00 UTC (in 5m): tenant x needs them. Save your work now;"
            " you can start it again when GPUs are free.",
        ),
        (
            "info",
            "Your server 'b' runs on GPUs borrowed from another tenant (1 × H100): when their owner needs them"
            " back, it is stopped after a warning. Save your work often.",
        ),
        ("info", "Your default server was stopped at 2026-11-02 08:59 UTC: why."),
        ("info", "Your server 'c' was stopped at 2026-11-02 08:00 UTC: it was idle longer than its profile allows."),
    ]


def test_the_warning_reaches_the_workspaces_terminals_without_control_characters() -> None:
    record = uuid.uuid4().hex
    master, slave = pty.openpty()
    env = {**os.environ, MARKER: record}
    child = subprocess.Popen(["sleep", "30"], stdin=slave, stdout=slave, stderr=slave, env=env)
    other_master, other_slave = pty.openpty()  # a terminal of another workspace
    other = subprocess.Popen(["sleep", "30"], stdin=other_slave, stdout=other_slave, stderr=other_slave)
    try:
        deadline = time.monotonic() + 10
        while tell_terminals(record, "x") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # until the child has its environment
        os.read(master, 4096)
        assert tell_terminals(record, "stopped at 10:00: server \x1b[2Jevil\x07 needs it", [child.pid]) == 1
        os.set_blocking(master, False)
        seen = os.read(master, 4096)
        assert b"*** stopped at 10:00: server [2Jevil needs it ***" in seen
        assert b"\x1b" not in seen
        os.set_blocking(other_master, False)
        with pytest.raises(BlockingIOError):
            os.read(other_master, 4096)
    finally:
        for p in (child, other):
            p.kill()
            p.wait()
        for fd in (master, slave, other_master, other_slave):
            os.close(fd)
