"""The quotas store on SQLite and on a real PostgreSQL server: reservations, ledger, limits, reports."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from quotas.limits import parse_limit
from quotas.model import QueuePolicy
from quotas.policy import Request
from quotas.schema import metadata, runs, usage_rollups
from quotas.store import QueueFull, Store
from tests.unit.builders import A100_X1, CPU_SMALL, H100_X1, H100_X4, SNU, hold, with_quota

NOV_2 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.close()


def ask(user: str, profile=H100_X1, server: str = "", groups: tuple[str, ...] = ()) -> Request:  # type: ignore[no-untyped-def]
    return Request(user=user, server=server, profile=profile, groups=groups)


def test_migrations_create_exactly_the_schema(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_upgrade_twice_is_harmless(db_url: str) -> None:
    Store(db_url).close()
    again = Store(db_url)
    assert again.open_runs() == []
    again.close()


def test_reserve_holds_until_release(store: Store) -> None:
    decision, run = store.reserve(SNU, ask("alice", H100_X4), NOV_2)
    assert decision.allowed and run
    assert [h.user for h in store.holdings("snu-ai")] == ["alice"]
    assert store.held_by(("alice", "")) == decision.holding

    assert store.reserve(SNU, ask("bob", H100_X4, "b"), NOV_2)[0].allowed  # 4 + 4 of 8 fit
    refused, none = store.reserve(SNU, ask("carol", H100_X1), NOV_2)  # the ninth does not
    assert not refused.allowed and none is None
    assert "uses 8 of 8 H100 GPUs (alice: 4, bob: 4)" in refused.reason

    released = store.release(("alice", ""), NOV_2 + timedelta(hours=1))
    assert released is not None and released.user == "alice"
    assert store.release(("alice", ""), NOV_2 + timedelta(hours=2)) is None  # twice: harmless
    assert store.reserve(SNU, ask("carol", H100_X4), NOV_2)[0].allowed


def test_same_server_cannot_be_reserved_twice_even_in_another_tenant(store: Store) -> None:
    other = dataclasses.replace(SNU, id="nova")
    assert store.reserve(SNU, ask("alice"), NOV_2)[0].allowed
    decision, run = store.reserve(other, ask("alice"), NOV_2)
    assert not decision.allowed and run is None
    assert decision.code == "running" and "charged to tenant snu-ai" in decision.reason
    assert store.reserve(other, ask("alice", server="second"), NOV_2)[0].allowed


def test_release_counts_gpu_hours_once_across_days_and_months(store: Store) -> None:
    start = datetime(2026, 10, 31, 22, 0, tzinfo=UTC)
    decision, run = store.reserve(SNU, ask("alice", H100_X4, groups=("snu-students",)), start)
    assert run is not None
    end = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)  # 2 h in October, 3 h in November, 4 GPUs
    assert store.release_run(run, end)
    assert not store.release_run(run, end + timedelta(hours=5))  # a second release counts nothing
    oct_report = store.usage_report("snu-ai", date(2026, 10, 1), date(2026, 11, 1), end)
    nov_report = store.usage_report("snu-ai", date(2026, 11, 1), date(2026, 12, 1), end)
    assert [(r.subject, r.gpu_hours, r.cpu_hours) for r in oct_report] == [("alice", Decimal(8), Decimal(64))]
    assert [(r.subject, r.gpu_hours) for r in nov_report] == [("alice", Decimal(12))]
    by_group = store.usage_report("snu-ai", date(2026, 10, 1), date(2026, 12, 1), end, by="group")
    assert [(r.subject, r.gpu_hours, r.runs) for r in by_group] == [("snu-students", Decimal(20), 1)]
    usage = store.usage(SNU, datetime(2026, 11, 5, tzinfo=UTC), "alice", ("snu-students",))
    assert usage.gpu_hours == Decimal(12)  # November only
    assert usage.period_name == "November 2026" and usage.period_resets == date(2026, 12, 1)


def test_daily_report_includes_open_runs_up_to_now(store: Store) -> None:
    store.record_run(hold("bob", A100_X1), NOV_2, NOV_2 + timedelta(hours=2))
    store.reserve(SNU, ask("alice", H100_X1), datetime(2026, 11, 3, 23, 0, tzinfo=UTC))
    now = datetime(2026, 11, 4, 1, 30, tzinfo=UTC)
    daily = store.usage_report("snu-ai", date(2026, 11, 1), date(2026, 11, 8), now, daily=True)
    assert [(r.day, r.subject, r.gpu_hours) for r in daily] == [
        (date(2026, 11, 2), "bob", Decimal(2)),
        (date(2026, 11, 3), "alice", Decimal(1)),
        (date(2026, 11, 4), "alice", Decimal("1.5")),
    ]


def test_year_report_reads_months_and_edge_days(store: Store) -> None:
    for month in range(1, 13):
        started = datetime(2026, month, 10, tzinfo=UTC)
        store.record_run(hold("alice", H100_X1), started, started + timedelta(hours=10))
    start_mid = datetime(2026, 3, 20, tzinfo=UTC)  # a range that begins and ends mid-month
    report = store.usage_report("snu-ai", start_mid.date(), date(2026, 10, 15), datetime(2027, 1, 1, tzinfo=UTC))
    assert [(r.subject, r.gpu_hours, r.runs) for r in report] == [("alice", Decimal(70), 7)]  # April..October 10


def test_budget_refuses_gpu_profiles_only(db_url: str) -> None:
    store = Store(db_url)
    tenant = with_quota(gpu_hours_per_month=Decimal(10))
    store.record_run(hold("bob", H100_X4), NOV_2, NOV_2 + timedelta(hours=3))  # 12 GPU-hours
    decision, _ = store.reserve(tenant, ask("alice"), NOV_2 + timedelta(hours=4))
    assert decision.code == "budget" and "12.0 of its 10.0 GPU-hours for November 2026" in decision.reason
    assert "2026-12-01" in decision.reason
    assert store.reserve(tenant, ask("alice", CPU_SMALL), NOV_2 + timedelta(hours=4))[0].allowed
    assert store.reserve(tenant, ask("alice", H100_X1, "dec"), datetime(2026, 12, 1, 0, 1, tzinfo=UTC))[0].allowed
    store.close()


def test_user_and_group_limits_are_enforced_with_reasons(store: Store) -> None:
    store.set_limit(parse_limit(SNU, "user", "alice", {"gpus": {"H100": 1}}), "kim", NOV_2)
    store.set_limit(parse_limit(SNU, "group", "snu-students", {"servers": 1}), "kim", NOV_2)
    assert store.reserve(SNU, ask("alice"), NOV_2)[0].allowed
    decision, _ = store.reserve(SNU, ask("alice", server="two"), NOV_2)
    assert decision.code == "user_limit"
    assert "limit you (alice) to 1 H100 GPU; you use 1 (alice: 1)" in decision.reason
    assert "ask a tenant admin (kim)" in decision.reason

    students = ("snu-students",)
    assert store.reserve(SNU, ask("bob", CPU_SMALL, groups=students), NOV_2)[0].allowed
    decision, _ = store.reserve(SNU, ask("carol", CPU_SMALL, groups=students), NOV_2)
    assert decision.code == "group_limit" and "limit group snu-students to 1 server; its members use 1 (bob: 1)" in (
        decision.reason
    )
    assert store.reserve(SNU, ask("carol", CPU_SMALL), NOV_2)[0].allowed  # carol outside the group: no limit


def test_group_gpu_hour_limit_uses_the_groups_runs(store: Store) -> None:
    store.set_limit(parse_limit(SNU, "group", "interns", {"gpu_hours": 5}), "kim", NOV_2)
    run = store.reserve(SNU, ask("bob", H100_X4, groups=("interns",)), NOV_2)[1]
    assert run is not None
    store.release_run(run, NOV_2 + timedelta(hours=2))  # 8 GPU-hours charged to group interns
    decision, _ = store.reserve(SNU, ask("u1", H100_X1, groups=("interns",)), NOV_2 + timedelta(hours=3))
    assert decision.code == "group_limit" and "5.0 GPU-hours for November 2026; its members use 8.0" in decision.reason
    assert store.reserve(SNU, ask("u1", H100_X1), NOV_2 + timedelta(hours=3))[0].allowed  # not as an intern


def test_limits_replace_and_delete(store: Store) -> None:
    store.set_limit(parse_limit(SNU, "user", "alice", {"gpus": {"H100": 2}, "cpu": "16"}), "kim", NOV_2)
    store.set_limit(parse_limit(SNU, "user", "alice", {"memory": "32Gi"}), "kim", NOV_2)
    limit = store.limit("snu-ai", "user", "alice")
    assert limit is not None and limit.gpus == {} and limit.cpu is None and limit.memory == Decimal(32 * 2**30)
    assert store.delete_limit("snu-ai", "user", "alice")
    assert not store.delete_limit("snu-ai", "user", "alice")
    assert store.limits("snu-ai") == []


def test_limits_of_one_tenant_do_not_apply_in_another(store: Store) -> None:
    other = dataclasses.replace(SNU, id="nova")
    store.set_limit(parse_limit(other, "user", "alice", {"gpus": {"H100": 0}}), "erin", NOV_2)
    assert store.reserve(SNU, ask("alice"), NOV_2)[0].allowed
    assert store.reserve(other, ask("alice", server="n"), NOV_2)[0].code == "user_limit"
    assert store.limits("snu-ai") == []


def test_restore_keeps_an_open_run_and_replaces_a_closed_one(store: Store) -> None:
    decision, run = store.reserve(SNU, ask("alice"), NOV_2)
    assert decision.holding is not None and run is not None
    assert store.restore(decision.holding, run, NOV_2 + timedelta(hours=1)) == run
    store.release_run(run, NOV_2 + timedelta(hours=1))
    again = store.restore(decision.holding, run, NOV_2 + timedelta(hours=2))
    assert again != run
    assert [r.id for r in store.open_runs("snu-ai")] == [again]


def test_first_admission_closes_runs_no_running_server_restored(db_url: str) -> None:
    before = Store(db_url)
    kept = before.reserve(SNU, ask("alice"), NOV_2)
    lost = before.reserve(SNU, ask("bob"), NOV_2)  # its start was cut short by a crash
    before.close()
    assert kept[0].holding is not None and kept[1] and lost[1]
    after = Store(db_url)
    after.reconcile_at_first_admission()
    after.restore(kept[0].holding, kept[1], NOV_2 + timedelta(minutes=5))
    assert after.reserve(SNU, ask("carol"), NOV_2 + timedelta(minutes=6))[0].allowed
    assert sorted(r.holding.user for r in after.open_runs()) == ["alice", "carol"]
    bob = [r for r in after.runs_between("snu-ai", NOV_2, NOV_2 + timedelta(days=1)) if r.holding.user == "bob"]
    assert [(r.end_reason, r.ended) for r in bob] == [("orphaned", NOV_2 + timedelta(minutes=6))]
    with after.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(runs)).scalar() == 3
        assert (
            conn.execute(
                select(func.sum(usage_rollups.c.runs)).where(
                    usage_rollups.c.kind == "tenant", usage_rollups.c.period == "day"
                )
            ).scalar()
            == 1
        )
    after.close()


def test_refusals_are_counted_by_tenant_and_reason(store: Store) -> None:
    store.reserve(SNU, ask("alice", H100_X4), NOV_2)
    store.reserve(SNU, ask("alice", H100_X4), NOV_2)  # running
    store.reserve(SNU, ask("bob", H100_X4, "x"), NOV_2)
    store.reserve(SNU, ask("carol", H100_X1), NOV_2)  # gpus
    store.reserve(SNU, ask("u1", H100_X1), NOV_2)  # gpus
    assert store.refusal_counts() == {("snu-ai", "running"): 1, ("snu-ai", "gpus"): 2}


def test_a_marked_end_reason_survives_the_close_and_can_be_taken_back(store: Store) -> None:
    store.reserve(SNU, ask("alice"), NOV_2)
    store.reserve(SNU, ask("bob"), NOV_2)
    assert store.mark_end_reason(("alice", ""), "culled-idle")
    assert store.mark_end_reason(("bob", ""), "culled-idle")
    assert store.mark_end_reason(("bob", ""), None)  # the hub refused to stop it
    assert not store.mark_end_reason(("carol", ""), "culled-idle")  # no open run: nothing marked
    store.release(("alice", ""), NOV_2 + timedelta(hours=1))
    store.release(("bob", ""), NOV_2 + timedelta(hours=1))
    reasons = {r.holding.user: r.end_reason for r in store.runs_between("snu-ai", NOV_2, NOV_2 + timedelta(days=1))}
    assert reasons == {"alice": "culled-idle", "bob": "stopped"}


@pytest.mark.parametrize(
    "started, ended",
    [
        (datetime(2026, 11, 2, 22, 0, tzinfo=UTC), datetime(2026, 11, 3, 0, 0, tzinfo=UTC)),  # ends at midnight
        (datetime(2026, 11, 30, 23, 0, tzinfo=UTC), datetime(2026, 12, 1, 0, 0, tzinfo=UTC)),  # at a new month
        (NOV_2, NOV_2),  # lasted no time at all
    ],
)
def test_every_ended_run_is_counted_once_even_at_midnight(store: Store, started: datetime, ended: datetime) -> None:
    store.record_run(hold("alice", H100_X1), started, ended)
    with store.engine.connect() as conn:
        for period in ("day", "month"):
            counted = conn.execute(
                select(func.sum(usage_rollups.c.runs)).where(
                    usage_rollups.c.kind == "tenant", usage_rollups.c.period == period
                )
            ).scalar()
            assert counted == 1, period
    report = store.usage_report("snu-ai", date(2026, 11, 1), date(2027, 1, 1), ended)
    assert [(r.subject, r.runs) for r in report] == [("alice", 1)]


def test_a_conditional_limit_write_over_a_changed_limit_writes_nothing(store: Store) -> None:
    from quotas.limits import NO_LIMIT_ETAG, LimitChanged, limit_etag

    first = parse_limit(SNU, "user", "alice", {"gpus": {"H100": 1}})
    store.set_limit(first, "kim", NOV_2, expect=NO_LIMIT_ETAG)  # created only if none was set
    read = limit_etag(store.limit(SNU.id, "user", "alice"))
    with pytest.raises(LimitChanged) as refused:
        store.set_limit(parse_limit(SNU, "user", "alice", {"servers": 1}), "erin", NOV_2, expect=NO_LIMIT_ETAG)
    assert refused.value.current == first
    store.set_limit(parse_limit(SNU, "user", "alice", {"gpus": {"H100": 2}}), "admin", NOV_2)  # someone else
    with pytest.raises(LimitChanged) as refused:
        store.set_limit(parse_limit(SNU, "user", "alice", {"cpu": "8"}), "kim", NOV_2, expect=read)
    assert refused.value.current is not None and refused.value.current.gpus == {"H100": 2}
    assert store.limit(SNU.id, "user", "alice") == refused.value.current  # nothing written
    now = limit_etag(store.limit(SNU.id, "user", "alice"))
    assert now != read
    store.set_limit(parse_limit(SNU, "user", "alice", {"cpu": "8"}), "kim", NOV_2, expect=now)
    stored = store.limit(SNU.id, "user", "alice")
    assert stored is not None and stored.cpu == Decimal(8) and stored.gpus == {}


def test_a_hold_that_fails_leaves_no_run_and_takes_nothing(store: Store) -> None:
    """The embedded mode's GPUs are taken inside the reservation: a spawn refused for want of a
    free GPU writes no run (no phantom in usage reports) and holds nothing, even for a moment."""

    class NoGpu(Exception):
        pass

    def no_gpu(holding: object) -> None:
        raise NoGpu

    for _ in range(3):
        with pytest.raises(NoGpu):
            store.reserve(SNU, ask("alice", H100_X4), NOV_2, hold=no_gpu)
    assert not store.holdings("snu-ai") and not store.open_runs()
    assert store.runs_between("snu-ai", NOV_2 - timedelta(days=1), NOV_2 + timedelta(days=1)) == []
    assert store.usage_report("snu-ai", NOV_2.date(), NOV_2.date() + timedelta(days=1), NOV_2) == []

    taken: list[str] = []
    decision, run = store.reserve(SNU, ask("alice", H100_X4), NOV_2, hold=lambda h: taken.append(h.user))
    assert decision.allowed and run is not None and taken == ["alice"]
    refused, _ = store.reserve(SNU, ask("alice", H100_X4), NOV_2, hold=lambda h: taken.append("again"))
    assert not refused.allowed and taken == ["alice"]  # a refusal never calls hold


def test_the_gpu_queue_keeps_order_and_places_across_restarts(store: Store, db_url: str) -> None:
    tenant = dataclasses.replace(SNU, queue=QueuePolicy(max_length=2))
    first = store.enqueue(tenant, "alice", "", H100_X4, True, NOV_2)
    second = store.enqueue(tenant, "bob", "b", H100_X1, False, NOV_2 + timedelta(seconds=1))
    assert (first.gpu_type, first.gpu_count, first.may_borrow, second.may_borrow) == ("H100", 4, True, False)
    assert store.enqueue(tenant, "alice", "", H100_X4, True, NOV_2 + timedelta(minutes=5)) == first  # keeps its place
    with pytest.raises(QueueFull) as full:
        store.enqueue(tenant, "carol", "", H100_X1, True, NOV_2)
    assert "Tenant snu-ai's GPU queue is full: 2 requests wait already (at most 2)" in str(full.value)
    restarted = Store(db_url)  # a hub restart loses no place
    try:
        assert [(q.key, q.enqueued) for q in restarted.queued("snu-ai")] == [
            (("alice", ""), NOV_2),
            (("bob", "b"), NOV_2 + timedelta(seconds=1)),
        ]
        assert restarted.queued("nova-labs") == [] and len(restarted.queued()) == 2
        assert restarted.dequeue(("alice", "")) and not restarted.dequeue(("alice", ""))
        third = restarted.enqueue(tenant, "carol", "", H100_X1, True, NOV_2)  # a place was freed
        assert [q.user for q in restarted.queued("snu-ai")] == ["bob", "carol"] and third.id > second.id
    finally:
        restarted.close()


def test_borrowed_gpus_are_recorded_and_charged_to_the_borrower_as_borrowed(store: Store) -> None:
    tenant = with_quota(gpus={"H100": 4})
    store.reserve(tenant, ask("alice", H100_X4), NOV_2)  # the ceiling, all its own
    decision, run = store.reserve(tenant, ask("bob", H100_X4), NOV_2, borrowed={"H100": 3})
    assert not decision.allowed  # 4 more do not fit 4 + 3 borrowed
    decision, run = store.reserve(tenant, ask("bob", H100_X1, "b"), NOV_2, borrowed={"H100": 1})
    assert decision.allowed and decision.holding is not None and decision.holding.borrowed == {"H100": 1}
    assert run is not None
    assert store.held_by(("alice", "")).borrowed == {}  # type: ignore[union-attr]
    end = NOV_2 + timedelta(hours=2)
    now = end + timedelta(hours=1)
    open_report = store.usage_report("snu-ai", date(2026, 11, 1), date(2026, 12, 1), end)
    assert [(r.subject, r.gpu_hours, r.borrowed_gpu_hours) for r in open_report] == [
        ("alice", Decimal(8), Decimal(0)),
        ("bob", Decimal(2), Decimal(2)),
    ]
    assert store.release_run(run, end, "preempted")
    report = store.usage_report("snu-ai", date(2026, 11, 1), date(2026, 12, 1), now, by="tenant")
    assert [(r.gpu_hours, r.borrowed_gpu_hours) for r in report] == [(Decimal(4 * 3 + 2), Decimal(2))]


def test_a_preemption_is_marked_once_can_be_called_off_and_ends_the_run_preempted(store: Store) -> None:
    _, run = store.reserve(SNU, ask("alice", H100_X1), NOV_2)
    assert run is not None
    stop_at = NOV_2 + timedelta(minutes=5)
    assert store.mark_preempted(("alice", ""), stop_at, "tenant x needs them back")
    assert not store.mark_preempted(("alice", ""), stop_at + timedelta(hours=1), "again")  # warned once
    (marked,) = store.open_runs()
    assert (marked.end_reason, marked.stop_at, marked.stop_note) == ("preempted", stop_at, "tenant x needs them back")
    assert store.call_off_preemption(("alice", "")) and not store.call_off_preemption(("alice", ""))
    assert store.open_runs()[0].stop_at is None and store.open_runs()[0].end_reason is None
    assert not store.mark_preempted(("nobody", ""), stop_at, "no run")
    store.mark_preempted(("alice", ""), stop_at, "tenant x needs them back")
    assert store.release(("alice", ""), stop_at) is not None
    (ended,) = store.runs_of("alice", NOV_2)
    assert (ended.end_reason, ended.stop_note) == ("preempted", "tenant x needs them back")
    assert store.runs_of("alice", stop_at) == []  # ended at stop_at, not after


def test_places_in_the_queue_are_written_for_the_waiting_only(store: Store) -> None:
    store.enqueue(SNU, "alice", "", H100_X4, True, NOV_2)
    store.place({("alice", ""): (1, 1, "waiting for 4 × H100"), ("gone", ""): (2, 2, "left the line")})
    (waiting,) = store.queued()
    assert (waiting.position, waiting.length, waiting.reason) == (1, 1, "waiting for 4 × H100")
    store.place({})  # nothing to write


def test_one_person_cannot_fill_the_tenants_queue(store: Store) -> None:
    tenant = dataclasses.replace(with_quota(servers_per_user=2), queue=QueuePolicy(max_length=50))
    store.reserve(tenant, ask("alice", H100_X1), NOV_2)  # running: her default server
    store.enqueue(tenant, "alice", "a", H100_X4, True, NOV_2)  # waiting: her second
    with pytest.raises(QueueFull) as refused:
        store.enqueue(tenant, "alice", "b", H100_X4, True, NOV_2)
    message = str(refused.value)
    assert "You already have 2 of the 2 servers each person may have running or waiting in tenant snu-ai" in message
    assert "(your default server, 'a')" in message
    assert store.enqueue(tenant, "alice", "a", H100_X4, True, NOV_2).server == "a"  # its own place, kept
    store.enqueue(tenant, "bob", "", H100_X4, True, NOV_2)  # others are not held back by her
    # on Kubernetes the request's own run is open while it waits: it is not counted twice
    store.reserve(tenant, ask("carol", H100_X1, "k"), NOV_2)
    assert store.enqueue(tenant, "carol", "k", H100_X1, True, NOV_2).server == "k"
    assert [q.user for q in store.queued("snu-ai")] == ["alice", "bob", "carol"]


def test_a_persons_language_is_remembered_and_only_a_supported_one(store: Store) -> None:
    assert store.locale_of("alice") is None  # never chose: the browser's or English
    assert store.set_locale("alice", "ko-KR", NOV_2)
    assert store.locale_of("alice") == "ko"
    assert not store.set_locale("alice", "ko", NOV_2)  # the same choice writes nothing
    assert not store.set_locale("alice", "fr", NOV_2)  # not a supported language: nothing changes
    assert not store.set_locale("alice", "'; DROP TABLE preferences; --", NOV_2)
    assert store.locale_of("alice") == "ko"
    assert store.set_locale("alice", "en", NOV_2 + timedelta(days=1))
    assert store.locale_of("alice") == "en"
    assert store.locale_of("bob") is None  # one person's choice is theirs only
