"""quotas.culler: which servers are stopped for idleness or a used-up GPU-hour budget, and why."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from quotas.culler import (
    Action,
    Overrun,
    Server,
    budget_overruns,
    cull_decisions,
    idle_timeout,
    over_budget,
    servers_from_hub,
)
from quotas.loader import parse_platform
from quotas.model import Image, PlatformConfig
from quotas.policy import Holding, Limit, Usage
from quotas.store import Run

NOW = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)

PLATFORM: dict[str, Any] = {
    "culling": {"gpu_idle_timeout": "1h", "cpu_idle_timeout": "8h", "interval": "5m"},
    "gpu_types": {"H100": {}, "A100": {}},
    "profiles": [
        {"id": "cpu", "display_name": "CPU", "cpu": "2", "memory": "8Gi", "image": "base"},
        {"id": "h100-x1", "display_name": "1 H100", "gpu": {"type": "H100", "count": 1}, "cpu": "8", "memory": "64Gi",
         "image": "pytorch"},
        {"id": "h100-x4", "display_name": "4 H100", "gpu": {"type": "H100", "count": 4}, "cpu": "32",
         "memory": "256Gi", "image": "pytorch", "idle_timeout": "20m"},
        {"id": "cpu-batch", "display_name": "CPU batch", "cpu": "2", "memory": "8Gi", "image": "base",
         "idle_timeout": 0},
    ],
    "tenants": [
        {"id": "lab", "display_name": "Lab", "kind": "university", "members": {"users": ["alice", "bob"]},
         "admins": ["kim"], "profiles": ["cpu", "h100-x1", "h100-x4", "cpu-batch"],
         "quota": {"gpus": {"H100": 8}, "gpu_hours_per_month": 1000},
         "culling": {"stop_over_budget": True, "over_budget_grace": "15m"}},
        {"id": "corp", "display_name": "Corp", "kind": "company", "members": {"users": ["carol"]},
         "admins": ["erin"], "profiles": ["cpu", "h100-x1", "h100-x4"],
         "quota": {"gpus": {"H100": 8}, "gpu_hours_per_month": 500},
         "culling": {"gpu_idle_timeout": "4h", "cpu_idle_timeout": 0}},
        {"id": "fast", "display_name": "Fast", "kind": "startup", "members": {"users": ["dave"]},
         "profiles": ["h100-x1"], "quota": {"gpus": {"H100": 1}},
         "culling": {"gpu_idle_timeout": 0, "stop_over_budget": True, "over_budget_grace": 0}},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def config(images: Mapping[str, Image]) -> PlatformConfig:
    return parse_platform(copy.deepcopy(PLATFORM), images)


def server(
    user: str = "alice",
    name: str = "",
    tenant: str | None = "lab",
    profile: str | None = "h100-x1",
    idle: timedelta | None = timedelta(0),
    started: timedelta | None = timedelta(days=1),
    pending: str | None = None,
    groups: tuple[str, ...] = (),
) -> Server:
    gpus = {"h100-x1": {"H100": 1}, "h100-x4": {"H100": 4}}.get(profile or "", {}) if tenant else {}
    return Server(
        user=user,
        name=name,
        tenant=tenant,
        profile=profile if tenant else None,
        last_activity=None if idle is None else NOW - idle,
        started=None if started is None else NOW - started,
        pending=pending,
        gpus=gpus,
        groups=groups,
    )


def tenant_over(tenant: str = "lab", used: str = "1000.4", budget: str = "1000") -> Overrun:
    return Overrun(tenant, "tenant", tenant, Decimal(used), Decimal(budget), "November 2026", date(2026, 12, 1), "kim")


def kinds(actions: list[Action]) -> list[tuple[str, str, str]]:
    return [(a.user, a.server, a.kind) for a in actions]


# ---------------------------------------------------------------------------
# idle: a table of servers x settings


H, M = timedelta(hours=1), timedelta(minutes=1)


@pytest.mark.parametrize(
    ("srv", "kind", "words"),
    [
        # platform: GPU 1h, CPU 8h
        (server(profile="h100-x1", idle=2 * H), "idle", "idle for 2h, and GPU servers of tenant lab are stopped after 1h idle (the platform's setting for GPU servers)"),
        (server(profile="h100-x1", idle=59 * M), None, ""),
        (server(profile="h100-x1", idle=H), "idle", "idle for 1h,"),
        (server(profile="cpu", idle=2 * H), None, ""),
        (server(profile="cpu", idle=9 * H), "idle", "CPU servers of tenant lab are stopped after 8h idle"),
        # the profile's own timeout: shorter for the 4-GPU profile, never for CPU batch
        (server(profile="h100-x4", idle=25 * M), "idle", "after 20m idle (the setting of profile h100-x4)"),
        (server(profile="h100-x4", idle=15 * M), None, ""),
        (server(profile="cpu-batch", idle=30 * 24 * H), None, ""),
        # the tenant's own setting wins over the profile's: corp gets 4h for GPUs, never for CPUs
        (server("carol", tenant="corp", profile="h100-x4", idle=3 * H), None, ""),
        (server("carol", tenant="corp", profile="h100-x1", idle=5 * H), "idle", "after 4h idle (tenant corp's setting for GPU servers)"),
        (server("carol", tenant="corp", profile="cpu", idle=30 * 24 * H), None, ""),
        (server("dave", tenant="fast", profile="h100-x1", idle=30 * 24 * H), None, ""),
        # no activity reported yet: idle since it started; nothing known: left alone
        (server(idle=None, started=90 * M), "idle", "idle for 1h 30m"),
        (server(idle=None, started=None), None, ""),
        # restarted 10 minutes ago: not idle since the activity of its previous run
        (server(idle=5 * H, started=10 * M), None, ""),
        # starting or stopping: left alone
        (server(idle=5 * H, pending="spawn"), None, ""),
        (server(idle=5 * H, pending="stop"), None, ""),
        # not in the ledger: the most lenient platform setting (8h), whatever user_options said
        (server(tenant=None, idle=2 * H), None, ""),
        (server(tenant=None, idle=9 * H), "idle", "alice's default server (not in the quotas ledger): idle for 9h"),
    ],
)  # fmt: skip
def test_idle_servers(config: PlatformConfig, srv: Server, kind: str | None, words: str) -> None:
    actions = cull_decisions([srv], config, NOW, {})
    assert [a.kind for a in actions] == ([kind] if kind else [])
    if kind:
        assert words in actions[0].reason
        assert actions[0].stops


def test_idle_reason_names_the_server_what_it_holds_and_what_to_do(config: PlatformConfig) -> None:
    [action] = cull_decisions([server(name="train", profile="h100-x4", idle=2 * H)], config, NOW, {})
    assert action.reason == (
        "Stopped server alice/train (tenant lab, profile h100-x4, 4 H100 GPUs): idle for 2h, and GPU servers of"
        " tenant lab are stopped after 20m idle (the setting of profile h100-x4). Start it again from the hub's"
        " home page when you need it; the files in your home are kept."
    )
    assert (action.user, action.server, action.tenant) == ("alice", "train", "lab")


def test_idle_timeout_says_whose_setting_it_is(config: PlatformConfig) -> None:
    assert idle_timeout(server(profile="cpu"), config) == (8 * H, "the platform's setting for CPU servers")
    assert idle_timeout(server("carol", tenant="corp", profile="cpu"), config) == (
        timedelta(0),
        "tenant corp's setting for CPU servers",
    )
    # a tenant that was removed from the config: treated like a server the ledger does not know
    assert idle_timeout(server(tenant="gone", profile="h100-x1"), config)[0] == 8 * H


def test_a_platform_timeout_of_zero_makes_unknown_servers_never_idle(
    images: Mapping[str, Image],
) -> None:
    data = copy.deepcopy(PLATFORM)
    data["culling"]["cpu_idle_timeout"] = 0
    never = parse_platform(data, images)
    assert cull_decisions([server(tenant=None, idle=300 * H)], never, NOW, {}) == []
    assert kinds(cull_decisions([server(idle=2 * H)], never, NOW, {})) == [("alice", "", "idle")]


# ---------------------------------------------------------------------------
# over budget: warn once, stop after the grace


def test_over_budget_gpu_server_is_warned_first(config: PlatformConfig) -> None:
    [action] = cull_decisions([server(name="train")], config, NOW, {"lab": [tenant_over()]})
    assert action.kind == "over_budget_warn" and not action.stops
    assert action.stop_at == NOW + 15 * M
    assert action.reason == (
        "GPU-hour budget used up: server alice/train (tenant lab, profile h100-x1, 1 H100 GPU) will be stopped at"
        " 14:15 UTC, 15m from now, because tenant lab has used 1,000.4 of its 1,000.0 GPU-hours for November 2026."
        " Save your work now. GPU servers can start again when the budget resets on 2026-12-01 (UTC); ask a"
        " platform admin if the tenant needs more. CPU-only profiles still start."
    )


@pytest.mark.parametrize(
    ("warned_ago", "kind"),
    [(timedelta(minutes=1), None), (timedelta(minutes=14, seconds=59), None), (timedelta(minutes=15), "over_budget_stop"),
     (timedelta(hours=3), "over_budget_stop")],
)  # fmt: skip
def test_warned_server_is_stopped_only_after_the_grace(
    config: PlatformConfig, warned_ago: timedelta, kind: str | None
) -> None:
    actions = cull_decisions([server()], config, NOW, {"lab": [tenant_over()]}, {("alice", ""): NOW - warned_ago})
    assert [a.kind for a in actions] == ([kind] if kind else [])
    if kind:
        assert "the 15m grace period after the warning at" in actions[0].reason
        assert actions[0].reason.startswith("Stopped alice's default server (tenant lab, profile h100-x1, 1 H100 GPU)")


def test_over_budget_leaves_cpu_servers_and_other_tenants_alone(config: PlatformConfig) -> None:
    servers = [
        server("alice", profile="cpu"),
        server("bob", profile="h100-x1"),
        server("carol", tenant="corp", profile="h100-x1"),
    ]
    actions = cull_decisions(servers, config, NOW, {"lab": [tenant_over()]})
    assert kinds(actions) == [("bob", "", "over_budget_warn")]


def test_without_stop_over_budget_nothing_is_stopped_for_budget(config: PlatformConfig) -> None:
    carol = server("carol", tenant="corp", profile="h100-x1")
    warned = {carol.key: NOW - 48 * H}
    assert cull_decisions([carol], config, NOW, {"corp": [tenant_over("corp", "600", "500")]}, warned) == []


def test_a_grace_of_zero_stops_at_once(config: PlatformConfig) -> None:
    dave = server("dave", tenant="fast", profile="h100-x1")
    [action] = cull_decisions([dave], config, NOW, {"fast": [tenant_over("fast")]})
    assert action.kind == "over_budget_stop"
    assert "and there is no grace period" in action.reason


def test_idle_wins_over_budget(config: PlatformConfig) -> None:
    actions = cull_decisions([server(idle=2 * H)], config, NOW, {"lab": [tenant_over()]})
    assert kinds(actions) == [("alice", "", "idle")]


def test_a_users_limit_covers_only_that_users_servers(config: PlatformConfig) -> None:
    limit = Overrun("lab", "user", "alice", Decimal("10.06"), Decimal(10), "November 2026", date(2026, 12, 1), "kim")
    servers = [server("alice", name="a"), server("alice", name="b", profile="h100-x4"), server("bob")]
    actions = cull_decisions(servers, config, NOW, {"lab": [limit]})
    assert kinds(actions) == [("alice", "a", "over_budget_warn"), ("alice", "b", "over_budget_warn")]
    assert "because tenant lab's admins limit alice to 10.0 GPU-hours for November 2026, and alice has used 10.1" in (
        actions[0].reason
    )
    assert "Ask a tenant admin (kim) to raise the limit, or wait until it resets on 2026-12-01 (UTC)." in (
        actions[0].reason
    )


def test_a_groups_limit_covers_the_servers_its_members_started_in_it(config: PlatformConfig) -> None:
    limit = Overrun("lab", "group", "ml", Decimal(50), Decimal(50), "November 2026", date(2026, 12, 1), "kim")
    servers = [server("alice", groups=("ml",)), server("bob", groups=("vision",))]
    actions = cull_decisions(servers, config, NOW, {"lab": [limit]})
    assert kinds(actions) == [("alice", "", "over_budget_warn")]
    assert "limit group ml to 50.0 GPU-hours for November 2026, and its members have used 50.0" in actions[0].reason


def test_over_budget_maps_gpu_servers_to_the_first_budget_that_covers_them() -> None:
    mine = Overrun("lab", "user", "alice", Decimal(11), Decimal(10))
    servers = [server("alice"), server("bob"), server("alice", name="cpu", profile="cpu"), server(tenant=None)]
    assert over_budget(servers, {"lab": [mine, tenant_over()]}) == {
        ("alice", ""): mine,
        ("bob", ""): tenant_over(),
    }


# ---------------------------------------------------------------------------
# budgets used up


def usage(hours: str, **of: str) -> Usage:
    return Usage(
        gpu_hours=Decimal(hours),
        period_name="November 2026",
        period_resets=date(2026, 12, 1),
        gpu_hours_of={tuple(k.split(":")): Decimal(v) for k, v in of.items()},  # type: ignore[misc]
    )


def test_budget_overruns_use_the_same_rule_as_admission(config: PlatformConfig) -> None:
    lab = config.tenants["lab"]
    limits = [
        Limit("lab", "user", "alice", gpu_hours=Decimal(10)),
        Limit("lab", "user", "bob", gpu_hours=Decimal(10)),
        Limit("lab", "group", "ml", gpu_hours=Decimal(40)),
        Limit("lab", "user", "carol", servers=2),  # no GPU-hour limit: never an overrun
    ]
    assert budget_overruns(lab, usage("999.9", **{"user:alice": "9.9", "group:ml": "39"}), limits) == []
    found = budget_overruns(lab, usage("1000", **{"user:alice": "10", "user:bob": "3", "group:ml": "41"}), limits)
    assert [(o.kind, o.subject, o.used, o.budget) for o in found] == [
        ("tenant", "lab", Decimal(1000), Decimal(1000)),
        ("user", "alice", Decimal(10), Decimal(10)),
        ("group", "ml", Decimal(41), Decimal(40)),
    ]
    assert {(o.period_name, o.resets, o.admins) for o in found} == {("November 2026", date(2026, 12, 1), "kim")}


def test_a_tenant_without_a_gpu_hour_ceiling_has_no_tenant_overrun(config: PlatformConfig) -> None:
    assert budget_overruns(config.tenants["fast"], usage("1000000")) == []


# ---------------------------------------------------------------------------
# records from the hub's REST API, joined with the ledger


def run(user: str, server_name: str, tenant: str, profile: str, gpus: dict[str, int]) -> Run:
    holding = Holding(tenant, user, server_name, profile, gpus, Decimal(8), Decimal(2**30), ("ml",))
    return Run(f"run-{user}-{server_name}", holding, NOW - 5 * H)


def test_servers_take_tenant_and_profile_from_the_ledger_never_from_user_options() -> None:
    users = [
        {
            "name": "alice",
            "servers": {
                "": {
                    "last_activity": "2026-11-20T12:30:00.000000Z",
                    "started": "2026-11-20T09:00:00.000000Z",
                    "pending": None,
                    # forged: she claims a CPU profile of another tenant to get the CPU timeout
                    "user_options": {"tenant": "corp", "profile": "cpu"},
                },
                "train": {"last_activity": None, "started": "2026-11-20T13:00:00Z", "pending": "spawn"},
            },
        },
        {"name": "bob", "servers": {"old": {"last_activity": "2026-11-20T10:00:00", "stopped": True}}},
    ]
    runs = [run("alice", "", "lab", "h100-x4", {"H100": 4}), run("carol", "", "corp", "cpu", {})]
    first, second = servers_from_hub(users, runs)
    assert first == Server(
        user="alice",
        name="",
        tenant="lab",
        profile="h100-x4",
        last_activity=datetime(2026, 11, 20, 12, 30, tzinfo=UTC),
        started=datetime(2026, 11, 20, 9, 0, tzinfo=UTC),
        pending=None,
        gpus={"H100": 4},
        groups=("ml",),
    )
    assert (second.name, second.tenant, second.profile, second.pending) == ("train", None, None, "spawn")
    assert second.last_activity is None and second.started == datetime(2026, 11, 20, 13, 0, tzinfo=UTC)


def test_a_forged_cpu_profile_does_not_save_an_idle_gpu_server(config: PlatformConfig) -> None:
    users = [
        {
            "name": "alice",
            "servers": {"": {"last_activity": "2026-11-20T12:30:00Z", "user_options": {"profile": "cpu-batch"}}},
        }
    ]
    servers = servers_from_hub(users, [run("alice", "", "lab", "h100-x1", {"H100": 1})])
    assert kinds(cull_decisions(servers, config, NOW, {})) == [("alice", "", "idle")]
